"""Layer implementations: one layer, all directions, behind one contract, and the table of them.

The stack (:mod:`jaxseq.stack`) stacks each layer's weights by direction once and builds
the segment context once (:mod:`jaxseq.layer`), then calls the chosen implementation as
``fn(plan, w, x, states, seg, masks)``. :data:`IMPLS` declares each implementation once,
with the kinds it serves and the features it supports. All of them compute the
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
(the table's last family).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jaxseq.cudnn import CUDNN_KIND_REFUSAL, CUDNN_REFUSALS, cudnn_layer, serves_cudnn
from jaxseq.fused import SUPPORTS as FUSED_SUPPORTS
from jaxseq.fused import fused_layer
from jaxseq.fused_ops import to_steps
from jaxseq.layer import (
    FEATURES,
    LayerImpl,
    LayerOut,
    Plan,
    Segments,
    States,
    StepMasks,
    Weights,
    gated,
    linear,
    plain,
    serving,
)
from jaxseq.linear_scan import linear_recurrence
from jaxseq.recurrences import Linear, Recurrence, input_projection
from jaxseq.recurrences import linear as linear_map
from jaxseq.scan import masked_scan

Array = jax.Array

__all__ = [
    "Impl",
    "IMPLS",
    "impls_for",
    "reference_layer",
    "unfused_layer",
    "linear_layer",
]


def _per_direction(
    plan: Plan,
    w: Mapping[str, Array],
    x_or_gx: Callable[[dict[str, Array]], Array],
    states: tuple[Array, ...],
    seg: Segments,
    cell: Callable[..., tuple[Any, Array]],
) -> LayerOut:
    rec = plan.rec
    outs, finals, seqs = [], [], []
    for d in range(w["weight_ih"].shape[0]):
        p = {k: v[d] for k, v in w.items()}
        c0 = rec.carry(tuple(s[d] for s in states))
        rs = seg.reset_states
        r0 = None if rs is None else rec.carry(tuple(s[d] for s in rs))
        c, ys = masked_scan(
            cell,
            p,
            c0,
            x_or_gx(p),
            mask=seg.mask,
            reverse=d == 1,
            unroll=plan.unroll,
            resets=seg.resets,
            reset_carry=r0,
            emit_carry=plan.all_states,
        )
        if plan.all_states:
            ys, carries = ys
            seqs.append(rec.states(carries))  # each (T, N, size), time order
        outs.append(ys)
        finals.append(rec.states(c))
    out = jnp.concatenate(outs, axis=-1) if len(outs) > 1 else outs[0]
    out = out.astype(w["weight_ih"].dtype)
    finals_d = tuple(jnp.stack(f) for f in zip(*finals, strict=True))
    if plan.all_states:  # each (T, D, N, size)
        return out, finals_d, tuple(jnp.stack(s, axis=1) for s in zip(*seqs, strict=True))
    return out, finals_d


def _out_dtype(plan: Plan, x: Array) -> Any:
    """The dtype the input projection accumulates in: the carry's, where it differs from
    the compute dtype (mixed precision), else None (the plain product)."""
    cd = plan.carry_dtype
    return None if cd is None or jnp.dtype(cd) == x.dtype else cd


def reference_layer(
    plan: Plan, w: Weights, x: Array, states: States, seg: Segments, masks: StepMasks
) -> LayerOut:
    """Slow, obviously correct: the whole cell (input matmul included) inside the scan."""
    cell = plan.rec.cell(_out_dtype(plan, x))
    return _per_direction(plan, w, lambda p: x, states, seg, cell)


def unfused_layer(
    plan: Plan, w: Weights, x: Array, states: States, seg: Segments, masks: StepMasks
) -> LayerOut:
    """Input projection hoisted out of the scan: one (T*N, I) x (I, G*H) matmul per direction."""
    od = _out_dtype(plan, x)
    project = lambda p: input_projection(p, x, od)  # noqa: E731  (T, N, G*H)
    return _per_direction(plan, w, project, states, seg, plan.rec.step)


def linear_layer(
    plan: Plan, w: Weights, x: Array, states: States, seg: Segments, masks: StepMasks
) -> LayerOut:
    """The fast path of a linear kind: ``h_t = a_t h_{t-1} + b_t`` over all steps at once.

    ``plan.method``: ``"auto"`` (``"sequential"`` on XLA's CPU backend, ``"parallel"``
    elsewhere), ``"sequential"``, ``"parallel"`` or ``"chunked"`` (with ``plan.chunk``).
    """
    fast = plan.rec.fast
    assert isinstance(fast, Linear), "linear_layer serves linear kinds"
    method = plan.method
    if method == "auto":
        method = "sequential" if jax.default_backend() == "cpu" else "parallel"
    T, N = x.shape[0], x.shape[1]
    D, GH, _ = w["weight_ih"].shape
    # One (T*N, I) x (I, D*G*H) matmul for both directions of the layer.
    b = w.get("bias_ih")
    b = None if b is None else b.reshape(-1)
    gx = linear_map(x, w["weight_ih"].reshape(D * GH, -1), b, _out_dtype(plan, x))
    # (T, D, N, G*H); D = 1 needs no transpose (a new unit axis is free).
    gx = gx[:, None] if D == 1 else jnp.swapaxes(gx.reshape(T, N, D, GH), 1, 2)
    a, bb = fast.coefficients(gx)  # (T, D, N, H) each
    (h0,) = states
    if seg.restart is not None:
        # A restart is the step h = a h0 + b from the initial state: a = 0, b = a h0 + b.
        h_r = h0 if seg.reset_states is None else seg.reset_states[0]
        bb = jnp.where(seg.restart, a * h_r[None] + bb, bb)
        a = jnp.where(seg.restart, jnp.zeros_like(a), a)
    valid = None
    if seg.mask is not None:
        valid = seg.mask[:, None, :, None]  # (T, 1, N, 1)
        # Padding is the identity step: the state passes through it unchanged.
        a = jnp.where(valid, a, jnp.ones_like(a))
        bb = jnp.where(valid, bb, jnp.zeros_like(bb))
    # Step order: the reverse direction flipped in time, so both run forward from t=0.
    hs = linear_recurrence(to_steps(a), to_steps(bb), h0, method=method, chunk=plan.chunk)
    # forward: t = T-1 (frozen after the last valid step); reverse: t = 0. T = 0: h0.
    final = hs[-1] if hs.shape[0] else h0
    ys = seq = to_steps(hs)  # time order; seq: every step's state (frozen on padding)
    if valid is not None:
        ys = jnp.where(valid, ys, jnp.zeros_like(ys))
    H = ys.shape[-1]
    out = ys[:, 0] if D == 1 else jnp.transpose(ys, (0, 2, 1, 3)).reshape(T, N, D * H)
    out = out.astype(x.dtype)
    if plan.all_states:  # (T, D, N, H)
        return out, (final,), (seq,)
    return out, (final,)


_EVERY = frozenset({"resets", "reset_hx", "all_states", "jvp", "vmap"})
_FUSED = FUSED_SUPPORTS

#: The capability table: every layer implementation, the kinds it serves and the features
#: it supports, declared once. :func:`jaxseq.layer.check` derives every refusal from it.
#: Several rows share a name across families: ``"fused"`` is each family's fast path
#: (the unfused scan for a kind with only its reference step).
IMPLS: list[LayerImpl] = [
    LayerImpl("fused", fused_layer, gated, _FUSED),
    LayerImpl("fused_loop", fused_layer, gated, _FUSED, plan={"project": "loop"}),
    LayerImpl("fused_hoisted", fused_layer, gated, _FUSED, plan={"project": "hoisted"}),
    LayerImpl(
        "cudnn",
        cudnn_layer,
        serves_cudnn,
        frozenset({"vmap"}),
        refusals=CUDNN_REFUSALS,
        kind_refusal=CUDNN_KIND_REFUSAL,
    ),
    LayerImpl("fused", linear_layer, linear, _EVERY),
    LayerImpl("fused_scan", linear_layer, linear, _EVERY, plan={"method": "sequential"}),
    LayerImpl("fused_parallel", linear_layer, linear, _EVERY, plan={"method": "parallel"}),
    LayerImpl(
        "fused_chunked", linear_layer, linear, _EVERY | {"chunk"}, plan={"method": "chunked"}
    ),
    LayerImpl("fused", unfused_layer, plain, _EVERY),
    LayerImpl("unfused", unfused_layer, supports=_EVERY),
    LayerImpl("reference", reference_layer, supports=_EVERY),
]

#: An implementation's name: a ``name`` of a row of :data:`IMPLS` (the one list of them).
Impl = str

assert all(f in FEATURES for row in IMPLS for f in row.supports)


def impls_for(rec: Recurrence) -> dict[str, LayerImpl]:
    """``{impl name: row}`` of the implementations that serve ``rec``.

    >>> from jaxseq.recurrences import get
    >>> sorted(impls_for(get("min_gru")))
    ['fused', 'fused_chunked', 'fused_parallel', 'fused_scan', 'reference', 'unfused']
    """
    return serving(IMPLS, rec)
