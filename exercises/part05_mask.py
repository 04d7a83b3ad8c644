"""Part 5: the length mask.

A batch of sequences of different lengths is padded to a common length T. PyTorch then
packs it (``pack_padded_sequence``) so that the RNN skips the padded steps. JAX needs
static shapes, so instead every step runs for every row, and a mask decides what is
kept::

    mask[t, n] = t < lengths[n]          (T, N) bool, True at valid steps

Task: write ``length_mask(lengths, T)`` without a Python loop over the rows: the
check also calls it under ``jax.jit`` with ``lengths`` traced (only T is static).
Check: ``python exercises/part05_mask.py``.

Questions (answers in ``exercises/solutions/part05_mask.py``)
-------------------------------------------------------------
1. Why must ``T`` be static under ``jit`` but ``lengths`` need not be?

2. What does this mask cost compared with packing?

3. Build the mask with ``jnp.arange(T)`` and lengths of dtype int32 while float64 (x64)
   is on. What dtype is ``arange``, and why does jaxseq pass ``dtype=lengths.dtype``?
"""

import jax.numpy as jnp  # noqa: F401 (for your code)


def length_mask(lengths, T):
    """(N,) integer lengths, a Python int T -> (T, N) bool, True where ``t < lengths[n]``.

    Hint: compare a (T, 1) column of time indices with a (1, N) row of lengths.
    """
    raise NotImplementedError  # your code here


if __name__ == "__main__":
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here if (here / "check.py").exists() else here.parent))
    import check

    sys.exit(check.run_part(5, globals()))
