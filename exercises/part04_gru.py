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

Questions (answers in ``exercises/solutions/part04_gru.py``)
------------------------------------------------------------
1. Can a checkpoint trained with one variant be loaded into the other?

2. Why do cuDNN and PyTorch prefer "reset after"?

3. ``h' = (1 - z) * n + z * h``: what happens when ``z`` is near 1? Some texts write
   ``h' = z * n + (1 - z) * h``; is that another model?
"""

import jax  # noqa: F401 (for your code)
import jax.numpy as jnp  # noqa: F401 (for your code)


def gru_cell(p, h, x_t, reset_after=True):
    """One step: ``h`` (N, H), ``x_t`` (N, I). Returns ``(h', h')``.

    Hint: split the (N, 3H) input projection and ``weight_hh`` / ``bias_hh`` into their
    r, z, n blocks (``jnp.split(p["weight_hh"], 3, axis=0)``).
    """
    raise NotImplementedError  # your code here


if __name__ == "__main__":
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here if (here / "check.py").exists() else here.parent))
    import check

    sys.exit(check.run_part(4, globals()))
