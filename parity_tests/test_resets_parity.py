"""Episode resets: ``jaxseq.run_stack(..., resets=...)`` against ``torchseq.run_segments``.

``run_segments`` runs every segment of every row as its own sequence through the torch
module (one packed call); jaxseq restarts the carry inside one scan. In float64 the two
agree to 1e-10 on outputs, final states and the gradients of a random linear functional
of them with respect to the input, hx and every parameter, for every kind (the Elman RNN,
the LSTM with and without ``proj_size``, the GRU, minGRU / minLSTM, the layer-normalised
LSTM / GRU), uni- and bidirectional stacks of 1 and 2 layers, lengths with a 0 and a T,
hx given or None, batch_first and unbatched inputs. Every configuration runs on each
kind's first implementation; every other implementation on a configuration drawn with a
fixed seed. ``run_segments`` itself is checked against a per-row, per-segment Python
loop of plain module calls, and without resets against the plain module."""

from __future__ import annotations

import functools
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxseq
import torchseq
from torchseq import run_segments

T, N, I, H, P = 7, 5, 3, 5, 3
LENGTHS = np.array([7, 3, 0, 5, 4])  # a T and a 0
TOL = dict(rtol=1e-10, atol=1e-10)

# kind -> (jaxseq kind, the torch class's constructor)
KINDS: dict[str, tuple[str, Any]] = {
    "rnn": ("rnn", functools.partial(torch.nn.RNN, nonlinearity="tanh")),
    "lstm": ("lstm", torch.nn.LSTM),
    "lstm_proj": ("lstm", functools.partial(torch.nn.LSTM, proj_size=P)),
    "gru": ("gru", torch.nn.GRU),
    "min_gru": ("min_gru", torchseq.MinGRU),
    "min_lstm": ("min_lstm", torchseq.MinLSTM),
    "layernorm_lstm": ("layernorm_lstm", torchseq.LayerNormLSTM),
    "layernorm_gru": ("layernorm_gru", torchseq.LayerNormGRU),
}
CELL = {"lstm", "lstm_proj", "layernorm_lstm"}  # kinds with a cell state (h, c)

# (impl, remat); the first of each list is the one every configuration runs on.
GATED_IMPLS = [
    ("fused", None),
    ("fused_loop", None),
    ("fused_hoisted", None),
    ("unfused", None),
    ("reference", None),
    ("fused", 2),
]
LINEAR_IMPLS = [(i, None) for i in ("fused_scan", "fused_parallel", "fused_chunked")] + [
    ("unfused", None),
    ("reference", None),
]
IMPLS = {
    "rnn": GATED_IMPLS,
    "lstm": GATED_IMPLS,
    "gru": GATED_IMPLS,
    "min_gru": LINEAR_IMPLS,
    "min_lstm": LINEAR_IMPLS,
    "layernorm_lstm": [("fused", None), ("reference", None)],
    "layernorm_gru": [("fused", None), ("reference", None)],
}

# name -> (num_layers, bidirectional, batch_first, random hx (else None), lengths (else None))
CONFIGS: dict[str, tuple[int, bool, bool, bool, bool]] = {
    "2layer-bi": (2, True, False, True, True),
    "1layer-uni-nolengths": (1, False, False, True, False),
    "2layer-uni-hxnone": (2, False, False, False, True),
    "1layer-bi-batchfirst": (1, True, True, True, True),
}


def _resets() -> np.ndarray:
    """(T, N) bool, p = 0.3 from a fixed seed; row segments [3, 2, 0, 4, 1]; a reset at t = 0
    (row 0), at padded steps (rows 1, 2 (length 0) and 4), at a row's last valid step and
    at t = 1 (row 3: one-step first and last segments)."""
    r = np.random.default_rng(8).random((T, N)) < 0.3
    r[0, 0] = True
    r[5, 1] = True  # row 1 has length 3: ignored
    return r


RESETS = _resets()


@pytest.fixture(autouse=True)
def single_thread():
    """One torch thread: these tensors are tiny, and intra-op threads on a busy machine
    cost far more than they save."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _segments(lengths: np.ndarray, resets: np.ndarray) -> list[list[tuple[int, int]]]:
    """Per row, the (start, stop) of its segments."""
    rows = []
    for n, n_len in enumerate(lengths):
        bounds = [0] + [t for t in range(1, n_len) if resets[t, n]] + [n_len]
        rows.append(list(zip(bounds[:-1], bounds[1:], strict=True)) if n_len else [])
    return rows


def test_reset_pattern():
    counts = [len(s) for s in _segments(LENGTHS, RESETS)]
    assert counts == [3, 2, 0, 4, 1]
    assert RESETS[0, 0] and RESETS[5, 1] and RESETS[LENGTHS[3] - 1, 3] and RESETS[1, 3]


def _module(kind: str, num_layers: int, bidirectional: bool, batch_first: bool, seed: int = 0):
    """The float64 torch module; layer norms' gains and biases perturbed (not 1 / 0)."""
    torch.manual_seed(seed)
    m = KINDS[kind][1](
        I,
        H,
        num_layers=num_layers,
        bidirectional=bidirectional,
        batch_first=batch_first,
        dtype=torch.float64,
    )
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.startswith("ln_"):
                p.add_(0.3 * torch.randn_like(p))
    return m


def _sizes(kind: str) -> list[int]:
    """Sizes of the states: [H_out] or [H_out, H]."""
    h_out = P if kind == "lstm_proj" else H
    return [h_out, H] if kind in CELL else [h_out]


def _case(kind: str, cfg: str, seed: int = 0) -> dict[str, Any]:
    """Module, inputs (NumPy, the module's layout), hx and cotangents of one case."""
    L, bi, bf, with_hx, with_lengths = CONFIGS[cfg]
    m = _module(kind, L, bi, bf, seed)
    D = 2 if bi else 1
    rng = np.random.default_rng(seed + 100)
    sizes = _sizes(kind)
    x = rng.normal(size=(N, T, I) if bf else (T, N, I))
    hx = [rng.normal(size=(L * D, N, s)) for s in sizes] if with_hx else None
    resets = RESETS.T.copy() if bf else RESETS.copy()
    cot = {
        "out": rng.normal(size=(N, T, D * sizes[0]) if bf else (T, N, D * sizes[0])),
        "states": [rng.normal(size=(L * D, N, s)) for s in sizes],
    }
    lengths = LENGTHS.copy() if with_lengths else None
    return dict(m=m, x=x, hx=hx, lengths=lengths, resets=resets, cot=cot)


def _quiet(fn, *args, **kw):
    """Mute torch's "LSTM with projections is not supported with oneDNN" notice (it only
    says torch falls back to its default kernel)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LSTM with projections is not supported")
        return fn(*args, **kw)


def _torch_state(kind: str, states: list[torch.Tensor]) -> Any:
    return tuple(states) if kind in CELL else states[0]


@functools.cache
def _torch_result(kind: str, cfg: str) -> dict[str, Any]:
    """run_segments' values and gradients (NumPy) of one case."""
    c = _case(kind, cfg)
    m = c["m"]
    xt = torch.tensor(c["x"], requires_grad=True)
    hts = None if c["hx"] is None else [torch.tensor(h, requires_grad=True) for h in c["hx"]]
    lengths = None if c["lengths"] is None else torch.tensor(c["lengths"])
    out, st = _quiet(
        run_segments,
        m,
        xt,
        None if hts is None else _torch_state(kind, hts),
        lengths,
        torch.tensor(c["resets"]),
    )
    finals = list(st) if kind in CELL else [st]
    loss = (out * torch.tensor(c["cot"]["out"])).sum()
    for f, r in zip(finals, c["cot"]["states"], strict=True):
        loss = loss + (f * torch.tensor(r)).sum()
    _quiet(loss.backward)
    assert xt.grad is not None
    return dict(
        case=c,
        params={k: v.detach().numpy().copy() for k, v in m.state_dict().items()},
        out=out.detach().numpy(),
        states=[f.detach().numpy() for f in finals],
        grad_x=xt.grad.numpy(),
        grad_hx=None if hts is None else [h.grad.numpy() for h in hts],
        grad_params={k: p.grad.numpy().copy() for k, p in m.named_parameters()},
    )


# XLA's LLVM backend at -O0 on CPU: this file runs about a third faster (the compiles
# dominate), and the programs are tiny (1e-10 is far above any rounding it could change).
JIT = functools.partial(
    jax.jit,
    compiler_options=(
        {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else None
    ),
)


@functools.cache
def _jax_grad(kind: str, impl: str, remat: int | None, batch_first: bool):
    """jit(grad) of the same functional; jit itself caches per shape / None-ness."""
    jkind = KINDS[kind][0]
    cell = kind in CELL

    def loss(p, x, hx, lengths, resets, cot):
        out, st = jaxseq.run_stack(
            jkind,
            p,
            x,
            None if hx is None else (tuple(hx) if cell else hx[0]),
            lengths,
            resets=resets,
            batch_first=batch_first,
            impl=impl,
            remat=remat,
        )
        finals = list(st) if cell else [st]
        total = jnp.sum(out * cot["out"])
        for f, r in zip(finals, cot["states"], strict=True):
            total = total + jnp.sum(f * r)
        return total, (out, finals)

    return JIT(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))


def _cases() -> list[Any]:
    """Every configuration on each kind's first impl (the LSTM with ``proj_size``: the
    2-layer bidirectional one); every other impl on one bidirectional configuration
    drawn with a fixed seed (the reverse directions restart at resets too)."""
    rng = np.random.default_rng(2024)
    bidirectional = [name for name, cfg in CONFIGS.items() if cfg[1]]
    cases = []
    for kind in KINDS:
        impls = IMPLS[KINDS[kind][0]]
        if kind == "lstm_proj":
            cases.append((kind, *impls[0], "2layer-bi"))
            continue
        cases += [(kind, *impls[0], cfg) for cfg in CONFIGS]
        for impl, remat in impls[1:]:
            cases.append((kind, impl, remat, bidirectional[int(rng.integers(len(bidirectional)))]))
    return [
        pytest.param(k, i, r, c, id=f"{k}-{i}{'-remat2' if r else ''}-{c}") for k, i, r, c in cases
    ]


@pytest.mark.parametrize("kind, impl, remat, cfg", _cases())
def test_jax_equals_run_segments(kind, impl, remat, cfg):
    ref = _torch_result(kind, cfg)
    c = ref["case"]
    bf = CONFIGS[cfg][2]
    params = {k: jnp.asarray(v) for k, v in ref["params"].items()}
    hx = None if c["hx"] is None else [jnp.asarray(h) for h in c["hx"]]
    lengths = None if c["lengths"] is None else jnp.asarray(c["lengths"])
    cot = {
        "out": jnp.asarray(c["cot"]["out"]),
        "states": [jnp.asarray(r) for r in c["cot"]["states"]],
    }
    (gp, gx, ghx), (out, finals) = _jax_grad(kind, impl, remat, bf)(
        params, jnp.asarray(c["x"]), hx, lengths, jnp.asarray(c["resets"]), cot
    )
    _assert_close(out, ref["out"], "output", bf)
    for j, (f, f_t) in enumerate(zip(finals, ref["states"], strict=True)):
        _assert_close(f, f_t, ["h_n", "c_n"][j], bf, time=False)
    _assert_close(gx, ref["grad_x"], "grad x", bf)
    if hx is None:
        assert ghx is None
    else:
        for j, (g, g_t) in enumerate(zip(ghx, ref["grad_hx"], strict=True)):
            _assert_close(g, g_t, ["grad h0", "grad c0"][j], bf, time=False)
    assert sorted(gp) == sorted(ref["grad_params"])
    for k in gp:
        np.testing.assert_allclose(gp[k], ref["grad_params"][k], err_msg=f"grad {k}", **TOL)
    # row 2 has length 0: zero output, h_n = h0
    row2 = np.asarray(out)[2] if bf else np.asarray(out)[:, 2]
    if c["lengths"] is not None:
        np.testing.assert_array_equal(row2, 0.0)
        h0 = np.zeros_like(ref["states"][0][:, 2]) if c["hx"] is None else c["hx"][0][:, 2]
        np.testing.assert_array_equal(np.asarray(finals[0])[:, 2], h0)


def _assert_close(a: Any, b: np.ndarray, what: str, batch_first: bool, time: bool = True):
    """assert_allclose, naming the (time step, row) or (layer-direction, row) that differ."""
    a = np.asarray(a)
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    if np.allclose(a, b, **TOL):
        return
    diff = np.abs(a - b)
    bad = np.argwhere(~np.isclose(a, b, **TOL))
    if time:
        where = sorted(
            {(int(i[1]), int(i[0])) if batch_first else (int(i[0]), int(i[1])) for i in bad}
        )
        label = "(t, n)"
    else:
        where = sorted({(int(i[0]), int(i[1])) for i in bad})
        label = "(layer*D+d, n)"
    raise AssertionError(f"{what}: max abs diff {diff.max():.3g}; differs at {label} {where}")


@pytest.mark.parametrize("kind", ["lstm", "min_gru"])
def test_jax_equals_run_segments_unbatched(kind):
    """Unbatched (T, I) input with (T,) resets, 2 bidirectional layers."""
    m = _module(kind, 2, True, False, seed=5)
    rng = np.random.default_rng(5)
    sizes = _sizes(kind)
    x = rng.normal(size=(T, I))
    hx = [rng.normal(size=(4, s)) for s in sizes]
    resets = RESETS[:, 0].copy()
    xt = torch.tensor(x, requires_grad=True)
    hts = [torch.tensor(h, requires_grad=True) for h in hx]
    out_t, st_t = run_segments(m, xt, _torch_state(kind, hts), resets=torch.tensor(resets))
    fin_t = list(st_t) if kind in CELL else [st_t]
    (out_t.sum() + sum(f.square().sum() for f in fin_t)).backward()

    jkind, cell = KINDS[kind][0], kind in CELL
    params = {k: jnp.asarray(v.detach().numpy()) for k, v in m.state_dict().items()}

    def loss(p, x, hx):
        out, st = jaxseq.run_stack(
            jkind, p, x, tuple(hx) if cell else hx[0], resets=jnp.asarray(resets)
        )
        fin = list(st) if cell else [st]
        return jnp.sum(out) + sum(jnp.sum(jnp.square(f)) for f in fin), (out, fin)

    (gp, gx, ghx), (out, fin) = JIT(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))(
        params, jnp.asarray(x), [jnp.asarray(h) for h in hx]
    )
    np.testing.assert_allclose(out, out_t.detach().numpy(), **TOL)
    for f, f_t in zip(fin, fin_t, strict=True):
        np.testing.assert_allclose(f, f_t.detach().numpy(), **TOL)
    np.testing.assert_allclose(gx, xt.grad.numpy(), **TOL)
    for g, h in zip(ghx, hts, strict=True):
        np.testing.assert_allclose(g, h.grad.numpy(), **TOL)
    for k, p in m.named_parameters():
        np.testing.assert_allclose(gp[k], p.grad.numpy(), err_msg=k, **TOL)


# --- run_segments alone ---------------------------------------------------------------


def _loop_reference(m, kind, x, hx, lengths, resets):
    """The obvious version: per row, per segment, a plain module call on that segment
    alone; outputs concatenated, h_n picked per direction. A segment starts from the
    row's hx where it continues the row (forward directions: the first segment, unless a
    reset starts it; reverse directions: the last), else from zeros (a new episode)."""
    cell, bf, unbatched = kind in CELL, m.batch_first, x.dim() == 2
    xt = x.unsqueeze(1) if unbatched else (x.transpose(0, 1) if bf else x)
    r = resets[:, None] if unbatched else (resets.T if bf else resets)
    n_rows = xt.shape[1]
    D = 2 if m.bidirectional else 1
    LD = m.num_layers * D
    sizes = _sizes(kind)
    if hx is None:
        states = [xt.new_zeros(LD, n_rows, s) for s in sizes]
    else:
        states = list(hx) if cell else [hx]
        states = [s.unsqueeze(1) if unbatched else s for s in states]
    lens = [T] * n_rows if lengths is None else [int(v) for v in lengths]
    segs = _segments(np.array(lens), r.numpy())
    out_rows, fin_rows = [], []
    for n in range(n_rows):
        if not segs[n]:
            out_rows.append(xt.new_zeros(T, D * sizes[0]))
            fin_rows.append([s[:, n] for s in states])
            continue
        pieces, fins = [], []
        for i, (a, b) in enumerate(segs[n]):
            seg = xt[a:b, n : n + 1]
            fwd_hx = i == 0 and not bool(r[a, n])
            rev_hx = i == len(segs[n]) - 1
            st0 = [
                torch.stack(
                    [
                        s[k, n : n + 1]
                        if (rev_hx if k % D else fwd_hx)
                        else s.new_zeros(s.shape[2:])[None]
                        for k in range(LD)
                    ]
                )
                for s in states
            ]
            o, f = m(seg.transpose(0, 1) if bf else seg, _torch_state(kind, st0))
            pieces.append((o.transpose(0, 1) if bf else o)[:, 0])
            fins.append(list(f) if cell else [f])
        pieces.append(xt.new_zeros(T - lens[n], D * sizes[0]))
        out_rows.append(torch.cat(pieces))
        fin_rows.append(
            [
                torch.stack([fins[0 if k % D else -1][j][k, 0] for k in range(LD)])
                for j in range(len(sizes))
            ]
        )
    out = torch.stack(out_rows, dim=1)
    finals = [torch.stack([fr[j] for fr in fin_rows], dim=1) for j in range(len(sizes))]
    if unbatched:
        out, finals = out.squeeze(1), [f.squeeze(1) for f in finals]
    elif bf:
        out = out.transpose(0, 1)
    return out, (tuple(finals) if cell else finals[0])


def _values_and_grads(fn, kind, x, hx, seed=0):
    """fn(x, hx) -> (out, state): values, and the grads of x, hx and the parameters of a
    random functional."""
    xt = torch.tensor(x, requires_grad=True)
    hts = [torch.tensor(h, requires_grad=True) for h in hx]
    out, st = _quiet(fn, xt, _torch_state(kind, hts))
    finals = list(st) if kind in CELL else [st]
    g = torch.Generator().manual_seed(seed)
    loss = sum((v * torch.randn(v.shape, generator=g, dtype=v.dtype)).sum() for v in [out, *finals])
    _quiet(loss.backward)
    return [out.detach(), *[f.detach() for f in finals], xt.grad, *[h.grad for h in hts]]


def _close(a, b, tol=1e-12):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("layout", ["time-major", "batch-first", "unbatched"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_run_segments_equals_segment_loop(kind, layout):
    m = _module(kind, 2, True, layout == "batch-first", seed=1)
    rng = np.random.default_rng(1)
    sizes = _sizes(kind)
    if layout == "unbatched":
        x, lengths, resets = rng.normal(size=(T, I)), None, torch.tensor(RESETS[:, 3])
        hx = [rng.normal(size=(4, s)) for s in sizes]
    else:
        x = rng.normal(size=(N, T, I) if layout == "batch-first" else (T, N, I))
        hx = [rng.normal(size=(4, N, s)) for s in sizes]
        lengths = torch.tensor(LENGTHS)
        resets = torch.tensor(RESETS.T.copy() if layout == "batch-first" else RESETS)

    def grads_of_params():
        return {k: p.grad.clone() for k, p in m.named_parameters()}

    m.zero_grad()
    got = _values_and_grads(lambda x, h: run_segments(m, x, h, lengths, resets), kind, x, hx)
    got_p = grads_of_params()
    m.zero_grad()
    ref = _values_and_grads(
        lambda x, h: _loop_reference(m, kind, x, h, lengths, resets), kind, x, hx
    )
    ref_p = grads_of_params()
    for a, b in zip(got, ref, strict=True):
        _close(a, b)
    for k in ref_p:
        _close(got_p[k], ref_p[k])
    if layout != "unbatched":  # no gradient into padded inputs
        grad_x = got[1 + len(sizes)]
        pad = np.arange(T)[:, None] >= LENGTHS[None, :]
        pad_t = torch.tensor(pad.T.copy() if layout == "batch-first" else pad)
        assert float(grad_x[pad_t].abs().max()) == 0.0


@pytest.mark.parametrize("kind", list(KINDS))
def test_no_resets_equals_module(kind):
    """resets=None and all-False resets are the plain module call (and, for torchseq's
    modules, the plain call with lengths)."""
    m = _module(kind, 2, True, False, seed=2)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(T, N, I))
    hx = [rng.normal(size=(4, N, s)) for s in _sizes(kind)]
    no = torch.zeros(T, N, dtype=torch.bool)
    ref = _values_and_grads(lambda x, h: m(x, h), kind, x, hx)
    for resets in (None, no):
        got = _values_and_grads(lambda x, h, r=resets: run_segments(m, x, h, resets=r), kind, x, hx)
        for a, b in zip(got, ref, strict=True):
            _close(a, b)
    if kind.startswith(("min_", "layernorm_")):
        lengths = torch.tensor(LENGTHS)
        ref = _values_and_grads(lambda x, h: m(x, h, lengths), kind, x, hx)
        got = _values_and_grads(lambda x, h: run_segments(m, x, h, lengths, resets=no), kind, x, hx)
        for a, b in zip(got, ref, strict=True):
            _close(a, b)


def test_resets_only_at_t0_or_padding_change_nothing():
    m = _module("lstm", 1, True, False)
    x = torch.randn(T, N, I, dtype=torch.float64)
    lengths = torch.tensor(LENGTHS)
    ignored = torch.zeros(T, N, dtype=torch.bool)
    ignored[0] = True
    ignored[LENGTHS[1] :, 1] = True
    ignored[:, 2] = True
    a = run_segments(m, x, lengths=lengths)
    b = run_segments(m, x, lengths=lengths, resets=ignored)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_all_rows_length_zero():
    m = _module("gru", 2, True, False)
    x = torch.randn(T, 2, I, dtype=torch.float64)
    h0 = torch.randn(4, 2, H, dtype=torch.float64, requires_grad=True)
    out, h_n = run_segments(m, x, h0, torch.tensor([0, 0]), torch.ones(T, 2, dtype=torch.bool))
    assert out.shape == (T, 2, 2 * H) and float(out.abs().max()) == 0.0
    torch.testing.assert_close(h_n, h0, rtol=0, atol=0)
    h_n.sum().backward()
    assert h0.grad is not None and bool((h0.grad == 1).all())


def test_validation():
    m = torch.nn.GRU(I, H, dtype=torch.float64)
    x = torch.randn(T, N, I, dtype=torch.float64)
    with pytest.raises(TypeError, match="bool"):
        run_segments(m, x, resets=torch.zeros(T, N))
    with pytest.raises(TypeError, match="bool"):
        run_segments(m, x, resets="no")
    with pytest.raises(ValueError, match=r"\(T, N\)"):
        run_segments(m, x, resets=torch.zeros(N, T, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(T,\)"):
        run_segments(m, x[:, 0], resets=torch.zeros(T, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(N, T\)"):
        mb = torch.nn.GRU(I, H, batch_first=True, dtype=torch.float64)
        run_segments(mb, x.transpose(0, 1), resets=torch.zeros(T, N, dtype=torch.bool))
    with pytest.raises(ValueError, match="lengths"):
        run_segments(m, x, lengths=torch.tensor([1, 2, 3, 4, T + 1]))
    with pytest.raises(ValueError, match="lengths"):
        run_segments(m, x, lengths=torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="lengths"):
        run_segments(m, x, lengths=torch.ones(N))
    with pytest.raises(ValueError, match="hidden size"):
        run_segments(m, x, torch.zeros(1, N + 1, H, dtype=torch.float64))
    with pytest.raises(ValueError, match="pair"):
        run_segments(torch.nn.LSTM(I, H, dtype=torch.float64), x, torch.zeros(1, N, H))
    with pytest.raises(TypeError, match="module"):
        run_segments(torch.nn.Linear(I, H), x)
    with pytest.raises(ValueError, match="2D or 3D"):
        run_segments(m, x[None])
    # numpy and nested-list resets are accepted, as jaxseq accepts them
    r = RESETS[:, :N]
    out_np = run_segments(m, x, resets=r)[0]
    out_list = run_segments(m, x, resets=r.tolist())[0]
    torch.testing.assert_close(out_np, run_segments(m, x, resets=torch.tensor(r))[0])
    torch.testing.assert_close(out_list, out_np)
