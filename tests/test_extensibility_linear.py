"""A linear recurrence kind defined entirely in this file runs through the one stack.

``jaxseq.recurrences.linear_kind`` gives a kind from its coefficients alone; registered,
it is served by the same parameter spec, stack (layers, directions, lengths, ``hx``,
dropout), implementations and NNX module base as the built-in kinds. Checked against a
plain NumPy float64 loop over each row's valid steps, values and gradients.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxseq
from jaxseq.recurrences import linear_kind, register, unregister

T, N, I, H = 6, 4, 3, 5
LENGTHS = np.array([6, 0, 2, 5])


def decay_coefficients(gx):
    """A toy: ``h_t = sigmoid(g_a) * h_{t-1} + tanh(g_b)``, rows [a; b] of weight_ih."""
    ga, gb = jnp.split(gx, 2, axis=-1)
    return jax.nn.sigmoid(ga), jnp.tanh(gb)


DECAY = linear_kind("decay", "Decay", 2, decay_coefficients)


class Decay(jaxseq.nn.RNNBase):
    kind = "decay"


@pytest.fixture(scope="module", autouse=True)
def registered_decay():
    register(DECAY)
    yield
    unregister("decay")


def np_reference(params, x, h0, lengths, num_layers, bidirectional):
    """Each row alone, its valid steps only, as a NumPy loop: (out, h_n)."""
    p = {k: np.asarray(v) for k, v in params.items()}
    x, h0 = np.asarray(x), np.asarray(h0)
    D = 2 if bidirectional else 1
    out = np.zeros((T, N, D * H))
    h_n = np.array(h0)
    for n in range(N):
        inp = x[: lengths[n], n]
        for layer in range(num_layers):
            ys = []
            for d, sfx in enumerate([""] + (["_reverse"] if bidirectional else [])):
                w, b = p[f"weight_ih_l{layer}{sfx}"], p[f"bias_ih_l{layer}{sfx}"]
                h = h0[layer * D + d, n]
                y = np.zeros((len(inp), H))
                order = range(len(inp) - 1, -1, -1) if d else range(len(inp))
                for t in order:
                    g = inp[t] @ w.T + b
                    a, bb = 1 / (1 + np.exp(-g[:H])), np.tanh(g[H:])
                    h = a * h + bb
                    y[t] = h
                ys.append(y)
                h_n[layer * D + d, n] = h
            inp = np.concatenate(ys, axis=-1)
        out[: lengths[n], n] = inp
    return out, h_n


@functools.cache
def _run(impl, chunk):
    def f(p, x, h0, lengths):
        return jaxseq.run_stack("decay", p, x, h0, lengths, impl=impl, chunk=chunk)

    return jax.jit(f)


@pytest.mark.parametrize(
    "num_layers, bidirectional, impl",
    [
        (1, False, "fused"),
        (2, True, "fused"),
        (2, True, "fused_parallel"),
        (1, True, "fused_chunked"),
        (2, False, "unfused"),
        (1, True, "reference"),
    ],
)
def test_decay_kind_through_the_stack(num_layers, bidirectional, impl):
    D = 2 if bidirectional else 1
    params = jaxseq.init_params(
        jax.random.key(0), "decay", I, H, num_layers, bidirectional=bidirectional,
        dtype=jnp.float64,
    )  # fmt: skip
    assert sorted({k.split("_l")[0] for k in params}) == ["bias_ih", "weight_ih"]
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((T, N, I)))
    h0 = jnp.asarray(rng.standard_normal((num_layers * D, N, H)))
    lengths = jnp.asarray(LENGTHS)
    chunk = 4 if impl == "fused_chunked" else None
    out, h_n = _run(impl, chunk)(params, x, h0, lengths)
    out_ref, h_ref = np_reference(params, x, h0, LENGTHS, num_layers, bidirectional)
    np.testing.assert_allclose(out, out_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(h_n, h_ref, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(h_n[:, 1], h0[:, 1])  # length 0: h_n = h0

    # Gradients: every implementation against the reference implementation.
    ct = jnp.asarray(rng.standard_normal(out.shape))

    def loss(fn):
        return lambda p, x, h0: (
            jnp.sum(fn(p, x, h0, lengths)[0] * ct) + jnp.sum(fn(p, x, h0, lengths)[1] ** 2)
        )

    g = jax.grad(loss(_run(impl, chunk)), argnums=(0, 1, 2))(params, x, h0)
    g_ref = jax.grad(loss(_run("reference", None)), argnums=(0, 1, 2))(params, x, h0)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert float(jnp.abs(g[1][2:, 2]).max()) == 0.0  # no gradient into padding


def test_decay_module_dropout_and_interop():
    m = Decay(I, H, num_layers=2, batch_first=True, dropout=0.5, rngs=nnx.Rngs(0))
    assert jaxseq.nn.module_class("decay") is Decay
    x = jnp.ones((N, T, I))
    a, b = m(x)[0], m(x)[0]
    assert not np.allclose(a, b)  # training mode draws fresh dropout masks
    m.eval()
    out, h_n = m(x, lengths=jnp.asarray(LENGTHS))
    ref, h_ref = jaxseq.run_stack(
        "decay", m.params_dict(), x, lengths=jnp.asarray(LENGTHS), batch_first=True,
        impl="reference",
    )  # fmt: skip
    np.testing.assert_allclose(out, ref, atol=1e-6)
    np.testing.assert_allclose(h_n, h_ref, atol=1e-6)
    sd = jaxseq.interop.to_torch_state_dict(m)
    assert sorted(sd) == sorted(m.params_dict()) and "weight_hh_l0" not in sd


def test_gated_only_options_are_refused_for_a_linear_kind():
    p = jaxseq.init_params(jax.random.key(0), "decay", I, H)
    x = jnp.ones((T, N, I))
    with pytest.raises(ValueError, match="Unknown impl 'fused_loop'"):
        jaxseq.run_stack("decay", p, x, impl="fused_loop")
    with pytest.raises(ValueError, match="remat is supported by impl in"):
        jaxseq.run_stack("decay", p, x, remat=2)
    with pytest.raises(ValueError, match="chunk is supported by impl in"):
        jaxseq.run_stack("decay", p, x, chunk=2)
