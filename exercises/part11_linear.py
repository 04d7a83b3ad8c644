"""Part 11: ``combine``, and a linear recurrence in O(log T) parallel steps.

Every cell so far feeds ``h_{t-1}`` through a nonlinearity: step t waits for step t-1.
minGRU and minLSTM take the state out of the gates, leaving the linear recurrence
(elementwise)::

    h_t = a_t * h_{t-1} + b_t          a, b: (T, N, H), computed from x alone

A step is the affine map ``h -> a h + b``, written ``(a, b)``. Doing ``(a1, b1)`` and then
``(a2, b2)`` is again such a step; that is ``combine``. Composition of maps is associative,
which is all ``jax.lax.associative_scan(combine, (a, b))`` needs to compute every prefix
``(A_t, B_t)`` (steps 0..t composed) as a tree, in about 2 log2 T levels; then
``h_t = A_t * h0 + B_t``.

Task: write ``combine(first, second)`` ("first, then second") and
``linear_recurrence(a, b, h0)`` with ``jax.lax.associative_scan``, no sequential loop.
Check: ``python exercises/part11_linear.py`` (the check also looks for a ``scan`` or
``while`` in your traced program: there must be none).

Questions (answers in ``exercises/solutions/part11_linear.py``)
---------------------------------------------------------------
1. ``combine`` is associative but not commutative. Why is that enough?

2. How does masking by lengths fit in, with the reverse direction as well?

3. The tree does about twice the work of the sequential scan. When does it win?
"""

import jax  # noqa: F401 (for your code)


def combine(first, second):
    """Compose two steps, each a pair ``(a, b)`` of arrays: apply first, then second.

    Returns the pair of the composed step. Hint: expand ``a2 * (a1 * h + b1) + b2``.
    """
    raise NotImplementedError  # your code here


def linear_recurrence(a, b, h0):
    """All states ``h_t = a_t * h_{t-1} + b_t`` for t = 0 .. T-1 from h0 (N, H); a, b are
    (T, N, H). Returns (T, N, H)."""
    raise NotImplementedError  # your code here


if __name__ == "__main__":
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here if (here / "check.py").exists() else here.parent))
    import check

    sys.exit(check.run_part(11, globals()))
