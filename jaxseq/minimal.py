"""minGRU / minLSTM stacks: layers x directions of a linear recurrence, masked by lengths.

``jaxseq.min_gru`` and ``jaxseq.min_lstm`` take a flat dict of torch-named parameters
(``weight_ih_l{k}{_reverse}`` (G*H, in), ``bias_ih_l{k}{_reverse}`` (G*H,); equations in
:mod:`jaxseq.recurrences.minimal`) and follow the conventions of :func:`jaxseq.gru`:

    x        (T, N, I), or (N, T, I) with batch_first, or unbatched (T, I)
    hx       (L*D, N, H) — unbatched: (L*D, H)
    lengths  (N,) integers in [0, T]; None means all T (traced: no recompiles)
    output   (T, N, D*H) (batch_first: (N, T, D*H)); zero at t >= lengths[n]
    h_n      (L*D, N, H) ordered l0-forward, l0-reverse, l1-forward, ...

Layer k > 0 reads concat(forward, reverse) of layer k - 1. On padding the state is frozen
and the output is 0; ``h_n`` is the state at each row's last valid step; the reverse
direction starts at each row's own last valid element; length 0 gives ``h_n = h0``.

Modes (``mode=``):

* ``"sequential"``: the reference. The step ``h' = a h + b`` inside
  :func:`jaxseq.scan.masked_scan` (one ``lax.scan`` per direction, masking as every
  other layer), gradients by autodiff.
* ``"scan"``: the coefficients computed for all T steps at once (one vectorised pass
  before the loop), the mask folded into them (``a = 1, b = 0`` on padding: the
  identity), both directions in one ``lax.scan`` (the reverse one flipped in time) and
  a custom VJP whose backward is the same scan run from the end
  (:mod:`jaxseq.linear_scan`). Only ``h = a h + b`` stays inside the loop.
* ``"parallel"``: as ``"scan"``, solved by ``lax.associative_scan`` over T.
* ``"chunked"``: as ``"scan"``, solved sequentially over about sqrt(T) chunk positions and
  then across the sqrt(T) chunks (:mod:`jaxseq.linear_scan`).
* ``"auto"`` (default): ``"scan"`` on XLA's CPU backend, ``"parallel"`` elsewhere.
  On a 2-core CPU the sequential scan beat both parallel forms in the training-step
  timings made while writing this, T = 256 to 16384 (busy machine; numbers and command
  in docs/tutorial.md, section 11; ``python -m benchmarks.min_scan`` re-measures): a
  scan step of ``a h + b`` costs little next to the memory traffic the parallel forms
  add. The accelerator choice follows the log-depth argument and was not measured.

All modes give the same values and gradients up to rounding.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from jaxseq.fused_ops import to_steps
from jaxseq.linear_scan import linear_recurrence
from jaxseq.params import check_shapes, suffixes
from jaxseq.recurrences import get
from jaxseq.recurrences.base import torch_uniform_init
from jaxseq.recurrences.minimal import LinearRecurrence, get_linear
from jaxseq.scan import length_mask, masked_scan
from jaxseq.stack import _dropout, _vary_like, align_inputs, output_layout, time_major
from jaxseq.validation import (
    check_dropout,
    check_hx,
    check_input,
    check_lengths,
    check_structure,
)

Array = jax.Array

#: How a layer solves its recurrence (module docstring).
Mode = Literal["auto", "sequential", "scan", "parallel", "chunked"]
MODES: tuple[str, ...] = ("auto", "sequential", "scan", "parallel", "chunked")

__all__ = [
    "Mode",
    "MODES",
    "MinSpec",
    "min_param_shapes",
    "min_spec_from_params",
    "init_min_params",
    "init_min_gru",
    "init_min_lstm",
    "run_min_stack",
    "min_gru",
    "min_lstm",
    "resolve_mode",
]

_BASES = ("weight_ih", "bias_ih")
_KEY_RE = re.compile(r"^(weight_ih|bias_ih)_l(\d+)(_reverse)?$")


@dataclasses.dataclass(frozen=True)
class MinSpec:
    """The static structure of a minGRU / minLSTM stack, as the constructor's arguments."""

    kind: str
    input_size: int
    hidden_size: int
    num_layers: int = 1
    bias: bool = True
    bidirectional: bool = False

    @property
    def recurrence(self) -> LinearRecurrence:
        return get_linear(self.kind)

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def validate(self) -> None:
        # torch's constructor messages for sizes and layers (proj_size does not apply).
        check_structure(get("gru"), self.input_size, self.hidden_size, self.num_layers, 0)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """torch name -> shape, in ``state_dict`` order (layer, direction, weight, bias)."""
        rec = self.recurrence
        shapes: dict[str, tuple[int, ...]] = {}
        for layer in range(self.num_layers):
            in_size = self.input_size if layer == 0 else self.hidden_size * self.num_directions
            per = rec.layer_shapes(in_size, self.hidden_size, self.bias)
            for sfx in suffixes(layer, self.bidirectional):
                shapes.update({base + sfx: shape for base, shape in per.items()})
        return shapes


def min_param_shapes(
    kind: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    *,
    bias: bool = True,
    bidirectional: bool = False,
) -> dict[str, tuple[int, ...]]:
    """``{torch name: shape}`` of a ``kind`` (``"min_gru"`` / ``"min_lstm"``) stack.

    >>> min_param_shapes("min_lstm", 3, 4, num_layers=2)
    {'weight_ih_l0': (12, 3), 'bias_ih_l0': (12,), 'weight_ih_l1': (12, 4), 'bias_ih_l1': (12,)}
    """
    spec = MinSpec(get_linear(kind).name, input_size, hidden_size, num_layers, bias, bidirectional)
    spec.validate()
    return spec.param_shapes()


def min_spec_from_params(kind: str, params: Mapping[str, Any]) -> MinSpec:
    """Infer the stack's structure from torch-named parameters and check every shape."""
    rec = get_linear(kind)
    name = rec.display_name
    if not isinstance(params, Mapping):
        raise TypeError(
            f"params must be a mapping of torch parameter names to arrays, got {type(params).__name__}"
        )
    bad = [k for k in params if not _KEY_RE.match(k)]
    if bad:
        raise ValueError(f"{name}: unexpected parameter names {sorted(bad)}")
    if "weight_ih_l0" not in params:
        raise ValueError(f"{name}: params must hold at least 'weight_ih_l0'; got {sorted(params)}")
    w0 = params["weight_ih_l0"]
    if np.ndim(w0) != 2 or w0.shape[0] % rec.num_gates:
        raise ValueError(
            f"{name}: weight_ih_l0 must be 2-D with a multiple of {rec.num_gates} rows, "
            f"got shape {tuple(np.shape(w0))}"
        )
    layers = {int(m.group(2)) for m in map(_KEY_RE.match, params) if m}
    spec = MinSpec(
        kind=rec.name,
        input_size=int(w0.shape[1]),
        hidden_size=int(w0.shape[0] // rec.num_gates),
        num_layers=max(layers) + 1,
        bias="bias_ih_l0" in params,
        bidirectional="weight_ih_l0_reverse" in params,
    )
    return check_shapes(name, spec, params)


def init_min_params(
    key: Array,
    kind: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    *,
    bias: bool = True,
    bidirectional: bool = False,
    dtype: Any = jnp.float32,
) -> dict[str, Array]:
    """Parameters of a ``kind`` stack, each ~ U(-1/sqrt(H), 1/sqrt(H)) as torch's RNNs.

    One PRNG key per parameter, in :func:`min_param_shapes` order.
    """
    shapes = min_param_shapes(
        kind, input_size, hidden_size, num_layers, bias=bias, bidirectional=bidirectional
    )
    keys = jax.random.split(key, len(shapes))
    return {
        name: torch_uniform_init(k, shape, dtype, hidden_size)
        for k, (name, shape) in zip(keys, shapes.items(), strict=True)
    }


def init_min_gru(
    key: Array,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    bias: bool = True,
    bidirectional: bool = False,
    dtype: Any = jnp.float32,
) -> dict[str, Array]:
    """Parameters of ``MinGRU(input_size, hidden_size, num_layers, ...)``, torch's init.

    >>> import jax, jaxseq
    >>> p = jaxseq.init_min_gru(jax.random.key(0), 3, 4, bidirectional=True)
    >>> {k: v.shape for k, v in p.items() if k.endswith("reverse")}   # rows [z; h~]
    {'weight_ih_l0_reverse': (8, 3), 'bias_ih_l0_reverse': (8,)}
    """
    return init_min_params(
        key,
        "min_gru",
        input_size,
        hidden_size,
        num_layers,
        bias=bias,
        bidirectional=bidirectional,
        dtype=dtype,
    )


def init_min_lstm(
    key: Array,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    bias: bool = True,
    bidirectional: bool = False,
    dtype: Any = jnp.float32,
) -> dict[str, Array]:
    """Parameters of ``MinLSTM(input_size, hidden_size, num_layers, ...)``, torch's init.

    >>> import jax, jaxseq
    >>> p = jaxseq.init_min_lstm(jax.random.key(0), 3, 4)
    >>> p["weight_ih_l0"].shape                 # rows [f; i; h~]
    (12, 3)
    """
    return init_min_params(
        key,
        "min_lstm",
        input_size,
        hidden_size,
        num_layers,
        bias=bias,
        bidirectional=bidirectional,
        dtype=dtype,
    )


def resolve_mode(mode: str) -> str:
    """The mode a call runs: ``"auto"`` is ``"scan"`` on CPU, ``"parallel"`` elsewhere."""
    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}; expected one of {list(MODES)}")
    if mode == "auto":
        return "scan" if jax.default_backend() == "cpu" else "parallel"
    return mode


def _layer_sequential(
    rec: LinearRecurrence, gx: Array, h0: Array, mask: Array | None
) -> tuple[Array, Array]:
    """Reference: gx (T, D, N, G*H), h0 (D, N, H) -> ys (T, D, N, H), h_n (D, N, H)."""
    ys, finals = [], []
    for d in range(gx.shape[1]):
        h, y = masked_scan(
            lambda _, h, g: rec.step(h, g), None, h0[d], gx[:, d], mask=mask, reverse=d == 1
        )
        ys.append(y)
        finals.append(h)
    return jnp.stack(ys, axis=1), jnp.stack(finals)


def _layer_folded(
    rec: LinearRecurrence,
    gx: Array,
    h0: Array,
    mask: Array | None,
    method: str,
    chunk: int | None,
) -> tuple[Array, Array]:
    """scan / parallel / chunked: the mask folded into (a, b), directions in one recurrence."""
    a, b = rec.coefficients(gx)  # (T, D, N, H) each
    valid = None
    if mask is not None:
        valid = mask[:, None, :, None]  # (T, 1, N, 1)
        # Padding is the identity step: the state passes through it unchanged.
        a = jnp.where(valid, a, jnp.ones_like(a))
        b = jnp.where(valid, b, jnp.zeros_like(b))
    # Step order: the reverse direction flipped in time, so both run forward from t=0.
    hs = linear_recurrence(to_steps(a), to_steps(b), h0, method=method, chunk=chunk)
    # forward: t = T-1 (frozen after the last valid step); reverse: t = 0. T = 0: h0.
    final = hs[-1] if hs.shape[0] else h0
    ys = to_steps(hs)
    if valid is not None:
        ys = jnp.where(valid, ys, jnp.zeros_like(ys))
    return ys, final


def run_min_stack(
    kind: str,
    params: Mapping[str, Any],
    x: Any,
    hx: Any = None,
    lengths: Any = None,
    *,
    batch_first: bool = False,
    mode: Mode | str = "auto",
    dropout: float = 0.0,
    train: bool = False,
    key: Array | None = None,
    dtype: Any = None,
    chunk: int | None = None,
) -> tuple[Array, Array]:
    """The stack for ``kind`` (``"min_gru"`` / ``"min_lstm"``); arguments as :func:`min_gru`."""
    rec = get_linear(kind)
    name = rec.display_name
    spec = min_spec_from_params(rec.name, params)
    check_dropout(dropout)
    method = resolve_mode(mode)
    check_input(name, x, spec.input_size)

    x, dtype, unbatched = time_major(x, params["weight_ih_l0"].dtype, dtype, batch_first)
    T, N = x.shape[0], x.shape[1]
    L, D, H = spec.num_layers, spec.num_directions, spec.hidden_size

    if hx is None:
        h0_all = jnp.zeros((L * D, N, H), dtype)
    else:
        shape = (L * D, H) if unbatched else (L * D, N, H)
        (h0_all,) = check_hx(get("gru"), name, hx, [shape], x.dtype)  # one state, as the GRU
        h0_all = (h0_all[:, None] if unbatched else h0_all).astype(dtype)

    mask = None
    if lengths is not None:
        lengths = check_lengths(name, lengths, N, T, unbatched)
        mask = length_mask(lengths, T)  # (T, N), built once for every layer
    if train and dropout > 0 and L > 1 and key is None:
        raise ValueError(f"{name}: dropout={dropout} in training mode needs a PRNG key (key=...)")

    x, mask, (h0_all,), vma = align_inputs(x, mask, (h0_all,), dtype)
    finals = []
    with jax.named_scope(f"jaxseq.{name}"):
        for layer in range(L):
            sfxs = suffixes(layer, spec.bidirectional)
            # One (T*N, in) x (in, D*G*H) matmul for both directions of the layer.
            w = jnp.concatenate([jnp.asarray(params["weight_ih" + s]) for s in sfxs])
            gx = x @ _vary_like(w.astype(dtype), vma).T  # (T, N, D*G*H)
            if spec.bias:
                b = jnp.concatenate([jnp.asarray(params["bias_ih" + s]) for s in sfxs])
                gx = gx + _vary_like(b.astype(dtype), vma)[None, None, :]
            # (T, D, N, G*H); D = 1 needs no transpose (a new unit axis is free).
            gx = (
                gx[:, None]
                if D == 1
                else jnp.swapaxes(gx.reshape(T, N, D, rec.num_gates * H), 1, 2)
            )
            h0 = h0_all[layer * D : (layer + 1) * D]
            with jax.named_scope(f"layer{layer}"):
                if method == "sequential":
                    ys, fin = _layer_sequential(rec, gx, h0, mask)
                else:
                    solver = "sequential" if method == "scan" else method
                    ys, fin = _layer_folded(rec, gx, h0, mask, solver, chunk)
            finals.append(fin)
            # (T, N, D*H): concat(forward, reverse)
            x = ys[:, 0] if D == 1 else jnp.transpose(ys, (0, 2, 1, 3)).reshape(T, N, D * H)
            if train and dropout > 0 and layer < L - 1:
                assert key is not None  # checked above
                key, sub = jax.random.split(key)
                x = _dropout(sub, x, float(dropout))

    x, (h_n,) = output_layout(x, (jnp.concatenate(finals, axis=0),), unbatched, batch_first)
    return x, h_n  # h_n (L*D, N, H)


def min_gru(
    params: Mapping[str, Any],
    x: Any,
    hx: Any = None,
    lengths: Any = None,
    *,
    batch_first: bool = False,
    mode: Mode | str = "auto",
    dropout: float = 0.0,
    train: bool = False,
    key: Array | None = None,
    dtype: Any = None,
    chunk: int | None = None,
) -> tuple[Array, Array]:
    """Multi-layer minGRU (Feng et al. 2024): a GRU whose gates read the input only.

    Per layer and direction, with ``weight_ih`` rows [z; h~]::

        z = sigmoid(x W_z^T + b_z)     h~ = x W_h^T + b_h     h_t = (1 - z) * h_{t-1} + z * h~

    Args:
      params: flat dict ``weight_ih_l{k}{_reverse}`` (2H, in), ``bias_ih_l{k}{_reverse}``
        (2H,) (see :func:`init_min_gru`); layers, directions, sizes and ``bias`` are read
        from it.
      x: (T, N, I), or (N, T, I) with ``batch_first=True``, or unbatched (T, I).
      hx: optional h0 (L*D, N, H) (unbatched (L*D, H)); zeros when None.
      lengths: optional (N,) integers in [0, T], as :func:`jaxseq.gru`: output 0 at
        ``t >= lengths[n]``, ``h_n`` at each row's last valid step, the reverse direction
        starts at each row's last valid element, length 0 gives ``h_n = h0``. Traced.
      batch_first: input and output are (N, T, ...).
      mode: ``"auto"`` (default), ``"sequential"``, ``"scan"``, ``"parallel"`` or
        ``"chunked"`` (module docstring); same values up to rounding.
      dropout, train, key: dropout on the outputs of every layer but the last, as torch.
      dtype: computation dtype; default: the promotion of the input and parameter dtypes.
      chunk: chunk length of ``mode="chunked"`` (default about sqrt(T)).

    Returns:
      ``(output, h_n)``: output (T, N, D*H), h_n (L*D, N, H).

    >>> import jax, jax.numpy as jnp, jaxseq
    >>> params = jaxseq.init_min_gru(jax.random.key(0), 3, 5, bidirectional=True)
    >>> x = jax.random.normal(jax.random.key(1), (7, 4, 3))
    >>> out, h_n = jaxseq.min_gru(params, x, lengths=[7, 3, 0, 5], mode="parallel")
    >>> ref, h_ref = jaxseq.min_gru(params, x, lengths=[7, 3, 0, 5], mode="sequential")
    >>> out.shape, h_n.shape, bool(jnp.allclose(out, ref, atol=1e-6)), float(abs(out[3:, 1]).max())
    ((7, 4, 10), (2, 4, 5), True, 0.0)
    """
    return run_min_stack(
        "min_gru",
        params,
        x,
        hx,
        lengths,
        batch_first=batch_first,
        mode=mode,
        dropout=dropout,
        train=train,
        key=key,
        dtype=dtype,
        chunk=chunk,
    )


def min_lstm(
    params: Mapping[str, Any],
    x: Any,
    hx: Any = None,
    lengths: Any = None,
    *,
    batch_first: bool = False,
    mode: Mode | str = "auto",
    dropout: float = 0.0,
    train: bool = False,
    key: Array | None = None,
    dtype: Any = None,
    chunk: int | None = None,
) -> tuple[Array, Array]:
    """Multi-layer minLSTM (Feng et al. 2024): normalised forget and input gates of x only.

    Per layer and direction, with ``weight_ih`` rows [f; i; h~] (G = 3)::

        f = sigmoid(x W_f^T + b_f)     i = sigmoid(x W_i^T + b_i)     h~ = x W_h^T + b_h
        f' = f / (f + i)               i' = i / (f + i)               h_t = f' * h_{t-1} + i' * h~

    There is no cell state: the carry is h alone. Arguments and returns as
    :func:`min_gru`, with ``weight_ih`` (3H, in) and ``bias_ih`` (3H,).

    >>> import jax, jax.numpy as jnp, jaxseq
    >>> params = jaxseq.init_min_lstm(jax.random.key(0), 3, 5, num_layers=2)
    >>> out, h_n = jaxseq.min_lstm(params, jnp.ones((4, 7, 3)), batch_first=True)
    >>> out.shape, h_n.shape
    ((4, 7, 5), (2, 4, 5))
    """
    return run_min_stack(
        "min_lstm",
        params,
        x,
        hx,
        lengths,
        batch_first=batch_first,
        mode=mode,
        dropout=dropout,
        train=train,
        key=key,
        dtype=dtype,
        chunk=chunk,
    )
