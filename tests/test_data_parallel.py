"""Data-parallel training (``jaxseq.train`` with ``mesh=``) equals single-device training.

JAX fixes its device count at first use, so the two-device runs happen in a fresh
interpreter with ``jax_num_cpu_devices=2``; the two-process run goes through ``python -m
jaxseq.launch --nproc 2`` (gloo collectives over 127.0.0.1). Every subprocess is bounded
in time and killed (with its process group) on failure or timeout.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _procs import run_in_group

from jaxseq import train

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _run(argv: list[str], timeout: float, cwd: pathlib.Path = ROOT) -> subprocess.CompletedProcess:
    """``run_in_group`` without XLA_FLAGS: conftest forces one host device; the scripts choose."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return run_in_group(argv, timeout, cwd=cwd, env=env)


# The training both tests run: float64 SequenceClassifier of each cell kind, with lengths,
# Adam after torch's global-norm clipping; batches of 8 and 7 rows (7 is padded).
TRAINING = textwrap.dedent(
    """
    import numpy as np, optax, jax, jax.numpy as jnp
    from flax import nnx
    from jaxseq.models import SequenceClassifier
    from jaxseq.train import fit

    def batches(rank=0, world=1):
        rng = np.random.default_rng(0)
        out = []
        for n in (8, 7):
            x, lengths, y = rng.standard_normal((n, 6, 3)), rng.integers(1, 7, n), rng.integers(0, 3, n)
            part = np.array_split(np.arange(n), world)[rank]  # this process's rows
            out.append((x[part], lengths[part], y[part]))
        return out

    def train(cell, mesh, rank=0, world=1):
        model = SequenceClassifier(3, 3, hidden_size=5, cell=cell, param_dtype=jnp.float64,
                                   rngs=nnx.Rngs(1))
        h = fit(model, batches(rank, world), optax.adam(1e-2), epochs=10, clip_norm=0.5,
                mesh=mesh)
        params = [np.asarray(a) for a in jax.tree.leaves(nnx.state(model, nnx.Param))]
        return np.array(h), params
    """
)

TWO_DEVICES = (
    """
import jax
jax.config.update("jax_num_cpu_devices", 2)
jax.config.update("jax_enable_x64", True)
"""
    + TRAINING
    + textwrap.dedent(
        """
    from jax.sharding import Mesh
    from jaxseq.train import TrainStep
    assert jax.device_count() == 2
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    worst = 0.0
    for cell in ("rnn", "lstm", "gru"):
        (l0, p0), (l1, p1) = train(cell, None), train(cell, mesh)
        assert len(l0) == len(l1) == 20
        worst = max(worst, float(np.max(np.abs(l1 - l0) / np.abs(l0))))
        for a, b in zip(p0, p1, strict=True):
            worst = max(worst, float(np.max(np.abs(b - a) / np.maximum(np.abs(a), 1e-3))))
    assert worst <= 1e-9, worst

    # A loss without `weights`: fine while batches split evenly, a clear error once padded.
    def plain_loss(model, x, lengths, y):
        return jnp.mean(model(x, lengths) ** 2)
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
    print(f"ok worst {worst:.1e}")
    """
    )
)


def test_two_devices_equal_one_device():
    r = _run([sys.executable, "-c", TWO_DEVICES], timeout=240)
    assert r.returncode == 0, r.stderr[-4000:]
    assert r.stdout.startswith("ok worst"), r.stdout


MULTI_PROCESS = (
    """
import sys, jax
jax.config.update("jax_enable_x64", True)
from jaxseq.train import initialize_distributed
"""
    + TRAINING
    + textwrap.dedent(
        """
    out = sys.argv[1]
    if sys.argv[2] == "launched":
        rank, world = initialize_distributed()
        assert world == 2 and len(jax.devices()) == 2 and len(jax.local_devices()) == 1
        mesh = jax.sharding.Mesh(np.array(jax.devices()), ("batch",))
    else:
        rank, world, mesh = 0, 1, None
    results = {}
    for cell in ("rnn", "lstm", "gru"):
        losses, params = train(cell, mesh, rank, world)
        results[cell] = {"losses": losses.tolist(), "params": [p.ravel().tolist() for p in params]}
    if rank == 0:
        import json
        with open(out, "w") as f:
            json.dump(results, f)
    """
    )
)


def test_two_processes_equal_one_process(tmp_path):
    script = tmp_path / "train_dp.py"
    script.write_text(MULTI_PROCESS)
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    launcher = [sys.executable, "-m", "jaxseq.launch", "--nproc", "2", "--timeout", "150"]
    r = _run([*launcher, str(script), str(two), "launched"], timeout=180)
    assert r.returncode == 0, r.stderr[-4000:]
    r = _run([sys.executable, str(script), str(one), "single"], timeout=180)
    assert r.returncode == 0, r.stderr[-4000:]
    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    for cell in ("rnn", "lstm", "gru"):
        l0, l1 = np.array(a[cell]["losses"]), np.array(b[cell]["losses"])
        assert len(l0) == 20
        np.testing.assert_allclose(l1, l0, rtol=1e-9, atol=0)
        for p0, p1 in zip(a[cell]["params"], b[cell]["params"], strict=True):
            np.testing.assert_allclose(p1, p0, rtol=1e-9, atol=1e-12)


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
