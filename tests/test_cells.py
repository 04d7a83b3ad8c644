"""The pure cells against a float64 NumPy transcription of PyTorch's documented equations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxseq
from jaxseq.recurrences import get as get_kind

N, I, H, P = 3, 4, 5, 2


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def np_rnn(p, h, x, act):
    f = np.tanh if act == "tanh" else (lambda a: np.maximum(a, 0.0))
    pre = x @ p["weight_ih"].T + h @ p["weight_hh"].T
    if "bias_ih" in p:
        pre = pre + p["bias_ih"] + p["bias_hh"]
    return f(pre)


def np_lstm(p, h, c, x):
    """Written gate by gate (i, f, g, o) from the torch.nn.LSTM documentation."""
    Hc = c.shape[-1]
    out = {}
    for k, name in enumerate("ifgo"):
        rows = slice(k * Hc, (k + 1) * Hc)
        a = x @ p["weight_ih"][rows].T + h @ p["weight_hh"][rows].T
        if "bias_ih" in p:
            a = a + p["bias_ih"][rows] + p["bias_hh"][rows]
        out[name] = a
    i, f, g, o = _sigmoid(out["i"]), _sigmoid(out["f"]), np.tanh(out["g"]), _sigmoid(out["o"])
    c2 = f * c + i * g
    h2 = o * np.tanh(c2)
    if "weight_hr" in p:
        h2 = h2 @ p["weight_hr"].T
    return h2, c2


def np_gru(p, h, x):
    """torch.nn.GRU's documented equations; the reset multiplies (W_hn h + b_hn)."""
    Hc = h.shape[-1]
    W_i = [p["weight_ih"][k * Hc : (k + 1) * Hc] for k in range(3)]
    W_h = [p["weight_hh"][k * Hc : (k + 1) * Hc] for k in range(3)]
    zero = np.zeros(Hc)
    b_i = [p["bias_ih"][k * Hc : (k + 1) * Hc] if "bias_ih" in p else zero for k in range(3)]
    b_h = [p["bias_hh"][k * Hc : (k + 1) * Hc] if "bias_hh" in p else zero for k in range(3)]
    r = _sigmoid(x @ W_i[0].T + b_i[0] + h @ W_h[0].T + b_h[0])
    z = _sigmoid(x @ W_i[1].T + b_i[1] + h @ W_h[1].T + b_h[1])
    n = np.tanh(x @ W_i[2].T + b_i[2] + r * (h @ W_h[2].T + b_h[2]))
    return (1.0 - z) * n + z * h


def _params(rng, kind, bias=True, proj=0):
    G = get_kind(kind).num_gates
    Hout = proj or H
    p = {
        "weight_ih": rng.uniform(-1, 1, (G * H, I)),
        "weight_hh": rng.uniform(-1, 1, (G * H, Hout)),
    }
    if bias:
        p["bias_ih"] = rng.uniform(-1, 1, (G * H,))
        p["bias_hh"] = rng.uniform(-1, 1, (G * H,))
    if proj:
        p["weight_hr"] = rng.uniform(-1, 1, (proj, H))
    return p


def _j(p, dtype=jnp.float64):
    return {k: jnp.asarray(v, dtype) for k, v in p.items()}


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_rnn_cell_matches_numpy(act, bias):
    rng = np.random.default_rng(0)
    p, h, x = _params(rng, "rnn", bias), rng.standard_normal((N, H)), rng.standard_normal((N, I))
    h2, y = jaxseq.rnn_cell(_j(p), jnp.asarray(h), jnp.asarray(x), act)
    want = np_rnn(p, h, x, act)
    np.testing.assert_allclose(h2, want, rtol=0, atol=1e-14)
    np.testing.assert_array_equal(y, h2)


@pytest.mark.parametrize("proj", [0, P])
@pytest.mark.parametrize("bias", [True, False])
def test_lstm_cell_matches_numpy(bias, proj):
    rng = np.random.default_rng(1)
    p = _params(rng, "lstm", bias, proj)
    h, c, x = (
        rng.standard_normal((N, proj or H)),
        rng.standard_normal((N, H)),
        rng.standard_normal((N, I)),
    )
    (h2, c2), y = jaxseq.lstm_cell(_j(p), (jnp.asarray(h), jnp.asarray(c)), jnp.asarray(x))
    want_h, want_c = np_lstm(p, h, c, x)
    assert h2.shape == (N, proj or H) and c2.shape == (N, H)
    np.testing.assert_allclose(h2, want_h, rtol=0, atol=1e-14)
    np.testing.assert_allclose(c2, want_c, rtol=0, atol=1e-14)
    np.testing.assert_array_equal(y, h2)


@pytest.mark.parametrize("bias", [True, False])
def test_gru_cell_matches_numpy(bias):
    rng = np.random.default_rng(2)
    p, h, x = _params(rng, "gru", bias), rng.standard_normal((N, H)), rng.standard_normal((N, I))
    h2, y = jaxseq.gru_cell(_j(p), jnp.asarray(h), jnp.asarray(x))
    np.testing.assert_allclose(h2, np_gru(p, h, x), rtol=0, atol=1e-14)
    np.testing.assert_array_equal(y, h2)


def test_gru_reset_applies_after_hidden_bias():
    """With b_hn != 0, reset-before-matmul (Haiku) or no b_hn (Flax) give other values."""
    rng = np.random.default_rng(3)
    p, h, x = _params(rng, "gru"), rng.standard_normal((N, H)), rng.standard_normal((N, I))
    got = np.asarray(jaxseq.gru_cell(_j(p), jnp.asarray(h), jnp.asarray(x))[0])
    np.testing.assert_allclose(got, np_gru(p, h, x), rtol=0, atol=1e-14)
    q = dict(p)
    q["bias_hh"] = p["bias_hh"].copy()
    q["bias_hh"][2 * H :] = 0.0  # drop b_hn: must change the result
    assert np.abs(got - np_gru(q, h, x)).max() > 1e-3


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_cell_is_projection_plus_step(kind):
    """``cell(p, c, x) == step(p, c, input_projection(p, x))`` exactly (the fast path's split)."""
    rng = np.random.default_rng(4)
    p = _j(_params(rng, kind))
    x = jnp.asarray(rng.standard_normal((N, I)))
    h = jnp.asarray(rng.standard_normal((N, H)))
    carry = (h, jnp.asarray(rng.standard_normal((N, H)))) if kind == "lstm" else h
    a = get_kind(kind).cell()(p, carry, x)
    b = get_kind(kind).step(p, carry, jaxseq.recurrences.input_projection(p, x))
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_cell_dtype_in_equals_dtype_out(kind, dtype):
    rng = np.random.default_rng(5)
    p = _params(rng, kind)
    x, h, c = rng.standard_normal((N, I)), rng.standard_normal((N, H)), rng.standard_normal((N, H))
    carry = (
        (jnp.asarray(h, dtype), jnp.asarray(c, dtype)) if kind == "lstm" else jnp.asarray(h, dtype)
    )
    new, y = get_kind(kind).cell()(_j(p, dtype), carry, jnp.asarray(x, dtype))
    assert all(leaf.dtype == dtype for leaf in jax.tree.leaves((new, y)))
    want = {
        "rnn": lambda: np_rnn(p, h, x, "tanh"),
        "lstm": lambda: np_lstm(p, h, c, x)[0],
        "gru": lambda: np_gru(p, h, x),
    }[kind]()
    np.testing.assert_allclose(y, want, rtol=0, atol=1e-5 if dtype == jnp.float32 else 1e-14)


def test_get_cell_unknown_kind():
    with pytest.raises(ValueError, match="Unknown RNN kind 'lstmx'"):
        get_kind("lstmx").cell()
    with pytest.raises(ValueError, match="Unknown RNN kind 'lstmx'"):
        _ = get_kind("lstmx").step


def test_relu_cell_differs_from_tanh():
    """The nonlinearity argument is honoured (relu clips negatives to exactly 0)."""
    rng = np.random.default_rng(6)
    p = _j(_params(rng, "rnn"))
    x, h = jnp.asarray(rng.standard_normal((N, I))), jnp.asarray(rng.standard_normal((N, H)))
    y_relu = np.asarray(jaxseq.rnn_cell(p, h, x, "relu")[1])
    y_tanh = np.asarray(jaxseq.rnn_cell(p, h, x, "tanh")[1])
    assert (y_relu == 0).any() and (y_relu >= 0).all() and (y_tanh < 0).any()
