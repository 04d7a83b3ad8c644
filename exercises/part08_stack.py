"""Part 8: a 2-layer bidirectional LSTM stack, as ``torch.nn.LSTM``.

``nn.LSTM(num_layers=L, bidirectional=True)`` is a loop over layers. In each layer both
directions read the same input; the next layer reads their outputs concatenated
(forward first), (T, N, 2H). Parameters are named as in a torch ``state_dict``:
``weight_ih_l0``, ``weight_ih_l0_reverse``, ..., ``bias_hh_l1_reverse``; layer 1's
``weight_ih`` is (4H, 2H). The initial and final states are stacked (L*D, N, H) in the
order l0-forward, l0-reverse, l1-forward, l1-reverse.

Task: write ``lstm_stack(params, xs, lengths, hx, num_layers, bidirectional)`` with the
cell and the masked scan below (parts 3 and 7). ``hx = (h0, c0)``, each (L*D, N, H).
Returns ``(out, (h_n, c_n))``. Check: ``python exercises/part08_stack.py``
(random weights, random initial states, lengths 5, 2, 4).

Questions (answers in ``exercises/solutions/part08_stack.py``)
--------------------------------------------------------------
1. Why does every layer but the first have ``weight_ih`` of shape (4H, 2H)?

2. In torch, where does ``dropout=p`` act in this stack, and what does JAX need for it?

3. ``h_n[-1]`` is often used as "the last state". For a bidirectional stack, what is it?
"""

import jax  # noqa: F401 (for your code)
import jax.numpy as jnp  # noqa: F401 (for your code)


def lstm_cell(p, carry, x_t):  # given: part 3
    h, c = carry
    gates = (
        x_t @ p["weight_ih"].T
        + p["bias_ih"][None, :]
        + h @ p["weight_hh"].T
        + p["bias_hh"][None, :]
    )
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return (h, c), h


def masked_scan(cell, p, carry, xs, lengths, reverse=False):  # given: part 7
    def step(c, inputs):
        t, x_t = inputs
        valid = (t < lengths)[:, None]
        new_c, y = cell(p, c, jnp.where(valid, x_t, jnp.zeros_like(x_t)))
        new_c = jax.tree.map(lambda new, old: jnp.where(valid, new, old), new_c, c)
        return new_c, jnp.where(valid, y, jnp.zeros_like(y))

    steps = jnp.arange(xs.shape[0], dtype=lengths.dtype)
    return jax.lax.scan(step, carry, (steps, xs), reverse=reverse)


def lstm_stack(params, xs, lengths, hx, num_layers, bidirectional):
    """A torch-named LSTM stack over xs (T, N, I) with (N,) lengths.

    Returns ``(out, (h_n, c_n))``: out (T, N, D*H) of the last layer, h_n and c_n
    (L*D, N, H). Hint: for layer l and direction d, the parameters are the keys ending
    in ``f"_l{l}"`` / ``f"_l{l}_reverse"``, and the states are ``hx[k][l * D + d]``.
    """
    raise NotImplementedError  # your code here


if __name__ == "__main__":
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here if (here / "check.py").exists() else here.parent))
    import check

    sys.exit(check.run_part(8, globals()))
