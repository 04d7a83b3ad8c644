"""The masked scan: run any cell over time with ``jax.lax.scan``, honouring lengths.

This replaces PyTorch's ``pack_padded_sequence``. Instead of removing padded steps from
the batch, every step runs for every row and a mask ``t < lengths`` decides what is kept:

* on a padded step the carry is *frozen* (``where(mask, new, old)``), so the final carry
  is the state after each row's last valid step — PyTorch's ``h_n``;
* the output at a padded step is exactly ``0``, as ``pad_packed_sequence`` gives;
* no gradient flows through a padded step: ``where`` sends a zero cotangent to the
  branch it did not select, so the gradient into padded inputs is exactly ``0``;
* padding contents never matter, NaN and inf included, in the values *and* the
  gradients: a padded ``x_t`` is replaced by zeros *before* the cell (the "double
  where"). Selecting only the cell's output is not enough: the zero cotangent meets the
  cell's local derivatives at a NaN input, and ``0 * nan = nan`` poisons every
  parameter gradient;
* the reverse direction scans from ``t = T-1`` down to ``0``. The carry stays at ``h0``
  through the padded tail and the first step that changes it is ``t = length - 1``: the
  reverse direction starts at each sequence's *own* last valid element, as packing does;
* length ``0`` is allowed: all outputs are zero and the final carry is ``h0``.

Lengths are ordinary (traced) arrays, so changing their values never recompiles.

**Resets** (episode boundaries) are a (T, N) bool array: a True at (t, n) starts a new,
independent segment of row n at step t. A direction restarts from its initial carry
where a segment begins in its own order of time: the forward direction *before* step t,
the reverse direction before step t - 1 (the last step of the previous segment, which it
meets first). :func:`reset_flags` turns resets into those per-direction flags; resets at
padded steps are ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array

__all__ = ["masked_scan", "length_mask", "reset_flags"]


def length_mask(lengths: Array, T: int) -> Array:
    """(N,) lengths -> (T, N) bool, True at valid steps ``t < lengths[n]``.

    The one place where lengths become a mask; lengths above T act as T, negative as 0.

    >>> import jax.numpy as jnp
    >>> length_mask(jnp.array([2, 0]), 3).T.tolist()
    [[True, True, False], [False, False, False]]
    """
    return jnp.arange(T, dtype=lengths.dtype)[:, None] < lengths[None, :]


def reset_flags(resets: Array, mask: Array | None, reverse: bool) -> Array:
    """(T, N) resets -> (T, N) bool, True where a direction restarts from its initial carry
    before the step.

    Forward: at the first step of every segment (``resets`` where valid). Reverse: at the
    last step of every segment but the row's last, i.e. where the *next* step starts one.
    A reset at t = 0 and the restart at each row's last valid step change nothing: the
    carry is the initial one there already.

    >>> import jax.numpy as jnp
    >>> r = jnp.array([[False], [False], [True], [False]])
    >>> reset_flags(r, None, False).ravel().tolist(), reset_flags(r, None, True).ravel().tolist()
    ([False, False, True, False], [False, True, False, False])
    """
    r = resets if mask is None else resets & mask
    if not reverse:
        return r
    return jnp.concatenate([r[1:], jnp.zeros_like(r[:1])], axis=0)


def masked_scan(
    cell: Callable[[Any, Any, Array], tuple[Any, Array]],
    params: Any,
    carry: Any,
    xs: Array,
    lengths: Array | None = None,
    *,
    mask: Array | None = None,
    reverse: bool = False,
    unroll: int = 1,
    resets: Array | None = None,
    reset_carry: Any = None,
    emit_carry: bool = False,
) -> tuple[Any, Any]:
    """Run ``cell`` over the leading (time) axis of ``xs`` with masking by lengths.

    Args:
      cell: ``cell(params, carry, x_t) -> (carry, y_t)``, e.g. :func:`jaxseq.lstm_cell`.
      params: passed to ``cell`` unchanged at every step.
      carry: initial carry, a pytree of (N, ...) arrays.
      xs: (T, N, ...) time-major inputs.
      lengths: optional (N,) integer array of valid lengths, ``0 <= lengths <= T``.
        ``None`` means every row has length T.
      mask: instead of ``lengths``, a (T, N) bool array, True at valid steps (as
        :func:`length_mask` builds it). Give one or neither.
      reverse: scan from ``t = T-1`` down to ``0`` (each row starts at its own last
        valid element when lengths are given).
      unroll: passed to ``jax.lax.scan``.
      resets: optional (T, N) bool: a True at (t, n) starts a new segment of row n at
        step t, which runs from ``carry`` as if it were its own sequence (in either
        direction; see :func:`reset_flags`).
      reset_carry: the carry a segment started by a reset begins from (default:
        ``carry``); then a reset at t = 0 restarts too. Forward scans only: the reverse
        pass of a row's last segment would start from ``carry``.
      emit_carry: also emit the carry after every step (frozen on padded steps, in the
        scan's order of time: after reading ``xs[t]``).

    Returns:
      ``(final_carry, ys)`` with ys (T, N, H_out); ``ys[t, n] == 0`` where ``t >= lengths[n]``.
      With ``emit_carry``, ``(final_carry, (ys, carries))``, carries the carry's pytree
      with a leading T axis.

    Padded inputs may hold anything, NaN and inf included: the cell sees zeros there
    (``where`` before the cell as well as after it), so outputs, final carry and every
    gradient stay finite, and the gradient into padded inputs is exactly 0.

    >>> import jax.numpy as jnp
    >>> add = lambda p, c, x: (c + x, c + x)          # a running sum as a "cell"
    >>> xs = jnp.ones((4, 2, 1))
    >>> c, ys = masked_scan(add, None, jnp.zeros((2, 1)), xs, jnp.array([4, 2]))
    >>> c.ravel().tolist(), ys[..., 0].T.tolist()
    ([4.0, 2.0], [[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 0.0, 0.0]])
    """
    if lengths is not None and mask is not None:
        raise ValueError("masked_scan: give lengths or mask, not both")
    if lengths is not None:
        mask = length_mask(lengths, xs.shape[0])
    if resets is not None:
        flags = reset_flags(resets, mask, reverse)
        c0 = carry if reset_carry is None else reset_carry
        return _reset_scan(cell, params, carry, c0, xs, mask, flags, reverse, unroll, emit_carry)
    if mask is None:

        def body(c, x):
            new_c, y = cell(params, c, x)
            return new_c, ((y, new_c) if emit_carry else y)

        return jax.lax.scan(body, carry, xs, reverse=reverse, unroll=unroll)

    def masked_body(c, inp):
        m, x = inp
        x = _zero_padded(m, x)  # the first where: the cell never sees NaN/inf padding
        new_c, y = cell(params, c, x)
        valid = m[:, None]  # (N, 1)
        # Freeze the carry on padded steps; where() also blocks the gradient there.
        new_c = jax.tree.map(lambda n, o: jnp.where(valid, n, o), new_c, c)
        return new_c, _emitted(valid, y, new_c, emit_carry)

    return jax.lax.scan(masked_body, carry, (mask, xs), reverse=reverse, unroll=unroll)


def _reset_scan(cell, params, carry, c0, xs, mask, flags, reverse, unroll, emit_carry):
    """:func:`masked_scan` with restarts: before a flagged step the carry is ``c0``."""
    m = jnp.ones(flags.shape, bool) if mask is None else mask

    def body(c, inp):
        valid, flag, x = inp[0][:, None], inp[1][:, None], _zero_padded(inp[0], inp[2])
        c = jax.tree.map(lambda a, a0: jnp.where(flag, a0, a), c, c0)
        new_c, y = cell(params, c, x)
        new_c = jax.tree.map(lambda n, o: jnp.where(valid, n, o), new_c, c)
        return new_c, _emitted(valid, y, new_c, emit_carry)

    return jax.lax.scan(body, carry, (m, flags, xs), reverse=reverse, unroll=unroll)


def _emitted(valid: Array, y: Array, new_c: Any, emit_carry: bool) -> Any:
    """A step's output, 0 on padded rows; with ``emit_carry`` paired with the (frozen)
    carry."""
    y = jnp.where(valid, y, jnp.zeros_like(y))
    return (y, new_c) if emit_carry else y


def _zero_padded(m: Array, x: Any) -> Any:
    """Step inputs with padded rows set to 0: (N,) mask ``m``, x a pytree of (N, ...) arrays.

    The first ``where`` of the "double where": without it a NaN/inf in padding gives NaN
    parameter gradients, although the output ``where`` discards the padded values."""
    return jax.tree.map(
        lambda a: jnp.where(m.reshape(m.shape + (1,) * (a.ndim - 1)), a, jnp.zeros_like(a)), x
    )
