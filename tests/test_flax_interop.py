"""Flax interop: each Flax recurrent cell against jaxseq on converted weights (float64,
1e-12), exact round trips, the refusals, and the linen stacks in a plain linen training
loop.

The references are Flax's own cells run by Flax's own ``nn.RNN`` / ``nnx.RNN`` (with
``seq_lengths``), and for the training loop the same steps through the functional API.
"""

from __future__ import annotations

import functools

import flax.linen as ln
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _jit import JIT
from flax import nnx
from flax.training import train_state

import jaxseq
from jaxseq.interop import (
    carry_from_flax,
    carry_to_flax,
    flax_cell_kind,
    from_flax_cell,
    to_flax_cell,
)

F64 = jnp.float64
N, T, I, H = 3, 6, 3, 4
LENGTHS = jnp.array([6, 4, 1])
VALID = np.arange(T)[None, :] < np.asarray(LENGTHS)[:, None]  # (N, T)
X = jax.random.normal(jax.random.key(0), (N, T, I), F64)
ATOL = 1e-12

LINEN = [ln.SimpleCell, ln.GRUCell, ln.LSTMCell, ln.OptimizedLSTMCell]
NNX = [nnx.SimpleCell, nnx.GRUCell, nnx.LSTMCell, nnx.OptimizedLSTMCell]
CELLS = [("linen", c) for c in LINEN] + [("nnx", c) for c in NNX]
IDS = [f"{fw}.{c.__name__}" for fw, c in CELLS]


def _random_like(tree, seed):
    """Random normal values with the shapes and dtypes of ``tree``'s leaves (arrays or
    ShapeDtypeStructs); NumPy's generator, so that nothing compiles."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: jnp.asarray(0.5 * rng.standard_normal(x.shape), x.dtype), tree)


def _carry0(kind, seed):
    rng = np.random.default_rng(seed)
    c, h = (jnp.asarray(rng.standard_normal((N, H))) for _ in range(2))
    return (c, h) if kind == "lstm" else h


def _linen_cell(cls, **kw):
    return cls(features=H, param_dtype=F64, dtype=F64, **kw)


def _nnx_cell(cls, **kw):
    """An abstract NNX cell (``nnx.eval_shape``: no initializer runs)."""
    return nnx.eval_shape(lambda: cls(I, H, param_dtype=F64, dtype=F64, rngs=nnx.Rngs(0), **kw))


def _make(fw, cls, seed, **kw):
    """A Flax cell with random float64 weights (biases nonzero too): ``(cell, params)``,
    params None for NNX (the module holds them). Shapes from ``eval_shape``: no init runs."""
    if fw == "linen":
        cell = _linen_cell(cls, **kw)
        shapes = jax.eval_shape(ln.RNN(cell).init, jax.random.key(1), X)
        return cell, _random_like(shapes["params"]["cell"], seed)
    cell = _nnx_cell(cls, **kw)
    nnx.update(cell, _random_like(nnx.state(cell, nnx.Param), seed))
    return cell, None


def _both(fw, cell, params, kind, p, carry0, **kw):
    """One compiled program: Flax's own scan of the cell over X with LENGTHS (``nn.RNN`` /
    ``nnx.RNN``), and jaxseq's stack on ``p`` from the same initial carry. Returns
    ``(flax carry, flax outputs, jaxseq outputs, jaxseq final carry in Flax's layout)``."""
    graphdef, weights = (None, params) if fw == "linen" else nnx.split(cell)

    def run(weights, p, carry0):
        if fw == "linen":
            rnn = ln.RNN(cell, return_carry=True)
            variables = {"params": {"cell": weights}}
            fc, fo = rnn.apply(variables, X, initial_carry=carry0, seq_lengths=LENGTHS)
        else:
            rnn = nnx.RNN(nnx.merge(graphdef, weights), return_carry=True, rngs=False)
            fc, fo = rnn(X, initial_carry=carry0, seq_lengths=LENGTHS)
        hx = carry_from_flax(carry0)
        out, state = jaxseq.run_stack(kind, p, X, hx, LENGTHS, batch_first=True, **kw)
        return fc, fo, out, carry_to_flax(state)[0]

    return JIT(run)(weights, p, carry0)


def _assert_matches(fw, cell, params, kind, p, carry0, **kw):
    flax_carry, flax_out, out, carry = _both(fw, cell, params, kind, p, carry0, **kw)
    np.testing.assert_allclose(out[VALID], flax_out[VALID], rtol=0, atol=ATOL)
    assert float(jnp.abs(out[~VALID]).max()) == 0.0
    assert float(jnp.abs(out[VALID]).max()) > 0.1
    for a, b in zip(jax.tree.leaves(carry), jax.tree.leaves(flax_carry), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=ATOL)


@pytest.mark.parametrize(("fw", "cls"), CELLS, ids=IDS)
def test_from_flax_is_exact_and_round_trips(fw, cls):
    cell, params = _make(fw, cls, 2)
    kind = flax_cell_kind(cell if params is None else params)
    assert kind == {"SimpleCell": "rnn", "GRUCell": "gru"}.get(cls.__name__, "lstm")
    carry0 = _carry0(kind, 3)
    if params is None:
        p = from_flax_cell(cell)
    else:
        p = from_flax_cell({"params": {"cell": params}}, module=cell)
    G = {"rnn": 1, "lstm": 4, "gru": 3}[kind]
    assert {k: v.shape for k, v in p.items()} == {
        "weight_ih_l0": (G * H, I),
        "weight_hh_l0": (G * H, H),
        "bias_ih_l0": (G * H,),
        "bias_hh_l0": (G * H,),
    }
    assert all(v.dtype == F64 for v in p.values())
    _assert_matches(fw, cell, params, kind, p, carry0)

    # Back to Flax: the very same values, leaf for leaf.
    back = to_flax_cell(p, cls)
    if fw == "linen":
        before, after = params, back
    else:
        before, after = nnx.state(cell, nnx.Param), nnx.state(back, nnx.Param)
        assert type(back) is cls
    flat_before = jax.tree_util.tree_flatten_with_path(before)[0]
    flat_after = jax.tree_util.tree_flatten_with_path(after)[0]
    assert [k for k, _ in flat_before] == [k for k, _ in flat_after]
    for (path, a), (_, b) in zip(flat_before, flat_after, strict=True):
        assert a.dtype == b.dtype, path
        np.testing.assert_array_equal(a, b, err_msg=str(path))


@pytest.mark.parametrize(("fw", "cls"), CELLS, ids=IDS)
def test_to_flax_folds_or_refuses_the_biases_it_lacks(fw, cls):
    """jaxseq's torch init (every bias nonzero) into each Flax cell: refused by name, and
    with ``fold_biases=True`` the same function to 1e-12 (NNX's GRU: only with b_hn = 0)."""
    kind = flax_cell_kind(cls)
    p = jaxseq.init_params(jax.random.key(4), kind, I, H, dtype=F64)
    missing = {
        ("rnn", "linen"): r"bias_hh_l0 \(b_hh\)",
        ("rnn", "nnx"): r"bias_hh_l0 \(b_hh\)",
        ("lstm", "linen"): r"bias_ih_l0 \(b_ii, b_if, b_ig, b_io\)",
        ("lstm", "nnx"): r"bias_ih_l0 \(b_ii, b_if, b_ig, b_io\)",
        ("gru", "linen"): r"bias_hh_l0\[0:8\] \(b_hr, b_hz\)",
        ("gru", "nnx"): r"bias_hh_l0\[8:12\] \(b_hn\).*cannot be folded",
    }[kind, fw]
    with pytest.raises(ValueError, match=missing):
        to_flax_cell(p, cls)
    if (kind, fw) == ("gru", "nnx"):
        with pytest.raises(ValueError, match=r"\(b_hn\)"):
            to_flax_cell(p, cls, fold_biases=True)
        p = {**p, "bias_hh_l0": p["bias_hh_l0"].at[2 * H :].set(0.0)}
        with pytest.raises(ValueError, match=r"bias_hh_l0\[0:8\] \(b_hr, b_hz\)"):
            to_flax_cell(p, cls)
    folded = to_flax_cell(p, cls, fold_biases=True)
    cell, params = (_linen_cell(cls), folded) if fw == "linen" else (folded, None)
    _assert_matches(fw, cell, params, kind, p, _carry0(kind, 5))


def test_bidirectional_two_layer_stack_from_four_cells():
    """Four linen LSTM cells (l0, l0 reverse, l1, l1 reverse) as one jaxseq stack, against
    Flax running each direction with nn.RNN (reverse within each row's length)."""
    cell = _linen_cell(ln.LSTMCell)
    rnns = [ln.RNN(cell, return_carry=True, reverse=r, keep_order=True) for r in (False, True)]
    weights, carries = [], []
    for layer, in_size in enumerate((I, 2 * H)):
        for d in range(2):
            x = jax.ShapeDtypeStruct((N, T, in_size), F64)
            shapes = jax.eval_shape(rnns[d].init, jax.random.key(0), x)
            weights.append(_random_like(shapes, 60 + 2 * layer + d))
            carries.append(_carry0("lstm", 70 + 2 * layer + d))

    def run(weights, carries):
        p, finals, inp = {}, [], X
        for layer in range(2):
            outs = []
            for d in range(2):
                k = 2 * layer + d
                carry, out = rnns[d].apply(
                    weights[k], inp, initial_carry=carries[k], seq_lengths=LENGTHS
                )
                p.update(from_flax_cell(weights[k], module=rnns[d], layer=layer, reverse=d == 1))
                finals.append(carry)
                outs.append(out)
            inp = jnp.concatenate(outs, axis=-1)
        out, state = jaxseq.lstm(p, X, carry_from_flax(*carries), LENGTHS, batch_first=True)
        return inp, finals, out, carry_to_flax(state), p

    ref, ref_finals, out, finals, p = JIT(run)(weights, carries)
    assert sorted(p) == sorted(jaxseq.param_shapes("lstm", I, H, 2, bidirectional=True))
    assert out.shape == (N, T, 2 * H)
    np.testing.assert_allclose(out[VALID], ref[VALID], rtol=0, atol=ATOL)
    for got, want in zip(finals, ref_finals, strict=True):
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=ATOL)


def test_relu_simple_cell_maps_onto_the_relu_rnn():
    cell, _ = _make("nnx", nnx.SimpleCell, 7, activation_fn=jax.nn.relu)
    carry0 = _carry0("rnn", 8)
    _assert_matches("nnx", cell, None, "rnn", from_flax_cell(cell), carry0, nonlinearity="relu")


def test_refusals_name_what_cannot_be_carried():
    lstm = jaxseq.init_lstm(jax.random.key(9), I, H, proj_size=2, dtype=F64)
    with pytest.raises(ValueError, match="weight_hr_l0 cannot be carried by linen.LSTMCell"):
        to_flax_cell(lstm, ln.LSTMCell)
    ln_gru = jaxseq.init_params(jax.random.key(9), "layernorm_gru", I, H, dtype=F64)
    with pytest.raises(ValueError, match="ln_.*_l0 cannot be carried by nnx.GRUCell"):
        to_flax_cell(ln_gru, nnx.GRUCell)
    gru = jaxseq.init_gru(jax.random.key(9), I, H, bias=False, dtype=F64)
    with pytest.raises(ValueError, match=r"not \(4\*H, H\).*'lstm'"):
        to_flax_cell(gru, ln.LSTMCell)
    with pytest.raises(ValueError, match="features=5"):
        to_flax_cell(gru, ln.GRUCell(features=5))
    with pytest.raises(ValueError, match="no weight_ih_l1 and weight_hh_l1"):
        to_flax_cell(gru, ln.GRUCell, layer=1)
    # Without biases every Flax bias is zero, an exact map.
    params = to_flax_cell(gru, ln.GRUCell)
    assert float(jnp.abs(params["hn"]["bias"]).max()) == 0.0
    with pytest.raises(TypeError, match="not a supported Flax cell: MGUCell"):
        to_flax_cell(gru, ln.MGUCell)
    with pytest.raises(ValueError, match="residual=True"):
        from_flax_cell(_nnx_cell(nnx.SimpleCell, residual=True))
    with pytest.raises(ValueError, match="gate_fn"):
        from_flax_cell(_nnx_cell(nnx.GRUCell, gate_fn=jax.nn.hard_sigmoid))
    with pytest.raises(TypeError, match="holds no weights"):
        from_flax_cell(_linen_cell(ln.GRUCell))
    linen_lstm = _random_like(
        jax.eval_shape(ln.RNN(_linen_cell(ln.LSTMCell)).init, jax.random.key(0), X), 0
    )
    with pytest.raises(ValueError, match="activation_fn"):
        from_flax_cell(linen_lstm, module=_linen_cell(ln.LSTMCell, activation_fn=jax.nn.relu))
    with pytest.raises(ValueError, match="does not match"):
        from_flax_cell(linen_lstm, module=_linen_cell(ln.GRUCell))


def test_carry_helpers():
    c, h = jnp.arange(6.0).reshape(2, 3), -jnp.arange(6.0).reshape(2, 3)
    h0, c0 = carry_from_flax((c, h), (2 * c, 2 * h))
    np.testing.assert_array_equal(h0, jnp.stack([h, 2 * h]))
    np.testing.assert_array_equal(c0, jnp.stack([c, 2 * c]))
    back = carry_to_flax((h0, c0))
    np.testing.assert_array_equal(back[1][0], 2 * c)
    np.testing.assert_array_equal(back[1][1], 2 * h)
    np.testing.assert_array_equal(carry_from_flax(h, c)[1], c)
    with pytest.raises(ValueError, match="mixed"):
        carry_from_flax((c, h), h)


# ------------------------------------------------------------------- the linen stacks


class Model(ln.Module):
    """A linen sequence model: a jaxseq linen LSTM stack and a Dense head."""

    @ln.compact
    def __call__(self, x, lengths):
        out, _ = jaxseq.linen.LSTM(H, num_layers=2, batch_first=True, param_dtype=F64, name="rnn")(
            x, lengths=lengths
        )
        return ln.Dense(1, param_dtype=F64, name="head")(out)[..., 0]


Y = jnp.sin(jnp.cumsum(X[..., 0], axis=1))


def _masked_mse(pred):
    return jnp.sum(jnp.where(VALID, (pred - Y) ** 2, 0.0)) / float(VALID.sum())


def test_linen_stack_trains_in_a_plain_linen_loop_as_the_functional_api():
    model = Model()
    variables = JIT(model.init)(jax.random.key(10), X, LENGTHS)
    assert set(variables["params"]["rnn"]) == set(jaxseq.param_shapes("lstm", I, H, num_layers=2))
    tx = optax.adam(0.05)

    # linen: TrainState, model.apply, jax.grad.
    state = train_state.TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx)

    @JIT
    def step(state):
        def loss_fn(params):
            return _masked_mse(state.apply_fn({"params": params}, X, LENGTHS))

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        return state.apply_gradients(grads=grads), loss

    # The same model through the functional API, with a plain optax loop.
    def ref_loss(params):
        out, _ = jaxseq.lstm(params["rnn"], X, lengths=LENGTHS, batch_first=True)
        head = params["head"]
        return _masked_mse((out @ head["kernel"])[..., 0] + head["bias"][0])

    @JIT
    def ref_step(params, opt_state):
        loss, grads = jax.value_and_grad(ref_loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    params, opt_state = variables["params"], tx.init(variables["params"])
    losses, ref_losses = [], []
    for _ in range(6):
        with jax.numpy_dtype_promotion("standard"):  # optax's adam: float ** int32 step count
            state, loss = step(state)
            params, opt_state, ref = ref_step(params, opt_state)
        losses.append(float(loss))
        ref_losses.append(float(ref))
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-12, atol=0)
    assert all(b < a for a, b in zip(losses[:-1], losses[1:], strict=True)), losses
    assert losses[-1] < 0.85 * losses[0], losses
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(params), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_linen_stack_passes_state_lengths_resets_and_dropout():
    m = jaxseq.linen.GRU(H, num_layers=2, dropout=0.5, param_dtype=F64)
    x = jnp.swapaxes(X, 0, 1)  # time-major, the default
    variables = JIT(functools.partial(m.init, deterministic=True))(jax.random.key(11), x)
    hx = jax.random.normal(jax.random.key(12), (2, N, H), F64)
    resets = jax.random.bernoulli(jax.random.key(13), 0.3, (T, N))

    @JIT
    def both(variables, hx, resets):
        got = m.apply(variables, x, hx, LENGTHS, resets=resets, deterministic=True)
        ref = jaxseq.gru(variables["params"], x, hx, LENGTHS, resets=resets)
        plain = m.apply(variables, x, deterministic=True)[0], jaxseq.gru(variables["params"], x)[0]
        return got, ref, plain

    (out, h_n), (ref, h_ref), (plain, plain_ref) = both(variables, hx, resets)
    np.testing.assert_allclose(out, ref, rtol=0, atol=ATOL)
    np.testing.assert_allclose(h_n, h_ref, rtol=0, atol=ATOL)
    np.testing.assert_allclose(plain, plain_ref, rtol=0, atol=ATOL)
    assert not np.allclose(out, plain)  # the state, lengths and resets did act
    with pytest.raises(ValueError, match="deterministic"):
        m.apply(variables, x)

    drop = jaxseq.linen.GRU(H, num_layers=2, dropout=0.5, param_dtype=F64, deterministic=False)
    dropped = JIT(lambda key: drop.apply(variables, x, rngs={"dropout": key})[0])
    a, b, c = (dropped(jax.random.key(k)) for k in (14, 14, 15))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert not np.allclose(a, plain)


def test_linen_stack_passes_the_recurrent_regularisers(monkeypatch):
    """The five rates and a key from the "dropout" stream reach run_stack unchanged; the
    result is run_stack's with them, fresh masks per key, and run_stack's evaluation
    (train=False) when deterministic."""
    rates = dict(
        input_dropout=0.2,
        output_dropout=0.3,
        recurrent_dropout=0.25,
        weight_dropout=0.4,
        zoneout=0.1,
    )
    m = jaxseq.linen.LSTM(H, num_layers=2, param_dtype=F64, **rates)
    x = jnp.swapaxes(X, 0, 1)
    variables = m.init(jax.random.key(21), x, deterministic=True)
    seen = []
    real = jaxseq.linen.run_stack

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(jaxseq.linen, "run_stack", spy)
    out, (h_n, c_n) = m.apply(
        variables, x, deterministic=False, rngs={"dropout": jax.random.key(22)}
    )
    kw = seen[-1]
    assert {k: kw[k] for k in rates} == rates and kw["train"] is True and kw["key"] is not None
    ref, (h_ref, c_ref) = real("lstm", variables["params"], x, train=True, key=kw["key"], **rates)
    np.testing.assert_allclose(out, ref, rtol=0, atol=ATOL)
    np.testing.assert_allclose(c_n, c_ref, rtol=0, atol=ATOL)
    other = m.apply(variables, x, deterministic=False, rngs={"dropout": jax.random.key(23)})[0]
    plain = m.apply(variables, x, deterministic=True)[0]
    assert seen[-1]["train"] is False and seen[-1]["key"] is None
    # deterministic: run_stack's evaluation with the rates (zoneout's expectation stays)
    np.testing.assert_allclose(
        plain, real("lstm", variables["params"], x, **rates)[0], rtol=0, atol=ATOL
    )
    assert not np.allclose(out, other) and not np.allclose(out, plain)
    with pytest.raises(ValueError, match="deterministic"):
        m.apply(variables, x)
