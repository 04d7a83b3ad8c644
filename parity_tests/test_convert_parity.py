"""``jaxseq.interop.from_torch`` / ``to_torch``: configuration and weights, both ways, exactly.

For every supported class: torch module -> jaxseq twin -> torch module gives back the
same class, the same ``repr`` (torch prints the whole configuration), the same mode and
bit-equal weights; the jaxseq twin computes what the torch module computes; and the
other way round, jaxseq module -> torch -> jaxseq gives back the same parameters.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import jaxseq
import torchseq
from jaxseq.interop import from_torch, to_torch, to_torch_state_dict

N, T = 3, 5


def _x(shape, seed=0, dtype=torch.float64):
    return torch.from_numpy(np.random.default_rng(seed).standard_normal(shape)).to(dtype)


def _lengths():
    return torch.tensor([T, 2, 4])


def _tokens(vocab):
    return torch.from_numpy(np.random.default_rng(1).integers(0, vocab, (N, T)))


# name -> (torch module factory, inputs factory). Inputs are torch tensors; the jaxseq twin
# gets the same values as jnp arrays.
CASES = {
    "RNN relu 2-layer bidir": (
        lambda: torch.nn.RNN(3, 4, 2, nonlinearity="relu", bidirectional=True, dropout=0.25),
        lambda: (_x((T, N, 3)),),
    ),
    "LSTM proj batch_first": (
        lambda: torch.nn.LSTM(3, 6, proj_size=2, batch_first=True, bias=False),
        lambda: (_x((N, T, 3)),),
    ),
    "GRU": (lambda: torch.nn.GRU(3, 4), lambda: (_x((T, N, 3)),)),
    "RNNCell relu": (
        lambda: torch.nn.RNNCell(3, 4, nonlinearity="relu"),
        lambda: (_x((N, 3)), _x((N, 4), seed=2)),
    ),
    "LSTMCell no bias": (lambda: torch.nn.LSTMCell(3, 4, bias=False), lambda: (_x((N, 3)),)),
    "GRUCell": (lambda: torch.nn.GRUCell(3, 4), lambda: (_x((3,)),)),
    "Linear": (lambda: torch.nn.Linear(3, 2), lambda: (_x((N, 3)),)),
    "Linear no bias": (lambda: torch.nn.Linear(3, 2, bias=False), lambda: (_x((N, 3)),)),
    "Embedding": (lambda: torch.nn.Embedding(7, 3), lambda: (_tokens(7),)),
    "SequenceClassifier gru bidir": (
        lambda: torchseq.models.SequenceClassifier(
            3, 4, hidden_size=5, cell="gru", num_layers=2, bidirectional=True, dropout=0.1
        ),
        lambda: (_x((N, T, 3)), _lengths()),
    ),
    "SequenceClassifier lstm proj tokens": (
        lambda: torchseq.models.SequenceClassifier(
            3, 2, hidden_size=5, cell="lstm", proj_size=2, vocab_size=9
        ),
        lambda: (_tokens(9), _lengths()),
    ),
    "SequenceClassifier rnn relu": (
        lambda: torchseq.models.SequenceClassifier(
            3, 2, hidden_size=4, cell="rnn", nonlinearity="relu"
        ),
        lambda: (_x((N, T, 3)), _lengths()),
    ),
    "FeedForwardClassifier": (
        lambda: torchseq.models.FeedForwardClassifier(3, 4, max_len=T, hidden_size=6, num_layers=3),
        lambda: (_x((N, T, 3)), _lengths()),
    ),
    "Forecaster": (
        lambda: torchseq.models.Forecaster(2, hidden_size=5, cell="gru", horizon=3, output_size=1),
        lambda: (_x((N, T, 2)), _lengths()),
    ),
    "CharLM": (
        lambda: torchseq.models.CharLM(11, embed_dim=4, hidden_size=6, cell="lstm", num_layers=2),
        lambda: (_tokens(11),),
    ),
}


def _jax_args(args):
    return tuple(jnp.asarray(a.numpy()) for a in args)


def _leaves(out):
    return [
        np.asarray(a.detach().numpy() if hasattr(a, "detach") else a) for a in jax.tree.leaves(out)
    ]


def _torch_leaves(out):
    if isinstance(out, torch.Tensor):
        return [out.detach().numpy()]
    return [leaf for item in out for leaf in _torch_leaves(item)]


def _assert_same_state(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for k in a:
        va, vb = np.asarray(a[k]), np.asarray(b[k])
        assert va.dtype == vb.dtype and va.shape == vb.shape, k
        np.testing.assert_array_equal(va, vb, err_msg=k)


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_round_trip_is_exact(name, dtype):
    make, inputs = CASES[name]
    torch.manual_seed(0)
    tm = make().to(dtype).eval()
    jm = from_torch(tm)
    torch_sd = {k: v.numpy() for k, v in tm.state_dict().items()}
    _assert_same_state(to_torch_state_dict(jm), torch_sd)
    assert all(
        getattr(m, "deterministic", True)
        for _, m in nnx.iter_graph(jm)
        if isinstance(m, nnx.Dropout)
    )

    # The twin computes what the torch module computes.
    args = tuple(a.to(dtype) if a.is_floating_point() else a for a in inputs())
    with torch.no_grad():
        ref = _torch_leaves(tm(*args))
    ours = _leaves(jm(*_jax_args(args)))
    assert len(ours) == len(ref)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)

    # And back: the same class, configuration (torch's repr prints it), mode and weights.
    state_before = torch.random.get_rng_state()
    back = to_torch(jm)
    assert torch.equal(torch.random.get_rng_state(), state_before)  # global RNG untouched
    assert type(back) is type(tm)
    assert repr(back) == repr(tm)
    # NNX Linear/Embed/cells have no mode (nothing they compute depends on it); the rest do.
    if any(hasattr(m, "deterministic") for _, m in nnx.iter_graph(jm)):
        assert back.training is False
    _assert_same_state({k: v.numpy() for k, v in back.state_dict().items()}, torch_sd)


@pytest.mark.parametrize(
    "make",
    [
        lambda r: jaxseq.nn.LSTM(
            3, 4, 2, bidirectional=True, batch_first=True, dropout=0.5, rngs=r
        ),
        lambda r: jaxseq.nn.RNN(3, 4, nonlinearity="relu", rngs=r),
        lambda r: jaxseq.nn.GRUCell(3, 4, rngs=r),
        lambda r: jaxseq.models.CharLM(5, embed_dim=2, hidden_size=3, cell="gru", rngs=r),
        lambda r: jaxseq.models.SequenceClassifier(2, 3, hidden_size=4, cell="rnn", rngs=r),
    ],
    ids=["LSTM", "RNN", "GRUCell", "CharLM", "SequenceClassifier"],
)
def test_jax_to_torch_to_jax_is_exact(make):
    jm = make(nnx.Rngs(3))
    tm = to_torch(jm)
    assert tm.training is True  # jaxseq modules start in training mode, as torch's
    back = from_torch(tm)
    assert type(back) is type(jm)
    _assert_same_state(to_torch_state_dict(back), to_torch_state_dict(jm))
    assert repr(to_torch(back)) == repr(tm)  # the same configuration


def test_bfloat16_round_trip():
    tm = torch.nn.GRU(3, 4).to(torch.bfloat16)
    jm = from_torch(tm)
    assert jm.weight_hh_l0[...].dtype == jnp.bfloat16
    back = to_torch(jm)
    for k, v in tm.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k


class MyLSTM(torch.nn.LSTM):
    pass


@pytest.mark.parametrize(
    "module, name",
    [
        (torch.nn.Conv1d(2, 3, 1), "torch.nn.modules.conv.Conv1d"),
        (torch.nn.Sequential(torch.nn.Linear(2, 2)), "Sequential"),
        (MyLSTM(2, 3), "MyLSTM"),  # a subclass may compute something else
    ],
)
def test_from_torch_unsupported_class(module, name):
    with pytest.raises(TypeError, match=f"from_torch does not support .*{name}") as e:
        from_torch(module)
    assert "torch.nn.LSTM" in str(e.value) and "torchseq.models.CharLM" in str(e.value)


def test_to_torch_unsupported_class():
    with pytest.raises(TypeError, match="to_torch does not support flax.nnx.*Conv") as e:
        to_torch(nnx.Conv(2, 3, kernel_size=(1,), rngs=nnx.Rngs(0)))
    assert "jaxseq.nn.GRU" in str(e.value) and "flax.nnx.Linear" in str(e.value)


def test_bad_arguments():
    with pytest.raises(TypeError, match="expects a torch.nn.Module, got ndarray"):
        from_torch(np.ones(3))
    with pytest.raises(TypeError, match="expects a flax.nnx.Module, got Linear"):
        to_torch(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="rngs must be an nnx.Rngs"):
        from_torch(torch.nn.GRU(2, 2), rngs=0)
    with pytest.raises(ValueError, match="padding_idx=0 has no nnx.Embed counterpart"):
        from_torch(torch.nn.Embedding(4, 2, padding_idx=0))
    with pytest.raises(ValueError, match="mixes parameter dtypes"):
        from_torch(_mixed())


def _mixed():
    m = torch.nn.Linear(2, 2)
    m.bias.data = m.bias.data.double()
    return m


def test_converted_module_does_not_share_memory_with_torch():
    tm = torch.nn.GRU(3, 4).double()
    lin = torch.nn.Linear(3, 2).double()
    jm, jl = from_torch(tm), from_torch(lin)
    before = np.array(jm.weight_hh_l0[...]), np.array(jl.bias[...])
    with torch.no_grad():  # an optimizer step on the torch side, in place
        tm.weight_hh_l0.add_(1.0)
        lin.bias.add_(1.0)
    np.testing.assert_array_equal(jm.weight_hh_l0[...], before[0])
    np.testing.assert_array_equal(jl.bias[...], before[1])


# --------------------------------------------------------------------------- layer options

#: Every :class:`jaxseq.options.LayerOptions` field with a non-default value: the ones that
#: only say how the layer runs convert (and must compute the same function), the
#: regularisers are refused by name.
OPTION_VALUES = {
    "impl": "reference",
    "unroll": 2,
    "remat": 2,
    "chunk": None,  # linear kinds only: covered by the MinGRU case below
    "carry_dtype": jnp.float64,
    "input_dropout": 0.25,
    "output_dropout": 0.25,
    "recurrent_dropout": 0.25,
    "weight_dropout": 0.25,
    "zoneout": 0.25,
}


@pytest.mark.parametrize("option", sorted(OPTION_VALUES))
def test_every_layer_option_converts_or_is_refused_by_name(option):
    from jaxseq.options import LayerOptions
    from jaxseq.regularizers import RATES

    assert set(OPTION_VALUES) == {f for f in LayerOptions().kwargs()}  # no option untested
    value = OPTION_VALUES[option]
    cls, kind_opts = jaxseq.nn.LSTM, {option: value}
    if option == "chunk":
        cls, kind_opts = jaxseq.nn.MinGRU, {"impl": "fused_chunked", "chunk": 2}
    m = cls(3, 4, num_layers=2, param_dtype=jnp.float64, rngs=nnx.Rngs(0), **kind_opts)
    if option in RATES:
        with pytest.raises(ValueError, match=rf"cannot carry the recurrent regularisers {option}="):
            to_torch(m)
        model = jaxseq.models.CharLM(
            7,
            3,
            4,
            rnn_options=LayerOptions(**{option: value}),
            param_dtype=jnp.float64,
            rngs=nnx.Rngs(0),
        )
        with pytest.raises(ValueError, match=rf"{option}={value} \(rnn\)"):  # the path is named
            to_torch(model)
        return
    x = _x((T, N, 3))
    lengths = _lengths()
    for mode in ("train", "eval"):  # no dropout: both modes are deterministic
        getattr(m, mode)()
        t = to_torch(m)
        assert t.training == (mode == "train")
        if isinstance(t, torch.nn.LSTM):
            packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
            want, _ = torch.nn.utils.rnn.pad_packed_sequence(t(packed)[0], total_length=T)
        else:  # torchseq's MinGRU takes lengths
            want, _ = t(x, lengths=lengths)
        got, _ = m(jnp.asarray(x.numpy()), lengths=jnp.asarray(lengths.numpy()))
        np.testing.assert_allclose(np.asarray(got), want.detach().numpy(), rtol=0, atol=1e-12)
        back = from_torch(t)
        again, _ = back(jnp.asarray(x.numpy()), lengths=jnp.asarray(lengths.numpy()))
        np.testing.assert_allclose(np.asarray(again), np.asarray(got), rtol=0, atol=1e-12)
