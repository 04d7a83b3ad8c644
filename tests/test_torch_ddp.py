"""``torchseq.train.fit(..., ddp=True)`` (DistributedDataParallel, gloo on CPU) equals
single-process training: the same per-step losses and final parameters to 1e-9 relative,
with the rows of every batch split over 2 processes as jaxseq splits them (the 7-row batch
unevenly, 4/3). The two processes run under ``python -m jaxseq.launch --nproc 2`` (gloo
over 127.0.0.1); every subprocess is bounded in time and killed with its process group on
failure or timeout (the launcher's children die with it).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
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


# float64 SequenceClassifier of each cell kind, with lengths, Adam after clip_grad_norm_;
# batches of 8 and 7 rows, each process taking np.array_split's share (4/4 and 4/3).
SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np, torch
    from torchseq.models import SequenceClassifier
    from torchseq.train import finalize_distributed, fit, initialize_distributed

    torch.set_num_threads(1)
    out, mode = sys.argv[1], sys.argv[2]
    rank, world = initialize_distributed()
    assert (world == 2) == (mode == "launched"), (mode, world)

    def batches(rank, world, sizes=(8, 7)):
        rng = np.random.default_rng(0)
        out = []
        for n in sizes:
            x, lengths, y = rng.standard_normal((n, 6, 3)), rng.integers(1, 7, n), rng.integers(0, 3, n)
            part = np.array_split(np.arange(n), world)[rank]  # this process's rows
            out.append((x[part], lengths[part], y[part]))
        return out

    results = {}
    for cell in ("rnn", "lstm", "gru"):
        torch.manual_seed(1)
        model = SequenceClassifier(3, 3, hidden_size=5, cell=cell).double()
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        h = fit(model, batches(rank, world), opt, epochs=10, clip_norm=0.5, ddp=world > 1)
        results[cell] = {
            "losses": list(h),
            "params": [p.detach().numpy().ravel().tolist() for p in model.parameters()],
        }
        if world > 1:  # every rank's curve is the global one
            import torch.distributed as dist
            gathered = [None] * world
            dist.all_gather_object(gathered, list(h))
            assert all(g == gathered[0] for g in gathered), gathered

    if world > 1:  # a process without rows: the same clear error on every process
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


def test_two_processes_equal_one_process(tmp_path):
    script = tmp_path / "train_ddp.py"
    script.write_text(SCRIPT)
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    launcher = [sys.executable, "-m", "jaxseq.launch", "--nproc", "2", "--timeout", "90"]
    r = _run([*launcher, str(script), str(two), "launched"], timeout=120)
    assert r.returncode == 0, r.stderr[-4000:]
    r = _run([sys.executable, str(script), str(one), "single"], timeout=120)
    assert r.returncode == 0, r.stderr[-4000:]
    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    for cell in ("rnn", "lstm", "gru"):
        l0, l1 = np.array(a[cell]["losses"]), np.array(b[cell]["losses"])
        assert len(l0) == 20
        np.testing.assert_allclose(l1, l0, rtol=1e-9, atol=0)
        for p0, p1 in zip(a[cell]["params"], b[cell]["params"], strict=True):
            np.testing.assert_allclose(p1, p0, rtol=1e-9, atol=1e-12)


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
