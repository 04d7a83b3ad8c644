"""jaxseq.train and torchseq.train on their own: torch-exact clipping, cross-entropy, no
recompilation when lengths change, bounded compiles with buckets, the loops and
evaluation."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

import jaxseq.data
import jaxseq.interop
import torchseq.data
import torchseq.train
from jaxseq import models as jm
from jaxseq import train as jt
from torchseq import models as tm

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_by_global_norm_torch_matches_clip_grad_norm_(max_norm):
    grads = {"a": RNG.normal(size=(4, 3)), "b": RNG.normal(size=(5,)), "c": RNG.normal(size=())}
    params = [torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.float64)) for g in grads.values()]
    for p, g in zip(params, grads.values(), strict=True):
        p.grad = torch.from_numpy(np.array(g))
    total = torch.nn.utils.clip_grad_norm_(params, max_norm)
    ref = {k: p.grad.numpy() for k, p in zip(grads, params, strict=True)}
    jgrads = {k: jnp.asarray(v) for k, v in grads.items()}
    ours, _ = jt.clip_by_global_norm_torch(max_norm).update(jgrads, None)
    theirs, _ = optax.clip_by_global_norm(max_norm).update(jgrads, optax.EmptyState())
    for k in grads:
        np.testing.assert_allclose(np.asarray(ours[k]), ref[k], rtol=1e-15, atol=0)
    if float(total) > max_norm:  # clipping active: optax's rule is off by the 1e-6
        gap = max(float(jnp.max(jnp.abs(theirs[k] - ref[k]))) for k in grads)
        assert gap > 1e-9
    else:
        for k in grads:
            np.testing.assert_array_equal(np.asarray(ours[k]), grads[k])


def test_cross_entropy_matches_torch():
    logits, labels = RNG.normal(size=(6, 4)), RNG.integers(0, 4, size=6)
    ref = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels))
    np.testing.assert_allclose(
        float(jt.cross_entropy(jnp.asarray(logits), jnp.asarray(labels))), float(ref), rtol=1e-15
    )


def make_data(n=12, T=8, I=2):
    lengths = RNG.integers(1, T + 1, size=n).astype(np.int32)
    X = RNG.normal(size=(n, T, I)) * jaxseq.data.lengths_to_mask(lengths, T)[:, :, None]
    y = (X[:, :, 0].sum(1) > 0).astype(np.int64)
    return X, lengths, y


def test_step_compiles_once_per_shape_not_per_lengths():
    X, lengths, y = make_data()
    model = jm.SequenceClassifier(
        2, 2, hidden_size=3, cell="gru", param_dtype=np.float64, rngs=nnx.Rngs(0)
    )
    step = jt.make_train_step(model, optax.sgd(0.1))
    before = jaxseq.interop.to_torch_state_dict(model)
    step(X[:4], lengths[:4], y[:4])
    step(X[4:8], lengths[4:8], y[4:8])  # same shapes, other lengths: no retrace
    assert step.compiles == 1
    after = jaxseq.interop.to_torch_state_dict(model)  # written back into the model
    assert max(np.max(np.abs(after[k] - before[k])) for k in before) > 1e-4
    # Buckets bound the number of compilations: one per bucket size that occurs.
    buckets = (4, 8)
    seen = set()
    for xb, lb, yb in jaxseq.data.batches(
        X, lengths, y, 4, seed=1, buckets=buckets, drop_last=True
    ):
        seen.add(xb.shape[1])
        step(xb, lb, yb)
    assert step.compiles == 1 + len(seen - {8})


def test_fit_and_evaluate_jax_against_numpy():
    X, lengths, y = make_data()
    model = jm.SequenceClassifier(
        2, 2, hidden_size=3, cell="rnn", param_dtype=np.float64, rngs=nnx.Rngs(0)
    )
    data = list(jaxseq.data.batches(X, lengths, y, 4, seed=0))
    calls = []
    losses = jt.fit(
        model,
        data,
        optax.adam(5e-2),
        epochs=5,
        clip_norm=1.0,
        callback=lambda e, s, loss: calls.append((e, s)),
    )
    assert len(losses) == 15 and calls[-1] == (4, 15)
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    result = jt.evaluate(model, data)
    model.eval()
    logits = np.asarray(model(X, lengths))
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    np.testing.assert_allclose(result["loss"], -logp[np.arange(12), y].mean(), rtol=1e-12)
    assert result["accuracy"] == np.mean(logits.argmax(1) == y)


def test_fit_and_evaluate_torch_against_numpy():
    X, lengths, y = make_data()
    torch.manual_seed(0)
    model = tm.SequenceClassifier(2, 2, hidden_size=3, cell="lstm").double()
    data = list(torchseq.data.batches(X, lengths, y, 4, shuffle=False))
    losses = torchseq.train.fit(
        model,
        lambda epoch: data,
        torch.optim.Adam(model.parameters(), lr=5e-2),
        epochs=5,
        clip_norm=1.0,
    )
    assert len(losses) == 15 and np.mean(losses[-3:]) < np.mean(losses[:3])
    result = torchseq.train.evaluate(model, data)
    assert model.training  # restored
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(X), torch.from_numpy(lengths.astype(np.int64))).numpy()
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    np.testing.assert_allclose(result["loss"], -logp[np.arange(12), y].mean(), rtol=1e-12)
    assert result["accuracy"] == np.mean(logits.argmax(1) == y)
