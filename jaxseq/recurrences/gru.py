"""The GRU, as ``torch.nn.GRU`` / ``GRUCell`` (gate order r, z, n; reset after the hidden matmul).

PyTorch's GRU applies the reset gate *after* the hidden matmul and its bias; the
equations are in :func:`gru_cell`'s docstring (``help(jaxseq.gru_cell)``).
Flax NNX's ``GRUCell`` has no recurrent bias at all (no ``b_hn``), Flax linen's has
``b_hn`` but no ``b_hr``, ``b_hz`` (torch's GRU with those two at zero; see
:mod:`jaxseq.interop.flax`), and Haiku applies ``r`` before the matmul. This one is
PyTorch's. G = 3; the carry is h (N, H).
Because ``r`` multiplies the hidden part of n alone, the gates are not a function of
``gx + gh`` (``additive=False``): the fused path keeps the two matmuls apart.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxseq.fused_ops import one_invalid, tile, zero_invalid
from jaxseq.recurrences.base import Fused, Params, Recurrence, input_projection, linear, register

Array = jax.Array

__all__ = ["GRU", "gru_step", "gru_cell"]


def gru_step(params: Params, h: Array, gx: Array) -> tuple[Array, Array]:
    """GRU step (:func:`gru_cell`'s equations) on a projected input ``gx = x W_ih^T + b_ih``
    (gate order r, z, n).

    Args:
      params: ``weight_hh`` (3H, H) and optional ``bias_hh`` (3H,).
      h: (N, H) previous hidden state.
      gx: (N, 3H) projected input ``[W_ir x + b_ir, W_iz x + b_iz, W_in x + b_in]``.

    Returns:
      ``(h', h')``, both (N, H).

    >>> import jax.numpy as jnp
    >>> p = {"weight_hh": jnp.zeros((6, 2)), "bias_hh": jnp.ones(6)}
    >>> h, gx = jnp.ones((1, 2)), jnp.zeros((1, 6))
    >>> y = gru_step(p, h, gx)[1]  # r = z = sigmoid(1) = 0.7311, n = tanh(r * b_hn) = 0.6237
    >>> round(float(y[0, 0]), 4)      # h' = (1 - z) * n + z * h
    0.8988
    """
    gh = linear(h, params["weight_hh"], params.get("bias_hh"))
    x_r, x_z, x_n = jnp.split(gx, 3, axis=-1)
    h_r, h_z, h_n = jnp.split(gh, 3, axis=-1)
    r = jax.nn.sigmoid(x_r + h_r)
    z = jax.nn.sigmoid(x_z + h_z)
    n = jnp.tanh(x_n + r * h_n)
    h_new = (1.0 - z) * n + z * h
    return h_new, h_new


def gru_cell(params: Params, h: Array, x: Array) -> tuple[Array, Array]:
    """GRU cell, as ``torch.nn.GRUCell`` (reset applied after the hidden matmul)::

        r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
        z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
        n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))
        h' = (1 - z) * n + z * h

    Args:
      params: ``weight_ih`` (3H, I), ``weight_hh`` (3H, H), optional biases (3H,).
      h: (N, H) previous hidden state.
      x: (N, I) input.

    Returns:
      ``(h', h')``, both (N, H).

    >>> import jax.numpy as jnp
    >>> p = {"weight_ih": jnp.zeros((6, 3)), "weight_hh": jnp.zeros((6, 2))}
    >>> h, y = gru_cell(p, jnp.ones((1, 2)), jnp.ones((1, 3)))
    >>> y.tolist()  # z = 0.5, n = 0: h' = 0.5 * h
    [[0.5, 0.5]]
    """
    return gru_step(params, h, input_projection(params, x))


# --------------------------------------------------------------------------- fused pieces
# With dh' = dh + dy, the gate gradients are dh' times coefficients of the forward:
#   input part   dgx = [dh']*3 * Qx,  Qx = [pn hn r(1-r), (h-n) z(1-z), pn]
#   hidden part  dgh = [dh']*3 * Qh,  Qh = [pn hn r(1-r), (h-n) z(1-z), pn r]
# (the two share their r and z blocks, so the forward keeps Qh and pn only)
# with pn = (1-z)(1-n^2) and hn = W_hn h + b_hn; dh_prev = dh' Z + dgh W_hh, Z = z
# (1 where invalid, where Qx = Qh = 0).


class Res(NamedTuple):
    """The backward step's coefficients: ``qh`` the hidden part's (0 where invalid),
    ``z`` the update gate (1 where invalid)."""

    qh: Array
    z: Array


def _forward(w, h, gx, gh, valid):
    H = h.shape[-1]
    x_rz, x_n = jnp.split(gx, [2 * H], axis=-1)
    h_rz, h_n = jnp.split(gh, [2 * H], axis=-1)
    # sigmoid(v) = 0.5 * tanh(v / 2) + 0.5: one transcendental over both gates.
    r, z = jnp.split(0.5 * jnp.tanh(0.5 * (x_rz + h_rz)) + 0.5, 2, axis=-1)
    n = jnp.tanh(x_n + r * h_n)
    h_new = (1.0 - z) * n + z * h
    pn = (1.0 - z) * (1.0 - n * n)
    pz = (h - n) * z * (1.0 - z)
    pr = pn * h_n * r * (1.0 - r)
    Qh = zero_invalid(valid, jnp.concatenate([pr, pz, pn * r], axis=-1))
    # Qx differs from Qh only in its n block, so only that block (pn) is kept for it.
    res = (Res(Qh, one_invalid(valid, z)), (zero_invalid(valid, pn),))
    return jnp.where(valid, h_new, h), zero_invalid(valid, h_new), res


def _backward(w, dh, dy, scan_res, hmat):
    qh, zk = scan_res
    dh_new = dh + dy
    return dh_new * zk + hmat(tile(dh_new, 3) * qh), dh_new


def _gate_grads(dh_all, scan_res, post_res, w):
    # scan_res.qh: the stacked hmat inputs tile(dh', 3) * Qh, written over Qh by the
    # backward scan (dgh_field="qh"), which is the gradient of h W_hh^T + b_hh. The input
    # part shares its r and z blocks; its n block is dh' * pn.
    dgh, (pn,) = scan_res.qh, post_res
    H = dh_all.shape[-1]
    return jnp.concatenate([dgh[..., : 2 * H], dh_all * pn], axis=-1), dgh, {}


GRU = register(
    Recurrence(
        name="gru",
        display_name="GRU",
        torch_twin="torch.nn:GRU",
        num_gates=3,
        step=gru_step,
        fast=Fused(
            _forward,
            _backward,
            _gate_grads,
            additive=False,
            dgh_field="qh",
            # Chosen by measurement (impl="fused_loop" against "fused_hoisted"; docs/speed.md).
            cpu_projection="loop",
        ),
    )
)
