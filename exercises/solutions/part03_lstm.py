"""Part 3: the LSTM cell, as ``torch.nn.LSTMCell``.

The carry is ``(h, c)``, in PyTorch's order. One matmul each for ``x`` and ``h`` gives
all four gates at once: the rows of ``weight_ih`` (4H, I) and ``weight_hh`` (4H, H), and
of both biases (4H,), are stacked in the order **i, f, g, o**::

    i  = sigmoid(W_ii x + b_ii + W_hi h + b_hi)      input gate
    f  = sigmoid(W_if x + b_if + W_hf h + b_hf)      forget gate
    g  = tanh   (W_ig x + b_ig + W_hg h + b_hg)      cell candidate
    o  = sigmoid(W_io x + b_io + W_ho h + b_ho)      output gate
    c' = f * c + i * g
    h' = o * tanh(c')

Task: write ``lstm_cell(p, carry, x_t) -> ((h', c'), h')``.
Check: ``python exercises/part03_lstm.py`` (from a random ``(h, c)``).

Questions
---------
1. The check starts from a random ``c``. Which wrong cell is exact from ``c = 0``?

   Answer: one that drops the forget gate (``c' = i * g``): ``f * c`` is zero when
   ``c`` is, so the first step from the usual zero state cannot tell. Any bug in the
   ``f`` block (wrong slice, sigmoid missing) hides the same way.

2. Why is ``c`` not squashed like ``h``, and what does that buy?

   Answer: ``c' = f * c + i * g`` is additive: with ``f`` near 1 the cell state (and its
   gradient, ``dc = f * dc'``) passes through many steps nearly unchanged, which is the
   LSTM's answer to vanishing gradients. ``h`` is bounded by ``o * tanh(c')``.

3. What does ``jnp.split(gates, 4, axis=-1)`` assume about the weight layout?

   Answer: that the 4H rows are four contiguous blocks of H rows, in the order i, f,
   g, o, so the columns of ``x @ W_ih^T`` come in that order too. Keras uses the same
   order; TensorFlow 1's ``LSTMCell`` stacked i, j (the candidate), f, o: its
   checkpoints need their blocks permuted, or the gates silently swap roles.
"""

import jax  # noqa: F401 (for your code)
import jax.numpy as jnp  # noqa: F401 (for your code)


def lstm_cell(p, carry, x_t):
    """One step: ``carry = (h, c)``, both (N, H); ``x_t`` (N, I).

    Returns ``((h', c'), h')``. Hint: compute the (N, 4H) pre-activations once, then
    ``jnp.split(..., 4, axis=-1)``; ``jax.nn.sigmoid``, ``jnp.tanh``.
    """
    h, c = carry
    gates = (
        x_t @ p["weight_ih"].T
        + p["bias_ih"][None, :]
        + h @ p["weight_hh"].T
        + p["bias_hh"][None, :]
    )
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return (h, c), h


if __name__ == "__main__":
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here if (here / "check.py").exists() else here.parent))
    import check

    sys.exit(check.run_part(3, globals()))
