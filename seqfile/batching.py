"""Batching order, length buckets and padded batches: NumPy only, shared by both frameworks.

``jaxseq.data.batches`` and ``torchseq.data.batches`` are thin wrappers over
:func:`padded_batches`, so the same seed gives the same batches, in the same order and
with the same padded length, in both frameworks.

>>> batch_order(5, 2, shuffle=False)
[array([0, 1]), array([2, 3]), array([4])]
>>> bucket_length(5, (4, 8, 16)), make_buckets(29, num=4)
(8, (8, 15, 22, 29))
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

__all__ = ["batch_order", "bucket_length", "make_buckets", "padded_batches", "as_numpy"]


def batch_order(
    n: int, batch_size: int, *, seed: int | None = 0, shuffle: bool = True, drop_last: bool = False
) -> list[np.ndarray]:
    """The index arrays of each batch: a permutation from ``np.random.default_rng(seed)``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    return [order[i : i + batch_size] for i in range(0, stop, batch_size)]


def make_buckets(max_len: int, num: int = 4, min_len: int | None = None) -> tuple[int, ...]:
    """``num`` evenly spaced bucket sizes ending at ``max_len`` (a tuple, increasing).

    The smallest is ``min_len`` (default ``ceil(max_len / num)``); duplicates are dropped.
    """
    if max_len < 1 or num < 1:
        raise ValueError(f"max_len and num must be >= 1, got max_len={max_len}, num={num}")
    lo = -(-max_len // num) if min_len is None else min(max(int(min_len), 1), max_len)
    return tuple(sorted({int(round(v)) for v in np.linspace(lo, max_len, num)}))


def bucket_length(T: int, buckets: Sequence[int] | None) -> int:
    """The smallest bucket size >= T (T itself when ``buckets`` is None).

    Raises ValueError if T exceeds the largest bucket.
    """
    if buckets is None:
        return int(T)
    fits = [b for b in sorted(buckets) if b >= T]
    if not fits:
        raise ValueError(f"length {T} exceeds the largest bucket {max(buckets)}")
    return int(fits[0])


def padded_batches(
    X: np.ndarray,
    lengths: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    seed: int | None = 0,
    shuffle: bool = True,
    buckets: Sequence[int] | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(x (B, T_b, ...), lengths (B,), y (B, ...))`` NumPy batches.

    ``X`` is a padded (N, T, ...) array. Each batch is cut or zero-padded in time to
    ``T_b = bucket_length(max(lengths), buckets)`` (with ``buckets=None``, T_b is X's
    full T). The order comes from :func:`batch_order`.
    """
    if X.ndim < 2 or lengths.shape != (X.shape[0],) or y.shape[:1] != (X.shape[0],):
        raise ValueError(
            f"X (N, T, ...), lengths (N,) and y (N, ...) must share N; got X "
            f"{X.shape}, lengths {lengths.shape}, y {y.shape}"
        )
    for idx in batch_order(X.shape[0], batch_size, seed=seed, shuffle=shuffle, drop_last=drop_last):
        lb = lengths[idx]
        T_b = bucket_length(int(lb.max()), buckets) if buckets is not None else X.shape[1]
        xb = X[idx, :T_b]
        if xb.shape[1] < T_b:
            xb = np.pad(xb, [(0, 0), (0, T_b - xb.shape[1])] + [(0, 0)] * (X.ndim - 2))
        yield xb, lb, y[idx]


def as_numpy(a: Any) -> np.ndarray:
    """A NumPy view of an array-like (a torch tensor through ``.numpy()``, without torch)."""
    return a.numpy() if hasattr(a, "numpy") and not isinstance(a, np.ndarray) else np.asarray(a)
