"""Layer implementations: one layer, all directions, behind one contract (:class:`LayerImpl`).

The stack (:mod:`jaxseq.stack`) stacks each layer's weights by direction once and builds
one (T, N) mask once, then calls the chosen implementation. All of them compute the
same thing (the tests hold each against ``"reference"``):

* ``"fused"``, the default: :func:`jaxseq.fused.fused_layer` — directions fused in one
  scan, custom VJP, input projection placed per backend and kind;
* ``"fused_loop"`` / ``"fused_hoisted"``: the same with the input projection forced into
  the per-step matmul / hoisted before the scan;
* ``"unfused"``: the input projection hoisted, then one plain masked scan per direction;
* ``"reference"``: the whole cell, input matmul included, inside a plain masked scan per
  direction: slow and obviously correct.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import jax
import jax.numpy as jnp

from jaxseq.fused import fused_layer
from jaxseq.recurrences import Recurrence, input_projection
from jaxseq.scan import masked_scan

Array = jax.Array

__all__ = ["LayerImpl", "LAYER_IMPLS", "REMAT_IMPLS", "reference_layer", "unfused_layer"]


class LayerImpl(Protocol):
    """One layer, all its directions.

    Args:
      rec: the recurrence definition.
      w: torch-named weights stacked by direction (leading axis D):
        ``weight_ih`` (D, G*H, I), ``weight_hh`` (D, G*H, H_out), optional ``bias_ih`` /
        ``bias_hh`` (D, G*H), optional ``weight_hr`` (D, H_out, H).
      x: (T, N, I) time-major input.
      states: initial states, each (D, N, ...): ``(h0,)`` or ``(h0, c0)``.
      mask: (T, N) bool, True at valid steps, or None (every step valid).
      nonlinearity: for kinds that take one.
      unroll: ``jax.lax.scan`` unroll.
      remat: None or a chunk length (implementations in :data:`REMAT_IMPLS` only).

    Returns:
      ``(out, finals)``: out (T, N, D*H_out), forward direction first, 0 where the mask is
      False; finals the final states, each (D, N, ...).
    """

    def __call__(
        self,
        rec: Recurrence,
        w: Mapping[str, Array],
        x: Array,
        states: tuple[Array, ...],
        mask: Array | None,
        /,
        *,
        nonlinearity: str,
        unroll: int,
        remat: int | None = None,
    ) -> tuple[Array, tuple[Array, ...]]: ...


def _per_direction(
    rec: Recurrence,
    w: Mapping[str, Array],
    x_or_gx: Callable[[dict[str, Array]], Array],
    states: tuple[Array, ...],
    mask: Array | None,
    cell: Callable[..., tuple[Any, Array]],
    unroll: int,
) -> tuple[Array, tuple[Array, ...]]:
    outs, finals = [], []
    for d in range(w["weight_ih"].shape[0]):
        p = {k: v[d] for k, v in w.items()}
        c0 = rec.carry(tuple(s[d] for s in states))
        xd = x_or_gx(p)
        c, ys = masked_scan(cell, p, c0, xd, mask=mask, reverse=d == 1, unroll=unroll)
        outs.append(ys)
        finals.append(rec.states(c))
    out = jnp.concatenate(outs, axis=-1) if len(outs) > 1 else outs[0]
    return out, tuple(jnp.stack(f) for f in zip(*finals, strict=True))


def reference_layer(
    rec: Recurrence,
    w: Mapping[str, Array],
    x: Array,
    states: tuple[Array, ...],
    mask: Array | None,
    /,
    *,
    nonlinearity: str,
    unroll: int,
    remat: int | None = None,
) -> tuple[Array, tuple[Array, ...]]:
    """Slow, obviously correct: the whole cell (input matmul included) inside the scan."""
    return _per_direction(rec, w, lambda p: x, states, mask, rec.cell(nonlinearity), unroll)


def unfused_layer(
    rec: Recurrence,
    w: Mapping[str, Array],
    x: Array,
    states: tuple[Array, ...],
    mask: Array | None,
    /,
    *,
    nonlinearity: str,
    unroll: int,
    remat: int | None = None,
) -> tuple[Array, tuple[Array, ...]]:
    """Input projection hoisted out of the scan: one (T*N, I) x (I, G*H) matmul per direction."""
    project = lambda p: input_projection(p, x)  # noqa: E731  (T, N, G*H)
    return _per_direction(rec, w, project, states, mask, rec.step_fn(nonlinearity), unroll)


#: Registered layer implementations, by ``impl`` name.
LAYER_IMPLS: dict[str, LayerImpl] = {
    "fused": fused_layer,
    "fused_loop": functools.partial(fused_layer, project="loop"),
    "fused_hoisted": functools.partial(fused_layer, project="hoisted"),
    "unfused": unfused_layer,
    "reference": reference_layer,
}

#: The implementations that accept ``remat``.
REMAT_IMPLS = ("fused", "fused_loop", "fused_hoisted")
