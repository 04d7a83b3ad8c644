"""Long and large inputs: a sequence of one step (T=1) and a batch of 4,096 agree with
torch; training on data of many different lengths with length bucketing compiles the
train step once per bucket, not once per length, and gives the same parameters as
training on fully padded batches."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import jaxseq
from jaxseq import data
from jaxseq import models as jm
from jaxseq.interop import load_torch_state_dict, to_torch_state_dict
from jaxseq.train import make_train_step

I, H = 3, 4
CELLS = {
    "lstm": (jaxseq.nn.LSTM, torch.nn.LSTM),
    "gru": (jaxseq.nn.GRU, torch.nn.GRU),
    "rnn": (jaxseq.nn.RNN, torch.nn.RNN),
}
forward = nnx.jit(lambda m, x, lengths: m(x, lengths=lengths))


def pair(cell: str, **kw):
    """A torch module (float64) and a jaxseq module holding the same values."""
    jcls, tcls = CELLS[cell]
    torch.manual_seed(0)
    tmod = tcls(I, H, **kw, dtype=torch.float64)
    jmod = jcls(I, H, **kw, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    load_torch_state_dict(jmod, tmod.state_dict())
    return tmod, jmod


def torch_packed(tmod, x: np.ndarray, lengths: np.ndarray):
    """torch's answer with pack_padded_sequence (every length >= 1): out (T, N, D*H), h_n."""
    packed = pack_padded_sequence(
        torch.from_numpy(x), torch.from_numpy(lengths).long(), enforce_sorted=False
    )
    with torch.no_grad():
        out, h_n = tmod(packed)
    out, _ = pad_packed_sequence(out, total_length=x.shape[0])
    h_n = h_n[0] if isinstance(h_n, tuple) else h_n
    return out.numpy(), h_n.numpy()


def first_state(state):
    return state[0] if isinstance(state, tuple) else state


@pytest.mark.parametrize("cell", list(CELLS))
def test_a_single_step_matches_torch(cell):
    """T=1, bidirectional; a length-0 row gives zeros and the initial state."""
    tmod, jmod = pair(cell, bidirectional=True)
    x = np.random.default_rng(1).normal(size=(1, 3, I))  # (T=1, N, I)
    with torch.no_grad():
        t_out, t_state = tmod(torch.from_numpy(x))
    t_h = first_state(t_state).numpy()
    j_out, j_state = forward(jmod, jnp.asarray(x), jnp.array([1, 0, 1], jnp.int32))
    j_h = np.asarray(first_state(j_state))
    np.testing.assert_allclose(j_out[:, [0, 2]], t_out.numpy()[:, [0, 2]], rtol=0, atol=1e-12)
    np.testing.assert_allclose(j_h[:, [0, 2]], t_h[:, [0, 2]], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(j_out[:, 1], np.zeros_like(j_out[:, 1]))
    np.testing.assert_array_equal(j_h[:, 1], np.zeros_like(j_h[:, 1]))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_batch_of_4096_matches_torch_packed(cell):
    N, T = 4096, 6
    tmod, jmod = pair(cell, bidirectional=True)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(T, N, I))
    lengths = rng.integers(1, T + 1, size=N).astype(np.int32)
    x[np.arange(T).reshape(-1, 1) >= lengths.reshape(1, -1)] = 0.0  # torch packs, we mask
    t_out, t_h = torch_packed(tmod, x, lengths)
    j_out, j_state = forward(jmod, jnp.asarray(x), jnp.asarray(lengths))
    np.testing.assert_allclose(j_out, t_out, rtol=0, atol=1e-12)
    np.testing.assert_allclose(first_state(j_state), t_h, rtol=0, atol=1e-12)
    assert len(np.unique(lengths)) == T  # every length occurs, so the check covers them all


# ------------------------------------------------------------ bounded compilation, bucketing

MAX_LEN, BATCH = 40, 8


def dataset():
    """80 sequences whose lengths cover every value 1..MAX_LEN twice."""
    rng = np.random.default_rng(3)
    lengths = np.tile(np.arange(1, MAX_LEN + 1), 2)
    seqs = [rng.normal(size=(n, I)) for n in lengths]
    y = rng.integers(0, 3, size=len(seqs)).astype(np.int32)
    X, L = data.pad_sequences(seqs)
    return X, L, y


def test_compile_count_is_bounded_by_the_buckets():
    X, L, y = dataset()
    buckets = data.make_buckets(MAX_LEN, num=4)
    model = jm.SequenceClassifier(
        I, 3, hidden_size=H, cell="gru", param_dtype=jnp.float64, rngs=nnx.Rngs(0)
    )
    init = to_torch_state_dict(model)  # a copy, by torch name
    step = make_train_step(model, optax.sgd(0.1), sync_model=False)

    def run(buckets):
        load_torch_state_dict(step.model, init)
        step.reset()
        shapes, maxima = set(), set()
        for epoch in range(3):
            for xb, lb, yb in data.batches(
                X, L, y, BATCH, seed=epoch, buckets=buckets, drop_last=True
            ):
                shapes.add(xb.shape)
                maxima.add(int(lb.max()))
                step(xb, lb, yb)
        step.sync()
        return to_torch_state_dict(step.model), shapes, maxima

    bucketed, shapes, maxima = run(buckets)
    # Counted twice: by a Python side effect at trace time and by jit's own cache.
    assert step.compiles == len(shapes) <= len(buckets)
    assert step.step_fn._cache_size() == len(shapes)
    # Without buckets, padding each batch to its own longest sequence would have compiled
    # once per distinct maximum: many more.
    assert len(maxima) > 2 * len(buckets)

    # Bucketing changes shapes only, never values: the same training on batches padded to
    # MAX_LEN (a shape already compiled: the largest bucket) gives the same parameters.
    full, full_shapes, _ = run(None)
    assert full_shapes == {(BATCH, MAX_LEN, I)} and step.compiles == len(shapes)
    for k in full:
        np.testing.assert_allclose(bucketed[k], full[k], rtol=1e-10, atol=1e-12, err_msg=k)
    assert not np.allclose(full["head.weight"], init["head.weight"])  # it did train
