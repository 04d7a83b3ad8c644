"""The layers' regulariser options (``jaxseq.regularizers``): where masks are constant
over time, evaluation mode, zoneout's expectation, errors, and training with them.

The values and every gradient against the torch twin given the same masks are in
``parity_tests/test_regularizers_parity.py``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxseq
from jaxseq.params import RNNSpec
from jaxseq.regularizers import draw_masks
from jaxseq.train import TrainStep

X = jnp.asarray(np.random.default_rng(0).standard_normal((3, 6, 2)))  # (N, T, I)


def _lstm(num_layers=2, **options):
    return jaxseq.nn.LSTM(
        2, 4, num_layers=num_layers, batch_first=True, param_dtype=jnp.float64,
        rngs=nnx.Rngs(0, dropout=1), **options,
    )  # fmt: skip


def test_output_dropout_drops_the_same_units_at_every_step():
    out, _ = _lstm(1, output_dropout=0.5)(X)  # one layer: its output is the stack's
    zeros = np.asarray(out == 0)  # (N, T, H)
    assert zeros.any() and not zeros.all()
    assert (zeros == zeros[:, :1]).all()  # one mask per sequence: constant over time
    kept = np.asarray(out)[~zeros]
    plain, _ = _lstm(1)(X)
    ratio = kept / np.asarray(plain)[~zeros]  # kept units scaled by 1 / (1 - p)
    np.testing.assert_allclose(ratio, 2.0, rtol=1e-12)


def test_new_masks_every_call_and_eval_is_the_plain_layer():
    m = _lstm(input_dropout=0.2, output_dropout=0.3, recurrent_dropout=0.25, weight_dropout=0.5)
    a, b = m(X)[0], m(X)[0]
    assert not np.allclose(a, b)
    m.eval()
    for u, v in zip(jax.tree.leaves(m(X)), jax.tree.leaves(_lstm()(X)), strict=True):
        np.testing.assert_array_equal(u, v)


def test_zoneout_in_eval_is_its_expectation():
    m = _lstm(zoneout=0.3)
    m.eval()
    spec = RNNSpec("lstm", 2, 4, num_layers=2)
    masks = draw_masks(None, spec, 6, 3, train=False, dtype=jnp.float64, zoneout=0.3)
    ref = jaxseq.lstm(m.params_dict(), X, batch_first=True, masks=masks)
    for u, v in zip(jax.tree.leaves(m(X)), jax.tree.leaves(ref), strict=True):
        np.testing.assert_array_equal(u, v)
    # The expectation by hand on one step of one layer: p * h0 + (1 - p) * h1.
    one = jaxseq.nn.LSTM(2, 4, zoneout=0.3, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    one.eval()
    h0 = (jnp.ones((1, 3, 4)), jnp.full((1, 3, 4), 0.5))
    _, (h, c) = one(X[:, :1].swapaxes(0, 1), h0)
    plain = jaxseq.nn.LSTM(2, 4, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    _, (h1, c1) = plain(X[:, :1].swapaxes(0, 1), h0)
    np.testing.assert_allclose(h, 0.3 * h0[0] + 0.7 * h1, rtol=1e-14)
    np.testing.assert_allclose(c, 0.3 * h0[1] + 0.7 * c1, rtol=1e-14)


def test_bad_options_fail_clearly():
    with pytest.raises(ValueError, match=r"input_dropout must be in \[0, 1\)"):
        _lstm(input_dropout=1.0)
    with pytest.raises(TypeError, match="zoneout must be a number"):
        _lstm(zoneout="0.1")
    with pytest.raises(ValueError, match="no recurrent weight"):
        jaxseq.nn.MinLSTM(2, 4, weight_dropout=0.1, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="fused implementations"):
        jaxseq.nn.GRU(2, 4, recurrent_dropout=0.1, impl="reference", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="fused implementations"):
        jaxseq.nn.LayerNormLSTM(2, 4, zoneout=0.1, impl="unfused", rngs=nnx.Rngs(0))
    p = jaxseq.init_gru(jax.random.key(0), 2, 4, dtype=jnp.float64)
    with pytest.raises(ValueError, match="unknown mask 'hidden'"):
        jaxseq.gru(p, X, batch_first=True, masks={"hidden": jnp.ones((1, 3, 4))})
    with pytest.raises(ValueError, match=r"must have shape \(1, 3, 4\)"):
        jaxseq.gru(p, X, batch_first=True, masks={"hidden_l0": jnp.ones((1, 4))})
    # Input and output masks work on every implementation; the in-loop ones need fused.
    jaxseq.gru(p, X, batch_first=True, impl="reference", masks={"input": jnp.ones((3, 2))})
    with pytest.raises(ValueError, match="act inside the recurrence"):
        jaxseq.gru(p, X, batch_first=True, impl="unfused", masks={"hidden_l0": jnp.ones((1, 3, 4))})


def test_train_step_with_every_regulariser():
    from jaxseq.models import SequenceClassifier

    model = SequenceClassifier(2, 3, hidden_size=8, rngs=nnx.Rngs(0))
    # The classifier's recurrent layer, swapped for a regularised one of the same shape.
    model.rnn = jaxseq.nn.LSTM(
        2, 8, batch_first=True, input_dropout=0.1, output_dropout=0.1, recurrent_dropout=0.1,
        weight_dropout=0.2, zoneout=0.1, rngs=nnx.Rngs(0, dropout=2),
    )  # fmt: skip
    step = TrainStep(model, optax.adam(3e-2))
    x = np.asarray(X, np.float32)
    lengths, y = np.array([6, 3, 5]), np.array([0, 1, 2])
    losses = [float(step(x, lengths, y)) for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0]
    assert step.compiles == 1
