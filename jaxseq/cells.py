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
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp

Array = jax.Array
Params = Mapping[str, Array]

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
]

#: Number of stacked gates in ``weight_ih`` / ``weight_hh`` for each kind.
NUM_GATES = {"rnn": 1, "lstm": 4, "gru": 3}

_NONLINEARITIES: dict[str, Callable[[Array], Array]] = {"tanh": jnp.tanh, "relu": jax.nn.relu}


def _linear(x: Array, w: Array, b: Array | None) -> Array:
    """``x @ w.T + b`` with w in PyTorch's (out, in) layout."""
    y = x @ w.T
    # Explicit rank match: the suite runs with jax_numpy_rank_promotion="raise".
    return y if b is None else y + b.reshape((1,) * (y.ndim - 1) + b.shape)


def input_projection(params: Params, x: Array) -> Array:
    """The input half of every cell: ``x W_ih^T + b_ih``.

    It does not depend on the carry, so the fast path applies it to all T steps at once
    (one (T*N, I) x (I, G*H) matmul) before the scan.

    Args:
      params: ``weight_ih`` (G*H, I) and optional ``bias_ih`` (G*H,).
      x: (..., I): one step (N, I) or a whole sequence (T, N, I).

    Returns:
      (..., G*H), the gates' input contributions in the cell's gate order.

    >>> import jax.numpy as jnp
    >>> p = {"weight_ih": jnp.ones((8, 3)), "bias_ih": jnp.arange(8.0)}
    >>> gx = input_projection(p, jnp.ones((5, 2, 3)))   # (T, N, I) -> (T, N, 4H)
    >>> gx.shape, gx[0, 0].tolist()
    ((5, 2, 8), [3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0])
    """
    return _linear(x, params["weight_ih"], params.get("bias_ih"))


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
    act = _NONLINEARITIES[nonlinearity]
    h_new = act(gx + _linear(h, params["weight_hh"], params.get("bias_hh")))
    return h_new, h_new


def lstm_step(
    params: Params, carry: tuple[Array, Array], gx: Array
) -> tuple[tuple[Array, Array], Array]:
    """LSTM step on a projected input ``gx = x W_ih^T + b_ih`` (gate order i, f, g, o).

    ::

        i, f, g, o = split(gx + h W_hh^T + b_hh, 4)
        c' = sigmoid(f) * c + sigmoid(i) * tanh(g)
        h' = sigmoid(o) * tanh(c')            (no projection)
        h' = (sigmoid(o) * tanh(c')) W_hr^T   (proj_size > 0)

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
    gates = gx + _linear(h, params["weight_hh"], params.get("bias_hh"))
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    c_new = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h_new = jax.nn.sigmoid(o) * jnp.tanh(c_new)
    if "weight_hr" in params:
        h_new = h_new @ params["weight_hr"].T
    return (h_new, c_new), h_new


def gru_step(params: Params, h: Array, gx: Array) -> tuple[Array, Array]:
    """GRU step on a projected input ``gx = x W_ih^T + b_ih`` (gate order r, z, n).

    PyTorch's GRU applies the reset gate *after* the hidden matmul and its bias::

        r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
        z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
        n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))
        h' = (1 - z) * n + z * h

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
    gh = _linear(h, params["weight_hh"], params.get("bias_hh"))
    x_r, x_z, x_n = jnp.split(gx, 3, axis=-1)
    h_r, h_z, h_n = jnp.split(gh, 3, axis=-1)
    r = jax.nn.sigmoid(x_r + h_r)
    z = jax.nn.sigmoid(x_z + h_z)
    n = jnp.tanh(x_n + r * h_n)
    h_new = (1.0 - z) * n + z * h
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


def lstm_cell(
    params: Params, carry: tuple[Array, Array], x: Array
) -> tuple[tuple[Array, Array], Array]:
    """LSTM cell, as ``torch.nn.LSTMCell`` (plus ``nn.LSTM``'s ``proj_size``).

    ::

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


def gru_cell(params: Params, h: Array, x: Array) -> tuple[Array, Array]:
    """GRU cell, as ``torch.nn.GRUCell`` (reset applied after the hidden matmul).

    ::

        r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
        z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
        n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))
        h' = (1 - z) * n + z * h

    Flax's ``GRUCell`` has no ``b_hn`` and Haiku applies ``r`` before the matmul; neither
    matches PyTorch when ``b_hn != 0``. This one does.

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


def get_cell(kind: str, nonlinearity: str = "tanh") -> Callable:
    """The pure cell ``cell(params, carry, x) -> (carry, y)`` for ``kind``.

    ``kind`` is ``"rnn"`` (with ``nonlinearity`` ``"tanh"`` or ``"relu"``), ``"lstm"``
    or ``"gru"``; shapes as in :func:`rnn_cell`, :func:`lstm_cell`, :func:`gru_cell`.

    >>> get_cell("gru") is gru_cell
    True
    """
    if kind == "rnn":
        return lambda p, h, x: rnn_cell(p, h, x, nonlinearity)
    if kind == "lstm":
        return lstm_cell
    if kind == "gru":
        return gru_cell
    raise ValueError(f"Unknown RNN kind {kind!r}; expected 'rnn', 'lstm' or 'gru'")


def get_step(kind: str, nonlinearity: str = "tanh") -> Callable:
    """The recurrent half ``step(params, carry, gx) -> (carry, y)`` for ``kind``.

    ``gx`` (N, G*H) is the projected input from :func:`input_projection`.

    >>> get_step("lstm") is lstm_step
    True
    """
    if kind == "rnn":
        return lambda p, h, gx: rnn_step(p, h, gx, nonlinearity)
    if kind == "lstm":
        return lstm_step
    if kind == "gru":
        return gru_step
    raise ValueError(f"Unknown RNN kind {kind!r}; expected 'rnn', 'lstm' or 'gru'")
