"""Part 9: a training step.

The task: read a variable-length sequence of numbers and predict its sum. The model is
a masked Elman RNN (1 -> H) from ``h0 = 0`` and a linear head on each row's final
state ``h_n``: ``pred = h_n W_head^T + b_head``, one number per row. The loss is the
mean squared error over the batch.

In PyTorch a step mutates: ``loss.backward()`` fills ``.grad``, ``opt.step()`` updates the
parameters in place. In JAX the step is a pure function from (parameters, batch) to
(new parameters, loss), and ``jax.jit`` compiles all of it, forward, backward and update,
once. Parameters are one dict: the cell's torch names plus ``head.weight`` (1, H) and
``head.bias`` (1,).

Task: write ``predict``, ``loss_fn`` and ``train_step`` (plain SGD,
``p - lr * dL/dp`` for every parameter; ``jax.value_and_grad``, ``jax.tree.map``).
Check: ``python exercises/part09_train.py``: the loss and one update against a NumPy
backpropagation through time, then 100 jitted steps.

Questions (answers in ``exercises/solutions/part09_train.py``)
--------------------------------------------------------------
1. The check calls ``jax.jit(train_step)`` once and then runs 100 steps. How often is
   it compiled, and would a batch with other lengths recompile it?

2. Where does ``torch.optim.Adam`` go in this picture?

3. Why is the prediction taken from ``h_n`` and not from ``ys[-1]``?
"""

import jax  # noqa: F401 (for your code)
import jax.numpy as jnp  # noqa: F401 (for your code)


def elman_cell(p, h, x_t):  # given: part 1
    h = jnp.tanh(
        x_t @ p["weight_ih"].T
        + p["bias_ih"][None, :]
        + h @ p["weight_hh"].T
        + p["bias_hh"][None, :]
    )
    return h, h


def masked_scan(cell, p, carry, xs, lengths):  # given: part 6
    def step(c, inputs):
        t, x_t = inputs
        valid = (t < lengths)[:, None]
        new_c, y = cell(p, c, jnp.where(valid, x_t, jnp.zeros_like(x_t)))
        new_c = jax.tree.map(lambda new, old: jnp.where(valid, new, old), new_c, c)
        return new_c, jnp.where(valid, y, jnp.zeros_like(y))

    steps = jnp.arange(xs.shape[0], dtype=lengths.dtype)
    return jax.lax.scan(step, carry, (steps, xs))


def predict(params, xs, lengths):
    """xs (T, N, 1), lengths (N,) -> predictions (N,) from each row's h_n, h0 = 0."""
    raise NotImplementedError  # your code here


def loss_fn(params, xs, y, lengths):
    """Mean squared error of ``predict`` against the targets y (N,)."""
    raise NotImplementedError  # your code here


def train_step(params, xs, y, lengths, lr):
    """One SGD step: returns ``(new_params, loss)``, the loss *before* the update."""
    raise NotImplementedError  # your code here


if __name__ == "__main__":
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here if (here / "check.py").exists() else here.parent))
    import check

    sys.exit(check.run_part(9, globals()))
