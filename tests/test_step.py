"""One time step of a stack (:mod:`jaxseq.stepping`, ``RNNBase.step``, ``export_step``).

For every registered kind and nonlinearity, 2 layers, float64: stepping T steps from a
random state equals the full-sequence call (outputs and final state) to 1e-12, through
the functional API, the layer method, and a jitted ``lax.scan`` rollout; the compiled
rollout's loop body holds no weight-sized transpose or copy; an exported step, reloaded
in a fresh process that imports only jax, continues a stream exactly.
"""

from __future__ import annotations

import re
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _jit import JIT
from _procs import run_in_group
from flax import nnx

import jaxseq
import jaxseq.export
from jaxseq.recurrences import registered

T, N, I, H, L = 4, 2, 3, 5, 2


def _cases():
    for name, rec in sorted(registered().items()):
        for nl in rec.nonlinearities:
            yield pytest.param(name, nl, 0, id=f"{name}-{nl}")
        if rec.projection:
            yield pytest.param(name, rec.nonlinearities[0], 2, id=f"{name}-proj")


def _setup(kind, proj=0, dtype=jnp.float64):
    rec = jaxseq.recurrences.get(kind)
    params = jaxseq.init_params(jax.random.key(0), kind, I, H, L, proj_size=proj, dtype=dtype)
    # Random biases and extra parameters too (layer-norm gains start at ones, biases at 0).
    keys = iter(jax.random.split(jax.random.key(9), len(params)))
    params = {k: v + 0.3 * jax.random.normal(next(keys), v.shape, dtype) for k, v in params.items()}
    x = jax.random.normal(jax.random.key(1), (T, N, I), dtype)
    sizes = rec.state_sizes(H, proj or H)
    hx = rec.carry(
        tuple(
            jax.random.normal(jax.random.key(2 + i), (L, N, s), dtype) for i, s in enumerate(sizes)
        )
    )
    return rec, params, x, hx


def _close(a, b, tol=1e-12):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert u.shape == v.shape and u.dtype == v.dtype, (u.shape, v.shape, u.dtype, v.dtype)
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=tol, atol=tol)


@pytest.mark.parametrize(("kind", "nl", "proj"), list(_cases()))
def test_step_equals_full_sequence(kind, nl, proj):
    rec, params, x, hx = _setup(kind, proj)
    out, h_n = jaxseq.run_stack(kind, params, x, hx, nonlinearity=nl)
    w = jaxseq.prepare_step(kind, params, nonlinearity=nl)

    # Step by step (eager).
    state, ys = hx, []
    for t in range(T):
        y, state = jaxseq.step(w, x[t], state)
        ys.append(y)
    _close(jnp.stack(ys), out)
    _close(state, h_n)

    # Inside a jitted lax.scan rollout.
    def rollout(w, s, xs):
        def body(s, xt):
            y, s = jaxseq.step(w, xt, s)
            return s, y

        return jax.lax.scan(body, s, xs)

    s_n, ys = JIT(rollout)(w, hx, x)
    _close(ys, out)
    _close(s_n, h_n)

    # Unbatched: row 0 alone.
    y0, s0 = jaxseq.step(w, x[0, 0], jax.tree.map(lambda a: a[:, 0], hx))
    _, h1 = jaxseq.run_stack(
        kind, params, x[:1, 0], jax.tree.map(lambda a: a[:, 0], hx), nonlinearity=nl
    )
    _close(y0, out[0, 0])
    _close(s0, h1)


@pytest.mark.parametrize(("kind", "nl", "proj"), list(_cases()))
def test_layer_step_equals_call(kind, nl, proj):
    cls = jaxseq.nn.module_class(kind)
    kw = {"nonlinearity": nl} if nl != "tanh" else {}
    layer = cls(I, H, L, proj_size=proj, param_dtype=jnp.float64, rngs=nnx.Rngs(0), **kw)
    _, _, x, hx = _setup(kind, proj)
    out, h_n = layer(x, hx)
    state, ys = hx, []
    for t in range(T):
        y, state = layer.step(x[t], state)
        ys.append(y)
    _close(jnp.stack(ys), out)
    _close(state, h_n)
    # From zeros (state=None) as the call without hx.
    out0, h0 = layer(x[:1])
    y, s = layer.step(x[0])
    _close(y, out0[0])
    _close(s, h0)


def _body_ops(hlo: str) -> list[tuple[str, tuple[int, ...]]]:
    """The ``transpose`` and ``copy`` ops of the compiled HLO's while-loop bodies (and of
    every computation they call, fusions included): (op, shape)."""
    comps: dict[str, list[str]] = {}
    name = None
    for line in hlo.splitlines():
        m = re.match(r"^(?:ENTRY )?%?([\w.\-]+) ", line)
        if m and line.rstrip().endswith("{"):
            name, comps[m.group(1)] = m.group(1), []
        elif line.startswith("}"):
            name = None
        elif name is not None:
            comps[name].append(line)
    todo = re.findall(r"body=%?([\w.\-]+)", hlo)
    assert todo, "no while loop in the compiled program"
    seen, found = set(), []
    while todo:
        c = todo.pop()
        if c in seen or c not in comps:
            continue
        seen.add(c)
        for line in comps[c]:
            todo += re.findall(r"(?:calls|to_apply|body|condition)=%?([\w.\-]+)", line)
            m = re.search(r"= \w+\[([\d,]*)\]\S* (transpose|copy)\(", line)
            if m:
                found.append((m.group(2), tuple(int(d) for d in m.group(1).split(",") if d)))
    return found


def _rollout_hlo(step_fn, w, s, xs) -> str:
    def rollout(w, s, xs):
        def body(s, xt):
            y, s = step_fn(w, xt, s)
            return s, y

        return jax.lax.scan(body, s, xs)

    return jax.jit(rollout).lower(w, s, xs).compile().as_text()


@pytest.mark.parametrize(
    ("kind", "proj"), [("gru", 0), ("lstm", 0), ("lstm", 4), ("rnn", 0), ("layernorm_gru", 0)]
)
def test_rollout_loop_has_no_weight_transposes(kind, proj):
    """Every array of the loop body's transposes and copies is smaller than the smallest
    input or recurrent weight matrix (the state's copies remain: (L, N, H) at most)."""
    Hb, Nb, Ib = 32, 4, 16
    rec = jaxseq.recurrences.get(kind)
    params = jaxseq.init_params(jax.random.key(0), kind, Ib, Hb, 2, proj_size=proj)
    w = jaxseq.prepare_step(kind, params)
    sizes = rec.state_sizes(Hb, proj or Hb)
    s = rec.carry(tuple(jnp.zeros((2, Nb, n), jnp.float32) for n in sizes))
    xs = jnp.zeros((6, Nb, Ib), jnp.float32)
    mats = [v for k, v in params.items() if k.startswith(("weight_ih", "weight_hh"))]
    smallest = min(int(np.prod(v.shape)) for v in mats)
    assert smallest > 2 * Nb * Hb  # larger than any state
    ops = _body_ops(_rollout_hlo(jaxseq.step, w, s, xs))
    big = [(op, shape) for op, shape in ops if int(np.prod(shape)) >= smallest]
    assert not big, big

    # The full-sequence call on a one-step sequence (what a linen policy calls in its
    # rollout) on its torch-layout parameters: the fused path's laid-out weights are
    # hoisted out of the caller's loop too.
    def one_step(p, xt, s, impl="fused"):
        out, s = jaxseq.run_stack(kind, p, xt[None], s, impl=impl)
        return out[0], s

    ops = _body_ops(_rollout_hlo(one_step, params, s, xs))
    big = [(op, shape) for op, shape in ops if int(np.prod(shape)) >= smallest]
    assert not big, big

    if kind != "gru":
        return

    # The check sees them: a two-step call in the loop (the barrier is for one-step
    # calls) transposes weight_ih / weight_hh at every step of the loop.
    def two_steps(p, xt, s):
        out, s = jaxseq.run_stack(kind, p, jnp.stack([xt, xt]), s)
        return out[0], s

    ops = _body_ops(_rollout_hlo(two_steps, params, s, xs))
    assert any(op == "transpose" and int(np.prod(shape)) >= smallest for op, shape in ops), ops


def test_errors_name_the_argument():
    params = jaxseq.init_gru(jax.random.key(0), I, H, 2, bidirectional=True)
    with pytest.raises(ValueError, match="params: step runs uni-directional stacks only"):
        jaxseq.prepare_step("gru", params)
    layer = jaxseq.nn.GRU(I, H, bidirectional=True, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="uni-directional"):
        layer.step(jnp.ones((N, I), jnp.float32))
    w = jaxseq.prepare_step("gru", jaxseq.init_gru(jax.random.key(0), I, H, 2))
    x = jnp.ones((N, I), jnp.float32)
    with pytest.raises(ValueError, match=r"x_t must be \(N, 3\)"):
        jaxseq.step(w, jnp.ones((N, I + 1), jnp.float32))
    with pytest.raises(ValueError, match=r"state must have shape \(2, 2, 5\), got \(1, 2, 5\)"):
        jaxseq.step(w, x, jnp.zeros((1, N, H), jnp.float32))
    with pytest.raises(TypeError, match="state must be a single array"):
        jaxseq.step(w, x, (jnp.zeros((2, N, H)),))
    wl = jaxseq.prepare_step("lstm", jaxseq.init_lstm(jax.random.key(0), I, H))
    with pytest.raises(TypeError, match=r"state must be a tuple \(h, c\)"):
        jaxseq.step(wl, x, jnp.zeros((1, N, H), jnp.float32))
    with pytest.raises(ValueError, match=r"state\[1\] \(c\) must have shape \(1, 2, 5\)"):
        jaxseq.step(wl, x, (jnp.zeros((1, N, H)), jnp.zeros((1, N, H + 1))))
    with pytest.raises(TypeError, match="weights must be StepWeights"):
        jaxseq.step({}, x)
    drop = jaxseq.nn.GRU(I, H, 2, dropout=0.5, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"call \.eval\(\)"):
        drop.step(x)
    drop.eval()
    assert drop.step(x)[0].shape == (N, H)


def test_prepare_step_of_a_layer():
    layer = jaxseq.nn.LSTM(I, H, 2, proj_size=2, rngs=nnx.Rngs(0))
    w = jaxseq.prepare_step(layer)
    x = jnp.ones((N, I), jnp.float32)
    _close(jaxseq.step(w, x), layer.step(x), tol=0)


_SERVE = """
import json, hashlib, sys
import numpy as np
import jax
jax.config.update("jax_enable_x64", True)
path, data = sys.argv[1], np.load(sys.argv[2])
with open(path, "rb") as f:
    magic, digest, rest = f.read().split(b"\\n", 2)
assert hashlib.sha256(rest).hexdigest() == digest.decode()
header, payload = rest.split(b"\\n", 1)
exp = jax.export.deserialize(bytearray(payload))
state = tuple(data[k] for k in sorted(data.files) if k.startswith("s"))
state = state if len(state) > 1 else state[0]
ys = []
for t in range(data["x"].shape[0]):
    y, state = exp.call(data["x"][t], state)
    ys.append(np.asarray(y))
state = state if isinstance(state, tuple) else (state,)
np.savez(sys.argv[3], *[np.asarray(s) for s in state], ys=np.stack(ys))
assert "jaxseq" not in sys.modules and "flax" not in sys.modules, sorted(sys.modules)
"""


@pytest.mark.parametrize("kind", ["lstm", "gru", "min_lstm"])
def test_exported_step_continues_a_stream_in_a_fresh_process(kind, tmp_path):
    pytest.importorskip("flatbuffers")
    cls = jaxseq.nn.module_class(kind)
    layer = cls(I, H, L, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    _, _, x, hx = _setup(kind)
    out, h_n = layer(x, hx)
    # The first two steps here, the rest in the fresh process from the state they left.
    _, mid = layer(x[:2], hx)
    exp = jaxseq.export.export_step(layer, x_dtype=jnp.float64)
    path = tmp_path / "step.jax"
    jaxseq.export.save(exp, path)
    mids = jax.tree.leaves(mid)
    np.savez(
        tmp_path / "in.npz",
        x=np.asarray(x[2:]),
        **{f"s{i}": np.asarray(s) for i, s in enumerate(mids)},
    )
    script = tmp_path / "serve.py"
    script.write_text(textwrap.dedent(_SERVE))
    argv = [
        sys.executable,
        str(script),
        str(path),
        str(tmp_path / "in.npz"),
        str(tmp_path / "o.npz"),
    ]
    proc = run_in_group(argv, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(tmp_path / "o.npz") as got:
        np.testing.assert_allclose(got["ys"], np.asarray(out[2:]), rtol=1e-12, atol=1e-12)
        for i, s in enumerate(jax.tree.leaves(h_n)):
            np.testing.assert_allclose(got[f"arr_{i}"], np.asarray(s), rtol=1e-12, atol=1e-12)
    # The exported signature: x_t (b, I), the state (L, b, H) in and out.
    assert str(exp.in_avals[0]) == f"float64[b,{I}]"
    assert [str(a) for a in exp.out_avals[1:]] == [str(a) for a in exp.in_avals[1:]]


def test_export_step_errors():
    gru = jaxseq.nn.GRU(I, H, bidirectional=True, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="uni-directional"):
        jaxseq.export.export_step(gru)
    with pytest.raises(TypeError, match="layer must be a jaxseq.nn layer"):
        jaxseq.export.export_step(jaxseq.nn.GRUCell(I, H, rngs=nnx.Rngs(0)))
    with pytest.raises(TypeError, match="batch must be"):
        jaxseq.export.export_step(jaxseq.nn.GRU(I, H, rngs=nnx.Rngs(0)), batch=2.5)
    exp = jaxseq.export.export_step(jaxseq.nn.GRU(I, H, rngs=nnx.Rngs(0)), batch=3)
    assert str(exp.in_avals[0]) == f"float32[3,{I}]"
