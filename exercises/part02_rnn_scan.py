"""Part 2: ``rnn_scan``, the loop over time as one ``jax.lax.scan``.

``jax.lax.scan(f, init, xs)`` means, in plain Python::

    carry, ys = init, []
    for x in xs:              # over the leading axis of xs
        carry, y = f(carry, x)
        ys.append(y)
    return carry, stack(ys)

but it is *one* primitive: ``jax.jit`` traces ``f`` once, whatever the length T, and
compiles a single XLA loop. A Python ``for`` loop under ``jit`` is unrolled into T
copies of the cell instead: compile time grows with T, and every new T recompiles.

Task: write ``rnn_scan(p, xs, h0) -> (h_T, ys)`` with ``jax.lax.scan`` and the cell below
(the solution of part 1). xs is (T, N, I), h0 (N, H); ys is (T, N, H).
Check: ``python exercises/part02_rnn_scan.py`` (it also looks at the traced program:
one ``scan`` primitive, the cell's ``tanh`` inside it, not unrolled).

Questions (answers in ``exercises/solutions/part02_rnn_scan.py``)
-----------------------------------------------------------------
1. ``scan`` needs ``f(carry, x)`` but the cell is ``cell(p, carry, x)``. How do the
   parameters get in, and are they traced as constants or as inputs?

2. What does ``jax.lax.scan(..., reverse=True)`` return at ``ys[0]``?

3. The carry must have the same shape and dtype at every step. What goes wrong with
   ``h0 = jnp.zeros((N, H))`` in float32 when ``x`` is float64?
"""

import jax  # noqa: F401 (for your code)
import jax.numpy as jnp  # noqa: F401 (for your code)


def elman_cell(p, h, x_t):  # given: the solution of part 1
    h = jnp.tanh(
        x_t @ p["weight_ih"].T
        + p["bias_ih"][None, :]
        + h @ p["weight_hh"].T
        + p["bias_hh"][None, :]
    )
    return h, h


def rnn_scan(p, xs, h0):
    """Run ``elman_cell`` over the leading axis of xs (T, N, I) from h0 (N, H).

    Returns ``(h_T, ys)``: the last state (N, H) and every step's output (T, N, H).
    Hint: one call of ``jax.lax.scan``, no Python loop.
    """
    raise NotImplementedError  # your code here


if __name__ == "__main__":
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here if (here / "check.py").exists() else here.parent))
    import check

    sys.exit(check.run_part(2, globals()))
