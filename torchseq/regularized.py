"""Recurrent regularisers given as explicit masks: a plain PyTorch loop.

The twin of ``jaxseq.run_stack(..., masks=...)``. :func:`run_regularized` runs a
``torch.nn.RNN`` (tanh or relu), ``LSTM`` (``proj_size`` allowed), ``GRU``, or a
:class:`torchseq.LayerNormLSTM` / :class:`torchseq.LayerNormGRU` (any ``num_layers``,
bidirectional, ``bias=False``; ``batch_first`` read from the module) as
the Python loop over layers, directions and time steps of :mod:`torchseq._loop`, with
the step of the module's kind on its own parameters, so gradients reach the input,
``hx`` and every parameter through torch autograd. ``masks`` is a dict of multiplier tensors whose values are
already scaled (0 or 1/(1-p) for a dropout); any subset of these keys, for L layers, D
directions, H_out = ``proj_size`` or H, and ``sfx`` = ``""`` or ``"_reverse"``:

* ``"input"``, (N, I): variational ("locked") dropout of the input (Gal & Ghahramani
  2016, "A theoretically grounded application of dropout in recurrent neural
  networks"): ``x[t] * mask`` at every time step, one mask per sequence.
* ``"output_l{k}"``, (N, D*H_out): variational dropout of layer k's output (both
  directions concatenated), the same mask at every step. For k < L-1 this is what
  enters layer k+1; for the last layer it is the returned output. The module's own
  ``dropout`` between layers is not applied (use these masks instead).
* ``"weight_hh_l{k}{sfx}"``, the shape of that weight, (G*H, H_out): DropConnect on the
  recurrent weight (Merity et al. 2017, "Regularizing and optimizing LSTM language
  models": AWD-LSTM's WeightDrop): the layer and direction use ``weight_hh * mask``,
  one mask per forward call, and the gradient reaches ``weight_hh`` through the product.
* ``"hidden_l{k}"``, (D, N, H_out): variational dropout of the hidden state that enters
  the recurrent matmul only (Gal & Ghahramani 2016): in direction d,
  ``gh = W_hh @ (h * mask[d]) + b_hh``; everywhere else (the GRU's ``z * h``) the state
  is the unmasked h.
* ``"zoneout_l{k}"``, a tuple with one tensor per state, ``(zh,)`` for the RNN and GRU,
  ``(zh, zc)`` for the LSTM, each (T, D, N, size) (size H_out for h, H for c), values
  in [0, 1], time-ordered (``[t, d]`` is direction d at time t, also for the reverse
  direction): zoneout (Krueger et al. 2016, "Zoneout: regularizing RNNs by randomly
  preserving hidden activations"). After a valid step computes ``h_new`` (and
  ``c_new``) from the previous state, the state becomes
  ``h_t = zh[t, d] * h_prev + (1 - zh[t, d]) * h_new`` (and likewise
  ``c_t = zc * c_prev + (1 - zc) * c_new``); the LSTM's ``h_new`` is computed from the
  un-zoned ``c_new``; the step's output is the zoned ``h_t``. A binary mask (1: keep the
  previous value) in training, the constant p (the expectation) at test time.

Lengths mask as ``torch.nn.utils.rnn.pack_padded_sequence`` does (padded steps leave the
state unchanged and output 0, the reverse direction starts at each row's last valid
step), and ``resets`` start new segments as in :func:`torchseq.segments.run_segments`
(a new episode starts from ``reset_hx``, zeros by default); the masks apply at valid steps only. With
``masks=None`` (or all-ones dropout masks and zero zoneout) the result is the module's
own forward. :func:`draw_masks` draws such a dict.

torchseq never imports jax.

>>> import torch
>>> _ = torch.manual_seed(0)
>>> m = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True)
>>> x = torch.randn(6, 2, 3)
>>> masks = draw_masks(m, 6, 2, input_dropout=0.2, weight_dropout=0.5, zoneout=0.1)
>>> sorted(masks)[:3], masks["zoneout_l0"][1].shape
(['input', 'weight_hh_l0', 'weight_hh_l0_reverse'], torch.Size([6, 2, 2, 4]))
>>> out, (h_n, c_n) = run_regularized(m, x, masks=masks)
>>> out.shape, h_n.shape, c_n.shape
(torch.Size([6, 2, 8]), torch.Size([4, 2, 4]), torch.Size([4, 2, 4]))
>>> plain, _ = run_regularized(m, x)  # masks=None: the module's own forward
>>> torch.allclose(plain, m(x)[0], atol=1e-6)
True
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from torchseq._loop import (
    State,
    Structure,
    initial_states,
    layer_loop,
    layer_params,
    recurrent_step,
    structure,
    time_loop,
)

__all__ = ["run_regularized", "draw_masks"]


def _structure(module: nn.Module) -> Structure:
    """The :class:`torchseq._loop.Structure` of a module with a recurrent step."""
    found = structure(module)
    if found is None or found.kind is None:
        raise TypeError(
            "run_regularized: module must be a torch.nn.RNN, LSTM or GRU or a "
            "torchseq.LayerNormLSTM or LayerNormGRU, "
            f"got {type(module).__name__}"
        )
    return found


def _input_size(module: nn.Module) -> int:
    return int(module.input_size)  # type: ignore[arg-type]


def _expected_shapes(module: nn.Module, T: int, N: int) -> dict[str, Any]:
    """Every mask key this module takes and its shape (a tuple of shapes for zoneout)."""
    st = _structure(module)
    L, D, H_out = st.num_layers, st.num_directions, st.H_out
    shapes: dict[str, Any] = {"input": (N, _input_size(module))}
    for k in range(L):
        shapes[f"output_l{k}"] = (N, D * H_out)
        for sfx in ("", "_reverse")[:D]:
            shapes[f"weight_hh_l{k}{sfx}"] = tuple(getattr(module, f"weight_hh_l{k}{sfx}").shape)
        shapes[f"hidden_l{k}"] = (D, N, H_out)
        shapes[f"zoneout_l{k}"] = tuple((T, D, N, s) for s in st.sizes)
    return shapes


def _check_masks(module: nn.Module, masks: Any, T: int, N: int) -> dict[str, Any]:
    if masks is None:
        return {}
    if not isinstance(masks, dict):
        raise TypeError(f"run_regularized: masks must be a dict, got {type(masks).__name__}")
    shapes = _expected_shapes(module, T, N)
    for key, value in masks.items():
        if key not in shapes:
            raise ValueError(
                f"run_regularized: unknown mask {key!r}; this module takes {sorted(shapes)}"
            )
        want = shapes[key]
        if key.startswith("zoneout_l"):
            if not isinstance(value, (tuple, list)) or len(value) != len(want):
                raise ValueError(
                    f"run_regularized: masks[{key!r}] must be a tuple of {len(want)} "
                    "tensor(s), one per state"
                )
            arrays = list(value)
        else:
            arrays = [value]
        if not all(isinstance(v, Tensor) for v in arrays):
            raise TypeError(f"run_regularized: masks[{key!r}] must hold torch tensors")
        got = tuple(tuple(v.shape) for v in arrays)
        if not key.startswith("zoneout_l"):
            got = got[0]
        if got != want:
            raise ValueError(f"run_regularized: masks[{key!r}] must have shape {want}, got {got}")
    return masks


def run_regularized(
    module: nn.Module,
    x: Tensor,
    hx: Any = None,
    lengths: Any = None,
    masks: dict[str, Any] | None = None,
    resets: Tensor | None = None,
    reset_hx: Any = None,
) -> tuple[Tensor, Any]:
    """Run ``module`` step by step with the regularisers' ``masks`` applied.

    Args:
      module: a ``torch.nn.RNN`` / ``LSTM`` / ``GRU`` or a ``torchseq.LayerNormLSTM`` /
        ``LayerNormGRU``; its ``batch_first`` sets the
        layout of ``x``, the output and ``resets``. Its ``dropout`` is not applied.
      x: (T, N, I), or (N, T, I) with ``batch_first`` (unbatched input is not taken).
      hx: optional initial state, zeros when None: h0 (L*D, N, H_out), or for an LSTM a
        pair ``(h0, c0)`` with c0 (L*D, N, H).
      lengths: optional (N,) integers in [0, T]; T when None.
      masks: optional dict of multiplier tensors (see the module docstring for the keys
        and shapes: ``"input"``, ``"output_l{k}"``, ``"weight_hh_l{k}{sfx}"``,
        ``"hidden_l{k}"``, ``"zoneout_l{k}"``); None or {}: no regularisation.
      resets: optional bool tensor (T, N) ((N, T) with ``batch_first``): a True at
        (t, n) with t < lengths[n] restarts row n's state from ``reset_hx`` before step t
        (the reverse direction at step t - 1), as in :func:`torchseq.segments.run_segments`.
      reset_hx: the state a reset restarts from, structured as ``hx``; zeros when None.

    Returns:
      ``(output, h_n)`` or, for an LSTM, ``(output, (h_n, c_n))``: output (T, N, D*H_out)
      ((N, T, D*H_out) with ``batch_first``), zero on padding; h_n (L*D, N, H_out) and
      c_n (L*D, N, H), each direction's state after its last valid step.
    """
    st = _structure(module)
    kind, L, D = st.kind, st.num_layers, st.num_directions
    assert kind is not None
    if not isinstance(x, Tensor) or x.dim() != 3:
        raise ValueError("run_regularized: x must be a 3-D tensor (T, N, I) or (N, T, I)")
    batch_first = bool(module.batch_first)
    xt = x.transpose(0, 1) if batch_first else x  # (T, N, I)
    T, N = int(xt.shape[0]), int(xt.shape[1])
    masks = _check_masks(module, masks, T, N)
    shapes = [(L * D, N, s) for s in st.sizes]
    states = initial_states(hx, st.cell, shapes, xt, "run_regularized")
    fresh = initial_states(reset_hx, st.cell, shapes, xt, "run_regularized (reset_hx)")

    lens = (
        torch.full((N,), T, dtype=torch.long)
        if lengths is None
        else torch.as_tensor(lengths, dtype=torch.long).reshape(N)
    )
    if N and (int(lens.min()) < 0 or int(lens.max()) > T):
        raise ValueError(f"run_regularized: lengths must lie in [0, T] = [0, {T}]")
    lens = lens.to(xt.device)
    valid = torch.arange(T, device=xt.device)[:, None] < lens[None, :]  # (T, N)
    restart = None
    if resets is not None:
        restart = resets.T if batch_first else resets
        if tuple(restart.shape) != (T, N) or restart.dtype != torch.bool:
            raise ValueError("run_regularized: resets must be a bool tensor with x's (T, N) axes")
        restart = (restart.to(xt.device) & valid)[..., None]

    def layer(k: int, d: int, inp: Tensor, state: State) -> tuple[Tensor, State]:
        p = layer_params(module, k, d)
        key = f"weight_hh_l{k}" + ("_reverse" if d else "")
        if key in masks:  # DropConnect: one mask per call
            p["weight_hh"] = p["weight_hh"] * masks[key]
        hidden = masks.get(f"hidden_l{k}")  # the hidden-state dropout: matmul only
        zoneout = masks.get(f"zoneout_l{k}")  # keep a fraction z of the old state
        step = recurrent_step(kind, p, kind.input(p, inp), None if hidden is None else hidden[d])
        zones = None if zoneout is None else tuple(z[:, d] for z in zoneout)
        reset_state = tuple(f[k * D + d] for f in fresh)
        return time_loop(
            step,
            state,
            T,
            valid[..., None],
            d == 1,
            restart=restart,
            reset_state=reset_state,
            zoneout=zones,
        )

    def between(k: int, out: Tensor) -> Tensor:
        key = f"output_l{k}"
        return out * masks[key] if key in masks else out

    layer_in = xt if "input" not in masks else xt * masks["input"]
    out, fin = layer_loop(layer_in, states, L, D, layer, between)
    out = out.transpose(0, 1) if batch_first else out
    return out, (tuple(fin) if st.cell else fin[0])


def _probability(name: str, p: float, upper_open: bool) -> float:
    p = float(p)
    if not (0.0 <= p < 1.0 if upper_open else 0.0 <= p <= 1.0):
        interval = "[0, 1)" if upper_open else "[0, 1]"
        raise ValueError(f"draw_masks: {name} must lie in {interval}, got {p}")
    return p


def draw_masks(
    module: nn.Module,
    T: int,
    N: int,
    *,
    input_dropout: float = 0.0,
    output_dropout: float = 0.0,
    weight_dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
    zoneout: float | tuple[float, float] = 0.0,
    generator: torch.Generator | None = None,
    train: bool = True,
) -> dict[str, Any]:
    """Draw a ``masks`` dict for :func:`run_regularized` (and ``jaxseq.run_stack``).

    Each probability that is > 0 adds its keys: ``input_dropout`` -> ``"input"``,
    ``output_dropout`` -> ``"output_l{k}"`` for every layer (the last one's is the
    returned output), ``weight_dropout`` -> ``"weight_hh_l{k}{sfx}"`` for every layer and
    direction, ``recurrent_dropout`` -> ``"hidden_l{k}"``, ``zoneout`` (one rate, or
    ``(p_h, p_c)`` for an LSTM's h and c) -> ``"zoneout_l{k}"``.

    In training (``train=True``) the dropouts are Bernoulli keep masks scaled by
    1/(1-p), and zoneout masks are Bernoulli(p) (1: keep the previous state). With
    ``train=False`` the dropouts are absent and the zoneout masks are the constant p,
    the expectation, as Krueger et al. use at test time. The masks have the module's
    parameter dtype and device; ``generator`` seeds the draws.
    """
    st = _structure(module)
    L, D, cell = st.num_layers, st.num_directions, st.cell
    shapes = _expected_shapes(module, int(T), int(N))
    ref = next(module.parameters())
    dtype, device = ref.dtype, ref.device
    p_in = _probability("input_dropout", input_dropout, True)
    p_out = _probability("output_dropout", output_dropout, True)
    p_w = _probability("weight_dropout", weight_dropout, True)
    p_hid = _probability("recurrent_dropout", recurrent_dropout, True)
    if isinstance(zoneout, (tuple, list)):
        if len(zoneout) != (2 if cell else 1):
            raise ValueError(
                "draw_masks: zoneout must be one rate, or a pair (p_h, p_c) for an LSTM"
            )
        p_zone = [_probability("zoneout", z, False) for z in zoneout]
    else:
        p_zone = [_probability("zoneout", zoneout, False)] * (2 if cell else 1)

    def keep(shape: Any, p: float) -> Tensor:
        draw = torch.bernoulli(
            torch.full(shape, 1.0 - p, dtype=dtype, device=device), generator=generator
        )
        return draw / (1.0 - p)

    masks: dict[str, Any] = {}
    if train:
        if p_in > 0:
            masks["input"] = keep(shapes["input"], p_in)
        for k in range(L):
            if p_out > 0:
                masks[f"output_l{k}"] = keep(shapes[f"output_l{k}"], p_out)
            if p_w > 0:
                for sfx in ("", "_reverse")[:D]:
                    masks[f"weight_hh_l{k}{sfx}"] = keep(shapes[f"weight_hh_l{k}{sfx}"], p_w)
            if p_hid > 0:
                masks[f"hidden_l{k}"] = keep(shapes[f"hidden_l{k}"], p_hid)
    if any(p > 0 for p in p_zone):
        for k in range(L):
            zs = []
            for shape, p in zip(shapes[f"zoneout_l{k}"], p_zone, strict=True):
                full = torch.full(shape, p, dtype=dtype, device=device)
                zs.append(torch.bernoulli(full, generator=generator) if train else full)
            masks[f"zoneout_l{k}"] = tuple(zs)
    return masks
