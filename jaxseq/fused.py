"""The fast path: one layer, all directions, fused into one scan with a custom VJP.

Same semantics as :func:`jaxseq.scan.masked_scan` run once per direction (the
``"reference"`` layer), computed the way cuDNN computes it:

1. **Input projection out of the recurrence.** ``x W_ih^T + b_ih`` does not depend on
   the carry. ``project="hoisted"`` computes it for every step and both directions as
   one (T*N, I) x (I, D*G*H) matmul before the scan, so only ``h W_hh^T`` stays inside
   (cuDNN's way; the default except for the LSTM on CPU). For the LSTM on XLA's CPU
   backend, writing that (T, N, 4H) array out and reading it back per step measured
   slower than ``project="loop"``: one ``[x_t, h] [W_ih; W_hh]^T`` matmul per step
   (:func:`default_projection`); in both modes the input-weight gradients and ``dx`` are single matmuls after
   the backward scan, as below.
2. **Fused directions.** Step ``s`` of the scan runs the forward direction at time ``s``
   and the reverse direction at time ``T-1-s``, stacked on a leading axis of size D, so
   a bidirectional layer takes T sequential steps, not 2T. Arrays "in step order" hold
   the reverse direction's slice flipped in time (:func:`_to_steps`).
3. **Custom VJP.** A step's backward is *linear* in the carried gradients ``dh``/``dc``,
   with coefficients that depend only on forward values. The forward scan therefore
   saves those coefficients (computed while the gates are at hand, mask folded in: 0 on
   invalid steps, pass-through 1 for the carry), not the gates. The backward scan
   carries only ``dh`` (and ``dc``) and per step does a few multiply-adds and one
   ``(N, G*H) x (G*H, H_out)`` matmul, emitting the gate gradients ``dG_t``; the weight
   gradients ``dW_hh = sum_t dG_t^T h_{t-1}``, ``db_hh = sum_t dG_t`` (and ``dW_hr``)
   are single large matmuls after it (``h_{t-1}`` is rebuilt from the outputs, not
   stored), and the gradient of the projection (``dW_ih``, ``db_ih``, ``dx``) is again
   one matmul.
4. **One transcendental per gate block.** ``sigmoid(v) = 0.5 tanh(v/2) + 0.5``, so
   LSTM's four gates are a single ``tanh`` over the whole ``(N, 4H)`` block with
   per-column scale and shift, and GRU's r and z gates one ``tanh`` over ``(N, 2H)``.
   XLA's CPU backend runs this markedly faster than a ``jax.nn.sigmoid`` per gate (it
   also keeps XLA from recomputing an activation in several fusions); it is the same
   function up to rounding.
5. **Checkpointing** (``remat=K``): time is cut into chunks of K steps; a scan over the
   chunks runs each chunk under ``jax.checkpoint``, projection included, so only the
   carries at chunk boundaries are stored and memory grows like T/K + K instead of T.

Masking is the reference's: at step ``s`` direction ``d`` is valid where its time
index is ``< lengths``; on invalid steps the carry is frozen, the output is 0 and no
gradient flows (the backward step passes ``dh``/``dc`` through unchanged and emits
``dG = 0``). Hence the reverse direction starts at each row's last valid element and
length 0 gives ``h_n = h0``.

Shapes (D directions, G gates, H hidden, H_out = proj_size or H)::

    gx      (T, D, N, G*H)   projected inputs, step order (project="hoisted")
    xs      (T, D, N, I)     inputs, step order (project="loop")
    w_ih_t  (D, I, G*H)      W_ih transposed, per direction (project="loop")
    valid   (T, D, N, 1)     bool, step order
    h       (D, N, H_out)    c (D, N, H)
    w_hh_t  (D, H_out, G*H)  W_hh transposed, per direction
    w_hr    (D, H_out, H)    LSTM projection (torch layout)
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

__all__ = ["default_projection", "fused_layer"]


# --------------------------------------------------------------------------- helpers


def _to_steps(a: Array) -> Array:
    """(T, D, ...) time order <-> step order: flip the reverse direction's slice in time.

    Its own inverse.
    """
    if a.shape[1] == 1:
        return a
    return jnp.concatenate([a[:, :1], a[::-1, 1:]], axis=1)


def _bmm(a: Array, w: Array) -> Array:
    """Per-direction matmul: (D, N, K) x (D, K, M) -> (D, N, M)."""
    if a.shape[0] == 1:
        return (a[0] @ w[0])[None]
    return jnp.einsum("dnk,dkm->dnm", a, w)


#: Per-step matmuls of at most this many multiply-adds (per direction) with at least
#: ``_SPLIT_MIN_ROWS`` rows run as two row blocks in the backward scan (see _bmm_rows).
_SPLIT_MAX_MACS = 2**22
_SPLIT_MIN_ROWS = 64


def _bmm_rows(a: Array, w: Array) -> Array:
    """:func:`_bmm` for the backward scan's per-step ``dG W_hh`` product.

    XLA's CPU backend runs a small matmul with a long contraction, such as
    (64, 512) x (512, 128) (the LSTM at H=128), on both cores, and the synchronisation
    costs more than it gains: measured 1.7x slower per step than the same product as two
    (32, 512) row blocks, which run on one core each without it. Small matmuls with at
    least 64 rows are therefore split in two row blocks; larger ones, whose threading
    pays, are left whole. Same values: each output row is the same dot product.
    """
    n, k, m = a.shape[1], a.shape[2], w.shape[2]
    if n < _SPLIT_MIN_ROWS or n % 2 or n * k * m > _SPLIT_MAX_MACS:
        return _bmm(a, w)
    half = n // 2
    return jnp.concatenate([_bmm(a[:, :half], w), _bmm(a[:, half:], w)], axis=1)


def _bias(b: Array | None, like: Array) -> Array | None:
    """(D, M) -> (D, 1, M) so it adds to (D, N, M) without rank promotion."""
    return None if b is None else b.reshape(b.shape[0], 1, b.shape[1])


def _where(valid: Array, a: Array, b: Array) -> Array:
    return jnp.where(valid, a, b)


def _zeros_where_invalid(valid: Array, a: Array) -> Array:
    return jnp.where(valid, a, jnp.zeros_like(a))


def _lstm_act_consts(hidden: int, dtype: Any, ndim: int) -> tuple[Array, Array]:
    """Per-column scale and shift that turn one tanh into LSTM's [sigmoid x3, tanh] gates."""
    gate = np.arange(4 * hidden) // hidden
    scale = np.where(gate == 2, 1.0, 0.5).reshape((1,) * (ndim - 1) + (-1,))
    shift = np.where(gate == 2, 0.0, 0.5).reshape((1,) * (ndim - 1) + (-1,))
    return jnp.asarray(scale, dtype), jnp.asarray(shift, dtype)


# --------------------------------------------------------------------------- forward step


def _step(kind: str, nonlinearity: str, w: dict[str, Any], carry: Any, gx: Array, valid: Array):
    """One fused step (all directions). Returns (new_carry, y, residuals)."""
    b_hh = _bias(w["b_hh"], gx)
    if kind == "lstm":
        h, c = carry
        if "w_cat" in w:
            gates = _bmm(jnp.concatenate([gx, h], axis=-1), w["w_cat"])
        else:
            gates = gx + _bmm(h, w["w_hh_t"])
        if b_hh is not None:
            gates = gates + b_hh
        # sigmoid(v) = 0.5 * tanh(v / 2) + 0.5, so all four gates are one tanh over the
        # whole (N, 4H) block: a / b are 0.5 except 1 / 0 on the cell-candidate gate g.
        a, b = _lstm_act_consts(gates.shape[-1] // 4, gates.dtype, gates.ndim)
        acts = a * jnp.tanh(a * gates) + b
        i, f, g, o = jnp.split(acts, 4, axis=-1)
        c_new = f * c + i * g
        tc = jnp.tanh(c_new)
        m = o * tc
        h_new = m
        if w["w_hr"] is not None:
            h_new = (
                jnp.einsum("dnh,doh->dno", h_new, w["w_hr"])
                if h.shape[0] > 1
                else ((h_new[0] @ w["w_hr"][0].T)[None])
            )
        new = (_where(valid, h_new, h), _where(valid, c_new, c))
        # Backward coefficients (see _recurrence_bwd), mask folded in.
        P = _zeros_where_invalid(valid, o * (1.0 - tc * tc))
        Q = jnp.concatenate(
            [g * i * (1.0 - i), c * f * (1.0 - f), i * (1.0 - g * g), tc * o * (1.0 - o)], axis=-1
        )
        Q = _zeros_where_invalid(valid, Q)
        F = _where(valid, f, jnp.ones_like(f))
        res = (P, Q, F) if w["w_hr"] is None else (P, Q, F, _zeros_where_invalid(valid, m))
    elif kind == "gru":
        h = carry
        if w.get("w_ih_t") is not None:
            gx = _bmm(gx, w["w_ih_t"])
            if w["b_ih"] is not None:
                gx = gx + _bias(w["b_ih"], gx)
        gh = _bmm(h, w["w_hh_t"])
        if b_hh is not None:
            gh = gh + b_hh
        x_rz, x_n = jnp.split(gx, [2 * h.shape[-1]], axis=-1)
        h_rz, h_n = jnp.split(gh, [2 * h.shape[-1]], axis=-1)
        # sigmoid(v) = 0.5 * tanh(v / 2) + 0.5: one transcendental over both gates.
        r, z = jnp.split(0.5 * jnp.tanh(0.5 * (x_rz + h_rz)) + 0.5, 2, axis=-1)
        n = jnp.tanh(x_n + r * h_n)
        h_new = (1.0 - z) * n + z * h
        new = _where(valid, h_new, h)
        pn = (1.0 - z) * (1.0 - n * n)
        pz = (h - n) * z * (1.0 - z)
        pr = pn * h_n * r * (1.0 - r)
        Qx = _zeros_where_invalid(valid, jnp.concatenate([pr, pz, pn], axis=-1))
        Qh = _zeros_where_invalid(valid, jnp.concatenate([pr, pz, pn * r], axis=-1))
        res = (Qx, Qh, _where(valid, z, jnp.ones_like(z)))
    else:
        h = carry
        if "w_cat" in w:
            pre = _bmm(jnp.concatenate([gx, h], axis=-1), w["w_cat"])
        else:
            pre = gx + _bmm(h, w["w_hh_t"])
        if b_hh is not None:
            pre = pre + b_hh
        h_new = jnp.tanh(pre) if nonlinearity == "tanh" else jax.nn.relu(pre)
        new = _where(valid, h_new, h)
        P = 1.0 - h_new * h_new if nonlinearity == "tanh" else (pre > 0).astype(pre.dtype)
        res = (_zeros_where_invalid(valid, P),)
    y = _zeros_where_invalid(valid, h_new)
    return new, y, res


def _forward(kind, nonlinearity, unroll, w, gx, valid, carry, keep_res):
    if w.get("w_ih_t") is not None and kind != "gru":
        # Projection in the loop: one (N, I + H_out) x (I + H_out, G*H) matmul per step.
        bias = [b for b in (w["b_ih"], w["b_hh"]) if b is not None]
        w = dict(
            w,
            w_cat=jnp.concatenate([w["w_ih_t"], w["w_hh_t"]], axis=1),
            b_hh=functools.reduce(jnp.add, bias) if bias else None,
        )

    def body(c, inp):
        g, v = inp
        c, y, res = _step(kind, nonlinearity, w, c, g, v)
        return c, ((y, res) if keep_res else y)

    return jax.lax.scan(body, carry, (gx, valid), unroll=unroll)


# --------------------------------------------------------------------------- backward


def _contract_tn(a: Array, b: Array) -> Array:
    """sum over t, n of a[t, d, n, :]^T b[t, d, n, :]: (T, D, N, P), (T, D, N, Q) -> (D, P, Q).

    One (P, T*N) x (T*N, Q) matmul per direction: a weight gradient for all steps at once.
    """
    if a.shape[1] == 1:
        rows = a.shape[0] * a.shape[2]  # T*N, explicit so that N = 0 works (no reshape(-1))
        return (a.reshape(rows, a.shape[-1]).T @ b.reshape(rows, b.shape[-1]))[None]
    return jnp.einsum("tdnp,tdnq->dpq", a, b)


def _grad_inputs(dg: Array, w_ih_t: Array) -> Array:
    """dx of the projection: (T, D, N, G*H) x (D, I, G*H)^T -> (T, D, N, I).

    Written as one (T*N, G*H) x (G*H, I) matmul per direction: as an einsum, XLA's CPU
    backend transposed the whole (T*N, G*H) gradient first (measured 2.9x slower at
    T=100, N=64, G*H=512, I=32).
    """
    T, D, N, GH = dg.shape
    rows = T * N  # explicit so that N = 0 works (no reshape(-1))
    per_dir = [
        (dg[:, d].reshape(rows, GH) @ w_ih_t[d].T).reshape(T, 1, N, w_ih_t.shape[1])
        for d in range(D)
    ]
    return per_dir[0] if D == 1 else jnp.concatenate(per_dir, axis=1)


def _prev_h(ys: Array, valid: Array, h0: Array) -> Array:
    """The hidden state entering each step, rebuilt from the outputs (step order).

    A direction's valid steps are contiguous and its carry is frozen elsewhere, so the
    state entering a valid step is the previous step's output when that step was valid,
    else the initial state. (Entries at invalid steps are never used: their gate
    gradients are 0.)
    """
    prev_y = jnp.concatenate([jnp.zeros_like(ys[:1]), ys[:-1]], axis=0)
    prev_v = jnp.concatenate([jnp.zeros_like(valid[:1]), valid[:-1]], axis=0)
    return jnp.where(prev_v, prev_y, h0[None])


def _tile(a: Array, k: int) -> Array:
    return jnp.concatenate([a] * k, axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _recurrence(kind, nonlinearity, unroll, w, gx, valid, carry):
    """The masked recurrence over pre-projected inputs: (final carry, ys (T, D, N, H_out))."""
    return _forward(kind, nonlinearity, unroll, w, gx, valid, carry, keep_res=False)


def _recurrence_fwd(kind, nonlinearity, unroll, w, gx, valid, carry):
    final, (ys, res) = _forward(kind, nonlinearity, unroll, w, gx, valid, carry, keep_res=True)
    h0 = carry[0] if kind == "lstm" else carry
    return (final, ys), (w, gx, valid, res, ys, h0)


def _recurrence_bwd(kind, nonlinearity, unroll, saved, cts):
    """Backward of the recurrence.

    The step's backward is linear in the carried gradients, with coefficients that depend
    only on forward values; the forward scan saved them (``res``, see :func:`_step`) with
    the mask folded in (coefficient 0 on invalid steps, pass-through 1 for the carried
    gradient). The scan does a few multiply-adds and one matmul per step.
    """
    w, inputs, valid, res, ys, h0 = saved
    d_final, dys = cts
    w_hh = jnp.swapaxes(w["w_hh_t"], 1, 2)  # (D, G*H, H_out)
    w_hr = w["w_hr"]
    dys = _zeros_where_invalid(valid, dys)
    keep = jnp.logical_not(valid).astype(dys.dtype)  # (T, D, N, 1): carry passes through
    h_prev = _prev_h(ys, valid, h0)

    if kind == "lstm":
        P, Q, F = res[:3]

        def body(dcarry, inp):
            dh, dc = dcarry
            dy, p, q, fk, kp = inp
            dh_new = dh + dy
            dm = dh_new if w_hr is None else _bmm(dh_new, w_hr)
            dc_tot = dc + dm * p
            dG = jnp.concatenate([dc_tot, dc_tot, dc_tot, dm], axis=-1) * q
            dh_prev = _bmm_rows(dG, w_hh) + kp * dh_new
            emit = dG if w_hr is None else (dG, dh_new)
            return (dh_prev, dc_tot * fk), emit

        d_carry0, emitted = jax.lax.scan(
            body, d_final, (dys, P, Q, F, keep), reverse=True, unroll=unroll
        )
        dgx = dgh = emitted if w_hr is None else emitted[0]
    elif kind == "gru":
        Qx, Qh, Z = res

        def body(dh, inp):
            dy, qh, zk = inp
            dh_new = dh + dy
            dgh = _tile(dh_new, 3) * qh
            return dh_new * zk + _bmm_rows(dgh, w_hh), dh_new

        d_carry0, dh_all = jax.lax.scan(body, d_final, (dys, Qh, Z), reverse=True, unroll=unroll)
        dh3 = _tile(dh_all, 3)
        dgx, dgh = dh3 * Qx, dh3 * Qh
    else:
        (P,) = res

        def body(dh, inp):
            dy, p, kp = inp
            dh_new = dh + dy
            dpre = dh_new * p
            return _bmm_rows(dpre, w_hh) + kp * dh_new, dpre

        d_carry0, dgx = jax.lax.scan(body, d_final, (dys, P, keep), reverse=True, unroll=unroll)
        dgh = dgx

    # The weight gradients: one big matmul each, contracting over time and batch.
    dw = {k: None for k in w}
    if w.get("w_ih_t") is not None:
        # Projection done in the loop: its gradients too. With the projection and the
        # recurrence sharing dG (LSTM, RNN), [x, h_prev]^T dG is a single matmul.
        n_in = inputs.shape[-1]
        if kind == "gru":
            dw["w_ih_t"] = _contract_tn(inputs, dgx)
            dw["w_hh_t"] = _contract_tn(h_prev, dgh)
        else:
            dcat = _contract_tn(jnp.concatenate([inputs, h_prev], axis=-1), dgx)
            dw["w_ih_t"], dw["w_hh_t"] = dcat[:, :n_in], dcat[:, n_in:]
        if w["b_ih"] is not None:
            dw["b_ih"] = jnp.sum(dgx, axis=(0, 2))
        d_inp = _grad_inputs(dgx, w["w_ih_t"])
    else:
        dw["w_hh_t"] = _contract_tn(h_prev, dgh)
        d_inp = dgx
    if w["b_hh"] is not None:
        dw["b_hh"] = jnp.sum(dgh, axis=(0, 2))
    if kind == "lstm" and w_hr is not None:
        dw["w_hr"] = _contract_tn(emitted[1], res[3])  # res[3]: pre-projection output
    return dw, d_inp, None, d_carry0


_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


# --------------------------------------------------------------------------- the layer


def _stack(dir_params: Sequence[Mapping[str, Array]], name: str) -> Array | None:
    if name not in dir_params[0]:
        return None
    return jnp.stack([p[name] for p in dir_params])


def _project(x_steps: Array, w_ih_t: Array, b_ih: Array | None) -> Array:
    """(T, D, N, I) x (D, I, G*H) -> (T, D, N, G*H), plus b_ih."""
    if x_steps.shape[1] == 1:
        gx = (x_steps[:, 0] @ w_ih_t[0])[:, None]
    else:
        gx = jnp.einsum("tdni,dig->tdng", x_steps, w_ih_t)
    if b_ih is not None:
        gx = gx + b_ih.reshape(1, b_ih.shape[0], 1, b_ih.shape[1])
    return gx


def default_projection(kind: str) -> str:
    """Where :func:`fused_layer` puts the input projection when not told: ``"loop"`` for
    the LSTM on the CPU backend, ``"hoisted"`` otherwise.

    Measured with ``python -m benchmarks.run --frameworks jaxseq jaxseq_hoisted`` on a
    2-core CPU: in the loop the LSTM's training step was faster (its four gates make the
    hoisted (T, N, 4H) array the largest), the GRU's was level and the Elman RNN's
    slower. Off the CPU, hoisting (one large matmul) is the standard choice.

    >>> default_projection("rnn")
    'hoisted'
    """
    if kind == "lstm" and jax.default_backend() == "cpu":
        return "loop"
    return "hoisted"


def fused_layer(
    kind: str,
    nonlinearity: str,
    dir_params: Sequence[Mapping[str, Array]],
    x: Array,
    carries: Sequence[Any],
    lengths: Array | None,
    unroll: int = 1,
    remat: int | None = None,
    project: str | None = None,
) -> tuple[Array, list[Any]]:
    """One layer, all directions, fused (see the module docstring).

    Args:
      kind: ``"rnn"``, ``"lstm"`` or ``"gru"``.
      nonlinearity: ``"tanh"`` or ``"relu"`` (RNN only).
      dir_params: 1 or 2 per-direction dicts (``weight_ih`` (G*H, I), ``weight_hh``
        (G*H, H_out), optional ``bias_ih``/``bias_hh`` (G*H,), ``weight_hr`` (H_out, H)).
      x: (T, N, I) time-major input.
      carries: per-direction initial carries: h (N, H_out), or ``(h, c)`` for LSTM.
      lengths: (N,) integer lengths or None.
      unroll: ``jax.lax.scan`` unroll of the forward and backward scans.
      remat: None, or a chunk length K: store only every K-th carry and recompute
        inside each chunk on the backward pass.
      project: where the input projection ``x W_ih^T`` happens. ``"hoisted"``: one
        matmul for all steps before the scan. ``"loop"``: inside the scan, as part of
        one ``[x_t, h] W^T`` matmul per step (GRU: a second small matmul), which avoids
        materialising the (T, N, G*H) projected input; the weight gradients are still
        one matmul after the backward scan. ``None`` (default):
        :func:`default_projection`.

    Returns:
      ``(out, finals)``: out (T, N, D*H_out), forward direction first; finals a list of
      per-direction final carries.

    >>> import jax, jax.numpy as jnp
    >>> from jaxseq.layers import init_lstm
    >>> p = init_lstm(jax.random.key(0), 3, 4)
    >>> dp = [{k[:-3]: v for k, v in p.items()}]
    >>> c0 = (jnp.zeros((2, 4), jnp.float32), jnp.zeros((2, 4), jnp.float32))
    >>> x = jnp.ones((5, 2, 3), jnp.float32)
    >>> out, [(h, c)] = fused_layer("lstm", "tanh", dp, x, [c0], jnp.array([5, 2]))
    >>> out.shape, bool((out[2:, 1] == 0).all()), bool((h[1] == out[1, 1]).all())
    ((5, 2, 4), True, True)
    """
    T, N = x.shape[0], x.shape[1]
    D = len(dir_params)
    dtype = x.dtype
    w = {
        "w_hh_t": jnp.swapaxes(_stack(dir_params, "weight_hh"), 1, 2),  # (D, H_out, G*H)
        "b_hh": _stack(dir_params, "bias_hh"),
        "w_hr": _stack(dir_params, "weight_hr"),
    }
    w_ih = _stack(dir_params, "weight_ih")  # (D, G*H, I)
    b_ih = _stack(dir_params, "bias_ih")
    if kind == "lstm":
        carry = (jnp.stack([c[0] for c in carries]), jnp.stack([c[1] for c in carries]))
    else:
        carry = jnp.stack(list(carries))

    Tp = T
    if remat is not None:
        remat = int(remat)
        Tp = -(-T // remat) * remat
    if lengths is None and Tp == T:
        valid = jnp.ones((T, D, N, 1), dtype=bool)
    else:
        # Clip to T: lengths above T act as T (as in the reference), also on padded steps.
        lens = jnp.full((N,), T, jnp.int32) if lengths is None else jnp.minimum(lengths, T)
        t = jnp.arange(Tp, dtype=lens.dtype).reshape(Tp, 1)
        # Step s: forward at time s, reverse at time Tp-1-s; steps past T are invalid.
        times = [t, Tp - 1 - t][:D]
        valid = jnp.stack([tt < lens.reshape(1, N) for tt in times], axis=1)[..., None]

    if project is None:
        project = default_projection(kind)
    if project not in ("loop", "hoisted"):
        raise ValueError(f"project must be 'loop', 'hoisted' or None, got {project!r}")
    if project == "loop":
        w["w_ih_t"] = jnp.swapaxes(w_ih, 1, 2)  # (D, I, G*H)
        w["b_ih"] = b_ih
    if remat is None and project == "loop":
        xs = _to_steps(jnp.broadcast_to(x[:, None], (T, D) + x.shape[1:]))
        final, ys = _recurrence(kind, nonlinearity, unroll, w, xs, valid, carry)
    elif remat is None:
        # One (T*N, I) x (I, D*G*H) matmul for every step and both directions.
        GH = w_ih.shape[1]
        w_all = jnp.concatenate(list(w_ih), axis=0).T  # (I, D*G*H)
        gx = (x.reshape(T * N, x.shape[-1]) @ w_all).reshape(T, N, D, GH).transpose(0, 2, 1, 3)
        if b_ih is not None:
            gx = gx + b_ih.reshape(1, D, 1, GH)
        final, ys = _recurrence(kind, nonlinearity, unroll, w, _to_steps(gx), valid, carry)
    else:
        if Tp != T:
            x = jnp.concatenate([x, jnp.zeros((Tp - T,) + x.shape[1:], dtype)], axis=0)
        x_steps = _to_steps(jnp.broadcast_to(x[:, None], (Tp, D) + x.shape[1:]))
        w_ih_t = jnp.swapaxes(w_ih, 1, 2)  # (D, I, G*H)
        K = remat
        xs = x_steps.reshape((Tp // K, K) + x_steps.shape[1:])
        vs = valid.reshape((Tp // K, K) + valid.shape[1:])

        @functools.partial(jax.checkpoint, prevent_cse=False)
        def chunk(c, inp):
            xc, vc = inp
            gx = xc if project == "loop" else _project(xc, w_ih_t, b_ih)
            return _recurrence(kind, nonlinearity, unroll, w, gx, vc, c)

        final, ys = jax.lax.scan(chunk, carry, (xs, vs))
        ys = ys.reshape((Tp,) + ys.shape[2:])
    ys = _to_steps(ys)[:T]  # (T, D, N, H_out), time order
    out = ys.transpose(0, 2, 1, 3).reshape(T, N, D * ys.shape[-1])
    if kind == "lstm":
        finals = [(final[0][d], final[1][d]) for d in range(D)]
    else:
        finals = [final[d] for d in range(D)]
    return out, finals
