"""torch ``state_dict`` <-> jaxseq modules: exact round trips and complete error reports."""

from __future__ import annotations

import re

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import jaxseq
from jaxseq.interop import load_torch_state_dict, to_torch_state_dict

I, H = 3, 5
CONFIGS = [  # (jaxseq class, torch class, constructor keyword arguments)
    (jaxseq.nn.LSTM, torch.nn.LSTM, dict(num_layers=2, bidirectional=True, proj_size=2)),
    (jaxseq.nn.GRU, torch.nn.GRU, dict(num_layers=2, bias=False)),
    (jaxseq.nn.RNN, torch.nn.RNN, dict(num_layers=1, bidirectional=True, nonlinearity="relu")),
]


@pytest.mark.parametrize(("jcls", "tcls", "kw"), CONFIGS, ids=["lstm", "gru", "rnn"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip_is_exact(jcls, tcls, kw, dtype):
    """torch -> jaxseq -> torch gives back the very same bits, name for name."""
    torch.manual_seed(0)
    tmod = tcls(I, H, **kw, dtype=getattr(torch, dtype))
    jmod = jcls(I, H, **kw, param_dtype=jnp.dtype(dtype), rngs=nnx.Rngs(0))
    before = {k: np.asarray(v) for k, v in to_torch_state_dict(jmod).items()}
    assert load_torch_state_dict(jmod, tmod.state_dict()) is jmod
    sd = to_torch_state_dict(jmod)
    ref = tmod.state_dict()
    assert list(sd) == list(ref)  # same names, in torch's order
    for k, v in ref.items():
        assert sd[k].dtype == np.dtype(dtype)
        np.testing.assert_array_equal(sd[k], v.numpy(), err_msg=k)
        assert not np.array_equal(sd[k], before[k])  # the load really replaced the values
    # ... and back into a fresh torch module, strictly.
    tmod2 = tcls(I, H, **kw, dtype=getattr(torch, dtype))
    tmod2.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    for k, v in tmod2.state_dict().items():
        assert torch.equal(v, ref[k]), k


def test_loading_casts_to_param_dtype():
    tmod = torch.nn.GRU(I, H, dtype=torch.float64)
    jmod = jaxseq.nn.GRU(I, H, param_dtype=jnp.float32, rngs=nnx.Rngs(0))
    load_torch_state_dict(jmod, tmod.state_dict())
    assert jmod.weight_ih_l0[...].dtype == jnp.float32
    np.testing.assert_array_equal(
        jmod.weight_ih_l0[...], tmod.weight_ih_l0.detach().numpy().astype(np.float32)
    )


def test_mismatch_lists_missing_unexpected_and_every_shape():
    jmod = jaxseq.nn.LSTM(I, H, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0))
    sd = {
        k: v.clone()
        for k, v in torch.nn.LSTM(I, H, num_layers=2, bidirectional=True).state_dict().items()
    }
    del sd["bias_hh_l1"], sd["weight_hh_l0_reverse"]
    sd["weight_hr_l0"] = torch.zeros(2, H)
    sd["bias_ih_l0"] = torch.zeros(4 * H + 1)
    sd["weight_ih_l1_reverse"] = torch.zeros(4 * H, I)
    with pytest.raises(ValueError) as e:
        load_torch_state_dict(jmod, sd)
    msg = str(e.value)
    assert "Missing key(s) in state_dict: ['bias_hh_l1', 'weight_hh_l0_reverse']" in msg
    assert "Unexpected key(s) in state_dict: ['weight_hr_l0']" in msg
    assert f"bias_ih_l0: checkpoint has ({4 * H + 1},), module expects ({4 * H},)" in msg
    assert (
        f"weight_ih_l1_reverse: checkpoint has ({4 * H}, {I}), module expects ({4 * H}, {2 * H})"
        in msg
    )
    # Nothing was loaded: a failed load leaves the module untouched.
    assert not np.array_equal(jmod.weight_ih_l0[...], sd["weight_ih_l0"].numpy())


def test_non_strict_skips_keys_but_not_shapes():
    jmod = jaxseq.nn.GRU(I, H, rngs=nnx.Rngs(0))
    tmod = torch.nn.GRU(I, H)
    sd = dict(tmod.state_dict())
    del sd["bias_hh_l0"]
    sd["extra"] = torch.zeros(1)
    old_bias = np.asarray(jmod.bias_hh_l0[...]).copy()
    load_torch_state_dict(jmod, sd, strict=False)
    np.testing.assert_array_equal(jmod.weight_hh_l0[...], tmod.weight_hh_l0.detach().numpy())
    np.testing.assert_array_equal(jmod.bias_hh_l0[...], old_bias)
    sd["weight_hh_l0"] = torch.zeros(3 * H, H + 1)
    with pytest.raises(
        ValueError, match=re.escape(f"weight_hh_l0: checkpoint has ({3 * H}, {H + 1})")
    ):
        load_torch_state_dict(jmod, sd, strict=False)


def test_loaded_module_matches_torch_forward():
    """A loaded float64 module reproduces torch's outputs and final states to 1e-12."""
    torch.manual_seed(1)
    tmod = torch.nn.LSTM(
        I, H, num_layers=2, bidirectional=True, batch_first=True, dtype=torch.float64
    )
    jmod = jaxseq.nn.LSTM(
        I,
        H,
        num_layers=2,
        bidirectional=True,
        batch_first=True,
        param_dtype=jnp.float64,
        rngs=nnx.Rngs(0),
    )
    load_torch_state_dict(jmod, tmod.state_dict())
    x = torch.randn(2, 4, I, dtype=torch.float64)
    with torch.no_grad():
        t_out, (t_h, t_c) = tmod(x)
    j_out, (j_h, j_c) = jmod(jnp.asarray(x.numpy()))
    for a, b in ((j_out, t_out), (j_h, t_h), (j_c, t_c)):
        np.testing.assert_allclose(a, b.numpy(), rtol=0, atol=1e-12)


def test_state_dict_of_another_kind_is_refused():
    """A GRU checkpoint into an LSTM: every weight has the wrong number of gates."""
    jmod = jaxseq.nn.LSTM(I, H, rngs=nnx.Rngs(0))
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"weight_ih_l0: checkpoint has ({3 * H}, {I}), module expects ({4 * H}, {I})"
        ),
    ):
        load_torch_state_dict(jmod, torch.nn.GRU(I, H).state_dict())


def test_state_dict_type_checked():
    jmod = jaxseq.nn.GRU(I, H, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="state_dict must be a mapping"):
        load_torch_state_dict(jmod, [("weight_ih_l0", np.zeros((3 * H, I)))])
