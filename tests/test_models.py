"""The model zoo of each framework on its own: padding invariance against per-sequence
runs, a NumPy reference for the feedforward baseline and the heads, carried CharLM state,
dropout modes and argument errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flax import nnx

import jaxseq.interop
from jaxseq import models as jm
from torchseq import models as tm

RNG = np.random.default_rng(0)
N, T, I = 3, 6, 3
X = RNG.normal(size=(N, T, I))
LENGTHS = np.array([6, 2, 4])
TOKENS = RNG.integers(0, 7, size=(N, T))

forward = nnx.jit(lambda m, *args: m(*args))


def jax_model(cls, **kw):
    model = getattr(jm, cls)(**kw, param_dtype=np.float64, rngs=nnx.Rngs(0))
    model.eval()
    return model


def torch_model(cls, **kw):
    torch.manual_seed(0)
    return getattr(tm, cls)(**kw).double().eval()


def run(framework, model, *args):
    if framework == "jax":
        out = forward(model, *args)
        return jaxseq_np(out)
    with torch.no_grad():
        out = model(*(torch.from_numpy(np.asarray(a)) if a is not None else None for a in args))
    return out.numpy() if isinstance(out, torch.Tensor) else out


def jaxseq_np(out):
    return np.asarray(out) if not isinstance(out, tuple) else out


def build(framework, cls, **kw):
    return jax_model(cls, **kw) if framework == "jax" else torch_model(cls, **kw)


CLASSIFIERS = {
    "lstm-bi-proj": dict(
        input_size=I, num_classes=4, hidden_size=5, cell="lstm", bidirectional=True, proj_size=2
    ),
    "gru-2layers-tokens": dict(
        input_size=I, num_classes=4, hidden_size=5, cell="gru", num_layers=2, vocab_size=7
    ),
    "rnn-relu": dict(input_size=I, num_classes=4, hidden_size=5, cell="rnn", nonlinearity="relu"),
}


@pytest.mark.parametrize("framework", ["jax", "torch"])
@pytest.mark.parametrize("case", list(CLASSIFIERS))
def test_classifier_reads_each_sequence_to_its_length(framework, case):
    """Logits of a padded batch equal logits of each sequence run alone at its own length,
    and do not depend on the padding values."""
    kw = CLASSIFIERS[case]
    model = build(framework, "SequenceClassifier", **kw)
    x = TOKENS if "vocab_size" in kw else X
    batch = run(framework, model, x, LENGTHS)
    junk = x.copy()
    for n, L in enumerate(LENGTHS):
        junk[n, L:] = 1 if junk.dtype.kind == "i" else 1e3
        alone = run(framework, model, x[n : n + 1, :L], np.array([L]))
        np.testing.assert_allclose(batch[n], alone[0], rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(run(framework, model, junk, LENGTHS), batch, rtol=1e-12, atol=1e-13)


def numpy_mlp(sd, x, lengths, max_len, num_layers):
    x = np.concatenate([x, np.zeros((x.shape[0], max_len - x.shape[1], x.shape[2]))], axis=1)
    x = x * (np.arange(max_len)[None, :] < lengths[:, None])[:, :, None]
    h = x.reshape(x.shape[0], -1)
    for k in range(num_layers):
        h = np.maximum(h @ sd[f"layers.{k}.weight"].T + sd[f"layers.{k}.bias"], 0.0)
    return h @ sd["head.weight"].T + sd["head.bias"]


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_feedforward_matches_numpy(framework):
    kw = dict(input_size=I, num_classes=4, max_len=8, hidden_size=5, num_layers=3)
    model = build(framework, "FeedForwardClassifier", **kw)
    sd = (
        jaxseq.interop.to_torch_state_dict(model)
        if framework == "jax"
        else {k: v.numpy() for k, v in model.state_dict().items()}
    )
    assert sorted(sd) == sorted(
        [f"layers.{k}.{p}" for k in range(3) for p in ("weight", "bias")]
        + ["head.weight", "head.bias"]
    )
    assert sd["layers.0.weight"].shape == (5, 8 * I)
    np.testing.assert_allclose(
        run(framework, model, X, LENGTHS), numpy_mlp(sd, X, LENGTHS, 8, 3), rtol=1e-12, atol=1e-13
    )
    with pytest.raises(ValueError, match="exceeds max_len=8"):
        run(framework, model, np.zeros((1, 9, I)), np.array([9]))


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_forecaster_head_layout(framework):
    """out[n, k, o] = (W h_n + b)[k * O + o], h_n the rnn's final state at the true length."""
    model = build(
        framework, "Forecaster", input_size=I, hidden_size=5, cell="gru", horizon=2, output_size=2
    )
    out = run(framework, model, X, LENGTHS)
    assert out.shape == (N, 2, 2)
    if framework == "jax":
        sd = jaxseq.interop.to_torch_state_dict(model)
        _, h_n = model.rnn(X, None, LENGTHS)
        h = np.asarray(h_n[-1])
    else:
        sd = {k: v.numpy() for k, v in model.state_dict().items()}
        with torch.no_grad():
            h = np.stack(
                [
                    model.rnn(torch.from_numpy(X[n : n + 1, :L]))[1][-1, 0].numpy()
                    for n, L in enumerate(LENGTHS)
                ]
            )
    ref = (h @ sd["head.weight"].T + sd["head.bias"]).reshape(N, 2, 2)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("framework", ["jax", "torch"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_charlm_state_carries_over(framework, cell):
    """Logits of the whole text equal those of its two halves with the state carried."""
    model = build(
        framework, "CharLM", vocab_size=7, embed_dim=3, hidden_size=5, cell=cell, num_layers=2
    )
    full, state = run(framework, model, TOKENS)
    first, s1 = run(framework, model, TOKENS[:, :3])
    if framework == "jax":
        second, s2 = forward(model, TOKENS[:, 3:], s1)
    else:
        with torch.no_grad():
            second, s2 = model(torch.from_numpy(TOKENS[:, 3:]), s1)
    np.testing.assert_allclose(
        np.concatenate([np.asarray(first), np.asarray(second)], axis=1),
        np.asarray(full),
        rtol=1e-12,
        atol=1e-13,
    )
    h2 = s2[0] if cell == "lstm" else s2
    h = state[0] if cell == "lstm" else state
    np.testing.assert_allclose(np.asarray(h2), np.asarray(h), rtol=1e-12, atol=1e-13)
    assert np.asarray(full).shape == (N, T, 7)


def test_jax_dropout_train_and_eval():
    kw = dict(input_size=I, num_classes=4, hidden_size=5, num_layers=2)
    model = jm.SequenceClassifier(**kw, dropout=0.5, param_dtype=np.float64, rngs=nnx.Rngs(0))
    plain = jax_model("SequenceClassifier", **kw)
    jaxseq.interop.load_torch_state_dict(plain, jaxseq.interop.to_torch_state_dict(model))
    model.train()
    a, b = np.asarray(forward(model, X, LENGTHS)), np.asarray(forward(model, X, LENGTHS))
    assert np.max(np.abs(a - b)) > 1e-3  # a fresh mask per call
    model.eval()
    np.testing.assert_array_equal(
        np.asarray(forward(model, X, LENGTHS)), np.asarray(forward(plain, X, LENGTHS))
    )


@pytest.mark.parametrize("module", [jm, tm])
def test_constructor_errors(module):
    extra = {"rngs": nnx.Rngs(0)} if module is jm else {}
    with pytest.raises(ValueError, match="cell must be one of"):
        module.SequenceClassifier(I, 2, cell="transformer", **extra)
    with pytest.raises(ValueError, match="proj_size is only supported for cell='lstm'"):
        module.SequenceClassifier(I, 2, cell="gru", proj_size=2, **extra)
    with pytest.raises(ValueError, match="dropout should be a number"):
        module.Forecaster(I, dropout=1.5, **extra)
    with pytest.raises(ValueError, match="num_layers must be >= 1"):
        module.FeedForwardClassifier(I, 2, max_len=4, num_layers=0, **extra)


def test_jax_input_type_errors():
    model = jax_model("SequenceClassifier", **CLASSIFIERS["gru-2layers-tokens"])
    with pytest.raises(TypeError, match="integer token ids"):
        model(X[:, :, 0], LENGTHS)
    model = jax_model("SequenceClassifier", **CLASSIFIERS["rnn-relu"])
    with pytest.raises(TypeError, match="floating point input"):
        model(TOKENS, LENGTHS)
