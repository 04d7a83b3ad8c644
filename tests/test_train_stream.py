"""Truncated backpropagation through time: ``TrainStep(..., carry_state=True)``.

With a zero learning rate the chunk losses of a stream, the state carried from chunk to
chunk, must add up to the loss of one forward pass over each whole row; with a real
learning rate the step must equal a hand-written loop (gradient of each chunk's loss with
the previous chunk's final state as a constant, then the optimizer update)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxseq.data import stream_batches
from jaxseq.models import CharLM
from jaxseq.train import TrainStep, language_model_stream_loss

V, ROWS, T = 7, 3, 4


def _model(seed=0):
    return CharLM(
        V, embed_dim=5, hidden_size=6, cell="lstm", param_dtype=jnp.float64, rngs=nnx.Rngs(seed)
    )


def _ids():
    return np.random.default_rng(0).integers(0, V, size=3 * 4 * 5 + 3)


def test_carried_state_reads_each_row_as_one_text():
    model = _model()
    chunks = stream_batches(_ids(), ROWS, T)
    step = TrainStep(model, optax.sgd(0.0), language_model_stream_loss, carry_state=True)
    total = sum(float(step(x, y)) for x, y in chunks) * ROWS * T
    x_all = np.concatenate([x for x, _ in chunks], axis=1)
    y_all = np.concatenate([y for _, y in chunks], axis=1)
    logits, _ = model(x_all)
    whole = optax.softmax_cross_entropy_with_integer_labels(logits, y_all).sum()
    np.testing.assert_allclose(total, float(whole), rtol=1e-12)
    assert step.compiles == 2  # state None, then the carried state
    step.reset_state()
    assert step.state is None


def test_step_equals_a_hand_written_loop():
    chunks = stream_batches(_ids(), ROWS, T)
    tx = optax.adam(1e-2)
    step = TrainStep(_model(), tx, language_model_stream_loss, carry_state=True)
    losses = [float(step(x, y)) for x, y in chunks]

    model = _model()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    opt_state, state, ref = tx.init(params), None, []

    def loss_of(p, x, y, state):
        return language_model_stream_loss(nnx.merge(graphdef, p, rest), x, y, state=state)

    for x, y in chunks:
        (loss, new_state), grads = jax.value_and_grad(loss_of, has_aux=True)(params, x, y, state)
        with jax.numpy_dtype_promotion("standard"):  # optax's int32 step count
            updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        state = jax.tree.map(jax.lax.stop_gradient, new_state)
        ref.append(float(loss))
    np.testing.assert_allclose(losses, ref, rtol=1e-10)
    for a, b in zip(
        jax.tree.leaves(nnx.state(step.model, nnx.Param)), jax.tree.leaves(params), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_stream_batches_checks():
    with pytest.raises(ValueError, match="fewer than seq_len"):
        stream_batches(np.arange(10), 3, 4)
    with pytest.raises(ValueError, match=">= 1"):
        stream_batches(np.arange(10), 0, 4)
    x, y = stream_batches(np.arange(25), 3, 4)[1]
    assert x.tolist() == [[4, 5, 6, 7], [12, 13, 14, 15], [20, 21, 22, 23]]
    assert (y == x + 1).all()
