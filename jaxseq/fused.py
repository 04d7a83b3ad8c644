"""The fast path: one layer, all directions, fused into one scan with a custom VJP.

Generic over the recurrence definitions (:mod:`jaxseq.recurrences`): a kind supplies its
forward step, backward step and gate gradients; this module supplies the scans, the
masking, the input projection and the weight gradients. Same semantics as the
``"reference"`` layer (:func:`jaxseq.scan.masked_scan` once per direction), computed the
way cuDNN computes it:

1. **Input projection out of the recurrence.** ``x W_ih^T + b_ih`` does not depend on
   the carry. ``project="hoisted"`` computes it for every step and both directions as
   one (T*N, I) x (I, D*G*H) matmul before the scan, so only ``h W_hh^T`` stays inside
   (cuDNN's way). ``project="loop"`` keeps it in the scan, as one ``[x_t, h] [W_ih; W_hh]^T``
   matmul per step for kinds whose gates see only ``gx + gh`` (``additive``), which
   avoids writing out and reading back the (T, N, G*H) array; each kind says which its
   CPU default is (:func:`default_projection`). In both modes the input-weight gradients
   and ``dx`` are single matmuls after the backward scan.
2. **Fused directions.** Step ``s`` of the scan runs the forward direction at time ``s``
   and the reverse direction at time ``T-1-s``, stacked on a leading axis of size D, so
   a bidirectional layer takes T sequential steps, not 2T. Arrays "in step order" hold
   the reverse direction's slice flipped in time (:func:`jaxseq.fused_ops.to_steps`).
3. **Custom VJP.** A step's backward is *linear* in the carried gradients, with
   coefficients that depend only on forward values. The forward scan therefore saves
   those coefficients (computed by the kind while its gates are at hand, mask folded
   in), not the gates. The backward scan carries only the state gradients and per step
   does a few multiply-adds and one ``(N, G*H) x (G*H, H_out)`` matmul, emitting the
   gate gradients; the weight gradients ``dW_hh = sum_t dG_t^T h_{t-1}``,
   ``db_hh = sum_t dG_t`` are single large matmuls after it (``h_{t-1}`` is rebuilt from
   the outputs, not stored), and so is the gradient of the projection.
4. **One transcendental per gate block** (in the kinds): ``sigmoid(v) = 0.5 tanh(v/2) +
   0.5``, so the LSTM's four gates are one ``tanh`` over the whole block.
5. **Checkpointing** (``remat=K``): time is cut into chunks of K steps; a scan over the
   chunks runs each chunk under ``jax.checkpoint``, projection included, so only the
   carries at chunk boundaries are stored and memory grows like T/K + K instead of T.

Masking is the reference's: at step ``s`` direction ``d`` is valid where the (T, N)
mask is True at its time index; on invalid steps the carry is frozen, the output is 0
and no gradient flows. Hence the reverse direction starts at each row's last valid
element and length 0 gives ``h_n = h0``.

Shapes (D directions, G gates, H hidden, H_out = proj_size or H)::

    gx      (T, D, N, G*H)   projected inputs, step order (project="hoisted")
    xs      (T, D, N, I)     inputs, step order (project="loop")
    valid   (T, D, N, 1)     bool, step order
    w_hh_t  (D, H_out, G*H)  W_hh transposed;  b_hh (D, G*H)
    w_ih_t  (D, I, G*H)      W_ih transposed;  b_ih (D, G*H)   (project="loop")
    w_hr    (D, H_out, H)    projection (torch layout), kinds with ``projection``
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

from jaxseq.fused_ops import (
    bias,
    bmm,
    bmm_rows,
    contract_tn,
    grad_inputs,
    prev_h,
    to_steps,
    with_transposed_jvp,
    zero_invalid,
)
from jaxseq.layer import LayerOut, Plan, Segments, States, StepMasks, Weights
from jaxseq.recurrences import Fused, Recurrence, get

Array = jax.Array
Projection = Literal["loop", "hoisted"]

__all__ = ["default_projection", "fused_layer", "SUPPORTS"]

#: What :func:`fused_layer` supports (:data:`jaxseq.layer.Feature`), declared where it is
#: implemented; :data:`jaxseq.impls.IMPLS` gives it to the fused rows.
SUPPORTS = frozenset(
    {"resets", "reset_hx", "jvp", "vmap", "remat", "hidden_mask", "zoneout", "all_states"}
)

#: The per-layer parameters every gated kind takes from torch's layout; any other entry
#: of a layer's weights is a kind's extra parameter.
_TORCH_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")


def default_projection(kind: str | Recurrence) -> Projection:
    """Where :func:`fused_layer` puts the input projection when not told: the kind's
    ``cpu_projection`` on XLA's CPU backend (``"loop"`` for the LSTM and GRU), ``"hoisted"``
    elsewhere, where one large matmul is the standard choice.

    >>> default_projection("rnn")
    'hoisted'
    """
    fast = _pieces(get(kind))
    return fast.cpu_projection if jax.default_backend() == "cpu" else "hoisted"


def _pieces(rec: Recurrence) -> Fused:
    if not isinstance(rec.fast, Fused):
        raise ValueError(f"{rec.display_name} has no fused pieces (Recurrence.fast is not Fused)")
    return rec.fast


class _Ctx(NamedTuple):
    """What the scans read besides the inputs and the carry, step order, not differentiated:
    ``valid`` (T, D, N, 1) bool; ``restart`` (T, D, N, 1) bool or None; ``h_mask`` (D, N,
    H_out) or None (recurrent dropout); ``zoneout`` one (T, D, N, size) array per state or
    None; ``reset_carry`` the carry restarted steps begin from (set inside the custom
    derivative, where it is a differentiated argument of its own)."""

    valid: Array
    restart: Array | None = None
    h_mask: Array | None = None
    zoneout: tuple[Array, ...] | None = None
    reset_carry: Any = None


class _Saved(NamedTuple):
    """The forward's residuals for the backward."""

    w: dict[str, Any]
    inputs: Array
    res: tuple[Any, Any]  # the kind's (scan_res, post_res)
    ys: Array  # (T, D, N, H_out), step order
    h0: Array  # (D, N, H_out)
    h_reset: Array | None
    ctx: _Ctx


# --------------------------------------------------------------------------- forward


def _forward(plan: Plan, w, inputs, carry, ctx: _Ctx, keep_res: bool):
    rec, fast = plan.rec, _pieces(plan.rec)
    loop = w.get("w_ih_t") is not None
    # The carry's dtype: the matmuls' operands are in the weights' (compute) dtype and
    # their products accumulate in this one (the same dtype unless mixed precision).
    cd = plan.carry_dtype
    if loop and fast.additive:
        # Projection in the loop: one (N, I + H_out) x (I + H_out, G*H) matmul per step.
        b = [b for b in (w["b_ih"], w["b_hh"]) if b is not None]
        w_cat = jnp.concatenate([w["w_ih_t"], w["w_hh_t"]], axis=1)
        b_cat = bias(functools.reduce(jnp.add, b)) if b else None

    def body(c, inp):
        xg, v, r, z = inp
        if r is not None:  # a new segment: the step starts from the reset carry
            c = jax.tree.map(lambda a, a0: jnp.where(r, a0, a), c, ctx.reset_carry)
        h = rec.states(c)[0]
        if ctx.h_mask is not None:  # recurrent dropout: on the h that meets W_hh only
            h = h * ctx.h_mask
        if loop and fast.additive:
            gx = bmm(jnp.concatenate([xg, h.astype(xg.dtype)], axis=-1), w_cat, cd)
            gx = gx if b_cat is None else gx + b_cat
            gh = None
        else:
            gx = xg
            if loop:
                gx = bmm(xg, w["w_ih_t"], cd)
                gx = gx if w["b_ih"] is None else gx + bias(w["b_ih"])
            gh = bmm(h, w["w_hh_t"], cd)
            gh = gh if w["b_hh"] is None else gh + bias(w["b_hh"])
        c_new, y, res = fast.forward(w, c, gx, gh, v)
        if z is not None:  # zoneout: each unit keeps its previous value with weight z
            zoned = tuple(
                zk * p + (1 - zk) * n
                for zk, p, n in zip(z, rec.states(c), rec.states(c_new), strict=True)
            )
            c_new, y = rec.carry(zoned), zero_invalid(v, zoned[0])
        if plan.all_states:  # every step's carry too (frozen on invalid steps)
            y = (y, rec.states(c_new))
        return c_new, ((y, res) if keep_res else y)

    xs = (inputs, ctx.valid, ctx.restart, ctx.zoneout)
    return jax.lax.scan(body, carry, xs, unroll=plan.unroll)


def _masked_recurrence(plan: Plan, w, inputs, carry, reset_carry, ctx: _Ctx):
    """The masked recurrence: (final carry, ys (T, D, N, H_out)), step order. Where
    ``ctx.restart`` is True the step starts from ``reset_carry``. With
    ``plan.all_states``, ys is ``(ys, states)``: every step's states too, step order."""
    return _forward(plan, w, inputs, carry, ctx._replace(reset_carry=reset_carry), False)


def _recurrence_fwd(plan: Plan, w, inputs, carry, reset_carry, ctx: _Ctx):
    ctx = ctx._replace(reset_carry=reset_carry)
    final, (out, res) = _forward(plan, w, inputs, carry, ctx, True)
    ys = out[0] if plan.all_states else out
    states = plan.rec.states
    h_reset = None if reset_carry is None else states(reset_carry)[0]
    return (final, out), _Saved(w, inputs, res, ys, states(carry)[0], h_reset, ctx)


# --------------------------------------------------------------------------- backward


def _scan_back(plan: Plan, saved: _Saved, cts, in_place_ok: bool = True):
    """The backward scan (the kind's backward step per step): ``(emitted, scan_res with
    the stacked hmat arguments in its dgh_field, d_carry0, d_reset)``."""
    rec, fast, ctx = plan.rec, _pieces(plan.rec), saved.ctx
    scan_res: Any = saved.res[0]  # the kind's residuals (a NamedTuple with dgh_field)
    d_final, dys = cts
    d_seq = None  # the cotangents of every step's states (plan.all_states), step order
    if plan.all_states:
        dys, d_seq = dys
    # (D, G*H, H_out); the backward runs in the carry's dtype.
    w_hh = jnp.swapaxes(saved.w["w_hh_t"], 1, 2).astype(dys.dtype)
    dys = jnp.where(ctx.valid, dys, jnp.zeros_like(dys))
    h_mask, field, T = ctx.h_mask, fast.dgh_field or "", dys.shape[0]

    def masked(dh: Array) -> Array:  # recurrent dropout: dh of the h that met W_hh
        return dh if h_mask is None else dh * h_mask

    # The saved coefficient array in scan_res's dgh_field is the scan's carry, not one of its
    # inputs: step t reads its slot t, then hmat writes the gate gradient dG_t over that
    # slot (dead after this step) and the matmul reads it back from there. So the stacked
    # gate gradients need no buffer of their own (a (T, D, N, G*H) array), and the
    # weight-gradient matmuls find them in that field. With unroll > 1, XLA copied
    # the whole carried array at every step instead of updating it in place, so there
    # the gate gradients come out of the scan as a stacked output.
    in_place = bool(field) and plan.unroll == 1 and in_place_ok
    # The scan's inputs: every saved array but the carried one (None in its place).
    scanned = scan_res._replace(**{field: None}) if in_place else scan_res

    def body(carry, inp):
        dcarry, buf = carry
        dy, res_t, t, r, z, ds_t = inp
        if ds_t is not None:  # this step's states were an output too
            dcarry = rec.carry(tuple(a + b for a, b in zip(rec.states(dcarry), ds_t, strict=True)))
        written = []  # what this step's hmat wrote: the updated buffer, or dG itself
        if in_place:
            res_t = res_t._replace(**{field: buf[t]})

            def hmat(dG: Array) -> Array:
                written.append(buf.at[t].set(dG))
                return masked(bmm_rows(written[0][t], w_hh))

        else:

            def hmat(dG: Array) -> Array:
                written.append(dG)
                return masked(bmm_rows(dG, w_hh))

        if z is not None:  # zoneout: the kept share skips the step
            ds = rec.states(dcarry)
            kept = ((ds[0] + dy) * z[0],) + tuple(
                d * zk for d, zk in zip(ds[1:], z[1:], strict=True)
            )
            dcarry = rec.carry(tuple(d * (1 - zk) for d, zk in zip(ds, z, strict=True)))
            dy = dy * (1 - z[0])
        dcarry, emitted = fast.backward(saved.w, dcarry, dy, res_t, hmat)
        if z is not None:
            dcarry = rec.carry(tuple(a + b for a, b in zip(rec.states(dcarry), kept, strict=True)))
        to_reset: Any = ()
        if r is not None:
            # Where the step restarted, its carry gradient goes to the reset carry, and
            # nothing flows to the previous step.
            to_reset = jax.tree.map(lambda d: jnp.where(r, d, jnp.zeros_like(d)), dcarry)
            dcarry = jax.tree.map(lambda d: jnp.where(r, jnp.zeros_like(d), d), dcarry)
        new_buf = written[0] if in_place else buf
        dG = written[0] if field and not in_place else ()  # no field: not kept
        return (dcarry, new_buf), (emitted, dG, to_reset)

    xs = (dys, scanned, jnp.arange(T), ctx.restart, ctx.zoneout, d_seq)
    init_buf = getattr(scan_res, field) if in_place else jnp.zeros((), dys.dtype)
    (d_carry0, buf), (emitted, dG_stacked, to_reset) = jax.lax.scan(
        body, (d_final, init_buf), xs, reverse=True, unroll=plan.unroll
    )
    d_reset = None if ctx.restart is None else jax.tree.map(lambda a: jnp.sum(a, axis=0), to_reset)
    if field:
        scan_res = scan_res._replace(**{field: buf if in_place else dG_stacked})
    return emitted, scan_res, d_carry0, d_reset


def _weight_grads(saved: _Saved, dgx: Array, dgh: Array, extra: dict[str, Array]):
    """Every weight gradient as one matmul over time and batch, and the inputs' gradient."""
    w, inputs, ctx = saved.w, saved.inputs, saved.ctx
    dw: dict[str, Any] = {k: None for k in w}
    dw.update(extra)
    h_prev = prev_h(saved.ys, ctx.valid, saved.h0)
    if ctx.restart is not None:
        assert saved.h_reset is not None  # saved whenever there are restarts
        h_prev = jnp.where(ctx.restart, saved.h_reset[None].astype(h_prev.dtype), h_prev)
    if ctx.h_mask is not None:
        h_prev = h_prev * ctx.h_mask[None].astype(h_prev.dtype)
    if w.get("w_ih_t") is not None:
        # Projection done in the loop: its gradients too. Where the projection and the
        # recurrence share dG (additive kinds), [x, h_prev]^T dG is a single matmul.
        inputs_c = inputs.astype(dgx.dtype)
        if dgx is dgh:
            n_in = inputs.shape[-1]
            dcat = contract_tn(jnp.concatenate([inputs_c, h_prev], axis=-1), dgx)
            dw["w_ih_t"], dw["w_hh_t"] = dcat[:, :n_in], dcat[:, n_in:]
        else:
            dw["w_ih_t"] = contract_tn(inputs_c, dgx)
            dw["w_hh_t"] = contract_tn(h_prev, dgh)
        if w["b_ih"] is not None:
            dw["b_ih"] = jnp.sum(dgx, axis=(0, 2))
        d_inputs = grad_inputs(dgx, w["w_ih_t"].astype(dgx.dtype)).astype(inputs.dtype)
    else:
        dw["w_hh_t"] = contract_tn(h_prev, dgh)
        d_inputs = dgx
    if w["b_hh"] is not None:
        dw["b_hh"] = jnp.sum(dgh, axis=(0, 2))
    # Each weight's gradient in the weight's own dtype (mixed precision: the compute dtype).
    dw = {k: None if g is None else g.astype(w[k].dtype) for k, g in dw.items()}
    return dw, d_inputs


def _recurrence_bwd(plan: Plan, saved: _Saved, cts, in_place_ok: bool = True):
    """The backward scan, then every weight gradient as one matmul."""
    emitted, scan_res, d_carry0, d_reset = _scan_back(plan, saved, cts, in_place_ok)
    dgx, dgh, extra = _pieces(plan.rec).gate_grads(emitted, scan_res, saved.res[1], saved.w)
    dw, d_inputs = _weight_grads(saved, dgx, dgh, extra)
    return dw, d_inputs, d_carry0, d_reset, None


def _linear_backward(plan: Plan, saved: _Saved, cts):
    # The in-place write of the gate gradients over a saved coefficient array makes the
    # carried buffer hold constants as well as cotangents: not a linear program, so the
    # backward that forward mode transposes stacks them as a scan output instead.
    return _recurrence_bwd(plan, saved, cts, in_place_ok=False)


#: The masked recurrence with its hand-written backward scan for reverse mode and that
#: backward's transpose for forward mode (:func:`jaxseq.fused_ops.with_transposed_jvp`):
#: ``_recurrence(plan, w, inputs, carry, reset_carry, ctx)``, differentiated in ``w``,
#: ``inputs``, ``carry`` and ``reset_carry``.
_recurrence = with_transposed_jvp(
    _masked_recurrence,
    _recurrence_fwd,
    _recurrence_bwd,
    nondiff_argnums=(0,),
    linear_bwd=_linear_backward,
    nograd_argnums=(5,),
)


# --------------------------------------------------------------------------- the layer


def _project(x_steps: Array, w_ih_t: Array, b_ih: Array | None, out_dtype: Any) -> Array:
    """(T, D, N, I) x (D, I, G*H) -> (T, D, N, G*H), plus b_ih; accumulated in out_dtype."""
    if x_steps.shape[1] == 1:
        gx = jnp.matmul(x_steps[:, 0], w_ih_t[0], preferred_element_type=out_dtype)[:, None]
    else:
        gx = jnp.einsum("tdni,dig->tdng", x_steps, w_ih_t, preferred_element_type=out_dtype)
    if b_ih is not None:
        gx = gx + b_ih.reshape(1, b_ih.shape[0], 1, b_ih.shape[1])
    return gx


def fused_layer(
    plan: Plan, w: Weights, x: Array, states: States, seg: Segments, masks: StepMasks
) -> LayerOut:
    """One layer, all directions, fused (see the module docstring): a :class:`~jaxseq.layer.LayerFn`.

    Args:
      plan: the kind (bound), ``unroll``, ``remat`` (None, or a chunk length K: store only
        every K-th carry and recompute inside each chunk on the backward pass),
        ``project`` (``"hoisted"``, ``"loop"``, None: :func:`default_projection`) and the
        carry dtype (:class:`~jaxseq.layer.Plan`).
      w: the layer's torch-named weights stacked by direction: ``weight_ih`` (D, G*H, I),
        ``weight_hh`` (D, G*H, H_out), optional ``bias_ih``/``bias_hh`` (D, G*H),
        optional ``weight_hr`` (D, H_out, H), and the kind's extra parameters (D, ...).
      x: (T, N, I) time-major input.
      states: the initial states, each (D, N, ...): ``(h0,)``, or ``(h0, c0)`` for the LSTM.
      seg: the mask (T, N) of valid steps, and with resets each direction's restart
        flags (T, D, N, 1) and the states restarted segments begin from (default
        ``states``), in the forward scan and in the custom backward, whose carried
        gradient at a restart goes to those states (:class:`~jaxseq.layer.Segments`).
      masks: recurrent dropout ``hidden`` (D, N, H_out), multiplying the h that enters
        the ``W_hh`` matmul (only there); ``zoneout`` one (T, D, N, size) array per state,
        time order, values in [0, 1]: after a valid step the state is ``z * previous +
        (1 - z) * new`` and the output the zoned h (Krueger et al. 2016).

    Returns:
      ``(out, finals)``: out (T, N, D*H_out), forward direction first; finals the final
      states, each (D, N, ...). With ``plan.all_states`` also every step's states,
      ``(out, finals, seq)`` (:class:`~jaxseq.layer.LayerFn`).

    >>> import jax, jax.numpy as jnp
    >>> from jaxseq.layer import LayerOut, Plan, Segments, States, StepMasks, Weights
    >>> from jaxseq.params import init_lstm
    >>> from jaxseq.recurrences import get
    >>> p = init_lstm(jax.random.key(0), 3, 4)
    >>> w = {k[:-3]: v[None] for k, v in p.items()}           # D = 1
    >>> h0 = c0 = jnp.zeros((1, 2, 4), jnp.float32)
    >>> x = jnp.ones((5, 2, 3), jnp.float32)
    >>> mask = jnp.arange(5)[:, None] < jnp.array([5, 2])[None, :]   # (T, N)
    >>> plan = Plan(get("lstm"), carry_dtype=jnp.float32)
    >>> out, (h, c) = fused_layer(plan, w, x, (h0, c0), Segments(mask), StepMasks())
    >>> out.shape, bool((out[2:, 1] == 0).all()), bool((h[0, 1] == out[1, 1]).all())
    ((5, 2, 4), True, True)
    """
    rec = plan.rec
    cd = states[0].dtype if plan.carry_dtype is None else jnp.dtype(plan.carry_dtype)
    plan = plan.with_(carry_dtype=cd)
    fw, b_ih = _fused_weights(w, cd)
    carry = rec.carry(tuple(states))
    T, N, D = x.shape[0], x.shape[1], w["weight_ih"].shape[0]
    Tp = T if plan.remat is None else -(-T // int(plan.remat)) * int(plan.remat)
    ctx = _step_context(seg, masks, (T, Tp, N, D), cd)
    reset_carry = None
    if seg.restart is not None:
        rs = seg.reset_states
        reset_carry = carry if rs is None else rec.carry(tuple(s.astype(cd) for s in rs))

    project = plan.project if plan.project is not None else default_projection(rec)
    if project not in ("loop", "hoisted"):
        raise ValueError(f"project must be 'loop', 'hoisted' or None, got {project!r}")
    if project == "loop":
        fw["w_ih_t"] = jnp.swapaxes(w["weight_ih"], 1, 2)  # (D, I, G*H)
        fw["b_ih"] = b_ih
    if T == 1:
        # A one-step call is typically made once per step of a caller's own loop (an
        # agent's rollout). XLA does not hoist a transposed weight out of that loop (it
        # is a copy only after layout assignment): each step would copy the weights. An
        # optimization barrier on the laid-out weights makes them a loop invariant that
        # is hoisted (benchmarks.acting, module loop).
        fw = jax.lax.optimization_barrier(fw)

    def run(inputs: Array, c: Any, ctx: _Ctx) -> tuple[Any, Array]:
        return _recurrence(plan, fw, inputs, c, reset_carry, ctx)

    if plan.remat is None and project == "loop":
        final, ys = run(to_steps(jnp.broadcast_to(x[:, None], (T, D) + x.shape[1:])), carry, ctx)
    elif plan.remat is None:
        final, ys = run(to_steps(_hoisted_projection(x, w["weight_ih"], b_ih, cd)), carry, ctx)
    else:
        if Tp != T:  # steps past T are invalid (ctx.valid): zeros
            x = jnp.concatenate([x, jnp.zeros((Tp - T,) + x.shape[1:], x.dtype)], axis=0)
        x_steps = to_steps(jnp.broadcast_to(x[:, None], (Tp, D) + x.shape[1:]))
        if project == "loop":
            proj = None
        else:
            proj = functools.partial(
                _project, w_ih_t=jnp.swapaxes(w["weight_ih"], 1, 2), b_ih=b_ih, out_dtype=cd
            )
        final, ys = _remat_chunks(int(plan.remat), run, proj, x_steps, carry, ctx)
    if plan.all_states:
        ys, seq = ys
    ys = to_steps(ys)[:T]  # (T, D, N, H_out), time order
    out = ys.transpose(0, 2, 1, 3).reshape(T, N, D * ys.shape[-1]).astype(x.dtype)
    if plan.all_states:  # every step's states, each (T, D, N, size), time order
        return out, rec.states(final), tuple(to_steps(s)[:T] for s in seq)
    return out, rec.states(final)


def _fused_weights(w: Mapping[str, Array], cd: Any) -> tuple[dict[str, Any], Array | None]:
    """The weights in the fused layout: ``(fw, b_ih)``; biases and a kind's extra
    parameters (Recurrence.extra_params, e.g. layer-norm gains, (D, K) each, reaching its
    pieces under their base names) in the carry's dtype ``cd``."""
    b_ih = w.get("bias_ih")
    b_hh = w.get("bias_hh")
    fw: dict[str, Any] = {
        "w_hh_t": jnp.swapaxes(w["weight_hh"], 1, 2),  # (D, H_out, G*H)
        "b_hh": None if b_hh is None else b_hh.astype(cd),
        "w_hr": w.get("weight_hr"),
    }
    fw |= {k: v.astype(cd) for k, v in w.items() if k not in _TORCH_NAMES}
    return fw, None if b_ih is None else b_ih.astype(cd)


def _step_context(seg: Segments, masks: StepMasks, dims: tuple[int, ...], cd: Any) -> _Ctx:
    """The scans' context in step order, padded with invalid steps to ``Tp`` (remat);
    ``dims`` is ``(T, Tp, N, D)``."""
    T, Tp, N, D = dims

    def padded(a: Array) -> Array:  # time order, (T, ...) -> (Tp, ...), zeros after T
        if Tp == T:
            return a
        return jnp.concatenate([a, jnp.zeros((Tp - T,) + a.shape[1:], a.dtype)], axis=0)

    if seg.mask is None and Tp == T:
        valid = jnp.ones((T, D, N, 1), dtype=bool)
    else:
        m = jnp.ones((T, N), dtype=bool) if seg.mask is None else seg.mask
        valid = to_steps(jnp.broadcast_to(padded(m)[:, None], (Tp, D, N)))[..., None]
    restart = None if seg.restart is None else to_steps(padded(seg.restart))
    zones = None
    if masks.zoneout is not None:
        zones = tuple(to_steps(padded(z.astype(cd))) for z in masks.zoneout)
    h_mask = None if masks.hidden is None else masks.hidden.astype(cd)
    return _Ctx(valid, restart, h_mask, zones)


def _hoisted_projection(x: Array, w_ih: Array, b_ih: Array | None, cd: Any) -> Array:
    """One (T*N, I) x (I, D*G*H) matmul for every step and both directions -> (T, D, N,
    G*H) (a dot over (T, N, I), not a reshape to T*N rows, so that a sharded batch stays
    sharded)."""
    T, N = x.shape[0], x.shape[1]
    D, GH = w_ih.shape[0], w_ih.shape[1]
    w_all = jnp.concatenate(list(w_ih), axis=0).T  # (I, D*G*H)
    gx = jax.lax.dot_general(x, w_all, (((2,), (0,)), ((), ())), preferred_element_type=cd)
    gx = gx.reshape(T, N, D, GH).transpose(0, 2, 1, 3)
    return gx if b_ih is None else gx + b_ih.reshape(1, D, 1, GH)


def _remat_chunks(K: int, run, proj, x_steps: Array, carry: Any, ctx: _Ctx):
    """A scan over chunks of K steps, each under ``jax.checkpoint`` with its input
    projection ``proj`` (None: in the loop): only the carries at chunk boundaries are
    stored. ``x_steps`` (Tp, D, N, I), step order, Tp a multiple of K."""
    Tp = x_steps.shape[0]

    def chunks(a: Any) -> Any:
        return None if a is None else a.reshape((Tp // K, K) + a.shape[1:])

    zs = None if ctx.zoneout is None else tuple(chunks(z) for z in ctx.zoneout)
    xs = (chunks(x_steps), chunks(ctx.valid), chunks(ctx.restart), zs)

    @functools.partial(jax.checkpoint, prevent_cse=False)
    def chunk(c, inp):
        xc, vc, rc, zc = inp
        gc = xc if proj is None else proj(xc)
        return run(gc, c, ctx._replace(valid=vc, restart=rc, zoneout=zc))

    final, ys = jax.lax.scan(chunk, carry, xs)
    return final, jax.tree.map(lambda a: a.reshape((Tp,) + a.shape[2:]), ys)
