"""The functional stack: layers x directions over a flat dict of torch-named parameters.

``jaxseq.rnn``, ``jaxseq.lstm`` and ``jaxseq.gru`` take the same flat dict that a
``torch.nn.RNN/LSTM/GRU`` ``state_dict()`` holds (as JAX arrays), and infer the number of
layers, the directions, the hidden size, ``proj_size`` and ``bias`` from its keys and
shapes. Parameter names and layouts (G = gates: 1 RNN, 4 LSTM i,f,g,o, 3 GRU r,z,n;
D = 2 if bidirectional else 1; H_out = proj_size or H)::

    weight_ih_l{k}{_reverse}   (G*H, I)   for k = 0,   (G*H, D*H_out) for k > 0
    weight_hh_l{k}{_reverse}   (G*H, H_out)
    bias_ih_l{k}{_reverse}     (G*H,)     both biases, kept separately
    bias_hh_l{k}{_reverse}     (G*H,)
    weight_hr_l{k}{_reverse}   (H_out, H) LSTM with proj_size > 0 only

Shapes of the call (L = num_layers)::

    x        (T, N, I), or (N, T, I) with batch_first, or unbatched (T, I)
    hx       (L*D, N, H_out) — for LSTM a pair (h0, c0), c0 (L*D, N, H); unbatched: no N
    lengths  (N,) integers in [0, T]; None means all T
    output   (T, N, D*H_out) (batch_first: (N, T, D*H_out)); zero at t >= lengths[n]
    h_n      (L*D, N, H_out) ordered l0-forward, l0-reverse, l1-forward, ...
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxseq.cells import NUM_GATES, get_cell, get_step, input_projection
from jaxseq.fused import fused_layer
from jaxseq.scan import masked_scan

Array = jax.Array

__all__ = [
    "rnn",
    "lstm",
    "gru",
    "init_rnn",
    "init_lstm",
    "init_gru",
    "init_params",
    "param_shapes",
    "RNNSpec",
    "spec_from_params",
    "run_stack",
    "LAYER_IMPLS",
]

_NAME = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
_BASES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
_KEY_RE = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)_l(\d+)(_reverse)?$")


@dataclasses.dataclass(frozen=True)
class RNNSpec:
    """The static structure of a stack, as torch's constructor arguments."""

    kind: str
    input_size: int
    hidden_size: int
    num_layers: int = 1
    bias: bool = True
    bidirectional: bool = False
    proj_size: int = 0

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        """H_out: the size of h (proj_size if > 0, else hidden_size)."""
        return self.proj_size if self.proj_size > 0 else self.hidden_size

    def validate(self) -> None:
        name = _NAME.get(self.kind)
        if name is None:
            raise ValueError(f"Unknown RNN kind {self.kind!r}; expected 'rnn', 'lstm' or 'gru'")
        for field in ("input_size", "hidden_size", "num_layers"):
            v = getattr(self, field)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
                raise TypeError(f"{field} should be of type int, got: {type(v).__name__}")
        if self.hidden_size <= 0:
            raise ValueError("hidden_size must be greater than zero")
        if self.input_size < 0:
            raise ValueError("input_size must be non-negative")
        if self.num_layers <= 0:
            raise ValueError("num_layers must be greater than zero")
        if self.proj_size < 0:
            raise ValueError(
                "proj_size should be a positive integer or zero to disable projections"
            )
        if self.proj_size > 0 and self.kind != "lstm":
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if self.proj_size >= self.hidden_size:
            if self.proj_size > 0:
                raise ValueError("proj_size has to be smaller than hidden_size")

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """torch name -> shape, in torch's ``state_dict`` order."""
        g = NUM_GATES[self.kind] * self.hidden_size
        shapes: dict[str, tuple[int, ...]] = {}
        for layer in range(self.num_layers):
            in_size = self.input_size if layer == 0 else self.output_size * self.num_directions
            for sfx in _suffixes(layer, self.bidirectional):
                shapes[f"weight_ih{sfx}"] = (g, in_size)
                shapes[f"weight_hh{sfx}"] = (g, self.output_size)
                if self.bias:
                    shapes[f"bias_ih{sfx}"] = (g,)
                    shapes[f"bias_hh{sfx}"] = (g,)
                if self.proj_size > 0:
                    shapes[f"weight_hr{sfx}"] = (self.proj_size, self.hidden_size)
        return shapes


def _suffixes(layer: int, bidirectional: bool) -> list[str]:
    return [f"_l{layer}"] + ([f"_l{layer}_reverse"] if bidirectional else [])


def param_shapes(
    kind: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    *,
    bias: bool = True,
    bidirectional: bool = False,
    proj_size: int = 0,
) -> dict[str, tuple[int, ...]]:
    """``{torch name: shape}`` for a stack with these constructor arguments, in torch's order.

    >>> param_shapes("lstm", 3, 4, proj_size=2)
    {'weight_ih_l0': (16, 3), 'weight_hh_l0': (16, 2), 'bias_ih_l0': (16,), 'bias_hh_l0': (16,), 'weight_hr_l0': (2, 4)}
    """
    spec = RNNSpec(kind, input_size, hidden_size, num_layers, bias, bidirectional, proj_size)
    spec.validate()
    return spec.param_shapes()


def spec_from_params(kind: str, params: Mapping[str, Any]) -> RNNSpec:
    """Infer the stack's structure from torch-named parameters and check every shape."""
    name = _NAME.get(kind)
    if name is None:
        raise ValueError(f"Unknown RNN kind {kind!r}; expected 'rnn', 'lstm' or 'gru'")
    if not isinstance(params, Mapping):
        raise TypeError(
            f"params must be a mapping of torch parameter names to arrays, got {type(params).__name__}"
        )
    bad = [k for k in params if not _KEY_RE.match(k)]
    if bad:
        raise ValueError(f"{name}: unexpected parameter names {sorted(bad)}")
    if "weight_ih_l0" not in params or "weight_hh_l0" not in params:
        raise ValueError(
            f"{name}: params must hold at least 'weight_ih_l0' and 'weight_hh_l0'; got {sorted(params)}"
        )
    layers = {int(m.group(2)) for m in map(_KEY_RE.match, params)}
    w_ih0 = params["weight_ih_l0"]
    w_hh0 = params["weight_hh_l0"]
    if np.ndim(w_ih0) != 2 or np.ndim(w_hh0) != 2:
        raise ValueError(
            f"{name}: weight_ih_l0 and weight_hh_l0 must be 2-D, got shapes "
            f"{tuple(np.shape(w_ih0))} and {tuple(np.shape(w_hh0))}"
        )
    gates = NUM_GATES[kind]
    if w_ih0.shape[0] % gates:
        raise ValueError(
            f"{name}: weight_ih_l0 has {w_ih0.shape[0]} rows, not a multiple of {gates} gates"
        )
    hidden = w_ih0.shape[0] // gates
    proj = int(params["weight_hr_l0"].shape[0]) if "weight_hr_l0" in params else 0
    spec = RNNSpec(
        kind=kind,
        input_size=int(w_ih0.shape[1]),
        hidden_size=int(hidden),
        num_layers=max(layers) + 1,
        bias="bias_ih_l0" in params,
        bidirectional="weight_ih_l0_reverse" in params,
        proj_size=proj,
    )
    spec.validate()
    expected = spec.param_shapes()
    missing = sorted(set(expected) - set(params))
    unexpected = sorted(set(params) - set(expected))
    mismatched = [
        f"{k}: expected {expected[k]}, got {tuple(np.shape(params[k]))}"
        for k in expected
        if k in params and tuple(np.shape(params[k])) != expected[k]
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        if mismatched:
            parts.append("shape mismatches: " + "; ".join(mismatched))
        raise ValueError(f"{name}: inconsistent parameters: " + ", ".join(parts))
    return spec


# --------------------------------------------------------------------------- init


def init_params(
    key: Array,
    kind: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    *,
    bias: bool = True,
    bidirectional: bool = False,
    proj_size: int = 0,
    dtype: Any = jnp.float32,
) -> dict[str, Array]:
    """Parameters of a ``kind`` stack with torch's init: every one ~ U(-1/sqrt(H), 1/sqrt(H)).

    Returns a flat dict ``{torch name: array}`` (see :func:`param_shapes` for the shapes),
    one PRNG key per parameter.

    >>> import jax, jaxseq
    >>> p = jaxseq.init_params(jax.random.key(0), "gru", 3, 4, bidirectional=True)
    >>> sorted(p)[:3], p["weight_ih_l0_reverse"].shape
    (['bias_hh_l0', 'bias_hh_l0_reverse', 'bias_ih_l0'], (12, 3))
    """
    shapes = param_shapes(
        kind,
        input_size,
        hidden_size,
        num_layers,
        bias=bias,
        bidirectional=bidirectional,
        proj_size=proj_size,
    )
    bound = 1.0 / np.sqrt(hidden_size)
    keys = jax.random.split(key, len(shapes))
    return {
        name: jax.random.uniform(k, shape, dtype, -bound, bound)
        for k, (name, shape) in zip(keys, shapes.items(), strict=True)
    }


def init_rnn(
    key: Array, input_size: int, hidden_size: int, num_layers: int = 1, **kw: Any
) -> dict[str, Array]:
    """Parameters of ``torch.nn.RNN(input_size, hidden_size, num_layers, ...)``, torch's init.

    Keyword arguments as :func:`init_params` (``bias``, ``bidirectional``, ``dtype``).

    >>> import jax, jaxseq
    >>> p = jaxseq.init_rnn(jax.random.key(0), 3, 4)
    >>> p["weight_ih_l0"].shape, p["weight_hh_l0"].shape   # (1*H, I), (1*H, H)
    ((4, 3), (4, 4))
    """
    return init_params(key, "rnn", input_size, hidden_size, num_layers, **kw)


def init_lstm(
    key: Array, input_size: int, hidden_size: int, num_layers: int = 1, **kw: Any
) -> dict[str, Array]:
    """Parameters of ``torch.nn.LSTM(input_size, hidden_size, num_layers, ...)``, torch's init.

    Keyword arguments as :func:`init_params` (``bias``, ``bidirectional``, ``proj_size``, ``dtype``).

    >>> import jax, jaxseq
    >>> p = jaxseq.init_lstm(jax.random.key(0), 3, 4)
    >>> p["weight_ih_l0"].shape, p["weight_hh_l0"].shape   # (4*H, I), (4*H, H)
    ((16, 3), (16, 4))
    """
    return init_params(key, "lstm", input_size, hidden_size, num_layers, **kw)


def init_gru(
    key: Array, input_size: int, hidden_size: int, num_layers: int = 1, **kw: Any
) -> dict[str, Array]:
    """Parameters of ``torch.nn.GRU(input_size, hidden_size, num_layers, ...)``, torch's init.

    Keyword arguments as :func:`init_params` (``bias``, ``bidirectional``, ``dtype``).

    >>> import jax, jaxseq
    >>> p = jaxseq.init_gru(jax.random.key(0), 3, 4)
    >>> p["weight_ih_l0"].shape, p["weight_hh_l0"].shape   # (3*H, I), (3*H, H)
    ((12, 3), (12, 4))
    """
    return init_params(key, "gru", input_size, hidden_size, num_layers, **kw)


# --------------------------------------------------------------------------- one layer

# A layer implementation runs all directions of one layer:
#   impl(kind, nonlinearity, dir_params, x, carries, lengths, unroll) -> (out, finals)
#   (the "fast" impl also takes remat=K: checkpoint chunks of K steps)
#   dir_params: list (1 or 2) of per-direction dicts (names without the _l{k} suffix)
#   x (T, N, I); carries: list of per-direction initial carries; lengths (N,) int or None
#   out (T, N, D*H_out) with forward first; finals: list of per-direction final carries
LayerImpl = Callable[..., tuple[Array, list[Any]]]


def _layer_reference(kind, nonlinearity, dir_params, x, carries, lengths, unroll):
    """Slow, obviously correct: the whole cell (input matmul included) inside the scan."""
    cell = get_cell(kind, nonlinearity)
    outs, finals = [], []
    for d, (p, c0) in enumerate(zip(dir_params, carries, strict=True)):
        c, ys = masked_scan(cell, p, c0, x, lengths, reverse=d == 1, unroll=unroll)
        outs.append(ys)
        finals.append(c)
    return jnp.concatenate(outs, axis=-1) if len(outs) > 1 else outs[0], finals


def _layer_hoisted(kind, nonlinearity, dir_params, x, carries, lengths, unroll):
    """Input projection hoisted out of the scan: one (T*N, I) x (I, G*H) matmul per direction."""
    step = get_step(kind, nonlinearity)
    outs, finals = [], []
    for d, (p, c0) in enumerate(zip(dir_params, carries, strict=True)):
        gx = input_projection(p, x)  # (T, N, G*H)
        c, ys = masked_scan(step, p, c0, gx, lengths, reverse=d == 1, unroll=unroll)
        outs.append(ys)
        finals.append(c)
    return jnp.concatenate(outs, axis=-1) if len(outs) > 1 else outs[0], finals


#: Registered layer implementations; ``"fast"`` (:func:`jaxseq.fused.fused_layer`: fused
#: directions, custom VJP, input projection placed per backend) is the default;
#: ``"fast_loop"`` / ``"fast_hoisted"`` pin where its input projection happens.
LAYER_IMPLS: dict[str, LayerImpl] = {
    "reference": _layer_reference,
    "hoisted": _layer_hoisted,
    "fast": fused_layer,
    "fast_loop": functools.partial(fused_layer, project="loop"),
    "fast_hoisted": functools.partial(fused_layer, project="hoisted"),
}

#: The implementations that accept ``remat``.
_REMAT_IMPLS = ("fast", "fast_loop", "fast_hoisted")


# --------------------------------------------------------------------------- validation


def _is_concrete(a: Any) -> bool:
    return not isinstance(a, jax.core.Tracer)


def _shape_str(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def _check_lengths(name: str, lengths: Any, batch: int, T: int, unbatched: bool) -> Array:
    if isinstance(lengths, (list, tuple)):
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in lengths):
            raise TypeError(f"{name}: lengths must be integers, got {lengths!r}")
        lengths = np.asarray(lengths, dtype=np.int32).reshape(len(lengths))
    elif isinstance(lengths, (int, np.integer)) and not isinstance(lengths, bool):
        lengths = np.asarray(lengths, dtype=np.int32)
    if not hasattr(lengths, "dtype") or not hasattr(lengths, "shape"):
        raise TypeError(
            f"{name}: lengths must be an integer array of shape (N,), got {type(lengths).__name__}"
        )
    if lengths.dtype == np.bool_ or not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise TypeError(f"{name}: lengths must be an integer array, got dtype {lengths.dtype}")
    expected = () if unbatched else (batch,)
    if tuple(lengths.shape) not in (expected, (batch,)):
        raise ValueError(
            f"{name}: lengths must have shape {expected} (one length per sequence), "
            f"got {tuple(lengths.shape)}"
        )
    if _is_concrete(lengths):
        arr = np.asarray(lengths)
        if arr.size and (arr.min() < 0 or arr.max() > T):
            raise ValueError(
                f"{name}: lengths must lie in [0, T] = [0, {T}], got min {arr.min()} "
                f"and max {arr.max()}"
            )
    return jnp.asarray(lengths).reshape(batch).astype(jnp.int32)


def _check_hidden(name: str, label: str, h: Any, expected: tuple[int, ...], dtype: Any) -> Array:
    if not hasattr(h, "shape") or not hasattr(h, "dtype"):
        raise TypeError(f"{name}: {label} must be an array, got {type(h).__name__}")
    if tuple(h.shape) != expected:
        raise ValueError(f"Expected {label} size {tuple(expected)}, got {_shape_str(h.shape)}")
    if not jnp.issubdtype(h.dtype, jnp.floating):
        raise TypeError(f"{name}: {label} must be a floating point array, got dtype {h.dtype}")
    if jnp.dtype(h.dtype) != jnp.dtype(dtype):
        raise TypeError(
            f"{name}: input and {label} must have the same dtype, found input of dtype "
            f"{jnp.dtype(dtype)} and {label} of dtype {h.dtype}"
        )
    return jnp.asarray(h)


def check_nonlinearity(kind: str, nonlinearity: str) -> None:
    """Raise torch's error for an RNN nonlinearity other than ``'tanh'`` or ``'relu'``."""
    if kind == "rnn" and nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")


def check_dropout(dropout: Any) -> float:
    """Raise torch's error unless ``dropout`` is a number in [0, 1]; return it as a float."""
    if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout <= 1:
        raise ValueError(
            "dropout should be a number in range [0, 1] representing the probability "
            f"of an element being zeroed, got {dropout!r}"
        )
    return float(dropout)


def _dropout(key: Array, x: Array, rate: float) -> Array:
    if rate >= 1.0:
        return jnp.zeros_like(x)
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros_like(x))


# --------------------------------------------------------------------------- the stack


def run_stack(
    kind: str,
    params: Mapping[str, Any],
    x: Any,
    hx: Any = None,
    lengths: Any = None,
    *,
    nonlinearity: str = "tanh",
    batch_first: bool = False,
    dropout: float = 0.0,
    train: bool = False,
    key: Array | None = None,
    unroll: int = 1,
    impl: str = "fast",
    dtype: Any = None,
    remat: int | None = None,
) -> tuple[Array, Any]:
    """Shared implementation of :func:`rnn`, :func:`lstm` and :func:`gru`."""
    spec = spec_from_params(kind, params)
    name = _NAME[kind]
    check_nonlinearity(kind, nonlinearity)
    check_dropout(dropout)
    if impl not in LAYER_IMPLS:
        raise ValueError(f"Unknown impl {impl!r}; expected one of {sorted(LAYER_IMPLS)}")
    if not isinstance(unroll, (int, bool)) or (not isinstance(unroll, bool) and unroll < 1):
        raise ValueError(f"unroll must be a positive integer or a bool, got {unroll!r}")
    if remat is not None:
        if not isinstance(remat, (int, np.integer)) or isinstance(remat, bool) or remat < 1:
            raise ValueError(
                f"remat must be None or a positive integer chunk length, got {remat!r}"
            )
        if impl not in _REMAT_IMPLS:
            raise ValueError(
                f"remat is supported by impl in {list(_REMAT_IMPLS)}, got impl={impl!r}"
            )
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name}: input must be an array, got {type(x).__name__}")
    if x.ndim not in (2, 3):
        raise ValueError(f"{name}: Expected input to be 2D or 3D, got {x.ndim}D instead")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name}: input must be a floating point array, got dtype {x.dtype}")
    if x.shape[-1] != spec.input_size:
        raise ValueError(
            f"input.size(-1) must be equal to input_size. Expected {spec.input_size}, "
            f"got {x.shape[-1]}"
        )

    pdtype = jnp.dtype(params["weight_ih_l0"].dtype)
    if dtype is None:
        # An explicit, documented choice (as Flax): compute in the promotion of the input
        # and parameter dtypes, even when the caller runs with strict promotion.
        with jax.numpy_dtype_promotion("standard"):
            dtype = jnp.promote_types(x.dtype, pdtype)
    dtype = jnp.dtype(dtype)

    unbatched = x.ndim == 2
    if unbatched:
        x = x[:, None, :]
    elif batch_first:
        x = jnp.swapaxes(x, 0, 1)
    x = jnp.asarray(x)
    T, N = x.shape[0], x.shape[1]
    L, D, H, Hout = spec.num_layers, spec.num_directions, spec.hidden_size, spec.output_size

    # Initial state -------------------------------------------------------------------
    h_shape = (L * D, Hout) if unbatched else (L * D, N, Hout)
    c_shape = (L * D, H) if unbatched else (L * D, N, H)
    if hx is None:
        h0 = jnp.zeros((L * D, N, Hout), dtype)
        c0 = jnp.zeros((L * D, N, H), dtype)
    elif kind == "lstm":
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise TypeError(f"{name}: hx must be a tuple (h_0, c_0), got {type(hx).__name__}")
        in_dtype = x.dtype
        h0 = _check_hidden(name, "hidden[0]", hx[0], h_shape, in_dtype).astype(dtype)
        c0 = _check_hidden(name, "hidden[1]", hx[1], c_shape, in_dtype).astype(dtype)
        if unbatched:
            h0, c0 = h0[:, None], c0[:, None]
    else:
        if isinstance(hx, (tuple, list)):
            raise TypeError(
                f"{name}: hx must be a single array for {name}, got a {type(hx).__name__}"
            )
        h0 = _check_hidden(name, "hidden", hx, h_shape, x.dtype).astype(dtype)
        if unbatched:
            h0 = h0[:, None]
        c0 = None

    if lengths is not None:
        lengths = _check_lengths(name, lengths, N, T, unbatched)
    if train and dropout > 0 and L > 1 and key is None:
        raise ValueError(f"{name}: dropout={dropout} in training mode needs a PRNG key (key=...)")

    layer_fn = LAYER_IMPLS[impl]
    if remat is not None:
        layer_fn = functools.partial(layer_fn, remat=int(remat))
    x = x.astype(dtype)
    if lengths is not None:
        # Padding never reaches a layer: a NaN or inf there would otherwise poison the
        # weight gradients (0 * nan = nan), though outputs and states stay right.
        valid = jnp.arange(T, dtype=lengths.dtype)[:, None] < lengths[None, :]  # (T, N)
        x = jnp.where(valid[:, :, None], x, jnp.zeros_like(x))
    h_out, c_out = [], []
    for layer in range(L):
        sfxs = _suffixes(layer, spec.bidirectional)
        dir_params = [
            {
                base: jnp.asarray(params[base + sfx]).astype(dtype)
                for base in _BASES
                if base + sfx in params
            }
            for sfx in sfxs
        ]
        idx = [layer * D + d for d in range(D)]
        carries = [(h0[i], c0[i]) if kind == "lstm" else h0[i] for i in idx]
        x, finals = layer_fn(kind, nonlinearity, dir_params, x, carries, lengths, unroll)
        for f in finals:
            if kind == "lstm":
                h_out.append(f[0])
                c_out.append(f[1])
            else:
                h_out.append(f)
        if train and dropout > 0 and layer < L - 1:
            key, sub = jax.random.split(key)
            x = _dropout(sub, x, float(dropout))

    h_n = jnp.stack(h_out)  # (L*D, N, H_out)
    c_n = jnp.stack(c_out) if kind == "lstm" else None
    if unbatched:
        x = x[:, 0]
        h_n = h_n[:, 0]
        c_n = c_n[:, 0] if c_n is not None else None
    elif batch_first:
        x = jnp.swapaxes(x, 0, 1)
    return x, ((h_n, c_n) if kind == "lstm" else h_n)


_CALL_DOC = """
    Args:
      params: flat dict of torch-named parameters (see :mod:`jaxseq.layers`); the number
        of layers, directions, sizes, ``bias`` and ``proj_size`` are read from it.
      x: (T, N, I), or (N, T, I) with ``batch_first=True``, or unbatched (T, I).
      hx: optional initial state {hx_doc}; zeros when None.
      lengths: optional (N,) integer array (or list) of valid lengths in [0, T], unsorted
        and repeated values allowed. Output at ``t >= lengths[n]`` is 0, the final state
        is the state at each row's last valid step, the reverse direction starts at each
        row's last valid element; length 0 gives zero output and ``h_n = h0``. Traced
        lengths (under ``jit``) are not range-checked; values above T act as T and
        negative values as 0.
      batch_first: input and output are (N, T, ...).
      dropout: dropout probability on the outputs of every layer but the last.
      train: apply dropout (needs ``key`` when ``dropout > 0`` and there are 2+ layers).
      key: PRNG key for dropout.
      unroll: ``jax.lax.scan`` unroll factor.
      impl: ``"fast"`` (default: directions fused in one scan, custom VJP, the input
        projection hoisted out of the scan, or for the LSTM on CPU part of the per-step
        matmul; ``"fast_loop"`` / ``"fast_hoisted"`` force one placement; see
        :mod:`jaxseq.fused`), ``"hoisted"`` (projection
        hoisted, one plain masked scan per direction) or ``"reference"`` (the cell, input
        matmul included, inside a plain masked scan — slow and obviously correct).
      dtype: computation dtype; default: the promotion of the input and parameter dtypes.
      remat: None, or a chunk length K (``impl="fast"`` only): checkpoint every K steps
        and recompute inside each chunk on the backward pass, so training memory grows
        like T/K + K instead of T (try K about sqrt(T)). Same values and gradients.

    Returns:
      {returns_doc}
"""


def rnn(
    params: Mapping[str, Any],
    x: Any,
    hx: Any = None,
    lengths: Any = None,
    *,
    nonlinearity: str = "tanh",
    batch_first: bool = False,
    dropout: float = 0.0,
    train: bool = False,
    key: Array | None = None,
    unroll: int = 1,
    impl: str = "fast",
    dtype: Any = None,
    remat: int | None = None,
) -> tuple[Array, Array]:
    return run_stack(
        "rnn",
        params,
        x,
        hx,
        lengths,
        nonlinearity=nonlinearity,
        batch_first=batch_first,
        dropout=dropout,
        train=train,
        key=key,
        unroll=unroll,
        impl=impl,
        dtype=dtype,
        remat=remat,
    )


def lstm(
    params: Mapping[str, Any],
    x: Any,
    hx: Any = None,
    lengths: Any = None,
    *,
    batch_first: bool = False,
    dropout: float = 0.0,
    train: bool = False,
    key: Array | None = None,
    unroll: int = 1,
    impl: str = "fast",
    dtype: Any = None,
    remat: int | None = None,
) -> tuple[Array, tuple[Array, Array]]:
    return run_stack(
        "lstm",
        params,
        x,
        hx,
        lengths,
        batch_first=batch_first,
        dropout=dropout,
        train=train,
        key=key,
        unroll=unroll,
        impl=impl,
        dtype=dtype,
        remat=remat,
    )


def gru(
    params: Mapping[str, Any],
    x: Any,
    hx: Any = None,
    lengths: Any = None,
    *,
    batch_first: bool = False,
    dropout: float = 0.0,
    train: bool = False,
    key: Array | None = None,
    unroll: int = 1,
    impl: str = "fast",
    dtype: Any = None,
    remat: int | None = None,
) -> tuple[Array, Array]:
    return run_stack(
        "gru",
        params,
        x,
        hx,
        lengths,
        batch_first=batch_first,
        dropout=dropout,
        train=train,
        key=key,
        unroll=unroll,
        impl=impl,
        dtype=dtype,
        remat=remat,
    )


rnn.__doc__ = (
    """Multi-layer Elman RNN, as ``torch.nn.RNN`` (``h' = act(W_ih x + b_ih + W_hh h + b_hh)``).

    >>> import jax, jax.numpy as jnp, jaxseq
    >>> params = jaxseq.init_rnn(jax.random.key(0), input_size=3, hidden_size=5, num_layers=2)
    >>> out, h_n = jaxseq.rnn(params, jnp.ones((7, 4, 3)), lengths=jnp.array([7, 3, 0, 5]))
    >>> out.shape, h_n.shape, float(abs(out[3:, 1]).max())
    ((7, 4, 5), (2, 4, 5), 0.0)
"""
    + _CALL_DOC.format(
        hx_doc="(L*D, N, H)",
        returns_doc="``(output, h_n)``: output (T, N, D*H), h_n (L*D, N, H).",
    )
    + "      nonlinearity: ``'tanh'`` (default) or ``'relu'``.\n"
)

lstm.__doc__ = """Multi-layer LSTM, as ``torch.nn.LSTM`` (gate order i, f, g, o; optional ``proj_size``).

    Per layer and direction (see :func:`jaxseq.cells.lstm_cell`)::

        i = sigmoid(W_ii x + b_ii + W_hi h + b_hi)     f = sigmoid(W_if x + b_if + W_hf h + b_hf)
        g = tanh(W_ig x + b_ig + W_hg h + b_hg)        o = sigmoid(W_io x + b_io + W_ho h + b_ho)
        c' = f * c + i * g                             h' = o * tanh(c')   (W_hr o*tanh(c') if projected)

    >>> import jax, jax.numpy as jnp, jaxseq
    >>> params = jaxseq.init_lstm(jax.random.key(0), 3, 5, bidirectional=True, proj_size=2)
    >>> out, (h_n, c_n) = jaxseq.lstm(params, jnp.ones((7, 4, 3)), lengths=[7, 3, 0, 5])
    >>> out.shape, h_n.shape, c_n.shape
    ((7, 4, 4), (2, 4, 2), (2, 4, 5))
""" + _CALL_DOC.format(
    hx_doc="``(h0, c0)`` with h0 (L*D, N, H_out), c0 (L*D, N, H)",
    returns_doc="``(output, (h_n, c_n))``: output (T, N, D*H_out), h_n (L*D, N, H_out), "
    "c_n (L*D, N, H).",
)

gru.__doc__ = """Multi-layer GRU, as ``torch.nn.GRU`` (gate order r, z, n; reset after the hidden matmul).

    Per layer and direction (see :func:`jaxseq.cells.gru_cell`)::

        r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)     z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn))  h' = (1 - z) * n + z * h

    >>> import jax, jax.numpy as jnp, jaxseq
    >>> params = jaxseq.init_gru(jax.random.key(0), 3, 5, num_layers=2)
    >>> out, h_n = jaxseq.gru(params, jnp.ones((4, 7, 3)), batch_first=True)
    >>> out.shape, h_n.shape
    ((4, 7, 5), (2, 4, 5))
""" + _CALL_DOC.format(
    hx_doc="(L*D, N, H)",
    returns_doc="``(output, h_n)``: output (T, N, D*H), h_n (L*D, N, H).",
)
