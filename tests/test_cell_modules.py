"""The single-step NNX cells ``jaxseq.nn.RNNCell`` / ``LSTMCell`` / ``GRUCell``, without torch.

Values are held against a float64 reference written here from the equations (NumPy for
values, the same code on ``jax.numpy`` for gradients), not against the library's own
cells. Also: unbatched input equals row 0 of a batch, ``hx=None`` equals zeros, the
cells under ``jax.jit`` (``nnx.split``/``merge``) and ``jax.grad``, dtypes, every error
message, ``from_layer`` and the ``state_dict`` round trips of :mod:`jaxseq.interop`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxseq
from jaxseq.interop import load, load_torch_state_dict, save, to_torch_state_dict

I, H, N = 3, 4, 2
TOL = 1e-12

# case kind -> (class, constructor kwargs, gates)
KINDS = {
    "rnn_tanh": (jaxseq.nn.RNNCell, {"nonlinearity": "tanh"}, 1),
    "rnn_relu": (jaxseq.nn.RNNCell, {"nonlinearity": "relu"}, 1),
    "lstm": (jaxseq.nn.LSTMCell, {}, 4),
    "gru": (jaxseq.nn.GRUCell, {}, 3),
}


# --------------------------------------------------------------------------- reference


def reference(kind: str, p: dict, x, hx, xp=np):
    """One step from the equations, on a batch: x (N, I), hx (N, H) or (h, c).

    ``xp`` is ``numpy`` (values) or ``jax.numpy`` (gradients).
    """

    def lin(a, w, name):
        b = p.get(name)
        y = a @ w.T
        return y if b is None else y + b.reshape(1, -1)

    def sigmoid(z):
        return 1.0 / (1.0 + xp.exp(-z))

    if kind.startswith("rnn"):
        pre = lin(x, p["weight_ih"], "bias_ih") + lin(hx, p["weight_hh"], "bias_hh")
        return xp.tanh(pre) if kind == "rnn_tanh" else xp.maximum(pre, 0.0)
    if kind == "lstm":
        h, c = hx
        gates = lin(x, p["weight_ih"], "bias_ih") + lin(h, p["weight_hh"], "bias_hh")
        i, f, g, o = (gates[:, k * H : (k + 1) * H] for k in range(4))
        c_new = sigmoid(f) * c + sigmoid(i) * xp.tanh(g)
        return sigmoid(o) * xp.tanh(c_new), c_new
    gx = lin(x, p["weight_ih"], "bias_ih")
    gh = lin(hx, p["weight_hh"], "bias_hh")
    r = sigmoid(gx[:, :H] + gh[:, :H])
    z = sigmoid(gx[:, H : 2 * H] + gh[:, H : 2 * H])
    n = xp.tanh(gx[:, 2 * H :] + r * gh[:, 2 * H :])
    return (1.0 - z) * n + z * hx


def make(kind: str, bias: bool = True, seed: int = 0, **kw):
    cls, extra, _ = KINDS[kind]
    return cls(I, H, bias, **extra, param_dtype=jnp.float64, rngs=nnx.Rngs(seed), **kw)


def np_params(cell) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in to_torch_state_dict(cell).items()}


def random_inputs(kind: str, seed: int = 0, n: int = N):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, I))
    if kind == "lstm":
        hx = (rng.standard_normal((n, H)), rng.standard_normal((n, H)))
    else:
        hx = rng.standard_normal((n, H))
    return x, hx


def zeros_like_state(kind: str, n: int):
    z = np.zeros((n, H))
    return (z, z) if kind == "lstm" else z


def as_jax(tree):
    return jax.tree.map(jnp.asarray, tree)


def close(got, want, tol=TOL):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert np.shape(g) == np.shape(w)
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=tol, atol=tol)


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize("hx_given", [True, False], ids=["hx", "nohx"])
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_values_match_reference(kind, bias, batched, hx_given):
    cell = make(kind, bias)
    x, hx = random_inputs(kind, seed=1)
    ref_hx = hx if hx_given else zeros_like_state(kind, N)
    want = reference(kind, np_params(cell), x, ref_hx)
    if batched:
        got = cell(jnp.asarray(x), as_jax(hx) if hx_given else None)
    else:  # row by row, as unbatched calls
        rows = []
        for n in range(N):
            h_n = jax.tree.map(lambda a, n=n: jnp.asarray(a[n]), hx) if hx_given else None
            rows.append(cell(jnp.asarray(x[n]), h_n))
        got = jax.tree.map(lambda *r: jnp.stack(r), *rows)
        out_leaf = jax.tree.leaves(cell(jnp.asarray(x[0])))[0]
        assert out_leaf.shape == (H,)  # unbatched in -> unbatched out
    assert type(got) is type(want) if kind == "lstm" else got.shape == (N, H)
    for leaf in jax.tree.leaves(got):
        assert leaf.dtype == jnp.float64
    close(got, want)
    if kind.startswith("rnn") and kind.endswith("relu"):
        assert np.all(np.asarray(got) >= 0)


@pytest.mark.parametrize("kind", list(KINDS))
def test_unbatched_equals_batched_row_and_none_equals_zeros(kind):
    cell = make(kind)
    x, hx = random_inputs(kind, seed=2)
    batched = cell(jnp.asarray(x), as_jax(hx))
    one = cell(jnp.asarray(x[0]), jax.tree.map(lambda a: jnp.asarray(a[0]), hx))
    # To rounding: XLA may pick another dot kernel for one row than for a batch of rows.
    for b, u in zip(jax.tree.leaves(batched), jax.tree.leaves(one), strict=True):
        np.testing.assert_allclose(np.asarray(b)[0], np.asarray(u), rtol=1e-13, atol=1e-15)
    none = cell(jnp.asarray(x))
    zeros = cell(jnp.asarray(x), as_jax(zeros_like_state(kind, N)))
    for a, b in zip(jax.tree.leaves(none), jax.tree.leaves(zeros), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # An empty batch is fine, as torch.
    empty = cell(jnp.zeros((0, I), jnp.float64))
    assert [a.shape for a in jax.tree.leaves(empty)] == [(0, H)] * (2 if kind == "lstm" else 1)


def test_numpy_inputs_and_a_list_hx_for_lstm():
    cell = make("lstm")
    x, (h, c) = random_inputs("lstm", seed=3)
    a = cell(x, [h, c])  # NumPy arrays, hx as a list
    b = cell(jnp.asarray(x), (jnp.asarray(h), jnp.asarray(c)))
    close(a, b, 0.0)
    assert isinstance(a, tuple) and len(a) == 2


# --------------------------------------------------------------------------- jit and grad


@functools.cache
def jitted(graphdef):
    """One compiled apply per cell structure, shared by the tests."""

    @jax.jit
    def apply(state, x, hx):
        return nnx.merge(graphdef, state)(x, hx)

    return apply


@functools.cache
def jitted_grad(graphdef, kind):
    """Gradients of sum(out * cot) w.r.t. (params state, x, hx), compiled once per kind."""

    def loss(state, x, hx, cot):
        out = nnx.merge(graphdef, state)(x, hx)
        return sum(
            jnp.sum(o * c) for o, c in zip(jax.tree.leaves(out), jax.tree.leaves(cot), strict=True)
        )

    return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))


@pytest.mark.parametrize("kind", list(KINDS))
def test_jit_via_split_merge_equals_eager(kind):
    cell = make(kind)
    x, hx = random_inputs(kind, seed=4)
    graphdef, state = nnx.split(cell)
    fn = jitted(graphdef)
    got = fn(state, jnp.asarray(x), as_jax(hx))
    close(got, cell(jnp.asarray(x), as_jax(hx)))
    # unbatched under jit too; and the eager and jitted results agree with the reference
    got1 = fn(state, jnp.asarray(x[0]), jax.tree.map(lambda a: jnp.asarray(a[0]), hx))
    close(got1, jax.tree.map(lambda a: a[0], got))
    close(got, reference(kind, np_params(cell), x, hx))
    # Errors are raised in Python while tracing, with the same message, not by XLA.
    with pytest.raises(ValueError, match="input has inconsistent input_size: got 5 expected 3"):
        fn(state, jnp.ones((N, 5), jnp.float64), as_jax(hx))


@pytest.mark.parametrize("kind", list(KINDS))
def test_grad_matches_reference_grad(kind):
    cell = make(kind, seed=5)
    x, hx = random_inputs(kind, seed=5)
    rng = np.random.default_rng(6)
    cot = jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(np.shape(a))), hx)
    graphdef, state = nnx.split(cell)
    g_state, g_x, g_hx = jitted_grad(graphdef, kind)(state, jnp.asarray(x), as_jax(hx), cot)

    def ref_loss(p, x, hx):
        out = reference(kind, p, x, hx, xp=jnp)
        return sum(
            jnp.sum(o * c) for o, c in zip(jax.tree.leaves(out), jax.tree.leaves(cot), strict=True)
        )

    p = {k: jnp.asarray(v) for k, v in np_params(cell).items()}
    r_p, r_x, r_hx = jax.grad(ref_loss, argnums=(0, 1, 2))(p, jnp.asarray(x), as_jax(hx))
    # A module merged from gradients converts to torch names, as the parameters do.
    grads = to_torch_state_dict(nnx.merge(graphdef, g_state))
    assert set(grads) == set(r_p) == {"weight_ih", "weight_hh", "bias_ih", "bias_hh"}
    close(grads, r_p)
    close(g_x, r_x)
    close(g_hx, r_hx)


def test_nnx_grad_on_the_module():
    cell = make("gru")
    x, hx = random_inputs("gru", seed=7)

    @nnx.grad
    def g(m):
        return jnp.sum(m(jnp.asarray(x), jnp.asarray(hx)) ** 2)

    grads = nnx.merge(nnx.graphdef(cell), g(cell))  # nnx.grad returns an nnx.State
    sd = to_torch_state_dict(grads)
    assert set(sd) == {"weight_ih", "weight_hh", "bias_ih", "bias_hh"}
    assert float(np.abs(sd["weight_hh"]).sum()) > 0


# --------------------------------------------------------------------------- dtypes and init


def test_dtype_and_param_dtype():
    x32 = jnp.ones((N, I), jnp.float32)
    x64 = jnp.ones((N, I), jnp.float64)
    c32 = jaxseq.nn.LSTMCell(I, H, rngs=nnx.Rngs(0))
    assert c32.param_dtype == jnp.float32 and c32.weight_ih[...].dtype == jnp.float32
    assert c32.dtype is None
    h, c = c32(x32)
    assert h.dtype == c.dtype == jnp.float32
    # dtype=None: the promotion of the input and parameter dtypes, as the layer modules.
    assert c32(x64)[0].dtype == jnp.float64
    c64 = jaxseq.nn.GRUCell(I, H, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    assert c64.weight_hh[...].dtype == jnp.float64
    assert c64(x32).dtype == jnp.float64
    # dtype given: x and hx are cast to it; parameters keep param_dtype.
    cast = jaxseq.nn.GRUCell(I, H, param_dtype=jnp.float64, dtype=jnp.float32, rngs=nnx.Rngs(0))
    out = cast(x64, jnp.zeros((N, H), jnp.float64))
    assert out.dtype == jnp.float32 and cast.weight_ih[...].dtype == jnp.float64
    np.testing.assert_allclose(out, c64(x64), rtol=1e-6, atol=1e-6)
    bf = jaxseq.nn.RNNCell(I, H, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    assert bf(x32).dtype == jnp.bfloat16


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("bias", [True, False])
def test_parameters_shapes_init_and_attributes(kind, bias):
    cell = make(kind, bias)
    G = KINDS[kind][2]
    sd = to_torch_state_dict(cell)
    expected = {"weight_ih": (G * H, I), "weight_hh": (G * H, H)}
    if bias:
        expected |= {"bias_ih": (G * H,), "bias_hh": (G * H,)}
    assert {k: v.shape for k, v in sd.items()} == expected
    assert list(sd) == list(expected)  # torch's state_dict order
    assert all(isinstance(getattr(cell, k), nnx.Param) for k in expected)
    assert not hasattr(cell, "bias_ih") if not bias else True
    bound = 1 / np.sqrt(H)
    assert all(np.all(np.abs(v) <= bound) for v in sd.values())
    assert (cell.input_size, cell.hidden_size, cell.bias) == (I, H, bias)
    assert cell.dtype is None and cell.param_dtype == jnp.float64
    if kind.startswith("rnn"):
        assert cell.nonlinearity == kind.split("_")[1]
    else:
        assert not hasattr(cell, "nonlinearity")  # as torch's LSTMCell / GRUCell
    # The same init as the layer modules: same seed, same weights as a 1-layer stack.
    layer_cls = {"rnn": jaxseq.nn.RNN, "lstm": jaxseq.nn.LSTM, "gru": jaxseq.nn.GRU}
    layer = layer_cls[kind.split("_")[0]](
        I, H, bias=bias, param_dtype=jnp.float64, rngs=nnx.Rngs(0)
    )
    for k, v in sd.items():
        np.testing.assert_array_equal(v, np.asarray(getattr(layer, k + "_l0")[...]))
    assert not np.array_equal(
        sd["weight_ih"], to_torch_state_dict(make(kind, bias, 1))["weight_ih"]
    )


# --------------------------------------------------------------------------- errors

CALL_ERRORS = [
    # (kind or "*", x shape, hx spec, exception, message)
    ("*", (2, 2, 3), None, ValueError, "{name}: Expected input to be 1D or 2D, got 3D instead"),
    ("*", (), None, ValueError, "{name}: Expected input to be 1D or 2D, got 0D instead"),
    ("*", (2, 5), None, ValueError, "input has inconsistent input_size: got 5 expected 3"),
    ("*", (5,), None, ValueError, "input has inconsistent input_size: got 5 expected 3"),
    ("*", "int", None, TypeError, "{name}: input must be a floating point array, got dtype int32"),
    ("*", "list", None, TypeError, "{name}: input must be an array, got list"),
    ("single", (2, 3), (3, 4), ValueError, "Input batch size 2 doesn't match hidden0 batch size 3"),
    ("single", (2, 3), (2, 5), ValueError, "hidden0 has inconsistent hidden_size: got 5, expected 4"),
    ("single", (3,), (5,), ValueError, "hidden0 has inconsistent hidden_size: got 5, expected 4"),
    ("single", (2, 3), (1, 2, 4), ValueError, "{name}: Expected hidden to be 1D or 2D, got 3D instead"),
    ("single", (2, 3), (4,), ValueError, "{name}: Expected hidden to be 2D for a 2D input (batched), got 1D instead"),
    ("single", (3,), (1, 4), ValueError, "{name}: Expected hidden to be 1D for a 1D input (unbatched), got 2D instead"),
    ("single", (2, 3), "int", TypeError, "{name}: hidden must be a floating point array, got dtype int32"),
    ("single", (2, 3), "f32", TypeError, "{name}: input and hidden must have the same dtype, found input of dtype float64 and hidden of dtype float32"),
    ("single", (2, 3), "tuple", TypeError, "{name}: hx must be a single array for {name}, got a tuple"),
    ("single", (2, 3), "float", TypeError, "{name}: hidden must be an array, got float"),
    ("single", (2, 3), "list", TypeError, "{name}: hx must be a single array for {name}, got a list"),
    ("lstm", (2, 3), ((3, 4), (2, 4)), ValueError, "Input batch size 2 doesn't match hidden0 batch size 3"),
    ("lstm", (2, 3), ((2, 4), (3, 4)), ValueError, "Input batch size 2 doesn't match hidden1 batch size 3"),
    ("lstm", (2, 3), ((2, 5), (2, 4)), ValueError, "hidden0 has inconsistent hidden_size: got 5, expected 4"),
    ("lstm", (2, 3), ((2, 4), (2, 5)), ValueError, "hidden1 has inconsistent hidden_size: got 5, expected 4"),
    ("lstm", (2, 3), ((1, 2, 4), (2, 4)), ValueError, "LSTMCell: Expected hx[0] to be 1D or 2D, got 3D instead"),
    ("lstm", (2, 3), ((2, 4), (1, 2, 4)), ValueError, "LSTMCell: Expected hx[1] to be 1D or 2D, got 3D instead"),
    ("lstm", (2, 3), ((4,), (4,)), ValueError, "LSTMCell: Expected hx[0] to be 2D for a 2D input (batched), got 1D instead"),
    ("lstm", (2, 3), "array", TypeError, "LSTMCell: hx must be a tuple (h_0, c_0), got ArrayImpl"),
    ("lstm", (2, 3), "one", ValueError, "LSTMCell expects two hidden states (h_0, c_0), got 1"),
    ("lstm", (2, 3), "three", ValueError, "LSTMCell expects two hidden states (h_0, c_0), got 3"),
    ("lstm", (2, 3), "c_int", TypeError, "LSTMCell: hx[1] must be a floating point array, got dtype int32"),
    ("lstm", (2, 3), "c_f32", TypeError, "LSTMCell: input and hx[1] must have the same dtype, found input of dtype float64 and hx[1] of dtype float32"),
]  # fmt: skip


def _bad_x(spec):
    if spec == "int":
        return jnp.ones((2, 3), jnp.int32)
    if spec == "list":
        return [[1.0, 2.0, 3.0]]
    return jnp.ones(spec, jnp.float64)


def _bad_hx(kind, spec):
    f64 = functools.partial(jnp.ones, dtype=jnp.float64)
    good = f64((2, 4))
    special = {
        None: None,
        "int": jnp.ones((2, 4), jnp.int32),
        "f32": jnp.ones((2, 4), jnp.float32),
        "tuple": (good, good),
        "float": 0.5,
        "list": [[0.0] * 4] * 2,
        "array": good,
        "one": (good,),
        "three": (good, good, good),
        "c_int": (good, jnp.ones((2, 4), jnp.int32)),
        "c_f32": (good, jnp.ones((2, 4), jnp.float32)),
    }
    if isinstance(spec, str) or spec is None:
        return special[spec]
    if kind == "lstm":
        return f64(spec[0]), f64(spec[1])
    return f64(spec)


def _call_error_cases():
    cases = []
    for i, (which, xs, hs, exc, msg) in enumerate(CALL_ERRORS):
        kinds = {"*": ["rnn_tanh", "lstm", "gru"], "single": ["rnn_tanh", "gru"]}.get(
            which, [which]
        )
        for kind in kinds:
            cases.append(pytest.param(kind, xs, hs, exc, msg, id=f"{kind}-{i:02d}"))
    return cases


CELLS = {kind: make(kind) for kind in KINDS}


@pytest.mark.parametrize(("kind", "x_spec", "hx_spec", "exc", "message"), _call_error_cases())
def test_call_errors(kind, x_spec, hx_spec, exc, message):
    cell = CELLS[kind]
    message = message.format(name=type(cell).__name__)
    with pytest.raises(exc) as info:
        cell(_bad_x(x_spec), _bad_hx(kind, hx_spec))
    assert str(info.value) == message


CONSTRUCTOR_ERRORS = [
    # (class, args, kwargs, exception, message)
    ("LSTMCell", (3, 0), {}, ValueError, "hidden_size must be greater than zero"),
    ("GRUCell", (3, -1), {}, ValueError, "hidden_size must be greater than zero"),
    ("RNNCell", (-1, 4), {}, ValueError, "input_size must be greater than zero"),
    ("GRUCell", (3.0, 4), {}, TypeError, "input_size should be of type int, got: float"),
    ("LSTMCell", (3, 4.0), {}, TypeError, "hidden_size should be of type int, got: float"),
    (
        "RNNCell",
        (3, 4),
        {"nonlinearity": "sigmoid"},
        ValueError,
        "Unknown nonlinearity 'sigmoid'. Select from 'tanh' or 'relu'.",
    ),
    (
        "RNNCell",
        (3, 4, True, "Tanh"),
        {},
        ValueError,
        "Unknown nonlinearity 'Tanh'. Select from 'tanh' or 'relu'.",
    ),
    ("GRUCell", (3, 4), {"rngs": 0}, TypeError, "rngs must be an nnx.Rngs, got int"),
    ("LSTMCell", (3, 4), {"rngs": None}, TypeError, "rngs must be an nnx.Rngs, got NoneType"),
]


@pytest.mark.parametrize(
    ("cls", "args", "kwargs", "exc", "message"),
    CONSTRUCTOR_ERRORS,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(CONSTRUCTOR_ERRORS)],
)
def test_constructor_errors(cls, args, kwargs, exc, message):
    kwargs = {"rngs": nnx.Rngs(0)} | kwargs
    with pytest.raises(exc) as info:
        getattr(jaxseq.nn, cls)(*args, **kwargs)
    assert str(info.value) == message


def test_input_size_zero_is_allowed_as_torch():
    cell = jaxseq.nn.GRUCell(0, H, rngs=nnx.Rngs(0))
    assert cell(jnp.ones((N, 0), jnp.float32)).shape == (N, H)


# --------------------------------------------------------------------------- from_layer


def _step_stack(cells, x, bidirectional, kind):
    """Run a stack by stepping cells: cells[k] = (forward, reverse or None); x (T, N, I)."""
    T = x.shape[0]
    finals = []
    for fwd, rev in cells:
        outs = []
        for cell, order in ((fwd, range(T)), (rev, range(T - 1, -1, -1))):
            if cell is None:
                continue
            state, ys = None, [None] * T
            for t in order:
                state = cell(x[t], state)
                ys[t] = state[0] if kind == "lstm" else state
            outs.append(jnp.stack(ys))
            finals.append(state)
        x = jnp.concatenate(outs, axis=-1)
    return x, finals


@pytest.mark.parametrize("kind", list(KINDS))
def test_from_layer_cells_reproduce_the_stack(kind):
    layer_cls = {"rnn": jaxseq.nn.RNN, "lstm": jaxseq.nn.LSTM, "gru": jaxseq.nn.GRU}
    base = kind.split("_")[0]
    kw = {"nonlinearity": kind.split("_")[1]} if base == "rnn" else {}
    stack = layer_cls[base](
        I, H, num_layers=2, bidirectional=True, param_dtype=jnp.float64, rngs=nnx.Rngs(3), **kw
    )
    cls = KINDS[kind][0]
    cells = [(cls.from_layer(stack, k), cls.from_layer(stack, k, reverse=True)) for k in range(2)]
    assert cells[1][0].input_size == 2 * H and cells[1][1].weight_ih[...].shape[1] == 2 * H
    if base == "rnn":
        assert cells[0][0].nonlinearity == kw["nonlinearity"]
    assert cells[0][0].param_dtype == jnp.float64
    x = jnp.asarray(np.random.default_rng(8).standard_normal((5, N, I)))
    out, state = stack(x)
    got_out, finals = _step_stack(cells, x, True, base)
    close(got_out, out)
    h_n = state[0] if base == "lstm" else state
    close(jnp.stack([f[0] if base == "lstm" else f for f in finals]), h_n)
    # A copy: changing the stack afterwards leaves the cell alone.
    before = np.asarray(cells[0][0].weight_hh[...])
    stack.weight_hh_l0[...] = stack.weight_hh_l0[...] + 1.0
    np.testing.assert_array_equal(cells[0][0].weight_hh[...], before)


def test_from_layer_without_bias_and_errors():
    gru = jaxseq.nn.GRU(I, H, num_layers=2, bias=False, rngs=nnx.Rngs(0))
    cell = jaxseq.nn.GRUCell.from_layer(gru, 1)
    assert not cell.bias and sorted(to_torch_state_dict(cell)) == ["weight_hh", "weight_ih"]
    with pytest.raises(
        ValueError, match=r"layer must be an integer in \[0, 1\] \(num_layers=2\), got 2"
    ):
        jaxseq.nn.GRUCell.from_layer(gru, 2)
    with pytest.raises(ValueError, match="reverse=True needs a bidirectional GRU"):
        jaxseq.nn.GRUCell.from_layer(gru, 0, reverse=True)
    with pytest.raises(
        TypeError, match="LSTMCell.from_layer expects a jaxseq.nn.LSTM module, got GRU"
    ):
        jaxseq.nn.LSTMCell.from_layer(gru)
    proj = jaxseq.nn.LSTM(I, H, proj_size=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="proj_size=2; torch.nn.LSTMCell has no projection"):
        jaxseq.nn.LSTMCell.from_layer(proj)


# --------------------------------------------------------------------------- state_dict


@pytest.mark.parametrize("kind", list(KINDS))
def test_state_dict_round_trips(kind, tmp_path):
    a, b = make(kind, seed=0), make(kind, seed=1)
    x, hx = random_inputs(kind, seed=9)
    sd = to_torch_state_dict(a)
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float64 for v in sd.values())
    load_torch_state_dict(b, sd)
    close(b(jnp.asarray(x), as_jax(hx)), a(jnp.asarray(x), as_jax(hx)), 0.0)
    # The safetensors file under torch's names.
    c = make(kind, seed=2)
    path = tmp_path / f"{kind}.safetensors"
    save(a, path)
    load(c, path)
    close(to_torch_state_dict(c), sd, 0.0)
    # A float32 cell reads the same file, cast to its param_dtype.
    cls, extra, _ = KINDS[kind]
    d = cls(I, H, **extra, rngs=nnx.Rngs(0))
    load(d, path)
    assert d.weight_ih[...].dtype == jnp.float32
    np.testing.assert_allclose(d.weight_ih[...], sd["weight_ih"], rtol=1e-7)


def test_state_dict_mismatches_are_reported():
    cell = make("lstm")
    sd = to_torch_state_dict(cell)
    with pytest.raises(ValueError) as info:
        load_torch_state_dict(cell, {**sd, "weight_ih": np.zeros((16, 5))})
    assert "size mismatch: weight_ih: checkpoint has (16, 5), module expects (16, 3)" in str(
        info.value
    )
    no_bias = {k: v for k, v in sd.items() if not k.startswith("bias")}
    with pytest.raises(
        ValueError, match=r"Missing key\(s\) in state_dict: \['bias_hh', 'bias_ih'\]"
    ):
        load_torch_state_dict(cell, no_bias)
    without = make("lstm", bias=False)
    with pytest.raises(
        ValueError, match=r"Unexpected key\(s\) in state_dict: \['bias_hh', 'bias_ih'\]"
    ):
        load_torch_state_dict(without, sd)
    load_torch_state_dict(without, sd, strict=False)
    np.testing.assert_array_equal(without.weight_hh[...], sd["weight_hh"])
