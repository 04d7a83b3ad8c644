"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?"): linear recurrences.

Their gates read the input only, never the previous state, so one layer is the
elementwise linear recurrence ``h_t = a_t * h_{t-1} + b_t`` with ``(a_t, b_t)`` a function
of ``x_t`` alone (:func:`jaxseq.recurrences.linear_kind`). Equations (G gates, rows of
``weight_ih`` in this order)::

    minGRU  (G = 2, rows [z; h~])
        z  = sigmoid(x W_z^T + b_z)        h~ = x W_h^T + b_h
        h_t = (1 - z) * h_{t-1} + z * h~                      a = 1 - z,  b = z * h~
    minLSTM (G = 3, rows [f; i; h~])
        f  = sigmoid(x W_f^T + b_f)        i  = sigmoid(x W_i^T + b_i)
        h~ = x W_h^T + b_h                 f' = f / (f + i),  i' = i / (f + i)
        h_t = f' * h_{t-1} + i' * h~                          a = f',     b = i' * h~

Parameters per layer k and direction keep torch's names: ``weight_ih_l{k}{_reverse}``
(G*H, I) for k = 0, (G*H, D*H) for k > 0, and ``bias_ih_l{k}{_reverse}`` (G*H,) with
``bias``. There is no ``weight_hh``: nothing multiplies the state.

>>> import jax.numpy as jnp
>>> a, b = MIN_GRU.fast.coefficients(jnp.array([[0.0, 4.0]]))   # z = 0.5, h~ = 4
>>> a.tolist(), b.tolist()
([[0.5]], [[2.0]])
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxseq.recurrences.base import linear_kind, register

Array = jax.Array

__all__ = ["MIN_GRU", "MIN_LSTM", "min_gru_coefficients", "min_lstm_coefficients"]


def min_gru_coefficients(gx: Array) -> tuple[Array, Array]:
    """minGRU: gx (..., 2H) rows [z; h~] -> ``a = 1 - z``, ``b = z * h~``, each (..., H)."""
    gz, h_tilde = jnp.split(gx, 2, axis=-1)
    z = jax.nn.sigmoid(gz)
    return 1.0 - z, z * h_tilde


def min_lstm_coefficients(gx: Array) -> tuple[Array, Array]:
    """minLSTM: gx (..., 3H) rows [f; i; h~] -> ``a = f / (f + i)``, ``b = i / (f + i) * h~``."""
    gf, gi, h_tilde = jnp.split(gx, 3, axis=-1)
    f = jax.nn.sigmoid(gf)
    i = jax.nn.sigmoid(gi)
    s = f + i  # in (0, 2): never zero
    return f / s, (i / s) * h_tilde


MIN_GRU = register(
    linear_kind("min_gru", "MinGRU", 2, min_gru_coefficients, "torchseq.minimal:MinGRU")
)
MIN_LSTM = register(
    linear_kind("min_lstm", "MinLSTM", 3, min_lstm_coefficients, "torchseq.minimal:MinLSTM")
)
