"""Long sequences: the ``remat`` option bounds training memory (a small version of the
T=100,000 benchmark in ``benchmarks/long_sequence.py``).

XLA reports the scratch memory a compiled program needs (``memory_analysis``). For a
classifier step on a 1-layer LSTM (loss on the final state), the per-step residuals of a
plain scan grow linearly in T; with ``remat=K`` only the chunk-boundary carries and one
chunk's residuals are kept, so memory grows like T/K + K.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxseq

B, I, H = 4, 8, 64


def _step_temp_bytes(T: int, remat: int | None) -> int:
    params = jaxseq.init_lstm(jax.random.key(0), I, H, dtype=jnp.float32)
    x = jnp.zeros((T, B, I), jnp.float32)
    lengths = jnp.full((B,), T, jnp.int32)

    def loss(p, x, lengths):
        _, (h_n, _) = jaxseq.lstm(p, x, lengths=lengths, remat=remat)
        return jnp.sum(h_n[-1] ** 2)

    compiled = jax.jit(jax.grad(loss)).lower(params, x, lengths).compile()
    analysis = compiled.memory_analysis()
    if analysis is None:  # pragma: no cover - every CPU build so far reports it
        pytest.skip("this backend reports no memory analysis")
    return int(analysis.temp_size_in_bytes)


def test_remat_memory_grows_sublinearly_in_T():
    T = 4096
    gates_bytes = T * B * 4 * H * 4  # what storing every step's gates alone takes (f32)
    plain = _step_temp_bytes(T, None)
    chunked = _step_temp_bytes(T, 64)  # K = sqrt(T)
    # The plain scan keeps per-step residuals: at least the gates of every step.
    assert plain >= gates_bytes
    # remat keeps T/K boundary carries and one chunk: far below the per-step residuals.
    assert chunked < plain / 8, (chunked, plain)
    assert chunked < gates_bytes / 4, (chunked, gates_bytes)


def test_remat_gives_the_same_gradients_at_length_4096():
    T = 4096
    rng = np.random.default_rng(0)
    params = jaxseq.init_lstm(jax.random.key(1), I, H, dtype=jnp.float32)
    x = jnp.asarray(rng.standard_normal((T, B, I)), jnp.float32)
    lengths = jnp.asarray([T, T - 1000, 17, 0], jnp.int32)

    def loss(p, remat):
        _, (h_n, c_n) = jaxseq.lstm(p, x, lengths=lengths, remat=remat)
        return jnp.sum(h_n[-1]) + jnp.sum(c_n[-1] ** 2)

    g_plain = jax.jit(jax.grad(lambda p: loss(p, None)))(params)
    g_remat = jax.jit(jax.grad(lambda p: loss(p, 64)))(params)
    for k in params:
        np.testing.assert_allclose(
            np.asarray(g_remat[k]), np.asarray(g_plain[k]), rtol=1e-5, atol=1e-6
        )
