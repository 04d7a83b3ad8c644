"""The fast path (``impl="fused"``, :mod:`jaxseq.fused`) against the reference layer.

Both placements of the input projection are held to it: ``"fused"`` uses the default one
(``jaxseq.fused.default_projection``), and every other case runs again with the other one.

Values and every gradient (parameters, input, hx) must agree: to 1e-12 in float64 and
1e-5 in float32, over a seeded sample of kinds x layers x bidirectional x bias x
proj_size x lengths (with zeros) x hx x batch_first. ``remat`` must not change values
or gradients either.
"""

from __future__ import annotations

import itertools
import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _jit import JIT

import jaxseq
from jaxseq import run_stack
from jaxseq.fused import default_projection

T, N, I, H = 6, 4, 3, 5

# kind, nonlinearity, layers, bidirectional, bias, proj, lengths, hx, batch_first
_FULL = [
    (kind, nl, layers, bidir, bias, proj, lens, hx, bf)
    for kind, nl in (("rnn", "tanh"), ("rnn", "relu"), ("lstm", "tanh"), ("gru", "tanh"))
    for layers, bidir, bias, lens, hx, bf in itertools.product(
        (1, 2), (False, True), (True, False), ("none", "zeros"), (False, True), (False, True)
    )
    for proj in ((0, 2) if kind == "lstm" else (0,))
]
_RNG = random.Random(0)
# Stratified by kind so that every kind and nonlinearity is covered.
CASES = sorted(
    c
    for group, n in (
        (("rnn", "tanh"), 2),
        (("rnn", "relu"), 1),
        (("lstm", "tanh"), 4),
        (("gru", "tanh"), 3),
    )
    for c in _RNG.sample([c for c in _FULL if c[:2] == group], n)
)
# float32 and remat on subsets: compile time dominates this file.
CASES_F32 = CASES[::3]
CASES_REMAT = [(c, 4) for c in CASES[1::3]] + [(CASES[2], 1)]  # 4 does not divide T = 6
# Lengths with a zero, a full row and unsorted values.
_LENGTHS = {"none": None, "zeros": np.array([3, 0, T, 1], np.int32)}


def _inputs(case, dtype):
    kind, nl, layers, bidir, bias, proj, lens, hx, bf = case
    D = 2 if bidir else 1
    params = jaxseq.init_params(
        jax.random.key(1),
        kind,
        I,
        H,
        layers,
        bias=bias,
        bidirectional=bidir,
        proj_size=proj,
        dtype=dtype,
    )
    k1, k2, k3 = jax.random.split(jax.random.key(2), 3)
    x = jax.random.normal(k1, (N, T, I) if bf else (T, N, I), dtype)
    h0 = None
    if hx:
        h0 = jax.random.normal(k2, (layers * D, N, proj or H), dtype)
        if kind == "lstm":
            h0 = (h0, jax.random.normal(k3, (layers * D, N, H), dtype))
    return params, x, h0, _LENGTHS[lens]


def _loss_fn(case, impl, remat=None, unroll=1):
    """A scalar that weighs every output and final state differently, with its gradient,
    jitted once."""
    kind, nl, layers, bidir, bias, proj, lens, hx, bf = case

    def loss(params, x, h0, lengths):
        out, fin = run_stack(
            kind,
            params,
            x,
            h0,
            lengths,
            nonlinearity=nl,
            batch_first=bf,
            impl=impl,
            remat=remat,
            unroll=unroll,
        )
        total = jnp.sum(out * jnp.cos(out))
        for k, a in enumerate(jax.tree.leaves(fin)):
            total = total + jnp.sum(jnp.sin(a)) * (k + 2)
        return total, (out, fin)

    return JIT(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))


def _assert_close(a, b, tol):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for u, v in zip(la, lb, strict=True):
        assert u.shape == v.shape and u.dtype == v.dtype
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=tol, atol=tol)


def _other_placement(kind):
    return "fused_hoisted" if default_projection(kind) == "loop" else "fused_loop"


@pytest.mark.parametrize(
    "case,dtype,tol,impl",
    [(c, jnp.float64, 1e-12, "fused") for c in CASES]
    + [(c, jnp.float32, 1e-5, "fused") for c in CASES_F32]
    + [(c, jnp.float64, 1e-12, _other_placement(c[0])) for c in CASES[::2]]
    + [(c, jnp.float32, 1e-5, _other_placement(c[0])) for c in CASES_F32[1::2]],
    ids=lambda v: "-".join(map(str, v)) if isinstance(v, tuple) else None,
)
def test_fast_matches_reference(case, dtype, tol, impl):
    args = _inputs(case, dtype)
    got = _loss_fn(case, impl)(*args)
    want = _loss_fn(case, "reference")(*args)
    _assert_close(got, want, tol)
    # The masking contract holds on the fast path itself: zero output on padding.
    lengths = args[3]
    if lengths is not None:
        out = np.asarray(got[0][1][0])
        if case[-1]:  # batch_first
            out = out.swapaxes(0, 1)
        pad = np.arange(T)[:, None] >= lengths[None, :]
        assert np.all(out[pad] == 0)


@pytest.mark.parametrize(
    "case,remat", CASES_REMAT, ids=lambda v: "-".join(map(str, v)) if isinstance(v, tuple) else None
)
def test_remat_equals_no_remat(case, remat):
    args = _inputs(case, jnp.float64)
    _assert_close(_loss_fn(case, "fused", remat)(*args), _loss_fn(case, "fused")(*args), 1e-12)


# One case per kind: with unroll > 1 the backward scan stacks the gate gradients as an
# output instead of writing them over the saved coefficients (see fused._recurrence_bwd).
CASES_UNROLL = [
    next(c for c in CASES if c[:2] == g)
    for g in (("rnn", "tanh"), ("lstm", "tanh"), ("gru", "tanh"))
]


@pytest.mark.parametrize("case", CASES_UNROLL, ids=lambda c: "-".join(map(str, c)))
def test_unroll_equals_no_unroll(case):
    args = _inputs(case, jnp.float64)
    _assert_close(_loss_fn(case, "fused", unroll=4)(*args), _loss_fn(case, "fused")(*args), 1e-12)


def test_default_placement_on_cpu_and_both_agree():
    assert jax.default_backend() == "cpu"
    assert [default_projection(k) for k in ("lstm", "gru", "rnn")] == ["loop", "loop", "hoisted"]
    case = next(c for c in CASES if c[0] == "lstm")
    args = _inputs(case, jnp.float64)
    loop = _loss_fn(case, "fused_loop")(*args)
    _assert_close(_loss_fn(case, "fused")(*args), loop, 0.0)  # the same program
    _assert_close(_loss_fn(case, "fused_hoisted", 2)(*args), loop, 1e-12)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_no_gradient_into_padding_and_length_zero(kind):
    params = jaxseq.init_params(
        jax.random.key(0), kind, I, H, 2, bidirectional=True, dtype=jnp.float64
    )
    x = jax.random.normal(jax.random.key(1), (T, N, I), jnp.float64)
    lengths = jnp.array([3, 0, T, 1], jnp.int32)

    def loss(x):
        out, fin = run_stack(kind, params, x, None, lengths)
        return jnp.sum(out**2) + sum(jnp.sum(a**2) for a in jax.tree.leaves(fin))

    gx = np.asarray(jax.grad(loss)(x))
    pad = np.arange(T)[:, None] >= np.asarray(lengths)[None, :]
    assert np.all(gx[pad] == 0)
    assert np.all(gx[~pad] != 0)
    # Length 0: h_n equals h0 (zeros here) for every layer and direction.
    _, fin = run_stack(kind, params, x, None, lengths)
    for a in jax.tree.leaves(fin):
        assert np.all(np.asarray(a)[:, 1] == 0)


def test_lengths_do_not_recompile():
    params = jaxseq.init_lstm(jax.random.key(0), I, H, bidirectional=True)
    x = jnp.ones((T, N, I), jnp.float32)
    traces = []

    @jax.jit
    def step(params, lengths):
        traces.append(1)
        return jax.grad(lambda p: jnp.sum(jaxseq.lstm(p, x, lengths=lengths)[0]))(params)

    g1 = step(params, jnp.array([6, 5, 4, 3], jnp.int32))
    g2 = step(params, jnp.array([1, 0, 6, 2], jnp.int32))
    assert len(traces) == 1
    assert not np.allclose(np.asarray(g1["weight_hh_l0"]), np.asarray(g2["weight_hh_l0"]))


def test_remat_module_and_errors():
    from flax import nnx

    m = jaxseq.nn.GRU(I, H, remat=2, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(3), (T, N, I), jnp.float32)
    out, h = m(x, lengths=jnp.array([6, 2, 0, 5], jnp.int32))
    want, h_want = jaxseq.gru(
        m.params_dict(), x, lengths=jnp.array([6, 2, 0, 5], jnp.int32), impl="reference"
    )
    np.testing.assert_allclose(np.asarray(out), np.asarray(want), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(h), np.asarray(h_want), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="remat"):
        jaxseq.gru(m.params_dict(), x, remat=0)
    with pytest.raises(ValueError, match="remat"):
        jaxseq.gru(m.params_dict(), x, remat=2, impl="reference")
