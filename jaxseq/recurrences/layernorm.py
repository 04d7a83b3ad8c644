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

These kinds have no fused pieces yet: ``impl="fused"`` runs the unfused scan (the input
projection hoisted, the step in a masked ``lax.scan`` per direction;
:func:`jaxseq.impls.impls_for`). The PyTorch twins are ``torchseq.LayerNormLSTM`` /
``torchseq.LayerNormGRU``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxseq.recurrences.base import ExtraParams, Params, Recurrence, linear, register

Array = jax.Array

__all__ = [
    "LAYERNORM_LSTM",
    "LAYERNORM_GRU",
    "EPS",
    "block_layer_norm",
    "layernorm_lstm_step",
    "layernorm_gru_step",
]

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
    shape = v.shape
    blocks = v.reshape(shape[:-1] + (groups, shape[-1] // groups))
    mean = jnp.mean(blocks, axis=-1, keepdims=True)
    centred = blocks - mean
    var = jnp.mean(centred * centred, axis=-1, keepdims=True)
    normed = (centred * jax.lax.rsqrt(var + EPS)).reshape(shape)
    return normed * _per_unit(weight, v.ndim) + _per_unit(bias, v.ndim)


def _gate_terms(params: Params, h: Array, gx: Array, groups: int) -> tuple[Array, Array]:
    """``(LN_ih(gx), LN_hh(h W_hh^T + b_hh))``, each (N, G*H)."""
    gh = linear(h, params["weight_hh"], params.get("bias_hh"))
    ln_ih = block_layer_norm(gx, params["ln_ih_weight"], params["ln_ih_bias"], groups)
    ln_hh = block_layer_norm(gh, params["ln_hh_weight"], params["ln_hh_bias"], groups)
    return ln_ih, ln_hh


def layernorm_lstm_step(
    params: Params, carry: tuple[Array, Array], gx: Array, nonlinearity: str = "tanh"
) -> tuple[tuple[Array, Array], Array]:
    """LN-LSTM step (module docstring) on a projected input ``gx = x W_ih^T + b_ih``.

    Args:
      params: ``weight_hh`` (4H, H), optional ``bias_hh`` (4H,), ``ln_ih_weight``,
        ``ln_ih_bias``, ``ln_hh_weight``, ``ln_hh_bias`` (4H,), ``ln_c_weight``,
        ``ln_c_bias`` (H,).
      carry: ``(h, c)``, each (N, H).
      gx: (N, 4H) projected input (layer-normalised here).
      nonlinearity: unused; there for the common step signature.

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


def layernorm_gru_step(
    params: Params, h: Array, gx: Array, nonlinearity: str = "tanh"
) -> tuple[Array, Array]:
    """LN-GRU step (module docstring) on a projected input ``gx = x W_ih^T + b_ih``.

    Args:
      params: ``weight_hh`` (3H, H), optional ``bias_hh`` (3H,), ``ln_ih_weight``,
        ``ln_ih_bias``, ``ln_hh_weight``, ``ln_hh_bias`` (3H,).
      h: (N, H) previous hidden state.
      gx: (N, 3H) projected input (layer-normalised here).
      nonlinearity: unused; there for the common step signature.

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
        cell_state=True,
        additive=False,  # the input and recurrent terms are normalised apart
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
        additive=False,
        extra_params=_ln_params(3, state=False),
    )
)
