"""The NNX modules: train()/eval() dropout, torch parity in eval, split/merge under jit/grad."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import jaxseq
from jaxseq.interop import load_torch_state_dict, to_torch_state_dict

I, H = 3, 4


def test_modules_start_in_training_mode_and_toggle():
    m = jaxseq.nn.LSTM(I, H, num_layers=2, dropout=0.5, rngs=nnx.Rngs(0))
    assert m.deterministic is False  # as torch: modules start in training mode
    m.eval()
    assert m.deterministic is True
    m.train()
    assert m.deterministic is False


def test_eval_is_deterministic_and_equals_torch_eval():
    torch.manual_seed(0)
    tmod = torch.nn.LSTM(I, H, num_layers=3, dropout=0.5, bidirectional=True, dtype=torch.float64)
    jmod = jaxseq.nn.LSTM(
        I,
        H,
        num_layers=3,
        dropout=0.5,
        bidirectional=True,
        param_dtype=jnp.float64,
        rngs=nnx.Rngs(0),
    )
    load_torch_state_dict(jmod, tmod.state_dict())
    tmod.eval()
    jmod.eval()
    x = np.random.default_rng(0).standard_normal((5, 2, I))
    with torch.no_grad():
        t_out, (t_h, t_c) = tmod(torch.from_numpy(x))
    a = jmod(jnp.asarray(x))
    b = jmod(jnp.asarray(x))
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(u, v)
    out, (h_n, c_n) = a
    for got, want in ((out, t_out), (h_n, t_h), (c_n, t_c)):
        np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-12)


def _dropout_probe(p: float, T: int = 20, N: int = 8, Hp: int = 16):
    """A 2-layer ReLU RNN whose second layer is the identity on its (dropped-out) input.

    Layer 0: ``out0 = relu(W x + b) > 0`` (positive weights, inputs and bias, no recurrence).
    Layer 1: ``W_ih = I``, everything else 0, so ``out1 = relu(dropout(out0)) = dropout(out0)``.
    """
    m = jaxseq.nn.RNN(
        2, Hp, num_layers=2, nonlinearity="relu", dropout=p, rngs=nnx.Rngs(0, dropout=1)
    )
    rng = np.random.default_rng(0)
    m.weight_ih_l0[...] = jnp.asarray(rng.uniform(0.1, 1.0, (Hp, 2)), jnp.float32)
    m.weight_hh_l0[...] = jnp.zeros((Hp, Hp), jnp.float32)
    m.bias_ih_l0[...] = jnp.full((Hp,), 0.1, jnp.float32)
    m.bias_hh_l0[...] = jnp.zeros((Hp,), jnp.float32)
    m.weight_ih_l1[...] = jnp.eye(Hp, dtype=jnp.float32)
    m.weight_hh_l1[...] = jnp.zeros((Hp, Hp), jnp.float32)
    m.bias_ih_l1[...] = jnp.zeros((Hp,), jnp.float32)
    m.bias_hh_l1[...] = jnp.zeros((Hp,), jnp.float32)
    x = jnp.asarray(rng.uniform(0.0, 1.0, (T, N, 2)), jnp.float32)
    return m, x


@pytest.mark.parametrize("p", [0.25, 0.6])
def test_train_dropout_changes_outputs_with_inverted_scaling(p):
    m, x = _dropout_probe(p)
    m.eval()
    clean = np.asarray(m(x)[0])
    assert (clean > 0).all()
    m.train()
    a, b = np.asarray(m(x)[0]), np.asarray(m(x)[0])
    assert not np.array_equal(a, b)  # a fresh mask on every call
    for out in (a, b):
        kept = out != 0
        # Kept units are scaled by 1 / (1 - p) (inverted dropout, as torch).
        np.testing.assert_allclose(out[kept], clean[kept] / (1 - p), rtol=1e-6)
        # The dropped fraction is p within 5 binomial standard deviations.
        sigma = np.sqrt(p * (1 - p) / out.size)
        assert abs((~kept).mean() - p) < 5 * sigma
    # Train-mode mean over many masks is the eval output (unbiased): 2 masks are noisy,
    # so check the average ratio over all units instead.
    ratio = (a + b).sum() / (2 * clean.sum())
    assert abs(ratio - 1) < 0.1


def test_dropout_one_zeroes_everything_but_the_last_layer_input():
    m, x = _dropout_probe(1.0)
    m.train()
    np.testing.assert_array_equal(m(x)[0], 0.0)


def test_single_layer_has_no_dropout():
    """torch applies dropout between layers only: one layer ignores it."""
    m = jaxseq.nn.GRU(I, H, num_layers=1, dropout=0.9, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(1).standard_normal((4, 2, I)), jnp.float32)
    a = m(x)
    m.eval()
    b = m(x)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(u, v)


def test_split_merge_under_jit_and_grad_converts_to_torch():
    """nnx.split / merge inside jax.jit(jax.grad(...)); the gradient module converts with
    to_torch_state_dict and equals torch's .grad name for name."""
    torch.manual_seed(2)
    kw = dict(num_layers=2, bidirectional=True, proj_size=2, batch_first=True)
    tmod = torch.nn.LSTM(I, H, **kw, dtype=torch.float64)
    jmod = jaxseq.nn.LSTM(I, H, **kw, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    load_torch_state_dict(jmod, tmod.state_dict())
    jmod.eval()
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 5, I))
    lengths = np.array([5, 2, 4])
    cot = rng.standard_normal((3, 5, 4))

    graphdef, params, rest = nnx.split(jmod, nnx.Param, ...)

    @jax.jit
    def loss(params, x, lengths):
        model = nnx.merge(graphdef, params, rest)
        out, _ = model(x, lengths=lengths)
        return jnp.sum(out * jnp.asarray(cot))

    grads = jax.grad(loss)(params, jnp.asarray(x), jnp.asarray(lengths))
    grad_sd = to_torch_state_dict(nnx.merge(graphdef, grads, rest))

    xt = torch.from_numpy(x)
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        xt, torch.from_numpy(lengths), batch_first=True, enforce_sorted=False
    )
    out_p, _ = tmod(packed)
    out_t, _ = torch.nn.utils.rnn.pad_packed_sequence(out_p, batch_first=True, total_length=5)
    (out_t * torch.from_numpy(cot)).sum().backward()
    assert list(grad_sd) == [k for k, _ in tmod.named_parameters()]
    for k, p in tmod.named_parameters():
        np.testing.assert_allclose(grad_sd[k], p.grad.numpy(), rtol=0, atol=1e-12, err_msg=k)
    # The original module is untouched by the gradient merge.
    np.testing.assert_array_equal(jmod.weight_ih_l0[...], tmod.weight_ih_l0.detach().numpy())


def test_module_equals_functional_call():
    """The module adds no logic: it is the functional stack on its params_dict()."""
    m = jaxseq.nn.GRU(I, H, num_layers=2, batch_first=True, rngs=nnx.Rngs(0))
    m.eval()
    x = jnp.asarray(np.random.default_rng(4).standard_normal((2, 5, I)), jnp.float32)
    lengths = jnp.asarray([5, 0], jnp.int32)
    a = m(x, lengths=lengths)
    b = jaxseq.gru(m.params_dict(), x, None, lengths, batch_first=True)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(u, v)
