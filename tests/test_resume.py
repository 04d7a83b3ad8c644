"""Stopping and resuming JAX training (``jaxseq.train.fit(checkpoint_dir=...)``) and the
framework-neutral checkpoint parts (``seqfile.training_state``, ``seqfile.write_atomic``).

Every resumed run is held against the uninterrupted run of the same settings: the same
losses, epoch records and final parameters, bit for bit. Faults: a training process killed
with SIGKILL at a (seeded) random moment, a corrupted / truncated / empty newest
checkpoint, a full disk (``os.write`` raising ENOSPC), a checkpoint of another model or
optimizer, and a two-process data-parallel run stopped and resumed. Models are tiny and
float64; subprocesses are bounded in time and killed with their process group.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import random
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _kill import run_and_kill
from _procs import env_choosing_devices, run_in_group
from flax import nnx

import jaxseq.data
import jaxseq.interop
import seqfile
from jaxseq import train_state
from jaxseq.models import SequenceClassifier
from jaxseq.train import TrainStep, clip_by_global_norm_torch, fit
from seqfile import training_state as ts

ROOT = pathlib.Path(__file__).resolve().parent.parent

# 20 sequences in batches of 6: 4 batches (6, 6, 6, 2) per epoch, reshuffled every epoch.
RNG = np.random.default_rng(0)
X, LENGTHS, Y = RNG.standard_normal((20, 6, 3)), RNG.integers(1, 7, 20), RNG.integers(0, 3, 20)
EPOCHS, STEPS = 3, 12


def batches(epoch: int) -> list:
    return list(jaxseq.data.batches(X, LENGTHS, Y, 6, seed=epoch))


OPTIMIZERS = {
    "sgd": lambda: optax.sgd(0.1, momentum=0.9),
    "adamw": lambda: optax.adamw(optax.cosine_decay_schedule(1e-2, STEPS), weight_decay=0.1),
}


class Stop(Exception):
    """Raised by a callback: the run stops right after a step (and its save)."""


def make_model(hidden_size: int = 4, cell: str = "lstm", seed: int = 1) -> SequenceClassifier:
    # Two layers with dropout between them: the dropout RNG state must be restored too.
    return SequenceClassifier(
        3, 3, hidden_size=hidden_size, cell=cell, num_layers=2, dropout=0.3,
        param_dtype=jnp.float64, rngs=nnx.Rngs(seed),
    )  # fmt: skip


_STEPS: dict = {}


def run(ckpt=None, *, opt="adamw", stop=None, save_every=1, keep=3, **model_kw):
    """Train (resuming from ``ckpt`` if it holds a checkpoint); ``(history, params)``, or
    ``(None, None)`` when stopped after step ``stop``.

    What ``fit(model, batches, tx, clip_norm=0.5, ...)`` runs, with the train step
    compiled once per optimizer and architecture (``TrainStep.reset(model)``)."""
    model = make_model(**model_kw)
    model.train()
    key = (opt, tuple(sorted(model_kw.items())))
    if key not in _STEPS:
        tx = optax.chain(clip_by_global_norm_torch(0.5), OPTIMIZERS[opt]())
        _STEPS[key] = TrainStep(model, tx, sync_model=False)
    step = _STEPS[key]
    step.reset(model)

    def callback(epoch, step, loss):
        if step == stop:
            raise Stop

    try:
        h = step.fit(
            batches, epochs=EPOCHS, callback=callback, checkpoint_dir=ckpt,
            save_every=save_every, keep=keep, config={"opt": opt},
        )  # fmt: skip
    except Stop:
        return None, None
    return h, jaxseq.interop.to_torch_state_dict(model)


@pytest.fixture(scope="module")
def reference():
    """The uninterrupted run of each optimizer (no checkpoints)."""
    return {opt: run(None, opt=opt) for opt in OPTIMIZERS}


def assert_same_run(got, want) -> None:
    """The same losses, epoch records and parameters, bit for bit."""
    (h, p), (h0, p0) = got, want
    assert list(h) == list(h0)
    assert h.epochs == h0.epochs
    assert sorted(p) == sorted(p0)
    for k in p0:
        assert p[k].dtype == p0[k].dtype and p[k].tobytes() == p0[k].tobytes(), k


@pytest.mark.parametrize(
    "opt,stop,save_every",
    [("sgd", 3, 1), ("adamw", 4, 1), ("adamw", 7, 1), ("adamw", 6, 3), ("sgd", 10, None)],
)
def test_resumed_run_equals_uninterrupted(tmp_path, reference, opt, stop, save_every):
    """Stopped mid-epoch (3, 7), at an epoch's end (4), between saves (6 with saves every
    3 steps; 10 with saves at epoch ends, resuming from step 8): the same run."""
    assert run(tmp_path, opt=opt, stop=stop, save_every=save_every) == (None, None)
    resumed = run(tmp_path, opt=opt, save_every=save_every)
    expected = stop if save_every == 1 else {3: 6, None: 8}[save_every]
    assert resumed[0].resumed_step == expected
    assert len(resumed[0]) == STEPS
    assert_same_run(resumed, reference[opt])
    state = ts.load_latest(tmp_path)
    assert state is not None and state.step == STEPS and state.meta["config"] == {"opt": opt}


def test_rerun_after_the_end_trains_nothing(tmp_path, reference):
    run(tmp_path)
    steps = []
    model = make_model()
    h = fit(
        model, batches, OPTIMIZERS["adamw"](), epochs=EPOCHS, clip_norm=0.5,
        callback=lambda e, s, loss: steps.append(s), checkpoint_dir=tmp_path,
    )  # fmt: skip
    assert steps == [] and h.resumed_step == STEPS
    assert_same_run((h, jaxseq.interop.to_torch_state_dict(model)), reference["adamw"])


def _corrupt(path: pathlib.Path, how: str) -> None:
    blob = bytearray(path.read_bytes())
    if how == "flipped":
        blob[-3] ^= 0x10  # one bit of the data section
    elif how == "truncated":
        blob = blob[: len(blob) // 2]
    else:
        blob = bytearray()
    path.write_bytes(bytes(blob))


@pytest.mark.parametrize("how", ["flipped", "truncated", "empty"])
def test_corrupted_newest_checkpoint_falls_back(tmp_path, reference, how):
    run(tmp_path, stop=7)
    assert [s for s, _ in ts.list_checkpoints(tmp_path)] == [5, 6, 7]
    newest = tmp_path / ts.checkpoint_name(7)
    _corrupt(newest, how)
    with pytest.warns(ts.CheckpointWarning, match=f"skipping checkpoint {newest}"):
        resumed = run(tmp_path)
    assert resumed[0].resumed_step == 6
    assert_same_run(resumed, reference["adamw"])


def test_no_valid_checkpoint_starts_afresh(tmp_path, reference):
    run(tmp_path, stop=2, keep=1)
    _corrupt(tmp_path / ts.checkpoint_name(2), "truncated")
    with pytest.warns(ts.CheckpointWarning, match="step-000000002"):
        fresh = run(tmp_path)
    assert fresh[0].resumed_step is None
    assert_same_run(fresh, reference["adamw"])


def test_full_disk_keeps_the_old_checkpoint(tmp_path, reference, monkeypatch):
    run(tmp_path, stop=5, save_every=5)
    before = (tmp_path / ts.checkpoint_name(5)).read_bytes()
    real_write = os.write

    def full(fd, data):
        real_write(fd, bytes(data)[:100])  # a partial write, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError, match="No space left"):
        run(tmp_path, save_every=5)  # resumes from step 5, fails to save step 10
    monkeypatch.setattr(os, "write", real_write)
    assert sorted(p.name for p in tmp_path.iterdir()) == [ts.checkpoint_name(5)]  # no temp
    assert (tmp_path / ts.checkpoint_name(5)).read_bytes() == before
    assert ts.read(tmp_path / ts.checkpoint_name(5)).step == 5
    resumed = run(tmp_path, save_every=5)
    assert resumed[0].resumed_step == 5
    assert_same_run(resumed, reference["adamw"])


@pytest.mark.parametrize(
    "kw,opt,match",
    [
        ({"hidden_size": 5}, "adamw", r"another model: .*rnn\.weight_hh_l0: checkpoint has"),
        ({"cell": "gru"}, "adamw", "another model"),
        ({}, "sgd", "another optimizer: it holds 'adam' state, this run uses 'sgd'"),
    ],
)
def test_checkpoint_of_another_model_or_optimizer_is_refused(tmp_path, kw, opt, match):
    run(tmp_path, stop=2)
    with pytest.raises(ValueError, match=match) as e:
        run(tmp_path, opt=opt, **kw)
    assert ts.checkpoint_name(2) in str(e.value)


def test_another_optax_chain_is_refused(tmp_path):
    run(tmp_path, stop=2)  # clip + adamw(schedule)
    model = make_model()
    with pytest.raises(ValueError, match="another optimizer: it was written for optax:"):
        fit(model, batches, optax.adam(1e-2), epochs=1, checkpoint_dir=tmp_path)


def test_train_step_state_round_trips_every_bit(tmp_path):
    """save / restore on a TrainStep: parameters, optax state (moments in torch's layout,
    int32 counts) and the dropout RNG come back exactly, into another initialisation."""
    import jax

    run(None, stop=1)  # compiles the cached step
    step = _STEPS["adamw", ()]
    step.reset(make_model())
    for b in batches(0)[:2]:
        step(*b)
    train_state.save(step, tmp_path, step_count=2)
    saved = [np.asarray(a).copy() for a in jax.tree.leaves((step.params, step.opt_state))]
    rest = [np.asarray(jax.random.key_data(a) if jnp.issubdtype(a.dtype, jax.dtypes.prng_key)
                       else a).copy() for a in jax.tree.leaves(step.rest)]  # fmt: skip
    expected = [float(step(*b)) for b in batches(0)[2:]]
    step.reset(make_model(seed=2))  # other weights, other RNG, a fresh optimizer state
    assert train_state.restore(step, tmp_path).step == 2
    got = jax.tree.leaves((step.params, step.opt_state))
    for a, b in zip(saved, got, strict=True):
        assert a.dtype == b.dtype and a.tobytes() == np.asarray(b).tobytes()
    got_rest = [np.asarray(jax.random.key_data(a) if jnp.issubdtype(a.dtype, jax.dtypes.prng_key)
                           else a) for a in jax.tree.leaves(step.rest)]  # fmt: skip
    assert [a.tobytes() for a in rest] == [a.tobytes() for a in got_rest]
    tensors = ts.read(tmp_path / ts.checkpoint_name(2)).tensors
    assert tensors[ts.STEP_KEY].dtype == np.int64 and int(tensors[ts.STEP_KEY]) == 2
    # nnx.Linear's kernel (in, out) is stored in torch's layout (out, in), as its moments.
    assert tensors["head.weight"].shape == tensors["optim/exp_avg/head.weight"].shape == (3, 4)
    assert [float(step(*b)) for b in batches(0)[2:]] == expected


# --------------------------------------------------------------------------- seqfile


def test_keep_last_k_and_names(tmp_path):
    for step in (3, 1, 10, 2):
        ts.save(tmp_path, {"w": np.zeros(1)}, {"step": step}, keep=2, writer="jaxseq")
    assert [p.name for _, p in ts.list_checkpoints(tmp_path)] == [
        "step-000000003.safetensors",
        "step-000000010.safetensors",
    ]
    (tmp_path / "step-000000099.safetensors.tmp-1").write_bytes(b"partial")  # a killed save
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    assert [s for s, _ in ts.list_checkpoints(tmp_path)] == [3, 10]
    ts.save(tmp_path, {"w": np.zeros(1)}, {"step": 11}, keep=2, writer="jaxseq")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "notes.txt",
        "step-000000010.safetensors",
        "step-000000011.safetensors",
    ]
    assert ts.list_checkpoints(tmp_path / "missing") == []
    assert ts.load_latest(tmp_path / "missing") is None
    with pytest.raises(ValueError, match="keep must be >= 1"):
        ts.save(tmp_path, {}, {"step": 1}, keep=0, writer="jaxseq")


def test_write_atomic_fsyncs_file_and_directory(tmp_path, monkeypatch):
    synced: list[bool] = []
    real = os.fsync

    def fsync(fd):
        synced.append(os.path.isdir(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    seqfile.write_atomic(b"new", tmp_path / "f")
    assert synced == [False, True]  # the file, then its directory after the rename
    assert (tmp_path / "f").read_bytes() == b"new" and os.listdir(tmp_path) == ["f"]


def test_read_refuses_a_plain_checkpoint(tmp_path):
    path = tmp_path / "weights.safetensors"
    jaxseq.interop.save(make_model(), path)
    with pytest.raises(ValueError, match="not a training checkpoint"):
        ts.read(path)


def test_optimizer_table_is_one_mapping_both_ways():
    for table in ts.OPTIMIZER_STATE.values():
        for key, field in table.items():
            assert ts.optax_field(key) == field and ts.torch_key(field) == key
    assert set(ts.TORCH_OPTIMIZERS.values()) == set(ts.OPTAX_STATES.values())
    assert ts.parse_optim_name(ts.optim_name("exp_avg", "rnn.weight_ih_l0")) == (
        "exp_avg",
        "rnn.weight_ih_l0",
    )
    assert ts.parse_optim_name("rnn.weight_ih_l0") is None


def test_training_state_module_imports_neither_framework():
    code = (
        "import sys, seqfile.training_state; "
        "assert 'jax' not in sys.modules and 'torch' not in sys.modules, sorted(sys.modules)"
    )
    r = run_in_group([sys.executable, "-c", code], timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]


# --------------------------------------------------------------------------- processes

# A training script run as a subprocess: saves after every step, slowed down so that a
# kill lands anywhere in a step or a save; prints "step N" after each step; writes the
# final history and parameters to OUT as JSON.
KILLABLE = textwrap.dedent(
    """
    import json, sys, time
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np, optax, jax.numpy as jnp
    from flax import nnx
    import jaxseq.data, jaxseq.interop
    from jaxseq.models import SequenceClassifier
    from jaxseq.train import fit

    ckpt, out = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(0)
    X, L, Y = rng.standard_normal((20, 6, 3)), rng.integers(1, 7, 20), rng.integers(0, 3, 20)
    model = SequenceClassifier(3, 3, hidden_size=4, num_layers=2, dropout=0.3,
                               param_dtype=jnp.float64, rngs=nnx.Rngs(1))

    def callback(epoch, step, loss):
        print("step", step, flush=True)
        time.sleep(0.05)

    h = fit(model, lambda e: jaxseq.data.batches(X, L, Y, 6, seed=e),
            optax.adam(optax.cosine_decay_schedule(1e-2, 24)), epochs=6, clip_norm=0.5,
            callback=callback, checkpoint_dir=ckpt, save_every=1, keep=2)
    params = {k: v.tolist() for k, v in jaxseq.interop.to_torch_state_dict(model).items()}
    with open(out, "w") as f:
        json.dump({"losses": list(h), "epochs": h.epochs, "params": params,
                   "resumed": h.resumed_step}, f)
    """
)


def _env() -> dict[str, str]:
    """The environment without conftest's one host device (the scripts choose theirs)."""
    return env_choosing_devices()


def test_killed_training_resumes_bit_identical(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(KILLABLE)
    ref, out = tmp_path / "ref.json", tmp_path / "out.json"
    r = run_in_group(
        [sys.executable, str(script), str(tmp_path / "ref"), str(ref)], 180, env=_env()
    )
    assert r.returncode == 0, r.stderr[-4000:]
    rnd = random.Random(16)
    ckpt = tmp_path / "ckpt"
    run_and_kill(
        [sys.executable, str(script), str(ckpt), str(out)],
        after_lines=rnd.randint(2, 14),
        delay=rnd.uniform(0.0, 0.05),
        timeout=120,
        env=_env(),
    )
    assert not out.exists() and ts.list_checkpoints(ckpt)
    r = run_in_group([sys.executable, str(script), str(ckpt), str(out)], 180, env=_env())
    assert r.returncode == 0, r.stderr[-4000:]
    a, b = json.loads(ref.read_text()), json.loads(out.read_text())
    assert b["resumed"] is not None and 0 < b["resumed"] < 24
    assert a["resumed"] is None and len(a["losses"]) == 24
    assert (a["losses"], a["epochs"], a["params"]) == (b["losses"], b["epochs"], b["params"])


# Two processes under `python -m jaxseq.launch --nproc 2`, each feeding its rows of every
# batch; STOP > 0 ends both processes right after step STOP (and its save).
DATA_PARALLEL = textwrap.dedent(
    """
    import json, os, sys
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np, optax, jax.numpy as jnp
    from flax import nnx
    import jaxseq.data, jaxseq.interop
    from jaxseq.models import SequenceClassifier
    from jaxseq.train import fit, initialize_distributed

    ckpt, out, stop = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rank, world = initialize_distributed()
    assert world == 2
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("batch",))
    rng = np.random.default_rng(0)
    X, L, Y = rng.standard_normal((20, 6, 3)), rng.integers(1, 7, 20), rng.integers(0, 3, 20)

    def batches(epoch):
        for x, lengths, y in jaxseq.data.batches(X, L, Y, 6, seed=epoch):
            rows = np.array_split(np.arange(len(y)), world)[rank]
            yield x[rows], lengths[rows], y[rows]

    def callback(epoch, step, loss):
        if step == stop:
            sys.stdout.flush()
            os._exit(0)

    model = SequenceClassifier(3, 3, hidden_size=4, param_dtype=jnp.float64, rngs=nnx.Rngs(1))
    h = fit(model, batches, optax.adam(1e-2), epochs=3, clip_norm=0.5, mesh=mesh,
            callback=callback, checkpoint_dir=ckpt, save_every=1)
    if rank == 0:
        params = {k: v.tolist() for k, v in jaxseq.interop.to_torch_state_dict(model).items()}
        with open(out, "w") as f:
            json.dump({"losses": list(h), "params": params, "resumed": h.resumed_step}, f)
    """
)


def test_two_process_data_parallel_run_resumes_bit_identical(tmp_path):
    script = tmp_path / "train_dp.py"
    script.write_text(DATA_PARALLEL)
    launcher = [sys.executable, "-m", "jaxseq.launch", "--nproc", "2", "--timeout", "150"]

    def launch(ckpt: str, out: str, stop: int) -> None:
        r = run_in_group([*launcher, str(script), ckpt, out, str(stop)], 180, env=_env())
        assert r.returncode == 0, r.stderr[-4000:]

    ref, out = tmp_path / "ref.json", tmp_path / "out.json"
    launch(str(tmp_path / "ref"), str(ref), 0)
    launch(str(tmp_path / "ckpt"), str(out), 6)  # stops mid-epoch 1
    assert not out.exists()
    assert [s for s, _ in ts.list_checkpoints(tmp_path / "ckpt")] == [4, 5, 6]
    launch(str(tmp_path / "ckpt"), str(out), 0)
    a, b = json.loads(ref.read_text()), json.loads(out.read_text())
    assert b["resumed"] == 6 and len(a["losses"]) == 12
    assert (a["losses"], a["params"]) == (b["losses"], b["params"])


def test_classify_example_resumes_from_its_checkpoints(tmp_path):
    """``examples/classify.py --checkpoint-dir``: the same command again resumes every run
    (one line each) and reports the same test accuracies."""
    env = {**_env(), "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    argv = [sys.executable, str(ROOT / "examples" / "classify.py"), "--tiny", "--no-progress",
            "--models", "gru", "--devices", "1", "--checkpoint-dir", str(tmp_path / "ck")]  # fmt: skip
    results = []
    for n in range(2):
        out = tmp_path / f"out{n}"
        r = run_in_group([*argv, "--out", str(out)], 240, cwd=tmp_path, env=env)
        assert r.returncode == 0, r.stderr[-4000:]
        resumed = [line for line in r.stdout.splitlines() if "resumed from" in line]
        assert resumed == ([] if n == 0 else [
            "seed 0 GRU jax: resumed from step 4 (epoch 1)",
            "seed 0 GRU torch: resumed from step 4 (epoch 1)",
        ])  # fmt: skip
        results.append(json.loads((out / "results.json").read_text())["runs"])
    assert [r["test_acc"] for r in results[0]] == [r["test_acc"] for r in results[1]]
    assert [r["curves"] for r in results[0]] == [r["curves"] for r in results[1]]


# --------------------------------------------------------------------------- streams

# Truncated backpropagation through time: a text read as 3 rows in 4 chunks per epoch, the
# state carried from chunk to chunk (fit(carry_state=True)), dropout on. A resumed epoch
# must continue from the carried state it was cut at.
STREAM = jaxseq.data.stream_batches(np.random.default_rng(1).integers(0, 6, 3 * 4 * 5 + 1), 3, 5)
STREAM_STEPS = 3 * len(STREAM)
_STREAM_STEP: list = []


def run_stream(ckpt=None, *, stop=None):
    """``fit(CharLM, STREAM, adam, epochs=3, carry_state=True, ...)``, compiled once;
    ``(history, params)`` or ``(None, None)`` when stopped after step ``stop``."""
    from jaxseq.models import CharLM
    from jaxseq.train import language_model_stream_loss

    model = CharLM(6, embed_dim=3, hidden_size=4, cell="gru", dropout=0.3,
                   param_dtype=jnp.float64, rngs=nnx.Rngs(3))  # fmt: skip
    model.train()
    if not _STREAM_STEP:
        tx = optax.chain(clip_by_global_norm_torch(0.5), optax.adam(1e-2))
        _STREAM_STEP.append(TrainStep(model, tx, language_model_stream_loss,
                                      sync_model=False, carry_state=True))  # fmt: skip
    step = _STREAM_STEP[0]
    step.reset(model)

    def callback(epoch, n, loss):
        if n == stop:
            raise Stop

    try:
        h = step.fit(STREAM, epochs=3, callback=callback, checkpoint_dir=ckpt, save_every=1)
    except Stop:
        return None, None
    return h, jaxseq.interop.to_torch_state_dict(model)


def test_resumed_stream_continues_from_the_carried_state(tmp_path, monkeypatch):
    reference = run_stream()
    for stop in (2, 4, 7):  # mid-epoch 0, at the end of epoch 0, mid-epoch 1
        ckpt = tmp_path / str(stop)
        assert run_stream(ckpt, stop=stop) == (None, None)
        state = ts.load_latest(ckpt)
        assert state is not None and state.step == stop
        assert state.tensors["jax/carry/state"].shape == (1, 3, 4)  # (layers, rows, hidden)
        resumed = run_stream(ckpt)
        assert resumed[0].resumed_step == stop and len(resumed[0]) == STREAM_STEPS
        assert_same_run(resumed, reference)
    # Without the carried state in the checkpoint the resumed epoch starts from None: the
    # losses after the resume differ (what the checkpoint's state is for).
    monkeypatch.setattr(TrainStep, "host_state", lambda self: None)
    run_stream(tmp_path / "none", stop=2)
    h, _ = run_stream(tmp_path / "none")
    assert list(h)[:2] == list(reference[0])[:2] and list(h)[2] != list(reference[0])[2]


KILLABLE_STREAM = textwrap.dedent(
    """
    import json, sys, time
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np, optax, jax.numpy as jnp
    from flax import nnx
    import jaxseq.data, jaxseq.interop
    from jaxseq.models import CharLM
    from jaxseq.train import fit, language_model_stream_loss

    ckpt, out = sys.argv[1], sys.argv[2]
    ids = np.random.default_rng(1).integers(0, 6, 3 * 6 * 5 + 1)
    chunks = jaxseq.data.stream_batches(ids, 3, 5)  # 6 chunks per epoch
    model = CharLM(6, embed_dim=3, hidden_size=4, cell="lstm", dropout=0.3,
                   param_dtype=jnp.float64, rngs=nnx.Rngs(3))

    def callback(epoch, step, loss):
        print("step", step, flush=True)
        time.sleep(0.05)

    h = fit(model, chunks, optax.adam(1e-2), epochs=3, clip_norm=0.5,
            loss_fn=language_model_stream_loss, carry_state=True, callback=callback,
            checkpoint_dir=ckpt, save_every=1, keep=2)
    params = {k: v.tolist() for k, v in jaxseq.interop.to_torch_state_dict(model).items()}
    with open(out, "w") as f:
        json.dump({"losses": list(h), "epochs": h.epochs, "params": params,
                   "resumed": h.resumed_step}, f)
    """
)


def test_killed_stream_training_resumes_bit_identical(tmp_path):
    """SIGKILL at a seeded random moment of a carried-state run (mid-epoch, mid-save):
    the resumed run continues the stream, the same losses and parameters bit for bit."""
    script = tmp_path / "train_stream.py"
    script.write_text(KILLABLE_STREAM)
    ref, out = tmp_path / "ref.json", tmp_path / "out.json"
    r = run_in_group(
        [sys.executable, str(script), str(tmp_path / "ref"), str(ref)], 180, env=_env()
    )
    assert r.returncode == 0, r.stderr[-4000:]
    rnd = random.Random(3)
    ckpt = tmp_path / "ckpt"
    run_and_kill(
        [sys.executable, str(script), str(ckpt), str(out)],
        after_lines=rnd.choice([2, 3, 4, 8, 9, 10, 14, 15]),  # never at an epoch's end
        delay=rnd.uniform(0.0, 0.05),
        timeout=120,
        env=_env(),
    )
    assert not out.exists() and ts.list_checkpoints(ckpt)
    r = run_in_group([sys.executable, str(script), str(ckpt), str(out)], 180, env=_env())
    assert r.returncode == 0, r.stderr[-4000:]
    a, b = json.loads(ref.read_text()), json.loads(out.read_text())
    assert b["resumed"] is not None and b["resumed"] % 6 != 0  # resumed mid-epoch
    assert a["resumed"] is None and len(a["losses"]) == 18
    assert (a["losses"], a["epochs"], a["params"]) == (b["losses"], b["epochs"], b["params"])
