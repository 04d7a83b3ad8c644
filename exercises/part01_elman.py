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

Questions (answers in ``exercises/solutions/part01_elman.py``)
--------------------------------------------------------------
1. Why does the cell return ``h'`` twice?

2. Only ``b_ih + b_hh`` ever matters for the output. Why keep two biases?

3. The check starts from a random ``h``, not zeros. Which wrong cells would pass from
   ``h = 0``?
"""

import jax.numpy as jnp  # noqa: F401 (for your code)


def elman_cell(p, h, x_t):
    """One step: ``p`` holds weight_ih (H, I), weight_hh (H, H), bias_ih, bias_hh (H,);
    ``h`` is (N, H), ``x_t`` is (N, I). Returns ``(h', h')``, both (N, H).

    Hint: ``x_t @ p["weight_ih"].T`` is (N, H); ``jnp.tanh``.
    """
    raise NotImplementedError  # your code here


if __name__ == "__main__":
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here if (here / "check.py").exists() else here.parent))
    import check

    sys.exit(check.run_part(1, globals()))
