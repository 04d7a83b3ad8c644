"""A linear recurrence kind defined entirely in this file runs through the one stack.

``jaxseq.recurrences.linear_kind`` gives a kind from its coefficients alone; registered,
it is served by the same parameter spec, stack (layers, directions, lengths, ``hx``,
dropout), implementations and NNX module base as the built-in kinds. Every
implementation is held by the conformance suite (``tests/_conformance.py``) against a
float64 loop of the kind's reference step, values and every gradient.
"""

from __future__ import annotations

import _conformance
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


def test_decay_kind_computes_its_equations():
    """The default implementation against the equations as a NumPy loop (values; every
    implementation's values and gradients against the kind's step: the test above)."""
    params = jaxseq.init_params(
        jax.random.key(0), "decay", I, H, 2, bidirectional=True, dtype=jnp.float64
    )
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((T, N, I)))
    h0 = jnp.asarray(rng.standard_normal((4, N, H)))
    out, h_n = jax.jit(jaxseq.run_stack, static_argnums=0)("decay", params, x, h0, LENGTHS)
    out_ref, h_ref = np_reference(params, x, h0, LENGTHS, 2, True)
    np.testing.assert_allclose(out, out_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(h_n, h_ref, rtol=0, atol=1e-12)


def test_decay_kind_conforms():
    """Every implementation serving the kind (``fused``, ``fused_scan``,
    ``fused_parallel``, ``fused_chunked`` with ``chunk``, ``unfused``, ``reference``),
    every feature it supports (layers x directions, lengths including 0 and T, ``hx``,
    resets, ``reset_hx``, the input and output masks, forward mode, ``vmap``,
    ``carry_dtype``): values and every gradient against the conformance suite's float64
    loop of its reference step (``tests/_conformance.py``)."""
    coverage = _conformance.check_kind("decay")
    assert {impl for _, impl in coverage} == {
        "fused", "fused_scan", "fused_parallel", "fused_chunked", "unfused", "reference"
    }  # fmt: skip
    p = jaxseq.init_params(jax.random.key(0), "decay", I, H, dtype=jnp.float64)
    assert sorted({k.split("_l")[0] for k in p}) == ["bias_ih", "weight_ih"]


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
