"""Data-parallel training (``jaxseq.train`` with ``mesh=``) equals single-device training.

The run is ``tests/_dp_training.py``'s (50 float64 steps of each cell kind, uneven
batches); 1 device, 2 devices and 2 processes must agree to 1e-9 relative, and
``tests/test_torch_ddp.py`` ties torch (1 process and DDP) to the same reference.

JAX fixes its device count at first use, so the two-device runs happen in a fresh
interpreter with ``jax_num_cpu_devices=2``; the two-process run goes through ``python -m
jaxseq.launch --nproc 2`` (gloo collectives over 127.0.0.1). Every subprocess is bounded
in time and killed (with its process group) on failure or timeout.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _dp_training import JAX_TRAINING, assert_same
from _procs import env_choosing_devices, run_in_group

from jaxseq import train

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _run(argv: list[str], timeout: float, cwd: pathlib.Path = ROOT) -> subprocess.CompletedProcess:
    """``run_in_group`` without conftest's one host device: the scripts choose."""
    return run_in_group(argv, timeout, cwd=cwd, env=env_choosing_devices())


SINGLE = (
    """
import sys, json, jax
jax.config.update("jax_enable_x64", True)
"""
    + JAX_TRAINING
    + textwrap.dedent(
        """
    out, init = sys.argv[1], sys.argv[2]
    results = {c: train(c, None, init=init, save_init=True) for c in ("rnn", "lstm", "gru")}
    with open(out, "w") as f:
        json.dump(results, f)
    """
    )
)


def _single(tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """The reference run (1 process, 1 device); returns its results and initial weights."""
    script, out, init = tmp_path / "single.py", tmp_path / "single.json", tmp_path / "init"
    init.mkdir()
    script.write_text(SINGLE)
    r = _run([sys.executable, str(script), str(out), str(init)], timeout=180)
    assert r.returncode == 0, r.stderr[-4000:]
    return out, init


TWO_DEVICES = (
    """
import sys, json, jax
jax.config.update("jax_num_cpu_devices", 2)
jax.config.update("jax_enable_x64", True)
"""
    + JAX_TRAINING
    + textwrap.dedent(
        """
    from jax.sharding import Mesh
    from jaxseq.train import TrainStep
    assert jax.device_count() == 2
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    out, init = sys.argv[1], sys.argv[2]
    results = {cell: train(cell, mesh, init=init) for cell in ("rnn", "lstm", "gru")}
    with open(out, "w") as f:
        json.dump(results, f)

    # A loss without `weights`: fine while batches split evenly, a clear error once padded.
    def plain_loss(model, x, lengths, y):
        return jnp.mean(model(x, lengths) ** 2)
    from jaxseq.models import SequenceClassifier
    model = SequenceClassifier(3, 3, hidden_size=5, param_dtype=jnp.float64, rngs=nnx.Rngs(1))
    step = TrainStep(model, optax.adam(1e-2), plain_loss, mesh=mesh)
    (x, lengths, y), (x7, lengths7, y7) = batches()
    float(step(x, lengths, y))
    try:
        step(x7, lengths7, y7)
    except TypeError as e:
        assert "weights" in str(e) and "padded" in str(e), e
    else:
        raise AssertionError("no TypeError for a padded batch and a loss without weights")
    print("ok")
    """
    )
)


def test_two_devices_equal_one_device(tmp_path):
    reference, init = _single(tmp_path)
    out = tmp_path / "two_devices.json"
    r = _run([sys.executable, "-c", TWO_DEVICES, str(out), str(init)], timeout=240)
    assert r.returncode == 0, r.stderr[-4000:]
    assert r.stdout.startswith("ok"), r.stdout
    assert_same(reference, out)


MULTI_PROCESS = (
    """
import sys, json, jax
jax.config.update("jax_enable_x64", True)
from jaxseq.train import initialize_distributed
"""
    + JAX_TRAINING
    + textwrap.dedent(
        """
    out, init = sys.argv[1], sys.argv[2]
    rank, world = initialize_distributed()
    assert world == 2 and len(jax.devices()) == 2 and len(jax.local_devices()) == 1
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("batch",))
    results = {cell: train(cell, mesh, rank, world, init=init) for cell in ("rnn", "lstm", "gru")}
    if rank == 0:
        with open(out, "w") as f:
            json.dump(results, f)
    """
    )
)


def test_two_processes_equal_one_process(tmp_path):
    reference, init = _single(tmp_path)
    script, out = tmp_path / "train_dp.py", tmp_path / "two_processes.json"
    script.write_text(MULTI_PROCESS)
    launcher = [sys.executable, "-m", "jaxseq.launch", "--nproc", "2", "--timeout", "150"]
    r = _run([*launcher, str(script), str(out), str(init)], timeout=180)
    assert r.returncode == 0, r.stderr[-4000:]
    assert_same(reference, out)


def test_weighted_losses_ignore_zero_weight_rows():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.standard_normal((5, 3)))
    labels = jnp.array([0, 2, 1, 1, 0])
    w = jnp.array([1.0, 1.0, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(
        train.cross_entropy(logits, labels, w), train.cross_entropy(logits[:3], labels[:3]), 1e-14
    )
    x, target = jnp.asarray(rng.standard_normal((5, 2))), jnp.asarray(rng.standard_normal((5, 2)))
    np.testing.assert_allclose(
        train.regression_loss(lambda v: 2 * v, x, target, weights=w),
        train.regression_loss(lambda v: 2 * v, x[:3], target[:3]),
        1e-14,
    )
    with pytest.raises(ValueError, match="one per row"):
        train.cross_entropy(logits, labels, w[:3])


def test_initialize_distributed_reads_the_launcher_environment(monkeypatch):
    calls: list[dict] = []
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    monkeypatch.setenv("JAXSEQ_COORDINATOR", "127.0.0.1:1234")
    monkeypatch.setenv("JAXSEQ_NUM_PROCESSES", "3")
    monkeypatch.setenv("JAXSEQ_PROCESS_ID", "2")
    train.initialize_distributed()
    train.initialize_distributed("127.0.0.1:99", 2, 0)  # arguments win over the environment
    for name in ("JAXSEQ_COORDINATOR", "JAXSEQ_NUM_PROCESSES", "JAXSEQ_PROCESS_ID"):
        monkeypatch.delenv(name)
    train.initialize_distributed()  # nothing given: JAX's cluster auto-detection decides
    assert calls == [
        {"coordinator_address": "127.0.0.1:1234", "num_processes": 3, "process_id": 2},
        {"coordinator_address": "127.0.0.1:99", "num_processes": 2, "process_id": 0},
        {"coordinator_address": None, "num_processes": None, "process_id": None},
    ]


def test_mesh_without_batch_axis_is_rejected():
    import optax
    from flax import nnx

    from jaxseq.models import SequenceClassifier

    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    model = SequenceClassifier(2, 3, hidden_size=4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="'batch'"):
        train.TrainStep(model, optax.adam(1e-2), mesh=mesh)


# Truncated backpropagation through time over 2 devices: the carried state sharded along
# the batch. Streams of 4 rows (2 per device) and of 3 rows (padded to 4: the state holds
# the padding row too), and a mesh run stopped mid-epoch and resumed from its checkpoint.
CARRY_TWO_DEVICES = textwrap.dedent(
    """
    import sys, tempfile
    import jax
    jax.config.update("jax_num_cpu_devices", 2)
    jax.config.update("jax_enable_x64", True)
    import numpy as np, optax, jax.numpy as jnp
    from flax import nnx
    from jax.sharding import Mesh
    from jaxseq.data import stream_batches
    from jaxseq.models import CharLM
    from jaxseq.train import TrainStep, language_model_stream_loss

    assert jax.device_count() == 2
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    ids = np.random.default_rng(0).integers(0, 7, size=80)

    def model():
        return CharLM(7, embed_dim=5, hidden_size=6, cell="lstm", param_dtype=jnp.float64,
                      rngs=nnx.Rngs(0))

    def step(m=None):
        return TrainStep(model(), optax.adam(1e-2), language_model_stream_loss,
                         mesh=m, carry_state=True, sync_model=False)

    def close(a, b):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-11, atol=1e-13)

    for rows in (4, 3):
        chunks = stream_batches(ids, rows, 5)
        one, two = step(), step(mesh)
        for x, y in chunks:
            close(two(x, y), one(x, y))
        for a, b in zip(jax.tree.leaves((two.params, two.host_state())),
                        jax.tree.leaves((one.params, one.state))):
            close(np.asarray(a)[:, :rows] if a.ndim == 3 and a.shape[1] == 4 else a, b)
        h = two.state[0]
        assert h.shape == (1, 4, 6) and len(h.sharding.device_set) == 2, h.sharding
        assert h.sharding.shard_shape(h.shape) == (1, 2, 6), h.sharding
        assert (one.compiles, two.compiles) == (2, 2)

    # Stopped after step 5 of 8 (epoch 1, its first chunk), resumed: the same run.
    chunks = stream_batches(ids, 4, 5)[:4]

    class Stop(Exception):
        pass

    def run(ckpt, stop=None, m=mesh):
        s = step(m)

        def callback(epoch, n, loss):
            if n == stop:
                raise Stop
        try:
            h = s.fit(chunks, epochs=2, callback=callback, checkpoint_dir=ckpt, save_every=1)
        except Stop:
            return None
        s.sync()
        return list(h), jax.tree.leaves(nnx.state(s.model, nnx.Param))

    whole, single = run(None), run(None, m=None)
    with tempfile.TemporaryDirectory() as d:
        assert run(d, stop=6) is None
        resumed = run(d)
    assert resumed[0] == whole[0]
    for a, b, c in zip(resumed[1], whole[1], single[1]):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
        close(a, c)
    close(whole[0], single[0])
    print("ok")
    """
)


def test_carried_state_over_two_devices_equals_one_device():
    r = _run([sys.executable, "-c", CARRY_TWO_DEVICES], timeout=240)
    assert r.returncode == 0, r.stderr[-4000:]
    assert r.stdout.startswith("ok"), r.stdout


# The carried state over 2 processes (one device each), each feeding its rows of a 3-row
# stream (2 + 1, padded to 2 + 2): the state is gathered whole into the checkpoint and cut
# along the batch again on resume. Every process also runs the one-device reference.
CARRY_TWO_PROCESSES = textwrap.dedent(
    """
    import sys
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np, optax, jax.numpy as jnp
    from flax import nnx
    from jax.experimental import multihost_utils
    from jaxseq.data import stream_batches
    from jaxseq.models import CharLM
    from jaxseq.train import fit, initialize_distributed, language_model_stream_loss

    rank, world = initialize_distributed()
    assert world == 2
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("batch",))
    full = stream_batches(np.random.default_rng(0).integers(0, 7, size=80), 3, 5)[:4]
    rows = np.array_split(np.arange(3), world)[rank]
    mine = [(x[rows], y[rows]) for x, y in full]

    class Stop(Exception):
        pass

    def run(batches, m, ckpt=None, stop=None):
        model = CharLM(7, embed_dim=5, hidden_size=6, cell="gru", param_dtype=jnp.float64,
                       rngs=nnx.Rngs(0))

        def callback(epoch, n, loss):
            if n == stop:
                raise Stop
        try:
            h = fit(model, batches, optax.adam(1e-2), epochs=2, mesh=m, carry_state=True,
                    loss_fn=language_model_stream_loss, callback=callback,
                    checkpoint_dir=ckpt, save_every=1)
        except Stop:
            return None
        return list(h), [np.asarray(a) for a in jax.tree.leaves(nnx.state(model, nnx.Param))]

    reference, whole = run(full, None), run(mine, mesh)
    assert run(mine, mesh, sys.argv[1], stop=6) is None  # mid-epoch 1
    multihost_utils.sync_global_devices("saved")  # process 0 has written step 6
    resumed = run(mine, mesh, sys.argv[1])
    assert resumed[0] == whole[0]
    for a, b, c in zip(resumed[1], whole[1], reference[1]):
        assert a.tobytes() == b.tobytes()
        np.testing.assert_allclose(a, c, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(whole[0], reference[0], rtol=1e-11)
    print("ok", rank)
    """
)


def test_carried_state_over_two_processes_resumes_and_equals_one_process(tmp_path):
    script = tmp_path / "carry_dp.py"
    script.write_text(CARRY_TWO_PROCESSES)
    launcher = [sys.executable, "-m", "jaxseq.launch", "--nproc", "2", "--timeout", "150"]
    r = _run([*launcher, str(script), str(tmp_path / "ckpt")], timeout=180)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "ok 0" in r.stdout and "ok 1" in r.stdout, r.stdout
