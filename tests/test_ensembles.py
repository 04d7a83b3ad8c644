"""Ensembles: ``jax.vmap`` over a leading axis of stacked parameters (K independent RNNs).

The fast path (``impl="fused"``, masked by lengths) under ``vmap`` must equal a Python
loop over the members, values and gradients, float64 to 1e-12: for the functional API
(``jaxseq.lstm`` / ``gru`` / ``min_gru``) and for :mod:`jaxseq.nn` modules built and
called with ``nnx.split_rngs`` / ``nnx.vmap`` as Flax NNX documents ensembles. The same
two jitted functions (one member, the vmapped ensemble) serve every comparison of a case.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxseq
import jaxseq.nn

K, T, N, I, H = 3, 6, 4, 3, 5
F64 = jnp.float64
TOL = {"rtol": 1e-12, "atol": 1e-12}
LENGTHS = np.array([6, 2, 0, 4], dtype=np.int32)  # unsorted, with a length 0

# kind -> (functional call, init, keyword arguments of init and call)
CASES = {
    "lstm": (jaxseq.lstm, jaxseq.init_lstm, {"num_layers": 2, "bidirectional": True}, {}),
    "gru": (jaxseq.gru, jaxseq.init_gru, {"num_layers": 2}, {"batch_first": True}),
    "min_gru": (jaxseq.min_gru, jaxseq.init_min_gru, {"bidirectional": True}, {}),
}


def _assert_trees_close(got, want) -> None:
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), **TOL)


def _stack(trees: list) -> dict:
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


@pytest.mark.parametrize("kind", list(CASES))
def test_vmap_over_stacked_params_equals_loop(kind: str) -> None:
    fn, init, init_kw, call_kw = CASES[kind]
    members = [init(jax.random.key(k), I, H, dtype=F64, **init_kw) for k in range(K)]
    stacked = _stack(members)  # every parameter (K, ...)
    shape = (N, T, I) if call_kw.get("batch_first") else (T, N, I)
    x = jax.random.normal(jax.random.key(100), shape, F64)

    def forward(params, x):
        return fn(params, x, lengths=LENGTHS, **call_kw)

    out_shape = jax.eval_shape(forward, members[0], x)[0].shape
    w_out = jax.random.normal(jax.random.key(101), out_shape, F64)

    def loss(params, x):  # touches every output and every final state
        out, state = forward(params, x)
        return jnp.sum(out * w_out) + sum(jnp.sum(jnp.sin(s)) for s in jax.tree.leaves(state))

    one = jax.jit(forward)
    ens = jax.jit(jax.vmap(forward, in_axes=(0, None)))
    one_grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    # d/d(params, x) of the loss summed over members: per-member parameter gradients,
    # and the shared input's gradient summed over members.
    ens_grad = jax.jit(
        jax.grad(lambda p, x: jnp.sum(jax.vmap(loss, in_axes=(0, None))(p, x)), argnums=(0, 1))
    )

    _assert_trees_close(ens(stacked, x), _stack([one(p, x) for p in members]))
    g_params, g_x = ens_grad(stacked, x)
    loop = [one_grad(p, x) for p in members]
    _assert_trees_close(g_params, _stack([g for g, _ in loop]))
    _assert_trees_close(g_x, sum(gx for _, gx in loop[1:]) + loop[0][1])
    # The members differ (the test is not vacuous) and padding stays exactly zero.
    out = np.asarray(ens(stacked, x)[0])
    if call_kw.get("batch_first"):
        out = np.swapaxes(out, 1, 2)  # (K, T, N, F)
    assert not np.allclose(out[0], out[1])
    assert np.all(out[:, :, 2] == 0) and np.all(out[:, 2:, 1] == 0)


def test_vmap_over_params_and_inputs() -> None:
    """Each member on its own batch too (``in_axes=0`` for x and lengths)."""
    members = [jaxseq.init_gru(jax.random.key(k), I, H, dtype=F64) for k in range(K)]
    xs = jax.random.normal(jax.random.key(7), (K, T, N, I), F64)
    lengths = np.stack([np.roll(LENGTHS, k) for k in range(K)])  # (K, N)
    one = jax.jit(lambda p, x, n: jaxseq.gru(p, x, lengths=n))
    ens = jax.jit(jax.vmap(one))
    want = _stack([one(p, xs[k], lengths[k]) for k, p in enumerate(members)])
    _assert_trees_close(ens(_stack(members), xs, lengths), want)


# --------------------------------------------------------------------------- nnx.vmap


@nnx.split_rngs(splits=K)
@nnx.vmap(in_axes=(0,), out_axes=0)
def _make_ensemble(rngs: nnx.Rngs) -> jaxseq.nn.LSTM:
    """K ``jaxseq.nn.LSTM`` members, each from its own split of the params key."""
    return jaxseq.nn.LSTM(
        I, H, num_layers=2, bidirectional=True, batch_first=True, param_dtype=F64, rngs=rngs
    )


@nnx.vmap(in_axes=(0, None, None), out_axes=0)
def _ensemble_forward(model: jaxseq.nn.LSTM, x: jax.Array, lengths: jax.Array):
    return model(x, lengths=lengths)


def test_nnx_vmap_ensemble_equals_each_member() -> None:
    ens = _make_ensemble(nnx.Rngs(0))
    stacked = ens.params_dict()  # every parameter (K, ...), torch-named
    assert stacked["weight_ih_l1_reverse"].shape == (K, 4 * H, 2 * H)
    x = jax.random.normal(jax.random.key(3), (N, T, I), F64)
    got = nnx.jit(_ensemble_forward)(ens, x, LENGTHS)
    one = jax.jit(lambda p, x: jaxseq.lstm(p, x, lengths=LENGTHS, batch_first=True))
    members = [{k: v[m] for k, v in stacked.items()} for m in range(K)]
    _assert_trees_close(got, _stack([one(p, x) for p in members]))
    # split_rngs gave every member its own initialisation
    w = np.asarray(stacked["weight_hh_l0"])
    assert not np.allclose(w[0], w[1]) and not np.allclose(w[1], w[2])
