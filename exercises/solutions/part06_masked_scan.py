"""Part 6: ``masked_scan``: any cell over time, honouring lengths.

With the mask of part 5, every step runs for every row, and on a padded step
(``t >= lengths[n]``):

* the carry is **frozen**: ``carry = where(valid, new_carry, old_carry)``, so after the
  last step it still holds each row's state after its own last valid step (torch's
  ``h_n``);
* the output is exactly **0**, as ``pad_packed_sequence`` returns;
* no gradient flows through padding: ``where`` sends a zero cotangent to the branch it
  did not pick.

The carry may be a tuple (the LSTM's ``(h, c)``): ``jax.tree.map`` applies the
``where`` to each part.

**The double-where trap.** The check also puts NaN in the padding and takes gradients.
A ``where`` on the cell's *output* alone keeps the forward pass clean, but the backward
pass multiplies the zero cotangent by the cell's local derivatives at the NaN input, and
``0 * nan = nan``: every parameter gradient becomes NaN. Zero the padded *inputs* with a
``where`` before the cell too.

Task: write ``masked_scan(cell, p, carry, xs, lengths)`` (forward in time) with one
``jax.lax.scan``. Check: ``python exercises/part06_masked_scan.py`` (an LSTM from a
random carry, lengths 5, 2, 0, 3, and an Elman RNN's gradients with NaN padding).

Questions
---------
1. Row 3 has length 0. What are its outputs and its final carry, and what does
   PyTorch's ``pack_padded_sequence`` do with it?

   Answer: all outputs 0 and the final carry is the initial one (every step frozen).
   PyTorch refuses length 0 in a packed sequence; the mask has no such limit.

2. Why is ``jnp.where(valid, new, old)`` enough to stop the gradient at padded steps,
   without ``jax.lax.stop_gradient``?

   Answer: the derivative of ``where`` routes the incoming cotangent to the selected
   branch and zeros to the other. On a padded step the new carry is not selected, so
   the cell's computation there receives a zero cotangent, and the old carry passes
   straight through, as if the step did not exist.

3. With NaN in the padding but only the output ``where``, the forward values are fine
   and the gradients are NaN. Why is the input ``where`` the fix, and why is zero a safe
   replacement?

   Answer: the backward pass computes zero cotangent times the cell's partial
   derivatives; at a NaN input those are NaN, and ``0 * nan = nan`` in IEEE arithmetic.
   Zeroing the input first makes the partials finite, so the product is a true 0. Any
   finite value would do: the padded step's result is discarded anyway.
"""

import jax  # noqa: F401 (for your code)
import jax.numpy as jnp  # noqa: F401 (for your code)


def masked_scan(cell, p, carry, xs, lengths):
    """Run ``cell(p, carry, x_t) -> (carry, y_t)`` over xs (T, N, ...) from ``carry`` (a
    pytree of (N, ...) arrays), with (N,) integer ``lengths``.

    Returns ``(final_carry, ys)``, ys (T, N, H_out), 0 at padded steps.
    Hint: scan over ``(t, x_t)`` pairs, ``t = jnp.arange(T, dtype=lengths.dtype)``, and
    compare ``t < lengths`` inside the step.
    """

    def step(c, inputs):
        t, x_t = inputs
        valid = (t < lengths)[:, None]  # (N, 1)
        x_t = jnp.where(valid, x_t, jnp.zeros_like(x_t))  # the first where: no NaN inside
        new_c, y = cell(p, c, x_t)
        new_c = jax.tree.map(lambda new, old: jnp.where(valid, new, old), new_c, c)
        return new_c, jnp.where(valid, y, jnp.zeros_like(y))

    steps = jnp.arange(xs.shape[0], dtype=lengths.dtype)
    return jax.lax.scan(step, carry, (steps, xs))


if __name__ == "__main__":
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here if (here / "check.py").exists() else here.parent))
    import check

    sys.exit(check.run_part(6, globals()))
