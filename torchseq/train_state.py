"""Training-state checkpoints of a torch model, ``torch.optim`` optimizer and scheduler.

The file format, file naming, keep-last-k, the fallback past corrupted files and the one
table that names optimizer state in both frameworks live in
:mod:`seqfile.training_state` (NumPy only); this module maps torch's state onto it:

* parameters -> ``model.state_dict()`` under their torch names;
* ``optimizer.state[p][key]`` -> ``optim/{key}/{name}`` for the keys of
  :data:`seqfile.training_state.OPTIMIZER_STATE` (``momentum_buffer``, ``exp_avg``,
  ``exp_avg_sq``); Adam's per-parameter ``step`` (a float tensor, equal for all) ->
  ``optim/step`` (int64);
* ``param_groups`` (hyperparameters, current learning rate) and the scheduler's
  ``state_dict()`` -> JSON metadata;
* ``torch.get_rng_state()`` (dropout) of every process -> ``torch/rng/{rank}``, and its
  value at the start of the epoch -> ``torch/epoch_rng/{rank}`` (a ``DataLoader`` with
  ``shuffle=True`` draws the epoch's order from it).

Read back by torch, every bit is restored, so a resumed run equals an uninterrupted one
exactly. From a jaxseq checkpoint, the table's entries come from optax's state, the
``param_groups`` are the optimizer's own, a scheduler is stepped forward to the step, and
the RNG keeps its own state.

>>> import tempfile, torch
>>> from torchseq.models import SequenceClassifier
>>> _ = torch.manual_seed(0)
>>> model = SequenceClassifier(2, 3, hidden_size=4)
>>> opt = torch.optim.Adam(model.parameters(), lr=1e-2)
>>> batch = (torch.ones(4, 5, 2), torch.tensor([5, 1, 3, 2]), torch.tensor([0, 1, 2, 0]))
>>> from torchseq.train import train_step
>>> _ = train_step(model, batch, opt)
>>> d = tempfile.mkdtemp()
>>> _ = save(d, model, opt, step_count=1)
>>> twin = SequenceClassifier(2, 3, hidden_size=4)
>>> twin_opt = torch.optim.Adam(twin.parameters(), lr=1e-2)
>>> restore(d, twin, twin_opt).step
1
>>> train_step(model, batch, opt) == train_step(twin, batch, twin_opt)
True
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from seqfile import training_state as ts
from seqfile.history import History

__all__ = [
    "optimizer_family",
    "optimizer_detail",
    "state_tensors",
    "save",
    "load",
    "epoch_rng",
    "restore",
]


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _rank() -> int:
    return dist.get_rank() if _distributed() else 0


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper (or ``model`` itself)."""
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, torch.nn.Module) else model


def optimizer_family(optimizer: torch.optim.Optimizer) -> str:
    """The optimizer family, a key of :data:`seqfile.training_state.OPTIMIZER_STATE`
    (``"sgd"`` for SGD with momentum, ``"adam"`` for Adam and AdamW), ``"none"`` for SGD
    without momentum.

    >>> optimizer_family(torch.optim.AdamW([torch.zeros(1, requires_grad=True)]))
    'adam'
    """
    name = type(optimizer).__name__
    if name not in ts.TORCH_OPTIMIZERS:
        raise ValueError(f"training checkpoints support {sorted(ts.TORCH_OPTIMIZERS)}, not {name}")
    if name == "SGD" and all(g.get("momentum", 0) == 0 for g in optimizer.param_groups):
        return "none"
    return ts.TORCH_OPTIMIZERS[name]


def optimizer_detail(optimizer: torch.optim.Optimizer) -> str:
    """A signature of the optimizer: its class and hyperparameter names."""
    keys = sorted({k for g in optimizer.param_groups for k in g if k != "params"})
    return f"torch:{type(optimizer).__name__}({','.join(keys)})"


def _param_names(model: torch.nn.Module) -> dict[int, str]:
    return {id(p): n for n, p in _unwrap(model).named_parameters()}


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def state_tensors(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``(tensors, extra)``: parameters and optimizer state as checkpoint tensors, and the
    JSON ``extra`` (``param_groups`` with parameter names instead of indices)."""
    inner = _unwrap(model)
    tensors = {k: v.detach().cpu().numpy().copy() for k, v in inner.state_dict().items()}
    names = _param_names(inner)
    steps = set()
    groups = []
    for group in optimizer.param_groups:
        g = {k: _jsonable(v) for k, v in group.items() if k != "params"}
        g["params"] = [names[id(p)] for p in group["params"]]
        groups.append(g)
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if key == "step":
                    steps.add(int(float(value)))
                elif value is None:
                    continue
                elif ts.optax_field(key) is None:
                    raise ValueError(
                        f"{type(optimizer).__name__} state {key!r} has no entry in "
                        "seqfile.training_state.OPTIMIZER_STATE"
                    )
                else:
                    arr = value.detach().cpu().numpy().copy()
                    tensors[ts.optim_name(key, names[id(p)])] = arr
    if len(steps) > 1:
        raise ValueError(f"parameters were stepped unequally often: steps {sorted(steps)}")
    if steps:
        tensors[ts.STEP_KEY] = np.array(steps.pop(), np.int64)
    return tensors, {"param_groups": groups}


def _gather_rng(state: torch.Tensor) -> list[np.ndarray]:
    """Every process's RNG state (an all-gather under several processes)."""
    if not _distributed():
        return [state.numpy().copy()]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, state.numpy().copy())
    return [np.asarray(a) for a in out]


def _signature(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    inner = _unwrap(model)
    return {
        "framework": "torch",
        "model": type(inner).__name__,
        "params": {k: list(v.shape) for k, v in inner.state_dict().items()},
        "optimizer": optimizer_family(optimizer),
        "optimizer_detail": optimizer_detail(optimizer),
    }


def save(
    directory: Any,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any = None,
    *,
    step_count: int,
    epoch: int = 0,
    batch: int = 0,
    history: History | None = None,
    config: Mapping[str, Any] | None = None,
    keep: int = 3,
    epoch_rng: torch.Tensor | None = None,
) -> Path | None:
    """Write a training checkpoint after ``step_count`` steps into ``directory``
    (``step-{step_count:09d}.safetensors``, the newest ``keep`` kept).

    ``epoch`` / ``batch``: the data-order state (the epoch in progress, batches of it
    done); ``epoch_rng``: ``torch.get_rng_state()`` at the start of that epoch (default:
    now); ``history``: the losses so far; ``config``: JSON-serialisable settings kept in
    the file. Under a process group of several processes every process calls it (the RNG
    states are gathered) and rank 0 writes (the others return None)."""
    rngs = _gather_rng(torch.get_rng_state())
    epoch_rngs = _gather_rng(epoch_rng if epoch_rng is not None else torch.get_rng_state())
    if _rank() != 0:
        return None
    tensors, extra = state_tensors(model, optimizer)
    for r, (now, start) in enumerate(zip(rngs, epoch_rngs, strict=True)):
        tensors[f"torch/rng/{r}"] = now
        tensors[f"torch/epoch_rng/{r}"] = start
    if scheduler is not None:
        extra["scheduler"] = _jsonable(scheduler.state_dict())
    # save_run serialises the metadata before it writes: a scheduler state that is not
    # JSON fails before any file is touched.
    return ts.save_run(
        directory,
        tensors,
        _signature(model, optimizer),
        step_count=step_count,
        epoch=epoch,
        batch=batch,
        history=history,
        config=config,
        extra=extra,
        keep=keep,
        writer="torchseq",
    )


def _scalar_dtype() -> torch.dtype:
    """The dtype torch.optim gives a new ``step`` tensor."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def load(
    state: ts.TrainingState,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any = None,
) -> None:
    """Put a checkpoint read by :func:`seqfile.training_state.read` into ``model``,
    ``optimizer`` and ``scheduler`` (and, when written by torch, this process's RNG)."""
    tensors, meta = state.tensors, state.meta
    inner = _unwrap(model)
    params = {k: torch.from_numpy(v.copy()) for k, v in tensors.items() if "/" not in k}
    inner.load_state_dict(params)
    names = _param_names(inner)
    current = optimizer.state_dict()
    family = optimizer_family(optimizer)
    keys = [k for k in ts.OPTIMIZER_STATE.get(family, {}) if k != "step"]
    opt_state: dict[int, dict[str, Any]] = {}
    for group, sd_group in zip(optimizer.param_groups, current["param_groups"], strict=True):
        for p, index in zip(group["params"], sd_group["params"], strict=True):
            entry: dict[str, Any] = {}
            for key in keys:
                name = ts.optim_name(key, names[id(p)])
                if name in tensors:
                    entry[key] = torch.from_numpy(np.array(tensors[name], copy=True))
                elif state.step > 0:
                    raise ValueError(f"{state.path} has no optimizer state {name!r}")
            if "step" in ts.OPTIMIZER_STATE.get(family, {}) and entry:
                step = int(tensors[ts.STEP_KEY]) if ts.STEP_KEY in tensors else state.step
                entry["step"] = torch.tensor(float(step), dtype=_scalar_dtype())
            if entry:
                opt_state[index] = entry
    extra = meta.get("extra") or {}
    same_framework = meta.get("framework") == "torch"
    groups = current["param_groups"]
    if same_framework and "param_groups" in extra:
        groups = []
        for saved, sd_group in zip(extra["param_groups"], current["param_groups"], strict=True):
            g = {k: tuple(v) if isinstance(sd_group.get(k), tuple) else v
                 for k, v in saved.items()}  # fmt: skip
            g["params"] = sd_group["params"]
            groups.append(g)
    optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
    if scheduler is not None:
        if same_framework and "scheduler" in extra:
            scheduler.load_state_dict(extra["scheduler"])
        else:  # another framework's checkpoint: step the schedule forward to the step
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
                for _ in range(state.step):
                    scheduler.step()
    rng = f"torch/rng/{_rank()}"
    if rng in tensors:
        torch.set_rng_state(torch.from_numpy(np.array(tensors[rng], copy=True)))


def epoch_rng(state: ts.TrainingState) -> torch.Tensor | None:
    """This process's RNG state at the start of the checkpoint's epoch (None if absent)."""
    name = f"torch/epoch_rng/{_rank()}"
    if name not in state.tensors:
        return None
    return torch.from_numpy(np.array(state.tensors[name], copy=True))


def restore(
    directory: Any,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any = None,
) -> ts.TrainingState | None:
    """Load the newest valid checkpoint of ``directory`` into ``model``, ``optimizer`` and
    ``scheduler`` (see :func:`seqfile.training_state.load_latest`); None (nothing changed)
    if there is none. A checkpoint of another model or optimizer raises ``ValueError``.
    Every process reads the same file."""
    state = ts.load_latest_compatible(
        directory, framework="torch", signature=_signature(model, optimizer)
    )
    if state is not None:
        load(state, model, optimizer, scheduler)
    return state
