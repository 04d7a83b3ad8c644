"""minGRU / minLSTM (issue #18): jaxseq against torchseq's twins in float64.

The sequential jaxseq stack equals torchseq's sequential loop to 1e-12 (outputs, h_n and
the gradients of the inputs, hx and every weight), with lengths (0 included), two
bidirectional layers and without bias; torchseq's parallel (doubling) scan equals its
loop; checkpoints and whole modules cross over both ways."""

from __future__ import annotations

import functools
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import jaxseq
import jaxseq.interop
import torchseq
import torchseq.checkpoint

T, N, I, H = 7, 4, 3, 5
LENGTHS = np.array([7, 3, 0, 5])
TORCH = {"min_gru": torchseq.MinGRU, "min_lstm": torchseq.MinLSTM}
JAX = {"min_gru": jaxseq.nn.MinGRU, "min_lstm": jaxseq.nn.MinLSTM}
RUN = {"min_gru": jaxseq.min_gru, "min_lstm": jaxseq.min_lstm}
CONFIGS = [
    dict(num_layers=2, bidirectional=True, bias=True),
    dict(num_layers=1, bidirectional=False, bias=False),
]


def _case(kind, cfg, seed=0):
    torch.manual_seed(seed)
    m = TORCH[kind](I, H, dtype=torch.float64, **cfg)
    rng = np.random.default_rng(seed)
    D = 2 if cfg["bidirectional"] else 1
    x = rng.normal(size=(T, N, I))
    hx = rng.normal(size=(cfg["num_layers"] * D, N, H))
    r_out = rng.normal(size=(T, N, D * H))
    r_h = rng.normal(size=hx.shape)
    return m, x, hx, r_out, r_h


def _torch_run(m, x, hx, r_out, r_h, mode):
    m.mode = mode
    m.zero_grad()
    xt = torch.tensor(x, requires_grad=True)
    ht = torch.tensor(hx, requires_grad=True)
    out, h_n = m(xt, ht, torch.tensor(LENGTHS))
    loss = (out * torch.tensor(r_out)).sum() + (h_n * torch.tensor(r_h)).sum()
    loss.backward()
    grads = {k: p.grad.numpy().copy() for k, p in m.named_parameters()}
    assert xt.grad is not None and ht.grad is not None
    return out.detach().numpy(), h_n.detach().numpy(), xt.grad.numpy(), ht.grad.numpy(), grads


@functools.cache
def _jax_grad(kind, mode):
    def loss(p, x, hx, lengths, r_out, r_h):
        out, h_n = RUN[kind](
            p, x, hx, lengths, impl={"sequential": "unfused"}.get(mode, "fused_" + mode)
        )
        return jnp.sum(out * r_out) + jnp.sum(h_n * r_h), (out, h_n)

    return jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))


@pytest.mark.parametrize("kind", ["min_gru", "min_lstm"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=["2layer-bi", "1layer-nobias"])
def test_jax_sequential_equals_torch_sequential(kind, cfg):
    m, x, hx, r_out, r_h = _case(kind, cfg)
    out_t, h_t, gx_t, ghx_t, gp_t = _torch_run(m, x, hx, r_out, r_h, "sequential")
    params = {k: jnp.asarray(v.detach().numpy()) for k, v in m.state_dict().items()}
    (gp, gx, ghx), (out, h_n) = _jax_grad(kind, "sequential")(
        params, jnp.asarray(x), jnp.asarray(hx), jnp.asarray(LENGTHS), r_out, r_h
    )
    tol = dict(rtol=0, atol=1e-12)
    np.testing.assert_allclose(out, out_t, **tol)
    np.testing.assert_allclose(h_n, h_t, **tol)
    np.testing.assert_allclose(gx, gx_t, **tol)
    np.testing.assert_allclose(ghx, ghx_t, **tol)
    assert sorted(gp) == sorted(gp_t)
    for k in gp:
        np.testing.assert_allclose(gp[k], gp_t[k], err_msg=k, **tol)
    np.testing.assert_array_equal(out[:, 2], 0.0)
    np.testing.assert_array_equal(h_n[:, 2], hx[:, 2])


@pytest.mark.parametrize("kind", ["min_gru", "min_lstm"])
def test_torch_parallel_equals_torch_sequential(kind):
    m, x, hx, r_out, r_h = _case(kind, CONFIGS[0], seed=1)
    ref = _torch_run(m, x, hx, r_out, r_h, "sequential")
    got = _torch_run(m, x, hx, r_out, r_h, "parallel")
    for a, b in zip(got[:4], ref[:4], strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    for k in ref[4]:
        np.testing.assert_allclose(got[4][k], ref[4][k], rtol=0, atol=1e-12, err_msg=k)
    assert float(np.abs(got[0][3:, 1]).max()) == 0.0


def test_torch_parallel_long_sequence_is_stable():
    """The doubling scan has no division or logarithm: fine at T = 3000 in float32."""
    torch.manual_seed(0)
    m = torchseq.MinLSTM(4, 8)
    x = torch.randn(3000, 2, 4)
    with torch.no_grad():
        ref = m(x)
        m.mode = "parallel"
        got = m(x)
    for a, b in zip(got, ref, strict=True):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_jax_parallel_equals_torch_batch_first_unbatched():
    torch.manual_seed(2)
    tm = torchseq.MinGRU(I, H, batch_first=True, bidirectional=True, dtype=torch.float64)
    jm = jaxseq.nn.MinGRU(
        I, H, batch_first=True, bidirectional=True, impl="fused_parallel",
        param_dtype=jnp.float64, rngs=nnx.Rngs(0),
    )  # fmt: skip
    jaxseq.interop.load_torch_state_dict(jm, tm.state_dict())
    x = np.random.default_rng(2).normal(size=(N, T, I))
    with torch.no_grad():
        out_t, h_t = tm(torch.tensor(x), lengths=torch.tensor(LENGTHS))
        out_u, h_u = tm(torch.tensor(x[0]))
    out, h_n = jm(jnp.asarray(x), lengths=jnp.asarray(LENGTHS))
    np.testing.assert_allclose(out, out_t.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(h_n, h_t.numpy(), rtol=0, atol=1e-12)
    o, h = jm(jnp.asarray(x[0]))
    np.testing.assert_allclose(o, out_u.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(h, h_u.numpy(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["min_gru", "min_lstm"])
def test_checkpoints_cross_load_both_ways(kind):
    cfg = dict(num_layers=2, bidirectional=True)
    torch.manual_seed(3)
    tm = TORCH[kind](I, H, **cfg)
    jm = JAX[kind](I, H, **cfg, rngs=nnx.Rngs(5))
    x = np.random.default_rng(3).normal(size=(T, N, I)).astype(np.float32)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "torch.safetensors")
        torchseq.checkpoint.save(tm, path)
        jaxseq.interop.load(jm, path)
        with torch.no_grad():
            ref = tm(torch.tensor(x), lengths=torch.tensor(LENGTHS))[0].numpy()
        np.testing.assert_allclose(jm(jnp.asarray(x), lengths=LENGTHS)[0], ref, atol=1e-5)

        jm2 = JAX[kind](I, H, **cfg, rngs=nnx.Rngs(6))
        path2 = os.path.join(d, "jax.safetensors")
        jaxseq.interop.save(jm2, path2)
        tm2 = torchseq.checkpoint.load(TORCH[kind](I, H, **cfg), path2)
        for k, v in jaxseq.interop.to_torch_state_dict(jm2).items():
            np.testing.assert_array_equal(tm2.state_dict()[k].numpy(), v)


@pytest.mark.parametrize("kind", ["min_gru", "min_lstm"])
def test_from_torch_to_torch_round_trip(kind):
    tm = TORCH[kind](I, H, num_layers=2, batch_first=True, dropout=0.25).eval()
    jm = jaxseq.interop.from_torch(tm)
    assert type(jm) is JAX[kind] and jm.deterministic and jm.batch_first and jm.num_layers == 2
    back = jaxseq.interop.to_torch(jm)
    assert type(back) is TORCH[kind] and not back.training and back.dropout == 0.25
    for k, v in tm.state_dict().items():
        assert torch.equal(back.state_dict()[k], v)


@pytest.mark.parametrize("cell", ["min_gru", "min_lstm"])
def test_model_zoo_classifier_twins(cell):
    """``SequenceClassifier(cell="min_gru")``: torchseq model -> from_torch -> same logits."""
    import torchseq.models

    torch.manual_seed(4)
    tm = torchseq.models.SequenceClassifier(
        I, 4, hidden_size=H, cell=cell, num_layers=2, bidirectional=True, dropout=0.1
    ).eval()
    jm = jaxseq.interop.from_torch(tm)
    assert type(jm.rnn) is JAX[cell] and jm.cell == cell
    x = np.random.default_rng(4).normal(size=(N, T, I)).astype(np.float32)
    with torch.no_grad():
        ref = tm(torch.tensor(x), torch.tensor(LENGTHS)).numpy()
    np.testing.assert_allclose(jm(jnp.asarray(x), jnp.asarray(LENGTHS)), ref, rtol=1e-5, atol=1e-5)
    back = jaxseq.interop.to_torch(jm)
    assert type(back.rnn) is TORCH[cell]
