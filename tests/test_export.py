"""``jaxseq.export``: a model leaves the process as a serialized ``jax.export.Exported``.

Models are exported with a symbolic batch size and a symbolic time length, saved, and
loaded in a fresh interpreter that imports only jax and numpy (no jaxseq, no flax, no
model code); there they run on several batch sizes and time lengths, with lengths, and
their outputs equal the live model's in eval mode (float32 to 1e-6, float64 to 1e-12).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxseq
import jaxseq.export as jexport
import jaxseq.models
import jaxseq.nn

I = 3
SIZES = [(1, 5), (3, 5), (8, 9)]  # (N, T): three batch sizes, two time lengths


def _models() -> dict:
    """name -> (model, x_shape, dtype, tolerance); each model starts in training mode."""
    f32 = jaxseq.models.SequenceClassifier(
        I, 4, hidden_size=6, cell="lstm", num_layers=2, bidirectional=True, dropout=0.3,
        rngs=nnx.Rngs(0),
    )  # fmt: skip
    f64 = jaxseq.models.SequenceClassifier(
        I, 4, hidden_size=6, cell="min_gru", bidirectional=True, param_dtype=jnp.float64,
        rngs=nnx.Rngs(1),
    )  # fmt: skip
    gru = jaxseq.nn.GRU(I, 5, num_layers=2, param_dtype=jnp.float64, rngs=nnx.Rngs(2))
    return {
        "classifier_f32": (f32, "b, t, 3", jnp.float32, 1e-6),
        "classifier_f64": (f64, "b, t, 3", jnp.float64, 1e-12),
        "gru_time_major": (gru, "t, b, 3", jnp.float64, 1e-12),  # (out, h_n)
    }


def _inputs(name: str, dtype, time_major: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(len(name))
    arrays = {}
    for N, T in SIZES:
        x = rng.standard_normal((T, N, I) if time_major else (N, T, I)).astype(dtype)
        lengths = rng.integers(0, T + 1, size=N).astype(np.int32)
        lengths[0] = T
        arrays[f"{name}/x/{N}x{T}"], arrays[f"{name}/lengths/{N}x{T}"] = x, lengths
    return arrays


CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    import jax
    jax.config.update("jax_enable_x64", True)  # the float64 models take float64 inputs
    folder, names = sys.argv[1], sys.argv[2].split(",")
    inputs = np.load(f"{folder}/inputs.npz")
    outputs = {}
    for name in names:
        with open(f"{folder}/{name}.jax", "rb") as f:
            exp = jax.export.deserialize(bytearray(f.read()))
        for key in inputs:
            model, what, size = key.split("/")
            if model == name and what == "x":
                res = exp.call(inputs[key], inputs[f"{name}/lengths/{size}"])
                for i, leaf in enumerate(jax.tree.leaves(res)):
                    outputs[f"{name}/{size}/{i}"] = np.asarray(leaf)
    np.savez(f"{folder}/outputs.npz", **outputs)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("jaxseq", "flax", "torch"))
    assert not loaded, loaded
    print("served", len(outputs), "outputs")
    """
)


def test_exported_models_run_in_a_fresh_process_without_jaxseq(tmp_path: Path) -> None:
    models = _models()
    inputs: dict[str, np.ndarray] = {}
    for name, (model, shape, dtype, _) in models.items():
        exp = jexport.export(model, shape, dtype)
        sym = str(exp.in_avals[0].shape)
        assert "b" in sym and "t" in sym, exp.in_avals  # both symbolic
        assert exp.in_avals[1].shape == (exp.in_avals[0].shape[1 if shape[0] == "t" else 0],)
        jexport.save(exp, tmp_path / f"{name}.jax")
        assert getattr(model, "rnn", model).deterministic is False  # left in training mode
        inputs |= _inputs(name, dtype, time_major=shape.startswith("t"))
    np.savez(tmp_path / "inputs.npz", **inputs)

    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), ",".join(models)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    served = np.load(tmp_path / "outputs.npz")

    for name, (model, _, _, tol) in models.items():
        model.eval()  # export serves the eval-mode model
        live = jax.jit(lambda x, n, model=model: model(x, lengths=n))
        for N, T in SIZES:
            size = f"{N}x{T}"
            want = jax.tree.leaves(
                live(inputs[f"{name}/x/{size}"], inputs[f"{name}/lengths/{size}"])
            )
            assert len(want) == len([k for k in served if k.startswith(f"{name}/{size}/")])
            for i, w in enumerate(want):
                got = served[f"{name}/{size}/{i}"]
                assert got.shape == w.shape and got.dtype == w.dtype, (name, size, i)
                np.testing.assert_allclose(got, np.asarray(w), rtol=tol, atol=tol)


def test_export_leaves_the_model_in_training_mode_and_drops_dropout() -> None:
    model = jaxseq.models.SequenceClassifier(
        I, 2, hidden_size=4, cell="gru", num_layers=2, dropout=0.5, rngs=nnx.Rngs(0)
    )
    exp = jexport.export(model, ("b", 7, I))
    assert model.rnn.deterministic is False  # untouched
    x = np.random.default_rng(0).standard_normal((2, 7, I)).astype(np.float32)
    lengths = np.array([7, 3], np.int32)
    a, b = exp.call(x, lengths), exp.call(x, lengths)
    np.testing.assert_array_equal(a, b)  # no dropout: deterministic
    model.eval()
    np.testing.assert_allclose(a, model(x, lengths), rtol=1e-6, atol=1e-6)


def test_export_token_model_without_lengths() -> None:
    """``lengths=False``: ``f(x)``; int token input; the output is the model's (a tuple)."""
    lm = jaxseq.models.CharLM(11, embed_dim=4, hidden_size=6, cell="lstm", rngs=nnx.Rngs(0))
    exp = jexport.export(lm, "b, t", jnp.int32, lengths=False)
    assert len(exp.in_avals) == 1
    tokens = np.arange(12, dtype=np.int32).reshape(2, 6) % 11
    got, want = exp.call(tokens), lm(tokens)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


def test_feedforward_with_a_fixed_time_length() -> None:
    ff = jaxseq.models.FeedForwardClassifier(I, 3, max_len=6, hidden_size=5, rngs=nnx.Rngs(0))
    exp = jexport.export(ff, ("b", 6, I))
    x = np.ones((4, 6, I), np.float32)
    lengths = np.array([6, 1, 0, 3], np.int32)
    np.testing.assert_allclose(exp.call(x, lengths), ff(x, lengths), rtol=1e-6, atol=1e-6)


def test_bad_arguments_and_missing_flatbuffers(tmp_path: Path, monkeypatch) -> None:
    gru = jaxseq.nn.GRU(I, 2, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="x_shape must be a string or a tuple"):
        jexport.export(gru, [5, "b", I])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lengths=True needs a batched input"):
        jexport.export(gru, "t")
    exp = jexport.export(gru, "t, b, 3", lengths=False)
    monkeypatch.setitem(sys.modules, "flatbuffers", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'jaxseq\[export\]'"):
        jexport.save(exp, tmp_path / "gru.jax")
    assert not (tmp_path / "gru.jax").exists()
    monkeypatch.undo()
    jexport.save(exp, tmp_path / "gru.jax")
    assert [p.name for p in tmp_path.iterdir()] == ["gru.jax"]  # no temporary file left
    assert str(jexport.load(tmp_path / "gru.jax").in_avals) == str(exp.in_avals)
