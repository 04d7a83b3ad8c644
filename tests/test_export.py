"""``jaxseq.export``: a model leaves the process as a checked, serialized ``jax.export.Exported``.

Models are exported with a symbolic batch size and a symbolic time length for CPU, CUDA
and TPU at once, saved, and loaded in a fresh interpreter that imports only jax, numpy
and the standard library (no jaxseq, no flax, no model code), which checks the file's
sha256 as the docs show; there they run on several batch sizes and time lengths, with
lengths, and their outputs equal the live model's in eval mode (float32 to 1e-6, float64
to 1e-12). Every layer implementation lowers for each platform from this process. A
flipped bit anywhere, a truncated file and foreign files (a checkpoint, random bytes, the
bare serialization of format version 1, an empty file) each raise one ``ExportFileError``
naming the file; a spec that contradicts the model's layout is refused before tracing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _jit import JIT
from flax import nnx

import jaxseq
import jaxseq.export as jexport
import jaxseq.interop
import jaxseq.models
import jaxseq.nn
from jaxseq.impls import impls_for
from jaxseq.recurrences import get, registered

I = 3
SIZES = [(1, 5), (3, 5), (8, 9)]  # (N, T): three batch sizes, two time lengths
ALL = ("cpu", "cuda", "tpu")
ON_CUDA = jax.default_backend() == "gpu" and "cuda" in jax.devices()[0].client.platform_version


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


# What a server runs: jax, numpy and the standard library; the file is checked as the
# module docstring of jaxseq.export shows.
CHILD = textwrap.dedent(
    """
    import hashlib, json, sys
    import numpy as np
    import jax
    jax.config.update("jax_enable_x64", True)  # the float64 models take float64 inputs
    folder, names = sys.argv[1], sys.argv[2].split(",")
    inputs = np.load(f"{folder}/inputs.npz")
    outputs, headers = {}, {}
    for name in names:
        with open(f"{folder}/{name}.jax", "rb") as f:
            magic, digest, rest = f.read().split(b"\\n", 2)
        assert magic == b"\\x89jaxseq" and hashlib.sha256(rest).hexdigest() == digest.decode()
        header, payload = rest.split(b"\\n", 1)
        headers[name] = json.loads(header)
        exp = jax.export.deserialize(bytearray(payload))
        assert exp.platforms == ("cpu", "cuda", "tpu"), exp.platforms
        for key in inputs:
            model, what, size = key.split("/")
            if model == name and what == "x":
                res = exp.call(inputs[key], inputs[f"{name}/lengths/{size}"])
                for i, leaf in enumerate(jax.tree.leaves(res)):
                    outputs[f"{name}/{size}/{i}"] = np.asarray(leaf)
    np.savez(f"{folder}/outputs.npz", **outputs)
    with open(f"{folder}/headers.json", "w") as f:
        json.dump(headers, f)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("jaxseq", "flax", "torch"))
    assert not loaded, loaded
    print("served", len(outputs), "outputs")
    """
)


def test_exported_models_run_in_a_fresh_process_without_jaxseq(tmp_path: Path) -> None:
    models = _models()
    inputs: dict[str, np.ndarray] = {}
    signatures = {}
    for name, (model, shape, dtype, _) in models.items():
        exp = jexport.export(model, shape, dtype, platforms=ALL)
        time_major = shape.startswith("t")
        x_aval, lengths_aval = (str(a) for a in exp.in_avals)
        dt = np.dtype(dtype).name
        assert x_aval == (f"{dt}[t,b,3]" if time_major else f"{dt}[b,t,3]")
        assert lengths_aval == "int32[b]"  # the batch dimension, wherever the layout puts it
        signatures[name] = [x_aval, lengths_aval]
        jexport.save(exp, tmp_path / f"{name}.jax")
        assert getattr(model, "rnn", model).deterministic is False  # left in training mode
        inputs |= _inputs(name, dtype, time_major=time_major)
    np.savez(tmp_path / "inputs.npz", **inputs)

    # XLA's CPU backend at -O0 (compile time dominates; the same values, as tests/_jit.py)
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=flags.strip())
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
    headers = json.loads((tmp_path / "headers.json").read_text())
    for name, header in headers.items():
        assert header["inputs"] == signatures[name] and header["platforms"] == list(ALL)

    for name, (model, _, _, tol) in models.items():
        model.eval()  # export serves the eval-mode model
        live = JIT(lambda x, n, model=model: model(x, lengths=n))
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
    call = JIT(exp.call)
    a, b = call(x, lengths), call(x, lengths)
    np.testing.assert_array_equal(a, b)  # no dropout: deterministic
    model.eval()
    want = JIT(lambda x, n: model(x, n))(x, lengths)
    np.testing.assert_allclose(a, want, rtol=1e-6, atol=1e-6)


def test_export_token_model_without_lengths() -> None:
    """``lengths=False``: ``f(x)``; int token input; the output is the model's (a tuple)."""
    lm = jaxseq.models.CharLM(11, embed_dim=4, hidden_size=6, cell="lstm", rngs=nnx.Rngs(0))
    exp = jexport.export(lm, "b, t", jnp.int32, lengths=False)
    assert len(exp.in_avals) == 1
    tokens = np.arange(12, dtype=np.int32).reshape(2, 6) % 11
    got, want = JIT(exp.call)(tokens), JIT(lm.__call__)(tokens)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


def test_feedforward_with_a_fixed_time_length() -> None:
    ff = jaxseq.models.FeedForwardClassifier(I, 3, max_len=6, hidden_size=5, rngs=nnx.Rngs(0))
    exp = jexport.export(ff, ("b", 6, I))
    x = np.ones((4, 6, I), np.float32)
    lengths = np.array([6, 1, 0, 3], np.int32)
    got, want = JIT(exp.call)(x, lengths), JIT(lambda x, n: ff(x, n))(x, lengths)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- layouts


def test_batch_first_layer_signature_names_the_batch_dimension() -> None:
    """A ``batch_first`` layer exported as ``"b, t, 3"``: x (N, T, I), lengths (N,) named
    ``b``, the module's arguments named ``x`` and ``lengths``; the values are the layer's."""
    lstm = jaxseq.nn.LSTM(I, 4, batch_first=True, rngs=nnx.Rngs(0))
    exp = jexport.export(lstm, "b, t, 3")
    assert str(exp.in_avals) == "(ShapedArray(float32[b,t,3]), ShapedArray(int32[b]))"
    assert str(exp.out_avals) == (
        "(ShapedArray(float32[b,t,4]), ShapedArray(float32[1,b,4]), ShapedArray(float32[1,b,4]))"
    )
    main = next(line for line in exp.mlir_module().splitlines() if "func private @_wrapped" in line)
    assert 'loc("x")' in main and 'loc("lengths")' in main, main
    assert exp.fun_name == "LSTM"
    x = np.random.default_rng(0).standard_normal((2, 5, I)).astype(np.float32)
    lengths = np.array([5, 2], np.int32)
    lstm.eval()
    got = JIT(exp.call)(x, lengths)
    want = JIT(lambda x, n: lstm(x, lengths=n))(x, lengths)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


SPEC_ERRORS = [
    (  # the measured case: a batch_first model given a time-major spec
        "lstm_bf",
        "t, b, 3",
        "x_shape 't, b, 3' names the batch axis 't', a time dimension; "
        "LSTM(batch_first=True) takes x as (N, T, I), e.g. 'b, t, 3'",
    ),
    (
        "gru_tm",
        "b, t, 3",
        "x_shape 'b, t, 3' names the batch axis 't', a time dimension; "
        "GRU(batch_first=False) takes x as (T, N, I), e.g. 't, b, 3'",
    ),
    (
        "classifier",
        "t, b, 3",
        "x_shape 't, b, 3' names the batch axis 't', a time dimension; "
        "SequenceClassifier takes x as (N, T, ...), e.g. 'b, t, 3'",
    ),
    (
        "classifier",
        (29, "n", 3),
        "x_shape (29, 'n', 3) names the time axis 'n', a batch dimension; "
        "SequenceClassifier takes x as (N, T, ...), e.g. 'b, t, 3'",
    ),
    (
        "lstm_bf",
        "b, b, 3",
        "x_shape 'b, b, 3' uses 'b' for both the batch and the time axis; "
        "LSTM(batch_first=True) takes x as (N, T, I), e.g. 'b, t, 3'",
    ),
    (
        "lstm_bf",
        "b, t, 4",
        "x_shape 'b, t, 4' has 4 input features; LSTM(batch_first=True) takes 3, e.g. 'b, t, 3'",
    ),
    (
        "classifier",
        "b, t, i",
        "x_shape 'b, t, i' has i input features; SequenceClassifier takes 3, e.g. 'b, t, 3'",
    ),
    (
        "gru_tm",
        "t, b, 3, 1",
        "x_shape 't, b, 3, 1' has 4 axes; GRU(batch_first=False) takes x as (T, N, I), "
        "e.g. 't, b, 3', or unbatched (T, I)",
    ),
    (
        "gru_tm",
        "t, 3",
        "lengths=True needs a batched input; x_shape 't, 3' is unbatched (T, I) for "
        "GRU(batch_first=False): give (T, N, I), e.g. 't, b, 3', or lengths=False",
    ),
    (
        "classifier",
        "b",
        "x_shape 'b' has 1 axes; SequenceClassifier takes x as (N, T, I), e.g. 'b, t, 3', "
        "or token ids (N, T)",
    ),
    (
        "feedforward",
        "b, t, 3",
        "x_shape 'b, t, 3' has a symbolic time length 't', but FeedForwardClassifier "
        "compares T with its max_len=6 in Python: export it with a fixed T, e.g. ('b', 6, ...)",
    ),
    (
        "charlm",
        "b, t",
        "lengths=True: CharLM's call takes no lengths; export it with lengths=False",
    ),
    ("gru_tm", "t, b, 3.5", "x_shape 't, b, 3.5' is not a shape specification: syntax error"),
    ("gru_tm", (5, -1, 3), "x_shape (5, -1, 3) has a negative dimension"),
]


def test_a_spec_against_the_layout_is_refused_before_tracing(monkeypatch) -> None:
    models = {
        "lstm_bf": jaxseq.nn.LSTM(I, 4, batch_first=True, rngs=nnx.Rngs(0)),
        "gru_tm": jaxseq.nn.GRU(I, 4, rngs=nnx.Rngs(0)),
        "classifier": jaxseq.models.SequenceClassifier(I, 2, hidden_size=4, rngs=nnx.Rngs(0)),
        "feedforward": jaxseq.models.FeedForwardClassifier(I, 2, max_len=6, rngs=nnx.Rngs(0)),
        "charlm": jaxseq.models.CharLM(11, embed_dim=4, hidden_size=6, rngs=nnx.Rngs(0)),
    }

    def traced(*args, **kwargs):
        raise AssertionError("traced")

    monkeypatch.setattr(jax.export, "export", traced)  # a refusal must come first
    for model, spec, message in SPEC_ERRORS:
        dtype = jnp.int32 if model == "charlm" else jnp.float32
        with pytest.raises(ValueError, match="^" + re.escape(message)):
            jexport.export(models[model], spec, dtype)


# --------------------------------------------------------------------------- platforms

# Every layer implementation of the gated kinds (the LSTM's) and of the linear kinds
# (minGRU's); impl="cudnn" lowers for "cuda" only, from a CUDA process.
LAYERS = [(kind, impl) for kind in ("lstm", "min_gru") for impl in impls_for(get(kind))]
PARALLEL = ("fused_parallel", "fused_chunked")  # split T: a fixed T only


def test_the_grid_covers_every_impl() -> None:
    every = {impl for kind in registered() for impl in impls_for(get(kind))}
    assert {impl for _, impl in LAYERS} == every
    assert "cudnn" in every and "fused_parallel" in every


@pytest.mark.parametrize(
    "kind,impl", [(k, i) for k, i in LAYERS if i != "cudnn"], ids=lambda v: str(v)
)
def test_every_impl_lowers_for_each_platform_and_runs_here(kind: str, impl: str) -> None:
    cls = jaxseq.nn.LSTM if kind == "lstm" else jaxseq.nn.MinGRU
    layer = cls(I, 4, bidirectional=True, impl=impl, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    spec: jexport.Shape = (6, "b", I) if impl in PARALLEL else "t, b, 3"
    if impl in PARALLEL:
        with pytest.raises(
            ValueError,
            match=re.escape(
                f"x_shape 't, b, 3' has a symbolic time length 't', but {cls.__name__}"
                f"(impl='{impl}') splits the time axis by its length (a parallel scan); export "
                "it with a fixed T, or build the model with impl='fused_scan'"
            ),
        ):
            jexport.export(layer, "t, b, 3", jnp.float64)
    for platform in ALL:
        exp = jexport.export(layer, spec, jnp.float64, platforms=(platform,))
        text = exp.mlir_module()
        assert exp.platforms == (platform,)
        assert "func.func public @main(" in text and "_platform_index" not in text
    exp = jexport.export(layer, spec, jnp.float64, platforms=ALL)
    main = next(
        line for line in exp.mlir_module().splitlines() if "func.func public @main(" in line
    )
    assert exp.platforms == ALL and '{jax.global_constant = "_platform_index"}' in main
    # The three-platform artifact runs here, with the layer's values.
    x = np.random.default_rng(1).standard_normal((6, 2, I))
    lengths = np.array([6, 3], np.int32)
    layer.eval()
    got = JIT(exp.call)(x, lengths)
    want = JIT(lambda x, n: layer(x, lengths=n))(x, lengths)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


def test_cudnn_is_refused_for_other_platforms() -> None:
    lstm = jaxseq.nn.LSTM(I, 4, impl="cudnn", rngs=nnx.Rngs(0))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "platforms ('cpu', 'cuda', 'tpu'): LSTM(impl='cudnn') lowers for 'cuda' only (a "
            "cuDNN kernel); export it with platforms=('cuda',), or build the model with "
            "impl='fused' to serve on every platform"
        ),
    ):
        jexport.export(lstm, "t, b, 3", platforms=ALL)
    if not ON_CUDA:
        with pytest.raises(
            ValueError,
            match=re.escape(
                "LSTM(impl='cudnn') exports only in a process whose default backend is a CUDA "
                f"GPU (this one's is {jax.default_backend()!r}); build the model with "
                "impl='fused' to export it here"
            ),
        ):
            jexport.export(lstm, "t, b, 3", platforms=("cuda",))


@pytest.mark.skipif(not ON_CUDA, reason="impl='cudnn' traces only on a CUDA GPU")
def test_cudnn_lowers_for_cuda() -> None:
    lstm = jaxseq.nn.LSTM(I, 4, bidirectional=True, impl="cudnn", rngs=nnx.Rngs(0))
    exp = jexport.export(lstm, "t, b, 3", platforms=("cuda",))
    assert exp.platforms == ("cuda",) and "cudnn" in exp.mlir_module().lower()
    x = np.random.default_rng(1).standard_normal((6, 2, I)).astype(np.float32)
    lengths = np.array([6, 3], np.int32)
    lstm.eval()
    with jax.default_matmul_precision("highest"):
        got, want = exp.call(x, lengths), lstm(x, lengths=lengths)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- the file


def _file(header: dict | list, payload: bytes) -> bytes:
    """A file in format version 2, built from the module docstring's description."""
    rest = json.dumps(header, sort_keys=True, separators=(",", ":")).encode() + b"\n" + payload
    return b"\x89jaxseq\n" + hashlib.sha256(rest).hexdigest().encode() + b"\n" + rest


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, bytes, nnx.Module, jax.export.Exported]:
    """A float32 GRU classifier, exported for three platforms and saved: (path, bytes,
    the model in eval mode, the Exported)."""
    model = jaxseq.models.SequenceClassifier(I, 4, hidden_size=6, cell="gru", rngs=nnx.Rngs(0))
    exp = jexport.export(model, "b, t, 3", platforms=ALL)
    path = tmp_path_factory.mktemp("saved") / "model.jax"
    jexport.save(exp, path)
    model.eval()
    return path, path.read_bytes(), model, exp


X = np.random.default_rng(0).standard_normal((2, 5, I)).astype(np.float32)
LENGTHS = np.array([5, 3], np.int32)


def test_the_file_holds_its_hash_and_signature(saved, tmp_path: Path) -> None:
    path, blob, model, exp = saved
    payload = bytes(exp.serialize())
    header = {
        "format": "jaxseq.export",
        "inputs": ["float32[b,t,3]", "int32[b]"],
        "jax": jax.__version__,
        "outputs": ["float32[b,4]"],
        "payload_bytes": len(payload),
        "platforms": ["cpu", "cuda", "tpu"],
        "version": 2,
    }
    assert blob == _file(header, payload)  # the documented layout, byte for byte
    jexport.save(exp, tmp_path / "again.jax")
    assert (tmp_path / "again.jax").read_bytes() == blob  # deterministic
    served = jexport.load(path)
    assert served.platforms == ALL
    want = JIT(lambda x, n: model(x, n))(X, LENGTHS)
    np.testing.assert_allclose(JIT(served.call)(X, LENGTHS), want, rtol=1e-6, atol=1e-6)


def test_a_flipped_weight_bit_is_refused(saved, tmp_path: Path) -> None:
    """The measured case: one flipped bit in a weight served wrong outputs silently."""
    path, blob, model, exp = saved
    bias = np.asarray(model.head.bias[...])  # (4,): added to the logits
    at = blob.index(bias.tobytes()) + 3  # bias[0]'s last byte, as the payload captured it
    assert blob.count(bias.tobytes()) == 1
    bad = bytearray(blob)
    bad[at] ^= 0x80  # the sign bit of bias[0] (float32, little-endian)
    (tmp_path / "flipped.jax").write_bytes(bad)
    rest = bytes(bad).split(b"\n", 2)[2]
    recorded = hashlib.sha256(blob.split(b"\n", 2)[2]).hexdigest()
    message = (
        f"{tmp_path / 'flipped.jax'} is corrupted: its header records {recorded}, its "
        f"contents hash to {hashlib.sha256(rest).hexdigest()}"
    )
    with pytest.raises(jexport.ExportFileError, match="^" + re.escape(message) + "$"):
        jexport.load(tmp_path / "flipped.jax")
    # Unchecked, the same bytes deserialize and serve other values: what the hash stops.
    unchecked = jax.export.deserialize(bytearray(rest.split(b"\n", 1)[1]))
    want = np.array(JIT(lambda x, n: model(x, n))(X, LENGTHS))
    want[:, 0] -= 2 * bias[0]  # the flipped sign
    np.testing.assert_allclose(JIT(unchecked.call)(X, LENGTHS), want, rtol=1e-6, atol=1e-6)
    assert abs(bias[0]) > 1e-2


def test_every_flipped_bit_is_refused(saved, tmp_path: Path) -> None:
    """One bit flipped in each byte of the magic, the hash line and the header, and at 64
    places across the payload: always an ``ExportFileError`` naming the file."""
    _, blob, _, _ = saved
    path = tmp_path / "bad.jax"
    head = len(b"\n".join(blob.split(b"\n", 3)[:3])) + 1
    positions = list(range(head)) + list(np.linspace(head, len(blob) - 1, 64).astype(int))
    pattern = re.compile(
        "^" + re.escape(str(path)) + " is (corrupted|truncated|too long|not a jaxseq export file)"
    )
    for at in positions:
        bad = bytearray(blob)
        bad[at] ^= 1 << (at % 8)
        path.write_bytes(bad)
        with pytest.raises(jexport.ExportFileError) as info:
            jexport.load(path)
        assert pattern.match(str(info.value)), (at, str(info.value))
        if at >= head:  # the payload
            assert str(info.value).startswith(f"{path} is corrupted: its header records "), at


def test_truncated_and_extended_files_are_refused(saved, tmp_path: Path) -> None:
    _, blob, _, exp = saved
    path = tmp_path / "cut.jax"
    head = len(b"\n".join(blob.split(b"\n", 3)[:3])) + 1
    size = len(bytes(exp.serialize()))
    exact = {
        0: f"{path} is empty, not a jaxseq export file",
        5: f"{path} is truncated: it ends inside its magic bytes",
        40: f"{path} is truncated: it ends inside its header (40 bytes)",
        head: f"{path} is truncated: its header records {size} payload bytes, the file holds 0",
        len(blob) - 1: (
            f"{path} is truncated: its header records {size} payload bytes, the file holds "
            f"{size - 1}"
        ),
    }
    lengths = list(range(head + 2)) + list(np.linspace(head, len(blob) - 1, 32).astype(int))
    for n in lengths:
        path.write_bytes(blob[:n])
        with pytest.raises(jexport.ExportFileError) as info:
            jexport.load(path)
        assert re.match("^" + re.escape(str(path)) + " is (empty|truncated)", str(info.value)), n
        if n in exact:
            assert str(info.value) == exact[n]
    path.write_bytes(blob + b"\0")
    with pytest.raises(
        jexport.ExportFileError,
        match=re.escape(
            f"{path} is too long: its header records {size} payload bytes, the file holds "
            f"{size + 1}"
        ),
    ):
        jexport.load(path)


def test_foreign_files_are_refused(saved, tmp_path: Path) -> None:
    _, blob, model, exp = saved
    magic = b"\x89jaxseq\n"
    not_ours = (
        f"is not a jaxseq export file: it does not start with the export file's magic "
        f"{magic!r}. Files saved by jaxseq before export format version 2 are the "
        "bare jax.export serialization, without a hash, and are refused: export and save "
        "the model again (or, trusting the file, read it unchecked with "
        "jax.export.deserialize)"
    )
    checkpoint = "is not a jaxseq export file: it is a safetensors file (a checkpoint?), "
    checkpoint += "not an exported model"
    jaxseq.interop.save(model, tmp_path / "checkpoint.safetensors")
    files = {
        "checkpoint.safetensors": (None, checkpoint),
        "random.bin": (np.random.default_rng(0).bytes(4096), not_ours),
        "version1.jax": (bytes(exp.serialize()), not_ours),  # what save wrote before
        "notes.txt": (b"hello\n", not_ours),
        "empty.jax": (b"", "is empty, not a jaxseq export file"),
    }
    for name, (content, message) in files.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        with pytest.raises(
            jexport.ExportFileError, match="^" + re.escape(f"{tmp_path / name} {message}") + "$"
        ):
            jexport.load(tmp_path / name)


def test_headers_of_other_versions_and_bad_payloads_are_refused(saved, tmp_path: Path) -> None:
    _, blob, _, exp = saved
    payload = bytes(exp.serialize())
    good = json.loads(blob.split(b"\n", 3)[2])
    cases = {
        "v3.jax": (
            {**good, "version": 3},
            payload,
            "has export format version 3; this jaxseq reads version 2 (the file was "
            "written by a newer jaxseq)",
        ),
        "v1.jax": ({**good, "version": 1}, payload, "has export format version 1; this "),
        "list.jax": ([1, 2], payload, "has a header that is not a jaxseq.export header"),
        "other.jax": (
            {**good, "format": "other"},
            payload,
            "has a header that is not a jaxseq.export header",
        ),
        "garbage.jax": (
            {**good, "payload_bytes": 64},
            bytes(64),
            f"cannot deserialize its payload (written by jax {jax.__version__}): ",
        ),
        "platforms.jax": (
            {**good, "platforms": ["cpu"]},
            payload,
            "its header records platforms ['cpu'], its payload ['cpu', 'cuda', 'tpu']",
        ),
    }
    for name, (header, content, message) in cases.items():
        (tmp_path / name).write_bytes(_file(header, content))
        with pytest.raises(jexport.ExportFileError, match=re.escape(message)) as info:
            jexport.load(tmp_path / name)
        assert str(info.value).startswith(str(tmp_path / name)), name
        assert isinstance(info.value, ValueError)


def test_bad_arguments_and_missing_flatbuffers(tmp_path: Path, monkeypatch) -> None:
    gru = jaxseq.nn.GRU(I, 2, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="x_shape must be a string or a tuple"):
        jexport.export(gru, [5, "b", I])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=re.escape("lengths must be True or False, got 1")):
        jexport.export(gru, "t, b, 3", lengths=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=re.escape("x_dtype 'floaty' is not a dtype")):
        jexport.export(gru, "t, b, 3", "floaty")
    with pytest.raises(TypeError, match=re.escape("model must be a flax.nnx.Module, got str")):
        jexport.export("gru", "t, b, 3")  # type: ignore[arg-type]
    with pytest.raises(
        TypeError,
        match=re.escape(
            "platforms must be a tuple of platform names such as ('cpu', 'cuda', 'tpu'), got 'cuda'"
        ),
    ):
        jexport.export(gru, "t, b, 3", platforms="cuda")
    for platforms, what in [
        (("gpu",), "unknown ['gpu']"),
        ((), "empty"),
        (("cpu", "cpu"), "repeated names"),
    ]:
        hint = " ('gpu' is 'cuda' or 'rocm')" if "gpu" in platforms else ""
        with pytest.raises(
            ValueError,
            match=re.escape(
                f"platforms {platforms!r}: {what}; give distinct names among "
                f"('cpu', 'cuda', 'rocm', 'tpu'){hint}"
            ),
        ):
            jexport.export(gru, "t, b, 3", platforms=platforms)
    with pytest.raises(TypeError, match="exported must be a jax.export.Exported"):
        jexport.save(gru, tmp_path / "gru.jax")  # type: ignore[arg-type]
    exp = jexport.export(gru, "t, b, 3", lengths=False)
    monkeypatch.setitem(sys.modules, "flatbuffers", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'jaxseq\[export\]'"):
        jexport.save(exp, tmp_path / "gru.jax")
    assert not (tmp_path / "gru.jax").exists()
    monkeypatch.undo()
    jexport.save(exp, tmp_path / "gru.jax")
    assert [p.name for p in tmp_path.iterdir()] == ["gru.jax"]  # no temporary file left
    monkeypatch.setitem(sys.modules, "flatbuffers", None)
    with pytest.raises(ImportError, match=r"jaxseq.export.load needs the flatbuffers package"):
        jexport.load(tmp_path / "gru.jax")
    monkeypatch.undo()
    served = jexport.load(tmp_path / "gru.jax")
    assert str(served.in_avals) == str(exp.in_avals) == "(ShapedArray(float32[t,b,3]),)"
    x = np.random.default_rng(0).standard_normal((4, 2, I)).astype(np.float32)
    gru.eval()
    got, want = JIT(served.call)(x), JIT(gru.__call__)(x)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)
