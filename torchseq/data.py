"""Padding, lengths and batching for variable-length sequences, as torch tensors.

The same helpers as :mod:`jaxseq.data` (same signatures), returning torch tensors:
lengths are int64 on the CPU, as ``pack_padded_sequence`` wants them. :func:`batches`
draws the same batches in the same order as ``jaxseq.data.batches`` for the same seed.

>>> import torch
>>> x, lengths = pad_sequences([torch.ones(3, 2), torch.ones(1, 2)])
>>> tuple(x.shape), lengths.tolist(), x[1, :, 0].tolist()
((2, 3, 2), [3, 1], [1.0, 0.0, 0.0])
>>> xb, lb, yb = collate([(torch.ones(2, 4), 1), (torch.ones(5, 4), 0)])
>>> tuple(xb.shape), lb.tolist(), yb.tolist()
((2, 5, 4), [2, 5], [1, 0])
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

# Shared with jaxseq.data (NumPy only): the same seed gives the same batches in both.
from seqfile.batching import as_numpy, batch_order, padded_batches

__all__ = ["pad_sequences", "lengths_to_mask", "collate", "batches", "batch_order"]


def pad_sequences(
    seqs: Sequence[Any],
    max_len: int | None = None,
    dtype: torch.dtype | None = None,
    value: float = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack sequences of shape (T_i, ...) into one padded (N, T, ...) tensor.

    Args: seqs (tensors or array-likes, trailing shape shared), max_len (default the
    longest; longer sequences raise), dtype (default the sequences' dtype), value.

    Returns: ``(padded (N, T, ...), lengths (N,) int64)``.
    """
    ts = [s if isinstance(s, torch.Tensor) else torch.as_tensor(np.asarray(s)) for s in seqs]
    if not ts:
        raise ValueError("pad_sequences needs at least one sequence")
    for i, t in enumerate(ts):
        if t.ndim == 0:
            raise ValueError(f"sequence {i} is a scalar; expected shape (T_i, ...)")
        if t.shape[1:] != ts[0].shape[1:]:
            raise ValueError(
                f"sequences must share their trailing shape: sequence 0 has "
                f"{tuple(ts[0].shape[1:])}, sequence {i} has {tuple(t.shape[1:])}"
            )
    lengths = torch.tensor([t.shape[0] for t in ts], dtype=torch.int64)
    T = int(lengths.max()) if max_len is None else int(max_len)
    if int(lengths.max()) > T:
        i = int(lengths.argmax())
        raise ValueError(f"sequence {i} has length {int(lengths[i])} > max_len={T}")
    dtype = ts[0].dtype if dtype is None else dtype
    out = torch.full((len(ts), T) + tuple(ts[0].shape[1:]), value, dtype=dtype)
    for i, t in enumerate(ts):
        out[i, : t.shape[0]] = t
    return out, lengths


def lengths_to_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(N,) lengths -> (N, T) bool mask, True at valid steps t < lengths[n]."""
    lengths = torch.as_tensor(lengths)
    return torch.arange(max_len).unsqueeze(0) < lengths.unsqueeze(1)


def collate(batch: Sequence[tuple[Any, Any]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``collate_fn`` for a ``DataLoader`` over ``(sequence (T_i, ...), label)`` pairs.

    Returns ``(padded (B, T, ...), lengths (B,) int64, labels (B, ...))`` with T the longest
    sequence of the batch.
    """
    seqs, labels = zip(*batch, strict=True)
    x, lengths = pad_sequences(seqs)
    ys = [y if isinstance(y, torch.Tensor) else torch.as_tensor(y) for y in labels]
    return x, lengths, torch.stack(ys)


def batches(
    X: Any,
    lengths: Any,
    y: Any,
    batch_size: int,
    *,
    seed: int | None = 0,
    shuffle: bool = True,
    buckets: Sequence[int] | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield ``(x (B, T_b, ...), lengths (B,) int64, y (B, ...))`` tensors.

    The same batches, in the same order and with the same T_b, as
    ``jaxseq.data.batches(X, lengths, y, batch_size, seed=seed, shuffle=shuffle,
    buckets=buckets, drop_last=drop_last)``.
    """
    X, y = as_numpy(X), as_numpy(y)
    lengths = as_numpy(lengths).astype(np.int64)
    for xb, lb, yb in padded_batches(
        X, lengths, y, batch_size, seed=seed, shuffle=shuffle, buckets=buckets, drop_last=drop_last
    ):
        yield (
            torch.from_numpy(np.ascontiguousarray(xb)),
            torch.from_numpy(lb),
            torch.from_numpy(yb),
        )
