"""Options as one value: ``LayerOptions`` on the layers and the model zoo, the regularisers'
rates on the functional API, and the capability table's refusals.

The regularisers' numerics are held against a float64 loop by the conformance suite
(``tests/_conformance.py``) through ``masks=``; here the rates must reach exactly those
masks (same key, same draw) from every door: the functional API, the NNX layer's
``options`` and a model of the zoo.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxseq
from jaxseq.impls import IMPLS, impls_for
from jaxseq.layer import check
from jaxseq.options import LayerOptions
from jaxseq.params import RNNSpec
from jaxseq.recurrences import get, registered
from jaxseq.regularizers import draw_masks

T, N, I, H = 5, 3, 2, 4
RATES = dict(input_dropout=0.2, output_dropout=0.3, recurrent_dropout=0.25, zoneout=0.1)


def _data():
    p = jaxseq.init_lstm(jax.random.key(0), I, H, num_layers=2, dtype=jnp.float64)
    x = jax.random.normal(jax.random.key(1), (T, N, I), jnp.float64)
    return p, x


def test_functional_rates_draw_the_masks_from_the_key():
    p, x = _data()
    key = jax.random.key(7)
    spec = RNNSpec("lstm", I, H, num_layers=2)
    got = jaxseq.lstm(p, x, lengths=[5, 2, 0], train=True, key=key, **RATES)
    masks = draw_masks(jax.random.split(key)[1], spec, T, N, dtype=jnp.float64, **RATES)
    want = jaxseq.lstm(p, x, lengths=[5, 2, 0], masks=masks)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(a, b)
    plain = jaxseq.lstm(p, x, lengths=[5, 2, 0])
    assert float(jnp.abs(got[0] - plain[0]).max()) > 1e-3  # the masks did act
    # Evaluation: only zoneout acts, at its expectation, with no key.
    ev = jaxseq.lstm(p, x, train=False, **RATES)
    ev_masks = draw_masks(None, spec, T, N, train=False, dtype=jnp.float64, **RATES)
    np.testing.assert_array_equal(ev[0], jaxseq.lstm(p, x, masks=ev_masks)[0])


def test_functional_rates_errors():
    p, x = _data()
    with pytest.raises(ValueError, match="need a PRNG key"):
        jaxseq.lstm(p, x, train=True, zoneout=0.1)
    with pytest.raises(ValueError, match="rates or as masks=, not both"):
        jaxseq.lstm(p, x, train=True, key=jax.random.key(0), zoneout=0.1, masks={})
    with pytest.raises(ValueError, match=r"zoneout must be in \[0, 1\), got 1.0"):
        jaxseq.lstm(p, x, zoneout=1.0)
    with pytest.raises(ValueError, match="zoneout acts inside the recurrence"):
        jaxseq.lstm(p, x, impl="unfused", zoneout=0.1)
    with pytest.raises(ValueError, match="MinGRU has no recurrent weight or state update"):
        jaxseq.min_gru(jaxseq.init_min_gru(jax.random.key(0), I, H), x, zoneout=0.1)


def test_layer_options_are_checked_when_made():
    with pytest.raises(TypeError, match="carry_dtype must be None or a floating dtype, got 'foo'"):
        LayerOptions(carry_dtype="foo")
    with pytest.raises(TypeError, match="carry_dtype must be a floating dtype, got int32"):
        LayerOptions(carry_dtype=jnp.int32)
    with pytest.raises(ValueError, match=r"zoneout must be in \[0, 1\), got 1.0"):
        LayerOptions(zoneout=1.0)
    with pytest.raises(TypeError, match="input_dropout must be a number, got str"):
        LayerOptions(input_dropout="0.1")
    with pytest.raises(ValueError, match="remat must be None or a positive integer"):
        LayerOptions(remat=0)
    with pytest.raises(ValueError, match="unroll must be a positive integer"):
        LayerOptions(unroll=0)
    spec = RNNSpec("lstm", I, H)
    with pytest.raises(ValueError, match=r"remat is supported by impl in \['fused', 'fused_lo"):
        LayerOptions(impl="unfused", remat=2).check(spec)
    assert hash(LayerOptions(zoneout=0.1)) == hash(LayerOptions(zoneout=0.1))  # static


def test_nnx_layer_and_zoo_hold_one_options_value():
    """A CharLM with zoneout, remat and carry_dtype: its rnn holds the options, and its eval
    output is the functional stack's with the same options (zoneout at its expectation)."""
    opts = LayerOptions(zoneout=0.2, remat=2, carry_dtype=jnp.float64, unroll=2)
    model = jaxseq.models.CharLM(
        7, 3, H, num_layers=2, rnn_options=opts, param_dtype=jnp.float32, rngs=nnx.Rngs(0)
    )
    assert model.rnn.options == opts and model.rnn.options.carry_dtype == jnp.float64
    model.eval()
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 7, (N, T)))
    logits, _ = model(tokens)
    emb = model.embedding(tokens)
    spec = model.rnn.spec
    masks = draw_masks(None, spec, T, N, train=False, zoneout=0.2)
    out, _ = jaxseq.lstm(
        model.rnn.params_dict(), emb, batch_first=True, masks=masks, **opts.stack_kwargs()
    )
    np.testing.assert_allclose(logits, model.head(out), rtol=1e-6, atol=1e-6)
    plain = jaxseq.models.CharLM(7, 3, H, num_layers=2, rngs=nnx.Rngs(0))
    plain.eval()
    assert float(jnp.abs(plain(tokens)[0] - logits).max()) > 1e-4  # zoneout acts in eval
    # Training mode draws fresh masks from the layer's dropout stream.
    model.train()
    a, _ = model(tokens)
    b, _ = model(tokens)
    assert float(jnp.abs(a - b).max()) > 1e-4


def test_make_rnn_passes_options_and_checks_them():
    rnn = jaxseq.models.make_rnn(
        "min_gru", I, H, options=LayerOptions(impl="fused_chunked", chunk=2), rngs=nnx.Rngs(0)
    )
    assert rnn.options.impl == "fused_chunked" and rnn.batch_first
    with pytest.raises(ValueError, match="MinGRU has no recurrent weight"):
        jaxseq.models.make_rnn("min_gru", I, H, options=LayerOptions(zoneout=0.1), rngs=nnx.Rngs(0))


def test_capability_table():
    """Every registered kind is served by fused, unfused and reference; each name serves a
    kind once; the refusals come from the table with their own words."""
    for name, rec in registered().items():
        rows = impls_for(rec)
        assert {"fused", "unfused", "reference"} <= set(rows), name
    with pytest.raises(ValueError, match=r"impl='cudnn' supports the LSTM only, not GRU"):
        check(IMPLS, get("gru"), "cudnn")
    with pytest.raises(ValueError, match=r"impl='cudnn' cannot take resets"):
        check(IMPLS, get("lstm"), "cudnn", ["resets"])
    with pytest.raises(ValueError, match=r"impl='cudnn' cannot return every step's states"):
        check(IMPLS, get("lstm"), "cudnn", ["all_states"])
    with pytest.raises(ValueError, match=r"LSTM: Unknown impl 'fused_scan'; expected one of"):
        check(IMPLS, get("lstm"), "fused_scan")
    with pytest.raises(
        ValueError, match=r"MinGRU: chunk is supported by impl in \['fused_chunked'\]"
    ):
        check(IMPLS, get("min_gru"), "fused", ["chunk"])
    assert check(IMPLS, get("min_lstm"), "fused_parallel").plan == {"method": "parallel"}


def test_strict_new_doors():
    """The arguments added last round are checked before tracing, each error naming the
    argument: reset_hx, the layer's dtype on reset_hx, input rank with regularisers,
    carry_dtype, explicit zoneout masks."""
    p = jaxseq.init_gru(jax.random.key(0), I, H)
    x = jnp.ones((T, N, I), jnp.float32)
    r = jnp.zeros((T, N), bool).at[2, 0].set(True)
    with pytest.raises(ValueError, match=r"Expected reset_hx size \(1, 3, 4\), got \[1, 2, 4\]"):
        jaxseq.gru(p, x, resets=r, reset_hx=jnp.zeros((1, 2, H), jnp.float32))
    lstm = jaxseq.init_lstm(jax.random.key(0), I, H)
    with pytest.raises(ValueError, match=r"Expected reset_hx\[1\] size"):
        z = jnp.zeros((1, N, H), jnp.float32)
        jaxseq.lstm(lstm, x, resets=r, reset_hx=(z, z[:, :2]))
    with pytest.raises(TypeError, match="carry_dtype must be None or a floating dtype, got 'foo'"):
        jaxseq.gru(p, x, carry_dtype="foo")
    with pytest.raises(ValueError, match=r"masks\['zoneout_l0'\] values must lie in \[0, 1\]"):
        jaxseq.gru(p, x, masks={"zoneout_l0": (jnp.full((T, 1, N, H), 1.5, jnp.float32),)})
    m = jaxseq.nn.GRU(I, H, zoneout=0.1, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="GRU: Expected input to be 2D or 3D, got 1D instead"):
        m(jnp.ones((I,), jnp.float32))
    # A bfloat16 layer casts reset_hx as it casts hx, and runs.
    b = jaxseq.nn.GRU(I, H, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    h = jnp.zeros((1, N, H), jnp.float32)
    out, _ = b(x, h, resets=r, reset_hx=h + 1.0)
    ref, _ = b(x, h, resets=r, reset_hx=(h + 1.0).astype(jnp.bfloat16))
    assert out.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(ref, np.float32))
