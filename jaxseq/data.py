"""Padding, lengths, masks and length-bucketed batching for variable-length sequences.

Everything here runs on the host and returns NumPy arrays: a jitted step compiles once
per distinct input *shape*, so the batches are padded in time up to one of a small set of
bucket sizes (:func:`bucket_length`) and the number of compilations stays bounded, while
the true lengths travel as a traced (N,) int32 array that never triggers a recompile.

Shapes: a sequence is (T_i, ...) (e.g. (T_i, I) features or (T_i,) tokens); a padded
batch is (N, T, ...) with zeros at t >= lengths[n]; lengths is (N,) int32.

>>> import numpy as np
>>> x, lengths = pad_sequences([np.ones((3, 2)), np.ones((1, 2))])
>>> x.shape, lengths.tolist(), x[1, :, 0].tolist()
((2, 3, 2), [3, 1], [1.0, 0.0, 0.0])
>>> bucket_length(5, (4, 8, 16)), make_buckets(29, num=4)
(8, (8, 15, 22, 29))
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

__all__ = [
    "pad_sequences",
    "lengths_to_mask",
    "bucket_length",
    "make_buckets",
    "batches",
    "batch_order",
]


def pad_sequences(
    seqs: Sequence[Any], max_len: int | None = None, dtype: Any = None, value: float = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Stack sequences of shape (T_i, ...) into one zero-padded (N, T, ...) array.

    Args:
      seqs: N array-likes of shape (T_i, ...), the trailing shape shared by all.
      max_len: T; default the longest T_i. A sequence longer than ``max_len`` raises.
      dtype: of the padded array; default the sequences' common NumPy dtype.
      value: the padding value.

    Returns:
      ``(padded (N, T, ...), lengths (N,) int32)``.
    """
    arrs = [np.asarray(s) for s in seqs]
    if not arrs:
        raise ValueError("pad_sequences needs at least one sequence")
    for i, a in enumerate(arrs):
        if a.ndim == 0:
            raise ValueError(f"sequence {i} is a scalar; expected shape (T_i, ...)")
        if a.shape[1:] != arrs[0].shape[1:]:
            raise ValueError(
                f"sequences must share their trailing shape: sequence 0 has "
                f"{arrs[0].shape[1:]}, sequence {i} has {a.shape[1:]}"
            )
    lengths = np.array([a.shape[0] for a in arrs], dtype=np.int32)
    T = int(lengths.max()) if max_len is None else int(max_len)
    if lengths.max() > T:
        i = int(lengths.argmax())
        raise ValueError(f"sequence {i} has length {lengths[i]} > max_len={T}")
    dtype = np.result_type(*arrs) if dtype is None else dtype
    out = np.full((len(arrs), T) + arrs[0].shape[1:], value, dtype=dtype)
    for i, a in enumerate(arrs):
        out[i, : a.shape[0]] = a
    return out, lengths


def lengths_to_mask(lengths: Any, max_len: int) -> np.ndarray:
    """(N,) lengths -> (N, T) boolean mask, True at valid steps t < lengths[n].

    >>> lengths_to_mask([2, 0], 3).tolist()
    [[True, True, False], [False, False, False]]
    """
    lengths = np.asarray(lengths)
    return np.arange(max_len).reshape(1, -1) < lengths.reshape(-1, 1)


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


def batch_order(
    n: int, batch_size: int, *, seed: int | None = 0, shuffle: bool = True, drop_last: bool = False
) -> list[np.ndarray]:
    """The index arrays of each batch: a permutation from ``np.random.default_rng(seed)``.

    ``torchseq.data.batches`` uses the same function, so the same seed gives the same
    batches in the same order in both frameworks.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    return [order[i : i + batch_size] for i in range(0, stop, batch_size)]


def batches(
    X: Any,
    lengths: Any,
    y: Any,
    batch_size: int,
    *,
    seed: int | None = 0,
    key: Any = None,
    shuffle: bool = True,
    buckets: Sequence[int] | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(x (B, T_b, ...), lengths (B,) int32, y (B, ...))`` NumPy batches.

    ``X`` is a padded (N, T, ...) array (or a list of (T_i, ...) sequences, padded here).
    Each batch is cut or zero-padded in time to ``T_b = bucket_length(max(lengths), buckets)``
    (with ``buckets=None``, T_b is X's full T: one shape, one compilation). Use
    ``drop_last=True`` to keep B fixed too. The order comes from ``seed`` (or from a JAX
    ``key``, turned into a seed), see :func:`batch_order`.

    >>> import numpy as np
    >>> X, L = pad_sequences([np.ones(n) for n in (1, 2, 5, 3)])
    >>> [(xb.shape, lb.tolist()) for xb, lb, _ in batches(X, L, np.arange(4), 2,
    ...                                                    shuffle=False, buckets=(2, 4, 8))]
    [((2, 2), [1, 2]), ((2, 8), [5, 3])]
    """
    if isinstance(X, (list, tuple)):
        X, computed = pad_sequences(X)
        lengths = computed if lengths is None else lengths
    X = np.asarray(X)
    lengths = np.asarray(lengths).astype(np.int32)
    y = np.asarray(y)
    if X.ndim < 2 or lengths.shape != (X.shape[0],) or y.shape[:1] != (X.shape[0],):
        raise ValueError(
            f"X (N, T, ...), lengths (N,) and y (N, ...) must share N; got X "
            f"{X.shape}, lengths {lengths.shape}, y {y.shape}"
        )
    if key is not None:
        import jax

        seed = int(jax.random.randint(key, (), 0, np.iinfo(np.int32).max))
    for idx in batch_order(X.shape[0], batch_size, seed=seed, shuffle=shuffle, drop_last=drop_last):
        lb = lengths[idx]
        T_b = bucket_length(int(lb.max()), buckets) if buckets is not None else X.shape[1]
        xb = X[idx, :T_b]
        if xb.shape[1] < T_b:
            pad = [(0, 0), (0, T_b - xb.shape[1])] + [(0, 0)] * (X.ndim - 2)
            xb = np.pad(xb, pad)
        yield xb, lb, y[idx]
