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

Questions
---------
1. ``combine`` is associative but not commutative. Why is that enough?

   Answer: ``associative_scan`` never changes the order of the steps, only how they are
   grouped: it combines neighbours, then neighbouring groups. Associativity makes every
   grouping give the same prefixes; commutativity would be needed to reorder them.

2. How does masking by lengths fit in, with the reverse direction as well?

   Answer: a padded step becomes the identity ``(a, b) = (1, 0)``: the state passes
   through unchanged (frozen). The reverse direction is the same recurrence on the
   time-flipped sequence: its padded tail comes first and keeps ``h0``. This is what
   ``jaxseq.min_gru`` does.

3. The tree does about twice the work of the sequential scan. When does it win?

   Answer: where a sequential step is expensive next to its arithmetic, such as a GPU,
   where each scan step costs at least a kernel launch, while the tree's levels run in
   parallel. On a small CPU the sequential scan, which reads the arrays once, is
   usually faster (``docs/mingru.md`` has measurements).
"""

import jax  # noqa: F401 (for your code)


def combine(first, second):
    """Compose two steps, each a pair ``(a, b)`` of arrays: apply first, then second.

    Returns the pair of the composed step. Hint: expand ``a2 * (a1 * h + b1) + b2``.
    """
    a1, b1 = first
    a2, b2 = second
    return a2 * a1, a2 * b1 + b2


def linear_recurrence(a, b, h0):
    """All states ``h_t = a_t * h_{t-1} + b_t`` for t = 0 .. T-1 from h0 (N, H); a, b are
    (T, N, H). Returns (T, N, H)."""
    A, B = jax.lax.associative_scan(combine, (a, b))
    return A * h0[None] + B


if __name__ == "__main__":
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here if (here / "check.py").exists() else here.parent))
    import check

    sys.exit(check.run_part(11, globals()))
