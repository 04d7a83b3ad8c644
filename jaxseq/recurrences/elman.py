"""The Elman RNN, as ``torch.nn.RNN``: ``h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh)``.

act is tanh or relu (``nonlinearity``). One gate (G = 1); the carry is h (N, H).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxseq.fused_ops import zero_invalid
from jaxseq.recurrences.base import (
    Fused,
    Params,
    Recurrence,
    StepFn,
    input_projection,
    linear,
    register,
)

Array = jax.Array

__all__ = ["RNN_TANH_RELU", "rnn_step", "rnn_cell"]

_ACT: dict[str, Callable[[Array], Array]] = {"tanh": jnp.tanh, "relu": jax.nn.relu}


def rnn_step(
    params: Params, h: Array, gx: Array, nonlinearity: str = "tanh"
) -> tuple[Array, Array]:
    """Elman step on a projected input ``gx = x W_ih^T + b_ih``.

    ``h' = act(gx + h W_hh^T + b_hh)`` with act = tanh or relu.

    Args:
      params: ``weight_hh`` (H, H) and optional ``bias_hh`` (H,).
      h: (N, H) previous hidden state.
      gx: (N, H) projected input, from :func:`input_projection`.
      nonlinearity: ``"tanh"`` or ``"relu"``.

    Returns:
      ``(h', h')``, both (N, H).

    >>> import jax.numpy as jnp
    >>> p = {"weight_ih": jnp.ones((2, 3)), "weight_hh": jnp.eye(2)}
    >>> h, x = jnp.ones((1, 2)), jnp.full((1, 3), -0.5)
    >>> rnn_step(p, h, input_projection(p, x), "relu")[1].tolist()  # relu(-1.5 + 1)
    [[0.0, 0.0]]
    """
    h_new = _ACT[nonlinearity](gx + linear(h, params["weight_hh"], params.get("bias_hh")))
    return h_new, h_new


def rnn_cell(params: Params, h: Array, x: Array, nonlinearity: str = "tanh") -> tuple[Array, Array]:
    """Elman RNN cell, as ``torch.nn.RNNCell``.

    ``h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh)``, act = tanh or relu.

    Args:
      params: ``weight_ih`` (H, I), ``weight_hh`` (H, H), optional ``bias_ih``/``bias_hh`` (H,).
      h: (N, H) previous hidden state.
      x: (N, I) input.
      nonlinearity: ``"tanh"`` or ``"relu"``.

    Returns:
      ``(h', h')``, both (N, H).

    >>> import jax.numpy as jnp
    >>> p = {"weight_ih": jnp.ones((2, 3)), "weight_hh": jnp.zeros((2, 2))}
    >>> h, y = rnn_cell(p, jnp.zeros((1, 2)), jnp.full((1, 3), 0.5), "relu")
    >>> y.tolist()
    [[1.5, 1.5]]
    """
    return rnn_step(params, h, input_projection(params, x), nonlinearity)


# --------------------------------------------------------------------------- fused pieces
# Forward: pre = gx + gh, h' = act(pre). The backward is linear in dh with coefficient
# P = act'(pre) (1 - h'^2 for tanh, [pre > 0] for relu): dpre = (dh + dy) * P, and
# dh_prev = dpre W_hh; on invalid steps P = 0 and dh passes through (keep = 1).


class Res(NamedTuple):
    """The backward step's coefficients: ``p`` = act'(pre) (0 where invalid), ``keep`` =
    1 where invalid (the carried gradient passes)."""

    p: Array
    keep: Array


def _forward(w, h, gx, gh, valid, act):
    pre = gx if gh is None else gx + gh
    h_new = _ACT[act](pre)
    P = 1.0 - h_new * h_new if act == "tanh" else (pre > 0).astype(pre.dtype)
    keep = jnp.logical_not(valid).astype(pre.dtype)
    new = jnp.where(valid, h_new, h)
    return new, zero_invalid(valid, h_new), (Res(zero_invalid(valid, P), keep), ())


def _backward(w, dh, dy, scan_res, hmat):
    p, keep = scan_res
    dh_new = dh + dy
    dpre = dh_new * p
    return hmat(dpre) + keep * dh_new, ()


def _gate_grads(emitted, scan_res, post_res, w):
    dpre = scan_res.p  # written over P by the backward scan (dgh_field="p")
    return dpre, dpre, {}


#: The step and fused pieces of each activation (torch's RNN_TANH / RNN_RELU).
_VARIANTS: dict[str, tuple[StepFn, Fused]] = {
    act: (
        functools.partial(rnn_step, nonlinearity=act),
        Fused(functools.partial(_forward, act=act), _backward, _gate_grads, dgh_field="p"),
    )
    for act in _ACT
}

RNN_TANH_RELU = register(
    Recurrence(
        name="rnn",
        display_name="RNN",
        torch_twin="torch.nn:RNN",
        num_gates=1,
        step=_VARIANTS["tanh"][0],
        fast=_VARIANTS["tanh"][1],
        nonlinearities=("tanh", "relu"),
        variants=_VARIANTS.__getitem__,
        nonlinearity="tanh",
    )
)
