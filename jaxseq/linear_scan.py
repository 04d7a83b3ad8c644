"""The linear recurrence ``h_t = a_t * h_{t-1} + b_t``, solved sequentially or in parallel.

Recurrences whose coefficients depend on the input only (minGRU, minLSTM: see
:mod:`jaxseq.recurrences.minimal`) reduce to this elementwise linear recurrence. Three ways to solve
it, equal up to rounding:

* ``"sequential"``: a ``jax.lax.scan`` over T steps, the reference;
* ``"parallel"``: ``jax.lax.associative_scan`` over T with the combine
  ``(a1, b1), (a2, b2) -> (a2 * a1, a2 * b1 + b2)`` (apply step 1, then step 2);
  O(log T) depth, about 2x the work of the sequential scan;
* ``"chunked"``: T split into chunks of C steps. Phase 1 runs one scan over the C
  positions of every chunk at once (carry (T/C, N, H)), giving each chunk's cumulative
  ``(A, B)`` from a zero start; phase 2 runs a scan over the T/C chunk totals to get the
  state entering each chunk; phase 3 combines them elementwise: ``h = A * h_in + B``.
  About 2 sqrt(T) sequential steps on arrays sqrt(T) times larger, for a few more
  passes over memory (the transposes to and from chunk-major order). It pays where a
  scan step's fixed cost dominates its arithmetic (on a CPU the plain sequential scan is
  usually faster: ``python -m benchmarks.min_scan``, docs/mingru.md).

Masking (lengths) is *folded into the coefficients* by the caller: ``a = 1, b = 0`` on
a padded step is the identity, so the state passes through padding unchanged (frozen),
and the reverse direction, scanned from ``t = T-1``, stays at ``h0`` through each row's
padded tail and starts at its own last valid element.

The gradient (:func:`linear_recurrence` has a custom VJP) is the same recurrence run
backwards, ``g_t = dh_t + a_{t+1} g_{t+1}``, solved with the same method, then
``da_t = g_t h_{t-1}``, ``db_t = g_t``, ``dh0 = a_0 g_0``: no autodiff through the scan tree.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from jaxseq.fused_ops import with_transposed_jvp

Array = jax.Array

#: How :func:`linear_recurrence` solves the recurrence.
Method = Literal["sequential", "parallel", "chunked"]
#: The values :data:`Method` takes, in that order.
METHODS: tuple[str, ...] = ("sequential", "parallel", "chunked")

__all__ = ["Method", "METHODS", "linear_recurrence", "combine", "default_chunk"]


def combine(first: tuple[Array, Array], second: tuple[Array, Array]) -> tuple[Array, Array]:
    """Compose two steps ``h -> a h + b``: first ``(a1, b1)``, then ``(a2, b2)``.

    ``a2 (a1 h + b1) + b2 = (a2 a1) h + (a2 b1 + b2)``. Composition of affine maps is
    associative, which is all ``jax.lax.associative_scan`` needs; ``(1, 0)`` is the identity.

    >>> import jax.numpy as jnp
    >>> a, b = combine((jnp.array(0.5), jnp.array(1.0)), (jnp.array(2.0), jnp.array(3.0)))
    >>> float(a), float(b)          # h -> 2 (0.5 h + 1) + 3 = h + 5
    (1.0, 5.0)
    """
    a1, b1 = first
    a2, b2 = second
    return a2 * a1, a2 * b1 + b2


def default_chunk(T: int) -> int:
    """The chunk length of ``"chunked"``: a power of two near sqrt(T), at least 8."""
    c = 8
    while c * c < T:
        c *= 2
    return min(c, max(T, 1))


def _sequential(a: Array, b: Array, h0: Array, reverse: bool = False) -> Array:
    def step(h, ab):
        h = ab[0] * h + ab[1]
        return h, h

    return jax.lax.scan(step, h0, (a, b), reverse=reverse)[1]


def _parallel(a: Array, b: Array, h0: Array, reverse: bool = False) -> Array:
    A, B = jax.lax.associative_scan(combine, (a, b), axis=0, reverse=reverse)
    return A * h0[None] + B


def _chunked(a: Array, b: Array, h0: Array, chunk: int) -> Array:
    T = a.shape[0]
    C = max(1, min(int(chunk), T))
    n = -(-T // C)
    pad = n * C - T
    if pad:  # identity steps at the end change nothing before them
        widths = [(0, pad)] + [(0, 0)] * (a.ndim - 1)
        a = jnp.pad(a, widths, constant_values=1)
        b = jnp.pad(b, widths)
    rest = a.shape[1:]
    # (n*C, ...) -> (C, n, ...): position within the chunk leads, chunks side by side.
    a_c = jnp.swapaxes(a.reshape((n, C) + rest), 0, 1)
    b_c = jnp.swapaxes(b.reshape((n, C) + rest), 0, 1)

    def within(carry, ab):  # phase 1: every chunk from a zero start, all chunks at once
        A, B = combine(carry, ab)
        return (A, B), (A, B)

    ones = jnp.ones_like(a_c[0])
    _, (A, B) = jax.lax.scan(within, (ones, jnp.zeros_like(ones)), (a_c, b_c))

    def across(h, ab):  # phase 2: the state entering each chunk
        return ab[0] * h + ab[1], h

    _, h_in = jax.lax.scan(across, h0, (A[-1], B[-1]))  # (n, ...)
    hs = A * h_in[None] + B  # phase 3: (C, n, ...)
    hs = jnp.swapaxes(hs, 0, 1).reshape((n * C,) + rest)
    return hs[:T]


def _solve(a: Array, b: Array, h0: Array, method: str, chunk: int, reverse: bool = False) -> Array:
    """The states; with ``reverse`` the recurrence runs from t = T-1 down to 0."""
    if method == "sequential":
        return _sequential(a, b, h0, reverse)
    if method == "parallel":
        return _parallel(a, b, h0, reverse)
    if reverse:
        return _chunked(a[::-1], b[::-1], h0, chunk)[::-1]
    return _chunked(a, b, h0, chunk)


def _solve_all(a: Array, b: Array, h0: Array, method: str, chunk: int) -> Array:
    return _solve(a, b, h0, method, chunk)


def _recurrence_fwd(a, b, h0, method, chunk):
    hs = _solve(a, b, h0, method, chunk)
    return hs, (a, hs, h0)


def _recurrence_bwd(method, chunk, res, dhs):
    a, hs, h0 = res
    # g_t = dhs_t + a_{t+1} g_{t+1}: the same recurrence, run from the end.
    a_next = jnp.concatenate([a[1:], jnp.ones_like(a[:1])], axis=0)
    g = _solve(a_next, dhs, jnp.zeros_like(h0), method, chunk, reverse=True)
    h_prev = jnp.concatenate([h0[None], hs[:-1]], axis=0)
    return g * h_prev, g, a[0] * g[0]


# Reverse mode: the backward recurrence above; forward mode: its transpose.
_recurrence = with_transposed_jvp(
    _solve_all, _recurrence_fwd, _recurrence_bwd, nondiff_argnums=(3, 4)
)


def linear_recurrence(
    a: Array,
    b: Array,
    h0: Array,
    *,
    method: Method | str = "sequential",
    chunk: int | None = None,
) -> Array:
    """All states of ``h_t = a_t * h_{t-1} + b_t`` (elementwise), t = 0 .. T-1.

    Args:
      a, b: (T, ...) coefficients, time-major; identity steps are ``a = 1, b = 0``.
      h0: (...) the state before step 0.
      method: ``"sequential"``, ``"parallel"`` or ``"chunked"`` (module docstring).
      chunk: the chunk length of ``"chunked"``; default :func:`default_chunk` (T).

    Returns:
      (T, ...) the states h_0 .. h_{T-1} after each step. Differentiable in a, b and h0
      (custom VJP: the backward is the same kind of scan, run from the end).

    >>> import jax.numpy as jnp
    >>> a, b = jnp.full((5, 1), 0.5), jnp.ones((5, 1))
    >>> linear_recurrence(a, b, jnp.zeros(1), method="parallel")[:, 0].tolist()
    [1.0, 1.5, 1.75, 1.875, 1.9375]
    """
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; expected one of {list(METHODS)}")
    if a.shape != b.shape or a.shape[1:] != h0.shape:
        raise ValueError(
            f"linear_recurrence: a {a.shape} and b {b.shape} must be (T, *h0.shape) "
            f"with h0 {h0.shape}"
        )
    if a.shape[0] == 0:
        return b
    if chunk is not None:
        c = int(chunk)
        if c < 1:
            raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    else:  # only "chunked" reads it; the others also take a symbolic T (jax.export)
        c = default_chunk(a.shape[0]) if method == "chunked" else 1
    return _recurrence(a, b, h0, str(method), c)
