"""Every JAX transformation on the fast path: forward mode, its linearization, Jacobians,
Hessians and reverse-over-forward, against ``impl="reference"`` (a plain masked
``lax.scan`` that JAX differentiates itself) in float64.

The fast implementations have hand-written backward scans; their forward-mode rule is
the transpose of that backward pass (``jaxseq.fused_ops.with_transposed_jvp``), so these
tests hold both directions of that rule against JAX's own derivatives of the reference.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _jit import JIT

import jaxseq

T, N, I, H = 6, 3, 3, 4
LENGTHS = jnp.array([6, 0, 3])

# (kind, structure, options): every kind, each fast implementation, lengths throughout;
# layers, directions, proj_size, hx and remat spread over the cases.
CASES = [
    ("lstm", dict(num_layers=2, bidirectional=True, proj_size=2), dict(impl="fused"), True),
    ("lstm", dict(), dict(impl="fused_loop", remat=4), False),
    ("gru", dict(bidirectional=True), dict(impl="fused_hoisted"), True),
    ("gru", dict(num_layers=2), dict(impl="fused_loop"), False),
    ("rnn", dict(num_layers=2), dict(impl="fused", remat=2), True),
    ("min_gru", dict(num_layers=2, bidirectional=True), dict(impl="fused"), True),
    ("min_lstm", dict(), dict(impl="fused_parallel"), False),
    ("min_gru", dict(), dict(impl="fused_chunked", chunk=4), False),
    ("layernorm_lstm", dict(bidirectional=True), dict(impl="fused"), True),
    ("layernorm_gru", dict(num_layers=2), dict(impl="fused_loop", remat=2), False),
]
IDS = [f"{k}-{o['impl']}{'-remat' if 'remat' in o else ''}" for k, _, o, _ in CASES]


def _setup(kind, structure, with_hx):
    p = jaxseq.init_params(jax.random.key(0), kind, I, H, dtype=jnp.float64, **structure)
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((T, N, I)))
    L = structure.get("num_layers", 1) * (2 if structure.get("bidirectional") else 1)
    out_size = structure.get("proj_size") or H
    hx = None
    if with_hx:
        h0 = jnp.asarray(rng.standard_normal((L, N, out_size)))
        hx = (
            (h0, jnp.asarray(rng.standard_normal((L, N, H))))
            if kind in ("lstm", "layernorm_lstm")
            else h0
        )
    tangent = jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape)), (p, x, hx))
    return p, x, hx, tangent


def _fn(kind, opts, lengths=LENGTHS):
    def f(p, x, hx):
        return jaxseq.run_stack(kind, p, x, hx, lengths, **opts)

    return f


def _close(a, b, tol=1e-12):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(u, v, rtol=tol, atol=tol)


@pytest.mark.parametrize("kind, structure, opts, with_hx", CASES, ids=IDS)
def test_forward_mode_equals_the_reference(kind, structure, opts, with_hx):
    p, x, hx, tangent = _setup(kind, structure, with_hx)
    fast, ref = _fn(kind, opts), _fn(kind, {"impl": "reference"})

    # jvp: values and tangents of the output and the final state.
    got = JIT(lambda *a: jax.jvp(fast, a[:3], a[3:]))(p, x, hx, *tangent)
    want = JIT(lambda *a: jax.jvp(ref, a[:3], a[3:]))(p, x, hx, *tangent)
    _close(got, want)
    assert float(jnp.abs(got[1][0][:, 1]).max()) == 0.0  # length 0: zero output tangent

    # linearize: the linear map applied to the tangent is the jvp's tangent.
    _, lin = jax.linearize(fast, p, x, hx)
    _close(lin(*tangent), want[1])

    # reverse over forward: the gradient of a function of the jvp's tangent.
    def rof(f):
        return lambda p: sum(
            jnp.sum(t**2) for t in jax.tree.leaves(jax.jvp(f, (p, x, hx), tangent)[1])
        )

    _close(JIT(jax.grad(rof(fast)))(p), JIT(jax.grad(rof(ref)))(p), tol=1e-10)


# A sample: the LSTM with projection, the GRU and a linear kind (the LN kinds' forward mode
# is in the test above).
@pytest.mark.parametrize("kind, structure, opts, with_hx", CASES[:9:3], ids=IDS[:9:3])
def test_jacfwd_and_hessian_equal_the_reference(kind, structure, opts, with_hx):
    p, x, hx, _ = _setup(kind, structure, with_hx)

    # Derivatives with respect to two rows of the input (T * 2 * I values).
    hx2 = None if hx is None else jax.tree.map(lambda a: a[:, 1:], hx)

    def loss(opts):
        f = _fn(kind, opts, LENGTHS[1:])
        return lambda x: jnp.sum(jnp.tanh(f(p, x, hx2)[0]))

    def out(opts):
        return lambda x: _fn(kind, opts, LENGTHS[1:])(p, x, hx2)[0]

    x2 = x[:, 1:]
    fwd = JIT(jax.jacfwd(out(opts)))(x2)
    _close(fwd, JIT(jax.jacrev(out({"impl": "reference"})))(x2))
    _close(fwd, JIT(jax.jacrev(out(opts)))(x2))
    hess = JIT(jax.hessian(loss({"impl": "reference"})))(x2)
    _close(JIT(jax.hessian(loss(opts)))(x2), hess, tol=1e-10)
