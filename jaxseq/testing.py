"""Parity checks for your own PyTorch -> JAX port: outputs, gradients and optimizer steps.

You ported a ``torch.nn.Module`` to a Flax NNX module and gave both the same weights
(:func:`copy_weights`). :func:`check_parity` runs both on the same inputs and compares,
tensor by tensor and by torch name:

1. ``param@0``: the weights before anything runs (a weight that was not copied is named
   here, before it spoils every output);
2. ``output``: every output array (outputs may be nested tuples, lists or dicts);
3. ``grad``: the gradient of every parameter of the scalar ``sum(out * cot)`` summed over
   the floating outputs, with a fixed random cotangent ``cot`` per output;
4. ``loss@k`` and ``param@N``: ``steps`` optimizer steps on that scalar (``torch.optim``
   on one side, the optax twin on the other), the loss before each step and every
   parameter after the last.

It returns a :class:`ParityReport` (one row per tensor; ``print(report)`` shows the
table) and, by default, raises ``AssertionError`` with the worst rows when a tensor
differs beyond tolerance::

    import numpy as np, torch, jax.numpy as jnp
    from flax import nnx
    import jaxseq, jaxseq.testing

    torch_lstm = torch.nn.LSTM(3, 5, batch_first=True).double()
    jax_lstm = jaxseq.nn.LSTM(3, 5, batch_first=True, param_dtype=jnp.float64,
                              rngs=nnx.Rngs(0))
    jaxseq.testing.copy_weights(torch_lstm, jax_lstm)
    x = np.random.default_rng(0).normal(size=(2, 7, 3))        # (N, T, I) float64
    report = jaxseq.testing.check_parity(torch_lstm, jax_lstm, x, steps=3)
    print(report)

Both modules are copied and the copies put in eval mode (``.eval()``: no dropout), so
the modules you pass are never changed; the comparison needs deterministic modules. This
module imports PyTorch only when :func:`check_parity` runs (``pip install
'jaxseq[torch]'``), so ``import jaxseq.testing`` works without it; its doctests use no
torch.

Tolerances: ``|jax - torch| <= atol + rtol * |torch|`` elementwise (as ``np.allclose``
and ``torch.testing.assert_close``), torch being the reference, with defaults by dtype
(:data:`TOLERANCES`): float64 ``rtol=1e-9, atol=1e-10`` (the two frameworks sum in
different orders, so exact equality is not expected, but a real bug is far above this);
float32 ``rtol=1e-5, atol=1e-6``; integer and bool arrays must be equal. When the two
sides' dtypes differ the less precise one sets the tolerance. NaN matches NaN.

Adam and AdamW divide each gradient by its running RMS, so a gradient entry that is
rounding noise (1e-17 in float64, 1e-8 in float32) still moves its parameter by up to
``lr``: compare optimizer steps in float64, or keep ``steps`` small in float32.

>>> import numpy as np
>>> row = compare(np.array([1.0, 2.0, 0.0]), np.array([1.0, 2.5, 0.0]), name="w")
>>> row.max_abs_err, row.max_rel_err, row.passed
(0.5, 0.2, False)
>>> print(ParityReport([row, compare(np.zeros(2), np.zeros(2), what="grad", name="w")]))
FAILED: 1 of 2 tensors differ (float64: rtol=1e-09, atol=1e-10)
what    name  shape  max abs err  max rel err  err/tol  ok
------  ----  -----  -----------  -----------  -------  ----
output  w     (3,)      5.00e-01     2.00e-01  1.9e+08  FAIL
grad    w     (2,)      0.00e+00     0.00e+00        0  ok
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxseq import interop
from jaxseq.interop.state_dict import to_numpy

__all__ = [
    "check_parity",
    "copy_weights",
    "compare",
    "default_tolerance",
    "ParityReport",
    "ParityRow",
    "TOLERANCES",
    "OPTIMIZERS",
]

_NO_TORCH = "jaxseq.testing needs PyTorch: pip install 'jaxseq[torch]'"

#: Default ``(rtol, atol)`` by dtype name; other floating dtypes use float32's, integer
#: and bool arrays compare exactly.
TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-9, 1e-10),
    "complex128": (1e-9, 1e-10),
    "float32": (1e-5, 1e-6),
    "complex64": (1e-5, 1e-6),
    "float16": (1e-3, 1e-5),
    "bfloat16": (1e-2, 1e-5),
}

#: The named optimizers: ``torch.optim`` class and keyword arguments, and the optax
#: transformation that equals it (the table in :mod:`jaxseq.train`). ``lr`` is added.
OPTIMIZERS: dict[str, tuple[str, dict[str, Any], Callable[..., optax.GradientTransformation]]] = {
    "sgd": ("SGD", {"momentum": 0.9}, lambda lr: optax.sgd(lr, momentum=0.9)),
    "adam": (
        "Adam",
        {"betas": (0.9, 0.999), "eps": 1e-8},
        lambda lr: optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8),
    ),
    "adamw": (
        "AdamW",
        {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2},
        # optax's default weight_decay is 1e-4, torch's 1e-2: state it on both sides.
        lambda lr: optax.adamw(lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-2),
    ),
}


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as e:
        raise ImportError(_NO_TORCH) from e
    return torch


def default_tolerance(dtype: Any) -> tuple[float, float]:
    """The default ``(rtol, atol)`` for comparing arrays of ``dtype`` (see :data:`TOLERANCES`).

    >>> import numpy as np
    >>> default_tolerance(np.float64), default_tolerance(np.float32), default_tolerance(int)
    ((1e-09, 1e-10), (1e-05, 1e-06), (0.0, 0.0))
    """
    dtype = np.dtype(dtype)
    if dtype.name in TOLERANCES:
        return TOLERANCES[dtype.name]
    if jnp.issubdtype(dtype, jnp.inexact):
        return TOLERANCES["float32"]
    return (0.0, 0.0)


def _tolerance_dtype(a: np.dtype, b: np.dtype) -> np.dtype:
    """Of two dtypes, the one with the looser default tolerance."""
    return max((a, b), key=lambda d: default_tolerance(d))


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return str(tuple(int(s) for s in shape))


@dataclasses.dataclass(frozen=True)
class ParityRow:
    """One compared tensor.

    Attributes:
      what: the stage: ``"param@0"`` (weights before running), ``"output"``, ``"grad"``,
        ``"loss@k"`` (the loss before optimizer step k), ``"param@N"`` (after N steps).
      name: the torch name (``rnn.weight_hh_l0``), ``out[1][0]`` for outputs, ``loss``.
      shape: the torch tensor's shape.
      dtype: the dtype whose tolerance was used.
      max_abs_err: ``max |jax - torch|``.
      max_rel_err: ``max |jax - torch| / |torch|`` (``inf`` where torch has an exact 0
        and JAX does not), as ``torch.testing.assert_close`` reports it.
      err_over_tol: ``max |jax - torch| / (atol + rtol * |torch|)``: <= 1 passes.
      rtol, atol: the tolerance used.
      passed: every element is within tolerance (and the shapes agree).
      note: why a row failed without numbers (a shape mismatch, a missing output).
    """

    what: str
    name: str
    shape: tuple[int, ...]
    dtype: str
    max_abs_err: float
    max_rel_err: float
    err_over_tol: float
    rtol: float
    atol: float
    passed: bool
    note: str = ""


def compare(
    actual: Any,
    expected: Any,
    *,
    what: str = "output",
    name: str = "",
    rtol: float | None = None,
    atol: float | None = None,
) -> ParityRow:
    """Compare one array (JAX's, ``actual``) with its reference (torch's, ``expected``).

    Passes when ``|actual - expected| <= atol + rtol * |expected|`` everywhere (NaN
    matches NaN), with ``rtol`` / ``atol`` defaulting by dtype (:func:`default_tolerance`).

    >>> import numpy as np
    >>> row = compare(np.array([1.0, 1e-3]), np.array([1.0, 0.0]), name="b")
    >>> row.max_abs_err, row.max_rel_err, row.passed
    (0.001, inf, False)
    >>> compare(np.arange(3), np.arange(3)).passed
    True
    """
    a, e = np.asarray(actual), np.asarray(expected)
    dt = _tolerance_dtype(a.dtype, e.dtype)
    d_rtol, d_atol = default_tolerance(dt)
    rtol = d_rtol if rtol is None else float(rtol)
    atol = d_atol if atol is None else float(atol)
    base = dict(what=what, name=name, shape=tuple(e.shape), dtype=dt.name, rtol=rtol, atol=atol)
    if a.shape != e.shape:
        inf = float("inf")
        note = f"shape {_fmt_shape(a.shape)} (jax) != {_fmt_shape(e.shape)} (torch)"
        return ParityRow(
            **base, max_abs_err=inf, max_rel_err=inf, err_over_tol=inf, passed=False, note=note
        )
    if a.size == 0:
        return ParityRow(**base, max_abs_err=0.0, max_rel_err=0.0, err_over_tol=0.0, passed=True)
    if not (jnp.issubdtype(a.dtype, jnp.inexact) or jnp.issubdtype(e.dtype, jnp.inexact)):
        same = np.array_equal(a, e)
        a, e = a.astype(np.float64), e.astype(np.float64)
    else:
        same = False
        wide = np.complex128 if np.iscomplexobj(a) or np.iscomplexobj(e) else np.float64
        a, e = a.astype(wide), e.astype(wide)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        diff = np.abs(a - e)
        agree = (a == e) | (np.isnan(a) & np.isnan(e))
        diff = np.where(agree, 0.0, diff)
        diff = np.where(np.isnan(diff), np.inf, diff)  # NaN on one side only
        if same:
            diff = np.zeros_like(diff)
        mag = np.abs(e)
        rel = np.where(diff == 0, 0.0, diff / mag)
        tol = atol + rtol * np.where(np.isfinite(mag), mag, 0.0)
        ratio = np.where(diff == 0, 0.0, diff / tol)
    ratio = np.where(np.isnan(ratio), np.inf, ratio)
    max_ratio = float(np.max(ratio))
    return ParityRow(
        **base,
        max_abs_err=float(np.max(diff)),
        max_rel_err=float(np.max(rel)),
        err_over_tol=max_ratio,
        passed=bool(max_ratio <= 1.0),
    )


_COLUMNS = ("what", "name", "shape", "max abs err", "max rel err", "err/tol", "ok")


def _cells(row: ParityRow) -> list[str]:
    def num(v: float) -> str:
        return f"{v:.2e}" if np.isfinite(v) else str(v)

    ok = "ok" if row.passed else "FAIL"
    if row.note:
        ok += f"  ({row.note})"
    return [
        row.what,
        row.name,
        _fmt_shape(row.shape),
        num(row.max_abs_err),
        num(row.max_rel_err),
        f"{row.err_over_tol:.2g}",
        ok,
    ]


def _format_table(rows: list[ParityRow]) -> str:
    """An aligned text table of ``rows`` (the body of ``str(report)``)."""
    cells = [list(_COLUMNS)] + [_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(_COLUMNS) - 1)]
    right = {3, 4, 5}  # numbers are right-aligned

    def line(c: list[str]) -> str:
        parts = [c[i].rjust(w) if i in right else c[i].ljust(w) for i, w in enumerate(widths)]
        return "  ".join(parts + [c[-1]]).rstrip()

    last = max(len("ok" if r.passed else "FAIL") for r in rows) if rows else 2
    rule = ["-" * w for w in widths] + ["-" * last]
    return "\n".join([line(cells[0]), line(rule)] + [line(c) for c in cells[1:]])


@dataclasses.dataclass
class ParityReport:
    """The result of :func:`check_parity`: one :class:`ParityRow` per compared tensor.

    ``str(report)`` is a summary line and the table of every row, in the order they were
    compared; :meth:`failure_message` is the text of the ``AssertionError`` (the worst
    rows). ``report.passed`` says whether every row passed.

    >>> import numpy as np
    >>> report = ParityReport([compare(np.ones(2), np.ones(2), name="x")])
    >>> report.passed, len(report.failures), str(report).splitlines()[0]
    (True, 0, 'PASSED: 1 tensor agrees (float64: rtol=1e-09, atol=1e-10)')
    """

    rows: list[ParityRow]
    optimizer: str | None = None
    steps: int = 0

    @property
    def passed(self) -> bool:
        """True when every row passed."""
        return all(r.passed for r in self.rows)

    @property
    def failures(self) -> list[ParityRow]:
        """The rows that failed, in comparison order."""
        return [r for r in self.rows if not r.passed]

    def worst(self, n: int = 10) -> list[ParityRow]:
        """The ``n`` rows furthest beyond their tolerance (largest ``err_over_tol`` first)."""
        return sorted(self.rows, key=lambda r: -r.err_over_tol)[:n]

    def tolerances(self) -> str:
        """The tolerances used, e.g. ``float64: rtol=1e-09, atol=1e-10``."""
        seen: dict[tuple[str, float, float], None] = {}
        for r in self.rows:
            seen[(r.dtype, r.rtol, r.atol)] = None
        return "; ".join(f"{d}: rtol={rt:g}, atol={at:g}" for d, rt, at in seen) or "none"

    def _summary(self) -> str:
        n, bad = len(self.rows), len(self.failures)
        tensors = "tensor" if n == 1 else "tensors"
        if bad:
            head = f"FAILED: {bad} of {n} {tensors} differ"
        else:
            head = f"PASSED: {n} {tensors} {'agrees' if n == 1 else 'agree'}"
        return f"{head} ({self.tolerances()})"

    def __str__(self) -> str:
        return self._summary() + "\n" + _format_table(self.rows)

    def __repr__(self) -> str:
        return f"<ParityReport {self._summary()}>"

    def failure_message(self, n: int = 10) -> str:
        """The ``AssertionError`` text: the summary, hints, and the ``n`` worst rows."""
        lines = [f"parity check {self._summary()}"]
        lines.append("elementwise |jax - torch| <= atol + rtol * |torch|, torch the reference")
        unequal = [r.name for r in self.failures if r.what == "param@0"]
        if unequal:
            lines.append(
                f"the weights differ before anything runs: {', '.join(unequal)} "
                "(copy them with jaxseq.testing.copy_weights)"
            )
        shown = [r for r in self.worst(n) if not r.passed]
        lines.append(f"worst {len(shown)} of the failing tensors:")
        lines.append(_format_table(shown))
        return "\n".join(lines)

    def raise_if_failed(self) -> None:
        """Raise ``AssertionError(self.failure_message())`` unless every row passed."""
        if not self.passed:
            raise AssertionError(self.failure_message())


def copy_weights(torch_module: Any, jax_module: nnx.Module, strict: bool = True) -> nnx.Module:
    """Load ``torch_module``'s weights into ``jax_module`` in place; returns ``jax_module``.

    Shorthand for ``jaxseq.interop.load_torch_state_dict(jax_module,
    torch_module.state_dict(), strict)``: parameters are matched by torch name
    (``nnx.Linear`` / ``nnx.Embed`` layouts via ``jaxseq.interop.LAYOUT``); any missing,
    unexpected or mis-shaped name raises one ``ValueError`` listing them.

    >>> import numpy as np, jax.numpy as jnp
    >>> from flax import nnx
    >>> import jaxseq
    >>> src, dst = (jaxseq.nn.GRU(2, 3, rngs=nnx.Rngs(s)) for s in (0, 1))
    >>> class StateDict:  # stands in for a torch module here (no torch in doctests)
    ...     def state_dict(self):
    ...         return jaxseq.interop.to_torch_state_dict(src)
    >>> _ = copy_weights(StateDict(), dst)
    >>> bool(jnp.array_equal(src.bias_hh_l0[...], dst.bias_hh_l0[...]))
    True
    """
    if not isinstance(jax_module, nnx.Module):
        raise TypeError(f"jax_module must be a flax.nnx.Module, got {type(jax_module).__name__}")
    if not callable(getattr(torch_module, "state_dict", None)):
        raise TypeError(
            f"torch_module must be a torch.nn.Module, got {type(torch_module).__name__}"
        )
    return interop.load_torch_state_dict(jax_module, torch_module.state_dict(), strict=strict)


# --------------------------------------------------------------------------- check_parity


def _to_host(a: Any) -> Any:
    if hasattr(a, "detach"):  # a torch.Tensor
        return to_numpy(a)
    if isinstance(a, (np.ndarray, np.generic, jax.Array)):
        return np.asarray(jax.device_get(a))
    return a


def _paths(tree: Any) -> tuple[list[str], list[Any]]:
    """``(names, leaves)`` of an output pytree: ``out``, ``out[0]``, ``out[1][0]`` ..."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return ["out" + jax.tree_util.keystr(p) for p, _ in flat], [v for _, v in flat]


def _is_float(a: Any) -> bool:
    """A floating (or complex) array: a torch tensor, a JAX array or a NumPy array."""
    if hasattr(a, "is_floating_point"):  # torch.Tensor
        return bool(a.is_floating_point() or a.is_complex())
    return isinstance(a, (jax.Array, np.ndarray, np.generic)) and jnp.issubdtype(
        a.dtype, jnp.inexact
    )


def _check_tol(name: str, v: Any) -> None:
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a non-negative number or None, got {type(v).__name__}")
    if not float(v) >= 0:
        raise ValueError(f"{name} must be >= 0, got {v}")


class _Update:
    """An optax transformation and its jitted ``(grads, state, params) -> (params, state)``."""

    def __init__(self, tx: optax.GradientTransformation):
        self.init = tx.init

        def step(grads: Any, state: Any, params: Any) -> tuple[Any, Any]:
            # optax's Adam computes ``b1 ** count`` with an int32 count, which strict dtype
            # promotion rejects; the update runs under standard promotion (as jaxseq.train).
            with jax.numpy_dtype_promotion("standard"):
                updates, state = tx.update(grads, state, params)
                return optax.apply_updates(params, updates), state

        self.step = jax.jit(step)


def _jit_update(tx: optax.GradientTransformation) -> _Update:
    return _Update(tx)


@functools.lru_cache(maxsize=32)
def _named_update(name: str, lr: float) -> _Update:
    """One compiled update per named optimizer and learning rate, reused across calls."""
    return _Update(OPTIMIZERS[name][2](lr))


def _resolve_optimizer(
    optimizer: Any, lr: Any, torch: Any
) -> tuple[str, Callable[[Any], Any], _Update]:
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
        raise TypeError(f"lr must be a number, got {type(lr).__name__}")
    if not float(lr) >= 0:
        raise ValueError(f"Invalid learning rate: {lr}")  # torch.optim's message
    if isinstance(optimizer, str):
        if optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer must be one of {', '.join(map(repr, OPTIMIZERS))} or a pair "
                f"(torch optimizer factory, optax transformation), got {optimizer!r}"
            )
        cls_name, kwargs, _ = OPTIMIZERS[optimizer]
        cls = getattr(torch.optim, cls_name)
        update = _named_update(optimizer, float(lr))
        return optimizer, lambda params: cls(params, lr=float(lr), **kwargs), update
    if (
        isinstance(optimizer, tuple)
        and len(optimizer) == 2
        and callable(optimizer[0])
        and isinstance(optimizer[1], optax.GradientTransformation)
    ):
        return "custom", optimizer[0], _jit_update(optimizer[1])
    raise TypeError(
        "optimizer must be 'sgd', 'adam', 'adamw' or a pair (torch optimizer factory, "
        f"optax.GradientTransformation), got {type(optimizer).__name__}"
    )


def check_parity(
    torch_module: Any,
    jax_module: nnx.Module,
    *args: Any,
    torch_fn: Callable[..., Any] | None = None,
    jax_fn: Callable[..., Any] | None = None,
    grads: bool = True,
    steps: int = 0,
    optimizer: str | tuple[Callable[[Any], Any], optax.GradientTransformation] = "adam",
    lr: float = 1e-2,
    rtol: float | None = None,
    atol: float | None = None,
    seed: int = 0,
    jit: bool = True,
    raise_on_fail: bool = True,
) -> ParityReport:
    """Check that a Flax NNX port computes what its PyTorch original computes.

    Both modules must hold the same weights under the same torch names (see
    :func:`copy_weights`); the comparison runs on copies of them in eval mode, so the
    modules passed in are not changed.

    Args:
      torch_module: the original ``torch.nn.Module`` (the reference).
      jax_module: the port, an ``nnx.Module`` whose parameters map to the same torch
        names (``jaxseq.interop.torch_named_params``).
      *args: the inputs, fed to both: NumPy (or JAX or torch) arrays, or pytrees
        (tuples, lists, dicts) of them. torch gets ``torch.from_numpy`` tensors (on the
        module's device), JAX gets ``jnp`` arrays; dtypes are kept (int lengths and
        tokens stay integers). Other leaves (Python numbers, None, strings) are passed
        to both unchanged.
      torch_fn, jax_fn: how to call each module: ``fn(module, *args) -> outputs``;
        default ``module(*args)``. The outputs are an array or a pytree of arrays, with
        the same structure and shapes on both sides.
      grads: compare the gradient of every parameter of ``sum(out * cot)`` (summed over
        the floating outputs; ``cot`` for output leaf i, in order, is
        ``np.random.default_rng(seed).standard_normal(shape)``, one generator for all).
      steps: run this many optimizer steps on that loss on both sides; compare the loss
        before each step (``loss@k``) and every parameter after the last (``param@N``).
      optimizer: ``"sgd"`` (momentum 0.9), ``"adam"`` or ``"adamw"`` (weight decay 0.01,
        torch's default) with learning rate ``lr`` (see :data:`OPTIMIZERS`), or a pair
        ``(lambda params: torch.optim.X(params, ...), optax_transformation)``.
      lr: the learning rate of a named optimizer.
      rtol, atol: override the default tolerances by dtype (:data:`TOLERANCES`) for
        every compared tensor; either may be given alone.
      seed: seeds the cotangents.
      jit: run the JAX side under ``jax.jit`` (compiled once, reused by every step).
        Pass ``False`` if ``jax_fn`` needs concrete values.
      raise_on_fail: raise ``AssertionError`` (:meth:`ParityReport.failure_message`)
        when a tensor differs; with ``False`` only the report says so.

    Returns:
      A :class:`ParityReport`.

    Raises:
      AssertionError: a tensor differs beyond tolerance (with ``raise_on_fail``).
      TypeError / ValueError: bad arguments (not modules, unknown optimizer, negative
        ``steps``, ...), or parameters present on one side only (all names listed).
      ImportError: PyTorch is not installed.

    A run (see the module docstring and ``docs/porting.md``; the doctests of this
    package run without torch)::

        copy_weights(torch_model, jax_model)
        report = check_parity(torch_model, jax_model, tokens, lengths, steps=3)
        print(report)                   # the table; raises AssertionError on a mismatch

    Reading a report (rows are :class:`ParityRow`; :func:`compare` makes one):

    >>> import numpy as np
    >>> report = ParityReport([compare(np.ones(3), np.ones(3), name="out")])
    >>> report.passed, [(r.what, r.name, r.max_abs_err) for r in report.rows]
    (True, [('output', 'out', 0.0)])
    """
    torch = _import_torch()
    if isinstance(torch_module, nnx.Module) and isinstance(jax_module, torch.nn.Module):
        raise TypeError(
            "check_parity(torch_module, jax_module, ...): the torch module comes first, got "
            f"a {type(torch_module).__name__} (flax) and a {type(jax_module).__name__} (torch)"
        )
    if not isinstance(torch_module, torch.nn.Module):
        raise TypeError(
            f"torch_module must be a torch.nn.Module, got {type(torch_module).__name__}"
        )
    if not isinstance(jax_module, nnx.Module):
        raise TypeError(f"jax_module must be a flax.nnx.Module, got {type(jax_module).__name__}")
    for fname, fn in (("torch_fn", torch_fn), ("jax_fn", jax_fn)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{fname} must be callable or None, got {type(fn).__name__}")
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral):
        raise TypeError(f"steps must be an int, got {type(steps).__name__}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    _check_tol("rtol", rtol)
    _check_tol("atol", atol)
    opt_name, torch_opt, tx = _resolve_optimizer(optimizer, lr, torch)
    torch_fn = torch_fn or _call
    jax_fn = jax_fn or _call
    tol = {"rtol": rtol, "atol": atol}

    tmod = copy.deepcopy(torch_module).eval()
    jmod = nnx.clone(jax_module)
    jmod.eval()
    tparams = dict(tmod.named_parameters())
    jnames = interop.torch_named_params(jmod)
    only_t, only_j = sorted(set(tparams) - set(jnames)), sorted(set(jnames) - set(tparams))
    if only_t or only_j:
        raise ValueError(
            "the two modules' parameters do not match by torch name:\n"
            f"  only in the torch module: {only_t}\n  only in the jax module: {only_j}"
        )
    trainable = [n for n, p in tparams.items() if p.requires_grad]
    rows: list[ParityRow] = []
    jsd = interop.to_torch_state_dict(jmod)
    for name, p in tparams.items():
        rows.append(compare(jsd[name], _to_host(p), what="param@0", name=name, **tol))

    # ---- inputs: one host copy, then a torch and a JAX version of each array leaf
    host = jax.tree.map(_to_host, args)
    leaves, treedef = jax.tree.flatten(host)
    is_arr = [isinstance(v, (np.ndarray, np.generic)) for v in leaves]
    device = next((p.device for p in tparams.values()), torch.device("cpu"))
    targs = treedef.unflatten(
        [
            torch.from_numpy(np.array(v)).to(device) if a else v
            for v, a in zip(leaves, is_arr, strict=True)
        ]
    )
    jarrays = [jnp.asarray(v) for v, a in zip(leaves, is_arr, strict=True) if a]

    need_grad = grads or steps > 0

    # ---- torch: forward (+ backward)
    cots: list[np.ndarray] = []

    def torch_eval() -> tuple[list[str], list[np.ndarray], float | None]:
        for p in tparams.values():
            p.grad = None
        with torch.set_grad_enabled(need_grad):
            out = torch_fn(tmod, *targs)
        names, tleaves = _paths(out)
        loss = None
        if need_grad:
            floats = [leaf for leaf in tleaves if _is_float(leaf)]
            if not cots:
                rng = np.random.default_rng(seed)
                cots.extend(rng.standard_normal(tuple(leaf.shape)) for leaf in floats)
            if not floats:
                raise ValueError(
                    "grads=True or steps > 0 needs a floating point output to differentiate; "
                    "the torch module returned none"
                )
            tcots = [
                torch.from_numpy(c).to(leaf.device, leaf.dtype)
                for leaf, c in zip(floats, cots, strict=True)
            ]
            terms = [(leaf * c).sum() for leaf, c in zip(floats, tcots, strict=True)]
            total = terms[0]
            for t in terms[1:]:
                total = total + t
            total.backward()
            loss = float(total.detach().cpu())
        return names, [_to_host(leaf) for leaf in tleaves], loss

    def torch_grads() -> dict[str, np.ndarray]:
        return {
            n: np.zeros(tuple(tparams[n].shape))
            if tparams[n].grad is None
            else _to_host(tparams[n].grad)
            for n in trainable
        }

    # ---- JAX: forward (+ vjp), one function, jitted once (and reused by later calls with
    # the same module structure, jax_fn and non-array arguments)
    graphdef, jparams, rest = nnx.split(jmod, nnx.Param, ...)
    statics = tuple(_ARRAY if a else v for v, a in zip(leaves, is_arr, strict=True))
    static = dict(
        graphdef=graphdef, jax_fn=jax_fn, treedef=treedef, statics=statics, need_grad=need_grad
    )
    try:
        hash(statics)
        hashable = True
    except TypeError:
        hashable = False
    if not jit:
        run = functools.partial(_jax_eval, **static)
    elif hashable:
        run = functools.partial(_jax_eval_jit, **static)
    else:
        run = jax.jit(functools.partial(_jax_eval, **static))

    tnames, touts, tloss = torch_eval()
    jcots = [jnp.asarray(c) for c in cots]
    jout, jloss, jgrad = run(jparams, rest, jarrays, jcots)
    jnames_out, jouts = _paths(jout)
    jouts = [_to_host(v) for v in jouts]
    structure_ok = jnames_out == tnames and all(
        np.shape(a) == np.shape(b) for a, b in zip(jouts, touts, strict=True)
    )
    jmap = dict(zip(jnames_out, jouts, strict=True))
    for name, t in zip(tnames, touts, strict=True):
        if name in jmap:
            rows.append(compare(jmap[name], t, what="output", name=name, **tol))
        else:
            rows.append(_missing("output", name, t, "missing in jax's outputs", tol))
    tset = set(tnames)
    for name, j in zip(jnames_out, jouts, strict=True):
        if name not in tset:
            rows.append(_missing("output", name, j, "missing in torch's outputs", tol))
    if structure_ok and need_grad and jgrad is None:
        note = "torch and jax disagree on which outputs are floating point"
        rows.append(_missing("output", "floating outputs", np.zeros(0), note, tol))
    if not structure_ok or not need_grad or jgrad is None:
        return _finish(rows, opt_name, steps, raise_on_fail)

    def jax_grads(g: Any) -> dict[str, np.ndarray]:
        return interop.to_torch_state_dict(nnx.merge(graphdef, g, rest))

    if grads:
        tg, jg = torch_grads(), jax_grads(jgrad)
        for name in trainable:
            rows.append(compare(jg[name], tg[name], what="grad", name=name, **tol))

    if steps:
        topt = torch_opt([tparams[n] for n in trainable])
        opt_state = tx.init(jparams)
        for k in range(1, steps + 1):
            if k > 1:
                _, _, tloss = torch_eval()
                _, jloss, jgrad = run(jparams, rest, jarrays, jcots)
            rows.append(
                compare(
                    np.asarray(jloss),
                    np.asarray(tloss, dtype=np.asarray(jloss).dtype),
                    what=f"loss@{k}",
                    name="loss",
                    **tol,
                )
            )
            topt.step()
            jparams, opt_state = tx.step(jgrad, opt_state, jparams)
        jsd = interop.to_torch_state_dict(nnx.merge(graphdef, jparams, rest))
        for name, p in tparams.items():
            rows.append(compare(jsd[name], _to_host(p), what=f"param@{steps}", name=name, **tol))
    return _finish(rows, opt_name, steps, raise_on_fail)


def _call(module: Any, *args: Any) -> Any:
    """The default ``torch_fn`` / ``jax_fn``: ``module(*args)``."""
    return module(*args)


class _ArrayLeaf:
    """Marks where an array argument goes among the static (non-array) arguments."""

    def __repr__(self) -> str:
        return "<array>"


_ARRAY = _ArrayLeaf()


def _sum_of_products(outs: list[Any], cots: list[Any]) -> Any:
    terms = [jnp.sum(o * c.astype(o.dtype)) for o, c in zip(outs, cots, strict=True)]
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total


def _jax_eval(
    params: Any,
    rest: Any,
    arrays: list[Any],
    cots: list[Any],
    *,
    graphdef: Any,
    jax_fn: Callable[..., Any],
    treedef: Any,
    statics: tuple[Any, ...],
    need_grad: bool,
) -> tuple[Any, Any, Any]:
    """The JAX side: ``(outputs, sum(out * cot), gradient State)`` at ``params``.

    The loss and gradient are None without ``need_grad``, or when the floating outputs'
    shapes differ from the cotangents' (torch's outputs): the caller reports that.
    """
    it = iter(arrays)
    jargs = treedef.unflatten([next(it) if v is _ARRAY else v for v in statics])

    def forward(p: Any) -> Any:
        # fresh Variables at this trace level (as jaxseq.train does)
        m = nnx.merge(graphdef, p, jax.tree.map(lambda a: a, rest))
        return jax_fn(m, *jargs)

    if not need_grad:
        return forward(params), None, None
    out, vjp = jax.vjp(forward, params)
    floats = [leaf for leaf in jax.tree.leaves(out) if _is_float(leaf)]
    if [tuple(f.shape) for f in floats] != [tuple(c.shape) for c in cots]:
        return out, None, None
    ct = iter(cots)
    cot_tree = jax.tree.map(
        lambda leaf: (
            next(ct).astype(leaf.dtype)
            if _is_float(leaf)
            else np.zeros(np.shape(leaf), jax.dtypes.float0)
        ),
        out,
    )
    (grad,) = vjp(cot_tree)
    return out, _sum_of_products(floats, cots), grad


_jax_eval_jit = jax.jit(
    _jax_eval, static_argnames=("graphdef", "jax_fn", "treedef", "statics", "need_grad")
)


def _missing(what: str, name: str, value: Any, note: str, tol: Mapping[str, Any]) -> ParityRow:
    v = np.asarray(value)
    rtol, atol = default_tolerance(v.dtype)
    inf = float("inf")
    return ParityRow(
        what=what,
        name=name,
        shape=tuple(v.shape),
        dtype=v.dtype.name,
        max_abs_err=inf,
        max_rel_err=inf,
        err_over_tol=inf,
        rtol=rtol if tol["rtol"] is None else float(tol["rtol"]),
        atol=atol if tol["atol"] is None else float(tol["atol"]),
        passed=False,
        note=note,
    )


def _finish(rows: list[ParityRow], optimizer: str, steps: int, raise_on_fail: bool) -> ParityReport:
    report = ParityReport(rows, optimizer=optimizer if steps else None, steps=steps)
    if raise_on_fail:
        report.raise_if_failed()
    return report
