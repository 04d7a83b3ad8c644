"""minGRU / minLSTM (issue #18): the stack against a float64 NumPy loop, the parallel and
chunked solvers against the sequential reference (values and gradients), masking, and
the NNX modules. No torch here (see parity_tests/test_minimal_parity.py)."""

from __future__ import annotations

import functools
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxseq
from jaxseq.linear_scan import linear_recurrence

KINDS = ("min_gru", "min_lstm")
INIT = {"min_gru": jaxseq.init_min_gru, "min_lstm": jaxseq.init_min_lstm}
RUN = {"min_gru": jaxseq.min_gru, "min_lstm": jaxseq.min_lstm}
T, N, I, H = 7, 4, 3, 5
LENGTHS = np.array([7, 3, 0, 5], np.int32)


# --------------------------------------------------------------------------- references


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def np_coefficients(kind, g):
    if kind == "min_gru":
        gz, ht = np.split(g, 2)
        z = _sigmoid(gz)
        return 1.0 - z, z * ht
    gf, gi, ht = np.split(g, 3)
    f, i = _sigmoid(gf), _sigmoid(gi)
    return f / (f + i), i / (f + i) * ht


def np_stack(kind, params, x, h0, lengths):
    """float64 Python loop, row by row, over each row's valid prefix only (as packing)."""
    params = {k: np.asarray(v, np.float64) for k, v in params.items()}
    x = np.asarray(x, np.float64)
    Tn, Nn, _ = x.shape
    D = 2 if "weight_ih_l0_reverse" in params else 1
    L = 1 + max(int(k.split("_l")[1].split("_")[0]) for k in params)
    Hn = h0.shape[-1]
    h_n = np.zeros((L * D, Nn, Hn))
    inp = x
    for layer in range(L):
        out = np.zeros((Tn, Nn, D * Hn))
        for d in range(D):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            w, b = params["weight_ih" + sfx], params.get("bias_ih" + sfx, 0.0)
            for n in range(Nn):
                h = np.array(h0[layer * D + d, n], np.float64)
                steps = range(lengths[n]) if d == 0 else reversed(range(lengths[n]))
                for t in steps:
                    a, c = np_coefficients(kind, w @ inp[t, n] + b)
                    h = a * h + c
                    out[t, n, d * Hn : (d + 1) * Hn] = h
                h_n[layer * D + d, n] = h
        inp = out
    return inp, h_n


def _data(kind, dtype, num_layers=2, bidirectional=True, bias=True, seed=0):
    k = jax.random.split(jax.random.key(seed), 4)
    D = 2 if bidirectional else 1
    params = INIT[kind](k[0], I, H, num_layers, bias=bias, bidirectional=bidirectional, dtype=dtype)
    x = jax.random.normal(k[1], (T, N, I), dtype)
    hx = jax.random.normal(k[2], (num_layers * D, N, H), dtype)
    return params, x, hx


@functools.cache
def _forward(kind, impl, chunk=None):
    return jax.jit(lambda p, x, hx, lengths: RUN[kind](p, x, hx, lengths, impl=impl, chunk=chunk))


@functools.cache
def _grads(kind, impl, chunk=None):
    def loss(p, x, hx, lengths, r_out, r_h):
        out, h_n = RUN[kind](p, x, hx, lengths, impl=impl, chunk=chunk)
        return jnp.sum(out * r_out) + jnp.sum(h_n * r_h)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "num_layers,bidirectional,bias", [(1, False, True), (2, True, True), (1, True, False)]
)
def test_sequential_matches_numpy_loop(kind, num_layers, bidirectional, bias):
    params, x, hx = _data(kind, jnp.float64, num_layers, bidirectional, bias)
    out, h_n = _forward(kind, "unfused")(params, x, hx, jnp.asarray(LENGTHS))
    ref_out, ref_h = np_stack(kind, params, x, np.asarray(hx), LENGTHS)
    np.testing.assert_allclose(out, ref_out, rtol=0, atol=1e-12)
    np.testing.assert_allclose(h_n, ref_h, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("impl", ["fused_scan", "fused_parallel", "fused_chunked"])
@pytest.mark.parametrize("dtype,tol", [(jnp.float64, 1e-10), (jnp.float32, 1e-5)])
def test_parallel_matches_sequential_with_gradients(kind, impl, dtype, tol):
    params, x, hx = _data(kind, dtype)
    lengths = jnp.asarray(LENGTHS)
    k1, k2 = jax.random.split(jax.random.key(7))
    r_out = jax.random.normal(k1, (T, N, 2 * H), dtype)
    r_h = jax.random.normal(k2, (4, N, H), dtype)
    chunk = 3 if impl == "fused_chunked" else None  # T = 7: a ragged last chunk
    args = (params, x, hx, lengths, r_out, r_h)
    v_ref, g_ref = _grads(kind, "unfused")(*args)
    v, g = _grads(kind, impl, chunk)(*args)
    np.testing.assert_allclose(v, v_ref, rtol=tol, atol=tol)
    out_ref, h_ref = _forward(kind, "unfused")(params, x, hx, lengths)
    out, h_n = _forward(kind, impl, chunk)(params, x, hx, lengths)
    np.testing.assert_allclose(out, out_ref, rtol=0, atol=tol)
    np.testing.assert_allclose(h_n, h_ref, rtol=0, atol=tol)
    assert float(jnp.abs(out[3:, 1]).max()) == 0.0  # padding exactly zero in every impl
    for got, want in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref), strict=True):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("method", ["sequential", "parallel", "chunked"])
@pytest.mark.parametrize("chunk", [1, 4, 64])
def test_linear_recurrence_against_loop(method, chunk):
    rng = np.random.default_rng(0)
    a = rng.uniform(0.0, 1.0, (13, 2, 3))
    b = rng.normal(size=(13, 2, 3))
    h0 = rng.normal(size=(2, 3))
    h, ref = h0.copy(), []
    for t in range(13):
        h = a[t] * h + b[t]
        ref.append(h)
    got = linear_recurrence(
        jnp.asarray(a), jnp.asarray(b), jnp.asarray(h0), method=method, chunk=chunk
    )
    np.testing.assert_allclose(got, np.stack(ref), rtol=0, atol=1e-12)

    # The custom VJP against autodiff of a plain Python loop.
    def loop(a, b, h0):
        h, hs = h0, []
        for t in range(a.shape[0]):
            h = a[t] * h + b[t]
            hs.append(h)
        return jnp.sum(jnp.stack(hs) ** 2)

    def fast(a, b, h0):
        return jnp.sum(linear_recurrence(a, b, h0, method=method, chunk=chunk) ** 2)

    args = (jnp.asarray(a), jnp.asarray(b), jnp.asarray(h0))
    for got, want in zip(
        jax.grad(fast, (0, 1, 2))(*args), jax.grad(loop, (0, 1, 2))(*args), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- masking


@pytest.mark.parametrize("kind", KINDS)
def test_masking_matches_each_row_alone(kind):
    """Length 0 gives h0; padding outputs 0 and gets no gradient; each row equals the
    unpadded run of its valid prefix (so h_n is at the last valid step and the reverse
    direction starts at each row's own last element)."""
    params, x, hx = _data(kind, jnp.float64)
    lengths = jnp.asarray(LENGTHS)
    x_nan = x.at[5:, 1].set(jnp.nan)  # padding of row 1 may hold anything
    out, h_n = _forward(kind, "fused")(params, x_nan, hx, lengths)
    np.testing.assert_array_equal(out[:, 2], 0.0)
    np.testing.assert_array_equal(h_n[:, 2], hx[:, 2])  # length 0: h_n = h0
    np.testing.assert_array_equal(out[3:, 1], 0.0)
    full = _forward(kind, "unfused")
    for n, length in enumerate(LENGTHS):
        if length == 0:
            continue
        o, h = full(params, x[:length, n : n + 1], hx[:, n : n + 1], jnp.asarray([length]))
        np.testing.assert_allclose(out[:length, n : n + 1], o, rtol=0, atol=1e-12)
        np.testing.assert_allclose(h_n[:, n : n + 1], h, rtol=0, atol=1e-12)

    gx = jax.grad(
        lambda x: jnp.sum(RUN[kind](params, x, hx, lengths, impl="fused_parallel")[0] ** 2)
    )(x)
    np.testing.assert_array_equal(gx[3:, 1], 0.0)
    np.testing.assert_array_equal(gx[:, 2], 0.0)


def test_lengths_are_traced_one_compile():
    params, x, hx = _data("min_gru", jnp.float64)
    traces = []

    @jax.jit
    def f(lengths):
        traces.append(1)
        return jaxseq.min_gru(params, x, hx, lengths, impl="fused_parallel")[1]

    h_a = f(jnp.asarray([7, 3, 0, 5], jnp.int32))
    h_b = f(jnp.asarray([1, 7, 2, 0], jnp.int32))
    assert len(traces) == 1
    np.testing.assert_array_equal(h_a[:, 2], hx[:, 2])
    np.testing.assert_array_equal(h_b[:, 3], hx[:, 3])
    assert not np.allclose(h_a[:, 1], h_b[:, 1])


@pytest.mark.parametrize("kind", KINDS)
def test_batch_first_unbatched_and_default_hx(kind):
    params, x, _ = _data(kind, jnp.float64, num_layers=1, bidirectional=True)
    run = RUN[kind]
    out, h_n = run(params, x, impl="fused_parallel")
    out_bf, h_bf = run(params, jnp.swapaxes(x, 0, 1), batch_first=True, impl="fused_parallel")
    np.testing.assert_allclose(jnp.swapaxes(out_bf, 0, 1), out, atol=1e-13)
    np.testing.assert_allclose(h_bf, h_n, atol=1e-13)
    out_u, h_u = run(params, x[:, 1], impl="unfused")  # unbatched (T, I)
    np.testing.assert_allclose(out_u, out[:, 1], atol=1e-12)
    np.testing.assert_allclose(h_u, h_n[:, 1], atol=1e-12)
    ref_out, ref_h = np_stack(kind, params, x, np.zeros((2, N, H)), [T] * N)
    np.testing.assert_allclose(out, ref_out, atol=1e-12)
    np.testing.assert_allclose(h_n, ref_h, atol=1e-12)


def test_errors_are_raised_in_python():
    params, x, hx = _data("min_gru", jnp.float32)
    with pytest.raises(ValueError, match="input_size"):
        jaxseq.min_gru(params, x[..., :2])
    with pytest.raises(ValueError, match="Unknown impl"):
        jaxseq.min_gru(params, x, impl="fast")
    with pytest.raises(ValueError, match="Expected hidden size"):
        jaxseq.min_gru(params, x, hx[:2])
    with pytest.raises(ValueError, match="lengths"):
        jaxseq.min_gru(params, x, lengths=[1, 2, 3, 99])
    with pytest.raises(ValueError, match="inconsistent"):
        jaxseq.min_lstm(jaxseq.init_min_gru(jax.random.key(0), 3, 6, num_layers=2), x)
    with pytest.raises(ValueError, match="hidden_size"):
        jaxseq.init_min_gru(jax.random.key(0), 3, 0)


def test_init_is_torch_uniform():
    p = jaxseq.init_min_lstm(jax.random.key(0), 8, 16, num_layers=2, bidirectional=True)
    assert sorted(p) == sorted(
        f"{w}_l{k}{s}" for w in ("weight_ih", "bias_ih") for k in (0, 1) for s in ("", "_reverse")
    )
    assert p["weight_ih_l1"].shape == (48, 32) and p["bias_ih_l0"].shape == (48,)
    allv = np.concatenate([np.ravel(v) for v in p.values()])
    assert allv.min() >= -0.25 and allv.max() <= 0.25 and allv.max() > 0.24  # 1/sqrt(16)


# --------------------------------------------------------------------------- modules


@pytest.mark.parametrize("cls", [jaxseq.nn.MinGRU, jaxseq.nn.MinLSTM])
def test_modules_call_the_functional_stack(cls):
    m = cls(I, H, num_layers=2, bidirectional=True, batch_first=True, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(3), (N, T, I), jnp.float32)
    out, h_n = m(x, lengths=jnp.asarray(LENGTHS))
    ref_out, ref_h = RUN[m.kind](
        m.params_dict(), x, lengths=jnp.asarray(LENGTHS), batch_first=True, impl="unfused"
    )
    np.testing.assert_allclose(out, ref_out, atol=1e-5)
    np.testing.assert_allclose(h_n, ref_h, atol=1e-5)
    sd = jaxseq.interop.to_torch_state_dict(m)
    assert sorted(sd) == sorted(m.params_dict())
    G = 2 if cls is jaxseq.nn.MinGRU else 3
    assert sd["weight_ih_l1_reverse"].shape == (G * H, 2 * H)

    # Checkpoint round trip into a differently initialised module.
    other = cls(I, H, num_layers=2, bidirectional=True, batch_first=True, rngs=nnx.Rngs(1))
    path = os.path.join(tempfile.mkdtemp(), "m.safetensors")
    jaxseq.interop.save(m, path)
    jaxseq.interop.load(other, path)
    np.testing.assert_array_equal(other(x, lengths=jnp.asarray(LENGTHS))[0], out)


def test_module_dropout_train_eval_and_grad_through_split():
    m = jaxseq.nn.MinGRU(I, H, num_layers=2, dropout=0.5, rngs=nnx.Rngs(0))
    x = jnp.ones((T, N, I), jnp.float32)
    a, b = m(x)[0], m(x)[0]
    assert not np.allclose(a, b)  # training mode: fresh dropout masks
    m.eval()
    np.testing.assert_array_equal(m(x)[0], m(x)[0])
    graph, state, rest = nnx.split(m, nnx.Param, ...)

    @jax.jit
    def loss(state):
        return jnp.sum(nnx.merge(graph, state, rest)(x)[0] ** 2)

    grads = jax.grad(loss)(state)
    g = nnx.merge(graph, grads, rest)
    assert float(jnp.abs(jaxseq.interop.to_torch_state_dict(g)["weight_ih_l0"]).sum()) > 0


def test_every_mode_under_shard_map():
    """Data parallel with check_vma (as jaxseq.train runs it): weights and h0 are cast to
    varying like the batch-sharded input, and the gradient is the whole batch's."""
    P = jax.sharding.PartitionSpec
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("batch",))
    params, x, _ = _data("min_lstm", jnp.float64)
    lengths = jnp.asarray(LENGTHS)
    for impl in (
        "unfused",
        "fused_chunked",
    ):  # "fused_scan" and "fused_parallel" share the folded path

        def loss(p, x, lengths, impl=impl):
            out = jaxseq.min_lstm(p, x, lengths=lengths, impl=impl)[0]
            return jnp.mean(out**2)

        def per_device(p, x, lengths, loss=loss):
            return jax.value_and_grad(lambda q: jax.lax.pmean(loss(q, x, lengths), "batch"))(p)

        specs = (P(), P(None, "batch"), P("batch"))
        step = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=specs, out_specs=P()))
        (v, g), (v1, g1) = step(params, x, lengths), jax.value_and_grad(loss)(params, x, lengths)
        np.testing.assert_allclose(v, v1, rtol=1e-12)
        for k in g1:
            np.testing.assert_allclose(g[k], g1[k], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("impl", ["unfused", "fused_scan", "fused_parallel", "fused_chunked"])
def test_empty_sequence_gives_h0(impl):
    params, _, hx = _data("min_gru", jnp.float64)
    out, h_n = jaxseq.min_gru(params, jnp.zeros((0, N, I)), hx, impl=impl)
    assert out.shape == (0, N, 2 * H)
    np.testing.assert_array_equal(h_n, hx)
