"""Part 7: the reverse direction.

A bidirectional layer also reads every sequence backwards, and PyTorch's packed
sequences start that pass at each row's *own* last valid element. Flipping the padded
array in time is wrong: a row of length 3 in a batch padded to 5 would start its reverse
pass on two padding steps.

Two correct ways, and you write both:

* ``reverse_padded(xs, lengths)``: reverse the valid part of each row, leaving the
  padding where it is (row of length 3: ``x2 x1 x0 pad pad``). Then a *forward* masked
  scan on it, and ``reverse_padded`` again on its outputs, is the reverse direction.
  This is how packing sees it. Hint: a gather, ``src[t, n] = lengths[n] - 1 - t`` where
  ``t < lengths[n]``, else ``t``; ``jnp.take_along_axis``.
* with the mask nothing needs flipping: ``jax.lax.scan(..., reverse=True)`` runs
  t = T-1 down to 0, the carry stays frozen at its initial value through the padded
  tail, and the first step that changes it is ``t = lengths[n] - 1``. The
  ``masked_scan`` below (part 6's, with a ``reverse`` argument) does this.

Task: write ``reverse_padded`` and ``bidirectional(cell, p_fwd, p_rev, carry, xs, lengths)
-> (ys, (carry_fwd, carry_rev))``, ys (T, N, 2H) with the forward half first, as torch.
Check: ``python exercises/part07_reverse.py``.

Questions
---------
1. In the reverse direction, which step's state is the final carry ``h_n``?

   Answer: the state after ``t = 0``, the reverse pass's last step; for a row of
   length > 0 its output ``ys[0, :, H:]`` equals it (length 0: ``h_n`` is the initial
   carry). In the forward direction ``h_n`` is the state after ``t = lengths[n] - 1``.

2. Why does jaxseq scan with ``reverse=True`` instead of calling ``reverse_padded``
   twice?

   Answer: the two gathers each read and write the whole (T, N, I) and (T, N, H)
   arrays, while the reversed scan only changes the order of the steps; both are exact.

3. Is ``reverse_padded`` its own inverse? Why does that matter here?

   Answer: yes: reversing the first ``lengths[n]`` elements twice restores them, and
   padding never moves. That is why the same function turns the outputs of the forward
   scan back into input time order.
"""

import jax  # noqa: F401 (for your code)
import jax.numpy as jnp  # noqa: F401 (for your code)


def masked_scan(cell, p, carry, xs, lengths, reverse=False):  # given: part 6, plus reverse
    def step(c, inputs):
        t, x_t = inputs
        valid = (t < lengths)[:, None]
        new_c, y = cell(p, c, jnp.where(valid, x_t, jnp.zeros_like(x_t)))
        new_c = jax.tree.map(lambda new, old: jnp.where(valid, new, old), new_c, c)
        return new_c, jnp.where(valid, y, jnp.zeros_like(y))

    steps = jnp.arange(xs.shape[0], dtype=lengths.dtype)
    return jax.lax.scan(step, carry, (steps, xs), reverse=reverse)


def reverse_padded(xs, lengths):
    """xs (T, N, ...) -> the same with each row's first ``lengths[n]`` steps reversed."""
    T = xs.shape[0]
    t = jnp.arange(T, dtype=lengths.dtype)[:, None]  # (T, 1)
    src = jnp.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)  # (T, N)
    src = src.reshape(src.shape + (1,) * (xs.ndim - 2))
    return jnp.take_along_axis(xs, src, axis=0)


def bidirectional(cell, p_fwd, p_rev, carry, xs, lengths):
    """Both directions of one layer from the same initial ``carry``.

    Returns ``(ys, (carry_fwd, carry_rev))`` with ys (T, N, 2 H_out): forward first.
    """
    c_f, y_f = masked_scan(cell, p_fwd, carry, xs, lengths)
    c_r, y_r = masked_scan(cell, p_rev, carry, xs, lengths, reverse=True)
    return jnp.concatenate([y_f, y_r], axis=-1), (c_f, c_r)


if __name__ == "__main__":
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here if (here / "check.py").exists() else here.parent))
    import check

    sys.exit(check.run_part(7, globals()))
