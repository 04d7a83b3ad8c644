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
from typing import Any, Literal

import jax
import jax.numpy as jnp

from jaxseq.fused_ops import (
    bias,
    bmm,
    bmm_rows,
    contract_tn,
    direction_resets,
    grad_inputs,
    prev_h,
    to_steps,
    with_transposed_jvp,
    zero_invalid,
)
from jaxseq.recurrences import Recurrence, get

Array = jax.Array
Projection = Literal["loop", "hoisted"]

__all__ = ["default_projection", "fused_layer"]

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
    rec = get(kind)
    return rec.cpu_projection if jax.default_backend() == "cpu" else "hoisted"


# --------------------------------------------------------------------------- forward


def _forward(
    rec: Recurrence,
    nonlinearity,
    unroll,
    w,
    inputs,
    valid,
    carry,
    keep_res,
    resets,
    reset_carry,
    aux,
):
    loop = w.get("w_ih_t") is not None
    # The carry's dtype: the matmuls' operands are in the weights' (compute) dtype and
    # their products accumulate in this one (the same dtype unless mixed precision).
    cd = rec.states(carry)[0].dtype
    if loop and rec.additive:
        # Projection in the loop: one (N, I + H_out) x (I + H_out, G*H) matmul per step.
        b = [b for b in (w["b_ih"], w["b_hh"]) if b is not None]
        w_cat = jnp.concatenate([w["w_ih_t"], w["w_hh_t"]], axis=1)
        b_cat = bias(functools.reduce(jnp.add, b)) if b else None

    h_mask = aux.get("h_mask") if aux else None

    def body(c, inp):
        xg, v, z = inp[0], inp[1], inp[3]
        if resets is not None:  # a new segment: the step starts from the initial carry
            c = jax.tree.map(lambda a, a0: jnp.where(inp[2], a0, a), c, reset_carry)
        h = rec.states(c)[0]
        if h_mask is not None:  # recurrent dropout: on the h that meets W_hh only
            h = h * h_mask
        if loop and rec.additive:
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
        c_new, y, res = rec.forward(w, c, gx, gh, v, nonlinearity)
        if z is not None:  # zoneout: each unit keeps its previous value with weight z
            zoned = tuple(
                zk * p + (1 - zk) * n
                for zk, p, n in zip(z, rec.states(c), rec.states(c_new), strict=True)
            )
            c_new, y = rec.carry(zoned), zero_invalid(v, zoned[0])
        return c_new, ((y, res) if keep_res else y)

    zoneout = aux.get("zoneout") if aux else None
    return jax.lax.scan(body, carry, (inputs, valid, resets, zoneout), unroll=unroll)


# --------------------------------------------------------------------------- backward


def _recurrence_fwd(rec, nonlinearity, unroll, w, inputs, valid, carry, resets, reset_carry, aux):
    final, (ys, res) = _forward(
        rec, nonlinearity, unroll, w, inputs, valid, carry, True, resets, reset_carry, aux
    )
    h_reset = None if resets is None else rec.states(reset_carry)[0]
    saved = (w, inputs, valid, res, ys, rec.states(carry)[0], resets, h_reset, aux)
    return (final, ys), saved


def _recurrence_bwd(rec, nonlinearity, unroll, saved, cts, in_place_ok=True):
    """The backward scan (the kind's step), then every weight gradient as one matmul."""
    w, inputs, valid, (scan_res, post_res), ys, h0, resets, h_reset, aux = saved
    h_mask = aux.get("h_mask") if aux else None
    zoneout = aux.get("zoneout") if aux else None
    d_final, dys = cts
    # (D, G*H, H_out); the backward runs in the carry's dtype.
    w_hh = jnp.swapaxes(w["w_hh_t"], 1, 2).astype(dys.dtype)
    dys = jnp.where(valid, dys, jnp.zeros_like(dys))

    slot = rec.dgh_slot
    T = dys.shape[0]
    # The saved coefficient array scan_res[slot] is the scan's carry, not one of its
    # inputs: step t reads its slot t, then hmat writes the gate gradient dG_t over that
    # slot (dead after this step) and the matmul reads it back from there. So the stacked
    # gate gradients need no buffer of their own (a (T, D, N, G*H) array), and the
    # weight-gradient matmuls below find them in scan_res[slot]. With unroll > 1, XLA
    # copied the whole carried array at every step instead of updating it in place, so
    # there the gate gradients come out of the scan as a stacked output.
    in_place = slot is not None and unroll == 1 and in_place_ok
    # The scan's inputs: every saved array but the carried one.
    scanned = scan_res[:slot] + scan_res[slot + 1 :] if in_place else scan_res

    def body(carry, inp):
        dcarry, buf = carry
        dy, res_t, t, r, z = inp
        box = {}
        if in_place:
            res_t = res_t[:slot] + (buf[t],) + res_t[slot:]

            def hmat(dG: Array) -> Array:
                box["buf"] = buf.at[t].set(dG)
                return masked(bmm_rows(box["buf"][t], w_hh))

        else:

            def hmat(dG: Array) -> Array:
                box["dG"] = dG
                return masked(bmm_rows(dG, w_hh))

        if z is not None:  # zoneout: the kept share skips the step
            ds = rec.states(dcarry)
            kept = ((ds[0] + dy) * z[0],) + tuple(
                d * zk for d, zk in zip(ds[1:], z[1:], strict=True)
            )
            dcarry = rec.carry(tuple(d * (1 - zk) for d, zk in zip(ds, z, strict=True)))
            dy = dy * (1 - z[0])
        dcarry, emitted = rec.backward(w, dcarry, dy, res_t, hmat)
        if z is not None:
            dcarry = rec.carry(tuple(a + b for a, b in zip(rec.states(dcarry), kept, strict=True)))
        to_reset: Any = ()
        if resets is not None:
            # Where the step restarted, its carry gradient goes to the initial carry, and
            # nothing flows to the previous step.
            to_reset = jax.tree.map(lambda d: jnp.where(r, d, jnp.zeros_like(d)), dcarry)
            dcarry = jax.tree.map(lambda d: jnp.where(r, jnp.zeros_like(d), d), dcarry)
        dG = box.get("dG", ()) if slot is not None else ()  # without a slot: not stacked
        return (dcarry, box.get("buf", buf)), (emitted, dG, to_reset)

    def masked(dh: Array) -> Array:  # recurrent dropout: dh of the h that met W_hh
        return dh if h_mask is None else dh * h_mask

    xs = (dys, scanned, jnp.arange(T), resets, zoneout)
    init_buf = scan_res[slot] if in_place else jnp.zeros((), dys.dtype)
    (d_carry0, buf), (emitted, dG_stacked, to_reset) = jax.lax.scan(
        body, (d_final, init_buf), xs, reverse=True, unroll=unroll
    )
    d_reset = None if resets is None else jax.tree.map(lambda a: jnp.sum(a, axis=0), to_reset)
    if slot is not None:
        stacked = buf if in_place else dG_stacked
        scan_res = scan_res[:slot] + (stacked,) + scan_res[slot + 1 :]
    dgx, dgh, extra = rec.gate_grads(emitted, scan_res, post_res, w)

    # The weight gradients: one big matmul each, contracting over time and batch.
    dw: dict[str, Any] = {k: None for k in w}
    dw.update(extra)
    h_prev = prev_h(ys, valid, h0)
    if resets is not None:
        h_prev = jnp.where(resets, h_reset[None].astype(h_prev.dtype), h_prev)
    if h_mask is not None:
        h_prev = h_prev * h_mask[None].astype(h_prev.dtype)
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
    return dw, d_inputs, None, d_carry0, None, d_reset, None


def _masked_recurrence(
    rec, nonlinearity, unroll, w, inputs, valid, carry, resets, reset_carry, aux
):
    """The masked recurrence: (final carry, ys (T, D, N, H_out)), step order. ``resets``
    (T, D, N, 1) step order or None: where True the step starts from ``reset_carry``.
    ``aux``: None or the regularisers' masks (not differentiated): ``"h_mask"`` (D, N,
    H_out) on the h entering ``W_hh``, ``"zoneout"`` one (T, D, N, size) array per state,
    step order."""
    return _forward(
        rec, nonlinearity, unroll, w, inputs, valid, carry, False, resets, reset_carry, aux
    )


def _linear_backward(rec, nonlinearity, unroll, saved, cts):
    # The in-place write of the gate gradients over a saved coefficient array makes the
    # carried buffer hold constants as well as cotangents: not a linear program, so the
    # backward that forward mode transposes stacks them as a scan output instead.
    return _recurrence_bwd(rec, nonlinearity, unroll, saved, cts, in_place_ok=False)


#: The masked recurrence with its hand-written backward scan for reverse mode and that
#: backward's transpose for forward mode (:func:`jaxseq.fused_ops.with_transposed_jvp`).
_recurrence = with_transposed_jvp(
    _masked_recurrence,
    _recurrence_fwd,
    _recurrence_bwd,
    nondiff_argnums=(0, 1, 2),
    linear_bwd=_linear_backward,
    nograd_argnums=(9,),
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
    kind: str | Recurrence,
    w: Mapping[str, Array],
    x: Array,
    states: tuple[Array, ...],
    mask: Array | None,
    /,
    *,
    nonlinearity: str = "tanh",
    unroll: int = 1,
    remat: int | None = None,
    project: Projection | None = None,
    resets: Array | None = None,
    reset_states: tuple[Array, ...] | None = None,
    hidden_mask: Array | None = None,
    zoneout: tuple[Array, ...] | None = None,
) -> tuple[Array, tuple[Array, ...]]:
    """One layer, all directions, fused (see the module docstring). A :class:`LayerImpl`.

    Args:
      kind: a registered kind name or a :class:`~jaxseq.recurrences.Recurrence`.
      w: the layer's torch-named weights stacked by direction: ``weight_ih`` (D, G*H, I),
        ``weight_hh`` (D, G*H, H_out), optional ``bias_ih``/``bias_hh`` (D, G*H),
        optional ``weight_hr`` (D, H_out, H).
      x: (T, N, I) time-major input.
      states: the initial states, each (D, N, ...): ``(h0,)``, or ``(h0, c0)`` for the LSTM.
      mask: (T, N) bool, True at valid steps, or None (all valid).
      nonlinearity: for kinds that take one (the Elman RNN: ``"tanh"`` or ``"relu"``).
      unroll: ``jax.lax.scan`` unroll of the forward and backward scans.
      remat: None, or a chunk length K: store only every K-th carry and recompute
        inside each chunk on the backward pass.
      project: where the input projection happens, ``"hoisted"`` or ``"loop"``;
        None: :func:`default_projection`.
      resets: optional (T, N) bool, True where a new segment of a row starts: each
        direction restarts from ``states`` there (:func:`jaxseq.scan.reset_flags`), in the
        forward scan and in the custom backward, whose carried gradient at a restart
        goes to the initial states.
      reset_states: with ``resets``, the states the restarted segments begin from, each
        (D, N, ...) (default ``states``).
      hidden_mask: recurrent dropout, (D, N, H_out): multiplies the h that enters the
        ``W_hh`` matmul (only there), in the forward scan and the custom backward.
      zoneout: one (T, D, N, size) array per state, time order, values in [0, 1]: after
        a valid step the state is ``z * previous + (1 - z) * new`` and the output the
        zoned h (Krueger et al. 2016).

    Returns:
      ``(out, finals)``: out (T, N, D*H_out), forward direction first; finals the final
      states, each (D, N, ...).

    >>> import jax, jax.numpy as jnp
    >>> from jaxseq.params import init_lstm
    >>> p = init_lstm(jax.random.key(0), 3, 4)
    >>> w = {k[:-3]: v[None] for k, v in p.items()}           # D = 1
    >>> h0 = c0 = jnp.zeros((1, 2, 4), jnp.float32)
    >>> x = jnp.ones((5, 2, 3), jnp.float32)
    >>> mask = jnp.arange(5)[:, None] < jnp.array([5, 2])[None, :]   # (T, N)
    >>> out, (h, c) = fused_layer("lstm", w, x, (h0, c0), mask)
    >>> out.shape, bool((out[2:, 1] == 0).all()), bool((h[0, 1] == out[1, 1]).all())
    ((5, 2, 4), True, True)
    """
    rec = get(kind)
    T, N = x.shape[0], x.shape[1]
    w_ih = w["weight_ih"]  # (D, G*H, I)
    D = w_ih.shape[0]
    b_ih = w.get("bias_ih")
    fw: dict[str, Any] = {
        "w_hh_t": jnp.swapaxes(w["weight_hh"], 1, 2),  # (D, H_out, G*H)
        "b_hh": w.get("bias_hh"),
        "w_hr": w.get("weight_hr"),
    }
    carry = rec.carry(tuple(states))
    cd = states[0].dtype  # the carry's dtype (the compute dtype unless mixed precision)
    if b_ih is not None:
        b_ih = b_ih.astype(cd)
    fw["b_hh"] = None if fw["b_hh"] is None else fw["b_hh"].astype(cd)
    # A kind's extra parameters (Recurrence.extra_params, e.g. layer-norm gains), (D, K)
    # each, reach its pieces under their base names, in the carry's dtype.
    fw |= {k: v.astype(cd) for k, v in w.items() if k not in _TORCH_NAMES}

    Tp = T if remat is None else -(-T // int(remat)) * int(remat)
    if mask is None and Tp == T:
        valid = jnp.ones((T, D, N, 1), dtype=bool)
    else:
        m = jnp.ones((T, N), dtype=bool) if mask is None else mask
        if Tp != T:  # steps past T (remat padding) are invalid
            m = jnp.concatenate([m, jnp.zeros((Tp - T, N), dtype=bool)], axis=0)
        valid = to_steps(jnp.broadcast_to(m[:, None], (Tp, D, N)))[..., None]

    flags = None
    if resets is not None:
        flags = direction_resets(resets, mask, D)[..., 0]  # (T, D, N)
        if Tp != T:
            flags = jnp.concatenate([flags, jnp.zeros((Tp - T, D, N), dtype=bool)], axis=0)
        flags = to_steps(flags)[..., None]
    reset_carry = None
    if resets is not None:
        reset_carry = carry if reset_states is None else rec.carry(tuple(reset_states))
    zones = None
    if zoneout is not None:
        zones = tuple(z.astype(cd) for z in zoneout)
        if Tp != T:  # (time order, like the mask: to_steps runs over the padded length)
            zones = tuple(
                jnp.concatenate([z, jnp.zeros((Tp - T,) + z.shape[1:], cd)], axis=0) for z in zones
            )
        zones = tuple(to_steps(z) for z in zones)
    h_mask = None if hidden_mask is None else hidden_mask.astype(cd)
    aux = None
    if h_mask is not None or zones is not None:
        aux = {"h_mask": h_mask, "zoneout": zones}

    if project is None:
        project = default_projection(rec)
    if project not in ("loop", "hoisted"):
        raise ValueError(f"project must be 'loop', 'hoisted' or None, got {project!r}")
    if project == "loop":
        fw["w_ih_t"] = jnp.swapaxes(w_ih, 1, 2)  # (D, I, G*H)
        fw["b_ih"] = b_ih
    run = functools.partial(_recurrence, rec, nonlinearity, unroll, fw)
    if remat is None and project == "loop":
        x_steps = to_steps(jnp.broadcast_to(x[:, None], (T, D) + x.shape[1:]))
        final, ys = run(x_steps, valid, carry, flags, reset_carry, aux)
    elif remat is None:
        # One (T*N, I) x (I, D*G*H) matmul for every step and both directions (a dot over
        # (T, N, I), not a reshape to T*N rows, so that a sharded batch stays sharded).
        GH = w_ih.shape[1]
        w_all = jnp.concatenate(list(w_ih), axis=0).T  # (I, D*G*H)
        gx = jax.lax.dot_general(x, w_all, (((2,), (0,)), ((), ())), preferred_element_type=cd)
        gx = gx.reshape(T, N, D, GH).transpose(0, 2, 1, 3)
        if b_ih is not None:
            gx = gx + b_ih.reshape(1, D, 1, GH)
        final, ys = run(to_steps(gx), valid, carry, flags, reset_carry, aux)
    else:
        if Tp != T:
            x = jnp.concatenate([x, jnp.zeros((Tp - T,) + x.shape[1:], x.dtype)], axis=0)
        x_steps = to_steps(jnp.broadcast_to(x[:, None], (Tp, D) + x.shape[1:]))
        w_ih_t = jnp.swapaxes(w_ih, 1, 2)  # (D, I, G*H)
        K = int(remat)
        xs = x_steps.reshape((Tp // K, K) + x_steps.shape[1:])
        vs = valid.reshape((Tp // K, K) + valid.shape[1:])
        rs = None if flags is None else flags.reshape((Tp // K, K) + flags.shape[1:])
        zs = None if zones is None else tuple(z.reshape((Tp // K, K) + z.shape[1:]) for z in zones)

        @functools.partial(jax.checkpoint, prevent_cse=False)
        def chunk(c, inp):
            xc, vc, rc, zc = inp
            gc = xc if project == "loop" else _project(xc, w_ih_t, b_ih, cd)
            ac = None if aux is None else {"h_mask": h_mask, "zoneout": zc}
            return run(gc, vc, c, rc, reset_carry, ac)

        final, ys = jax.lax.scan(chunk, carry, (xs, vs, rs, zs))
        ys = ys.reshape((Tp,) + ys.shape[2:])
    ys = to_steps(ys)[:T]  # (T, D, N, H_out), time order
    out = ys.transpose(0, 2, 1, 3).reshape(T, N, D * ys.shape[-1]).astype(x.dtype)
    return out, rec.states(final)
