"""Packed episodes: ``pack_episodes`` + ``resets`` + ``unpack_episodes`` equal every episode
run alone, values and gradients, for every registered kind.

The reference runs each episode alone from the initial state: every episode is its own
row of a padded batch with its length (the stack's length masking, not its resets), so
the two sides share no code path for the episode boundaries. float64; 2 layers; the
fused path (the default) and, for the gated kinds, the unfused one; uni- and
bidirectional.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxseq
from jaxseq.data import pack_episodes, pad_sequences, unpack_episodes
from jaxseq.recurrences import registered

I, H, T = 3, 4, 9
KINDS = sorted(registered())
TOL = dict(rtol=1e-10, atol=1e-10)


def _episodes(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = [5, 1, 3, 9, 2, 4, 4, 7, 1]  # one of them fills a row; first fit packs the rest
    return [rng.normal(size=(k, I)) for k in rng.permutation(sizes)]


def _case(kind: str, impl: str, bidirectional: bool, seed: int):
    """(episodes, packed, packed run, episode-by-episode run); each run is
    ``(loss, outputs per episode, d loss / d params, d loss / d x)``, one jitted
    value_and_grad each."""
    eps = _episodes(seed)
    packed = pack_episodes(eps, max_len=T)
    assert len(packed.lengths) < len(eps)  # several episodes share a row
    params = jaxseq.init_params(
        jax.random.key(seed),
        kind,
        I,
        H,
        num_layers=2,
        bidirectional=bidirectional,
        dtype=jnp.float64,
    )
    rng = np.random.default_rng(seed + 1)
    cots = [rng.normal(size=(len(e), (2 if bidirectional else 1) * H)) for e in eps]
    xs, lengths = pad_sequences(eps, max_len=T)  # (E, T, I): each episode its own row

    def packed_loss(p, x):
        kw = dict(lengths=packed.lengths, resets=packed.resets, impl=impl)
        outs = unpack_episodes(jaxseq.run_stack(kind, p, x, **kw)[0], packed)
        return sum(jnp.sum(o * c) for o, c in zip(outs, cots, strict=True)), outs

    def alone_loss(p, x):
        out = jaxseq.run_stack(kind, p, x, lengths=lengths, impl=impl, batch_first=True)[0]
        outs = [out[e, :k] for e, k in enumerate(lengths.tolist())]
        return sum(jnp.sum(o * c) for o, c in zip(outs, cots, strict=True)), outs

    runs = []
    for loss, x in ((packed_loss, packed.x), (alone_loss, xs)):
        grad_fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
        (value, outs), (g_params, g_x) = grad_fn(params, jnp.asarray(x))
        runs.append((value, outs, g_params, g_x))
    return eps, packed, runs[0], runs[1]


CASES = [(k, "fused", False) for k in KINDS]
CASES += [("lstm", "fused", True), ("gru", "fused", True), ("gru", "unfused", False)]


@pytest.mark.parametrize(("kind", "impl", "bidirectional"), CASES)
def test_packed_episodes_equal_each_episode_alone(kind, impl, bidirectional):
    eps, packed, (v1, outs1, gp1, gx1), (v2, outs2, gp2, gx2) = _case(
        kind, impl, bidirectional, seed=len(kind)
    )
    np.testing.assert_allclose(v1, v2, **TOL)
    for o1, o2, e in zip(outs1, outs2, eps, strict=True):
        assert o1.shape == (len(e), o2.shape[-1])
        np.testing.assert_allclose(o1, o2, **TOL)
    for name in gp2:
        np.testing.assert_allclose(gp1[name], gp2[name], err_msg=name, **TOL)
    # d loss / d x: the packed gradient, unpacked, is each episode's own gradient
    gx_alone = [gx2[i, : len(e)] for i, e in enumerate(eps)]
    for g1, g2 in zip(unpack_episodes(gx1, packed), gx_alone, strict=True):
        np.testing.assert_allclose(g1, g2, **TOL)
    # the padding after each row's last episode gets no gradient
    for n, k in enumerate(packed.lengths.tolist()):
        assert np.all(np.asarray(gx1)[k:, n] == 0)


def test_pack_layout_and_errors():
    eps = [np.full((3, 2), 1.0), np.full((2, 2), 2.0), np.full((4, 2), 3.0)]
    p = pack_episodes(eps, max_len=5, num_rows=3)  # first fit: [3, 2] | [4] | empty
    assert p.x.shape == (5, 3, 2) and p.resets.shape == (5, 3)
    assert p.lengths.tolist() == [5, 4, 0]
    assert p.rows.tolist() == [0, 0, 1] and p.starts.tolist() == [0, 3, 0]
    assert np.flatnonzero(p.resets[:, 0]).tolist() == [0, 3]
    assert p.x[:, 0, 0].tolist() == [1, 1, 1, 2, 2] and np.all(p.x[:, 2] == 0)
    pb = pack_episodes(eps, max_len=5, batch_first=True)
    assert pb.x.shape == (2, 5, 2) and np.array_equal(pb.x, np.swapaxes(p.x[:, :2], 0, 1))
    assert all(np.array_equal(a, b) for a, b in zip(unpack_episodes(pb.x, pb), eps, strict=True))
    with pytest.raises(ValueError, match="episode 2 has 4 steps > max_len=3"):
        pack_episodes(eps, max_len=3)
    with pytest.raises(ValueError, match="need 2 rows .* but num_rows=1"):
        pack_episodes(eps, max_len=5, num_rows=1)
    with pytest.raises(ValueError, match="episode 1 has shape"):
        pack_episodes([np.ones((2, 2)), np.ones((0, 2))], max_len=5)
    with pytest.raises(ValueError, match="trailing shape"):
        pack_episodes([np.ones((2, 2)), np.ones((2, 3))], max_len=5)
    with pytest.raises(ValueError, match=r"packed layout \(T, N, \*\)"):
        unpack_episodes(np.zeros((4, 3, 2)), p)
