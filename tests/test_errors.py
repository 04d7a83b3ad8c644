"""Every bad input raises a Python ValueError / TypeError with a torch-like message.

As PyTorch's own RNN tests do, each dimension of the input, of h and of c is perturbed
in turn, and each perturbation must name the expected and the actual size. Checks run
in Python before tracing, so none of these reaches XLA. They run eagerly (shape checks
fail before any scan is built), so the module needs no compilation.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxseq

T, N, I, H, P = 5, 3, 4, 6, 2
L, D = 2, 2


def _params(kind, num_layers=1, dtype=np.float32, **kw):
    """Parameters from NumPy (no per-shape compilation of jax.random), torch's shapes."""
    rng = np.random.default_rng(0)
    shapes = jaxseq.param_shapes(kind, I, H, num_layers, **kw)
    return {k: jnp.asarray(rng.uniform(-0.4, 0.4, s).astype(dtype)) for k, s in shapes.items()}


@pytest.fixture(scope="module")
def lstm_params():
    return _params("lstm", L, np.float64, bidirectional=True, proj_size=P)


@pytest.fixture(scope="module")
def gru_params():
    return _params("gru", L, np.float64, bidirectional=True)


def _x(*shape, dtype=jnp.float64):
    return jnp.zeros(shape, dtype)


# ------------------------------------------------------------------ input


@pytest.mark.parametrize("shape", [(I,), (1, T, N, I)])
def test_wrong_rank(lstm_params, shape):
    msg = f"LSTM: Expected input to be 2D or 3D, got {len(shape)}D instead"
    with pytest.raises(ValueError, match=re.escape(msg)):
        jaxseq.lstm(lstm_params, _x(*shape))


@pytest.mark.parametrize("shape", [(T, N, I + 1), (T, I - 1)])
def test_wrong_input_size(gru_params, shape):
    msg = f"input.size(-1) must be equal to input_size. Expected {I}, got {shape[-1]}"
    with pytest.raises(ValueError, match=re.escape(msg)):
        jaxseq.gru(gru_params, _x(*shape))


def test_integer_input_is_rejected(gru_params):
    with pytest.raises(TypeError, match="input must be a floating point array, got dtype int32"):
        jaxseq.gru(gru_params, jnp.zeros((T, N, I), jnp.int32))


# ------------------------------------------------------------------ hx, h and c in turn

H_SHAPE, C_SHAPE = (L * D, N, P), (L * D, N, H)


def _bump(shape, axis):
    return tuple(s + (1 if a == axis else 0) for a, s in enumerate(shape))


@pytest.mark.parametrize("axis", range(3))
def test_lstm_h0_wrong_shape(lstm_params, axis):
    bad = _bump(H_SHAPE, axis)
    msg = f"Expected hidden[0] size {H_SHAPE}, got {list(bad)}"
    with pytest.raises(ValueError, match=re.escape(msg)):
        jaxseq.lstm(lstm_params, _x(T, N, I), (_x(*bad), _x(*C_SHAPE)))


@pytest.mark.parametrize("axis", range(3))
def test_lstm_c0_wrong_shape(lstm_params, axis):
    bad = _bump(C_SHAPE, axis)
    msg = f"Expected hidden[1] size {C_SHAPE}, got {list(bad)}"
    with pytest.raises(ValueError, match=re.escape(msg)):
        jaxseq.lstm(lstm_params, _x(T, N, I), (_x(*H_SHAPE), _x(*bad)))


def test_lstm_c0_is_not_checked_against_proj_size(lstm_params):
    """c keeps size H under proj_size: giving c0 the projected size is an error."""
    with pytest.raises(
        ValueError, match=re.escape("Expected hidden[1] size (4, 3, 6), got [4, 3, 2]")
    ):
        jaxseq.lstm(lstm_params, _x(T, N, I), (_x(*H_SHAPE), _x(L * D, N, P)))


@pytest.mark.parametrize("axis", range(3))
def test_gru_hx_wrong_shape(gru_params, axis):
    good = (L * D, N, H)
    bad = _bump(good, axis)
    with pytest.raises(
        ValueError, match=re.escape(f"Expected hidden size {good}, got {list(bad)}")
    ):
        jaxseq.gru(gru_params, _x(T, N, I), _x(*bad))


def test_unbatched_hx_must_be_2d(gru_params):
    with pytest.raises(
        ValueError, match=re.escape(f"Expected hidden size {(L * D, H)}, got [4, 1, 6]")
    ):
        jaxseq.gru(gru_params, _x(T, I), _x(L * D, 1, H))


def test_hx_structure(lstm_params, gru_params):
    with pytest.raises(TypeError, match="hx must be a tuple"):
        jaxseq.lstm(lstm_params, _x(T, N, I), _x(*H_SHAPE))
    with pytest.raises(TypeError, match="hx must be a single array"):
        jaxseq.gru(gru_params, _x(T, N, I), (_x(L * D, N, H), _x(L * D, N, H)))


# ------------------------------------------------------------------ lengths


@pytest.mark.parametrize("shape", [(N + 1,), (N - 1,), (N, 1), ()])
def test_lengths_wrong_shape(gru_params, shape):
    with pytest.raises(ValueError, match=re.escape(f"lengths must have shape ({N},)")):
        jaxseq.gru(gru_params, _x(T, N, I), lengths=jnp.ones(shape, jnp.int32))


@pytest.mark.parametrize(
    "lengths", [jnp.ones((N,), jnp.float32), np.ones((N,), np.float64), jnp.ones((N,), bool)]
)
def test_lengths_non_integer_dtype(gru_params, lengths):
    with pytest.raises(
        TypeError, match=f"lengths must be an integer array, got dtype {lengths.dtype}"
    ):
        jaxseq.gru(gru_params, _x(T, N, I), lengths=lengths)


@pytest.mark.parametrize("lengths", [[1, T + 1, 2], [0, -1, T], np.array([T, 2, 7])])
def test_lengths_out_of_range(gru_params, lengths):
    arr = np.asarray(lengths)
    msg = f"lengths must lie in [0, T] = [0, {T}], got min {arr.min()} and max {arr.max()}"
    with pytest.raises(ValueError, match=re.escape(msg)):
        jaxseq.gru(gru_params, _x(T, N, I), lengths=lengths)


def test_lengths_list_of_floats(gru_params):
    with pytest.raises(TypeError, match="lengths must be integers"):
        jaxseq.gru(gru_params, _x(T, N, I), lengths=[1.0, 2.0, 3.0])


# ------------------------------------------------------------------ constructor arguments

RNGS = nnx.Rngs(0)


@pytest.mark.parametrize("cls", [jaxseq.nn.RNN, jaxseq.nn.GRU])
def test_proj_size_on_rnn_or_gru(cls):
    with pytest.raises(
        ValueError, match="proj_size argument is only supported for LSTM, not RNN or GRU"
    ):
        cls(I, H, proj_size=2, rngs=RNGS)


@pytest.mark.parametrize("kind", ["rnn", "gru"])
def test_proj_size_on_rnn_or_gru_functional(kind):
    with pytest.raises(ValueError, match="proj_size argument is only supported for LSTM"):
        jaxseq.param_shapes(kind, I, H, proj_size=2)
    # Parameters carrying a weight_hr_l0 are refused for RNN / GRU too.
    params = _params(kind)
    params["weight_hr_l0"] = jnp.zeros((2, H))
    fn = {"rnn": jaxseq.rnn, "gru": jaxseq.gru}[kind]
    with pytest.raises(ValueError, match="proj_size argument is only supported for LSTM"):
        fn(params, _x(T, N, I, dtype=jnp.float32))


@pytest.mark.parametrize("proj", [H, H + 1])
def test_proj_size_not_below_hidden(proj):
    with pytest.raises(ValueError, match="proj_size has to be smaller than hidden_size"):
        jaxseq.nn.LSTM(I, H, proj_size=proj, rngs=RNGS)
    with pytest.raises(ValueError, match="proj_size has to be smaller than hidden_size"):
        jaxseq.init_lstm(jax.random.key(0), I, H, proj_size=proj)


def test_negative_proj_size():
    with pytest.raises(ValueError, match="proj_size should be a positive integer or zero"):
        jaxseq.nn.LSTM(I, H, proj_size=-1, rngs=RNGS)


def test_unknown_nonlinearity():
    msg = "Unknown nonlinearity 'sigmoid'. Select from 'tanh' or 'relu'."
    with pytest.raises(ValueError, match=re.escape(msg)):
        jaxseq.nn.RNN(I, H, nonlinearity="sigmoid", rngs=RNGS)
    params = _params("rnn")
    with pytest.raises(ValueError, match=re.escape(msg)):
        jaxseq.rnn(params, _x(T, N, I, dtype=jnp.float32), nonlinearity="sigmoid")


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan"), "0.5", True])
def test_dropout_outside_unit_interval(p):
    with pytest.raises(ValueError, match=re.escape("dropout should be a number in range [0, 1]")):
        jaxseq.nn.LSTM(I, H, num_layers=2, dropout=p, rngs=RNGS)
    params = _params("lstm", 2)
    with pytest.raises(ValueError, match=re.escape("dropout should be a number in range [0, 1]")):
        jaxseq.lstm(
            params, _x(T, N, I, dtype=jnp.float32), dropout=p, train=True, key=jax.random.key(1)
        )


@pytest.mark.parametrize(
    ("field", "value", "exc", "msg"),
    [
        ("hidden_size", 0, ValueError, "hidden_size must be greater than zero"),
        ("num_layers", 0, ValueError, "num_layers must be greater than zero"),
        ("hidden_size", 2.0, TypeError, "hidden_size should be of type int, got: float"),
    ],
)
def test_bad_sizes(field, value, exc, msg):
    kw = {"input_size": I, "hidden_size": H, "num_layers": 1, field: value}
    with pytest.raises(exc, match=re.escape(msg)):
        jaxseq.nn.GRU(rngs=RNGS, **kw)


def test_dropout_in_training_needs_a_key():
    params = _params("lstm", 2)
    with pytest.raises(ValueError, match="needs a PRNG key"):
        jaxseq.lstm(params, _x(T, N, I, dtype=jnp.float32), dropout=0.5, train=True)


def test_unknown_impl(gru_params):
    with pytest.raises(ValueError, match="Unknown impl 'cuda'"):
        jaxseq.gru(gru_params, _x(T, N, I), impl="cuda")


def test_return_all_states_is_strict(gru_params, lstm_params):
    with pytest.raises(TypeError, match="return_all_states should be of type bool, got: int"):
        jaxseq.gru(gru_params, _x(T, N, I), return_all_states=1)
    with pytest.raises(ValueError, match="impl='cudnn' cannot return every step's states"):
        jaxseq.lstm(lstm_params, _x(T, N, I), impl="cudnn", return_all_states=True)


def test_episode_states_checks_the_layout():
    from jaxseq.data import episode_states, pack_episodes

    packed = pack_episodes([np.ones((3, 2)), np.ones((2, 2))], max_len=5)
    with pytest.raises(ValueError, match=r"states must be \(T, L\*D, N, size\) with T=5, N=1"):
        episode_states(jnp.zeros((4, 1, 1, 3)), packed)
    with pytest.raises(ValueError, match="L\\*D a multiple of D=2"):
        episode_states(jnp.zeros((5, 1, 1, 3)), packed, bidirectional=True)
