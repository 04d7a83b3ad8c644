"""A plain PyTorch training loop: ``torch.optim`` plus gradient clipping by norm.

One step is ``zero_grad -> loss.backward() -> clip_grad_norm_ (optional) -> step()``, the
loop the PyTorch tutorials teach; ``jaxseq.train`` reproduces it with optax.

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

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["classification_loss", "train_step", "fit", "evaluate"]


def classification_loss(
    model: torch.nn.Module, x: torch.Tensor, lengths: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """The default loss: mean ``F.cross_entropy(model(x, lengths), y)``."""
    return F.cross_entropy(model(x, lengths), y)


def train_step(
    model: torch.nn.Module,
    batch: tuple,
    optimizer: torch.optim.Optimizer,
    *,
    clip_norm: float | None = None,
    loss_fn: Callable[..., torch.Tensor] = classification_loss,
) -> float:
    """One update on ``batch`` (a tuple passed as ``loss_fn(model, *batch)``); the loss."""
    optimizer.zero_grad()
    loss = loss_fn(model, *batch)
    loss.backward()
    if clip_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    optimizer.step()
    return float(loss.detach())


def fit(
    model: torch.nn.Module,
    batches: Iterable[tuple] | Callable[[int], Iterable[tuple]],
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int = 1,
    clip_norm: float | None = None,
    loss_fn: Callable[..., torch.Tensor] = classification_loss,
    callback: Callable[[int, int, float], Any] | None = None,
) -> list[float]:
    """Train ``model`` in place; return the loss of every step.

    ``batches`` is a re-iterable of batch tuples (a list, a ``DataLoader``) or a function
    ``epoch -> iterable``. ``callback(epoch, step, loss)`` runs after every step. The model
    is put in training mode.
    """
    model.train()
    losses: list[float] = []
    for epoch in range(epochs):
        for batch in batches(epoch) if callable(batches) else batches:
            losses.append(train_step(model, batch, optimizer, clip_norm=clip_norm, loss_fn=loss_fn))
            if callback is not None:
                callback(epoch, len(losses), losses[-1])
    return losses


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: Iterable[tuple]) -> dict[str, float]:
    """Mean cross-entropy and accuracy of a classifier over ``(x, lengths, y)`` batches.

    Runs in eval mode and restores the previous mode afterwards.
    """
    was_training = model.training
    model.eval()
    total, correct, n = 0.0, 0, 0
    for x, lengths, y in batches:
        logits = model(x, lengths)
        total += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(-1) == y).sum())
        n += int(y.shape[0])
    model.train(was_training)
    return {"loss": total / max(n, 1), "accuracy": correct / max(n, 1)}
