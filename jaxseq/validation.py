"""Argument checks of the stack and the modules: every message in one place.

Errors are raised in Python, before tracing, as ``ValueError`` / ``TypeError`` with
torch's wording where torch has a message for the case. :mod:`jaxseq.checks` (the
opt-in checks that also work under ``jit``) uses the same lengths message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxseq.recurrences import Recurrence, get

Array = jax.Array

#: The message for lengths outside [0, T]; ``jaxseq.checks`` formats it under jit too.
LENGTHS_RANGE = "lengths must lie in [0, T] = [0, {T}], got min {lo} and max {hi}"


def _is_array(a: Any) -> bool:
    return hasattr(a, "shape") and hasattr(a, "dtype") and hasattr(a, "ndim")


def is_concrete(a: Any) -> bool:
    """False for a traced value (inside ``jit``/``grad``), whose contents Python cannot read."""
    return not isinstance(a, jax.core.Tracer)


def shape_str(shape: Sequence[int]) -> str:
    """torch's way of printing a size in messages: ``[2, 3, 8]``."""
    return "[" + ", ".join(str(s) for s in shape) + "]"


# --------------------------------------------------------------------------- structure


def check_flags(**flags: Any) -> None:
    """torch's check of boolean constructor flags: ``bias should be of type bool, got: int``.

    A truthy string such as ``"False"`` would otherwise silently mean True.
    """
    for field, v in flags.items():
        if not isinstance(v, bool):
            raise TypeError(f"{field} should be of type bool, got: {type(v).__name__}")


def check_structure(
    rec: Recurrence,
    input_size: Any,
    hidden_size: Any,
    num_layers: Any,
    proj_size: Any,
    *,
    cell: bool = False,
) -> None:
    """torch's constructor checks of sizes, layers and ``proj_size``. torch's cells
    (``cell=True``) accept ``input_size=0``; its layers do not."""
    for field, v in (
        ("input_size", input_size),
        ("hidden_size", hidden_size),
        ("num_layers", num_layers),
        ("proj_size", proj_size),
    ):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
            raise TypeError(f"{field} should be of type int, got: {type(v).__name__}")
    if input_size < 0 or (input_size == 0 and not cell):
        raise ValueError("input_size must be greater than zero")
    if hidden_size <= 0:
        raise ValueError("hidden_size must be greater than zero")
    if num_layers <= 0:
        raise ValueError("num_layers must be greater than zero")
    if proj_size < 0:
        raise ValueError("proj_size should be a positive integer or zero to disable projections")
    if proj_size > 0 and not rec.projection:
        raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
    if proj_size > 0 and proj_size >= hidden_size:
        raise ValueError("proj_size has to be smaller than hidden_size")


def check_nonlinearity(kind: str | Recurrence, nonlinearity: str) -> None:
    """Raise torch's error for a nonlinearity the kind does not take (RNN: tanh or relu).

    Kinds with a single, fixed nonlinearity ignore the argument, as torch's LSTM and GRU
    have none.
    """
    allowed = get(kind).nonlinearities
    if len(allowed) > 1 and nonlinearity not in allowed:
        options = " or ".join(f"'{a}'" for a in allowed)
        raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from {options}.")


def check_rngs(rngs: Any) -> None:
    """Modules draw their parameters (and dropout masks) from an ``nnx.Rngs``."""
    if not isinstance(rngs, nnx.Rngs):
        raise TypeError(f"rngs must be an nnx.Rngs, got {type(rngs).__name__}")


def check_dropout(dropout: Any) -> float:
    """Raise torch's error unless ``dropout`` is a number in [0, 1]; return it as a float."""
    if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout <= 1:
        raise ValueError(
            "dropout should be a number in range [0, 1] representing the probability "
            f"of an element being zeroed, got {dropout!r}"
        )
    return float(dropout)


def check_chunk_lengths(**values: Any) -> None:
    """Each of ``values`` (``remat``, ``chunk``) None or a positive integer chunk length.
    Which implementations take them is the capability table's to say
    (:func:`jaxseq.layer.check`)."""
    for label, value in values.items():
        if value is None:
            continue
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(
                f"{label} must be None or a positive integer chunk length, got {value!r}"
            )


def check_unroll(unroll: Any) -> None:
    if not isinstance(unroll, (int, bool)) or (not isinstance(unroll, bool) and unroll < 1):
        raise ValueError(f"unroll must be a positive integer or a bool, got {unroll!r}")


# --------------------------------------------------------------------------- call arguments


def check_input(name: str, x: Any, input_size: int) -> None:
    """x must be a floating (T, N, I) / (N, T, I) / unbatched (T, I) array with I = input_size."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name}: input must be an array, got {type(x).__name__}")
    if x.ndim not in (2, 3):
        raise ValueError(f"{name}: Expected input to be 2D or 3D, got {x.ndim}D instead")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name}: input must be a floating point array, got dtype {x.dtype}")
    if x.shape[-1] != input_size:
        raise ValueError(
            f"input.size(-1) must be equal to input_size. Expected {input_size}, got {x.shape[-1]}"
        )


def check_lengths(name: str, lengths: Any, batch: int, T: int, unbatched: bool) -> Array:
    """lengths as an (N,) int32 array; type, shape and (where concrete) range checked."""
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
    if is_concrete(lengths):
        arr = np.asarray(lengths)
        if arr.size and (arr.min() < 0 or arr.max() > T):
            raise ValueError(f"{name}: " + LENGTHS_RANGE.format(T=T, lo=arr.min(), hi=arr.max()))
    return jnp.asarray(lengths).reshape(batch).astype(jnp.int32)


def check_resets(
    name: str, resets: Any, T: int, batch: int, batch_first: bool, unbatched: bool
) -> Array:
    """resets as a (T, N) bool array (time-major); type and shape checked.

    Accepted: a bool array (or nested list of bools) with the time and batch axes of the
    input, (T, N), (N, T) with ``batch_first``, or (T,) for an unbatched input.
    """
    if isinstance(resets, (list, tuple)):
        resets = np.asarray(resets)
    if not hasattr(resets, "dtype") or not hasattr(resets, "shape"):
        raise TypeError(f"{name}: resets must be a bool array, got {type(resets).__name__}")
    if resets.dtype != np.bool_:
        raise TypeError(
            f"{name}: resets must be a bool array (True where a new segment starts), got "
            f"dtype {resets.dtype}; convert episode-end flags with .astype(bool) first"
        )
    if unbatched:
        expected: tuple[int, ...] = (T,)
    else:
        expected = (batch, T) if batch_first else (T, batch)
    if tuple(resets.shape) != expected:
        axes = "(T,)" if unbatched else ("(N, T)" if batch_first else "(T, N)")
        raise ValueError(
            f"{name}: resets must have the time and batch axes of the input, {axes} = "
            f"{expected}, got {tuple(resets.shape)}"
        )
    r = jnp.asarray(resets)
    if unbatched:
        return r[:, None]
    return r.T if batch_first else r


def expected_mask_shapes(
    rec: Recurrence, spec: Any, T: int, N: int
) -> dict[str, tuple[int, ...] | tuple[tuple[int, ...], ...]]:
    """The ``masks=`` keys a stack takes and their shapes (zoneout: one per state)."""
    L, D = spec.num_layers, spec.num_directions
    H, H_out = spec.hidden_size, spec.output_size
    shapes: dict[str, Any] = {"input": (N, spec.input_size)}
    sizes = rec.state_sizes(H, H_out)
    for k in range(L):
        shapes[f"output_l{k}"] = (N, D * H_out)
        if rec.is_linear:
            continue
        for sfx in ("", "_reverse")[:D]:
            shapes[f"weight_hh_l{k}{sfx}"] = (rec.num_gates * H, H_out)
        shapes[f"hidden_l{k}"] = (D, N, H_out)
        shapes[f"zoneout_l{k}"] = tuple((T, D, N, s) for s in sizes)
    return shapes


def check_masks(
    name: str, masks: Any, rec: Recurrence, spec: Any, T: int, N: int
) -> dict[str, Any]:
    """``masks=`` checked against :func:`expected_mask_shapes`: known keys, floating
    arrays of the right shapes (zoneout: a tuple with one array per state)."""
    if not isinstance(masks, Mapping):
        raise TypeError(f"{name}: masks must be a dict of arrays, got {type(masks).__name__}")
    shapes = expected_mask_shapes(rec, spec, T, N)
    out: dict[str, Any] = {}
    for key, m in masks.items():
        if key not in shapes:
            raise ValueError(f"{name}: unknown mask {key!r}; this stack takes {sorted(shapes)}")
        want: Any = shapes[key]
        if key.startswith("zoneout"):
            if not isinstance(m, (tuple, list)) or len(m) != len(want):
                raise TypeError(f"{name}: masks[{key!r}] must be a tuple of {len(want)} array(s)")
            arrays, wants = tuple(m), want
        else:
            arrays, wants = (m,), (want,)
        w: Any
        for a, w in zip(arrays, wants, strict=True):
            if not _is_array(a) or not jnp.issubdtype(a.dtype, jnp.floating):
                raise TypeError(f"{name}: masks[{key!r}] must be floating arrays")
            if tuple(a.shape) != tuple(w):
                raise ValueError(
                    f"{name}: masks[{key!r}] must have shape {tuple(w)}, got {tuple(a.shape)}"
                )
            if key.startswith("zoneout") and is_concrete(a) and a.size:
                values = np.asarray(a)  # concrete: NumPy, so nothing is staged under a trace
                lo, hi = float(values.min()), float(values.max())
                if lo < 0.0 or hi > 1.0:
                    raise ValueError(
                        f"{name}: masks[{key!r}] values must lie in [0, 1] (the share of the "
                        f"previous state kept), got min {lo} and max {hi}"
                    )
        out[key] = tuple(jnp.asarray(a) for a in arrays) if key.startswith("zoneout") else m
    return out


def check_cell_inputs(
    name: str, x: Any, hx: Any, input_size: int, H: int, num_states: int
) -> list[tuple[str, str, Any]]:
    """A cell's x and hx, checked in Python as torch checks them; returns
    ``[(rank label, size label, state), ...]``."""
    if not _is_array(x):
        raise TypeError(f"{name}: input must be an array, got {type(x).__name__}")
    if x.ndim not in (1, 2):
        raise ValueError(f"{name}: Expected input to be 1D or 2D, got {x.ndim}D instead")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name}: input must be a floating point array, got dtype {x.dtype}")
    states: list[tuple[str, str, Any]] = []
    if hx is not None:
        if num_states > 1:
            if not isinstance(hx, (tuple, list)):
                raise TypeError(f"{name}: hx must be a tuple (h_0, c_0), got {type(hx).__name__}")
            if len(hx) != num_states:
                raise ValueError(f"{name} expects two hidden states (h_0, c_0), got {len(hx)}")
            states = [(f"hx[{i}]", f"hidden{i}", h) for i, h in enumerate(hx)]
        else:
            if isinstance(hx, (tuple, list)):
                raise TypeError(
                    f"{name}: hx must be a single array for {name}, got a {type(hx).__name__}"
                )
            states = [("hidden", "hidden0", hx)]
        for label, _, h in states:
            if not _is_array(h):
                raise TypeError(f"{name}: {label} must be an array, got {type(h).__name__}")
            if h.ndim not in (1, 2):
                raise ValueError(f"{name}: Expected {label} to be 1D or 2D, got {h.ndim}D instead")
    if x.shape[-1] != input_size:
        raise ValueError(
            f"input has inconsistent input_size: got {x.shape[-1]} expected {input_size}"
        )
    for label, size_label, h in states:
        if h.ndim != x.ndim:
            # torch reports this case through its batch or size checks; say it plainly.
            raise ValueError(
                f"{name}: Expected {label} to be {x.ndim}D for a {x.ndim}D input "
                f"({'batched' if x.ndim == 2 else 'unbatched'}), got {h.ndim}D instead"
            )
        if x.ndim == 2 and h.shape[0] != x.shape[0]:
            raise ValueError(
                f"Input batch size {x.shape[0]} doesn't match {size_label} batch size {h.shape[0]}"
            )
        if h.shape[-1] != H:
            raise ValueError(
                f"{size_label} has inconsistent hidden_size: got {h.shape[-1]}, expected {H}"
            )
        if not jnp.issubdtype(h.dtype, jnp.floating):
            raise TypeError(f"{name}: {label} must be a floating point array, got dtype {h.dtype}")
    return states


def check_same_dtype(name: str, label: str, h: Any, dtype: Any) -> None:
    """An initial state must have the input's dtype (as torch)."""
    if jnp.dtype(h.dtype) != jnp.dtype(dtype):
        raise TypeError(
            f"{name}: input and {label} must have the same dtype, found input of dtype "
            f"{jnp.dtype(dtype)} and {label} of dtype {h.dtype}"
        )


def compute_dtype(x_dtype: Any, param_dtype: Any, dtype: Any = None) -> Any:
    """The computation dtype: ``dtype`` if given, else the promotion of the input and
    parameter dtypes (an explicit, documented choice, as Flax: even when the caller runs
    with strict promotion)."""
    if dtype is None:
        with jax.numpy_dtype_promotion("standard"):
            dtype = jnp.promote_types(x_dtype, jnp.dtype(param_dtype))
    return jnp.dtype(dtype)


def carry_dtype_for(dtype: Any, carry_dtype: Any = None) -> Any:
    """The mixed-precision rule: the dtype of the carry and the gate nonlinearities.

    ``carry_dtype`` if given (a float at least as wide as the compute dtype); otherwise
    float32 when the compute dtype is a 16-bit float (bfloat16, float16), else the
    compute dtype itself.

    >>> import jax.numpy as jnp
    >>> [str(carry_dtype_for(jnp.dtype(d))) for d in ("bfloat16", "float32")]
    ['float32', 'float32']
    """
    dtype = jnp.dtype(dtype)
    if carry_dtype is None:
        small = jnp.issubdtype(dtype, jnp.floating) and dtype.itemsize == 2
        return jnp.dtype(jnp.float32) if small else dtype
    cd = check_carry_dtype(carry_dtype)
    if cd.itemsize < dtype.itemsize:
        raise ValueError(
            f"carry_dtype must be at least as wide as the compute dtype {dtype}, got {cd}"
        )
    return cd


def check_carry_dtype(value: Any) -> Any:
    """``value`` as a floating NumPy dtype: TypeError naming ``carry_dtype`` otherwise."""
    try:
        cd = jnp.dtype(value)
    except TypeError:
        raise TypeError(f"carry_dtype must be None or a floating dtype, got {value!r}") from None
    if not jnp.issubdtype(cd, jnp.floating):
        raise TypeError(f"carry_dtype must be a floating dtype, got {cd}")
    return cd


def check_hidden(name: str, label: str, h: Any, expected: tuple[int, ...], dtype: Any) -> Array:
    """One initial state: an array of the expected shape and the input's floating dtype."""
    if not hasattr(h, "shape") or not hasattr(h, "dtype"):
        raise TypeError(f"{name}: {label} must be an array, got {type(h).__name__}")
    if tuple(h.shape) != expected:
        raise ValueError(f"Expected {label} size {tuple(expected)}, got {shape_str(h.shape)}")
    if not jnp.issubdtype(h.dtype, jnp.floating):
        raise TypeError(f"{name}: {label} must be a floating point array, got dtype {h.dtype}")
    check_same_dtype(name, label, h, dtype)
    return jnp.asarray(h)


def check_hx(
    rec: Recurrence,
    name: str,
    hx: Any,
    shapes: Sequence[tuple[int, ...]],
    dtype: Any,
    label: str = "hx",
) -> tuple[Array, ...]:
    """The initial states of ``hx`` (one array, or a tuple ``(h_0, c_0)`` for the LSTM);
    ``label`` names the argument in errors."""
    # torch's word for hx in its messages is "hidden"; other states keep their own name.
    what = "hidden" if label == "hx" else label
    if rec.num_states == 1:
        if isinstance(hx, (tuple, list)):
            raise TypeError(
                f"{name}: {label} must be a single array for {name}, got a {type(hx).__name__}"
            )
        return (check_hidden(name, what, hx, tuple(shapes[0]), dtype),)
    if not isinstance(hx, (tuple, list)) or len(hx) != rec.num_states:
        names = (
            "h_0, c_0"
            if rec.num_states == 2
            else ", ".join(f"state_{i}" for i in range(rec.num_states))
        )
        raise TypeError(f"{name}: {label} must be a tuple ({names}), got {type(hx).__name__}")
    return tuple(
        check_hidden(name, f"{what}[{i}]", h, tuple(s), dtype)
        for i, (h, s) in enumerate(zip(hx, shapes, strict=True))
    )
