"""Part 4: the GRU cell, in both reset variants.

Gates are stacked **r, z, n** (reset, update, new) in ``weight_ih`` (3H, I),
``weight_hh`` (3H, H) and the biases (3H,). PyTorch's ``nn.GRUCell`` applies the reset
gate *after* the hidden matmul and its bias::

    r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))      reset after  (torch, cuDNN)
    n  = tanh(W_in x + b_in + W_hn (r * h) + b_hn)      reset before (the 2014 paper, Haiku)
    h' = (1 - z) * n + z * h

Task: write ``gru_cell(p, h, x_t, reset_after=True) -> (h', h')`` for both variants.
Check: ``python exercises/part04_gru.py`` (both variants, from a random ``h``).

Questions
---------
1. Can a checkpoint trained with one variant be loaded into the other?

   Answer: the shapes are the same, so it loads without an error, and computes a
   different function: ``r * (W h + b)`` and ``W (r h) + b`` differ whenever ``r`` is
   not all ones. That is why the check runs both and why ports go wrong silently.

2. Why do cuDNN and PyTorch prefer "reset after"?

   Answer: ``W_hn h`` no longer depends on ``r``, so all three hidden matmuls are one
   (N, H) x (H, 3H) product per step, like the input's; "reset before" needs ``r``
   first, which makes a second, dependent matmul per step.

3. ``h' = (1 - z) * n + z * h``: what happens when ``z`` is near 1? Some texts write
   ``h' = z * n + (1 - z) * h``; is that another model?

   Answer: with ``z`` near 1 the old state is copied through, ``h' ~ h``: an additive
   path for the state and its gradient, like the LSTM's ``c``. The other convention is
   the same model with ``z`` replaced by ``1 - z``, i.e. the z block's weights and
   biases negated (``sigmoid(-v) = 1 - sigmoid(v)``); a checkpoint needs that
   conversion, a fresh model does not care.
"""

import jax  # noqa: F401 (for your code)
import jax.numpy as jnp  # noqa: F401 (for your code)


def gru_cell(p, h, x_t, reset_after=True):
    """One step: ``h`` (N, H), ``x_t`` (N, I). Returns ``(h', h')``.

    Hint: split the (N, 3H) input projection and ``weight_hh`` / ``bias_hh`` into their
    r, z, n blocks (``jnp.split(p["weight_hh"], 3, axis=0)``).
    """
    gx = x_t @ p["weight_ih"].T + p["bias_ih"][None, :]
    x_r, x_z, x_n = jnp.split(gx, 3, axis=-1)
    w_r, w_z, w_n = jnp.split(p["weight_hh"], 3, axis=0)
    b_r, b_z, b_n = jnp.split(p["bias_hh"][None, :], 3, axis=-1)
    r = jax.nn.sigmoid(x_r + h @ w_r.T + b_r)
    z = jax.nn.sigmoid(x_z + h @ w_z.T + b_z)
    if reset_after:
        n = jnp.tanh(x_n + r * (h @ w_n.T + b_n))
    else:
        n = jnp.tanh(x_n + (r * h) @ w_n.T + b_n)
    h = (1.0 - z) * n + z * h
    return h, h


if __name__ == "__main__":
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here if (here / "check.py").exists() else here.parent))
    import check

    sys.exit(check.run_part(4, globals()))
