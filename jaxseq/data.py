"""Padding, lengths, masks and length-bucketed batching for variable-length sequences.

:func:`pad_sequence` and :func:`unpad_sequence` are ``torch.nn.utils.rnn``'s functions
of the same names for JAX arrays (time-major by default, ``padding_side``), returning
``jax.Array``. The batching helpers below run on the host and return NumPy arrays
(batch-first): a jitted step compiles once
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
>>> padded = pad_sequence([np.array([1, 2, 3]), np.array([4])])  # (T, N) as torch
>>> padded.tolist(), [s.tolist() for s in unpad_sequence(padded, [3, 1])]
([[1, 4], [2, 0], [3, 0]], [[1, 2, 3], [4]])
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np

# Shared with torchseq.data (NumPy only): the same seed gives the same batches in both.
from jaxseq.validation import LENGTHS_RANGE
from seqfile.batching import batch_order, bucket_length, make_buckets, padded_batches

__all__ = [
    "pad_sequence",
    "unpad_sequence",
    "pad_sequences",
    "lengths_to_mask",
    "bucket_length",
    "make_buckets",
    "batches",
    "batch_order",
    "stream_batches",
    "PackedEpisodes",
    "pack_episodes",
    "unpack_episodes",
    "episode_states",
]


_PADDING_SIDES = ("left", "right")


def _check_padding_side(padding_side: Any) -> None:
    if padding_side not in _PADDING_SIDES:
        raise ValueError(
            f"Expected padding_side to be one of left or right, but got {padding_side}."
        )


def _padding_scalar(value: Any, dtype: np.dtype) -> Any:
    """``value`` as a ``dtype`` scalar, as torch converts ``padding_value``: truncated toward
    zero for integers, True for any nonzero value for bool, refused when it overflows."""
    if not isinstance(value, numbers.Number):
        raise TypeError(f"padding_value must be a number, got {type(value).__name__}")
    value = cast(Any, value)  # a Python or NumPy number; NumPy's stubs do not type Number
    overflow = ValueError(
        f"padding_value {value!r} cannot be converted to type {np.dtype(dtype)} without overflow"
    )
    if jnp.issubdtype(dtype, jnp.bool_):
        return np.bool_(value != 0)
    if isinstance(value, complex) and not jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(f"a complex padding_value {value!r} cannot pad {np.dtype(dtype)} sequences")
    if jnp.issubdtype(dtype, jnp.integer):
        if not np.isfinite(value):
            raise overflow
        v, info = int(value), jnp.iinfo(dtype)  # int() truncates toward zero, as torch
        if not info.min <= v <= info.max:
            raise overflow
        return np.asarray(v).astype(dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        converted = np.asarray(value).astype(dtype)
    if np.isfinite(value) and not np.isfinite(np.asarray(converted, dtype=np.complex128)):
        raise overflow
    return converted


def _as_array(s: Any, i: int) -> Any:
    a = s if isinstance(s, jax.Array) else np.asarray(s)
    if (
        not (jnp.issubdtype(a.dtype, jnp.number) or jnp.issubdtype(a.dtype, jnp.bool_))
        or a.dtype == np.object_
    ):
        raise TypeError(f"sequence {i} has dtype {a.dtype}; expected a numeric or bool array")
    if a.ndim == 0:
        raise ValueError(
            f"pad_sequence: sequence {i} is a 0-d array (a scalar); every sequence must have "
            f"shape (L_i, *)"
        )
    return a


def pad_sequence(
    sequences: Iterable[Any],
    batch_first: bool = False,
    padding_value: float = 0.0,
    padding_side: str = "right",
) -> jax.Array:
    """Pad variable-length sequences to one array, as ``torch.nn.utils.rnn.pad_sequence``.

    Sequence i has shape (L_i, *), ``*`` the same for all; T = max L_i (0 when every
    sequence is empty). Sequence i fills steps ``[0, L_i)`` with ``padding_side="right"``
    (the default) or ``[T - L_i, T)`` with ``"left"``; every other step holds
    ``padding_value`` (converted to the dtype as torch does: truncated for integers).

    Args:
      sequences: an iterable of N arrays of shape (L_i, *): NumPy or JAX arrays, or
        nested lists. An (N, L, *) array is taken as N sequences of length L, as torch.
      batch_first: return (N, T, *) instead of (T, N, *).
      padding_value: the value of the padded steps.
      padding_side: ``"right"`` or ``"left"``.

    Returns:
      A ``jax.Array`` (T, N, *), or (N, T, *) with ``batch_first=True``. Its dtype is the
      sequences' dtype (as torch, which assumes one dtype); sequences of different dtypes
      are promoted with JAX's standard rules (torch would cast to the first one's dtype).
      NumPy inputs are padded on the host and moved to the device once; with any JAX
      array among them the padding runs in JAX, so it also works under ``jax.jit``.

    Raises:
      TypeError: ``sequences`` is not iterable, or holds non-numeric data.
      ValueError: no sequences, a 0-d sequence, different trailing shapes, a bad
        ``padding_side``, or a ``padding_value`` that overflows the dtype.

    >>> import numpy as np
    >>> seqs = [np.ones((3, 2)), np.ones((1, 2))]                 # (L_i, I)
    >>> pad_sequence(seqs).shape                                   # (T, N, I)
    (3, 2, 2)
    >>> pad_sequence([[1, 2, 3], [4]], batch_first=True, padding_value=-1,
    ...              padding_side="left").tolist()
    [[1, 2, 3], [-1, -1, 4]]
    """
    if not isinstance(sequences, Iterable):
        raise TypeError(
            "pad_sequence: Expected iterable for input sequences, but got arg of type: "
            f"{type(sequences)}"
        )
    arrs = [_as_array(s, i) for i, s in enumerate(sequences)]
    if not arrs:
        raise ValueError("pad_sequence: received an empty list of sequences")
    _check_padding_side(padding_side)
    trailing = tuple(arrs[0].shape[1:])
    for i, a in enumerate(arrs):
        if tuple(a.shape[1:]) != trailing:
            raise ValueError(
                f"pad_sequence: the trailing dimensions of sequence {i}, {tuple(a.shape[1:])}, "
                f"must match those of sequence 0, {trailing}: every sequence has shape "
                f"(L_i, *) with the same *"
            )
    dtypes = [np.dtype(a.dtype) for a in arrs]
    if all(d == dtypes[0] for d in dtypes):
        dtype = jax.dtypes.canonicalize_dtype(dtypes[0])
    else:
        with jax.numpy_dtype_promotion("standard"):
            dtype = jnp.result_type(*dtypes)
    pad = _padding_scalar(padding_value, dtype)
    N, T = len(arrs), max(a.shape[0] for a in arrs)
    right = padding_side == "right"

    if not any(isinstance(a, jax.Array) for a in arrs):  # all on the host: pad there
        out = np.full((N, T) + trailing, pad, dtype=dtype)
        for i, a in enumerate(arrs):
            L = a.shape[0]
            out[i, slice(0, L) if right else slice(T - L, T)] = a
        return jnp.asarray(out if batch_first else np.swapaxes(out, 0, 1))

    rows = []
    for a in arrs:
        a = jnp.asarray(a, dtype)
        fill = jnp.full((T - a.shape[0],) + trailing, pad, dtype)
        rows.append(jnp.concatenate([a, fill] if right else [fill, a]))
    return jnp.stack(rows, axis=0 if batch_first else 1)


def unpad_sequence(
    padded: Any,
    lengths: Any,
    batch_first: bool = False,
    *,
    padding_side: str = "right",
) -> list[jax.Array]:
    """Split a padded batch into its N sequences, as ``torch.nn.utils.rnn.unpad_sequence``.

    The inverse of :func:`pad_sequence`: ``unpad_sequence(pad_sequence(seqs), lengths)``
    gives ``seqs`` back (with the same ``batch_first`` and ``padding_side``).

    Args:
      padded: (T, N, *), or (N, T, *) with ``batch_first=True``.
      lengths: (N,) integers in [0, T]. They must be concrete (NumPy, a list, or a JAX
        array outside ``jax.jit``): the output shapes depend on them. ``padded`` itself
        may be traced.
      batch_first: the layout of ``padded``.
      padding_side: where the padding is, ``"right"`` (torch's only choice) or ``"left"``.

    Returns:
      A list of N ``jax.Array`` of shape (lengths[i], *).

    >>> import numpy as np
    >>> padded = np.array([[1, 2, 3], [4, 0, 0]])                  # (N, T)
    >>> [s.tolist() for s in unpad_sequence(padded, [3, 1], batch_first=True)]
    [[1, 2, 3], [4]]
    """
    _check_padding_side(padding_side)
    if isinstance(lengths, jax.core.Tracer):
        raise TypeError(
            "unpad_sequence needs concrete lengths (the output shapes depend on them), but "
            "got a traced array: call it outside jax.jit, or pass lengths as a NumPy array"
        )
    if not isinstance(padded, jax.Array):
        padded = jnp.asarray(padded)
    if padded.ndim < 2:
        layout = "(N, T, *)" if batch_first else "(T, N, *)"
        raise ValueError(f"padded must have shape {layout}, got {tuple(padded.shape)}")
    if isinstance(lengths, (list, tuple)) and len(lengths) == 0:
        lengths = np.zeros((0,), np.int64)
    lengths = np.asarray(lengths)
    if lengths.dtype == np.bool_ or not np.issubdtype(lengths.dtype, np.integer):
        raise TypeError(f"lengths must hold integers, got dtype {lengths.dtype}")
    N, T = padded.shape[:2] if batch_first else padded.shape[1::-1]
    if lengths.shape != (N,):
        raise ValueError(f"lengths must have shape (N,) = ({N},), got {lengths.shape}")
    if N and (lengths.min() < 0 or lengths.max() > T):
        raise ValueError(LENGTHS_RANGE.format(T=T, lo=lengths.min(), hi=lengths.max()))
    out = []
    for i, L in enumerate(lengths.tolist()):
        seq = padded[i] if batch_first else padded[:, i]  # (T, *)
        out.append(seq[:L] if padding_side == "right" else seq[T - L :])
    return out


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
    X, lengths, y = np.asarray(X), np.asarray(lengths).astype(np.int32), np.asarray(y)
    if key is not None:
        seed = int(jax.random.randint(key, (), 0, np.iinfo(np.int32).max))
    yield from padded_batches(
        X, lengths, y, batch_size, seed=seed, shuffle=shuffle, buckets=buckets, drop_last=drop_last
    )


def stream_batches(ids: Any, batch_size: int, seq_len: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """One long token sequence ``ids`` (L,) as consecutive ``(x, y)`` chunks for truncated
    backpropagation through time: the text cut into ``batch_size`` contiguous rows (the
    tail that does not fill a row dropped), then into chunks of ``seq_len`` steps, y = x
    shifted by one token. Chunk k+1 of row n continues chunk k of row n, so a state
    carried between calls (:class:`TrainStep` with ``carry_state=True``) reads each row
    as one text.

    >>> [(x.tolist(), y.tolist()) for x, y in stream_batches(np.arange(9), 2, 2)]
    [([[0, 1], [4, 5]], [[1, 2], [5, 6]]), ([[2, 3], [6, 7]], [[3, 4], [7, 8]])]
    """
    ids = np.asarray(ids)
    if batch_size < 1 or seq_len < 1:
        raise ValueError(f"batch_size and seq_len must be >= 1, got {batch_size}, {seq_len}")
    per_row = (len(ids) - 1) // batch_size
    if per_row < seq_len:
        raise ValueError(
            f"{len(ids)} tokens give {per_row} per row for batch_size={batch_size}, fewer "
            f"than seq_len={seq_len}"
        )
    rows = np.stack([ids[n * per_row : n * per_row + per_row + 1] for n in range(batch_size)])
    return [
        (rows[:, s : s + seq_len], rows[:, s + 1 : s + seq_len + 1])
        for s in range(0, per_row - seq_len + 1, seq_len)
    ]


class PackedEpisodes(NamedTuple):
    """Variable-length episodes packed into rows, from :func:`pack_episodes`.

    Episode e sits in row ``rows[e]`` at steps ``starts[e] : starts[e] + sizes[e]``.
    """

    #: (N, T, *) batch-first, or (T, N, *) time-major: the episodes laid end to end in
    #: their rows, zeros after each row's last episode.
    x: np.ndarray
    #: bool, with the time and batch axes of ``x``: True at the first step of every
    #: episode (pass it as ``resets=`` to a stack: each episode starts from the initial
    #: state, as if run alone).
    resets: np.ndarray
    #: (N,) int32: the valid steps of each row (pass it as ``lengths=``).
    lengths: np.ndarray
    #: (E,) int32: the row of each episode.
    rows: np.ndarray
    #: (E,) int32: the step each episode starts at in its row.
    starts: np.ndarray
    #: (E,) int32: the steps of each episode.
    sizes: np.ndarray
    #: The layout of ``x`` and ``resets``.
    batch_first: bool

    @property
    def num_rows(self) -> int:
        """N, the rows of the batch."""
        return int(self.lengths.shape[0])

    @property
    def max_len(self) -> int:
        """T, the steps of a row."""
        return int(self.resets.shape[1 if self.batch_first else 0])


def pack_episodes(
    episodes: Sequence[Any],
    max_len: int,
    num_rows: int | None = None,
    *,
    batch_first: bool = False,
    dtype: Any = None,
) -> PackedEpisodes:
    """Pack variable-length episodes into (T, N) rows, several per row, with their resets.

    Episodes are placed in the given order, each into the first row with room for it
    (first fit), so a batch holds many short episodes without padding each to the
    longest. Run the packed batch with ``resets=packed.resets, lengths=packed.lengths``
    and every episode's outputs equal running it alone from the initial state (zeros);
    :func:`unpack_episodes` splits the outputs back per episode.

    Args:
      episodes: E array-likes of shape (T_e, *), the trailing shape shared, T_e >= 1.
      max_len: T, the steps of a row; an episode longer than T is refused (split it, or
        pass a larger ``max_len``).
      num_rows: N; default as many rows as first fit needs. Too few rows for the
        episodes is an error naming how many are needed.
      batch_first: lay ``x`` and ``resets`` out (N, T, *) instead of (T, N, *).
      dtype: of ``x``; default the episodes' common NumPy dtype.

    Returns:
      :class:`PackedEpisodes`.

    >>> import numpy as np
    >>> eps = [np.arange(1, 4), np.arange(4, 6), np.arange(6, 10), np.array([10])]
    >>> p = pack_episodes(eps, max_len=5, batch_first=True)
    >>> p.x.tolist(), p.resets.astype(int).tolist(), p.lengths.tolist()
    ([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]], [[1, 0, 0, 1, 0], [1, 0, 0, 0, 1]], [5, 5])
    >>> [e.tolist() for e in unpack_episodes(p.x, p)] == [e.tolist() for e in eps]
    True
    """
    arrs = [np.asarray(e) for e in episodes]
    if not arrs:
        raise ValueError("pack_episodes needs at least one episode")
    T = int(max_len)
    if T < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    for i, a in enumerate(arrs):
        if a.ndim == 0 or a.shape[0] == 0:
            raise ValueError(f"episode {i} has shape {a.shape}; expected (T_e, ...) with T_e >= 1")
        if a.shape[1:] != arrs[0].shape[1:]:
            raise ValueError(
                f"episodes must share their trailing shape: episode 0 has "
                f"{arrs[0].shape[1:]}, episode {i} has {a.shape[1:]}"
            )
        if a.shape[0] > T:
            raise ValueError(
                f"episode {i} has {a.shape[0]} steps > max_len={T}: pass a larger max_len, "
                "or split the episode (carry its state across the pieces with hx)"
            )
    used: list[int] = []  # steps taken in each row so far
    place = []
    for a in arrs:
        n = next((r for r, u in enumerate(used) if u + a.shape[0] <= T), len(used))
        if n == len(used):
            used.append(0)
        place.append((n, used[n]))
        used[n] += a.shape[0]
    N = len(used) if num_rows is None else int(num_rows)
    if N < len(used):
        raise ValueError(
            f"{len(arrs)} episodes need {len(used)} rows of max_len={T} steps (first fit), "
            f"but num_rows={num_rows}"
        )
    dtype = np.result_type(*arrs) if dtype is None else dtype
    x = np.zeros((N, T) + arrs[0].shape[1:], dtype=dtype)
    resets = np.zeros((N, T), dtype=bool)
    for a, (n, s) in zip(arrs, place, strict=True):
        x[n, s : s + a.shape[0]] = a
        resets[n, s] = True
    lengths = np.zeros(N, np.int32)
    lengths[: len(used)] = used
    if not batch_first:
        x, resets = np.swapaxes(x, 0, 1), resets.T
    rows, starts = (np.array(v, np.int32) for v in zip(*place, strict=True))
    sizes = np.array([a.shape[0] for a in arrs], np.int32)
    return PackedEpisodes(x, resets, lengths, rows, starts, sizes, batch_first)


def unpack_episodes(y: Any, packed: PackedEpisodes) -> list[Any]:
    """Split a packed batch's per-step result back into its episodes.

    Args:
      y: an array with the time and batch axes of ``packed.x`` in the same layout, e.g. a
        stack's outputs for the packed inputs (a NumPy or JAX array; under ``jax.jit``
        too: the slices are static).
      packed: what :func:`pack_episodes` returned.

    Returns:
      E arrays, episode e's steps (T_e, *), in the order the episodes were given.
    """
    N, T = packed.num_rows, packed.max_len
    lead = tuple(y.shape[:2])
    if lead != ((N, T) if packed.batch_first else (T, N)):
        layout = "(N, T, *)" if packed.batch_first else "(T, N, *)"
        raise ValueError(
            f"y must have the packed layout {layout} with N={N}, T={T}; got shape {tuple(y.shape)}"
        )
    spans = zip(packed.rows.tolist(), packed.starts.tolist(), packed.sizes.tolist(), strict=True)
    if packed.batch_first:
        return [y[n, s : s + k] for n, s, k in spans]
    return [y[s : s + k, n] for n, s, k in spans]


def episode_states(states: Any, packed: PackedEpisodes, *, bidirectional: bool = False) -> Any:
    """Every packed episode's final state, out of a stack's states after every step.

    Run the packed batch with ``return_all_states=True`` (:func:`jaxseq.run_stack`); this
    picks, for episode e, each forward direction's state at the episode's last step and
    each reverse direction's at its first (a reverse direction ends an episode there),
    the states ``h_n`` would hold had the episode run alone from the initial state: the
    state to keep in a replay buffer, or to start a burn-in from.

    Args:
      states: the stack's states after every step, structured as its ``h_n`` (an array,
        or a tuple such as the LSTM's ``(hs, cs)``), each (T, L*D, N, size).
      packed: what :func:`pack_episodes` returned for the batch.
      bidirectional: the stack has two directions (D = 2): odd entries of the L*D axis
        are reverse directions.

    Returns:
      The same structure, each (L*D, E, size): the episodes in a batch of their own,
      shaped as a stack's ``hx`` (pass it as ``hx=`` to continue them). Differentiable,
      and usable under ``jax.jit`` (the indices are static).

    >>> import jax, jax.numpy as jnp, numpy as np, jaxseq
    >>> eps = [np.ones((3, 2)), np.ones((2, 2)), np.ones((4, 2))]
    >>> packed = pack_episodes(eps, max_len=5)
    >>> p = jaxseq.init_params(jax.random.key(0), "gru", 2, 3)
    >>> _, _, hs = jaxseq.gru(p, packed.x, lengths=packed.lengths, resets=packed.resets,
    ...                       return_all_states=True)
    >>> h_e = episode_states(hs, packed)               # (L*D, E, H)
    >>> _, h_alone = jaxseq.gru(p, eps[1][:, None])    # episode 1 run alone
    >>> h_e.shape, bool(jnp.allclose(h_e[:, 1], h_alone[:, 0], atol=1e-6))
    ((1, 3, 3), True)
    """
    T, N, D = packed.max_len, packed.num_rows, 2 if bidirectional else 1
    first = np.asarray(packed.starts)
    last = first + np.asarray(packed.sizes) - 1

    def pick(a: Any) -> Any:
        if a.ndim != 4 or a.shape[0] != T or a.shape[2] != N or a.shape[1] % D:
            raise ValueError(
                f"states must be (T, L*D, N, size) with T={T}, N={N}, L*D a multiple of "
                f"D={D}; got shape {tuple(a.shape)}"
            )
        LD = a.shape[1]
        reverse = (np.arange(LD) % D == 1)[:, None]  # (L*D, 1)
        t = np.where(reverse, first[None], last[None])  # (L*D, E)
        return a[t, np.arange(LD)[:, None], np.asarray(packed.rows)[None]]

    return jax.tree.map(pick, states)
