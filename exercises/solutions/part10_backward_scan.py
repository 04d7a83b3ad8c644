"""Part 10: the backward scan, a hand-written VJP for ``rnn_scan``.

``jax.grad`` differentiates a scan by itself. Writing the backward pass by hand shows what
it computes, and is how fast recurrent layers (jaxseq's fused path, cuDNN) are made.

**VJP and cotangent.** For a function ``y = f(x)``, the vector-Jacobian product maps a
*cotangent* ``ȳ`` (the gradient of the final loss with respect to the output, same shape
as ``y``) to ``x̄ = ȳ^T (df/dx)``, the gradient with respect to the input. Reverse-mode
autodiff is a chain of VJPs, from the loss back to the parameters.
``jax.custom_vjp`` lets you supply it: a forward function returning the output and
*residuals* (what the backward needs), and a backward function from residuals and output
cotangent to one cotangent per input.

For ``h_t = tanh(a_t)``, ``a_t = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh``, outputs
``(h_T, ys)`` with ``ys[t] = h_t`` and their cotangents ``(dh_T, dys)``::

    g_t  = dys[t] + dh        dh: what flows back from step t+1 (dh_T at t = T-1)
    da_t = g_t * (1 - h_t^2)  through tanh
    dh   = da_t W_hh          handed to step t-1; after t = 0 it is d/dh0
    dx_t = da_t W_ih

and, once the reverse scan is done, one matmul per weight over the flattened (T*N) axis::

    dW_ih = sum_t da_t^T x_t        dW_hh = sum_t da_t^T h_{t-1}     db_ih = db_hh = sum_t da_t

Task: write ``rnn_scan_fwd`` (output and residuals) and ``rnn_scan_bwd`` (a reverse
``jax.lax.scan`` carrying ``dh``, then the weight gradients); ``rnn_scan_vjp`` below is
wired to them. Check: ``python exercises/part10_backward_scan.py`` (against a NumPy
backpropagation through time, and ``jax.test_util.check_grads``).

Questions
---------
1. Which residuals are needed, and how much memory do they take?

   Answer: the states ``h_1 .. h_T`` (the outputs ys, (T, N, H)), ``h0``, the inputs and
   the weights. That is O(T N H), what autodiff of the scan stores as well; rematerialising
   (recomputing chunks of the forward in the backward) trades compute for that memory.

2. Why compute ``dW_hh`` after the reverse scan instead of accumulating it inside?

   Answer: inside, every step does a small (H, N) x (N, H) matmul and carries an (H, H)
   accumulator; after, it is one (H, T*N) x (T*N, H) matmul that hardware runs far
   better, and the loop carries only ``dh`` (N, H) and does one (N, H) x (H, H) product.

3. The backward step is linear in the carried ``dh``. What does jaxseq's fused path do
   with that?

   Answer: the coefficients (here ``1 - h_t^2``, for the LSTM the gates' derivative
   factors) depend only on forward values, so the forward scan saves them directly, with
   the mask folded in, and the backward scan does a few multiply-adds and one matmul
   per step.

4. Can you call ``jax.jvp`` (forward mode) on ``rnn_scan_vjp``?

   Answer: no: JAX refuses forward-mode differentiation of a ``custom_vjp`` function. A
   ``custom_jvp`` whose tangent map JAX can transpose supports both modes.
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


def rnn_scan(p, xs, h0):  # given: part 2
    return jax.lax.scan(lambda h, x_t: elman_cell(p, h, x_t), h0, xs)


def rnn_scan_fwd(p, xs, h0):
    """The forward pass: returns ``((h_T, ys), residuals)``, residuals any pytree."""
    h_T, ys = rnn_scan(p, xs, h0)
    return (h_T, ys), (p, xs, h0, ys)


def rnn_scan_bwd(residuals, cotangents):
    """From the residuals and the cotangents ``(dh_T, dys)`` to ``(dp, dxs, dh0)``, dp a
    dict with p's keys. Hint: ``jax.lax.scan(step, dh_T, (ys, dys), reverse=True)``
    with ``step(dh, (h_t, dy_t)) -> (dh_prev, da_t)``.
    """
    p, xs, h0, hs = residuals
    dh_T, dys = cotangents

    def step(dh, inputs):
        h_t, dy_t = inputs
        da = (dh + dy_t) * (1.0 - h_t**2)
        return da @ p["weight_hh"], da

    dh0, das = jax.lax.scan(step, dh_T, (hs, dys), reverse=True)
    T, N, H = das.shape
    h_prev = jnp.concatenate([h0[None], hs[:-1]], axis=0)  # (T, N, H): h_{t-1}
    da2 = das.reshape(T * N, H)
    db = da2.sum(axis=0)
    dp = {
        "weight_ih": da2.T @ xs.reshape(T * N, -1),
        "weight_hh": da2.T @ h_prev.reshape(T * N, H),
        "bias_ih": db,
        "bias_hh": db,
    }
    return dp, das @ p["weight_ih"], dh0


@jax.custom_vjp
def rnn_scan_vjp(p, xs, h0):
    """``rnn_scan`` with the hand-written backward pass (given)."""
    return rnn_scan(p, xs, h0)


def _fwd(p, xs, h0):  # looked up at call time, so the check sees your functions
    return rnn_scan_fwd(p, xs, h0)


def _bwd(residuals, cotangents):
    return rnn_scan_bwd(residuals, cotangents)


rnn_scan_vjp.defvjp(_fwd, _bwd)


if __name__ == "__main__":
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here if (here / "check.py").exists() else here.parent))
    import check

    sys.exit(check.run_part(10, globals()))
