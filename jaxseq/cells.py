"""Pure recurrent cells with PyTorch's equations, gate order and parameter layout.

Every cell is a pure function ``cell(params, carry, x) -> (carry, y)`` on a batch::

    x      (N, I)      input at one time step
    carry  (N, H)      h for RNN and GRU;  (h, c) with h (N, H_out), c (N, H) for LSTM
    y      (N, H_out)  the new h

``params`` is a dict holding one layer and direction, with PyTorch's names stripped of
their ``_l{k}{_reverse}`` suffix and PyTorch's layout (G = number of gates)::

    weight_ih  (G*H, I)        G = 1 (RNN), 4 (LSTM: i, f, g, o), 3 (GRU: r, z, n)
    weight_hh  (G*H, H_out)
    bias_ih    (G*H,)          optional (bias=False drops both biases)
    bias_hh    (G*H,)          optional
    weight_hr  (H_out, H)      LSTM with proj_size > 0 only, H_out = proj_size

Both biases are kept separately, as PyTorch keeps them: folding them gives the same
outputs and gradients but a different optimizer trajectory under Adam or weight decay.

The cells are split in two so that the fast path can hoist the input projection out of
the time loop: ``input_projection(params, x)`` computes ``x W_ih^T + b_ih`` and the
``*_step`` functions apply the recurrent part to a precomputed projection.

Each cell is defined with the rest of its kind in :mod:`jaxseq.recurrences` (``elman``,
``lstm``, ``gru``); this module gathers them.

>>> import jax.numpy as jnp
>>> p = {"weight_ih": jnp.zeros((6, 3)), "weight_hh": jnp.zeros((6, 2))}
>>> get_cell("gru")(p, jnp.ones((1, 2)), jnp.ones((1, 3)))[1].tolist()  # z = 0.5, n = 0
[[0.5, 0.5]]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from jaxseq.recurrences import (
    get,
    gru_cell,
    gru_step,
    input_projection,
    lstm_cell,
    lstm_step,
    registered,
    rnn_cell,
    rnn_step,
)

__all__ = [
    "NUM_GATES",
    "input_projection",
    "rnn_step",
    "lstm_step",
    "gru_step",
    "rnn_cell",
    "lstm_cell",
    "gru_cell",
    "get_cell",
    "get_step",
]


class _NumGates(Mapping):
    """``{kind: G}`` for every registered kind (a live view of the registry)."""

    def __getitem__(self, kind: str) -> int:
        return get(kind).num_gates

    def __iter__(self):
        return iter(registered())

    def __len__(self) -> int:
        return len(registered())

    def __repr__(self) -> str:
        return repr(dict(self))


#: Number of stacked gates in ``weight_ih`` / ``weight_hh`` for each kind.
NUM_GATES: Mapping[str, int] = _NumGates()


def get_cell(kind: str, nonlinearity: str = "tanh") -> Callable:
    """The pure cell ``cell(params, carry, x) -> (carry, y)`` for ``kind``.

    ``kind`` is a registered kind: ``"rnn"`` (with ``nonlinearity`` ``"tanh"`` or
    ``"relu"``), ``"lstm"``, ``"gru"``; shapes as in :func:`rnn_cell`, :func:`lstm_cell`,
    :func:`gru_cell`.
    """
    return get(kind).cell(nonlinearity)


def get_step(kind: str, nonlinearity: str = "tanh") -> Callable:
    """The recurrent half ``step(params, carry, gx) -> (carry, y)`` for ``kind``.

    ``gx`` (N, G*H) is the projected input from :func:`input_projection`.
    """
    return get(kind).step_fn(nonlinearity)
