"""Recurrent regularisers given as explicit masks: a plain PyTorch loop.

The twin of ``jaxseq.run_stack(..., masks=...)``. :func:`run_regularized` runs a
``torch.nn.RNN`` (tanh or relu), ``LSTM`` (``proj_size`` allowed), ``GRU``, or a
:class:`torchseq.LayerNormLSTM` / :class:`torchseq.LayerNormGRU` (any ``num_layers``,
bidirectional, ``bias=False``; ``batch_first`` read from the module) as
a Python loop over layers, directions and time steps, written from the equations with
the module's own parameters, so gradients reach the input, ``hx`` and every parameter
through torch autograd. ``masks`` is a dict of multiplier tensors whose values are
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
(the state restarts from ``hx``); the masks apply at valid steps only. With
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

from torchseq.layernorm import LayerNormGRU, LayerNormLSTM, block_layer_norm

__all__ = ["run_regularized", "draw_masks"]


#: The modes whose carry is (h, c).
_CELL_MODES = ("LSTM", "LN_LSTM")
#: The per-layer parameter names the loop reads (absent ones are None).
_NAMES: tuple[str, ...] = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
_NAMES += ("ln_ih_weight", "ln_ih_bias", "ln_hh_weight", "ln_hh_bias", "ln_c_weight", "ln_c_bias")


def _structure(module: nn.Module) -> tuple[str, int, int, int, int]:
    """(mode, num_layers, num_directions, H_out, H) of a torch.nn.RNN / LSTM / GRU or a
    torchseq.LayerNormLSTM / LayerNormGRU (modes ``"LN_LSTM"``, ``"LN_GRU"``)."""
    if isinstance(module, (LayerNormLSTM, LayerNormGRU)):
        mode = "LN_LSTM" if isinstance(module, LayerNormLSTM) else "LN_GRU"
        D = 2 if module.bidirectional else 1
        H = int(module.hidden_size)
        return mode, int(module.num_layers), D, H, H
    if not isinstance(module, nn.RNNBase) or module.mode not in (
        "RNN_TANH",
        "RNN_RELU",
        "LSTM",
        "GRU",
    ):
        raise TypeError(
            "run_regularized: module must be a torch.nn.RNN, LSTM or GRU or a "
            "torchseq.LayerNormLSTM or LayerNormGRU, "
            f"got {type(module).__name__}"
        )
    H = int(module.hidden_size)
    H_out = int(module.proj_size) if module.mode == "LSTM" and module.proj_size > 0 else H
    D = 2 if module.bidirectional else 1
    return str(module.mode), int(module.num_layers), D, H_out, H


def _input_size(module: nn.Module) -> int:
    return int(module.input_size)  # type: ignore[arg-type]


def _expected_shapes(module: nn.Module, T: int, N: int) -> dict[str, Any]:
    """Every mask key this module takes and its shape (a tuple of shapes for zoneout)."""
    mode, L, D, H_out, H = _structure(module)
    sizes = (H_out, H) if mode in _CELL_MODES else (H_out,)
    shapes: dict[str, Any] = {"input": (N, _input_size(module))}
    for k in range(L):
        shapes[f"output_l{k}"] = (N, D * H_out)
        for sfx in ("", "_reverse")[:D]:
            shapes[f"weight_hh_l{k}{sfx}"] = tuple(getattr(module, f"weight_hh_l{k}{sfx}").shape)
        shapes[f"hidden_l{k}"] = (D, N, H_out)
        shapes[f"zoneout_l{k}"] = tuple((T, D, N, s) for s in sizes)
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


def _initial_states(hx: Any, cell: bool, shapes: list[tuple[int, ...]], x: Tensor) -> list[Tensor]:
    """hx (None, a tensor, or for the LSTM a pair) -> a list of (L*D, N, size) tensors."""
    if hx is None:
        return [x.new_zeros(s) for s in shapes]
    if cell:
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise ValueError("run_regularized: hx must be a pair (h0, c0) for an LSTM")
        states = list(hx)
    else:
        states = [hx]
    for s, shape in zip(states, shapes, strict=True):
        if not isinstance(s, Tensor) or tuple(s.shape) != shape:
            got = tuple(s.shape) if isinstance(s, Tensor) else type(s).__name__
            raise ValueError(f"run_regularized: expected hidden size {shape}, got {got}")
    return states


def run_regularized(
    module: nn.Module,
    x: Tensor,
    hx: Any = None,
    lengths: Any = None,
    masks: dict[str, Any] | None = None,
    resets: Tensor | None = None,
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
        (t, n) with t < lengths[n] restarts row n's state from ``hx`` before step t (the
        reverse direction restarts from ``hx`` at step t - 1), as in
        :func:`torchseq.segments.run_segments`.

    Returns:
      ``(output, h_n)`` or, for an LSTM, ``(output, (h_n, c_n))``: output (T, N, D*H_out)
      ((N, T, D*H_out) with ``batch_first``), zero on padding; h_n (L*D, N, H_out) and
      c_n (L*D, N, H), each direction's state after its last valid step.
    """
    mode, L, D, H_out, H = _structure(module)
    cell = mode in _CELL_MODES
    if not isinstance(x, Tensor) or x.dim() != 3:
        raise ValueError("run_regularized: x must be a 3-D tensor (T, N, I) or (N, T, I)")
    batch_first = bool(module.batch_first)
    xt = x.transpose(0, 1) if batch_first else x  # (T, N, I)
    T, N = int(xt.shape[0]), int(xt.shape[1])
    masks = _check_masks(module, masks, T, N)
    sizes = [H_out, H] if cell else [H_out]
    states = _initial_states(hx, cell, [(L * D, N, s) for s in sizes], xt)

    lens = (
        torch.full((N,), T, dtype=torch.long)
        if lengths is None
        else torch.as_tensor(lengths, dtype=torch.long).reshape(N)
    )
    if N and (int(lens.min()) < 0 or int(lens.max()) > T):
        raise ValueError(f"run_regularized: lengths must lie in [0, T] = [0, {T}]")
    lens = lens.to(xt.device)
    valid = torch.arange(T, device=xt.device)[:, None] < lens[None, :]  # (T, N)
    if resets is None:
        restart = torch.zeros(T, N, dtype=torch.bool, device=xt.device)
    else:
        restart = resets.T if batch_first else resets
        if tuple(restart.shape) != (T, N) or restart.dtype != torch.bool:
            raise ValueError("run_regularized: resets must be a bool tensor with x's (T, N) axes")
        restart = restart.to(xt.device) & valid

    def step(
        layer_x: Tensor, h: Tensor, c: Tensor | None, w: dict[str, Tensor | None], m_h: Any
    ) -> tuple[Tensor, Tensor | None]:
        """One step of one direction: (h_new, c_new) from the previous (h, c)."""
        gx = layer_x @ w["weight_ih"].T  # type: ignore[union-attr]
        if w["bias_ih"] is not None:
            gx = gx + w["bias_ih"]
        h_in = h if m_h is None else h * m_h  # the hidden-state dropout: matmul only
        gh = h_in @ w["weight_hh"].T  # type: ignore[union-attr]
        if w["bias_hh"] is not None:
            gh = gh + w["bias_hh"]
        if mode.startswith("LN_"):  # the layer norms of jaxseq.recurrences.layernorm
            G = gx.shape[-1] // H
            gx = block_layer_norm(gx, w["ln_ih_weight"], w["ln_ih_bias"], G)  # type: ignore[arg-type]
            gh = block_layer_norm(gh, w["ln_hh_weight"], w["ln_hh_bias"], G)  # type: ignore[arg-type]
        if mode == "RNN_TANH":
            return torch.tanh(gx + gh), None
        if mode == "RNN_RELU":
            return torch.relu(gx + gh), None
        if mode in _CELL_MODES:
            assert c is not None
            i, f, g, o = (gx + gh).chunk(4, dim=-1)
            c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            c_out = c_new
            if mode == "LN_LSTM":
                c_out = block_layer_norm(c_new, w["ln_c_weight"], w["ln_c_bias"], 1)  # type: ignore[arg-type]
            h_new = torch.sigmoid(o) * torch.tanh(c_out)
            if w["weight_hr"] is not None:
                h_new = h_new @ w["weight_hr"].T
            return h_new, c_new
        # GRU: gates r, z, n; gh's n part includes b_hn and is scaled by r
        xr, xz, xn = gx.chunk(3, dim=-1)
        hr, hz, hn = gh.chunk(3, dim=-1)
        r = torch.sigmoid(xr + hr)
        z = torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        return (1 - z) * n + z * h, None

    layer_in = xt if "input" not in masks else xt * masks["input"]
    finals: list[list[Tensor]] = [[] for _ in sizes]
    for k in range(L):
        outs = []
        zoneout = masks.get(f"zoneout_l{k}")
        hidden = masks.get(f"hidden_l{k}")
        for d in range(D):
            sfx = "_reverse" if d else ""
            w: dict[str, Tensor | None] = {
                name: getattr(module, f"{name}_l{k}{sfx}", None) for name in _NAMES
            }
            if f"weight_hh_l{k}{sfx}" in masks:  # DropConnect: one mask per call
                w["weight_hh"] = (
                    getattr(module, f"weight_hh_l{k}{sfx}") * masks[f"weight_hh_l{k}{sfx}"]
                )
            m_h = None if hidden is None else hidden[d]
            h0 = states[0][k * D + d]
            c0 = states[1][k * D + d] if cell else None
            h, c = h0, c0
            out_d: list[Tensor] = [xt.new_zeros(())] * T
            for t in range(T) if d == 0 else range(T - 1, -1, -1):
                # a reset restarts the state: forward at t, reverse after step t + 1
                at = restart[t] if d == 0 else (restart[t + 1] if t + 1 < T else None)
                if at is not None:
                    h = torch.where(at[:, None], h0, h)
                    if c is not None and c0 is not None:
                        c = torch.where(at[:, None], c0, c)
                h_new, c_new = step(layer_in[t], h, c, w, m_h)
                if zoneout is not None:  # zoneout: keep a fraction zh of the old state
                    zh = zoneout[0][t, d]
                    h_new = zh * h + (1 - zh) * h_new
                    if c is not None and c_new is not None:
                        zc = zoneout[1][t, d]
                        c_new = zc * c + (1 - zc) * c_new
                v = valid[t][:, None]  # padded steps: state unchanged, output 0
                h = torch.where(v, h_new, h)
                if c is not None and c_new is not None:
                    c = torch.where(v, c_new, c)
                out_d[t] = torch.where(v, h_new, torch.zeros_like(h_new))
            outs.append(torch.stack(out_d))
            finals[0].append(h)
            if c is not None:
                finals[1].append(c)
        layer_in = torch.cat(outs, dim=-1)  # (T, N, D*H_out)
        if f"output_l{k}" in masks:
            layer_in = layer_in * masks[f"output_l{k}"]

    out = layer_in.transpose(0, 1) if batch_first else layer_in
    fin = [torch.stack(f) for f in finals]
    return out, (tuple(fin) if cell else fin[0])


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
    mode, L, D, H_out, H = _structure(module)
    shapes = _expected_shapes(module, int(T), int(N))
    ref = next(module.parameters())
    dtype, device = ref.dtype, ref.device
    cell = mode in _CELL_MODES
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
