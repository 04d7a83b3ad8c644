"""Episode resets (``resets=``, ``reset_hx=``) against a plain Python loop over time.

The reference below walks every row and step in Python with the kind's cell, restarting
the carry where a segment starts: from ``hx`` at t = 0 and from ``reset_hx`` after a
reset. Every implementation must give its values and the gradients of x, hx, reset_hx
and every parameter (float64, 1e-10), forward mode included; resets are traced (one
compile for any values), work in the NNX layers, and bad arguments fail clearly. The
torch twin's parity (``torchseq.run_segments``, bidirectional stacks) is in
``parity_tests/test_resets_parity.py``; ``shard_map`` in ``tests/test_shard_map.py``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _jit import JIT
from flax import nnx

import jaxseq
from jaxseq.impls import impls_for
from jaxseq.params import spec_from_params
from jaxseq.recurrences import get

T, N, I, H, L = 5, 3, 2, 3, 2
LENGTHS = np.array([5, 3, 0])
TOL = dict(rtol=1e-10, atol=1e-10)
KINDS = ["rnn", "lstm", "gru", "min_gru", "min_lstm", "layernorm_lstm"]


def _resets(seed: int = 3) -> np.ndarray:
    r = np.random.default_rng(seed).random((T, N)) < 0.35
    r[0, 0] = True  # at t = 0: restarts from reset_hx
    r[3, 0] = True
    r[4, 1] = True  # row 1 has length 3: a padded step, ignored
    return r


RESETS = _resets()


def _loop_reference(kind, p, x, hx, reset_hx, lengths, resets):
    """Unidirectional stack, one row and one step at a time with the kind's cell."""
    rec = get(kind)
    cell = rec.cell()
    num_layers = spec_from_params(kind, p).num_layers
    finals = []
    inp = x
    for layer in range(num_layers):
        pl = {b: p[f"{b}_l{layer}"] for b in rec.base_names if f"{b}_l{layer}" in p}
        rows, row_finals = [], []
        for n in range(x.shape[1]):
            c = rec.carry(tuple(s[layer, n : n + 1] for s in hx))
            ys = []
            for t in range(x.shape[0]):
                if t < lengths[n]:
                    if resets[t, n]:
                        c = rec.carry(tuple(s[layer, n : n + 1] for s in reset_hx))
                    c, y = cell(pl, c, inp[t, n : n + 1])
                    ys.append(y[0])
                else:
                    ys.append(jnp.zeros((H,), x.dtype))
            rows.append(jnp.stack(ys))
            row_finals.append(rec.states(c))
        inp = jnp.stack(rows, axis=1)
        finals.append(tuple(jnp.concatenate(f, axis=0) for f in zip(*row_finals, strict=True)))
    states = tuple(jnp.stack(f) for f in zip(*finals, strict=True))
    return inp, states


def _states(kind, seed):
    rng = np.random.default_rng(seed)
    return tuple(jnp.asarray(rng.normal(size=(L, N, H))) for _ in range(get(kind).num_states))


def _loss(out, states, cot):
    return jnp.sum(out * cot) + sum(jnp.sum(jnp.sin(s)) for s in states)


@functools.cache
def _reference_grad(kind):
    def loss(p, x, hx, reset_hx, cot):
        out, st = _loop_reference(kind, p, x, hx, reset_hx, LENGTHS, RESETS)
        return _loss(out, st, cot), (out, st)

    return JIT(jax.grad(loss, argnums=(0, 1, 2, 3), has_aux=True))


@functools.cache
def _stack_grad(kind, impl, remat):
    rec = get(kind)

    def loss(p, x, hx, reset_hx, resets, cot):
        out, st = jaxseq.run_stack(
            kind,
            p,
            x,
            rec.carry(hx),
            LENGTHS,
            impl=impl,
            remat=remat,
            resets=resets,
            reset_hx=rec.carry(reset_hx),
        )
        st = rec.states(st) if isinstance(st, tuple) else (st,)
        return _loss(out, st, cot), (out, st)

    return JIT(jax.grad(loss, argnums=(0, 1, 2, 3), has_aux=True))


def _case(kind):
    p = jaxseq.init_params(jax.random.key(0), kind, I, H, num_layers=L, dtype=jnp.float64)
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(T, N, I)))
    cot = jnp.asarray(rng.normal(size=(T, N, H)))
    return p, x, _states(kind, 2), _states(kind, 3), cot


def _impls(kind):
    names = list(impls_for(get(kind)))
    names = [n for n in names if n != "cudnn"]
    cases = [(n, None) for n in names]
    if "fused_loop" in names:
        cases.append(("fused", 2))
    return cases


@pytest.mark.parametrize("kind", KINDS)
def test_resets_and_reset_hx_match_a_python_loop(kind):
    p, x, hx, rhx, cot = _case(kind)
    (g_ref, (out_ref, st_ref)) = _reference_grad(kind)(p, x, hx, rhx, cot)
    resets = jnp.asarray(RESETS)
    for impl, remat in _impls(kind):
        g, (out, st) = _stack_grad(kind, impl, remat)(p, x, hx, rhx, resets, cot)
        what = f"{kind} impl={impl} remat={remat}"
        np.testing.assert_allclose(out, out_ref, **TOL, err_msg=what)
        for a, b in zip(st, st_ref, strict=True):
            np.testing.assert_allclose(a, b, **TOL, err_msg=what)
        for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref), strict=True):
            np.testing.assert_allclose(a, b, **TOL, err_msg=what + " gradient")


def test_a_reset_starts_an_episode_from_zeros_unless_reset_hx():
    """RL semantics (Haiku's ResetCore, purejaxrl, torchrl): a reset restarts from the
    kind's initial state, zeros; ``hx`` only continues the row; ``reset_hx`` overrides."""
    p, x, hx, rhx, _ = _case("gru")
    lengths = np.array([5, 3, 1])
    r0 = np.zeros((T, N), bool)
    r0[0] = True  # every row: a new episode at t = 0
    from_zeros = jaxseq.gru(p, x, None, lengths)
    for a, b in zip(
        jax.tree.leaves(jaxseq.gru(p, x, hx[0], lengths, resets=jnp.asarray(r0))),
        jax.tree.leaves(from_zeros),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-14)
    fresh = jaxseq.gru(p, x, hx[0], lengths, resets=jnp.asarray(r0), reset_hx=rhx[0])
    from_rhx = jaxseq.gru(p, x, rhx[0], lengths)
    for a, b in zip(jax.tree.leaves(fresh), jax.tree.leaves(from_rhx), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-14)
    # A reset mid-row: the steps after it equal a fresh run of the tail from zeros.
    r2 = np.zeros((T, N), bool)
    r2[2, 0] = True
    out, _ = jaxseq.gru(p, x, hx[0], lengths, resets=jnp.asarray(r2))
    tail, _ = jaxseq.gru(p, x[2:, :1], None)
    np.testing.assert_allclose(out[2:, 0], tail[:, 0], rtol=1e-14, atol=1e-14)
    head, _ = jaxseq.gru(p, x[:2, :1], hx[0][:, :1])
    np.testing.assert_allclose(out[:2, 0], head[:, 0], rtol=1e-14, atol=1e-14)


def test_forward_mode_with_resets_matches_reference():
    p, x, hx, _, cot = _case("lstm")
    resets = jnp.asarray(RESETS)
    tangents = jax.tree.map(lambda a: jnp.cos(a + 1.0), (p, x))

    def f(impl):
        def g(p, x):
            out, (h, c) = jaxseq.lstm(p, x, (hx[0], hx[1]), LENGTHS, impl=impl, resets=resets)
            return jnp.sum(out * cot) + jnp.sum(h * c)

        return jax.jvp(g, (p, x), tangents)

    (v1, t1), (v2, t2) = f("fused"), f("reference")
    np.testing.assert_allclose(v1, v2, **TOL)
    np.testing.assert_allclose(t1, t2, **TOL)


def test_traced_resets_compile_once():
    p, x, _, _, _ = _case("lstm")
    traces = []

    @jax.jit
    def f(p, x, resets):
        traces.append(1)
        return jaxseq.lstm(p, x, resets=resets)[0]

    rng = np.random.default_rng(0)
    outs = [f(p, x, jnp.asarray(rng.random((T, N)) < 0.5)) for _ in range(3)]
    assert len(traces) == 1
    assert not np.allclose(outs[0], outs[1])


def test_nnx_layer_batch_first_and_unbatched():
    m = jaxseq.nn.GRU(
        I, H, num_layers=L, batch_first=True, param_dtype=jnp.float64, rngs=nnx.Rngs(0)
    )
    p = m.params_dict()
    _, x, hx, rhx, _ = _case("gru")
    xb, rb = jnp.swapaxes(x, 0, 1), jnp.asarray(RESETS.T)
    out, h = m(xb, hx[0], jnp.asarray(LENGTHS), resets=rb, reset_hx=rhx[0])
    ref_out, (ref_h,) = _loop_reference("gru", p, x, hx, rhx, LENGTHS, RESETS)
    np.testing.assert_allclose(jnp.swapaxes(out, 0, 1), ref_out, **TOL)
    np.testing.assert_allclose(h, ref_h, **TOL)
    # Unbatched (T, I) input takes (T,) resets: row 0 on its own.
    out0, h0 = m(x[:, 0], hx[0][:, 0], resets=jnp.asarray(RESETS[:, 0]), reset_hx=rhx[0][:, 0])
    np.testing.assert_allclose(out0, ref_out[:, 0], **TOL)
    np.testing.assert_allclose(h0, ref_h[:, 0], **TOL)


def test_bad_resets_fail_clearly():
    p, x, hx, _, _ = _case("gru")
    ok = jnp.asarray(RESETS)
    with pytest.raises(TypeError, match="bool array"):
        jaxseq.gru(p, x, resets=ok.astype(jnp.float32))
    with pytest.raises(ValueError, match=r"\(T, N\)"):
        jaxseq.gru(p, x, resets=ok.T)
    with pytest.raises(ValueError, match=r"\(N, T\)"):
        jaxseq.gru(p, jnp.swapaxes(x, 0, 1), resets=ok, batch_first=True)
    with pytest.raises(ValueError, match="pass resets too"):
        jaxseq.gru(p, x, reset_hx=hx[0])
    with pytest.raises(ValueError, match="Expected reset_hx size"):
        jaxseq.gru(p, x, resets=ok, reset_hx=hx[0][:, :1])
    pb = jaxseq.init_gru(jax.random.key(0), I, H, bidirectional=True, dtype=jnp.float64)
    with pytest.raises(ValueError, match="unidirectional"):
        jaxseq.gru(pb, x, resets=ok, reset_hx=jnp.zeros((2, N, H)))
    pl = jaxseq.init_lstm(jax.random.key(0), I, H, dtype=jnp.float32)
    with pytest.raises(ValueError, match="cudnn.*resets"):
        jaxseq.lstm(pl, x.astype(jnp.float32), resets=ok, impl="cudnn")
