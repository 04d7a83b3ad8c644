"""The mixed-precision policy: bfloat16 matmuls accumulated in float32, a float32 carry.

Held against a NumPy float64 loop that rounds exactly where the policy rounds (inputs and
weights to bfloat16, h to bfloat16 before its matmul, matmul results and the state to
float32, the output to bfloat16), for every fast implementation; and against float64
over a long sequence with a long memory, where a pure-bfloat16 carry drifts further.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import jaxseq
from jaxseq.validation import carry_dtype_for

BF16 = ml_dtypes.bfloat16
T, N, I, H = 12, 3, 5, 8
LENGTHS = np.array([12, 0, 7])


def _bf(a):
    return np.asarray(a, np.float64).astype(BF16).astype(np.float64)


def _f32(a):
    return np.asarray(a, np.float64).astype(np.float32).astype(np.float64)


def _sig(v):
    return _f32(1.0 / (1.0 + np.exp(-v)))


def policy_loop(kind, p, x, lengths):
    """One layer, one direction, the policy's roundings, float64 arithmetic otherwise."""
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}  # bf16 values, exactly
    x = np.asarray(x, np.float64)
    out = np.zeros((T, N, H))
    h_n = np.zeros((N, H))
    for n in range(N):
        h = np.zeros(H)
        c = np.zeros(H)
        for t in range(lengths[n]):
            gx = _f32(x[t, n] @ p["weight_ih_l0"].T + p["bias_ih_l0"])
            gh = _f32(_bf(h) @ p["weight_hh_l0"].T + p["bias_hh_l0"])
            if kind == "lstm":
                i, f, g, o = np.split(_f32(gx + gh), 4)
                c = _f32(_sig(f) * c + _sig(i) * _f32(np.tanh(g)))
                h = _f32(_sig(o) * _f32(np.tanh(c)))
            else:  # gru
                xr, xz, xn = np.split(gx, 3)
                hr, hz, hn = np.split(gh, 3)
                r, z = _sig(xr + hr), _sig(xz + hz)
                nn_ = _f32(np.tanh(_f32(xn + r * hn)))
                h = _f32((1 - z) * nn_ + z * h)
            out[t, n] = h
        h_n[n] = h
    return _bf(out), _bf(h_n)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("impl", ["fused", "fused_hoisted", "reference"])
def test_policy_equals_a_loop_that_rounds_where_the_policy_rounds(kind, impl):
    p = jaxseq.init_params(jax.random.key(0), kind, I, H, dtype=jnp.bfloat16)
    x = jax.random.normal(jax.random.key(1), (T, N, I), jnp.bfloat16)
    out, state = jax.jit(lambda p, x: jaxseq.run_stack(kind, p, x, lengths=LENGTHS, impl=impl))(
        p, x
    )
    h_n = state[0] if kind == "lstm" else state
    assert out.dtype == jnp.bfloat16 and h_n.dtype == jnp.bfloat16
    want_out, want_h = policy_loop(kind, p, x, LENGTHS)
    # Equal to the bfloat16 rounding of the same float32 values: within one bf16 ulp
    # (float32 sums in another order may round to the neighbouring bf16 value).
    tol = dict(rtol=2.0**-7, atol=1e-6)
    np.testing.assert_allclose(np.asarray(out, np.float64), want_out, **tol)
    np.testing.assert_allclose(np.asarray(h_n[0], np.float64), want_h, **tol)
    assert float(jnp.abs(out[:, 1].astype(jnp.float32)).max()) == 0.0


def test_the_default_carry_dtype_rule():
    assert carry_dtype_for(jnp.dtype(jnp.bfloat16)) == jnp.float32
    assert carry_dtype_for(jnp.dtype(jnp.float16)) == jnp.float32
    assert carry_dtype_for(jnp.dtype(jnp.float32)) == jnp.float32
    assert carry_dtype_for(jnp.dtype(jnp.float64)) == jnp.float64
    assert carry_dtype_for(jnp.dtype(jnp.bfloat16), jnp.bfloat16) == jnp.bfloat16
    with pytest.raises(ValueError, match="at least as wide"):
        carry_dtype_for(jnp.dtype(jnp.float32), jnp.bfloat16)
    with pytest.raises(TypeError, match="floating"):
        carry_dtype_for(jnp.dtype(jnp.float32), jnp.int32)


@functools.cache
def _long_run(carry_dtype):
    def run(p, x):
        return jaxseq.lstm(p, x, carry_dtype=carry_dtype)[1]

    return jax.jit(run)


def test_a_float32_carry_drifts_less_than_a_bfloat16_one_over_a_long_memory():
    """T = 1000, forget-gate bias +3 (memory that lasts): the policy's h_n and c_n stay
    closer to float64 than those of a pure bfloat16 carry."""
    Tl = 1000
    p = jaxseq.init_lstm(jax.random.key(0), I, H, dtype=jnp.float64)
    p = dict(p, bias_hh_l0=p["bias_hh_l0"].at[H : 2 * H].add(3.0))
    p16 = {k: v.astype(jnp.bfloat16) for k, v in p.items()}
    x = jax.random.normal(jax.random.key(1), (Tl, N, I)).astype(jnp.bfloat16)
    # The float64 reference on the same (bf16-valued) weights and inputs.
    h64, c64 = jaxseq.lstm(
        {k: v.astype(jnp.float64) for k, v in p16.items()}, x.astype(jnp.float64)
    )[1]
    errs = {}
    for cd in (None, jnp.bfloat16):
        h, c = _long_run(cd)(p16, x)
        errs[cd] = (
            float(jnp.abs(h.astype(jnp.float64) - h64).max()),
            float(jnp.abs(c.astype(jnp.float64) - c64).max()),
        )
    assert errs[None][1] < errs[jnp.bfloat16][1], errs
    assert errs[None][1] < 0.05, errs


def test_modules_take_carry_dtype_and_float32_is_unchanged():
    from flax import nnx

    m = jaxseq.nn.GRU(I, H, dtype=jnp.bfloat16, carry_dtype=jnp.float32, rngs=nnx.Rngs(0))
    out, h_n = m(jnp.ones((T, N, I), jnp.bfloat16))
    assert out.dtype == h_n.dtype == jnp.bfloat16
    p = jaxseq.init_gru(jax.random.key(0), I, H)  # float32: the carry is float32 already
    x = jax.random.normal(jax.random.key(1), (T, N, I), jnp.float32)
    a = jaxseq.gru(p, x)[0]
    b = jaxseq.gru(p, x, carry_dtype=jnp.float32)[0]
    np.testing.assert_array_equal(a, b)
