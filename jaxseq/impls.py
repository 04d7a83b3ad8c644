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
  direction: slow and obviously correct;
* ``"cudnn"`` (LSTM, float32, GPU only, opt-in): ``jax.experimental.rnn``'s cuDNN kernel
  with jaxseq's masking contract restored around it (:mod:`jaxseq.cudnn`).

Linear kinds (:func:`jaxseq.recurrences.linear_kind`: minGRU, minLSTM) take
``"unfused"`` and ``"reference"`` as every kind does, and their own fast path,
:func:`linear_layer`: every step's coefficients computed at once, the mask folded into
them (``a = 1, b = 0`` on padding: the identity), both directions in one recurrence
solved by :func:`jaxseq.linear_scan.linear_recurrence` with a custom VJP:

* ``"fused"``: ``"fused_scan"`` on XLA's CPU backend, ``"fused_parallel"`` elsewhere;
* ``"fused_scan"``: a sequential ``lax.scan`` of ``h = a h + b``;
* ``"fused_parallel"``: ``lax.associative_scan`` over T (log depth);
* ``"fused_chunked"``: a scan within chunks of about sqrt(T) steps, then across them
  (``chunk=`` sets the length).

The CPU choice is measured by ``python -m benchmarks.min_scan`` (docs: minGRU page);
the accelerator choice follows the log-depth argument.

A gated kind without fused pieces (one registered with only its reference step) takes
``"unfused"`` and ``"reference"``, and ``"fused"`` as a name for ``"unfused"``
(:data:`UNFUSED_IMPLS`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import jax
import jax.numpy as jnp

from jaxseq.cudnn import cudnn_layer
from jaxseq.fused import fused_layer
from jaxseq.fused_ops import direction_resets, to_steps
from jaxseq.linear_scan import linear_recurrence
from jaxseq.recurrences import Recurrence, input_projection, linear
from jaxseq.scan import masked_scan
from jaxseq.validation import check_impl

Array = jax.Array

__all__ = [
    "LayerImpl",
    "LAYER_IMPLS",
    "UNFUSED_IMPLS",
    "REMAT_IMPLS",
    "CHUNK_IMPLS",
    "impls_for",
    "checked_impl",
    "reference_layer",
    "unfused_layer",
    "linear_layer",
]


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
      resets: optional (T, N) bool, True where a new segment of a row starts
        (:func:`jaxseq.scan.reset_flags`); each direction restarts from its initial
        state there. The stack passes it only when given, so an implementation without
        the keyword serves every call without resets.
      reset_states: with ``resets``, optional states the restarted segments begin from,
        each (D, N, ...) (default ``states``; forward directions only).

    The implementations in :data:`CHUNK_IMPLS` (linear kinds) also take ``chunk``.

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
        resets: Array | None = None,
        reset_states: tuple[Array, ...] | None = None,
    ) -> tuple[Array, tuple[Array, ...]]: ...


def _per_direction(
    rec: Recurrence,
    w: Mapping[str, Array],
    x_or_gx: Callable[[dict[str, Array]], Array],
    states: tuple[Array, ...],
    mask: Array | None,
    cell: Callable[..., tuple[Any, Array]],
    unroll: int,
    resets: Array | None,
    reset_states: tuple[Array, ...] | None,
) -> tuple[Array, tuple[Array, ...]]:
    outs, finals = [], []
    for d in range(w["weight_ih"].shape[0]):
        p = {k: v[d] for k, v in w.items()}
        c0 = rec.carry(tuple(s[d] for s in states))
        r0 = None if reset_states is None else rec.carry(tuple(s[d] for s in reset_states))
        xd = x_or_gx(p)
        c, ys = masked_scan(
            cell, p, c0, xd, mask=mask, reverse=d == 1, unroll=unroll, resets=resets, reset_carry=r0
        )
        outs.append(ys)
        finals.append(rec.states(c))
    out = jnp.concatenate(outs, axis=-1) if len(outs) > 1 else outs[0]
    return out.astype(w["weight_ih"].dtype), tuple(jnp.stack(f) for f in zip(*finals, strict=True))


def _carry_dtype(x: Array, states: tuple[Array, ...]) -> Any:
    """The dtype the input projection accumulates in: the carry's, where it differs from
    the compute dtype (mixed precision), else None (the plain product)."""
    return None if states[0].dtype == x.dtype else states[0].dtype


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
    resets: Array | None = None,
    reset_states: tuple[Array, ...] | None = None,
) -> tuple[Array, tuple[Array, ...]]:
    """Slow, obviously correct: the whole cell (input matmul included) inside the scan."""
    cell = rec.cell(nonlinearity, _carry_dtype(x, states))
    return _per_direction(rec, w, lambda p: x, states, mask, cell, unroll, resets, reset_states)


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
    resets: Array | None = None,
    reset_states: tuple[Array, ...] | None = None,
) -> tuple[Array, tuple[Array, ...]]:
    """Input projection hoisted out of the scan: one (T*N, I) x (I, G*H) matmul per direction."""
    od = _carry_dtype(x, states)
    project = lambda p: input_projection(p, x, od)  # noqa: E731  (T, N, G*H)
    step = rec.step_fn(nonlinearity)
    return _per_direction(rec, w, project, states, mask, step, unroll, resets, reset_states)


def linear_layer(
    rec: Recurrence,
    w: Mapping[str, Array],
    x: Array,
    states: tuple[Array, ...],
    mask: Array | None,
    /,
    *,
    nonlinearity: str,
    unroll: int,
    method: str = "auto",
    chunk: int | None = None,
    resets: Array | None = None,
    reset_states: tuple[Array, ...] | None = None,
) -> tuple[Array, tuple[Array, ...]]:
    """The fast path of a linear kind: ``h_t = a_t h_{t-1} + b_t`` over all steps at once.

    ``method``: ``"auto"`` (``"sequential"`` on XLA's CPU backend, ``"parallel"``
    elsewhere), ``"sequential"``, ``"parallel"`` or ``"chunked"`` (with ``chunk``).
    """
    assert rec.coefficients is not None, "linear_layer serves linear kinds"
    if method == "auto":
        method = "sequential" if jax.default_backend() == "cpu" else "parallel"
    T, N = x.shape[0], x.shape[1]
    D, GH, _ = w["weight_ih"].shape
    # One (T*N, I) x (I, D*G*H) matmul for both directions of the layer.
    b = w.get("bias_ih")
    b = None if b is None else b.reshape(-1)
    gx = linear(x, w["weight_ih"].reshape(D * GH, -1), b, _carry_dtype(x, states))
    # (T, D, N, G*H); D = 1 needs no transpose (a new unit axis is free).
    gx = gx[:, None] if D == 1 else jnp.swapaxes(gx.reshape(T, N, D, GH), 1, 2)
    a, bb = rec.coefficients(gx)  # (T, D, N, H) each
    (h0,) = states
    if resets is not None:
        # A restart is the step h = a h0 + b from the initial state: a = 0, b = a h0 + b.
        flags = direction_resets(resets, mask, D)  # (T, D, N, 1)
        h_r = h0 if reset_states is None else reset_states[0]
        bb = jnp.where(flags, a * h_r[None] + bb, bb)
        a = jnp.where(flags, jnp.zeros_like(a), a)
    valid = None
    if mask is not None:
        valid = mask[:, None, :, None]  # (T, 1, N, 1)
        # Padding is the identity step: the state passes through it unchanged.
        a = jnp.where(valid, a, jnp.ones_like(a))
        bb = jnp.where(valid, bb, jnp.zeros_like(bb))
    # Step order: the reverse direction flipped in time, so both run forward from t=0.
    hs = linear_recurrence(to_steps(a), to_steps(bb), h0, method=method, chunk=chunk)
    # forward: t = T-1 (frozen after the last valid step); reverse: t = 0. T = 0: h0.
    final = hs[-1] if hs.shape[0] else h0
    ys = to_steps(hs)
    if valid is not None:
        ys = jnp.where(valid, ys, jnp.zeros_like(ys))
    H = ys.shape[-1]
    out = ys[:, 0] if D == 1 else jnp.transpose(ys, (0, 2, 1, 3)).reshape(T, N, D * H)
    out = out.astype(x.dtype)
    return out, (final,)


#: Registered layer implementations, by ``impl`` name (:func:`impls_for` says which
#: serve a kind).
LAYER_IMPLS: dict[str, LayerImpl] = {
    "fused": fused_layer,
    "fused_loop": functools.partial(fused_layer, project="loop"),
    "fused_hoisted": functools.partial(fused_layer, project="hoisted"),
    "unfused": unfused_layer,
    "reference": reference_layer,
    "cudnn": cudnn_layer,
}

#: The fast path of linear kinds, by ``impl`` name.
LINEAR_IMPLS: dict[str, LayerImpl] = {
    "fused": functools.partial(linear_layer, method="auto"),
    "fused_scan": functools.partial(linear_layer, method="sequential"),
    "fused_parallel": functools.partial(linear_layer, method="parallel"),
    "fused_chunked": functools.partial(linear_layer, method="chunked"),
    "unfused": unfused_layer,
    "reference": reference_layer,
}

#: The implementations that accept ``remat`` (gated kinds).
REMAT_IMPLS = ("fused", "fused_loop", "fused_hoisted")
#: The implementations that accept ``chunk`` (linear kinds).
CHUNK_IMPLS = ("fused_chunked",)


#: A gated kind without fused pieces (``Recurrence.forward`` None, e.g. a kind registered
#: with only its step): ``"fused"`` falls back to the unfused scan, so the default ``impl`` works.
UNFUSED_IMPLS: dict[str, LayerImpl] = {
    "fused": unfused_layer,
    "unfused": unfused_layer,
    "reference": reference_layer,
}


def impls_for(rec: Recurrence) -> dict[str, LayerImpl]:
    """``{impl name: layer}`` of the implementations that serve ``rec``'s family: the
    linear kinds', the gated kinds', or, for a gated kind without fused pieces,
    :data:`UNFUSED_IMPLS` (its ``"fused"`` is the unfused scan)."""
    if rec.is_linear:
        return LINEAR_IMPLS
    return LAYER_IMPLS if rec.forward is not None else UNFUSED_IMPLS


def checked_impl(rec: Recurrence, impl: Any, remat: Any = None, chunk: Any = None) -> str:
    """``impl`` checked against ``rec``'s family, with ``remat`` (gated kinds) and
    ``chunk`` (linear kinds) checked against it."""
    remat_impls = REMAT_IMPLS if impls_for(rec) is LAYER_IMPLS else ()
    chunk_impls = CHUNK_IMPLS if rec.is_linear else ()
    known = list(impls_for(rec))
    return check_impl(rec.display_name, impl, known, remat, remat_impls, chunk, chunk_impls)
