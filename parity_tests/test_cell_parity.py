"""Parity grid: ``jaxseq.nn.RNNCell`` / ``LSTMCell`` / ``GRUCell`` against ``torch.nn``'s cells.

Full product: cell (RNNCell tanh, RNNCell relu, LSTMCell, GRUCell) x bias x float64 /
float32 x batched / unbatched x hx given or not. Each case builds the torch cell with
torch's own init, loads its ``state_dict`` into the jaxseq cell with
``jaxseq.interop.load_torch_state_dict``, and compares the new state and every gradient
(each parameter by torch name, the input and the given hx) of ``sum(out * cot)`` under a
random cotangent: ``torch.autograd`` against ``jax.vjp`` through ``nnx.split``/``merge``
under ``jax.jit``. float64 must agree to 1e-12 and float32 to 1e-5 (rtol and atol).

The error messages that torch words in its own checks (wrong input rank, input size,
hidden batch size and hidden size) are held against torch's text too.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import jaxseq
from jaxseq.interop import load_torch_state_dict, to_torch_state_dict

I, H, N = 3, 5, 4
TOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}
TORCH_DTYPE = {np.dtype(np.float64): torch.float64, np.dtype(np.float32): torch.float32}

# case kind -> (torch class, jaxseq class, constructor kwargs)
KINDS = {
    "rnn_tanh": (torch.nn.RNNCell, jaxseq.nn.RNNCell, {"nonlinearity": "tanh"}),
    "rnn_relu": (torch.nn.RNNCell, jaxseq.nn.RNNCell, {"nonlinearity": "relu"}),
    "lstm": (torch.nn.LSTMCell, jaxseq.nn.LSTMCell, {}),
    "gru": (torch.nn.GRUCell, jaxseq.nn.GRUCell, {}),
}
GRID = list(
    itertools.product(KINDS, (True, False), ("float64", "float32"), (True, False), (True, False))
)


def _case_id(case) -> str:
    kind, bias, dtype, batched, hx = case
    return (
        f"{kind}-{'bias' if bias else 'nobias'}-{dtype}-{'batched' if batched else 'unbatched'}"
        f"-{'hx' if hx else 'nohx'}"
    )


@functools.cache
def _vjp_fn(graphdef):
    """``jax.vjp`` of the cell w.r.t. (parameters, x, hx), compiled once per structure."""

    @jax.jit
    def run(state, x, hx, cot):
        def f(state, x, hx):
            return nnx.merge(graphdef, state)(x, hx)

        out, vjp = jax.vjp(f, state, x, hx)
        return out, vjp(cot)

    return run


@pytest.mark.parametrize(
    ("kind", "bias", "dtype", "batched", "hx_given"), GRID, ids=map(_case_id, GRID)
)
def test_cell_parity_with_torch(kind, bias, dtype, batched, hx_given):
    dtype = np.dtype(dtype)
    tol = TOL[dtype]
    tcls, jcls, kw = KINDS[kind]
    is_lstm = kind == "lstm"
    seed = GRID.index((kind, bias, str(dtype), batched, hx_given))
    torch.manual_seed(seed)
    tcell = tcls(I, H, bias=bias, dtype=TORCH_DTYPE[dtype], **kw)
    jcell = jcls(I, H, bias, **kw, param_dtype=jnp.dtype(dtype), rngs=nnx.Rngs(seed))
    load_torch_state_dict(jcell, tcell.state_dict())

    rng = np.random.default_rng(seed)
    bshape = (N,) if batched else ()
    x = rng.standard_normal((*bshape, I)).astype(dtype)
    n_states = 2 if is_lstm else 1
    hs = [(0.5 * rng.standard_normal((*bshape, H))).astype(dtype) for _ in range(n_states)]
    cots = [rng.standard_normal((*bshape, H)).astype(dtype) for _ in range(n_states)]

    # torch
    xt = torch.tensor(x, requires_grad=True)
    ht = [torch.tensor(h, requires_grad=True) for h in hs]
    t_hx = None if not hx_given else (tuple(ht) if is_lstm else ht[0])
    t_out = tcell(xt, t_hx)
    t_outs = list(t_out) if is_lstm else [t_out]
    loss = sum((o * torch.tensor(c)).sum() for o, c in zip(t_outs, cots, strict=True))
    loss.backward()

    # jaxseq
    j_hx = None
    if hx_given:
        j_hx = (jnp.asarray(hs[0]), jnp.asarray(hs[1])) if is_lstm else jnp.asarray(hs[0])
    j_cot = tuple(map(jnp.asarray, cots)) if is_lstm else jnp.asarray(cots[0])
    graphdef, state = nnx.split(jcell)
    out, (g_state, g_x, g_hx) = _vjp_fn(graphdef)(state, jnp.asarray(x), j_hx, j_cot)
    j_outs = list(out) if is_lstm else [out]
    g_params = to_torch_state_dict(nnx.merge(graphdef, g_state))

    pairs = [(f"out[{i}]", j, t) for i, (j, t) in enumerate(zip(j_outs, t_outs, strict=True))]
    pairs.append(("grad x", g_x, xt.grad))
    t_params = dict(tcell.named_parameters())
    assert set(g_params) == set(t_params)
    pairs += [(f"grad {k}", g_params[k], t_params[k].grad) for k in sorted(t_params)]
    if hx_given:
        g_hs = list(g_hx) if is_lstm else [g_hx]
        pairs += [
            (f"grad hx[{i}]", g, t.grad) for i, (g, t) in enumerate(zip(g_hs, ht, strict=True))
        ]
    else:
        assert g_hx is None
    for name, got, want in pairs:
        got, want = np.asarray(got), want.detach().numpy()
        assert got.dtype == dtype, f"{name}: dtype {got.dtype}, expected {dtype}"
        assert got.shape == want.shape, f"{name}: shape {got.shape}, expected {want.shape}"
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=name)


def test_grid_is_the_full_product():
    assert len(GRID) == 4 * 2 * 2 * 2 * 2 == len(set(GRID))


# --------------------------------------------------------------------------- error messages

# (cell kind, x shape, hx shapes or None): inputs that torch refuses with a message of its
# own; jaxseq raises ValueError (torch: ValueError or RuntimeError) with the same text.
TORCH_WORDED = [
    ("rnn_tanh", (2, 2, 3), None),
    ("lstm", (), None),
    ("gru", (2, 5), None),
    ("rnn_relu", (5,), None),
    ("gru", (2, 3), [(3, 5)]),
    ("rnn_tanh", (2, 3), [(2, 6)]),
    ("gru", (3,), [(6,)]),
    ("gru", (2, 3), [(1, 2, 5)]),
    ("lstm", (2, 3), [(3, 5), (2, 5)]),
    ("lstm", (2, 3), [(2, 5), (3, 5)]),
    ("lstm", (2, 3), [(2, 6), (2, 5)]),
    ("lstm", (2, 3), [(2, 5), (2, 6)]),
    ("lstm", (3,), [(6,), (5,)]),
    ("lstm", (2, 3), [(1, 2, 5), (2, 5)]),
    ("lstm", (2, 3), [(2, 5), (1, 2, 5)]),
]


@pytest.mark.parametrize(("kind", "x_shape", "hx_shapes"), TORCH_WORDED)
def test_error_messages_match_torch(kind, x_shape, hx_shapes):
    tcls, jcls, kw = KINDS[kind]
    tcell = tcls(I, H, **kw)
    jcell = jcls(I, H, **kw, rngs=nnx.Rngs(0))
    t_hx = j_hx = None
    if hx_shapes is not None:
        t_states = [torch.ones(s) for s in hx_shapes]
        j_states = [jnp.ones(s, jnp.float32) for s in hx_shapes]
        t_hx = tuple(t_states) if kind == "lstm" else t_states[0]
        j_hx = tuple(j_states) if kind == "lstm" else j_states[0]
    with pytest.raises((ValueError, RuntimeError)) as t_info:
        tcell(torch.ones(x_shape), t_hx)
    with pytest.raises(ValueError) as j_info:
        jcell(jnp.ones(x_shape, jnp.float32), j_hx)
    assert str(j_info.value) == str(t_info.value)
