"""A plain PyTorch training loop: ``torch.optim`` plus gradient clipping by norm.

One step is ``zero_grad -> loss.backward() -> clip_grad_norm_ (optional) -> step() ->
scheduler.step() (optional)``, the loop the PyTorch tutorials teach; ``jaxseq.train``
reproduces it with optax, under the same names: :func:`fit` (returns a :class:`History`),
the losses :func:`classification_loss`, :func:`regression_loss`,
:func:`language_model_loss`, and :func:`predict`, :func:`evaluate`,
:func:`evaluate_regression`, :func:`evaluate_language_model`. Batches may hold NumPy
arrays (shared with the JAX side): they become tensors, integer arrays as int64.
``fit(..., checkpoint_dir=DIR)`` saves the training state as it goes and resumes from it
bit for bit, also from a checkpoint ``jaxseq.train.fit`` wrote (:mod:`torchseq.train_state`).

Data-parallel training (the twin of ``jaxseq.train.fit(..., mesh=...)``): start N
processes with ``torchrun --standalone --nproc-per-node N script.py`` or ``python -m
jaxseq.launch --nproc N script.py``; each calls :func:`initialize_distributed` and then
``fit(..., ddp=True)`` on *its own rows* of every global batch, split as jaxseq splits
them, ``np.array_split(np.arange(rows), world)[rank]``, and ends with
:func:`finalize_distributed`. The losses and parameters equal single-process training on
the whole batches (see :func:`train_step`).

>>> import torch
>>> from torchseq.models import SequenceClassifier
>>> _ = torch.manual_seed(0)
>>> model = SequenceClassifier(2, 3, hidden_size=4)
>>> batch = (torch.ones(4, 5, 2), torch.tensor([5, 1, 3, 2]), torch.tensor([0, 1, 2, 0]))
>>> losses = fit(model, [batch], torch.optim.Adam(model.parameters(), lr=1e-2), epochs=3,
...              clip_norm=1.0)
>>> len(losses), losses[2] < losses[0]
(3, True)
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from seqfile.history import History  # shared with jaxseq.train
from seqfile.training_state import restore_history

__all__ = [
    "classification_loss",
    "regression_loss",
    "language_model_loss",
    "as_tensors",
    "cosine_decay",
    "History",
    "train_step",
    "fit",
    "initialize_distributed",
    "finalize_distributed",
    "predict",
    "evaluate",
    "evaluate_regression",
    "evaluate_language_model",
]

Batches = Iterable[tuple] | Callable[[int], Iterable[tuple]]


def classification_loss(
    model: torch.nn.Module, x: torch.Tensor, lengths: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """The default loss: mean ``F.cross_entropy(model(x, lengths), y)``."""
    return F.cross_entropy(model(x, lengths), y)


def regression_loss(model: torch.nn.Module, *batch: torch.Tensor) -> torch.Tensor:
    """Mean squared error: ``batch = (*inputs, target)``, ``model(*inputs)`` reshaped to the
    target's shape (e.g. (N, 1, 1) -> (N,)): ``mean((model(*inputs) - target) ** 2)``.

    >>> float(regression_loss(lambda x: 2 * x, torch.tensor([[1.0], [2.0]]), torch.ones(2)))
    5.0
    """
    *inputs, target = batch
    pred = model(*inputs)
    return torch.mean((pred.reshape(target.shape) - target) ** 2)


def language_model_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of a language model ``model(x (N, T)) -> (logits
    (N, T, V), state)`` against targets y (N, T) int, over all N*T positions."""
    logits, _ = model(x)  # (N, T, V)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def as_tensors(batch: Iterable[Any]) -> tuple:
    """The batch with every NumPy array as a tensor: integer arrays as int64 (torch's index
    dtype), others in their own dtype (sharing memory where possible). Tensors and other
    values pass through.

    >>> import numpy as np
    >>> [t.dtype for t in as_tensors((np.zeros(2, np.float32), np.zeros(2, np.int32)))]
    [torch.float32, torch.int64]
    """
    out = []
    for a in batch:
        if isinstance(a, np.ndarray):
            t = torch.from_numpy(np.ascontiguousarray(a))
            a = t.long() if np.issubdtype(a.dtype, np.integer) else t
        out.append(a)
    return tuple(out)


def cosine_decay(total_steps: int, alpha: float = 0.0) -> Callable[[int], float]:
    """The learning-rate factor of ``optax.cosine_decay_schedule(lr, total_steps, alpha)``,
    for ``torch.optim.lr_scheduler.LambdaLR``: ``(1 - alpha) * 0.5 * (1 + cos(pi *
    min(step, total_steps) / total_steps)) + alpha``.

    >>> f = cosine_decay(10)
    >>> f(0), f(5), f(10), f(20)
    (1.0, 0.5, 0.0, 0.0)
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")

    def factor(step: int) -> float:
        decay = 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
        return (1.0 - alpha) * decay + alpha

    return factor


def initialize_distributed(backend: str = "gloo") -> tuple[int, int]:
    """Join the process group that ``torchrun`` or ``python -m jaxseq.launch`` started;
    return ``(rank, world_size)``.

    Reads torch's standard variables (``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``,
    ``WORLD_SIZE``) through :func:`torch.distributed.init_process_group`'s ``env://``
    initialization, with ``backend`` (``"gloo"``: CPU). Already initialized: returns the
    current group's rank and size. ``WORLD_SIZE`` unset or 1: nothing to join, returns
    ``(0, 1)`` without initializing anything (so one script runs launched or alone). End
    the script with :func:`finalize_distributed`.
    The twin of ``jaxseq.train.initialize_distributed``.

    >>> "WORLD_SIZE" in os.environ or initialize_distributed() == (0, 1)
    True
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if int(os.environ.get("WORLD_SIZE") or 1) <= 1:
        return 0, 1
    if not dist.is_available():  # pragma: no cover - torch built without distributed
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def finalize_distributed() -> None:
    """End of a distributed script: wait for every process (``barrier``), then destroy the
    process group. Call it last on every process after a successful run: a process that
    exits while its peers still use the gloo group can abort at interpreter shutdown
    ("terminate called without an active exception", exit code 134). On a loaded machine
    torch 2.13's gloo/DDP objects can still abort in the interpreter's teardown after this;
    a script that has written its results may end with ``os._exit(0)`` right after it, as
    ``tests/test_torch_ddp.py`` does. Not initialized (single process): does nothing.

    >>> finalize_distributed()  # one process: nothing to do
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _distributed() -> bool:
    """Whether a process group of more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _batch_rows(batch: tuple) -> int:
    """The rows of a batch: the length of its first tensor's axis 0 (as ``jaxseq``)."""
    for a in batch:
        if isinstance(a, torch.Tensor) and a.ndim > 0:
            return int(a.shape[0])
    raise ValueError("a distributed step needs a batch with a tensor of rows on axis 0")


def train_step(
    model: torch.nn.Module,
    batch: tuple,
    optimizer: torch.optim.Optimizer,
    *,
    clip_norm: float | None = None,
    loss_fn: Callable[..., torch.Tensor] = classification_loss,
    ddp: bool = False,
) -> float:
    """One update on ``batch`` (a tuple passed as ``loss_fn(model, *batch)``); the loss.

    With ``ddp=True`` (and a process group of more than one process, see
    :func:`initialize_distributed`), ``model`` is a
    :class:`~torch.nn.parallel.DistributedDataParallel` module and ``batch`` holds this
    process's rows of the global batch. DDP averages gradients over processes with equal
    weights, which is the global mean only if every process holds as many rows; so the
    local loss (a mean over the local rows ``n_r``) is scaled by ``n_r * world / n``
    before ``backward``, ``n`` the global row count (an ``all_reduce`` of the local
    counts): the averaged gradient is then exactly that of the mean over all ``n`` rows,
    also for uneven splits. Clipping comes after DDP's gradient all-reduce, so it sees the
    global norm, as in one process. The returned loss is the global batch loss
    ``sum_r n_r * loss_r / n`` (an ``all_reduce``), the same on every process. Every
    process needs at least one row (a ValueError on all processes otherwise), and the loss
    has to be a mean over rows (the losses here are; language-model and regression losses
    average over positions too, the same number per row).
    """
    if not (ddp and _distributed()):
        optimizer.zero_grad()
        loss = loss_fn(model, *batch)
        loss.backward()
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        optimizer.step()
        return float(loss.detach())

    world = dist.get_world_size()
    rows = _batch_rows(batch)
    counts = torch.tensor([rows, int(rows == 0)], dtype=torch.int64)
    dist.all_reduce(counts)  # (global rows, processes without rows)
    total, empty = int(counts[0]), int(counts[1])
    if empty:
        raise ValueError(
            f"{empty} of {world} processes got no rows of a batch of {total} rows: every "
            "process needs at least one row per batch"
        )
    optimizer.zero_grad()
    loss = loss_fn(model, *batch)
    (loss * (rows * world / total)).backward()  # DDP divides the summed gradients by world
    if clip_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    optimizer.step()
    weighted = loss.detach().to(torch.float64) * (rows / total)
    dist.all_reduce(weighted)  # the global batch loss
    return float(weighted)


def fit(
    model: torch.nn.Module,
    batches: Batches,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int = 1,
    clip_norm: float | None = None,
    loss_fn: Callable[..., torch.Tensor] = classification_loss,
    callback: Callable[[int, int, float], Any] | None = None,
    eval_fn: Callable[[torch.nn.Module], Mapping[str, float]] | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], Any] | None = None,
    scheduler: Any = None,
    ddp: bool = False,
    checkpoint_dir: str | os.PathLike | None = None,
    save_every: int | None = None,
    keep: int = 3,
    config: Mapping[str, Any] | None = None,
) -> History:
    """Train ``model`` in place; return the loss of every step as a :class:`History`.

    Args:
      model: put in training mode (at the start of every epoch), trained in place.
      batches: a re-iterable of batch tuples (a list, a ``DataLoader``) or a function
        ``epoch -> iterable``; NumPy arrays in a batch become tensors (:func:`as_tensors`);
        each batch is passed as ``loss_fn(model, *batch)``.
      optimizer: a ``torch.optim`` optimizer over ``model.parameters()``.
      epochs: passes over ``batches``.
      clip_norm: ``clip_grad_norm_(model.parameters(), clip_norm)`` before every step.
      loss_fn: :func:`classification_loss` (the default), :func:`regression_loss`,
        :func:`language_model_loss` or your own ``loss_fn(model, *batch) -> scalar``.
      callback: ``callback(epoch, step, loss)`` after every step (``step`` counts from 1).
      eval_fn: ``eval_fn(model) -> {name: value}`` after every epoch, e.g.
        ``lambda m: evaluate(m, test_batches)``; recorded in ``history.epochs``.
      on_epoch_end: ``on_epoch_end(epoch, record)`` after every epoch (and ``eval_fn``),
        with ``record = {"train_loss": mean step loss, **eval_fn(model)}``.
      scheduler: a learning-rate scheduler stepped after every optimizer step, e.g.
        ``LambdaLR(optimizer, cosine_decay(total_steps))`` (``optax``'s schedules count
        steps the same way).
      ddp: data-parallel training over the process group that
        :func:`initialize_distributed` joined: ``model`` is wrapped in
        :class:`~torch.nn.parallel.DistributedDataParallel` (which broadcasts rank 0's
        parameters and buffers at the start) and each process's ``batches`` yield *its own
        rows* of every global batch, ``np.array_split(np.arange(rows), world)[rank]`` as in
        ``jaxseq``; the losses (the global batch losses, equal on every process) and
        parameters are those of single-process training on the whole batches, also for
        uneven splits (see :func:`train_step`). ``eval_fn`` gets the unwrapped model. With
        no process group and ``WORLD_SIZE`` unset or 1: single-process training.
      checkpoint_dir: a folder of training checkpoints (:mod:`torchseq.train_state`,
        format :mod:`seqfile.training_state`, shared with ``jaxseq.train.fit``): the run
        first resumes from the newest valid one there (parameters, optimizer and scheduler
        state, the RNG, step, epoch and position in it, the history so far; a corrupted
        newest file is skipped with a warning; one of another model or optimizer raises
        ``ValueError``; one written by jaxseq continues the same run in torch), then saves
        as it trains. The resumed run equals an uninterrupted one bit for bit, provided
        ``batches`` gives the same batches for the same epoch (a list, a function seeded
        by the epoch, or a ``DataLoader`` shuffling with torch's global RNG).
        ``history.resumed_step`` tells where it resumed. With ``ddp``, rank 0 writes and
        every process reads.
      save_every: save every that many steps (and at the end); None: at the end of every
        epoch.
      keep: how many checkpoints to keep (the newest).
      config: JSON-serialisable settings stored in every checkpoint (``meta["config"]``).

    >>> from torchseq.models import SequenceClassifier
    >>> _ = torch.manual_seed(0)
    >>> model = SequenceClassifier(2, 3, hidden_size=4)
    >>> batch = (torch.ones(4, 5, 2), torch.tensor([5, 1, 3, 2]), torch.tensor([0, 1, 2, 0]))
    >>> opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    >>> h = fit(model, [batch], opt, epochs=3, eval_fn=lambda m: evaluate(m, [batch]),
    ...         scheduler=torch.optim.lr_scheduler.LambdaLR(opt, cosine_decay(3)))
    >>> len(h), h[2] < h[0], sorted(h.epochs[-1]), opt.param_groups[0]["lr"]
    (3, True, ['accuracy', 'loss', 'train_loss'], 0.0)
    """
    stepped = model
    if ddp and not _distributed():
        if int(os.environ.get("WORLD_SIZE") or 1) > 1:
            raise RuntimeError(
                "fit(ddp=True) under a launcher (WORLD_SIZE > 1) needs the process group: "
                "call torchseq.train.initialize_distributed() first"
            )
        ddp = False  # one process: nothing to synchronize
    from torchseq import train_state

    if save_every is not None and save_every < 1:
        raise ValueError(f"save_every must be >= 1, got {save_every}")
    history, first_epoch, done, resume_rng = History(), 0, 0, None
    if checkpoint_dir is not None:  # before DDP, which broadcasts rank 0's parameters
        state = train_state.restore(checkpoint_dir, model, optimizer, scheduler)
        if state is not None:
            history = restore_history(state)
            history.resumed_step = state.step
            history.resumed_epoch = state.epoch
            first_epoch, done = state.epoch, state.batch
            resume_rng = train_state.epoch_rng(state)
    if ddp and not isinstance(model, DistributedDataParallel):
        stepped = DistributedDataParallel(model)
    saved = (len(history), first_epoch, done)
    epoch_rng = torch.get_rng_state()

    def save(epoch: int, batch: int) -> None:
        nonlocal saved
        if checkpoint_dir is not None and saved != (len(history), epoch, batch):
            train_state.save(
                checkpoint_dir, model, optimizer, scheduler, step_count=len(history),
                epoch=epoch, batch=batch, history=history, config=config, keep=keep,
                epoch_rng=epoch_rng if batch else None,
            )  # fmt: skip
            saved = (len(history), epoch, batch)

    for epoch in range(first_epoch, epochs):
        stepped.train()
        skip = done if epoch == first_epoch else 0  # batches done before a resume
        start = len(history) - skip
        now = torch.get_rng_state()
        if skip and resume_rng is not None:  # the data order as drawn at the epoch's start
            torch.set_rng_state(resume_rng)
        epoch_rng = torch.get_rng_state()
        epoch_batches = iter(batches(epoch) if callable(batches) else batches)
        for _ in range(skip):
            next(epoch_batches, None)
        if skip:
            torch.set_rng_state(now)
        for i, batch in enumerate(epoch_batches, skip):
            t0 = time.perf_counter()
            loss = train_step(
                stepped,
                as_tensors(batch),
                optimizer,
                clip_norm=clip_norm,
                loss_fn=loss_fn,
                ddp=ddp,
            )
            if scheduler is not None:
                scheduler.step()
            history.step_seconds.append(time.perf_counter() - t0)
            history.append(loss)
            if save_every is not None and len(history) % save_every == 0:
                save(epoch, i + 1)
            if callback is not None:
                callback(epoch, len(history), loss)
        record = history.end_epoch(start, eval_fn(model) if eval_fn else None)
        if save_every is None:
            save(epoch + 1, 0)
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)
    save(max(epochs, first_epoch), 0)
    return history


# --------------------------------------------------------------------------- evaluation


def _numpy(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.detach().cpu().numpy()
    if isinstance(out, (tuple, list)):
        return type(out)(_numpy(o) for o in out)
    return out


@torch.no_grad()
def predict(model: torch.nn.Module, *inputs: Any) -> Any:
    """``model(*inputs)`` in eval mode without gradients, as NumPy arrays.

    NumPy inputs become tensors (:func:`as_tensors`); tuple outputs (e.g. a language
    model's ``(logits, state)``) come back as tuples of arrays. The previous train/eval
    mode is restored afterwards.

    >>> import numpy as np
    >>> from torchseq.models import SequenceClassifier
    >>> model = SequenceClassifier(2, 3, hidden_size=4)
    >>> predict(model, np.ones((4, 5, 2), np.float32), np.array([5, 1, 3, 2])).shape
    (4, 3)
    """
    was_training = model.training
    model.eval()
    try:
        return _numpy(model(*as_tensors(inputs)))
    finally:
        model.train(was_training)


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: Iterable[tuple]) -> dict[str, float]:
    """Mean cross-entropy and accuracy of a classifier over ``(x, lengths, y)`` batches.

    Runs in eval mode and restores the previous mode afterwards.
    """
    was_training = model.training
    model.eval()
    total, correct, n = 0.0, 0, 0
    for batch in batches:
        x, lengths, y = as_tensors(batch)
        logits = model(x, lengths)
        total += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(-1) == y).sum())
        n += int(y.shape[0])
    model.train(was_training)
    return {"loss": total / max(n, 1), "accuracy": correct / max(n, 1)}


@torch.no_grad()
def evaluate_regression(model: torch.nn.Module, batches: Iterable[tuple]) -> dict[str, float]:
    """Mean squared error (``"mse"``) and its root (``"rmse"``) over ``(*inputs, target)``
    batches, as :func:`regression_loss` computes it, in eval mode.

    >>> import numpy as np
    >>> model = torch.nn.Linear(1, 1)
    >>> x, y = torch.tensor([[1.0], [2.0]]), torch.tensor([1.0, 3.0])
    >>> r = evaluate_regression(model, [(x[:1], y[:1]), (x[1:], y[1:])])
    >>> bool(abs(r["mse"] - np.mean((predict(model, x)[:, 0] - y.numpy()) ** 2)) < 1e-6)
    True
    """
    was_training = model.training
    model.eval()
    total, n = 0.0, 0
    for batch in batches:
        *inputs, target = as_tensors(batch)
        pred = model(*inputs)
        total += float(torch.sum((pred.reshape(target.shape) - target) ** 2))
        n += int(target.numel())
    model.train(was_training)
    mse = total / max(n, 1)
    return {"mse": mse, "rmse": math.sqrt(mse)}


@torch.no_grad()
def evaluate_language_model(model: torch.nn.Module, ids: Any, chunk: int = 256) -> dict[str, float]:
    """Next-token negative log-likelihood of one long token sequence ``ids`` (L,) int.

    The sequence is read in consecutive chunks of ``chunk`` tokens (the last partial chunk
    is dropped), the model's state carried from chunk to chunk, so every prediction sees
    all the text before it: ``model(x (1, T), hx) -> (logits (1, T, V), hx)``. Eval mode.

    Returns ``{"nll": summed NLL (nats), "tokens": predictions scored, "loss": nll per
    token, "perplexity": exp(loss)}``.
    """
    ids = torch.as_tensor(np.asarray(ids)).long()
    if chunk < 1 or len(ids) < chunk + 1:
        raise ValueError(f"need chunk >= 1 and more than chunk={chunk} tokens, got {len(ids)}")
    was_training = model.training
    model.eval()
    total, tokens, hx = 0.0, 0, None
    for s in range(0, len(ids) - chunk, chunk):
        x, y = ids[s : s + chunk].reshape(1, -1), ids[s + 1 : s + chunk + 1]
        logits, hx = model(x, hx)  # (1, T, V)
        total += float(F.cross_entropy(logits[0], y, reduction="sum"))
        tokens += chunk
    model.train(was_training)
    return {
        "nll": total,
        "tokens": tokens,
        "loss": total / tokens,
        "perplexity": math.exp(total / tokens),
    }
