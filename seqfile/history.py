"""What a training loop measured, shared by ``jaxseq.train`` and ``torchseq.train``.

Plain Python and NumPy: each framework's ``fit`` returns this same :class:`History`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

__all__ = ["History"]


class History(list[float]):
    """What a training loop measured: the loss of every step (it *is* that ``list`` of
    floats, what ``fit`` has always returned), plus per-epoch records and timings.

    Attributes:
      epochs: one dict per epoch: ``"train_loss"`` (the mean of its step losses) and
        whatever ``eval_fn`` returned after it (e.g. ``"loss"``, ``"accuracy"``).
      step_seconds: wall time of every step, waiting for its loss (evaluation excluded).
      compiled: indices (0-based) of the steps that compiled (JAX fills it; always
        empty in torch).
      resumed_step: the step a ``fit(checkpoint_dir=...)`` resumed from (its records
        before that step come from the checkpoint), or None for a fresh start;
        resumed_epoch: the epoch (0-based) it resumed in.

    >>> h = History([0.5, 0.25]); h.step_seconds = [2.0, 0.5]; h.compiled = [0]
    >>> h.train_seconds, h.compiles, h.steps_per_second
    (2.5, 1, 2.0)
    """

    def __init__(self, losses: Iterable[float] = ()):
        super().__init__(losses)
        self.epochs: list[dict[str, float]] = []
        self.step_seconds: list[float] = []
        self.compiled: list[int] = []
        self.resumed_step: int | None = None
        self.resumed_epoch: int | None = None

    def end_epoch(self, first_step: int, metrics: Mapping[str, float] | None = None) -> dict:
        """Close the epoch that began at step ``first_step``: append and return its record
        ``{"train_loss": mean step loss, **metrics}``."""
        losses = self[first_step:]
        record = {"train_loss": float(np.mean(losses)) if losses else math.nan}
        if metrics:
            if "train_loss" in metrics:
                raise ValueError("eval_fn must not return a 'train_loss' entry")
            record.update(metrics)
        self.epochs.append(record)
        return record

    @property
    def train_seconds(self) -> float:
        """Total wall time of the steps (compilation included, evaluation excluded)."""
        return float(sum(self.step_seconds))

    @property
    def compiles(self) -> int:
        """How many steps compiled (0 in torch)."""
        return len(self.compiled)

    @property
    def steps_per_second(self) -> float:
        """Steps per second over the steps that did not compile (NaN if there are none)."""
        skip = set(self.compiled)
        times = [t for i, t in enumerate(self.step_seconds) if i not in skip]
        total = sum(times)
        return len(times) / total if total > 0 else float("nan")
