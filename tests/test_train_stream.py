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


def test_loss_contract_is_checked_on_the_first_call():
    x, y = stream_batches(_ids(), ROWS, T)[0]

    def loss_only(model, x, y, *, state=None):
        return language_model_stream_loss(model, x, y, state=state)[0]

    step = TrainStep(_model(), optax.sgd(0.1), loss_only, carry_state=True)
    with pytest.raises(TypeError, match=r"must return the pair `\(loss, new_state\)`, got an "
                       r"array of shape \(\); expected `def loss_only\(model, \*batch, "
                       r"state=None\)"):  # fmt: skip
        step(x, y)

    def no_state(model, x, y):
        return language_model_stream_loss(model, x, y)

    with pytest.raises(TypeError, match="takes no 'state' keyword; expected `def no_state"):
        TrainStep(_model(), optax.sgd(0.1), no_state, carry_state=True)
    plain = TrainStep(_model(), optax.sgd(0.1), language_model_stream_loss)
    with pytest.raises(TypeError, match="returned a tuple of 2.*needs `carry_state=True`"):
        plain(x, y)


@pytest.mark.parametrize("value", ["False", 1, None, 0.0])
def test_carry_state_must_be_a_bool(value):
    with pytest.raises(TypeError, match="carry_state must be a bool"):
        TrainStep(_model(), optax.sgd(0.1), language_model_stream_loss, carry_state=value)


def test_another_batch_size_asks_for_reset_state():
    ids = _ids()
    step = TrainStep(_model(), optax.sgd(0.1), language_model_stream_loss, carry_state=True)
    step(*stream_batches(ids, 2, T)[0])
    x, y = stream_batches(ids, 4, T)[0]
    with pytest.raises(ValueError, match=r"the state is per row.*call `step.reset_state\(\)`"):
        step(x, y)
    step.reset_state()
    step(x, y)  # a fresh state for the new stream
    assert [a.shape for a in step.state] == [(1, 4, 6), (1, 4, 6)]
    step(*stream_batches(ids, 4, 2 * T)[0])  # longer chunks: the same state shapes
    assert step.compiles == 3


def test_checkpoint_holds_the_carried_state(tmp_path):
    """save / restore: the carried state comes back exactly (a tuple for the LSTM), and a
    restored step continues the stream as the saved one does; None is saved as None."""
    from jaxseq import train_state
    from seqfile import training_state as ts

    chunks = stream_batches(_ids(), ROWS, T)
    step = TrainStep(_model(), optax.adam(1e-2), language_model_stream_loss, carry_state=True)
    train_state.save(step, tmp_path, step_count=0)  # no state yet
    for x, y in chunks[:2]:
        step(x, y)
    train_state.save(step, tmp_path, step_count=2)
    saved = ts.read(tmp_path / ts.checkpoint_name(2))
    assert saved.meta["extra"]["carry"] == {
        "tuple": [{"leaf": "jax/carry/state[0]"}, {"leaf": "jax/carry/state[1]"}]
    }
    assert "carry" not in ts.read(tmp_path / ts.checkpoint_name(0)).meta["extra"]
    state = [np.asarray(a).copy() for a in step.state]
    expected = [float(step(x, y)) for x, y in chunks[2:]]

    twin = TrainStep(_model(1), optax.adam(1e-2), language_model_stream_loss, carry_state=True)
    assert train_state.restore(twin, tmp_path).step == 2
    assert isinstance(twin.state, tuple)
    assert [a.tobytes() for a in state] == [np.asarray(a).tobytes() for a in twin.state]
    assert [float(twin(x, y)) for x, y in chunks[2:]] == expected
    # A step without a carried state reads the same file and ignores the state.
    plain = TrainStep(_model(1), optax.adam(1e-2))
    train_state.restore(plain, tmp_path)
    assert plain.state is None
