"""LayerNormLSTM / LayerNormGRU (Ba et al. 2016): jaxseq against torchseq's twins in float64.

One torch ``state_dict`` loaded into both: outputs, final states and the gradients of the
input, hx and every parameter agree to 1e-12, with lengths (0 included), two
bidirectional layers and without bias, for ``impl="fused"`` (the kinds' fused pieces and
custom backward), ``"fused_loop"``, ``"fused_hoisted"`` with ``remat=2`` and
``"reference"``. A NumPy step checks the LN-LSTM formula independently of
both frameworks; modules and checkpoints cross over both ways."""

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
from jaxseq.recurrences.layernorm import layernorm_lstm_step
from torchseq._loop import recurrent_step

T, N, I, H = 6, 4, 3, 5
LENGTHS = np.array([6, 3, 0, 5])
KINDS = ["layernorm_lstm", "layernorm_gru"]
TORCH = {"layernorm_lstm": torchseq.LayerNormLSTM, "layernorm_gru": torchseq.LayerNormGRU}
JAX = {"layernorm_lstm": jaxseq.nn.LayerNormLSTM, "layernorm_gru": jaxseq.nn.LayerNormGRU}
CONFIGS = [
    dict(num_layers=2, bidirectional=True, bias=True),
    dict(num_layers=1, bidirectional=False, bias=False),
]
TOL = dict(rtol=1e-12, atol=1e-12)


def _case(kind, cfg, seed=0):
    """A float64 torch module with every LN gain and bias perturbed (not 1 / 0), inputs,
    hx and random cotangents."""
    torch.manual_seed(seed)
    m = TORCH[kind](I, H, dtype=torch.float64, **cfg)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.startswith("ln_"):
                p.add_(0.3 * torch.randn_like(p))
    rng = np.random.default_rng(seed)
    D = 2 if cfg["bidirectional"] else 1
    S = 2 if kind == "layernorm_lstm" else 1
    x = rng.normal(size=(T, N, I))
    hx = rng.normal(size=(S, cfg["num_layers"] * D, N, H))
    r_out = rng.normal(size=(T, N, D * H))
    r_h = rng.normal(size=hx.shape)
    return m, x, hx, r_out, r_h


def _states(kind, hx):
    return tuple(hx) if kind == "layernorm_lstm" else hx[0]


def _torch_run(kind, m, x, hx, r_out, r_h):
    m.zero_grad()
    xt = torch.tensor(x, requires_grad=True)
    ht = torch.tensor(hx, requires_grad=True)
    out, fin = m(xt, _states(kind, ht), torch.tensor(LENGTHS))
    fin = torch.stack(fin) if kind == "layernorm_lstm" else fin[None]
    loss = (out * torch.tensor(r_out)).sum() + (fin * torch.tensor(r_h)).sum()
    loss.backward()
    grads = {k: p.grad.numpy().copy() for k, p in m.named_parameters()}
    assert xt.grad is not None and ht.grad is not None
    return out.detach().numpy(), fin.detach().numpy(), xt.grad.numpy(), ht.grad.numpy(), grads


#: impl -> run_stack options: the fused path with either projection and with remat, and
#: the reference scan.
IMPLS = {
    "fused": dict(impl="fused"),
    "fused_loop": dict(impl="fused_loop"),
    "fused_hoisted-remat2": dict(impl="fused_hoisted", remat=2),
    "reference": dict(impl="reference"),
}


@functools.cache
def _jax_grad(kind, impl, cfg_index):
    def loss(p, x, hx, lengths, r_out, r_h):
        out, fin = jaxseq.run_stack(kind, p, x, _states(kind, hx), lengths, **IMPLS[impl])
        fin = jnp.stack(fin) if kind == "layernorm_lstm" else fin[None]
        return jnp.sum(out * r_out) + jnp.sum(fin * r_h), (out, fin)

    return jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))


#: "fused" and "reference" on both configurations, the other two on one each.
CASES = [(impl, c) for impl in ("fused", "reference") for c in (0, 1)]
CASES += [("fused_loop", 0), ("fused_hoisted-remat2", 1)]


@pytest.mark.parametrize("impl, cfg_index", CASES, ids=[f"{i}-cfg{c}" for i, c in CASES])
@pytest.mark.parametrize("kind", KINDS)
def test_jax_equals_torch(kind, cfg_index, impl):
    cfg = CONFIGS[cfg_index]
    m, x, hx, r_out, r_h = _case(kind, cfg, seed=cfg_index)
    out_t, fin_t, gx_t, ghx_t, gp_t = _torch_run(kind, m, x, hx, r_out, r_h)
    jm = JAX[kind](I, H, param_dtype=jnp.float64, rngs=nnx.Rngs(0), **cfg)
    jaxseq.interop.load_torch_state_dict(jm, m.state_dict())
    params = jm.params_dict()
    (gp, gx, ghx), (out, fin) = _jax_grad(kind, impl, cfg_index)(
        params, jnp.asarray(x), jnp.asarray(hx), jnp.asarray(LENGTHS), r_out, r_h
    )
    np.testing.assert_allclose(out, out_t, **TOL)
    np.testing.assert_allclose(fin, fin_t, **TOL)
    np.testing.assert_allclose(gx, gx_t, **TOL)
    np.testing.assert_allclose(ghx, ghx_t, **TOL)
    assert sorted(gp) == sorted(gp_t)
    for k in gp:
        np.testing.assert_allclose(gp[k], gp_t[k], err_msg=k, **TOL)
    np.testing.assert_array_equal(out[:, 2], 0.0)  # length 0: zero output, h_n = h0
    np.testing.assert_array_equal(fin[:, :, 2], hx[:, :, 2])
    np.testing.assert_array_equal(out[3:, 1], 0.0)


def test_numpy_lstm_step():
    """One LN-LSTM step in plain NumPy (float64), written from the formula."""
    rng = np.random.default_rng(7)
    nH = 3
    p = {
        "weight_hh": rng.normal(size=(4 * nH, nH)),
        "bias_hh": rng.normal(size=4 * nH),
        "ln_ih_weight": rng.normal(size=4 * nH),
        "ln_ih_bias": rng.normal(size=4 * nH),
        "ln_hh_weight": rng.normal(size=4 * nH),
        "ln_hh_bias": rng.normal(size=4 * nH),
        "ln_c_weight": rng.normal(size=nH),
        "ln_c_bias": rng.normal(size=nH),
    }
    h, c, gx = rng.normal(size=(2, nH)), rng.normal(size=(2, nH)), rng.normal(size=(2, 4 * nH))

    def ln(v, w, b):  # per block of nH units: mean, biased variance, eps 1e-5
        blocks = v.reshape(v.shape[0], -1, nH)
        mu = blocks.mean(-1, keepdims=True)
        var = ((blocks - mu) ** 2).mean(-1, keepdims=True)
        return ((blocks - mu) / np.sqrt(var + 1e-5)).reshape(v.shape) * w + b

    def sig(v):
        return 1.0 / (1.0 + np.exp(-v))

    gates = ln(gx, p["ln_ih_weight"], p["ln_ih_bias"])
    gates = gates + ln(h @ p["weight_hh"].T + p["bias_hh"], p["ln_hh_weight"], p["ln_hh_bias"])
    i, f, g, o = np.split(gates, 4, axis=-1)
    c_ref = sig(f) * c + sig(i) * np.tanh(g)
    h_ref = sig(o) * np.tanh(ln(c_ref, p["ln_c_weight"], p["ln_c_bias"]))

    jp = {k: jnp.asarray(v) for k, v in p.items()}
    (h_j, c_j), y = layernorm_lstm_step(jp, (jnp.asarray(h), jnp.asarray(c)), jnp.asarray(gx))
    np.testing.assert_allclose(c_j, c_ref, **TOL)
    np.testing.assert_allclose(h_j, h_ref, **TOL)
    np.testing.assert_array_equal(y, h_j)

    tm = torchseq.LayerNormLSTM(1, nH, dtype=torch.float64)  # the twin's step, too
    tp = {k: torch.tensor(v) for k, v in p.items()}
    with torch.no_grad():
        # the twin's step takes LN_ih(gx) (applied over the whole sequence before the loop)
        gx_n = torch.tensor(ln(gx, p["ln_ih_weight"], p["ln_ih_bias"]))
        step = recurrent_step(tm.step_kind(), tp, gx_n[None])  # one step of the masked loop
        h_t, c_t = step(0, (torch.tensor(h), torch.tensor(c)))
    np.testing.assert_allclose(c_t.numpy(), c_ref, **TOL)
    np.testing.assert_allclose(h_t.numpy(), h_ref, **TOL)


def test_init_and_names():
    jm = jaxseq.nn.LayerNormLSTM(I, H, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0))
    tm = torchseq.LayerNormLSTM(I, H, num_layers=2, bidirectional=True)
    sd = jaxseq.interop.to_torch_state_dict(jm)
    assert list(sd) == list(tm.state_dict())
    assert {k: v.shape for k, v in sd.items()} == {
        k: tuple(v.shape) for k, v in tm.state_dict().items()
    }
    np.testing.assert_array_equal(sd["ln_c_weight_l1_reverse"], 1.0)
    np.testing.assert_array_equal(sd["ln_hh_bias_l0"], 0.0)
    bound = 1 / np.sqrt(H)
    assert 0 < np.abs(sd["weight_hh_l1"]).max() <= bound
    assert jaxseq.param_shapes("layernorm_gru", I, H, bias=False) == {
        k: tuple(v.shape) for k, v in torchseq.LayerNormGRU(I, H, bias=False).state_dict().items()
    }
    with pytest.raises(ValueError, match="remat"):
        jaxseq.run_stack(
            "layernorm_lstm", jm.params_dict(), jnp.ones((T, N, I)), impl="unfused", remat=2
        )


@pytest.mark.parametrize("kind", KINDS)
def test_from_torch_to_torch_round_trip(kind):
    tm = TORCH[kind](I, H, num_layers=2, batch_first=True, dropout=0.25).eval()
    jm = jaxseq.interop.from_torch(tm)
    assert type(jm) is JAX[kind] and jm.deterministic and jm.batch_first and jm.num_layers == 2
    back = jaxseq.interop.to_torch(jm)
    assert type(back) is TORCH[kind] and not back.training and back.dropout == 0.25
    for k, v in tm.state_dict().items():
        assert torch.equal(back.state_dict()[k], v)
    x = np.random.default_rng(1).normal(size=(N, T, I)).astype(np.float32)
    with torch.no_grad():
        ref = tm(torch.tensor(x), lengths=torch.tensor(LENGTHS))[0].numpy()
    np.testing.assert_allclose(jm(jnp.asarray(x), lengths=LENGTHS)[0], ref, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_checkpoints_cross_load_both_ways(kind):
    cfg = dict(num_layers=2, bidirectional=True)
    torch.manual_seed(3)
    tm = TORCH[kind](I, H, **cfg)
    with torch.no_grad():
        for name, p in tm.named_parameters():
            if name.startswith("ln_"):
                p.add_(0.3 * torch.randn_like(p))
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


@pytest.mark.parametrize("kind", KINDS)
def test_cells_step_the_layer(kind):
    """``LayerNorm*Cell.from_layer`` stepped layer by layer reproduces a 2-layer stack,
    and a fresh cell starts with unit gains and zero layer-norm biases."""
    layer_cls = JAX[kind]
    cell_cls = jaxseq.nn.module_class(kind, cell=True)
    m = layer_cls(I, H, num_layers=2, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(T, N, I)))
    out, fin = m(x)
    cells = [cell_cls.from_layer(m, layer=k) for k in range(2)]
    states = [None, None]
    ys = []
    for t in range(T):
        inp = x[t]
        for k, cell in enumerate(cells):
            states[k] = cell(inp, states[k])
            inp = states[k][0] if kind == "layernorm_lstm" else states[k]
        ys.append(inp)
    np.testing.assert_allclose(jnp.stack(ys), out, **TOL)
    fresh = cell_cls(I, H, rngs=nnx.Rngs(0))
    assert all(
        float(getattr(fresh, n)[...].min()) == 1.0
        for n in fresh._param_names
        if n.endswith("weight") and n.startswith("ln_")
    )
    assert all(
        float(abs(getattr(fresh, n)[...]).max()) == 0.0
        for n in fresh._param_names
        if n.endswith("bias") and n.startswith("ln_")
    )


@pytest.mark.parametrize("kind", KINDS)
def test_cells_cross_over_from_torch_and_back(kind):
    torch_cell_cls = getattr(torchseq, TORCH[kind].__name__ + "Cell")
    torch.manual_seed(0)
    tc = torch_cell_cls(I, H, dtype=torch.float64)
    with torch.no_grad():
        for name, p in tc.named_parameters():
            if name.startswith("ln_"):
                p.add_(0.3 * torch.randn_like(p))
    jc = jaxseq.interop.from_torch(tc)
    assert type(jc) is jaxseq.nn.module_class(kind, cell=True)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, I))
    hx = tuple(rng.normal(size=(N, H)) for _ in range(2 if kind == "layernorm_lstm" else 1))
    thx = tuple(torch.tensor(h) for h in hx)
    with torch.no_grad():
        ref = tc(torch.tensor(x), thx if len(thx) == 2 else thx[0])
    out = jc(
        jnp.asarray(x), tuple(jnp.asarray(h) for h in hx) if len(hx) == 2 else jnp.asarray(hx[0])
    )
    for a, b in zip(
        jax.tree.leaves(out),
        [r.numpy() for r in (ref if isinstance(ref, tuple) else (ref,))],
        strict=True,
    ):
        np.testing.assert_allclose(a, b, **TOL)
    back = jaxseq.interop.to_torch(jc)
    assert type(back) is torch_cell_cls
    for k, v in tc.state_dict().items():
        assert torch.equal(back.state_dict()[k], v)
