"""Layer-normalised LSTM and GRU (Ba, Kiros and Hinton 2016, "Layer Normalization", §3.1).

Exactly which formulation (the LN-LSTM of the paper: the input and the recurrent terms
normalised separately, and the cell state before its ``tanh``)::

    LN_ih = LN(x W_ih^T + b_ih; ln_ih_weight, ln_ih_bias)      each (N, G*H)
    LN_hh = LN(h W_hh^T + b_hh; ln_hh_weight, ln_hh_bias)

    LayerNormLSTM (G = 4, gate order i, f, g, o as torch's LSTM):
        i, f, g, o = split(LN_ih + LN_hh, 4)
        c' = sigmoid(f) * c + sigmoid(i) * tanh(g)
        h' = sigmoid(o) * tanh(LN(c'; ln_c_weight, ln_c_bias))

    LayerNormGRU (G = 3, gate order r, z, n as torch's GRU; no LN on the state):
        r  = sigmoid(LN_ih[r] + LN_hh[r])
        z  = sigmoid(LN_ih[z] + LN_hh[z])
        n  = tanh(LN_ih[n] + r * LN_hh[n])
        h' = (1 - z) * n + z * h

``LN(v; w, b)`` normalises **each gate block of H units separately** (mean and biased
variance over the block's H units, ``eps = 1e-5`` as ``torch.nn.LayerNorm``), then scales
by the per-unit gain w and shifts by the per-unit bias b ((G*H,) for ``LN_ih`` /
``LN_hh``, (H,) for the LSTM's ``LN_c``)::

    LN(v)[k*H:(k+1)*H] = (v_k - mean(v_k)) / sqrt(var(v_k) + eps) * w_k + b_k

The carried ``c'`` is the un-normalised cell state. Parameters per layer and direction,
torch-named with the ``_l{k}{_reverse}`` suffix: ``weight_ih`` (G*H, in), ``weight_hh``
(G*H, H), ``bias_ih`` / ``bias_hh`` (G*H,) (with ``bias``) as the plain kinds, then
``ln_ih_weight``, ``ln_ih_bias``, ``ln_hh_weight``, ``ln_hh_bias`` (G*H,) and, for the
LSTM, ``ln_c_weight``, ``ln_c_bias`` (H,) — present whatever ``bias`` is. Init: the
weights and biases U(-1/sqrt(H), 1/sqrt(H)) as torch's LSTM, the gains 1, the LN biases 0.

Both kinds have the fused path's pieces (below): ``impl="fused"`` runs them in the one
fused scan with the custom backward, so ``remat``, resets, forward-mode AD, recurrent
dropout and zoneout work as for the plain kinds. Their CPU default keeps the input
projection hoisted: ``"fused_loop"`` measured the same within noise (interleaved training
steps, one layer, T = 100, N = 64, H = 128). The PyTorch twins are
``torchseq.LayerNormLSTM`` / ``torchseq.LayerNormGRU``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxseq.fused_ops import one_invalid, sigmoid_consts, tile, zero_invalid
from jaxseq.recurrences.base import ExtraParams, Fused, Params, Recurrence, linear, register
from jaxseq.recurrences.gru import GRU
from jaxseq.recurrences.gru import Res as GRU_RES

Array = jax.Array

__all__ = [
    "LAYERNORM_LSTM",
    "LAYERNORM_GRU",
    "EPS",
    "block_layer_norm",
    "layernorm_lstm_step",
    "layernorm_gru_step",
]

_GRU = GRU.fast
assert isinstance(_GRU, Fused)

#: The layer norm's epsilon (``torch.nn.LayerNorm``'s default).
EPS = 1e-5


def _per_unit(v: Array, ndim: int) -> Array:
    """A (K,) gain or bias shaped to broadcast over (..., K) without rank promotion."""
    return v.reshape((1,) * (ndim - 1) + v.shape)


def block_layer_norm(v: Array, weight: Array, bias: Array, groups: int) -> Array:
    """Layer norm of each of ``groups`` blocks of ``v``'s last axis separately, then the
    per-unit gain and bias.

    Args:
      v: (..., G*H), e.g. the gates' input or recurrent pre-activations.
      weight, bias: (G*H,) per-unit gain and shift.
      groups: G; each block of H units gets its own mean and (biased) variance.

    Returns:
      (..., G*H): ``(v_k - mean(v_k)) / sqrt(var(v_k) + EPS) * w_k + b_k`` per block k.

    >>> import jax.numpy as jnp
    >>> v = jnp.array([[1.0, 3.0, 10.0, 30.0]])
    >>> block_layer_norm(v, jnp.ones(4), jnp.zeros(4), 2).round(4).tolist()
    [[-1.0, 1.0, -1.0, 1.0]]
    """
    normed, _ = _normalise(v, groups)
    return normed * _per_unit(weight, v.ndim) + _per_unit(bias, v.ndim)


def _block_mean(v: Array, groups: int) -> Array:
    """(..., G*H) -> (..., G): the mean of each block of H, as one matmul with a constant
    (G*H, G) averaging matrix, for the fused backward: there, on XLA's CPU backend, the
    reshape-and-mean (a reduction over the minor axis) was slower on the stacked
    (T, D, N, G*H) arrays. The forward (:func:`_normalise`) keeps the reshape, which
    measured faster there (docs/speed.md has the measurements)."""
    size = v.shape[-1] // groups
    avg = np.kron(np.eye(groups), np.full((size, 1), 1.0 / size))
    return jnp.matmul(v, jnp.asarray(avg, v.dtype), precision=jax.lax.Precision.HIGHEST)


def _per_block(m: Array, size: int) -> Array:
    """(..., G) -> (..., G*H): each block's value repeated over its H units."""
    return jnp.repeat(m, size, axis=-1)


def _normalise(v: Array, groups: int) -> tuple[Array, Array]:
    """``(v_hat, rstd)``: each block of ``v``'s last axis centred and scaled to unit
    (biased) variance, (..., G*H), and its ``1 / sqrt(var + EPS)``, (..., G)."""
    shape = v.shape
    blocks = v.reshape(shape[:-1] + (groups, shape[-1] // groups))
    centred = blocks - jnp.mean(blocks, axis=-1, keepdims=True)
    rstd = jax.lax.rsqrt(jnp.mean(centred * centred, axis=-1, keepdims=True) + EPS)
    return (centred * rstd).reshape(shape), rstd[..., 0]


def _normalise_vjp(d_hat: Array, v_hat: Array, rstd: Array, groups: int) -> Array:
    """The gradient of :func:`_normalise`'s input from that of its output, per block:
    ``rstd * (d - mean(d) - v_hat * mean(d * v_hat))`` (linear in ``d_hat``)."""
    size = d_hat.shape[-1] // groups
    m1 = _per_block(_block_mean(d_hat, groups), size)
    m2 = _per_block(_block_mean(d_hat * v_hat, groups), size)
    return _per_block(rstd, size) * (d_hat - m1 - v_hat * m2)


def _gate_terms(params: Params, h: Array, gx: Array, groups: int) -> tuple[Array, Array]:
    """``(LN_ih(gx), LN_hh(h W_hh^T + b_hh))``, each (N, G*H)."""
    gh = linear(h, params["weight_hh"], params.get("bias_hh"))
    ln_ih = block_layer_norm(gx, params["ln_ih_weight"], params["ln_ih_bias"], groups)
    ln_hh = block_layer_norm(gh, params["ln_hh_weight"], params["ln_hh_bias"], groups)
    return ln_ih, ln_hh


def layernorm_lstm_step(
    params: Params, carry: tuple[Array, Array], gx: Array
) -> tuple[tuple[Array, Array], Array]:
    """LN-LSTM step (module docstring) on a projected input ``gx = x W_ih^T + b_ih``.

    Args:
      params: ``weight_hh`` (4H, H), optional ``bias_hh`` (4H,), ``ln_ih_weight``,
        ``ln_ih_bias``, ``ln_hh_weight``, ``ln_hh_bias`` (4H,), ``ln_c_weight``,
        ``ln_c_bias`` (H,).
      carry: ``(h, c)``, each (N, H).
      gx: (N, 4H) projected input (layer-normalised here).

    Returns:
      ``((h', c'), h')``; c' is the un-normalised cell state.

    >>> import jax.numpy as jnp
    >>> H = 2
    >>> p = {"weight_hh": jnp.zeros((8, H)), "ln_c_weight": jnp.ones(H), "ln_c_bias": jnp.zeros(H)}
    >>> p |= {f"ln_{s}_{t}": (jnp.ones if t == "weight" else jnp.zeros)(8)
    ...       for s in ("ih", "hh") for t in ("weight", "bias")}
    >>> (h, c), y = layernorm_lstm_step(p, (jnp.zeros((1, H)), jnp.ones((1, H))), jnp.zeros((1, 8)))
    >>> c.tolist()  # every gate pre-activation normalises to 0: f = 0.5, g = 0
    [[0.5, 0.5]]
    """
    h, c = carry
    ln_ih, ln_hh = _gate_terms(params, h, gx, 4)
    i, f, g, o = jnp.split(ln_ih + ln_hh, 4, axis=-1)
    c_new = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    c_norm = block_layer_norm(c_new, params["ln_c_weight"], params["ln_c_bias"], 1)
    h_new = jax.nn.sigmoid(o) * jnp.tanh(c_norm)
    return (h_new, c_new), h_new


def layernorm_gru_step(params: Params, h: Array, gx: Array) -> tuple[Array, Array]:
    """LN-GRU step (module docstring) on a projected input ``gx = x W_ih^T + b_ih``.

    Args:
      params: ``weight_hh`` (3H, H), optional ``bias_hh`` (3H,), ``ln_ih_weight``,
        ``ln_ih_bias``, ``ln_hh_weight``, ``ln_hh_bias`` (3H,).
      h: (N, H) previous hidden state.
      gx: (N, 3H) projected input (layer-normalised here).

    Returns:
      ``(h', h')``, both (N, H).

    >>> import jax.numpy as jnp
    >>> p = {"weight_hh": jnp.zeros((6, 2))}
    >>> p |= {f"ln_{s}_{t}": (jnp.ones if t == "weight" else jnp.zeros)(6)
    ...       for s in ("ih", "hh") for t in ("weight", "bias")}
    >>> layernorm_gru_step(p, jnp.ones((1, 2)), jnp.zeros((1, 6)))[1].tolist()  # z = 0.5, n = 0
    [[0.5, 0.5]]
    """
    ln_ih, ln_hh = _gate_terms(params, h, gx, 3)
    x_r, x_z, x_n = jnp.split(ln_ih, 3, axis=-1)
    h_r, h_z, h_n = jnp.split(ln_hh, 3, axis=-1)
    r = jax.nn.sigmoid(x_r + h_r)
    z = jax.nn.sigmoid(x_z + h_z)
    n = jnp.tanh(x_n + r * h_n)
    h_new = (1.0 - z) * n + z * h
    return h_new, h_new


# --------------------------------------------------------------------------- fused pieces
# The layer norms' parameters reach the pieces in ``w`` under their base names, each
# (D, size) in the carry's dtype. A step's normalised pre-activations v_hat and their
# rstd are saved; the gradient of a normalised input is _normalise_vjp of (d out * gain).
#
# LN-LSTM, with dh' = dh + dy, u = LN_c(c') and tc = tanh(u):
#   du = dh' * P,  P = o (1 - tc^2);  dc_tot = dc + vjp_c(du * ln_c_weight)
#   dA = [dc_tot, dc_tot, dc_tot, dh'] * Q,  Q = [g i(1-i), c f(1-f), i(1-g^2), tc o(1-o)]
#   dA is the gradient of both LN_ih's and LN_hh's outputs (they are summed);
#   dgh = vjp_hh(dA * ln_hh_weight) meets W_hh;  dgx = vjp_ih(dA * ln_ih_weight) after
#   the scan;  dh_prev = dgh W_hh (+ dh' where invalid),  dc_prev = dc_tot * f (1 invalid).
# LN-GRU: the GRU's own forward and backward pieces (gru.py) on the normalised terms
#   A_ih = LN_ih(gx), A_hh = LN_hh(gh): dA_hh = [dh']*3 * Qh, dA_ih = [dh']*3 * Qx, with
#   the LN_hh vjp between the GRU's backward and its hmat, and the LN_ih vjp after the scan.


def _gain(w, name: str, ndim: int) -> Array:
    """The (D, K) parameter ``w[name]`` shaped to broadcast over (D, N, K) (ndim 3) or,
    stacked over steps, (T, D, N, K) (ndim 4)."""
    v = w[name]
    return v[:, None] if ndim == 3 else v[None, :, None]


def _sum_steps(a: Array) -> Array:
    """(T, D, N, K) -> (D, K): a per-unit parameter's gradient over time and batch."""
    return jnp.sum(a, axis=(0, 2))


class LSTMRes(NamedTuple):
    """The LN-LSTM backward step's coefficients: the LSTM's (``p``, ``q``, ``f``,
    ``keep``) and the normalised values and reciprocal deviations of the cell state
    (``xc``, ``rc``) and of the recurrent term (``xh``, ``rh``)."""

    p: Array
    q: Array
    f: Array
    keep: Array
    xc: Array
    rc: Array
    xh: Array
    rh: Array


class GRURes(NamedTuple):
    """The LN-GRU backward step's coefficients: the GRU's (``qh``, ``z``) and the
    recurrent term's normalised values and reciprocal deviations (``xh``, ``rh``)."""

    qh: Array
    z: Array
    xh: Array
    rh: Array


def _lstm_forward(w, carry, gx, gh, valid):
    h, c = carry
    xi, ri = _normalise(gx, 4)
    xh, rh = _normalise(gh, 4)
    pre = (xi * _gain(w, "ln_ih_weight", 3) + _gain(w, "ln_ih_bias", 3)) + (
        xh * _gain(w, "ln_hh_weight", 3) + _gain(w, "ln_hh_bias", 3)
    )
    a, b = sigmoid_consts(pre.shape[-1] // 4, 4, (2,), pre.dtype, pre.ndim)
    i, f, g, o = jnp.split(a * jnp.tanh(a * pre) + b, 4, axis=-1)
    c_new = f * c + i * g
    xc, rc = _normalise(c_new, 1)
    tc = jnp.tanh(xc * _gain(w, "ln_c_weight", 3) + _gain(w, "ln_c_bias", 3))
    h_new = o * tc
    new = (jnp.where(valid, h_new, h), jnp.where(valid, c_new, c))
    P = zero_invalid(valid, o * (1.0 - tc * tc))
    Q = jnp.concatenate(
        [g * i * (1.0 - i), c * f * (1.0 - f), i * (1.0 - g * g), tc * o * (1.0 - o)], axis=-1
    )
    keep = jnp.logical_not(valid).astype(pre.dtype)
    scan_res = LSTMRes(P, zero_invalid(valid, Q), one_invalid(valid, f), keep, xc, rc, xh, rh)
    return new, zero_invalid(valid, h_new), (scan_res, (xi, ri))


def _lstm_backward(w, dcarry, dy, scan_res, hmat):
    dh, dc = dcarry
    p, q, fk, keep, xc, rc, xh, rh = scan_res  # LSTMRes
    dh_new = dh + dy
    du = dh_new * p
    dc_tot = dc + _normalise_vjp(du * _gain(w, "ln_c_weight", 3), xc, rc, 1)
    dA = _lstm_dA(dc_tot, dh_new, q)
    dgh = _normalise_vjp(dA * _gain(w, "ln_hh_weight", 3), xh, rh, 4)
    return (hmat(dgh) + keep * dh_new, dc_tot * fk), (dgh, dc_tot, dh_new)


def _lstm_dA(dc_tot: Array, dh_new: Array, q: Array) -> Array:
    """The gradient of the gates' pre-activations (both layer norms' outputs)."""
    return jnp.concatenate([dc_tot, dc_tot, dc_tot, dh_new], axis=-1) * q


def _lstm_gate_grads(emitted, scan_res, post_res, w):
    # No dgh_field: writing dgh over a saved array made XLA copy that whole array at every
    # step of the backward scan, so dgh is emitted, with dc_tot and dh' (H wide each), from
    # which dA (4H) is rebuilt here rather than stacked.
    dgh, dc_tot, dh_all = emitted
    p, q, xc, xh = scan_res.p, scan_res.q, scan_res.xc, scan_res.xh
    xi, ri = post_res
    dA = _lstm_dA(dc_tot, dh_all, q)
    du = dh_all * p
    dA_sum = _sum_steps(dA)
    extra = {
        "ln_ih_weight": _sum_steps(dA * xi),
        "ln_ih_bias": dA_sum,
        "ln_hh_weight": _sum_steps(dA * xh),
        "ln_hh_bias": dA_sum,
        "ln_c_weight": _sum_steps(du * xc),
        "ln_c_bias": _sum_steps(du),
    }
    dgx = _normalise_vjp(dA * _gain(w, "ln_ih_weight", 4), xi, ri, 4)
    return dgx, dgh, extra


def _gru_forward(w, h, gx, gh, valid):
    xi, ri = _normalise(gx, 3)
    xh, rh = _normalise(gh, 3)
    a_ih = xi * _gain(w, "ln_ih_weight", 3) + _gain(w, "ln_ih_bias", 3)
    a_hh = xh * _gain(w, "ln_hh_weight", 3) + _gain(w, "ln_hh_bias", 3)
    new, y, (gru_res, (pn,)) = _GRU.forward(w, h, a_ih, a_hh, valid)
    return new, y, (GRURes(gru_res.qh, gru_res.z, xh, rh), (pn, xi, ri))


def _gru_backward(w, dh, dy, scan_res, hmat):
    qh, zk, xh, rh = scan_res  # GRURes
    box = {}

    def ln_hmat(dA_hh: Array) -> Array:  # the LN_hh vjp, then the recurrent matmul
        box["dgh"] = _normalise_vjp(dA_hh * _gain(w, "ln_hh_weight", 3), xh, rh, 3)
        return hmat(box["dgh"])

    dh_prev, dh_new = _GRU.backward(w, dh, dy, GRU_RES(qh, zk), ln_hmat)
    return dh_prev, (box["dgh"], dh_new)


def _gru_gate_grads(emitted, scan_res, post_res, w):
    # dgh emitted, no dgh_field (as the LN-LSTM's); dA_hh rebuilt from dh' and Qh. dA_ih
    # shares dA_hh's r and z blocks; its n block is dh' * pn.
    dgh, dh_all = emitted
    qh, xh = scan_res.qh, scan_res.xh
    pn, xi, ri = post_res
    H = dh_all.shape[-1]
    dA_hh = tile(dh_all, 3) * qh
    dA_ih = jnp.concatenate([dA_hh[..., : 2 * H], dh_all * pn], axis=-1)
    extra = {
        "ln_ih_weight": _sum_steps(dA_ih * xi),
        "ln_ih_bias": _sum_steps(dA_ih),
        "ln_hh_weight": _sum_steps(dA_hh * xh),
        "ln_hh_bias": _sum_steps(dA_hh),
    }
    dgx = _normalise_vjp(dA_ih * _gain(w, "ln_ih_weight", 4), xi, ri, 3)
    return dgx, dgh, extra


def _ln_params(groups: int, state: bool) -> ExtraParams:
    """The layer norms' gains (ones) and biases (zeros): (G*H,) for the input and recurrent
    terms, and with ``state`` (H,) for the cell state."""

    def extra(hidden_size: int) -> dict[str, tuple[tuple[int, ...], str]]:
        g = (groups * hidden_size,)
        out: dict[str, tuple[tuple[int, ...], str]] = {
            "ln_ih_weight": (g, "ones"),
            "ln_ih_bias": (g, "zeros"),
            "ln_hh_weight": (g, "ones"),
            "ln_hh_bias": (g, "zeros"),
        }
        if state:
            out |= {"ln_c_weight": ((hidden_size,), "ones"), "ln_c_bias": ((hidden_size,), "zeros")}
        return out

    return extra


LAYERNORM_LSTM = register(
    Recurrence(
        name="layernorm_lstm",
        display_name="LayerNormLSTM",
        torch_twin="torchseq.layernorm:LayerNormLSTM",
        num_gates=4,
        step=layernorm_lstm_step,
        # additive=False: the input and recurrent terms are normalised apart
        fast=Fused(_lstm_forward, _lstm_backward, _lstm_gate_grads, additive=False),
        cell_state=True,
        extra_params=_ln_params(4, state=True),
    )
)

LAYERNORM_GRU = register(
    Recurrence(
        name="layernorm_gru",
        display_name="LayerNormGRU",
        torch_twin="torchseq.layernorm:LayerNormGRU",
        num_gates=3,
        step=layernorm_gru_step,
        fast=Fused(_gru_forward, _gru_backward, _gru_gate_grads, additive=False),
        extra_params=_ln_params(3, state=False),
    )
)
