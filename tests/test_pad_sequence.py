"""jaxseq.data.pad_sequence / unpad_sequence against torch.nn.utils.rnn's functions."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch.nn.utils import rnn as trnn

from jaxseq.data import pad_sequence, unpad_sequence

TORCH_DTYPE = {
    np.dtype(np.float32): torch.float32,
    np.dtype(np.float64): torch.float64,
    np.dtype(np.int32): torch.int32,
    np.dtype(np.int64): torch.int64,
    np.dtype(np.bool_): torch.bool,
}
LENGTHS = (4, 0, 7, 1, 7)


def make_seqs(lengths, trailing, dtype, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for n in lengths:
        a = rng.normal(size=(n, *trailing)) * 10
        out.append(a.astype(dtype) if np.dtype(dtype) != np.bool_ else a > 0)
    return out


def torch_pad(seqs, **kw):
    return trnn.pad_sequence([torch.from_numpy(np.array(s)) for s in seqs], **kw).numpy()


def assert_same(got, want):
    assert isinstance(got, jax.Array)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_array_equal(np.asarray(got), want)


GRID = list(
    itertools.product(
        ["right", "left"],
        [False, True],
        [(), (3,), (2, 3)],
        [np.float32, np.float64, np.int32, np.int64, np.bool_],
    )
)


@pytest.mark.parametrize(("side", "batch_first", "trailing", "dtype"), GRID)
def test_pad_sequence_equals_torch(side, batch_first, trailing, dtype):
    seqs = make_seqs(LENGTHS, trailing, dtype)
    want = torch_pad(seqs, batch_first=batch_first, padding_side=side)
    kw = dict(batch_first=batch_first, padding_side=side)
    assert_same(pad_sequence(seqs, **kw), want)  # NumPy in: padded on the host
    assert_same(pad_sequence([jnp.asarray(s) for s in seqs], **kw), want)  # JAX in


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.bool_])
@pytest.mark.parametrize("value", [0.0, -1.7, 2, 3.5, True])
@pytest.mark.parametrize("side", ["right", "left"])
def test_padding_value_equals_torch(dtype, value, side):
    if np.dtype(dtype) == np.bool_ and not isinstance(value, bool) and value != 0:
        value = 1.0
    seqs = make_seqs((2, 5, 0), (2,), dtype, seed=1)
    want = torch_pad(seqs, padding_value=value, padding_side=side)
    assert_same(pad_sequence(seqs, padding_value=value, padding_side=side), want)
    jseqs = [jnp.asarray(s) for s in seqs]
    assert_same(pad_sequence(jseqs, padding_value=value, padding_side=side), want)


def test_positional_arguments_as_torch():
    seqs = make_seqs((3, 1), (), np.float64)
    want = torch_pad(seqs, batch_first=True, padding_value=-1.0, padding_side="left")
    assert_same(pad_sequence(seqs, True, -1.0, "left"), want)


def test_lists_mixed_inputs_and_stacked_array():
    assert pad_sequence([[1, 2, 3], [4]]).tolist() == [[1, 4], [2, 0], [3, 0]]
    assert pad_sequence([[1.5], []]).dtype == jnp.float64  # [] is float64 in NumPy, too
    seqs = make_seqs((3, 2), (2,), np.float64)
    mixed = pad_sequence([seqs[0], jnp.asarray(seqs[1])], batch_first=True)
    assert_same(mixed, torch_pad(seqs, batch_first=True))
    stacked = np.arange(6.0).reshape(2, 3)  # (N, L): N sequences of length L, as torch
    assert_same(pad_sequence(stacked), trnn.pad_sequence(torch.from_numpy(stacked)).numpy())
    assert_same(pad_sequence(iter(seqs)), torch_pad(seqs))  # any iterable


def test_all_empty_and_single():
    seqs = [np.zeros((0, 3)), np.zeros((0, 3))]
    for bf in (False, True):
        assert_same(pad_sequence(seqs, batch_first=bf), torch_pad(seqs, batch_first=bf))
    one = [np.arange(4.0)]
    assert_same(pad_sequence(one, padding_side="left"), torch_pad(one, padding_side="left"))


def test_mixed_dtypes_promote():
    # torch assumes one dtype (and casts to the first); jaxseq promotes as JAX does.
    out = pad_sequence([np.array([1, 2], np.int32), np.array([0.5], np.float32)])
    assert out.dtype == jnp.float32
    assert out.tolist() == [[1.0, 0.5], [2.0, 0.0]]
    out = pad_sequence([np.array([1], np.float32), jnp.array([2.0], jnp.float64)])
    assert out.dtype == jnp.float64


def test_jit_with_jax_inputs():
    seqs = [jnp.arange(3.0), jnp.arange(1.0)]
    f = jax.jit(lambda a, b: pad_sequence([a, b], batch_first=True, padding_side="left"))
    np.testing.assert_array_equal(f(*seqs), [[0.0, 1.0, 2.0], [0.0, 0.0, 0.0]])
    g = jax.jit(lambda p: unpad_sequence(p, np.array([3, 1]), batch_first=True))
    a, b = g(f(*seqs))
    assert a.tolist() == [0.0, 1.0, 2.0] and b.tolist() == [0.0]


@pytest.mark.parametrize(
    ("side", "batch_first"), list(itertools.product(["right", "left"], [0, 1]))
)
@pytest.mark.parametrize("trailing", [(), (3,), (2, 3)])
def test_round_trip(side, batch_first, trailing):
    seqs = make_seqs(LENGTHS, trailing, np.float64, seed=2)
    padded = pad_sequence(seqs, bool(batch_first), padding_value=9.0, padding_side=side)
    back = unpad_sequence(padded, [len(s) for s in seqs], bool(batch_first), padding_side=side)
    assert len(back) == len(seqs)
    for got, want in zip(back, seqs, strict=True):
        assert isinstance(got, jax.Array) and got.shape == want.shape
        np.testing.assert_array_equal(np.asarray(got), want)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_unpad_sequence_equals_torch(batch_first, dtype):
    seqs = make_seqs(LENGTHS, (2,), dtype, seed=3)
    padded = torch_pad(seqs, batch_first=batch_first, padding_value=5)
    lengths = np.array(LENGTHS)
    # torch's unpad_sequence transposes its argument in place: give it a copy
    want = trnn.unpad_sequence(
        torch.from_numpy(padded.copy()), torch.from_numpy(lengths), batch_first=batch_first
    )
    for lens in (lengths, lengths.tolist(), jnp.asarray(lengths)):
        got = unpad_sequence(padded, lens, batch_first=batch_first)
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert_same(g, w.numpy())
    assert unpad_sequence(np.zeros((3, 0)), []) == []


# --------------------------------------------------------------------------- errors


def torch_error(fn):
    with pytest.raises(RuntimeError) as info:
        fn()
    return str(info.value)


def test_error_empty_list():
    msg = torch_error(lambda: trnn.pad_sequence([]))
    assert msg == "received an empty list of sequences"
    with pytest.raises(ValueError, match=msg):
        pad_sequence([])
    with pytest.raises(ValueError, match=msg):  # checked before padding_side, as torch
        pad_sequence([], padding_side="up")


def test_error_bad_padding_side():
    msg = torch_error(lambda: trnn.pad_sequence([torch.ones(2)], padding_side="up"))
    assert msg == "Expected padding_side to be one of left or right, but got up."
    with pytest.raises(ValueError) as info:
        pad_sequence([np.ones(2)], padding_side="up")
    assert str(info.value) == msg
    with pytest.raises(ValueError, match="padding_side"):
        unpad_sequence(np.ones((2, 1)), [2], padding_side="top")


@pytest.mark.parametrize("shapes", [[(2, 3), (2, 4)], [(2, 3), (2, 3, 1)], [(2, 3), (2,)]])
def test_error_mismatched_trailing_shapes(shapes):
    torch_error(lambda: trnn.pad_sequence([torch.ones(s) for s in shapes]))
    with pytest.raises(ValueError, match=r"trailing dimensions of sequence 1, .* must match"):
        pad_sequence([np.ones(s) for s in shapes])
    with pytest.raises(ValueError, match="must match"):
        pad_sequence([jnp.ones(s) for s in shapes])


def test_error_scalar_elements():
    torch_error(lambda: trnn.pad_sequence([torch.tensor(1.0), torch.tensor(2.0)]))
    with pytest.raises(ValueError, match=r"sequence 0 is a 0-d array \(a scalar\)"):
        pad_sequence([np.float64(1.0), np.float64(2.0)])
    with pytest.raises(ValueError, match="sequence 1 is a 0-d array"):
        pad_sequence([jnp.ones(2), jnp.array(1.0)])
    with pytest.raises(ValueError, match="0-d array"):
        pad_sequence([1, 2, 3])  # a list of numbers is a list of scalars, not one sequence


def test_error_not_iterable_and_bad_data():
    msg = torch_error(lambda: trnn.pad_sequence(3))
    with pytest.raises(TypeError) as info:
        pad_sequence(3)
    assert str(info.value) == msg
    with pytest.raises(TypeError, match="sequence 0 has dtype"):
        pad_sequence([np.array(["a", "b"])])
    with pytest.raises(TypeError, match="padding_value must be a number"):
        pad_sequence([np.ones(2)], padding_value="x")


def test_error_padding_value_overflow():
    torch_error(lambda: trnn.pad_sequence([torch.ones(2, dtype=torch.uint8)], padding_value=-1))
    with pytest.raises(ValueError, match="cannot be converted to type uint8 without overflow"):
        pad_sequence([np.ones(2, np.uint8)], padding_value=-1)
    with pytest.raises(ValueError, match="float16 without overflow"):
        pad_sequence([np.ones(2, np.float16)], padding_value=1e6)
    with pytest.raises(ValueError, match="int32 without overflow"):
        pad_sequence([np.ones(2, np.int32)], padding_value=float("nan"))
    # inf and nan are fine for floating dtypes, as in torch
    assert np.isinf(np.asarray(pad_sequence([[1.0], []], padding_value=float("inf"))[0, 1]))


def test_unpad_errors():
    padded = np.zeros((4, 2))  # (T, N)
    with pytest.raises(ValueError, match=r"lengths must have shape \(N,\) = \(2,\), got \(3,\)"):
        unpad_sequence(padded, [1, 2, 3])
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, T\] = \[0, 4\], got min 1 "):
        unpad_sequence(padded, [1, 5])
    with pytest.raises(ValueError, match="got min -1"):
        unpad_sequence(padded, np.array([-1, 2]))
    with pytest.raises(TypeError, match="lengths must hold integers, got dtype float64"):
        unpad_sequence(padded, [1.0, 2.0])
    with pytest.raises(TypeError, match="lengths must hold integers, got dtype bool"):
        unpad_sequence(padded, [True, False])
    with pytest.raises(ValueError, match=r"padded must have shape \(N, T, \*\), got \(4,\)"):
        unpad_sequence(np.zeros(4), [1], batch_first=True)
    f = jax.jit(lambda p, n: unpad_sequence(p, n))
    with pytest.raises(TypeError, match="unpad_sequence needs concrete lengths"):
        f(jnp.zeros((4, 2)), jnp.array([1, 2]))
