"""Part 1: the Elman cell.

An Elman RNN keeps a hidden state ``h`` (N, H) and updates it from the input ``x_t``
(N, I), exactly as ``torch.nn.RNNCell``::

    h' = tanh(x_t W_ih^T + b_ih + h W_hh^T + b_hh)

PyTorch's layout: ``weight_ih`` is (H, I) (out features, in features, as in
``nn.Linear``), ``weight_hh`` is (H, H), and there are two biases of shape (H,). In JAX
the cell is a pure function of everything it uses; nothing is stored or mutated::

    cell(p, carry, x_t) -> (new_carry, y_t)

For this cell the carry and the output are the same ``h'``.

Task: write ``elman_cell``. Broadcast the biases explicitly (``b[None, :]``) as
jaxseq's own code does (its tests make implicit rank promotion an error).
Check: ``python exercises/part01_elman.py``.

Questions
---------
1. Why does the cell return ``h'`` twice?

   Answer: ``jax.lax.scan`` (part 2) expects ``f(carry, x) -> (carry, y)``: the first is
   handed to the next step, the second is stacked into the outputs. For an Elman RNN
   both are ``h'``; for an LSTM the carry is ``(h, c)`` and the output only ``h``.

2. Only ``b_ih + b_hh`` ever matters for the output. Why keep two biases?

   Answer: to be PyTorch's model parameter for parameter: a ``state_dict`` loads with
   no renaming, and the optimizer sees two parameters. Adam normalises each one's
   update separately and weight decay shrinks each one, so a folded bias trains to
   different numbers.

3. The check starts from a random ``h``, not zeros. Which wrong cells would pass from
   ``h = 0``?

   Answer: the mistakes in the recurrent term: leaving ``h @ W_hh^T`` out, or using
   ``W_hh`` without its transpose. Both vanish when ``h = 0``, so the checks start
   from random states.
"""

import jax.numpy as jnp  # noqa: F401 (for your code)


def elman_cell(p, h, x_t):
    """One step: ``p`` holds weight_ih (H, I), weight_hh (H, H), bias_ih, bias_hh (H,);
    ``h`` is (N, H), ``x_t`` is (N, I). Returns ``(h', h')``, both (N, H).

    Hint: ``x_t @ p["weight_ih"].T`` is (N, H); ``jnp.tanh``.
    """
    h = jnp.tanh(
        x_t @ p["weight_ih"].T
        + p["bias_ih"][None, :]
        + h @ p["weight_hh"].T
        + p["bias_hh"][None, :]
    )
    return h, h


if __name__ == "__main__":
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here if (here / "check.py").exists() else here.parent))
    import check

    sys.exit(check.run_part(1, globals()))
