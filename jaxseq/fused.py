"""The fast path: one layer, all directions, fused into one scan with a custom VJP.

Same semantics as :func:`jaxseq.scan.masked_scan` run once per direction (the
``"reference"`` layer), computed the way cuDNN computes it:

1. **Hoisted input projection.** ``x W_ih^T + b_ih`` for every step and both directions
   is one (T*N, I) x (I, D*G*H) matmul before the scan; only ``h W_hh^T`` stays inside.
2. **Fused directions.** Step ``s`` of the scan runs the forward direction at time ``s``
   and the reverse direction at time ``T-1-s``, stacked on a leading axis of size D, so
   a bidirectional layer takes T sequential steps, not 2T. Arrays "in step order" hold
   the reverse direction's slice flipped in time (:func:`_to_steps`).
3. **Custom VJP.** The forward scan saves the activated gates and the carry entering
   each step. The backward scan carries only ``dh`` (and ``dc``) and emits the gate
   gradients ``dG_t``; the weight gradients ``dW_hh = sum_t dG_t^T h_{t-1}``,
   ``db_hh = sum_t dG_t`` (and ``dW_hr``) are single large matmuls after it, and the
   gradient of the projection (``dW_ih``, ``db_ih``, ``dx``) is again one matmul.
4. **Checkpointing** (``remat=K``): time is cut into chunks of K steps; a scan over the
   chunks runs each chunk under ``jax.checkpoint``, projection included, so only the
   carries at chunk boundaries are stored and memory grows like T/K + K instead of T.

Masking is the reference's: at step ``s`` direction ``d`` is valid where its time
index is ``< lengths``; on invalid steps the carry is frozen, the output is 0 and no
gradient flows (the backward step passes ``dh``/``dc`` through unchanged and emits
``dG = 0``). Hence the reverse direction starts at each row's last valid element and
length 0 gives ``h_n = h0``.

Shapes (D directions, G gates, H hidden, H_out = proj_size or H)::

    gx      (T, D, N, G*H)   projected inputs, step order
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

Array = jax.Array

__all__ = ["fused_layer"]


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


def _bias(b: Array | None, like: Array) -> Array | None:
    """(D, M) -> (D, 1, M) so it adds to (D, N, M) without rank promotion."""
    return None if b is None else b.reshape(b.shape[0], 1, b.shape[1])


def _where(valid: Array, a: Array, b: Array) -> Array:
    return jnp.where(valid, a, b)


# --------------------------------------------------------------------------- forward step


def _step(kind: str, nonlinearity: str, w: dict[str, Any], carry: Any, gx: Array, valid: Array):
    """One fused step (all directions). Returns (new_carry, y, residuals)."""
    b_hh = _bias(w["b_hh"], gx)
    if kind == "lstm":
        h, c = carry
        gates = gx + _bmm(h, w["w_hh_t"])
        if b_hh is not None:
            gates = gates + b_hh
        i, f, g, o = jnp.split(gates, 4, axis=-1)
        i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
        c_new = f * c + i * g
        h_new = o * jnp.tanh(c_new)
        if w["w_hr"] is not None:
            h_new = (
                jnp.einsum("dnh,doh->dno", h_new, w["w_hr"])
                if h.shape[0] > 1
                else ((h_new[0] @ w["w_hr"][0].T)[None])
            )
        new = (_where(valid, h_new, h), _where(valid, c_new, c))
        res = (jnp.concatenate([i, f, g, o], axis=-1), h, c)
    elif kind == "gru":
        h = carry
        gh = _bmm(h, w["w_hh_t"])
        if b_hh is not None:
            gh = gh + b_hh
        x_r, x_z, x_n = jnp.split(gx, 3, axis=-1)
        h_r, h_z, h_n = jnp.split(gh, 3, axis=-1)
        r = jax.nn.sigmoid(x_r + h_r)
        z = jax.nn.sigmoid(x_z + h_z)
        n = jnp.tanh(x_n + r * h_n)
        h_new = (1.0 - z) * n + z * h
        new = _where(valid, h_new, h)
        res = (jnp.concatenate([r, z, n, h_n], axis=-1), h)
    else:
        h = carry
        pre = gx + _bmm(h, w["w_hh_t"])
        if b_hh is not None:
            pre = pre + b_hh
        h_new = jnp.tanh(pre) if nonlinearity == "tanh" else jax.nn.relu(pre)
        new = _where(valid, h_new, h)
        res = (h_new, h)
    y = _where(valid, h_new, jnp.zeros_like(h_new))
    return new, y, res


def _forward(kind, nonlinearity, unroll, w, gx, valid, carry, keep_res):
    def body(c, inp):
        g, v = inp
        c, y, res = _step(kind, nonlinearity, w, c, g, v)
        return c, ((y, res) if keep_res else y)

    return jax.lax.scan(body, carry, (gx, valid), unroll=unroll)


# --------------------------------------------------------------------------- backward step


def _back_step(kind, nonlinearity, w, dcarry, dy, res, valid):
    """Backward of one fused step. Returns (d_prev_carry, emitted per-step grads)."""
    if kind == "lstm":
        dh, dc = dcarry
        acts, h_prev, c_prev = res
        i, f, g, o = jnp.split(acts, 4, axis=-1)
        dh_new = dh + dy
        c_new = f * c_prev + i * g
        tc = jnp.tanh(c_new)
        if w["w_hr"] is not None:
            dm = _bmm(dh_new, w["w_hr"])  # (D, N, H_out) x (D, H_out, H)
        else:
            dm = dh_new
        dc_tot = dc + dm * o * (1.0 - tc * tc)
        d_i = dc_tot * g * i * (1.0 - i)
        d_f = dc_tot * c_prev * f * (1.0 - f)
        d_g = dc_tot * i * (1.0 - g * g)
        d_o = dm * tc * o * (1.0 - o)
        dG = jnp.concatenate([d_i, d_f, d_g, d_o], axis=-1)
        dG = _where(valid, dG, jnp.zeros_like(dG))
        dh_prev = _where(valid, _bmm(dG, w["w_hh"]), dh)
        dc_prev = _where(valid, dc_tot * f, dc)
        emit = (dG,)  # the gate gradients are those of gx and of h W_hh^T + b_hh alike
        if w["w_hr"] is not None:
            emit = emit + (_where(valid, dh_new, jnp.zeros_like(dh_new)),)
        return (dh_prev, dc_prev), emit
    if kind == "gru":
        dh = dcarry
        acts, h_prev = res
        r, z, n, h_n = jnp.split(acts, 4, axis=-1)
        dh_new = dh + dy
        dn = dh_new * (1.0 - z) * (1.0 - n * n)
        dz = dh_new * (h_prev - n) * z * (1.0 - z)
        dr = dn * h_n * r * (1.0 - r)
        dgx = jnp.concatenate([dr, dz, dn], axis=-1)
        dgh = jnp.concatenate([dr, dz, dn * r], axis=-1)
        dgx = _where(valid, dgx, jnp.zeros_like(dgx))
        dgh = _where(valid, dgh, jnp.zeros_like(dgh))
        dh_prev = _where(valid, dh_new * z + _bmm(dgh, w["w_hh"]), dh)
        return dh_prev, (dgx, dgh)
    dh = dcarry
    a, h_prev = res
    dh_new = dh + dy
    if nonlinearity == "tanh":
        dpre = dh_new * (1.0 - a * a)
    else:
        dpre = jnp.where(a > 0, dh_new, jnp.zeros_like(dh_new))
    dpre = _where(valid, dpre, jnp.zeros_like(dpre))
    dh_prev = _where(valid, _bmm(dpre, w["w_hh"]), dh)
    return dh_prev, (dpre,)


# --------------------------------------------------------------------------- custom VJP


def _contract_tn(a: Array, b: Array) -> Array:
    """sum over t, n of a[t, d, n, :]^T b[t, d, n, :]: (T, D, N, P), (T, D, N, Q) -> (D, P, Q).

    One (P, T*N) x (T*N, Q) matmul per direction: a weight gradient for all steps at once.
    """
    if a.shape[1] == 1:
        rows = a.shape[0] * a.shape[2]  # T*N, explicit so that N = 0 works (no reshape(-1))
        return (a.reshape(rows, a.shape[-1]).T @ b.reshape(rows, b.shape[-1]))[None]
    return jnp.einsum("tdnp,tdnq->dpq", a, b)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _recurrence(kind, nonlinearity, unroll, w, gx, valid, carry):
    """The masked recurrence over pre-projected inputs: (final carry, ys (T, D, N, H_out))."""
    return _forward(kind, nonlinearity, unroll, w, gx, valid, carry, keep_res=False)


def _recurrence_fwd(kind, nonlinearity, unroll, w, gx, valid, carry):
    final, (ys, res) = _forward(kind, nonlinearity, unroll, w, gx, valid, carry, keep_res=True)
    return (final, ys), (w, valid, res)


def _recurrence_bwd(kind, nonlinearity, unroll, saved, cts):
    w, valid, res = saved
    d_final, dys = cts

    # W_hh in its (D, G*H, H_out) layout, transposed once outside the loop.
    wb = dict(w, w_hh=jnp.swapaxes(w["w_hh_t"], 1, 2))

    def body(dc, inp):
        dy, r, v = inp
        return _back_step(kind, nonlinearity, wb, dc, dy, r, v)

    d_carry0, emitted = jax.lax.scan(body, d_final, (dys, res, valid), reverse=True, unroll=unroll)
    dgx = emitted[0]  # (T, D, N, G*H)
    dgh = emitted[1] if kind == "gru" else dgx
    h_prev = res[1]  # (T, D, N, H_out)
    # The weight gradients: one big matmul each, contracting over time and batch.
    dw = {
        "w_hh_t": _contract_tn(h_prev, dgh),
        "b_hh": None if w["b_hh"] is None else jnp.sum(dgh, axis=(0, 2)),
        "w_hr": None,
    }
    if kind == "lstm" and w["w_hr"] is not None:
        i, f, g, o = jnp.split(res[0], 4, axis=-1)
        m = o * jnp.tanh(f * res[2] + i * g)  # (T, D, N, H): the pre-projection output
        dw["w_hr"] = _contract_tn(emitted[1], m)
    return dw, dgx, None, d_carry0


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


def fused_layer(
    kind: str,
    nonlinearity: str,
    dir_params: Sequence[Mapping[str, Array]],
    x: Array,
    carries: Sequence[Any],
    lengths: Array | None,
    unroll: int = 1,
    remat: int | None = None,
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

    if remat is None:
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
            gx = _project(xc, w_ih_t, b_ih)
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
