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

Questions
---------
1. The check calls ``jax.jit(train_step)`` once and then runs 100 steps. How often is
   it compiled, and would a batch with other lengths recompile it?

   Answer: once. ``lengths`` is data (a traced array), not a shape; only a new padded
   shape (T, N, I), a new dtype or a new parameter structure recompiles.

2. Where does ``torch.optim.Adam`` go in this picture?

   Answer: ``opt = optax.adam(lr)``, ``opt_state = opt.init(params)``; in the step,
   ``updates, opt_state = opt.update(grads, opt_state, params)`` and
   ``params = optax.apply_updates(params, updates)``. The optimizer's moments are the
   explicit ``opt_state``, a pytree shaped like ``params``, passed in and returned.

3. Why is the prediction taken from ``h_n`` and not from ``ys[-1]``?

   Answer: ``ys[-1]`` is the output at the last *padded* position: 0 for every row
   shorter than T. ``h_n`` (the frozen carry) is each row's state after its own last
   valid step.
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
    N, H = xs.shape[1], params["weight_hh"].shape[0]
    h_n, _ = masked_scan(elman_cell, params, jnp.zeros((N, H), xs.dtype), xs, lengths)
    return (h_n @ params["head.weight"].T + params["head.bias"][None, :])[:, 0]


def loss_fn(params, xs, y, lengths):
    """Mean squared error of ``predict`` against the targets y (N,)."""
    return jnp.mean((predict(params, xs, lengths) - y) ** 2)


def train_step(params, xs, y, lengths, lr):
    """One SGD step: returns ``(new_params, loss)``, the loss *before* the update."""
    loss, grads = jax.value_and_grad(loss_fn)(params, xs, y, lengths)
    return jax.tree.map(lambda p, g: p - lr * g, params, grads), loss


if __name__ == "__main__":
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here if (here / "check.py").exists() else here.parent))
    import check

    sys.exit(check.run_part(9, globals()))
