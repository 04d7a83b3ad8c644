"""Packed episodes: ``pack_episodes`` + ``resets`` + ``unpack_episodes`` equal every episode
run alone, values and gradients, for every registered kind; and so do the episodes' final
states (``return_all_states=True`` + ``episode_states``).

The reference runs each episode alone from the initial state: every episode is its own
row of a padded batch with its length (the stack's length masking, not its resets), so
the two sides share no code path for the episode boundaries; its final states are the
stack's ``h_n``. float64; 2 layers; the fused path (the default), with ``remat`` for a
gated kind, and for the gated kinds the unfused one; uni- and bidirectional.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxseq
from jaxseq.data import episode_states, pack_episodes, pad_sequences, unpack_episodes
from jaxseq.recurrences import registered

I, H, T = 3, 4, 9
KINDS = sorted(registered())
TOL = dict(rtol=1e-10, atol=1e-10)


def _episodes(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = [5, 1, 3, 9, 2, 4, 4, 7, 1]  # one of them fills a row; first fit packs the rest
    return [rng.normal(size=(k, I)) for k in rng.permutation(sizes)]


def _case(kind: str, impl: str, bidirectional: bool, seed: int, remat: int | None = None):
    """(episodes, packed, packed run, episode-by-episode run); each run is
    ``(loss, (outputs per episode, final states (L*D, E, size) each), d loss / d params,
    d loss / d x)``, one jitted value_and_grad each; the loss weighs outputs and final
    states with random cotangents."""
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
    D = 2 if bidirectional else 1
    cots = [rng.normal(size=(len(e), D * H)) for e in eps]
    n_states = len(jaxseq.recurrences.get(kind).state_sizes(H, H))
    state_cots = [rng.normal(size=(2 * D, len(eps), H)) for _ in range(n_states)]
    xs, lengths = pad_sequences(eps, max_len=T)  # (E, T, I): each episode its own row
    kw = dict(impl=impl, remat=remat)

    def loss_of(outs, finals):
        value = sum(jnp.sum(o * c) for o, c in zip(outs, cots, strict=True))
        finals = tuple(jax.tree.leaves(finals))
        return value + sum(jnp.sum(f * c) for f, c in zip(finals, state_cots, strict=True))

    def packed_loss(p, x):
        pk = dict(lengths=packed.lengths, resets=packed.resets, return_all_states=True)
        out, _, states = jaxseq.run_stack(kind, p, x, **pk, **kw)
        outs = unpack_episodes(out, packed)
        finals = episode_states(states, packed, bidirectional=bidirectional)
        return loss_of(outs, finals), (outs, finals)

    def alone_loss(p, x):
        out, finals = jaxseq.run_stack(kind, p, x, lengths=lengths, batch_first=True, **kw)
        outs = [out[e, :k] for e, k in enumerate(lengths.tolist())]
        return loss_of(outs, finals), (outs, finals)

    runs = []
    for loss, x in ((packed_loss, packed.x), (alone_loss, xs)):
        grad_fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
        (value, outs), (g_params, g_x) = grad_fn(params, jnp.asarray(x))
        runs.append((value, outs, g_params, g_x))
    return eps, packed, runs[0], runs[1]


CASES = [(k, "fused", False, None) for k in KINDS]
CASES += [("lstm", "fused", True, None), ("gru", "fused", True, None)]
CASES += [("gru", "unfused", False, None), ("lstm", "fused", False, 4)]


@pytest.mark.parametrize(("kind", "impl", "bidirectional", "remat"), CASES)
def test_packed_episodes_equal_each_episode_alone(kind, impl, bidirectional, remat):
    eps, packed, run1, run2 = _case(kind, impl, bidirectional, seed=len(kind), remat=remat)
    (v1, (outs1, fin1), gp1, gx1), (v2, (outs2, fin2), gp2, gx2) = run1, run2
    np.testing.assert_allclose(v1, v2, **TOL)
    for o1, o2, e in zip(outs1, outs2, eps, strict=True):
        assert o1.shape == (len(e), o2.shape[-1])
        np.testing.assert_allclose(o1, o2, **TOL)
    # every episode's final states: the h_n (and c_n) of the episode run alone
    for f1, f2 in zip(jax.tree.leaves(fin1), jax.tree.leaves(fin2), strict=True):
        assert f1.shape == f2.shape == ((2 if bidirectional else 1) * 2, len(eps), H)
        np.testing.assert_allclose(f1, f2, **TOL)
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


def test_layers_return_all_states_as_the_stack():
    """The NNX layer and the linen module pass ``return_all_states`` to the stack: the
    same states, and the last step of a full-length row is h_n."""
    from flax import nnx

    x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 2, I)))
    layer = jaxseq.nn.LSTM(I, H, num_layers=2, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    out, (h, c), (hs, cs) = layer(x, return_all_states=True)
    ref = jaxseq.lstm(layer.params_dict(), x, return_all_states=True)
    for a, b in zip(jax.tree.leaves((out, (h, c), (hs, cs))), jax.tree.leaves(ref), strict=True):
        np.testing.assert_array_equal(a, b)
    assert hs.shape == (5, 2, 2, H)
    np.testing.assert_array_equal(hs[-1], h)
    np.testing.assert_array_equal(cs[-1], c)
    module = jaxseq.linen.GRU(H, num_layers=2, param_dtype=jnp.float64)
    variables = module.init(jax.random.key(0), x)
    out, h_n, hs = module.apply(variables, x, return_all_states=True)
    ref = jaxseq.gru(variables["params"], x, return_all_states=True)
    for a, b in zip((out, h_n, hs), ref, strict=True):
        np.testing.assert_array_equal(a, b)
