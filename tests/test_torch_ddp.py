"""``torchseq.train.fit(..., ddp=True)`` (DistributedDataParallel, gloo on CPU) equals
single-process training, and both equal the JAX reference run of ``tests/_dp_training.py``:
the same 50 per-step losses and final parameters to 1e-9 relative from the same initial
weights, with the rows of every batch split over 2 processes as jaxseq splits them (the
7-row batch unevenly, 4/3). The two processes run under ``python -m jaxseq.launch --nproc
2`` (gloo over 127.0.0.1); every subprocess is bounded in time and killed with its process
group on failure or timeout (the launcher's children die with it)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import pytest
from _dp_training import JAX_TRAINING, TORCH_TRAINING, assert_same
from _procs import run_in_group

pytest.importorskip("torch")
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from torchseq import train  # noqa: E402
from torchseq.models import SequenceClassifier  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
TORCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch without gloo"
)


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    """``run_in_group`` without torch's distributed variables."""
    env = {k: v for k, v in os.environ.items() if k not in TORCH_ENV}
    return run_in_group(argv, timeout, env=env)


# The run of tests/_dp_training.py, from the JAX reference run's initial weights; when
# launched, each process takes np.array_split's share of every batch (4/4 and 4/3).
SCRIPT = (
    """
import json, sys
import torch
from torchseq.train import finalize_distributed, initialize_distributed
"""
    + TORCH_TRAINING
    + textwrap.dedent(
        """
    torch.set_num_threads(1)
    out, init, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    rank, world = initialize_distributed()
    assert (world == 2) == (mode == "launched"), (mode, world)
    results = {}
    for cell in ("rnn", "lstm", "gru"):
        results[cell] = train(cell, rank, world, init)
        if world > 1:  # every rank's curve is the global one
            import torch.distributed as dist
            gathered = [None] * world
            dist.all_gather_object(gathered, results[cell]["losses"])
            assert all(g == gathered[0] for g in gathered), gathered

    if world > 1:  # a process without rows: the same clear error on every process
        from torchseq.models import SequenceClassifier
        model = SequenceClassifier(3, 3, hidden_size=5)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        try:
            fit(model, batches(rank, world, sizes=(1,)), opt, ddp=True)
        except ValueError as e:
            assert "at least one row" in str(e), e
        else:
            raise AssertionError("no ValueError for a process without rows")
    assert "jax" not in sys.modules  # torchseq never imports jax
    if rank == 0:
        with open(out, "w") as f:
            json.dump(results, f)
    finalize_distributed()  # barrier, then destroy the group (no-op alone)
    # Everything is written and the group is gone; skip the interpreter's teardown, where
    # gloo/DDP objects of torch 2.13 can still abort ("terminate called without an active
    # exception", exit 134) on a loaded machine.
    sys.stdout.flush()
    sys.stderr.flush()
    import os
    os._exit(0)
    """
    )
)

JAX_SINGLE = (
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


def test_torch_one_and_two_processes_equal_jax(tmp_path):
    """torch (1 process, and DDP over 2) follows the JAX reference run: 50 float64 steps
    from the same initial weights, to 1e-9 relative (with tests/test_data_parallel.py,
    which ties JAX's 2-device and 2-process runs to the same reference: all five agree)."""
    init, jax_out = tmp_path / "init", tmp_path / "jax.json"
    init.mkdir()
    r = _run([sys.executable, "-c", JAX_SINGLE, str(jax_out), str(init)], timeout=180)
    assert r.returncode == 0, r.stderr[-4000:]
    script = tmp_path / "train_ddp.py"
    script.write_text(SCRIPT)
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    launcher = [sys.executable, "-m", "jaxseq.launch", "--nproc", "2", "--timeout", "90"]
    r = _run([*launcher, str(script), str(two), str(init), "launched"], timeout=120)
    assert r.returncode == 0, r.stderr[-4000:]
    r = _run([sys.executable, str(script), str(one), str(init), "single"], timeout=120)
    assert r.returncode == 0, r.stderr[-4000:]
    worst = max(assert_same(jax_out, one), assert_same(jax_out, two), assert_same(one, two))
    print(f"worst relative difference {worst:.1e}")


def test_initialize_distributed_alone_is_a_no_op(monkeypatch):
    for name in TORCH_ENV:
        monkeypatch.delenv(name, raising=False)
    assert train.initialize_distributed() == (0, 1)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert train.initialize_distributed() == (0, 1)
    assert not dist.is_initialized()


def test_fit_ddp_in_one_process_is_plain_training(monkeypatch):
    for name in TORCH_ENV:
        monkeypatch.delenv(name, raising=False)
    batch = (torch.ones(4, 5, 2), torch.tensor([5, 1, 3, 2]), torch.tensor([0, 1, 2, 0]))
    runs = []
    for ddp in (False, True):
        torch.manual_seed(0)
        model = SequenceClassifier(2, 3, hidden_size=4)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        runs.append(list(train.fit(model, [batch], opt, epochs=3, clip_norm=1.0, ddp=ddp)))
    assert runs[0] == runs[1]


def test_fit_ddp_under_a_launcher_needs_the_process_group(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    model = SequenceClassifier(2, 3, hidden_size=4)
    batch = (torch.ones(2, 5, 2), torch.tensor([5, 1]), torch.tensor([0, 1]))
    with pytest.raises(RuntimeError, match="initialize_distributed"):
        train.fit(model, [batch], torch.optim.SGD(model.parameters(), lr=0.1), ddp=True)
