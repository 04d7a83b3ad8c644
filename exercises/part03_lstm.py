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

Questions (answers in ``exercises/solutions/part03_lstm.py``)
-------------------------------------------------------------
1. The check starts from a random ``c``. Which wrong cell is exact from ``c = 0``?

2. Why is ``c`` not squashed like ``h``, and what does that buy?

3. What does ``jnp.split(gates, 4, axis=-1)`` assume about the weight layout?
"""

import jax  # noqa: F401 (for your code)
import jax.numpy as jnp  # noqa: F401 (for your code)


def lstm_cell(p, carry, x_t):
    """One step: ``carry = (h, c)``, both (N, H); ``x_t`` (N, I).

    Returns ``((h', c'), h')``. Hint: compute the (N, 4H) pre-activations once, then
    ``jnp.split(..., 4, axis=-1)``; ``jax.nn.sigmoid``, ``jnp.tanh``.
    """
    raise NotImplementedError  # your code here


if __name__ == "__main__":
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here if (here / "check.py").exists() else here.parent))
    import check

    sys.exit(check.run_part(3, globals()))
