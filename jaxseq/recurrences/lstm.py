"""The LSTM, as ``torch.nn.LSTM`` / ``LSTMCell`` (gate order i, f, g, o; optional projection).

The equations are in :func:`lstm_cell`'s docstring (``help(jaxseq.lstm_cell)``).
G = 4; the carry is ``(h, c)`` with h (N, H_out), c (N, H) — torch's order.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxseq.fused_ops import bmm, contract_tn, one_invalid, sigmoid_consts, zero_invalid
from jaxseq.recurrences.base import Fused, Params, Recurrence, input_projection, linear, register

Array = jax.Array

__all__ = ["LSTM", "lstm_step", "lstm_cell"]


def lstm_step(
    params: Params, carry: tuple[Array, Array], gx: Array
) -> tuple[tuple[Array, Array], Array]:
    """LSTM step (:func:`lstm_cell`'s equations) on a projected input ``gx = x W_ih^T + b_ih``.

    Args:
      params: ``weight_hh`` (4H, H_out), optional ``bias_hh`` (4H,), optional
        ``weight_hr`` (H_out, H).
      carry: ``(h, c)`` with h (N, H_out), c (N, H).
      gx: (N, 4H) projected input, from :func:`input_projection`.

    Returns:
      ``((h', c'), h')``. ``lstm_step(p, carry, input_projection(p, x))`` is
      :func:`lstm_cell`.

    >>> import jax.numpy as jnp
    >>> p = {"weight_ih": jnp.full((8, 3), 0.1), "weight_hh": jnp.full((8, 2), -0.2)}
    >>> carry, x = (jnp.ones((1, 2)), jnp.ones((1, 2))), jnp.ones((1, 3))
    >>> a = lstm_step(p, carry, input_projection(p, x))
    >>> b = lstm_cell(p, carry, x)
    >>> bool(jnp.array_equal(a[1], b[1])) and bool(jnp.array_equal(a[0][1], b[0][1]))
    True
    """
    h, c = carry
    gates = gx + linear(h, params["weight_hh"], params.get("bias_hh"))
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    c_new = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h_new = jax.nn.sigmoid(o) * jnp.tanh(c_new)
    if "weight_hr" in params:
        h_new = linear(h_new, params["weight_hr"], None)
    return (h_new, c_new), h_new


def lstm_cell(
    params: Params, carry: tuple[Array, Array], x: Array
) -> tuple[tuple[Array, Array], Array]:
    """LSTM cell, as ``torch.nn.LSTMCell`` (plus ``nn.LSTM``'s ``proj_size``)::

        i = sigmoid(W_ii x + b_ii + W_hi h + b_hi)
        f = sigmoid(W_if x + b_if + W_hf h + b_hf)
        g = tanh(W_ig x + b_ig + W_hg h + b_hg)
        o = sigmoid(W_io x + b_io + W_ho h + b_ho)
        c' = f * c + i * g
        h' = o * tanh(c')            or, with proj_size > 0,   h' = W_hr (o * tanh(c'))

    Args:
      params: ``weight_ih`` (4H, I), ``weight_hh`` (4H, H_out), optional biases (4H,),
        optional ``weight_hr`` (H_out, H).
      carry: ``(h, c)`` with h (N, H_out), c (N, H) — PyTorch's order.
      x: (N, I) input.

    Returns:
      ``((h', c'), h')``.

    >>> import jax.numpy as jnp
    >>> p = {"weight_ih": jnp.zeros((8, 3)), "weight_hh": jnp.zeros((8, 2))}
    >>> (h, c), y = lstm_cell(p, (jnp.zeros((1, 2)), jnp.ones((1, 2))), jnp.ones((1, 3)))
    >>> c.tolist()  # f = sigmoid(0) = 0.5, g = tanh(0) = 0
    [[0.5, 0.5]]
    """
    return lstm_step(params, carry, input_projection(params, x))


# --------------------------------------------------------------------------- fused pieces
# The backward of a step is linear in (dh, dc). With m = o * tanh(c'), dm = dh' (or
# dh' W_hr with a projection) and dc_tot = dc + dm * P, P = o (1 - tanh(c')^2):
#   dG = [dc_tot, dc_tot, dc_tot, dm] * Q,  Q = [g i(1-i), c f(1-f), i(1-g^2), tanh(c') o(1-o)]
#   dh_prev = dG W_hh (+ dh' where invalid),  dc_prev = dc_tot * F,  F = f (1 where invalid).


class Res(NamedTuple):
    """The backward step's coefficients (mask folded in): ``p`` = o (1 - tanh(c')^2),
    ``q`` the gates' derivative block, ``f`` the forget gate (1 where invalid), ``keep``
    1 where invalid."""

    p: Array
    q: Array
    f: Array
    keep: Array


def _forward(w, carry, gx, gh, valid):
    h, c = carry
    gates = gx if gh is None else gx + gh
    # sigmoid(v) = 0.5 * tanh(v / 2) + 0.5, so all four gates are one tanh over the
    # whole (N, 4H) block: a / b are 0.5 except 1 / 0 on the cell-candidate gate g.
    a, b = sigmoid_consts(gates.shape[-1] // 4, 4, (2,), gates.dtype, gates.ndim)
    i, f, g, o = jnp.split(a * jnp.tanh(a * gates) + b, 4, axis=-1)
    c_new = f * c + i * g
    tc = jnp.tanh(c_new)
    m = o * tc
    h_new = m
    if w["w_hr"] is not None:
        wr = w["w_hr"]  # (D, H_out, H), the compute dtype; accumulated in the carry's
        mr = m.astype(wr.dtype)
        h_new = (
            jnp.einsum("dnh,doh->dno", mr, wr, preferred_element_type=m.dtype)
            if h.shape[0] > 1
            else jnp.matmul(mr[0], wr[0].T, preferred_element_type=m.dtype)[None]
        )
    new = (jnp.where(valid, h_new, h), jnp.where(valid, c_new, c))
    P = zero_invalid(valid, o * (1.0 - tc * tc))
    Q = jnp.concatenate(
        [g * i * (1.0 - i), c * f * (1.0 - f), i * (1.0 - g * g), tc * o * (1.0 - o)], axis=-1
    )
    keep = jnp.logical_not(valid).astype(gates.dtype)
    scan_res = Res(P, zero_invalid(valid, Q), one_invalid(valid, f), keep)
    post_res = () if w["w_hr"] is None else (zero_invalid(valid, m),)
    return new, zero_invalid(valid, h_new), (scan_res, post_res)


def _backward(w, dcarry, dy, scan_res, hmat):
    dh, dc = dcarry
    p, q, fk, keep = scan_res
    dh_new = dh + dy
    dm = dh_new if w["w_hr"] is None else bmm(dh_new, w["w_hr"].astype(dh_new.dtype))
    dc_tot = dc + dm * p
    dG = jnp.concatenate([dc_tot, dc_tot, dc_tot, dm], axis=-1) * q
    # dG itself is stored by hmat over Q's slot (dgh_field="q"); only the projection's
    # gradient needs dh' as well.
    emit = () if w["w_hr"] is None else dh_new
    return (hmat(dG) + keep * dh_new, dc_tot * fk), emit


def _gate_grads(emitted, scan_res, post_res, w):
    dG = scan_res.q  # the stacked gate gradients, written over Q by the backward scan
    if w["w_hr"] is None:
        return dG, dG, {}
    (m,) = post_res
    return dG, dG, {"w_hr": contract_tn(emitted, m)}


LSTM = register(
    Recurrence(
        name="lstm",
        display_name="LSTM",
        torch_twin="torch.nn:LSTM",
        num_gates=4,
        step=lstm_step,
        fast=Fused(
            _forward,
            _backward,
            _gate_grads,
            dgh_field="q",
            # The projection in the loop avoids writing the (T, N, 4H) array, the largest
            # of the kinds' (measurements: docs/speed.md).
            cpu_projection="loop",
        ),
        cell_state=True,
        projection=True,
    )
)
