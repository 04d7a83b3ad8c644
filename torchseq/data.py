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

__all__ = ["pad_sequences", "lengths_to_mask", "collate", "batches", "batch_order"]


def batch_order(
    n: int, batch_size: int, *, seed: int | None = 0, shuffle: bool = True, drop_last: bool = False
) -> list[np.ndarray]:
    """The index arrays of each batch (a permutation from ``np.random.default_rng(seed)``).

    Identical to ``jaxseq.data.batch_order``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    return [order[i : i + batch_size] for i in range(0, stop, batch_size)]


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
    X = X.numpy() if isinstance(X, torch.Tensor) else np.asarray(X)
    lengths = (
        lengths.numpy() if isinstance(lengths, torch.Tensor) else np.asarray(lengths)
    ).astype(np.int64)
    y = y.numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if X.ndim < 2 or lengths.shape != (X.shape[0],) or y.shape[:1] != (X.shape[0],):
        raise ValueError(
            f"X (N, T, ...), lengths (N,) and y (N, ...) must share N; got X "
            f"{X.shape}, lengths {lengths.shape}, y {y.shape}"
        )
    for idx in batch_order(X.shape[0], batch_size, seed=seed, shuffle=shuffle, drop_last=drop_last):
        lb = lengths[idx]
        T_b = X.shape[1]
        if buckets is not None:
            fits = [b for b in sorted(buckets) if b >= int(lb.max())]
            if not fits:
                raise ValueError(
                    f"length {int(lb.max())} exceeds the largest bucket {max(buckets)}"
                )
            T_b = fits[0]
        xb = X[idx, :T_b]
        if xb.shape[1] < T_b:
            xb = np.pad(xb, [(0, 0), (0, T_b - xb.shape[1])] + [(0, 0)] * (X.ndim - 2))
        yield (
            torch.from_numpy(np.ascontiguousarray(xb)),
            torch.from_numpy(lb),
            torch.from_numpy(y[idx]),
        )
