"""Training-state checkpoints shared by ``jaxseq.train`` and ``torchseq.train``: NumPy only.

A training checkpoint is one safetensors file of the :mod:`seqfile` format (sorted
metadata, ``sha256`` of the contents, atomic write with ``fsync``) per save, named
``step-{step:09d}.safetensors`` in a checkpoint folder, the last ``keep`` kept. It holds

* the parameters, under their **torch names** (so ``torchseq.checkpoint.load`` and
  ``jaxseq.interop.load`` with ``strict=False`` read them too);
* the optimizer state, under ``optim/{torch key}/{torch name}`` for each entry of
  :data:`OPTIMIZER_STATE` (torch.optim's per-parameter keys, optax's field names: one
  table for both directions) and ``optim/step`` (torch Adam's ``step``, optax's ``count``);
* the loss history ``history/losses`` and ``history/step_seconds``;
* framework-specific tensors (the RNG state: ``torch/rng/{rank}``, ``jax/rest/...`` for
  the ``nnx.Rngs`` keys and counters; optax leaves the table does not name:
  ``jax/optax/...``; the carried state of truncated backpropagation through time:
  ``jax/carry/state...``, its tree in ``extra["carry"]``) that only the framework that
  wrote them reads;
* JSON metadata (header entry ``training_state``): ``step`` (steps done), ``epoch`` and
  ``batch`` (the data-order state: the epoch in progress and how many of its batches are
  done), ``model`` (class name), ``params`` ({torch name: shape}), ``optimizer`` (the
  family, a key of :data:`OPTIMIZER_STATE`), ``optimizer_detail`` (a framework-specific
  signature), ``config`` (what the caller passed), ``history`` (per-epoch records) and
  ``extra`` (framework-specific: torch's ``param_groups`` and scheduler state).

Loading (:func:`load_latest`) takes the newest file that reads and hashes correctly: a
truncated or corrupted newer one is skipped with a :class:`CheckpointWarning` naming it.
:func:`check_compatible` refuses a checkpoint of another model or optimizer.

>>> import tempfile, numpy as np
>>> d = tempfile.mkdtemp()
>>> for step in (1, 2, 3, 4):
...     _ = save(d, {"w": np.full(2, step, np.float64)}, {"step": step}, keep=2, writer="jaxseq")
>>> [s for s, _ in list_checkpoints(d)]
[3, 4]
>>> state = load_latest(d)
>>> state.step, state.tensors["w"].tolist()
(4, [4.0, 4.0])
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seqfile import TMP_MARK, finalize, read_checked, split, write_atomic
from seqfile.history import History
from seqfile.report import compare

__all__ = [
    "FORMAT_VERSION",
    "OPTIMIZER_STATE",
    "TORCH_OPTIMIZERS",
    "OPTAX_STATES",
    "STEP_KEY",
    "CheckpointWarning",
    "TrainingState",
    "checkpoint_name",
    "list_checkpoints",
    "optim_name",
    "parse_optim_name",
    "torch_key",
    "optax_field",
    "save",
    "read",
    "load_latest",
    "check_compatible",
    "save_run",
    "load_latest_compatible",
    "history_tensors",
    "history_meta",
    "restore_history",
]

#: The version of the training-checkpoint layout written into every file's metadata.
FORMAT_VERSION = 1

# The one mapping table: per optimizer family, torch.optim's per-parameter state key ->
# the field of the optax state (a NamedTuple) holding the same quantity.
#   SGD(momentum=m), dampening 0:  buf = m * buf + g        optax.trace:  t = g + m * t
#   Adam / AdamW:  exp_avg, exp_avg_sq, step (a float tensor in torch; an int32 count in
#   optax)         <->  ScaleByAdamState(count, mu, nu)
#: The one mapping table: ``{family: {torch state key: optax state field}}``.
OPTIMIZER_STATE: dict[str, dict[str, str]] = {
    "sgd": {"momentum_buffer": "trace"},
    "adam": {"exp_avg": "mu", "exp_avg_sq": "nu", "step": "count"},
}
# Which family each optimizer belongs to, by torch.optim class and by optax state class.
# (Adam and AdamW share their state: the weight decay is a hyperparameter.)
#: ``{torch.optim class name: family}``.
TORCH_OPTIMIZERS: dict[str, str] = {"SGD": "sgd", "Adam": "adam", "AdamW": "adam"}
#: ``{optax state class name: family}``.
OPTAX_STATES: dict[str, str] = {"TraceState": "sgd", "ScaleByAdamState": "adam"}
#: The tensor holding the step count: torch's per-parameter ``step`` (all equal), optax's
#: ``count``.
STEP_KEY = "optim/step"

_NAME = re.compile(r"^step-(\d{9,})\.safetensors$")


class CheckpointWarning(UserWarning):
    """A checkpoint file was skipped (truncated, corrupted) in favour of an older one."""


def torch_key(field: str) -> str | None:
    """The torch.optim state key of an optax state field (``"mu"`` -> ``"exp_avg"``), or
    None when the table has no such field.

    >>> torch_key("mu"), torch_key("trace"), torch_key("hyperparams")
    ('exp_avg', 'momentum_buffer', None)
    """
    for table in OPTIMIZER_STATE.values():
        for key, f in table.items():
            if f == field:
                return key
    return None


def optax_field(key: str) -> str | None:
    """The optax state field of a torch.optim state key (``"exp_avg_sq"`` -> ``"nu"``)."""
    for table in OPTIMIZER_STATE.values():
        if key in table:
            return table[key]
    return None


def optim_name(key: str, param: str) -> str:
    """The tensor name of torch key ``key`` of parameter ``param`` (a torch name).

    >>> optim_name("exp_avg", "rnn.weight_ih_l0")
    'optim/exp_avg/rnn.weight_ih_l0'
    """
    return f"optim/{key}/{param}"


def parse_optim_name(name: str) -> tuple[str, str] | None:
    """``(torch key, parameter name)`` of an :func:`optim_name`, None for other names."""
    parts = name.split("/", 2)
    if len(parts) != 3 or parts[0] != "optim":
        return None
    return parts[1], parts[2]


def checkpoint_name(step: int) -> str:
    """The file name of the checkpoint after ``step`` steps.

    >>> checkpoint_name(120)
    'step-000000120.safetensors'
    """
    return f"step-{int(step):09d}.safetensors"


def list_checkpoints(directory: Any) -> list[tuple[int, Path]]:
    """``[(step, path), ...]`` of the checkpoint files in ``directory``, oldest first
    (temporary files of interrupted saves are not listed). A missing folder: ``[]``."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = []
    for p in d.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


@dataclasses.dataclass
class TrainingState:
    """A checkpoint read back: its tensors ({name: NumPy array}), its metadata and path."""

    tensors: dict[str, np.ndarray] = dataclasses.field(repr=False)
    meta: dict[str, Any] = dataclasses.field(repr=False)
    path: Path | None = None

    @property
    def step(self) -> int:
        """Steps done when it was written."""
        return int(self.meta["step"])

    @property
    def epoch(self) -> int:
        """The epoch in progress (0-based); :attr:`batch` of its batches are done."""
        return int(self.meta.get("epoch", 0))

    @property
    def batch(self) -> int:
        """How many batches of epoch :attr:`epoch` are done."""
        return int(self.meta.get("batch", 0))


def save(
    directory: Any,
    tensors: Mapping[str, np.ndarray],
    meta: Mapping[str, Any],
    *,
    keep: int = 3,
    writer: str,
) -> Path:
    """Write one checkpoint ``step-{meta["step"]}.safetensors`` into ``directory``
    (created if needed) atomically, then delete all but the newest ``keep``; its path.

    ``tensors`` are NumPy arrays; ``meta`` is JSON-serialisable (floats round-trip
    exactly) and needs ``"step"``. ``writer`` (``"jaxseq"`` or ``"torchseq"``) makes the
    hash mandatory when the file is read. A failing write (``OSError``, e.g. a full disk)
    is raised and leaves every existing checkpoint intact.
    """
    from safetensors.numpy import save as serialize

    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    meta = {"version": FORMAT_VERSION, **meta}
    header = {  # serialised first: metadata that is not JSON fails before anything is made
        "format": "pt",
        "writer": writer,
        "model": str(meta.get("model", "")),
        "training_state": json.dumps(meta, sort_keys=True),
    }
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.asarray(v, order="C") for k, v in tensors.items()}  # 0-d stays 0-d
    path = d / checkpoint_name(meta["step"])
    write_atomic(finalize(serialize(arrays, metadata=header)), path)
    for _, old in list_checkpoints(d)[:-keep]:
        old.unlink(missing_ok=True)
    for stale in d.glob(f"step-*.safetensors{TMP_MARK}*"):  # left by a killed save
        if not stale.name.endswith(f"{TMP_MARK}{os.getpid()}"):
            stale.unlink(missing_ok=True)
    return path


def _load_numpy(blob: bytes) -> dict[str, np.ndarray]:
    from safetensors.numpy import load

    return load(blob)


def read(path: Any) -> TrainingState:
    """Read one checkpoint file; ``ValueError`` naming it if it is truncated, corrupted
    (hash mismatch) or not a training checkpoint."""
    tensors = read_checked(path, _load_numpy)
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header, _ = split(n.to_bytes(8, "little") + f.read(n))
    raw = (header.get("__metadata__") or {}).get("training_state")
    if raw is None:
        raise ValueError(f"{os.fspath(path)} is not a training checkpoint (no training_state)")
    return TrainingState(tensors, json.loads(raw), Path(path))


def load_latest(directory: Any) -> TrainingState | None:
    """The newest valid checkpoint in ``directory``; None if there is none.

    Newer files that cannot be read (truncated, corrupted: see :func:`read`) are skipped,
    each with a :class:`CheckpointWarning` naming the file and why.
    """
    for _, path in reversed(list_checkpoints(directory)):
        try:
            return read(path)
        except (OSError, ValueError) as e:
            reason = str(e).replace(f"{path} ", "", 1)  # it names the file too
            warnings.warn(
                f"skipping checkpoint {path}: {reason}; falling back to an older one",
                CheckpointWarning,
                stacklevel=2,
            )
    return None


def check_compatible(
    state: TrainingState,
    *,
    framework: str,
    model: str,
    params: Mapping[str, Sequence[int]],
    optimizer: str,
    optimizer_detail: str,
) -> None:
    """Refuse (``ValueError`` naming the file) a checkpoint of another model (class name,
    parameter names or shapes) or another optimizer: another family (SGD vs Adam), or,
    written by the same ``framework``, another ``optimizer_detail`` (torch: the class and
    hyperparameter names; optax: the state's structure)."""
    meta, where = state.meta, state.path
    parts = []
    if meta.get("model") != model:
        parts.append(f"it holds a {meta.get('model')!r}, this run trains a {model!r}")
    m = compare({k: tuple(v) for k, v in params.items()},
                {k: tuple(v) for k, v in (meta.get("params") or {}).items()})  # fmt: skip
    if m:
        if m.missing:
            parts.append(f"parameters missing from the checkpoint: {m.missing}")
        if m.unexpected:
            parts.append(f"parameters this model does not have: {m.unexpected}")
        parts += [f"{k}: checkpoint has {g}, model expects {e}" for k, g, e in m.shapes]
    if parts:
        raise ValueError(f"{where} is a checkpoint of another model: " + "; ".join(parts))
    if meta.get("optimizer") != optimizer:
        raise ValueError(
            f"{where} is a checkpoint of another optimizer: it holds {meta.get('optimizer')!r} "
            f"state, this run uses {optimizer!r}"
        )
    if meta.get("framework") == framework and meta.get("optimizer_detail") != optimizer_detail:
        raise ValueError(
            f"{where} is a checkpoint of another optimizer: it was written for "
            f"{meta.get('optimizer_detail')}, this run uses {optimizer_detail}"
        )


def save_run(
    directory: Any,
    tensors: Mapping[str, np.ndarray],
    signature: Mapping[str, Any],
    *,
    step_count: int,
    epoch: int,
    batch: int,
    history: History | None,
    config: Mapping[str, Any] | None,
    extra: Mapping[str, Any],
    keep: int,
    writer: str,
) -> Path:
    """:func:`save` of a training run, as both frameworks write it: the framework's
    ``tensors``, ``signature`` (what :func:`check_compatible` compares) and ``extra``
    state, plus the loss history, step, data-order state (``epoch``, ``batch``) and
    ``config``."""
    history = history if history is not None else History()
    meta = {
        **signature,
        "step": int(step_count),
        "epoch": int(epoch),
        "batch": int(batch),
        "config": dict(config or {}),
        "history": history_meta(history),
        "extra": dict(extra),
    }
    return save(directory, {**tensors, **history_tensors(history)}, meta, keep=keep, writer=writer)


def load_latest_compatible(
    directory: Any, *, framework: str, signature: Mapping[str, Any]
) -> TrainingState | None:
    """:func:`load_latest`, then :func:`check_compatible` against the run's ``signature``
    (the mapping :func:`save_run` stored: model, params, optimizer, optimizer_detail)."""
    state = load_latest(directory)
    if state is not None:
        check_compatible(
            state,
            framework=framework,
            model=signature["model"],
            params=signature["params"],
            optimizer=signature["optimizer"],
            optimizer_detail=signature["optimizer_detail"],
        )
    return state


def history_tensors(history: History) -> dict[str, np.ndarray]:
    """The loss history as tensors: ``history/losses``, ``history/step_seconds`` (float64)."""
    return {
        "history/losses": np.asarray(list(history), np.float64).reshape(-1),
        "history/step_seconds": np.asarray(history.step_seconds, np.float64).reshape(-1),
    }


def history_meta(history: History) -> dict[str, Any]:
    """The JSON part of the history: per-epoch records and the compiling steps."""
    return {"epochs": history.epochs, "compiled": history.compiled}


def restore_history(state: TrainingState) -> History:
    """The :class:`History` a checkpoint was written with (losses exactly as recorded)."""
    h = History(float(v) for v in state.tensors.get("history/losses", np.zeros(0)))
    h.step_seconds = [float(v) for v in state.tensors.get("history/step_seconds", np.zeros(0))]
    saved = state.meta.get("history") or {}
    h.epochs = [dict(r) for r in saved.get("epochs", [])]
    h.compiled = [int(i) for i in saved.get("compiled", [])]
    return h
