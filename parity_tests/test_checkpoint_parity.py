"""One checkpoint format: a safetensors file written by either framework loads into the
other and gives the same outputs; a file that does not fit raises a clear ValueError."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flax import nnx
from safetensors.numpy import load_file, save_file

import jaxseq.interop
import torchseq.checkpoint
from jaxseq import models as jm
from torchseq import models as tm

N, T = 3, 6
RNG = np.random.default_rng(0)
X = RNG.normal(size=(N, T, 3))
TOKENS = RNG.integers(0, 7, size=(N, T))
LENGTHS = np.array([6, 2, 4])

# name -> (class name, constructor kwargs, call args as NumPy)
CASES = {
    "classifier-lstm-bi-proj": (
        "SequenceClassifier",
        dict(
            input_size=3, num_classes=4, hidden_size=5, cell="lstm", bidirectional=True, proj_size=2
        ),
        (X, LENGTHS),
    ),
    "classifier-gru-tokens": (
        "SequenceClassifier",
        dict(input_size=3, num_classes=4, hidden_size=5, cell="gru", num_layers=2, vocab_size=7),
        (TOKENS, LENGTHS),
    ),
    "classifier-layernorm-lstm-bi": (
        "SequenceClassifier",
        dict(input_size=3, num_classes=4, hidden_size=5, cell="layernorm_lstm", bidirectional=True),
        (X, LENGTHS),
    ),
    "charlm-layernorm-gru": (
        "CharLM",
        dict(vocab_size=7, embed_dim=3, hidden_size=5, cell="layernorm_gru"),
        (TOKENS,),
    ),
    "feedforward": (
        "FeedForwardClassifier",
        dict(input_size=3, num_classes=4, max_len=8, hidden_size=5, num_layers=2),
        (X, LENGTHS),
    ),
    "forecaster-rnn": (
        "Forecaster",
        dict(input_size=3, hidden_size=5, cell="rnn", horizon=2, output_size=1),
        (X, LENGTHS),
    ),
    "charlm-lstm": (
        "CharLM",
        dict(vocab_size=7, embed_dim=3, hidden_size=5, num_layers=2),
        (TOKENS,),
    ),
}

forward = nnx.jit(lambda m, *args: m(*args))


def outputs_jax(model, args) -> np.ndarray:
    out = forward(model, *args)
    return np.asarray(out[0] if isinstance(out, tuple) else out)


def outputs_torch(model, args) -> np.ndarray:
    with torch.no_grad():
        out = model(*(torch.from_numpy(a) for a in args))
    return (out[0] if isinstance(out, tuple) else out).numpy()


def build(case: str, seed: int):
    cls, kw, _ = CASES[case]
    torch.manual_seed(seed)
    tmodel = getattr(tm, cls)(**kw).double().eval()
    jmodel = getattr(jm, cls)(**kw, param_dtype=np.float64, rngs=nnx.Rngs(seed))
    jmodel.eval()
    return tmodel, jmodel


@pytest.mark.parametrize("case", list(CASES))
def test_checkpoint_round_trips_between_frameworks(case, tmp_path):
    tmodel, jmodel = build(case, seed=0)
    args = CASES[case][2]
    path = tmp_path / "model.safetensors"
    # The two inits differ, so agreement below comes from the files.
    assert np.max(np.abs(outputs_jax(jmodel, args) - outputs_torch(tmodel, args))) > 1e-3

    # jaxseq -> file -> torchseq: same names, same values, same outputs.
    jaxseq.interop.save(jmodel, path)
    assert sorted(load_file(str(path))) == sorted(tmodel.state_dict())
    torchseq.checkpoint.load(tmodel, path)
    np.testing.assert_allclose(
        outputs_torch(tmodel, args), outputs_jax(jmodel, args), rtol=1e-12, atol=1e-12
    )

    # torchseq -> file -> jaxseq, from a fresh torch init.
    tmodel, _ = build(case, seed=1)
    torchseq.checkpoint.save(tmodel, path)
    jaxseq.interop.load(jmodel, path)
    np.testing.assert_allclose(
        outputs_jax(jmodel, args), outputs_torch(tmodel, args), rtol=1e-12, atol=1e-12
    )
    for name, value in jaxseq.interop.to_torch_state_dict(jmodel).items():
        np.testing.assert_array_equal(value, tmodel.state_dict()[name].numpy(), err_msg=name)


def test_float32_file_loads_into_float64_model(tmp_path):
    path = tmp_path / "f32.safetensors"
    kw = CASES["classifier-lstm-bi-proj"][1]
    torch.manual_seed(0)
    t32 = tm.SequenceClassifier(**kw)
    torchseq.checkpoint.save(t32, path)
    j64 = jaxseq.interop.load(
        jm.SequenceClassifier(**kw, param_dtype=np.float64, rngs=nnx.Rngs(0)), path
    )
    sd = jaxseq.interop.to_torch_state_dict(j64)
    assert sd["rnn.weight_hh_l0"].dtype == np.float64
    np.testing.assert_array_equal(
        sd["head.weight"], t32.head.weight.detach().numpy().astype(np.float64)
    )


def test_mismatched_files_raise_naming_keys_and_shapes(tmp_path):
    kw = CASES["classifier-lstm-bi-proj"][1]
    tmodel, jmodel = tm.SequenceClassifier(**kw), jm.SequenceClassifier(**kw, rngs=nnx.Rngs(0))
    # Wrong shapes: a hidden size of 6 instead of 5.
    wrong = tmp_path / "wrong_shape.safetensors"
    torchseq.checkpoint.save(tm.SequenceClassifier(**{**kw, "hidden_size": 6}), wrong)
    for load, model in ((jaxseq.interop.load, jmodel), (torchseq.checkpoint.load, tmodel)):
        with pytest.raises(ValueError, match=r"size mismatch") as err:
            load(model, wrong)
        assert "rnn.weight_hh_l0: checkpoint has (24, 2), module expects (20, 2)" in str(err.value)
    # Wrong names: one renamed, one extra.
    sd = {k: v.detach().numpy() for k, v in tmodel.state_dict().items()}
    sd["classifier.weight"] = sd.pop("head.weight")
    sd["extra"] = np.zeros(3, np.float32)
    renamed = tmp_path / "renamed.safetensors"
    save_file(sd, str(renamed))
    for load, model in ((jaxseq.interop.load, jmodel), (torchseq.checkpoint.load, tmodel)):
        with pytest.raises(ValueError) as err:
            load(model, renamed)
        msg = str(err.value)
        assert "Missing key(s) in state_dict: ['head.weight']" in msg
        assert "Unexpected key(s) in state_dict: ['classifier.weight', 'extra']" in msg
        # strict=False skips the names but still refuses nothing else here.
        load(model, renamed, strict=False)
