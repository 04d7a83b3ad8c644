"""Hostile checkpoint files end in a clear Python exception naming the file, in both
``jaxseq.interop.load`` and ``torchseq.checkpoint.load``: empty, truncated, corrupted
(bits flipped anywhere in the header or the data), not safetensors at all, written for
another model (GRU into LSTM, another layer count or direction), extra or missing tensors,
wrong dtypes or shapes. A failed load leaves the model untouched; a load that succeeds
gives exactly the saved values (never a silent wrong answer)."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import torch
from flax import nnx
from safetensors.numpy import save_file

import jaxseq.interop
import torchseq.checkpoint
from jaxseq import models as jm
from torchseq import models as tm

KW = dict(input_size=3, num_classes=4, hidden_size=5, cell="lstm")


def jax_model(seed: int = 1, **kw) -> jm.SequenceClassifier:
    return jm.SequenceClassifier(**{**KW, **kw}, rngs=nnx.Rngs(seed))


def torch_model(seed: int = 1, **kw) -> tm.SequenceClassifier:
    torch.manual_seed(seed)
    return tm.SequenceClassifier(**{**KW, **kw})


def params_of(model) -> dict[str, np.ndarray]:
    """{torch name: a NumPy copy} of either framework's model."""
    if isinstance(model, torch.nn.Module):
        return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    return jaxseq.interop.to_torch_state_dict(model)


def assert_same_bits(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), k


FRAMEWORKS = {
    "jax": (jax_model, jaxseq.interop.load),
    "torch": (torch_model, torchseq.checkpoint.load),
}


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A valid checkpoint written by torchseq: (path, its bytes, its tensors)."""
    path = tmp_path_factory.mktemp("ckpt") / "good.safetensors"
    model = torch_model(seed=0)
    torchseq.checkpoint.save(model, path)
    return path, path.read_bytes(), params_of(model)


def header_len(blob: bytes) -> int:
    return int.from_bytes(blob[:8], "little")


def not_safetensors_cases(blob: bytes) -> dict[str, bytes]:
    """Byte strings that are not a valid safetensors file, derived from a valid one."""
    n = header_len(blob)
    pickled = io.BytesIO()
    torch.save({"w": torch.zeros(3)}, pickled)
    return {
        "empty": b"",
        "shorter than the length prefix": blob[:5],
        "only the length prefix": blob[:8],
        "truncated in the header": blob[: 8 + n // 2],
        "truncated in the data": blob[:-4],
        "one byte short": blob[:-1],
        "trailing garbage": blob + b"\x00" * 8,
        "header length too large": (10**15).to_bytes(8, "little") + blob[8:],
        "header length zero": (0).to_bytes(8, "little") + blob[8:],
        "text": b"this is a text file, not a checkpoint\n" * 4,
        "a torch.save pickle": pickled.getvalue(),
        "header not JSON": blob[:8] + b"X" + blob[9:],
    }


@pytest.mark.parametrize("fw", list(FRAMEWORKS))
def test_files_that_are_not_safetensors_raise_value_error_naming_the_file(fw, good, tmp_path):
    make, load = FRAMEWORKS[fw]
    model = make()
    before = params_of(model)
    for blob in not_safetensors_cases(good[1]).values():
        path = tmp_path / "bad.safetensors"
        path.write_bytes(blob)
        with pytest.raises(ValueError, match=re.escape(f"{path} is not a valid safetensors file")):
            load(model, path)
        assert_same_bits(params_of(model), before)  # nothing half-loaded
    # The valid file itself loads, bit for bit (so the cases above fail for their damage).
    assert_same_bits(params_of(load(model, good[0])), good[2])


@pytest.mark.parametrize("fw", list(FRAMEWORKS))
def test_missing_file_and_directory_raise_os_errors_naming_them(fw, tmp_path):
    make, load = FRAMEWORKS[fw]
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope.safetensors"))):
        load(make(), tmp_path / "nope.safetensors")
    with pytest.raises(IsADirectoryError, match=re.escape(f"{tmp_path} is a directory")):
        load(make(), tmp_path)


def test_every_single_bit_flip_is_detected_or_harmless(good, tmp_path):
    """Flip one bit of every byte of a checkpoint (a random bit, fixed seed): each load
    raises a ValueError naming the file or gives exactly the saved values. Every flip in
    the data section and in the tensors' header entries must be detected."""
    path, blob, saved = good
    n = header_len(blob)
    bits = np.random.default_rng(0).integers(0, 8, size=len(blob))
    models = {fw: make() for fw, (make, _) in FRAMEWORKS.items()}
    bad = tmp_path / "flipped.safetensors"
    loaded_ok = []
    for pos in range(len(blob)):
        flipped = bytearray(blob)
        flipped[pos] ^= 1 << int(bits[pos])
        bad.write_bytes(bytes(flipped))
        # The torch side checks every position; jax (slower per load) every third one.
        fws = ["torch", "jax"] if pos % 3 == 0 else ["torch"]
        for fw in fws:
            load, model = FRAMEWORKS[fw][1], models[fw]
            try:
                load(model, bad)
            except ValueError as e:
                assert str(bad) in str(e) or "loading state_dict" in str(e), (pos, str(e))
            else:
                loaded_ok.append(pos)
                assert_same_bits(params_of(model), saved)
    # What may load unchanged: nothing. Every byte is covered by safetensors' own checks
    # (length prefix, JSON, offsets) or by the sha256 over the header and the data.
    assert loaded_ok == [], f"flips at {sorted(set(loaded_ok))} (header ends at {8 + n}) loaded"


def test_flips_in_the_data_section_of_a_foreign_file_are_not_detectable(tmp_path):
    """Documents the limit: a file from a plain safetensors writer has no hash, so it loads
    (the hash is what makes the test above pass)."""
    ref = params_of(torch_model(seed=0))
    path = tmp_path / "plain.safetensors"
    save_file(ref, str(path))  # no metadata: not written by jaxseq/torchseq
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0x01
    path.write_bytes(bytes(blob))
    model = torchseq.checkpoint.load(torch_model(), path)
    changed = [k for k, v in params_of(model).items() if v.tobytes() != ref[k].tobytes()]
    assert len(changed) == 1


@pytest.mark.parametrize("fw", list(FRAMEWORKS))
def test_removing_the_hash_from_our_own_file_is_detected(fw, tmp_path):
    make, load = FRAMEWORKS[fw]
    ref = params_of(torch_model(seed=0))
    path = tmp_path / "nohash.safetensors"
    save_file(ref, str(path), metadata={"format": "pt", "writer": "torchseq"})
    with pytest.raises(
        ValueError, match=re.escape(f"{path} is corrupted: its header records sha256 None")
    ):
        load(make(), path)


# ------------------------------------------------------------- files written for another model


# (writer kwargs, reader kwargs): another kind, layer count, direction, hidden size.
MISMATCHES = {
    "gru-into-lstm": (dict(cell="gru"), dict()),
    "two-layers-into-one": (dict(num_layers=2), dict()),
    "one-layer-into-two": (dict(), dict(num_layers=2)),
    "bidirectional-into-forward": (dict(bidirectional=True), dict()),
    "forward-into-bidirectional": (dict(), dict(bidirectional=True)),
    "lstm-into-rnn": (dict(), dict(cell="rnn")),
    "projected-into-plain": (dict(proj_size=2), dict()),
}


def expected_errors(writer: dict, reader: dict) -> tuple[list, list, list]:
    """(missing, unexpected, size mismatches) computed from torch's own state_dicts."""
    src, dst = torch_model(**writer).state_dict(), torch_model(**reader).state_dict()
    missing = sorted(set(dst) - set(src))
    unexpected = sorted(set(src) - set(dst))
    sizes = [
        f"{k}: checkpoint has {tuple(src[k].shape)}, module expects {tuple(dst[k].shape)}"
        for k in dst
        if k in src and src[k].shape != dst[k].shape
    ]
    return missing, unexpected, sizes


@pytest.mark.parametrize("writer_fw", ["jax", "torch"])
@pytest.mark.parametrize("case", list(MISMATCHES))
def test_checkpoint_of_another_model_is_refused_by_both(case, writer_fw, tmp_path):
    wkw, rkw = MISMATCHES[case]
    path = tmp_path / "other.safetensors"
    if writer_fw == "jax":
        jaxseq.interop.save(jax_model(seed=3, **wkw), path)
    else:
        torchseq.checkpoint.save(torch_model(seed=3, **wkw), path)
    missing, unexpected, sizes = expected_errors(wkw, rkw)
    assert missing or unexpected or sizes  # the case really is a mismatch
    for fw, (make, load) in FRAMEWORKS.items():
        model = make(**rkw)
        before = params_of(model)
        with pytest.raises(ValueError, match="Error\\(s\\) in loading state_dict") as err:
            load(model, path)
        msg = str(err.value)
        if missing:
            assert f"Missing key(s) in state_dict: {missing}" in msg, fw
        if unexpected:
            assert f"Unexpected key(s) in state_dict: {unexpected}" in msg, fw
        for line in sizes:
            assert line in msg, fw
        assert_same_bits(params_of(model), before)


@pytest.mark.parametrize("fw", list(FRAMEWORKS))
def test_extra_missing_wrong_shape_and_wrong_dtype_tensors(fw, tmp_path):
    make, load = FRAMEWORKS[fw]
    ref = params_of(torch_model(seed=0))
    path = tmp_path / "edited.safetensors"

    def attempt(tensors: dict, strict: bool = True):
        save_file(tensors, str(path))
        return load(make(), path, strict=strict)

    # Extra tensor: refused when strict, ignored otherwise (values then exact).
    extra = {**ref, "rnn.weight_hh_l9": np.zeros((20, 5), np.float32)}
    with pytest.raises(
        ValueError, match=re.escape("Unexpected key(s) in state_dict: ['rnn.weight_hh_l9']")
    ):
        attempt(extra)
    assert_same_bits(params_of(attempt(extra, strict=False)), ref)
    # Missing tensor.
    fewer = {k: v for k, v in ref.items() if k != "head.bias"}
    with pytest.raises(ValueError, match=re.escape("Missing key(s) in state_dict: ['head.bias']")):
        attempt(fewer)
    # No tensors at all (a valid, empty safetensors file).
    with pytest.raises(ValueError, match=re.escape(f"Missing key(s) in state_dict: {sorted(ref)}")):
        attempt({})
    # Wrong shape: refused even when not strict.
    transposed = {**ref, "head.weight": np.ascontiguousarray(ref["head.weight"].T)}
    for strict in (True, False):
        with pytest.raises(
            ValueError, match=re.escape("head.weight: checkpoint has (5, 4), module expects (4, 5)")
        ):
            attempt(transposed, strict=strict)
    # Wrong dtype: integers (or booleans) where floats belong are refused, naming each.
    ints = {**ref, "head.bias": np.arange(4, dtype=np.int32), "rnn.bias_hh_l0": np.ones(20, bool)}
    with pytest.raises(ValueError, match="dtype mismatch") as err:
        attempt(ints)
    msg = str(err.value)
    assert str(path) in msg
    assert "head.bias: checkpoint has" in msg and "int32" in msg
    assert "rnn.bias_hh_l0: checkpoint has" in msg and "bool" in msg
    # Another floating dtype is cast, as torch's load_state_dict does: exact float64 -> float32.
    f64 = {k: v.astype(np.float64) for k, v in ref.items()}
    assert_same_bits(params_of(attempt(f64)), ref)


def test_failed_loads_leave_the_model_untouched(tmp_path):
    """A file with one good tensor and one of the wrong shape changes nothing."""
    ref = params_of(torch_model(seed=0))
    bad = {**ref, "head.weight": np.zeros((4, 6), np.float32)}
    path = tmp_path / "half.safetensors"
    save_file(bad, str(path))
    for make, load in FRAMEWORKS.values():
        model = make()
        before = params_of(model)
        with pytest.raises(ValueError, match="size mismatch"):
            load(model, path)
        assert_same_bits(params_of(model), before)
        assert before["head.bias"].tobytes() != ref["head.bias"].tobytes()  # would have changed


def test_bfloat16_checkpoint_loads_into_float32_models_of_both(tmp_path):
    """A torch bfloat16 file (a dtype NumPy lacks) loads, exactly widened to float32."""
    src = torch_model(seed=0).to(torch.bfloat16)
    path = tmp_path / "bf16.safetensors"
    torchseq.checkpoint.save(src, path)
    ref = {k: v.float().numpy() for k, v in src.state_dict().items()}
    for make, load in FRAMEWORKS.values():
        assert_same_bits(params_of(load(make(), path)), ref)
