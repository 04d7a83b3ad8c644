"""Hostile inputs end in a clear Python exception or a documented result, never a crash,
an XLA message or a silent wrong answer."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from jax.experimental import checkify

import jaxseq
from jaxseq.checks import check_finite, checked_lengths
from jaxseq.interop import load_torch_state_dict

T, N, I, H = 4, 3, 2, 3


def _params(kind, num_layers=1, bidirectional=False, dtype=np.float64, hidden=H):
    rng = np.random.default_rng(0)
    shapes = jaxseq.param_shapes(kind, I, hidden, num_layers, bidirectional=bidirectional)
    return {k: jnp.asarray(rng.uniform(-0.5, 0.5, s).astype(dtype)) for k, s in shapes.items()}


@pytest.fixture(scope="module")
def lstm_params():
    return _params("lstm", bidirectional=True)


@pytest.fixture(scope="module")
def x():
    return jnp.asarray(np.random.default_rng(1).standard_normal((T, N, I)))


# ------------------------------------------------------------------ non-finite values


def test_nan_at_a_valid_step_propagates_in_its_row_only(lstm_params, x):
    """Documented: like torch, a NaN at a valid step reaches that row's outputs and states;
    other rows are untouched; a NaN in the padding is ignored."""
    x_bad = np.asarray(x).copy()
    x_bad[2, 0] = np.nan  # row 0, valid step
    x_bad[3, 1] = np.inf  # row 1, padding (length 3)
    lengths = jnp.asarray([4, 3, 4], jnp.int32)
    out, (h_n, c_n) = jaxseq.lstm(lstm_params, jnp.asarray(x_bad), None, lengths)
    ref, (ref_h, _) = jaxseq.lstm(lstm_params, x, None, lengths)
    out, ref = np.asarray(out), np.asarray(ref)
    assert np.isnan(out[2:, 0, :H]).all() and np.isnan(h_n[0, 0]).all()  # forward, from t=2 on
    assert np.isnan(out[:3, 0, H:]).all()  # reverse direction: t <= 2
    np.testing.assert_array_equal(out[:, 1:], ref[:, 1:])
    np.testing.assert_array_equal(h_n[:, 1:], ref_h[:, 1:])


def test_check_finite_is_opt_in_eager_and_under_jit(lstm_params, x):
    x_bad = x.at[1, 2, 0].set(jnp.nan)
    with pytest.raises(
        ValueError, match=re.escape("input contains 1 non-finite values (NaN or inf) out of 24")
    ):
        check_finite(x_bad)
    np.testing.assert_array_equal(check_finite(x), x)

    def f(x):
        return jaxseq.lstm(lstm_params, check_finite(x))[0]

    checked = jax.jit(checkify.checkify(f))
    err, out = checked(x)
    assert err.get() is None
    np.testing.assert_allclose(out, jaxseq.lstm(lstm_params, x)[0], rtol=0, atol=1e-15)
    err, _ = checked(x_bad)
    assert "input contains non-finite values" in err.get()
    with pytest.raises(Exception, match="input contains non-finite values"):
        err.throw()


# ------------------------------------------------------------------ lengths in every form


def test_lengths_as_list_tuple_numpy_and_unsigned_agree(lstm_params, x):
    want = jaxseq.lstm(lstm_params, x, None, jnp.asarray([4, 0, 2], jnp.int32))
    for lengths in (
        [4, 0, 2],
        (4, 0, 2),
        np.array([4, 0, 2], np.int64),
        np.array([4, 0, 2], np.uint8),
    ):
        got = jaxseq.lstm(lstm_params, x, None, lengths)
        for u, v in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize(
    ("lengths", "exc", "msg"),
    [
        ([1.0, 2.0, 3.0], TypeError, "lengths must be integers"),
        ([True, False, True], TypeError, "lengths must be integers"),
        (
            np.array([1.5, 2.0, 3.0]),
            TypeError,
            "lengths must be an integer array, got dtype float64",
        ),
        (2.0, TypeError, "lengths must be an integer array of shape (N,), got float"),
        ("123", TypeError, "lengths must be an integer array of shape (N,), got str"),
        ([1, 2], ValueError, "lengths must have shape (3,)"),
        ([1, 2, 3, 4], ValueError, "lengths must have shape (3,)"),
        ([[1, 2, 3]], TypeError, "lengths must be integers"),
        ([-1, 2, 3], ValueError, "lengths must lie in [0, T] = [0, 4], got min -1 and max 3"),
        ([1, 2, 5], ValueError, "lengths must lie in [0, T] = [0, 4], got min 1 and max 5"),
    ],
)
def test_bad_lengths_raise(lstm_params, x, lengths, exc, msg):
    with pytest.raises(exc, match=re.escape(msg)):
        jaxseq.lstm(lstm_params, x, None, lengths)


def test_bad_lengths_raise_under_jit_too(lstm_params, x):
    """Shape and dtype are static, so they are checked while tracing, before XLA."""
    f = jax.jit(lambda lengths: jaxseq.lstm(lstm_params, x, None, lengths)[0])
    with pytest.raises(TypeError, match="lengths must be an integer array, got dtype float32"):
        f(jnp.ones((N,), jnp.float32))
    with pytest.raises(ValueError, match=re.escape("lengths must have shape (3,)")):
        f(jnp.ones((N + 1,), jnp.int32))


@pytest.mark.parametrize("impl", ["reference", "fused"])
def test_traced_out_of_range_lengths_clip_as_documented(lstm_params, x, impl):
    """Under jit the range cannot be read: above T acts as T, negative as 0 ..."""
    f = jax.jit(lambda lengths: jaxseq.lstm(lstm_params, x, None, lengths, impl=impl))
    a = f(jnp.asarray([7, -2, 3], jnp.int32))
    b = f(jnp.asarray([4, 0, 3], jnp.int32))
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(u, v)


def test_checked_lengths_catches_traced_out_of_range(lstm_params, x):
    """... and checkify + checked_lengths turns that into an error on request."""

    def f(lengths):
        return jaxseq.lstm(lstm_params, x, None, checked_lengths(lengths, x.shape[0]))[0]

    checked = jax.jit(checkify.checkify(f))
    err, out = checked(jnp.asarray([4, 0, 3], jnp.int32))
    assert err.get() is None
    np.testing.assert_allclose(
        out, jaxseq.lstm(lstm_params, x, None, [4, 0, 3])[0], rtol=0, atol=1e-15
    )
    err, _ = checked(jnp.asarray([7, 0, 3], jnp.int32))
    assert "lengths must lie in [0, T] = [0, 4], got min 0 and max 7" in err.get()
    err, _ = checked(jnp.asarray([1, -2, 3], jnp.int32))
    assert "got min -2 and max 3" in err.get()
    with pytest.raises(TypeError, match="lengths must be an integer array"):
        checked_lengths(jnp.ones((3,), jnp.float32), 4)
    with pytest.raises(
        ValueError, match=re.escape("lengths must lie in [0, T] = [0, 4], got min 0 and max 9")
    ):
        checked_lengths([0, 9], 4)


# ------------------------------------------------------------------ hx


def test_hx_with_wrong_dtype(x):
    params = _params("gru")
    with pytest.raises(
        TypeError,
        match="input and hidden must have the same dtype, found input of dtype "
        "float64 and hidden of dtype float32",
    ):
        jaxseq.gru(params, x, jnp.zeros((1, N, H), jnp.float32))
    with pytest.raises(TypeError, match="hidden must be a floating point array, got dtype int32"):
        jaxseq.gru(params, x, jnp.zeros((1, N, H), jnp.int32))
    lstm = _params("lstm")
    with pytest.raises(TypeError, match=re.escape("hidden[1] must be a floating point array")):
        jaxseq.lstm(lstm, x, (jnp.zeros((1, N, H), jnp.float64), jnp.zeros((1, N, H), jnp.int32)))


def test_hx_with_another_batch(lstm_params, x):
    with pytest.raises(
        ValueError, match=re.escape(f"Expected hidden[0] size (2, {N}, {H}), got [2, {N + 1}, {H}]")
    ):
        jaxseq.lstm(lstm_params, x, (jnp.zeros((2, N + 1, H)), jnp.zeros((2, N, H))))


def test_non_array_inputs(lstm_params):
    with pytest.raises(TypeError, match="LSTM: input must be an array, got list"):
        jaxseq.lstm(lstm_params, [[0.0, 1.0]] * T)
    with pytest.raises(TypeError, match="hidden\\[0\\] must be an array, got list"):
        jaxseq.lstm(lstm_params, jnp.zeros((T, N, I)), ([0.0], jnp.zeros((2, N, H))))


# ------------------------------------------------------------------ parameters of another model


def test_functional_params_of_another_kind(x):
    """GRU parameters given to lstm(): the shapes cannot all fit, and the error says which."""
    gru = _params("gru", hidden=4)  # 12 rows: read by LSTM as 4 gates x 3
    with pytest.raises(ValueError, match=re.escape("LSTM: inconsistent parameters")) as e:
        jaxseq.lstm(gru, x)
    assert "weight_hh_l0: expected (12, 3), got (12, 4)" in str(e.value)


@pytest.mark.parametrize(
    ("torch_kw", "needle"),
    [
        (
            dict(num_layers=2),
            "Unexpected key(s) in state_dict: ['bias_hh_l1', 'bias_ih_l1', 'weight_hh_l1', 'weight_ih_l1']",
        ),
        (
            dict(bidirectional=True),
            "Unexpected key(s) in state_dict: ['bias_hh_l0_reverse', 'bias_ih_l0_reverse', "
            "'weight_hh_l0_reverse', 'weight_ih_l0_reverse']",
        ),
        (dict(proj_size=2), "Unexpected key(s) in state_dict: ['weight_hr_l0']"),
    ],
)
def test_state_dict_of_another_structure(torch_kw, needle):
    jmod = jaxseq.nn.LSTM(I, H, rngs=nnx.Rngs(0))
    sd = torch.nn.LSTM(I, H, **torch_kw).state_dict()
    with pytest.raises(ValueError, match=re.escape(needle)):
        load_torch_state_dict(jmod, sd)


def test_state_dict_with_fewer_layers_or_directions():
    jmod = jaxseq.nn.GRU(I, H, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0))
    with pytest.raises(
        ValueError, match=re.escape("Missing key(s) in state_dict: ['bias_hh_l0_reverse'")
    ):
        load_torch_state_dict(jmod, torch.nn.GRU(I, H, num_layers=2).state_dict())
    with pytest.raises(
        ValueError,
        match=re.escape("Missing key(s) in state_dict: ['bias_hh_l1', 'bias_hh_l1_reverse'"),
    ):
        load_torch_state_dict(jmod, torch.nn.GRU(I, H, bidirectional=True).state_dict())


# --------------------------------------------------------------------------- constructor args
# Each case is checked against torch's own constructor: where torch raises, jaxseq raises
# the same exception type with torch's message (jaxseq may add detail after it); where
# torch accepts a non-bool flag (``bidirectional``), jaxseq refuses it with torch's wording.

CTOR_CASES = [
    ("GRU", (3, 5), {"batch_first": "False"}),
    ("GRU", (3, 5), {"bias": "False"}),
    ("LSTM", (3, 5), {"bias": 1}),
    ("RNN", (3, 5), {"batch_first": 0}),
    ("LSTM", (0, 5), {}),
    ("LSTM", (3, 0), {}),
    ("GRU", (3.0, 5), {}),
    ("GRU", (3, 5), {"num_layers": 0}),
    ("LSTM", (3, 5), {"proj_size": 5}),
    ("LSTM", (3, 5), {"proj_size": -1}),
    ("LSTM", (3, 5), {"num_layers": 2, "dropout": 1.5}),
    ("LSTM", (3, 5), {"num_layers": 2, "dropout": True}),
    ("RNN", (3, 5), {"nonlinearity": "sigmoid"}),
]


@pytest.mark.parametrize("cls, args, kw", CTOR_CASES, ids=[f"{c}-{k}" for c, _, k in CTOR_CASES])
def test_constructor_arguments_are_checked_as_torch_checks_them(cls, args, kw):
    with pytest.raises(Exception) as want:
        getattr(torch.nn, cls)(*args, **kw)
    with pytest.raises(type(want.value)) as got:
        getattr(jaxseq.nn, cls)(*args, **kw, rngs=nnx.Rngs(0))
    assert str(got.value).startswith(str(want.value)), (str(got.value), str(want.value))


@pytest.mark.parametrize("flag", ["bias", "batch_first", "bidirectional"])
def test_truthy_strings_are_not_bools(flag):
    with pytest.raises(TypeError, match=f"{flag} should be of type bool, got: str"):
        jaxseq.nn.GRU(3, 5, **{flag: "False"}, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match=f"{flag} should be of type bool, got: str"):
        jaxseq.nn.MinGRU(3, 5, **{flag: "False"}, rngs=nnx.Rngs(0))


def test_functional_layers_cells_and_init_check_flags(lstm_params, x):
    with pytest.raises(TypeError, match="batch_first should be of type bool, got: str"):
        jaxseq.lstm(lstm_params, x, batch_first="False")
    with pytest.raises(TypeError, match="train should be of type bool, got: int"):
        jaxseq.lstm(lstm_params, x, train=1)
    with pytest.raises(TypeError, match="bias should be of type bool, got: str"):
        jaxseq.init_gru(jax.random.key(0), 3, 5, bias="False")
    with pytest.raises(TypeError, match="bidirectional should be of type bool, got: int"):
        jaxseq.init_min_lstm(jax.random.key(0), 3, 5, bidirectional=1)
    with pytest.raises(TypeError, match="bias should be of type bool, got: str"):
        jaxseq.nn.GRUCell(3, 5, bias="no", rngs=nnx.Rngs(0))
