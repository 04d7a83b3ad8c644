"""Parity grid: jaxseq's functional RNN / LSTM / GRU against torch.nn, values and gradients.

Factors: kind (RNN tanh, RNN relu, LSTM, LSTM with proj_size, GRU) x layers 1-3 x
bidirectional x batch_first x bias x lengths (none, unsorted, duplicates with 0 and T,
all T) x hx given or not x float64 / float32 x unbatched, and every case runs with each
registered layer implementation (``"reference"`` and ``"fused"``).

The full product has 3,840 cases per implementation and JAX compilation dominates each,
so the grid is a seeded covering array: every pair of factor values occurs in some case,
and so does every kind x layers x directions triple and the reverse direction with
lengths for every kind and layer count. Lengths are traced values, so a case with
lengths runs all three patterns through one compiled program (and checks that it did
not recompile). Each case compares the output, ``h_n`` (and ``c_n``), the gradient into
``x``, into every parameter and into ``hx`` (when given) under random cotangents on the
output and final states, against torch with
``pack_padded_sequence(..., enforce_sorted=False)`` (rows of length 0, which torch
refuses, are run without them; see ``_torch_ref``). float64 must agree to 1e-12 and
float32 to 1e-5, absolute. The worst errors are printed at the end of the module.
"""

from __future__ import annotations

import collections
import functools
import itertools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _torch_ref import KINDS, Structure, random_params, run_torch

import jaxseq
from jaxseq.impls import impls_for
from jaxseq.recurrences import get

TOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}
IMPLS = ("reference", "fused")
assert all(i in impls_for(get("lstm")) for i in IMPLS)

FACTORS: dict[str, tuple[Any, ...]] = {
    "kind": tuple(KINDS),
    "layers": (1, 2, 3),
    "bidirectional": (False, True),
    "batch_first": (False, True),
    "bias": (False, True),
    "lengths": ("none", "given"),
    "hx": (False, True),
    "dtype": ("float64", "float32"),
    "unbatched": (False, True),
}
#: With lengths given, one compiled program runs every pattern (lengths are traced values).
#: Batched: unsorted distinct; duplicates including 0 and T; all T. Unbatched (a 0-d
#: length): 0 < length < T; 0; T.
PATTERNS = ("unsorted", "dups", "full")
SEED = 20240611


def _cost(c: dict[str, Any]) -> int:
    """Compile time grows with the number of scans: layers x directions."""
    return c["layers"] * (2 if c["bidirectional"] else 1)


def _pairwise_cases(seed: int) -> list[dict[str, Any]]:
    """A seeded greedy covering array: every pair of factor values occurs in some case.

    Each step draws candidates and keeps the one covering the most uncovered pairs per
    unit of compile cost, so the grid stays small (JAX compile time dominates a case).
    """
    rng = np.random.default_rng(seed)
    names = list(FACTORS)
    pairs = list(itertools.combinations(names, 2))
    uncovered = {((a, va), (b, vb)) for a, b in pairs for va in FACTORS[a] for vb in FACTORS[b]}
    # Triples that matter beyond pairs: the reverse direction with lengths, per kind and
    # for batched and unbatched input.
    uncovered |= {
        (("kind", k), ("bidirectional", True), ("lengths", "given")) for k in FACTORS["kind"]
    }
    uncovered |= {
        (("bidirectional", True), ("lengths", "given"), ("unbatched", u)) for u in (False, True)
    }
    uncovered |= {
        (("layers", n), ("bidirectional", True), ("lengths", "given")) for n in FACTORS["layers"]
    }
    # Every stack shape of every kind: kind x layers x directions.
    uncovered |= {
        (("kind", k), ("layers", n), ("bidirectional", b))
        for k in FACTORS["kind"]
        for n in FACTORS["layers"]
        for b in (False, True)
    }
    triples = [tuple(k for k, _ in t) for t in uncovered if len(t) == 3]
    cases = []
    while uncovered:
        best, best_score = None, -1.0
        for _ in range(200):
            cand = {n: FACTORS[n][rng.integers(len(FACTORS[n]))] for n in names}
            gain = sum(((a, cand[a]), (b, cand[b])) in uncovered for a, b in pairs)
            gain += sum(tuple((n, cand[n]) for n in t) in uncovered for t in set(triples))
            score = gain / (_cost(cand) + 2)
            if score > best_score:
                best, best_score = cand, score
        uncovered -= {((a, best[a]), (b, best[b])) for a, b in pairs}
        uncovered -= {tuple((n, best[n]) for n in t) for t in set(triples)}
        cases.append(best)
    return cases


CASES = _pairwise_cases(SEED)
NUM_CASES = len(CASES)


def _case_id(i: int, c: dict[str, Any]) -> str:
    return (
        f"{i:02d}-{c['kind']}-L{c['layers']}-{'bi' if c['bidirectional'] else 'uni'}"
        f"-{'bf' if c['batch_first'] else 'tm'}-{'bias' if c['bias'] else 'nobias'}"
        f"-len_{c['lengths']}-{'hx' if c['hx'] else 'nohx'}-{c['dtype']}"
        f"{'-unbatched' if c['unbatched'] else ''}"
    )


def _lengths(pattern: str, T: int, N: int, rng: np.random.Generator, unbatched: bool):
    """Concrete lengths for a pattern; 0-d for unbatched input (a batch of one)."""
    if unbatched:
        value = {"unsorted": rng.integers(1, T), "dups": 0, "full": T}[pattern]
        return np.asarray(value, np.int32)
    if pattern == "full":
        return np.full(N, T, np.int32)
    if pattern == "unsorted":
        v = rng.choice(np.arange(1, T + 1), size=N, replace=False)
        while np.all(np.diff(v) <= 0) or np.all(np.diff(v) >= 0):
            v = rng.permutation(v)
        return v.astype(np.int32)
    # duplicates, including 0 and the full T
    m = int(rng.integers(1, T))
    return rng.permutation(np.array([0, T, m, m, 0, T][:N])).astype(np.int32)


@functools.cache
def _case_data(index: int):
    """Structure, inputs, cotangents and, per lengths pattern, the torch result of a case.

    Returns ``(s, params, x, hx, cot, runs)`` with ``runs`` a list of ``(lengths, ref)``;
    cached, so both implementations are held against the same torch runs.
    """
    c = CASES[index]
    rng = np.random.default_rng(SEED + index)
    dtype = np.dtype(c["dtype"])
    H = int(rng.integers(3, 6))
    s = Structure(
        kind=c["kind"],
        input_size=int(rng.integers(2, 5)),
        hidden_size=H,
        num_layers=c["layers"],
        bias=c["bias"],
        batch_first=c["batch_first"],
        bidirectional=c["bidirectional"],
        proj_size=int(rng.integers(1, H)) if c["kind"] == "lstm_proj" else 0,
    )
    T, N = int(rng.integers(5, 7)), int(rng.integers(4, 6))
    LD, Hout = s.num_layers * s.num_directions, s.output_size
    params = random_params(s, rng, dtype)
    if c["unbatched"]:
        x = rng.standard_normal((T, s.input_size))
        bshape: tuple[int, ...] = ()
    else:
        x = rng.standard_normal((N, T, s.input_size) if s.batch_first else (T, N, s.input_size))
        bshape = (N,)
    x = x.astype(dtype)
    hx = None
    if c["hx"]:
        h0 = (0.5 * rng.standard_normal((LD, *bshape, Hout))).astype(dtype)
        if s.jax_kind == "lstm":
            hx = (h0, (0.5 * rng.standard_normal((LD, *bshape, H))).astype(dtype))
        else:
            hx = h0
    out_shape = list(x.shape)
    out_shape[-1] = s.num_directions * Hout
    cot = {
        "out": rng.standard_normal(out_shape).astype(dtype),
        "h": rng.standard_normal((LD, *bshape, Hout)).astype(dtype),
    }
    if s.jax_kind == "lstm":
        cot["c"] = rng.standard_normal((LD, *bshape, H)).astype(dtype)
    if c["lengths"] == "none":
        all_lengths = [None]
    else:
        all_lengths = [_lengths(p, T, N, rng, c["unbatched"]) for p in PATTERNS]
    runs = [(ln, run_torch(s, params, x, hx, ln, cot)) for ln in all_lengths]
    return s, params, x, hx, cot, runs


@functools.cache
def _jax_fn(kind: str, nonlinearity: str, batch_first: bool, impl: str):
    """A jitted forward + VJP, shared by every case with these static arguments."""
    fn = {
        "rnn": functools.partial(jaxseq.rnn, nonlinearity=nonlinearity),
        "lstm": jaxseq.lstm,
        "gru": jaxseq.gru,
    }[kind]

    @jax.jit
    def run(params, x, hx, lengths, cot):
        TRACES[(kind, nonlinearity, batch_first, impl)] += 1

        def f(params, x, hx):
            return fn(params, x, hx, lengths, batch_first=batch_first, impl=impl)

        primals, vjp = jax.vjp(f, params, x, hx)
        return primals, vjp(cot)

    return run


WORST: dict[tuple[str, str], float] = {}
TRACES: collections.Counter = collections.Counter()


@pytest.fixture(scope="module", autouse=True)
def _report_worst(request):
    yield
    if not WORST:
        return
    lines = ["parity grid worst absolute errors (max over output, states and all gradients):"]
    for (impl, dt), err in sorted(WORST.items()):
        lines.append(f"  impl={impl:9s} {dt:8s} {err:.3e}  (tolerance {TOL[np.dtype(dt)]:.0e})")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capman = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capman is not None:
        with capman.global_and_fixture_disabled():
            reporter.write_line("")
            for line in lines:
                reporter.write_line(line)
    else:  # e.g. under xdist workers: the summary goes to the captured output
        print("\n".join(lines))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    "index", range(NUM_CASES), ids=[_case_id(i, c) for i, c in enumerate(CASES)]
)
def test_parity_with_torch(index: int, impl: str):
    s, params, x, hx, cot, runs = _case_data(index)
    is_lstm = s.jax_kind == "lstm"
    dtype = x.dtype
    run = _jax_fn(s.jax_kind, s.nonlinearity, s.batch_first, impl)
    jparams = {k: jnp.asarray(v) for k, v in params.items()}
    jhx = None if hx is None else jax.tree.map(jnp.asarray, hx)
    jcot = (cot["out"], (cot["h"], cot["c"])) if is_lstm else (cot["out"], cot["h"])
    traces = []
    for lengths, ref in runs:
        jl = None if lengths is None else jnp.asarray(lengths)
        (out, state), (g_params, g_x, g_hx) = run(jparams, jnp.asarray(x), jhx, jl, jcot)
        traces.append(TRACES[(s.jax_kind, s.nonlinearity, s.batch_first, impl)])
        h_n, c_n = state if is_lstm else (state, None)

        pairs = [("output", out, ref.out), ("h_n", h_n, ref.h_n), ("grad x", g_x, ref.grad_x)]
        if is_lstm:
            pairs.append(("c_n", c_n, ref.c_n))
        if hx is not None:
            g_h0, g_c0 = g_hx if is_lstm else (g_hx, None)
            pairs.append(("grad h0", g_h0, ref.grad_h0))
            if is_lstm:
                pairs.append(("grad c0", g_c0, ref.grad_c0))
        assert set(g_params) == set(ref.grad_params)
        pairs += [(f"grad {k}", g_params[k], ref.grad_params[k]) for k in sorted(ref.grad_params)]

        worst = 0.0
        for name, got, want in pairs:
            got = np.asarray(got)
            where = f"{name} (lengths={None if lengths is None else lengths.tolist()})"
            assert got.dtype == dtype, f"{where}: dtype {got.dtype}, expected {dtype}"
            assert got.shape == want.shape, f"{where}: shape {got.shape}, expected {want.shape}"
            err = float(np.max(np.abs(got - want), initial=0.0))
            worst = max(worst, err)
            assert err <= TOL[dtype], f"{where}: max abs error {err:.3e} > {TOL[dtype]:.0e}"
        key = (impl, str(dtype))
        WORST[key] = max(WORST.get(key, 0.0), worst)

        if lengths is not None:
            _check_padding_exact(s, x, hx, lengths, out, h_n, c_n, g_x)
    # One program served every lengths pattern: lengths are traced, never recompiled.
    assert len(set(traces)) == 1, f"retraced when only the lengths changed: {traces}"


def _check_padding_exact(s, x, hx, lengths, out, h_n, c_n, g_x):
    """Exact (not approximate) zeros at padding and h_n == h0 for rows of length 0."""
    out, g_x = np.asarray(out), np.asarray(g_x)
    if x.ndim == 2:  # unbatched: add a batch axis of one, time-major
        out, g_x, x_tm = out[:, None], g_x[:, None], x[:, None]
        lengths = np.asarray(lengths).reshape(1)
        h_n = np.asarray(h_n)[:, None]
        c_n = None if c_n is None else np.asarray(c_n)[:, None]
        hx = None if hx is None else jax.tree.map(lambda a: np.asarray(a)[:, None], hx)
    elif s.batch_first:
        out, g_x, x_tm = out.swapaxes(0, 1), g_x.swapaxes(0, 1), x.swapaxes(0, 1)
    else:
        x_tm = x
    T = x_tm.shape[0]
    pad = np.arange(T)[:, None] >= lengths[None, :]  # (T, N)
    assert np.all(out[pad] == 0), "output at padded steps must be exactly 0"
    assert np.all(g_x[pad] == 0), "gradient into padded inputs must be exactly 0"
    zero = lengths == 0
    if zero.any():
        if hx is None:
            h0 = np.zeros_like(np.asarray(h_n))
            c0 = None if c_n is None else np.zeros_like(np.asarray(c_n))
        else:
            h0, c0 = hx if s.jax_kind == "lstm" else (hx, None)
        np.testing.assert_array_equal(np.asarray(h_n)[:, zero], np.asarray(h0)[:, zero])
        if c_n is not None:
            np.testing.assert_array_equal(np.asarray(c_n)[:, zero], np.asarray(c0)[:, zero])


def test_grid_covers_every_factor_value():
    """The sampled grid holds every value of every factor, for both dtypes."""
    for name, values in FACTORS.items():
        assert {c[name] for c in CASES} == set(values), name
    assert any(c["lengths"] == "given" and not c["unbatched"] for c in CASES)
    patterns = [_lengths(p, 6, 5, np.random.default_rng(0), False) for p in PATTERNS]
    assert 0 in patterns[1] and 6 in patterns[1] and len(set(patterns[1].tolist())) < 5
