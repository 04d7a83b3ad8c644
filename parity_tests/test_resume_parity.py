"""Stopping and resuming in torch, and across frameworks.

* ``torchseq.train.fit(checkpoint_dir=...)`` resumed after a stop (mid-epoch or at an
  epoch's end, batches from a list or a shuffling ``DataLoader``, dropout on, a
  ``LambdaLR`` schedule) or after SIGKILL at a seeded random moment equals the
  uninterrupted run bit for bit; a corrupted newest checkpoint is skipped with a warning;
  one of another model is refused.
* A float64 run started in torch and stopped at step k continues in JAX (and the other
  way round) along the all-torch loss curve to 1e-9 relative, for SGD with momentum,
  Adam, AdamW and Adam under a cosine schedule, each after torch-style gradient clipping:
  torch.optim's state maps onto optax's through ``seqfile.training_state.OPTIMIZER_STATE``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import random
import sys
import textwrap

import jax
import numpy as np
import optax
import pytest
import torch
from flax import nnx

import jaxseq.data
import jaxseq.interop
import torchseq.train as tt
from jaxseq import train as jt
from seqfile import training_state as ts
from torchseq.models import SequenceClassifier as TorchClassifier

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _load(name: str):
    """A helper module of tests/ (not a package) by its path."""
    spec = importlib.util.spec_from_file_location(f"_resume_{name}", ROOT / "tests" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_procs, _kill = _load("_procs"), _load("_kill")

RNG = np.random.default_rng(0)
X, LENGTHS, Y = RNG.standard_normal((20, 6, 3)), RNG.integers(1, 7, 20), RNG.integers(0, 3, 20)
EPOCHS, STEPS, CLIP = 3, 12, 0.5  # 4 batches (6, 6, 6, 2) per epoch


def batches(epoch: int) -> list:
    return list(jaxseq.data.batches(X, LENGTHS, Y, 6, seed=epoch))


def loader() -> torch.utils.data.DataLoader:
    """A shuffling DataLoader: its order comes from torch's global RNG at each epoch."""
    data = torch.utils.data.TensorDataset(*(torch.from_numpy(a) for a in (X, LENGTHS, Y)))
    return torch.utils.data.DataLoader(data, batch_size=6, shuffle=True)


# name -> (torch optimizer, torch scheduler factor or None, the optax twin)
OPTIMIZERS = {
    "sgd": (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), None,
            lambda: optax.sgd(0.1, momentum=0.9)),
    "adam": (lambda p: torch.optim.Adam(p, lr=1e-2), None, lambda: optax.adam(1e-2)),
    "adamw": (lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1), None,
              lambda: optax.adamw(1e-2, weight_decay=0.1)),
    "adam-cosine": (lambda p: torch.optim.Adam(p, lr=1e-2), tt.cosine_decay(STEPS),
                    lambda: optax.adam(optax.cosine_decay_schedule(1e-2, STEPS))),
}  # fmt: skip


class Stop(Exception):
    """Raised by a callback: the run stops right after a step (and its save)."""


def stopper(stop):
    def callback(epoch, step, loss):
        if step == stop:
            raise Stop

    return callback


@pytest.fixture(autouse=True)
def float64_single_thread():
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    yield
    torch.set_default_dtype(dtype)
    torch.set_num_threads(threads)


def torch_model(dropout: float = 0.0, hidden_size: int = 5) -> TorchClassifier:
    torch.manual_seed(0)
    if dropout:
        return TorchClassifier(3, 3, hidden_size=hidden_size, num_layers=2, dropout=dropout)
    return TorchClassifier(3, 3, hidden_size=hidden_size, cell="lstm", proj_size=3)


def torch_run(ckpt=None, *, opt="adamw", stop=None, data=batches, dropout=0.0, **kw):
    """A torch run (resuming from ``ckpt``): ``(history, {name: array})`` or None if stopped."""
    model = torch_model(dropout, **kw)
    make_opt, factor, _ = OPTIMIZERS[opt]
    optimizer = make_opt(model.parameters())
    sched = None if factor is None else torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    torch.manual_seed(1)  # the dropout / DataLoader stream
    try:
        h = tt.fit(
            model, data, optimizer, epochs=EPOCHS, clip_norm=CLIP, scheduler=sched,
            callback=stopper(stop), checkpoint_dir=ckpt, save_every=1,
        )  # fmt: skip
    except Stop:
        return None
    return h, {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


_STEPS: dict = {}


def jax_run(ckpt=None, *, opt="adamw", stop=None):
    """The JAX twin of :func:`torch_run` (no dropout), from the same initial weights; the
    train step is compiled once per optimizer (``TrainStep.reset``)."""
    model = jaxseq.interop.from_torch(torch_model(), rngs=nnx.Rngs(0))
    model.train()
    if opt not in _STEPS:
        tx = optax.chain(jt.clip_by_global_norm_torch(CLIP), OPTIMIZERS[opt][2]())
        _STEPS[opt] = jt.TrainStep(model, tx, sync_model=False)
    step = _STEPS[opt]
    step.reset(model)
    try:
        h = step.fit(
            batches, epochs=EPOCHS, callback=stopper(stop), checkpoint_dir=ckpt, save_every=1
        )
    except Stop:
        return None
    return h, jaxseq.interop.to_torch_state_dict(model)


def assert_same_run(got, want) -> None:
    (h, p), (h0, p0) = got, want
    assert list(h) == list(h0) and h.epochs == h0.epochs
    assert sorted(p) == sorted(p0)
    for k in p0:
        assert p[k].tobytes() == p0[k].tobytes(), k


@pytest.mark.parametrize(
    "opt,data,stop",
    [("adamw", "list", 3), ("sgd", "list", 4), ("adam-cosine", "loader", 6), ("sgd", "loader", 9)],
)
def test_torch_resume_is_bit_identical(tmp_path, opt, data, stop):
    make = batches if data == "list" else loader()
    ref = torch_run(opt=opt, data=make, dropout=0.3)
    assert torch_run(tmp_path, opt=opt, data=make, dropout=0.3, stop=stop) is None
    resumed = torch_run(tmp_path, opt=opt, data=make, dropout=0.3)
    assert resumed[0].resumed_step == stop and len(resumed[0]) == STEPS
    assert_same_run(resumed, ref)


def test_torch_corrupted_newest_falls_back_and_other_model_is_refused(tmp_path):
    ref = torch_run()
    torch_run(tmp_path, stop=5)
    newest = tmp_path / ts.checkpoint_name(5)
    newest.write_bytes(newest.read_bytes()[:-7])  # truncated
    with pytest.raises(ValueError, match=r"another model: .*checkpoint has"):
        with pytest.warns(ts.CheckpointWarning, match=f"skipping checkpoint {newest}"):
            torch_run(tmp_path, hidden_size=6)
    with pytest.warns(ts.CheckpointWarning, match=str(newest)):
        resumed = torch_run(tmp_path)
    assert resumed[0].resumed_step == 4
    assert_same_run(resumed, ref)


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_cross_framework_resume_continues_the_torch_curve(tmp_path, opt):
    """Torch for 5 steps, then JAX; JAX for 5 steps, then torch: the all-torch curve and
    final parameters to 1e-9 relative."""
    (h0, p0) = torch_run(opt=opt)
    assert torch_run(tmp_path / "t2j", opt=opt, stop=5) is None
    assert jax_run(tmp_path / "j2t", opt=opt, stop=5) is None
    for (h, p), first in (
        (jax_run(tmp_path / "t2j", opt=opt), "torch"),
        (torch_run(tmp_path / "j2t", opt=opt), "jax"),
    ):
        assert h.resumed_step == 5 and len(h) == STEPS, first
        np.testing.assert_allclose(np.array(h), np.array(h0), rtol=1e-9, atol=0, err_msg=first)
        for k in p0:
            np.testing.assert_allclose(p[k], p0[k], rtol=1e-9, atol=1e-12, err_msg=f"{first} {k}")


def test_torch_adam_state_maps_onto_optax(tmp_path):
    """The file written by torch names Adam's state by the shared table; optax reads the
    step as its int32 count."""
    torch_run(tmp_path, opt="adamw", stop=3)
    state = ts.read(tmp_path / ts.checkpoint_name(3))
    assert state.meta["framework"] == "torch" and state.meta["optimizer"] == "adam"
    assert int(state.tensors[ts.STEP_KEY]) == 3
    names = {k for k in state.tensors if k.startswith("optim/")}
    params = {k for k in state.tensors if "/" not in k}
    assert names == {ts.STEP_KEY} | {
        ts.optim_name(key, p) for key in ("exp_avg", "exp_avg_sq") for p in params
    }
    assert jax_run(tmp_path, opt="adamw", stop=4) is None  # resumed at 3, stopped after 4
    opt_state = _STEPS["adamw"].opt_state
    adam = [s for s in jax.tree.leaves(opt_state, is_leaf=_is_adam) if _is_adam(s)]
    assert [(s.count.dtype, int(s.count)) for s in adam] == [(np.dtype("int32"), 4)]


def _is_adam(node) -> bool:
    return type(node).__name__ == "ScaleByAdamState"


# A torch training script run as a subprocess; see tests/test_resume.py's twin.
KILLABLE = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np, torch
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    import jaxseq.data
    from torchseq.models import SequenceClassifier
    from torchseq.train import cosine_decay, fit

    ckpt, out = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(0)
    X, L, Y = rng.standard_normal((20, 6, 3)), rng.integers(1, 7, 20), rng.integers(0, 3, 20)
    torch.manual_seed(0)
    model = SequenceClassifier(3, 3, hidden_size=4, num_layers=2, dropout=0.3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_decay(24))

    def callback(epoch, step, loss):
        print("step", step, flush=True)
        time.sleep(0.05)

    h = fit(model, lambda e: jaxseq.data.batches(X, L, Y, 6, seed=e), opt, epochs=6,
            clip_norm=0.5, scheduler=sched, callback=callback, checkpoint_dir=ckpt,
            save_every=1, keep=2)
    params = {k: v.tolist() for k, v in model.state_dict().items()}
    with open(out, "w") as f:
        json.dump({"losses": list(h), "epochs": h.epochs, "params": params,
                   "resumed": h.resumed_step}, f)
    """
)


def test_killed_torch_training_resumes_bit_identical(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(KILLABLE)
    ref, out, ckpt = tmp_path / "ref.json", tmp_path / "out.json", tmp_path / "ckpt"
    env = dict(os.environ)
    r = _procs.run_in_group([sys.executable, str(script), str(tmp_path / "r"), str(ref)], 120,
                            env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr[-4000:]
    rnd = random.Random(16)
    _kill.run_and_kill(
        [sys.executable, str(script), str(ckpt), str(out)],
        after_lines=rnd.randint(2, 14),
        delay=rnd.uniform(0.0, 0.05),
        timeout=120,
        env=env,
    )
    assert not out.exists() and ts.list_checkpoints(ckpt)
    r = _procs.run_in_group([sys.executable, str(script), str(ckpt), str(out)], 120, env=env)
    assert r.returncode == 0, r.stderr[-4000:]
    a, b = json.loads(ref.read_text()), json.loads(out.read_text())
    assert b["resumed"] is not None and 0 < b["resumed"] < 24 and a["resumed"] is None
    assert (a["losses"], a["epochs"], a["params"]) == (b["losses"], b["epochs"], b["params"])


# Two torch processes (DDP, gloo) under `python -m jaxseq.launch --nproc 2`, each with its
# rows of every batch; dropout on (each process restores its own RNG); STOP > 0 ends both
# processes right after step STOP (and its save).
DDP = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np, torch
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    import jaxseq.data
    from torchseq.models import SequenceClassifier
    from torchseq.train import finalize_distributed, fit, initialize_distributed

    ckpt, out, stop = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rank, world = initialize_distributed()
    assert world == 2
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

    torch.manual_seed(0)
    model = SequenceClassifier(3, 3, hidden_size=4, num_layers=2, dropout=0.3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    h = fit(model, batches, opt, epochs=3, clip_norm=0.5, ddp=True, callback=callback,
            checkpoint_dir=ckpt, save_every=1)
    if rank == 0:
        params = {k: v.tolist() for k, v in model.state_dict().items()}
        with open(out, "w") as f:
            json.dump({"losses": list(h), "params": params, "resumed": h.resumed_step}, f)
    finalize_distributed()
    sys.stdout.flush()
    os._exit(0)  # skip torch's gloo teardown (see tests/test_torch_ddp.py)
    """
)


def test_ddp_run_stopped_and_resumed_is_bit_identical(tmp_path):
    script = tmp_path / "train_ddp.py"
    script.write_text(DDP)
    launcher = [sys.executable, "-m", "jaxseq.launch", "--nproc", "2", "--timeout", "90"]
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT",
           "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}  # fmt: skip

    def launch(ckpt: str, out: str, stop: int) -> None:
        r = _procs.run_in_group([*launcher, str(script), ckpt, out, str(stop)], 120, env=env)
        assert r.returncode == 0, r.stderr[-4000:]

    ref, out = tmp_path / "ref.json", tmp_path / "out.json"
    launch(str(tmp_path / "ref"), str(ref), 0)
    launch(str(tmp_path / "ckpt"), str(out), 6)  # stops mid-epoch 1
    assert not out.exists()
    state = ts.load_latest(tmp_path / "ckpt")
    assert state is not None and state.step == 6
    assert {k for k in state.tensors if k.startswith("torch/rng/")} == {
        "torch/rng/0",
        "torch/rng/1",
    }
    launch(str(tmp_path / "ckpt"), str(out), 0)
    a, b = json.loads(ref.read_text()), json.loads(out.read_text())
    assert b["resumed"] == 6 and len(a["losses"]) == 12
    assert (a["losses"], a["params"]) == (b["losses"], b["params"])
