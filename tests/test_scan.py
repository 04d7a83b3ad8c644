"""The masked scan and the functional stack against plain Python loops over the cell.

Every reference here is a Python loop: over time for one row at a time, running only that
row's valid steps (forward from 0, reverse from its own last valid element). Lengths
cover unsorted values, duplicates, 0 and the full T.
"""

from __future__ import annotations

import collections
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxseq
from jaxseq.recurrences import get as get_kind
from jaxseq.scan import masked_scan

T, N, I, H = 5, 4, 3, 4
LENGTHS = np.array([3, 0, 5, 3], np.int32)  # unsorted, a duplicate, 0 and T
KINDS = ("rnn", "lstm", "gru")
IMPLS = ("reference", "fused")
FNS = {"rnn": jaxseq.rnn, "lstm": jaxseq.lstm, "gru": jaxseq.gru}


def _cell_params(rng, kind, in_size=I):
    G = get_kind(kind).num_gates
    return {
        "weight_ih": jnp.asarray(rng.uniform(-0.5, 0.5, (G * H, in_size))),
        "weight_hh": jnp.asarray(rng.uniform(-0.5, 0.5, (G * H, H))),
        "bias_ih": jnp.asarray(rng.uniform(-0.5, 0.5, (G * H,))),
        "bias_hh": jnp.asarray(rng.uniform(-0.5, 0.5, (G * H,))),
    }


def _carry(rng, kind, n=N):
    h = jnp.asarray(rng.standard_normal((n, H)))
    return (h, jnp.asarray(rng.standard_normal((n, H)))) if kind == "lstm" else h


def _row(carry, n):
    return jax.tree.map(lambda a: a[n : n + 1], carry)


def loop_reference(cell, params, carry, xs, lengths, reverse=False):
    """Row by row, a Python loop over that row's valid steps only."""
    T_ = xs.shape[0]
    ys = np.zeros((T_, xs.shape[1], H))
    finals = []
    for n in range(xs.shape[1]):
        c = _row(carry, n)
        steps = range(int(lengths[n]))
        for t in reversed(steps) if reverse else steps:
            c, y = cell(params, c, xs[t, n : n + 1])
            ys[t, n] = np.asarray(y)[0]
        finals.append(c)
    final = jax.tree.map(lambda *rows: np.concatenate([np.asarray(r) for r in rows]), *finals)
    return final, ys


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_masked_scan_equals_python_loop(kind, reverse):
    rng = np.random.default_rng(0)
    p, carry = _cell_params(rng, kind), _carry(rng, kind)
    xs = jnp.asarray(rng.standard_normal((T, N, I)))
    cell = get_kind(kind).cell()
    final, ys = masked_scan(cell, p, carry, xs, jnp.asarray(LENGTHS), reverse=reverse)
    want_final, want_ys = loop_reference(cell, p, carry, xs, LENGTHS, reverse)
    np.testing.assert_allclose(ys, want_ys, rtol=0, atol=1e-14)
    for a, b in zip(jax.tree.leaves(final), jax.tree.leaves(want_final), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-14)
    # No lengths == all rows of length T.
    final_all, ys_all = masked_scan(cell, p, carry, xs, None, reverse=reverse)
    want_final, want_ys = loop_reference(cell, p, carry, xs, np.full(N, T), reverse)
    np.testing.assert_allclose(ys_all, want_ys, rtol=0, atol=1e-14)
    for a, b in zip(jax.tree.leaves(final_all), jax.tree.leaves(want_final), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-14)


def test_masked_scan_length_zero_keeps_carry_exactly():
    rng = np.random.default_rng(1)
    p, carry = _cell_params(rng, "lstm"), _carry(rng, "lstm")
    xs = jnp.asarray(rng.standard_normal((T, N, I)))
    for reverse in (False, True):
        final, ys = masked_scan(
            jaxseq.lstm_cell, p, carry, xs, jnp.asarray(LENGTHS), reverse=reverse
        )
        np.testing.assert_array_equal(np.asarray(ys)[:, 1], 0.0)
        for a, b in zip(final, carry, strict=True):
            np.testing.assert_array_equal(np.asarray(a)[1], np.asarray(b)[1])


# ------------------------------------------------------------------ the stack, by loops


def _stack_params(rng, kind, layers, bidirectional):
    shapes = jaxseq.param_shapes(kind, I, H, layers, bidirectional=bidirectional)
    return {k: jnp.asarray(rng.uniform(-0.5, 0.5, s)) for k, s in shapes.items()}


def stack_loop_reference(kind, params, x, h0, c0, lengths, layers, bidirectional):
    """Layers x directions by :func:`loop_reference`, PyTorch's h_n order (l0f, l0r, l1f...)."""
    cell = get_kind(kind).cell()
    D = 2 if bidirectional else 1
    inp, h_n, c_n = x, [], []
    for layer in range(layers):
        outs = []
        for d in range(D):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            p = {k[: -len(sfx)]: v for k, v in params.items() if k.endswith(sfx)}
            i = layer * D + d
            carry = (h0[i], c0[i]) if kind == "lstm" else h0[i]
            final, ys = loop_reference(cell, p, carry, jnp.asarray(inp), lengths, reverse=d == 1)
            outs.append(ys)
            if kind == "lstm":
                h_n.append(final[0])
                c_n.append(final[1])
            else:
                h_n.append(final)
        inp = np.concatenate(outs, axis=-1)
    return inp, np.stack(h_n), (np.stack(c_n) if kind == "lstm" else None)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    ("kind", "layers", "bidirectional"),
    [("rnn", 2, True), ("lstm", 2, True), ("gru", 1, True), ("lstm", 3, False)],
)
def test_stack_equals_python_loop(kind, layers, bidirectional, impl):
    rng = np.random.default_rng(2)
    params = _stack_params(rng, kind, layers, bidirectional)
    LD = layers * (2 if bidirectional else 1)
    x = rng.standard_normal((T, N, I))
    h0 = rng.standard_normal((LD, N, H))
    c0 = rng.standard_normal((LD, N, H))
    hx = (jnp.asarray(h0), jnp.asarray(c0)) if kind == "lstm" else jnp.asarray(h0)
    out, state = FNS[kind](params, jnp.asarray(x), hx, jnp.asarray(LENGTHS), impl=impl)
    h_n, c_n = state if kind == "lstm" else (state, None)
    want_out, want_h, want_c = stack_loop_reference(
        kind, params, x, jnp.asarray(h0), jnp.asarray(c0), LENGTHS, layers, bidirectional
    )
    np.testing.assert_allclose(out, want_out, rtol=0, atol=1e-13)
    np.testing.assert_allclose(h_n, want_h, rtol=0, atol=1e-13)
    if kind == "lstm":
        np.testing.assert_allclose(c_n, want_c, rtol=0, atol=1e-13)


# ------------------------------------------------------------------ padding and gradients


@functools.cache
def _value_and_grads(kind: str, impl: str):
    """jit(loss and its gradients wrt params, x, hx) of a 2-layer bidirectional stack."""

    def loss(params, x, hx, lengths, cot_out, cot_h):
        out, state = FNS[kind](params, x, hx, lengths, impl=impl)
        h_n = state[0] if kind == "lstm" else state
        return jnp.sum(out * cot_out) + jnp.sum(h_n * cot_h), (out, state)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))


def _padding_case(kind, seed=3):
    rng = np.random.default_rng(seed)
    params = _stack_params(rng, kind, 2, True)
    x = rng.standard_normal((T, N, I))
    h0 = jnp.asarray(rng.standard_normal((4, N, H)))
    hx = (h0, jnp.asarray(rng.standard_normal((4, N, H)))) if kind == "lstm" else h0
    cot_out = jnp.asarray(rng.standard_normal((T, N, 2 * H)))
    cot_h = jnp.asarray(rng.standard_normal((4, N, H)))
    pad = np.arange(T)[:, None] >= LENGTHS[None, :]  # (T, N)
    return rng, params, x, hx, cot_out, cot_h, pad


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kind", KINDS)
def test_padding_contents_never_matter(kind, impl):
    """Garbage in the padding changes no valid output, final state or gradient."""
    rng, params, x, hx, cot_out, cot_h, pad = _padding_case(kind)
    f = _value_and_grads(kind, impl)
    lengths = jnp.asarray(LENGTHS)
    x_garbage = x.copy()
    x_garbage[pad] = 1e3 * rng.standard_normal((int(pad.sum()), I))
    (l1, (o1, s1)), g1 = f(params, jnp.asarray(x), hx, lengths, cot_out, cot_h)
    (l2, (o2, s2)), g2 = f(params, jnp.asarray(x_garbage), hx, lengths, cot_out, cot_h)
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(np.asarray(o1)[pad], 0.0)
    for a, b in zip(
        jax.tree.leaves((s1, g1[0], g1[2])), jax.tree.leaves((s2, g2[0], g2[2])), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.asarray(g1[1])[~pad], np.asarray(g2[1])[~pad])
    assert l1 == l2


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kind", KINDS)
def test_gradient_into_padding_is_exactly_zero(kind, impl):
    _, params, x, hx, cot_out, cot_h, pad = _padding_case(kind, seed=4)
    (_, _), (_, g_x, g_hx) = _value_and_grads(kind, impl)(
        params, jnp.asarray(x), hx, jnp.asarray(LENGTHS), cot_out, cot_h
    )
    g_x = np.asarray(g_x)
    assert np.all(g_x[pad] == 0.0)
    assert np.all(np.abs(g_x[~pad]).sum(-1) > 0)  # the valid steps do get gradient
    # Row 1 has length 0: h_n is h0, so d(loss)/d(h0) for that row is the cotangent itself.
    g_h0 = np.asarray(g_hx[0] if kind == "lstm" else g_hx)
    np.testing.assert_array_equal(g_h0[:, 1], np.asarray(cot_h)[:, 1])


# ------------------------------------------------------------------ hx=None, compilation


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kind", KINDS)
def test_hx_none_equals_zeros(kind, impl):
    rng = np.random.default_rng(5)
    params = _stack_params(rng, kind, 1, True)
    x = jnp.asarray(rng.standard_normal((T, N, I)))
    zeros = jnp.zeros((2, N, H), jnp.float64)
    hx = (zeros, zeros) if kind == "lstm" else zeros
    f = jax.jit(functools.partial(FNS[kind], impl=impl))
    a = f(params, x, None, jnp.asarray(LENGTHS))
    b = f(params, x, hx, jnp.asarray(LENGTHS))
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(u, v)
    assert np.abs(np.asarray(a[0])).max() > 0


@pytest.mark.parametrize("impl", IMPLS)
def test_changing_lengths_does_not_recompile(impl):
    traces = collections.Counter()

    @functools.partial(jax.jit, static_argnames="impl")
    def f(params, x, lengths, impl):
        traces[impl] += 1
        out, (h_n, c_n) = jaxseq.lstm(params, x, None, lengths, impl=impl)
        return out, h_n

    rng = np.random.default_rng(6)
    params = _stack_params(rng, "lstm", 1, True)
    x = jnp.asarray(rng.standard_normal((T, N, I)))
    all_lengths = ([5, 5, 5, 5], [3, 0, 5, 3], [1, 2, 0, 4])
    outs = [f(params, x, jnp.asarray(ln, jnp.int32), impl) for ln in all_lengths]
    assert traces[impl] == 1
    # ... and the lengths really were used: each result equals the loop over valid steps.
    for (out, _), ln in zip(outs, all_lengths, strict=True):
        want, _, _ = stack_loop_reference(
            "lstm",
            params,
            np.asarray(x),
            jnp.zeros((2, N, H), jnp.float64),
            jnp.zeros((2, N, H), jnp.float64),
            np.asarray(ln),
            1,
            True,
        )
        np.testing.assert_allclose(out, want, rtol=0, atol=1e-13)
