"""Decoding a CharLM with ``jaxseq.nn`` cells (``examples/charlm.py``'s ``CellDecoder``).

On small untrained models (each cell kind, one and two layers, float64): the logits of
the cells stepped one token at a time equal the scanned layer's logits over the whole
sequence, and so does the final state; the state is interchangeable with the scanned
model's; greedy decoding with the cells equals greedy decoding by rerunning the scanned
model on the growing sequence.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxseq

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
V, E, H, N, T = 13, 5, 6, 3, 7
TOL = 1e-12


@pytest.fixture(scope="module")
def charlm():
    sys.path.insert(0, str(EXAMPLES))
    try:
        import charlm
    finally:
        sys.path.remove(str(EXAMPLES))
    return charlm


def make_model(cell: str, num_layers: int) -> jaxseq.models.CharLM:
    return jaxseq.models.CharLM(
        V,
        embed_dim=E,
        hidden_size=H,
        cell=cell,
        num_layers=num_layers,
        param_dtype=jnp.float64,
        rngs=nnx.Rngs(num_layers),
    )


CASES = [(c, n) for c in ("rnn", "lstm", "gru") for n in (1, 2)]


@pytest.mark.parametrize(("cell", "num_layers"), CASES, ids=[f"{c}-L{n}" for c, n in CASES])
def test_stepped_cells_equal_the_scanned_layer(charlm, cell, num_layers):
    model = make_model(cell, num_layers)
    tokens = np.random.default_rng(0).integers(0, V, (N, T)).astype(np.int32)
    want_logits, want_state = model(jnp.asarray(tokens))  # (N, T, V)

    dec = charlm.CellDecoder(model)
    hx, steps = None, []
    for t in range(T):
        logits, hx = dec.step(tokens[:, t], hx)
        assert logits.shape == (N, V) and logits.dtype == jnp.float64
        steps.append(logits)
    got = jnp.stack(steps, axis=1)
    np.testing.assert_allclose(got, want_logits, rtol=TOL, atol=TOL)
    for g, w in zip(jax.tree.leaves(hx), jax.tree.leaves(want_state), strict=True):
        assert g.shape == w.shape == (num_layers, N, H)
        np.testing.assert_allclose(g, w, rtol=TOL, atol=TOL)

    # The state is the model's: prime with the scanned model, continue with the cells.
    head, tail = tokens[:, :4], tokens[:, 4:]
    _, mid = model(jnp.asarray(head))
    cont = []
    for t in range(tail.shape[1]):
        logits, mid = dec.step(tail[:, t], mid)
        cont.append(logits)
    np.testing.assert_allclose(jnp.stack(cont, axis=1), want_logits[:, 4:], rtol=TOL, atol=TOL)


@pytest.mark.parametrize(("cell", "num_layers"), CASES, ids=[f"{c}-L{n}" for c, n in CASES])
def test_greedy_decoding_with_cells_equals_rerunning_the_scanned_model(charlm, cell, num_layers):
    model = make_model(cell, num_layers)
    prompt = [3, 1, 4, 1]
    n = 10
    got = charlm.CellDecoder(model).sample(prompt, n, 0.0, np.random.default_rng(0))

    # Reference: rerun the whole scanned model on the sequence so far, take the argmax
    # of the last position. The model is causal, so one fixed-length buffer (zeros after
    # the sequence) gives the same logits at the position read, with one compilation.
    graphdef, state = nnx.split(model)

    @jax.jit
    def logits_of(state, tokens):
        return nnx.merge(graphdef, state)(tokens)[0][0]  # (T, V)

    seq = list(prompt)
    buf = np.zeros((1, len(prompt) + n), np.int32)
    for _ in range(n):
        buf[0, : len(seq)] = seq
        seq.append(int(np.argmax(np.asarray(logits_of(state, buf))[len(seq) - 1])))
    assert got == seq[len(prompt) :]


def test_sample_with_temperature_matches_the_scanned_sampler(charlm):
    """The example's JAX sampling path (cells) and the per-step scanned path draw alike."""
    model = make_model("lstm", 2)
    prompt = np.array([2, 7, 7], np.int32)
    a = charlm.CellDecoder(model).sample(prompt, 12, 0.8, np.random.default_rng(5))

    # The scanned model, fed one id at a time with its state carried (T = 1 per call).
    graphdef, state = nnx.split(model)
    step = jax.jit(lambda s, tok, hx: nnx.merge(graphdef, s)(tok, hx))
    rng, hx = np.random.default_rng(5), None
    for i in prompt[:-1]:
        _, hx = step(state, jnp.array([[i]], jnp.int32), hx)
    cur, b = int(prompt[-1]), []
    for _ in range(12):
        logits, hx = step(state, jnp.array([[cur]], jnp.int32), hx)
        cur = charlm._draw(np.asarray(logits[0, -1], np.float64), 0.8, rng)
        b.append(cur)
    assert a == b


def test_empty_prompt_or_bidirectional_layer_is_a_clear_error(charlm):
    model = make_model("gru", 1)
    with pytest.raises(charlm.ExampleError, match="--prompt must not be empty"):
        charlm.CellDecoder(model).sample([], 3, 0.0, np.random.default_rng(0))
    model.rnn = jaxseq.nn.GRU(E, H, bidirectional=True, batch_first=True, rngs=nnx.Rngs(0))
    with pytest.raises(charlm.ExampleError, match="bidirectional layer cannot decode"):
        charlm.CellDecoder(model)
