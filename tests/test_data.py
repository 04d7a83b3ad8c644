"""jaxseq.data and torchseq.data: padding, masks, buckets, batching, collate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import jaxseq.data as jd
import torchseq.data as td

RNG = np.random.default_rng(0)
SEQS = [RNG.normal(size=(n, 3)) for n in (4, 1, 7, 2, 5)]


def reference_pad(seqs, T):
    out = np.zeros((len(seqs), T) + np.shape(seqs[0])[1:])
    for i, s in enumerate(seqs):
        for t in range(len(s)):
            out[i, t] = s[t]
    return out


@pytest.mark.parametrize("max_len", [None, 9])
def test_pad_sequences_matches_loop(max_len):
    T = max_len or 7
    x, lengths = jd.pad_sequences(SEQS, max_len=max_len)
    np.testing.assert_array_equal(x, reference_pad(SEQS, T))
    assert lengths.dtype == np.int32 and lengths.tolist() == [4, 1, 7, 2, 5]
    xt, lt = td.pad_sequences([torch.from_numpy(s) for s in SEQS], max_len=max_len)
    np.testing.assert_array_equal(xt.numpy(), reference_pad(SEQS, T))
    assert lt.dtype == torch.int64 and lt.tolist() == [4, 1, 7, 2, 5]


def test_pad_sequences_tokens_and_dtype():
    x, lengths = jd.pad_sequences([[1, 2, 3], [4]], dtype=np.int32, value=-1)
    assert x.dtype == np.int32 and x.tolist() == [[1, 2, 3], [4, -1, -1]]
    xt, _ = td.pad_sequences([[1, 2, 3], [4]], dtype=torch.int64, value=-1)
    assert xt.tolist() == [[1, 2, 3], [4, -1, -1]]


@pytest.mark.parametrize("pad", [jd.pad_sequences, td.pad_sequences])
def test_pad_sequences_errors(pad):
    with pytest.raises(ValueError, match="length 7 > max_len=5"):
        pad(SEQS, max_len=5)
    with pytest.raises(ValueError, match="trailing shape"):
        pad([np.ones((2, 3)), np.ones((2, 4))])
    with pytest.raises(ValueError, match="at least one"):
        pad([])


def test_lengths_to_mask():
    lengths = np.array([0, 3, 1])
    expected = np.array([[t < n for t in range(4)] for n in lengths])
    np.testing.assert_array_equal(jd.lengths_to_mask(lengths, 4), expected)
    np.testing.assert_array_equal(
        td.lengths_to_mask(torch.from_numpy(lengths), 4).numpy(), expected
    )


def test_bucket_length_and_make_buckets():
    buckets = (4, 8, 16)
    for T in range(1, 17):
        assert jd.bucket_length(T, buckets) == min(b for b in buckets if b >= T)
    assert jd.bucket_length(13, None) == 13
    with pytest.raises(ValueError, match="exceeds the largest bucket 16"):
        jd.bucket_length(17, buckets)
    b = jd.make_buckets(29, num=4)
    assert b[-1] == 29 and len(b) == 4 and list(b) == sorted(set(b))
    assert jd.make_buckets(3, num=8) == (1, 2, 3)


@pytest.mark.parametrize("buckets", [None, (2, 4, 8)])
@pytest.mark.parametrize("drop_last", [False, True])
def test_batches_cover_data_once_and_match_torch(buckets, drop_last):
    X, lengths = jd.pad_sequences(SEQS)
    y = np.arange(len(SEQS)) * 10
    got = list(jd.batches(X, lengths, y, 2, seed=3, buckets=buckets, drop_last=drop_last))
    got_t = list(td.batches(X, lengths, y, 2, seed=3, buckets=buckets, drop_last=drop_last))
    assert len(got) == len(got_t) == (2 if drop_last else 3)
    seen = []
    for (xb, lb, yb), (xt, lt, yt) in zip(got, got_t, strict=True):
        idx = yb // 10
        seen.extend(idx.tolist())
        T_b = 7 if buckets is None else min(b for b in buckets if b >= lb.max())
        assert xb.shape == (len(idx), T_b, 3)
        np.testing.assert_array_equal(xb, reference_pad([SEQS[i] for i in idx], T_b))
        np.testing.assert_array_equal(lb, lengths[idx])
        np.testing.assert_array_equal(xt.numpy(), xb)
        np.testing.assert_array_equal(lt.numpy(), lb)
        np.testing.assert_array_equal(yt.numpy(), yb)
    assert len(set(seen)) == len(seen) == (4 if drop_last else 5)
    order = np.random.default_rng(3).permutation(5)
    assert seen == order[: len(seen)].tolist()


def test_batches_from_list_and_unshuffled():
    out = list(jd.batches(SEQS, None, np.arange(5), 5, shuffle=False))
    assert len(out) == 1
    np.testing.assert_array_equal(out[0][0], reference_pad(SEQS, 7))


def test_batches_rejects_mismatched_sizes():
    X, lengths = jd.pad_sequences(SEQS)
    with pytest.raises(ValueError, match="must share N"):
        next(jd.batches(X, lengths[:3], np.arange(5), 2))
    with pytest.raises(ValueError, match="must share N"):
        next(td.batches(X, lengths, np.arange(4), 2))


def test_collate_with_dataloader():
    data = [(torch.from_numpy(s), i) for i, s in enumerate(SEQS)]
    loader = torch.utils.data.DataLoader(data, batch_size=3, collate_fn=td.collate)
    xb, lb, yb = next(iter(loader))
    np.testing.assert_array_equal(xb.numpy(), reference_pad(SEQS[:3], 7))
    assert lb.tolist() == [4, 1, 7] and yb.tolist() == [0, 1, 2]
