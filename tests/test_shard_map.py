"""The layers are mesh-correct: inside ``jax.shard_map`` with its default ``check_vma=True``
(batch sharded over a mesh axis, weights replicated) and under ``jax.jit`` with a
batch-sharded ``NamedSharding``, values and gradients equal the single-device ones.

JAX fixes its device count at first use, so the check runs in a fresh interpreter with
two host devices (``jax_num_cpu_devices=2``), bounded in time.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent(
    """
    import functools
    import jax
    jax.config.update("jax_num_cpu_devices", 2)
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    import jaxseq

    assert jax.device_count() == 2
    # XLA's LLVM backend at -O0: the compiles dominate, the programs are tiny.
    JIT = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((6, 4, 3)))  # (T, N, I), N split over 2 devices
    lengths = jnp.array([6, 2, 0, 4])
    worst = 0.0

    def check(a, b, what):
        global worst
        for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            err = float(jnp.max(jnp.abs(u - v))) if u.size else 0.0
            assert err <= 1e-12, (what, err)
            worst = max(worst, err)

    # Every distinct path: on the CPU "fused" is the LSTM's and GRU's "fused_loop" and the
    # RNN's "fused_hoisted", so each kind runs "fused" and the other projection; the
    # reference scan is one generic path, run once.
    IMPLS = {
        "rnn": ("fused", "fused_loop"),
        "lstm": ("fused", "fused_hoisted", "reference"),
        "gru": ("fused", "fused_hoisted"),
    }
    assert jaxseq.fused.default_projection("lstm") == "loop"
    assert jaxseq.fused.default_projection("rnn") == "hoisted"
    for kind, impls in IMPLS.items():
        for impl in impls:
            params = jaxseq.init_params(
                jax.random.key(1), kind, 3, 4, 2, bidirectional=True, dtype=jnp.float64
            )

            def loss(p, x, lengths):
                out, state = jaxseq.run_stack(kind, p, x, None, lengths, impl=impl)
                return jnp.sum(jnp.sin(out)) + sum(jnp.sum(s**2) for s in jax.tree.leaves(state))

            def local(p, x, lengths):  # each device: its slice; psum gives the whole batch
                value, grads = jax.value_and_grad(loss)(p, x, lengths)
                return jax.lax.psum(value, "batch"), grads

            sharded = JIT(
                jax.shard_map(
                    local, mesh=mesh, in_specs=(P(), P(None, "batch"), P("batch")), out_specs=P()
                )
            )
            ref = JIT(jax.value_and_grad(loss))(params, x, lengths)
            check(sharded(params, x, lengths), ref, (kind, impl, "shard_map"))

            xs = jax.device_put(x, NamedSharding(mesh, P(None, "batch")))
            ls = jax.device_put(lengths, NamedSharding(mesh, P("batch")))
            check(JIT(jax.value_and_grad(loss))(params, xs, ls), ref, (kind, impl, "jit"))

    # An NNX module with hx, batch-first, inside shard_map.
    lstm = jaxseq.nn.LSTM(3, 4, batch_first=True, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(lstm)
    xb = jnp.swapaxes(x, 0, 1)
    h0 = jnp.asarray(rng.standard_normal((1, 4, 4)))
    c0 = jnp.asarray(rng.standard_normal((1, 4, 4)))

    def module_loss(state, xb, h0, c0, lengths):
        out, (h, c) = nnx.merge(graphdef, state)(xb, (h0, c0), lengths)
        return jnp.sum(out**2) + jnp.sum(h * c)

    def module_local(*args):
        value, grads = jax.value_and_grad(module_loss)(*args)
        return jax.lax.psum(value, "batch"), grads

    specs = (P(), P("batch"), P(None, "batch"), P(None, "batch"), P("batch"))
    f = JIT(jax.shard_map(module_local, mesh=mesh, in_specs=specs, out_specs=P()))
    check(f(state, xb, h0, c0, lengths), JIT(jax.value_and_grad(module_loss))(state, xb, h0, c0, lengths), "module")

    # Episode resets (batch-sharded like x) on the fused path, with reset_hx.
    resets = jnp.asarray(rng.random((4, 6)) < 0.3)  # (N, T), batch-first like xb
    r0 = jnp.asarray(rng.standard_normal((1, 4, 4)))

    def reset_loss(state, xb, h0, c0, lengths, resets, r0):
        m = nnx.merge(graphdef, state)
        out, (h, c) = m(xb, (h0, c0), lengths, resets=resets, reset_hx=(r0, jnp.zeros_like(c0)))
        return jnp.sum(out**2) + jnp.sum(h * c)

    def reset_local(*args):
        value, grads = jax.value_and_grad(reset_loss)(*args)
        return jax.lax.psum(value, "batch"), grads

    f = JIT(
        jax.shard_map(reset_local, mesh=mesh, in_specs=specs + (P("batch"), P(None, "batch")), out_specs=P())
    )
    args = (state, xb, h0, c0, lengths, resets, r0)
    check(f(*args), JIT(jax.value_and_grad(reset_loss))(*args), "resets")
    print(f"ok worst {worst:.1e}")
    """
)


def test_layers_under_shard_map_and_sharded_jit():
    r = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr[-4000:]
    assert r.stdout.startswith("ok worst"), r.stdout
