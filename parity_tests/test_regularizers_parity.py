"""Recurrent regularisers as explicit masks: ``jaxseq.run_stack(..., masks=...)`` against
``torchseq.run_regularized``.

``run_regularized`` is a plain Python loop over layers, directions and steps. It is
checked first on its own: with no masks (and with all-ones dropout masks and zero
zoneout) it is the module's own forward (packed for lengths); an input mask is the
module on ``x * mask``; a weight mask is the module with the weight replaced
(``torch.func.functional_call``); an output mask on one layer scales the module's
output; a hidden-state mask with one row per direction is a column mask of the weight;
all-ones zoneout freezes the state at ``hx``; zoneout 0.5 on one step averages ``hx``
and the module's step; resets equal ``torchseq.run_segments``, and with masks a
per-segment loop; for ``torchseq.LayerNormLSTM`` / ``LayerNormGRU`` with no masks it is
the module's own forward. Then jaxseq matches it in float64 at 1e-12 on outputs, final
states and the gradients of a random linear functional of them with respect to the
input, hx and every parameter, for the Elman RNN, the LSTM (also with ``proj_size``), the
GRU and the layer-normalised LSTM and GRU (on a sample of the grid), uni- and bidirectional stacks of 1 and 2 layers, lengths with a 0 and a T, random
hx, every mask key at once (random scaled dropout masks, random binary zoneout), each
key alone, with resets, and batch-first: every configuration on ``impl="fused"``,
``"fused_loop"``, ``"fused_hoisted"`` and ``"fused"`` with ``remat=2`` on configurations
drawn with a fixed seed. ``"unfused"`` and ``"reference"`` match on the masks outside
the recurrence (input, output, weight) and raise ValueError for hidden / zoneout masks.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import jaxseq
import torchseq
from torchseq import draw_masks, run_regularized, run_segments

T, N, I, H, P = 6, 5, 3, 4, 3
LENGTHS = np.array([6, 3, 0, 5, 1])  # a T and a 0
TOL = 1e-12

# kind -> (jaxseq kind, torch constructor)
KINDS: dict[str, tuple[str, Any]] = {
    "rnn": ("rnn", functools.partial(torch.nn.RNN, nonlinearity="tanh")),
    "rnn_relu": ("rnn", functools.partial(torch.nn.RNN, nonlinearity="relu")),
    "lstm": ("lstm", torch.nn.LSTM),
    "lstm_proj": ("lstm", functools.partial(torch.nn.LSTM, proj_size=P)),
    "gru": ("gru", torch.nn.GRU),
    "layernorm_lstm": ("layernorm_lstm", torchseq.LayerNormLSTM),
    "layernorm_gru": ("layernorm_gru", torchseq.LayerNormGRU),
}
CELL = {"lstm", "lstm_proj", "layernorm_lstm"}
#: The torch.nn modules (the references below run them on packed sequences).
NN_KINDS = [k for k in KINDS if not k.startswith("layernorm")]
LN_KINDS = [k for k in KINDS if k.startswith("layernorm")]


@pytest.fixture(autouse=True)
def single_thread():
    """One torch thread: these tensors are tiny, and intra-op threads on a busy machine
    cost far more than they save."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _module(kind, num_layers=2, bidirectional=True, batch_first=False, bias=True, seed=0):
    torch.manual_seed(seed)
    return KINDS[kind][1](
        I,
        H,
        num_layers=num_layers,
        bidirectional=bidirectional,
        batch_first=batch_first,
        bias=bias,
        dtype=torch.float64,
    )


def _sizes(kind: str) -> list[int]:
    h_out = P if kind == "lstm_proj" else H
    return [h_out, H] if kind in CELL else [h_out]


def _state(kind: str, states: list[torch.Tensor]) -> Any:
    return tuple(states) if kind in CELL else states[0]


def _quiet(fn, *args, **kw):
    """Mute torch's "LSTM with projections is not supported with oneDNN" notice."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LSTM with projections is not supported")
        return fn(*args, **kw)


def _packed_forward(call, m, x, hx, lengths):
    """``call(x, hx)`` (the module, or a functional_call of it) with lengths via
    pack_padded_sequence; rows of length 0 (which packing refuses) get zero output and
    h_n = h0. Time-major or batch-first as the module."""
    bf = m.batch_first
    xt = x.transpose(0, 1) if bf else x
    if lengths is None:
        out, st = call(xt, hx)
        return (out.transpose(0, 1) if bf else out), st
    lens = torch.as_tensor(lengths)
    keep = torch.nonzero(lens > 0).flatten()
    states = list(hx) if isinstance(hx, tuple) else [hx]
    sub = [s.index_select(1, keep) for s in states]
    packed = pack_padded_sequence(
        xt.index_select(1, keep), lens[keep], batch_first=False, enforce_sorted=False
    )
    out_p, st = call(packed, tuple(sub) if isinstance(hx, tuple) else sub[0])
    out_k, _ = pad_packed_sequence(out_p, batch_first=False, total_length=xt.shape[0])
    out = xt.new_zeros(xt.shape[0], xt.shape[1], out_k.shape[-1]).index_copy(1, keep, out_k)
    fins = list(st) if isinstance(st, tuple) else [st]
    fins = [s.index_copy(1, keep, f) for s, f in zip(states, fins, strict=True)]
    return (out.transpose(0, 1) if bf else out), (tuple(fins) if isinstance(hx, tuple) else fins[0])


def _values_and_grads(fn, m, kind, x, hx, seed=0):
    """fn(x, hx) -> (out, state): values, and the grads of a random linear functional of
    them w.r.t. x, hx and every parameter of m (float64 NumPy/torch tensors)."""
    m.zero_grad()
    xt = torch.tensor(x, requires_grad=True)
    hts = [torch.tensor(h, requires_grad=True) for h in hx]
    out, st = _quiet(fn, xt, _state(kind, hts))
    finals = list(st) if kind in CELL else [st]
    g = torch.Generator().manual_seed(seed)
    loss = sum((v * torch.randn(v.shape, generator=g, dtype=v.dtype)).sum() for v in [out, *finals])
    _quiet(loss.backward)
    res = {"out": out.detach(), "grad x": xt.grad}
    for j, f in enumerate(finals):
        res[["h_n", "c_n"][j]] = f.detach()
        res[["grad h0", "grad c0"][j]] = hts[j].grad
    for k, p in m.named_parameters():
        res[f"grad {k}"] = p.grad.clone()
    return res


def _assert_same(got: dict, ref: dict, tol: float = TOL):
    assert sorted(got) == sorted(ref)
    for k in ref:
        torch.testing.assert_close(
            got[k], ref[k], rtol=tol, atol=tol, msg=lambda s, k=k: f"{k}: {s}"
        )


def _inputs(kind, m, seed=0, n=N, t=T):
    rng = np.random.default_rng(seed)
    L, D = m.num_layers, 2 if m.bidirectional else 1
    x = rng.normal(size=(n, t, I) if m.batch_first else (t, n, I))
    hx = [rng.normal(size=(L * D, n, s)) for s in _sizes(kind)]
    return x, hx


# --- run_regularized alone -----------------------------------------------------------

PLAIN_CONFIGS = {  # (num_layers, bidirectional, batch_first, bias)
    "2layer-bi": (2, True, False, True),
    "1layer-uni-batchfirst": (1, False, True, True),
    "2layer-uni-nobias": (2, False, False, False),
}


def _unit_masks(m, t=T, n=N):
    """Every key: all-ones dropout masks and zero zoneout."""
    return {
        k: tuple(torch.zeros(s, dtype=torch.float64) for s in v)
        if k.startswith("zoneout")
        else torch.ones(v, dtype=torch.float64)
        for k, v in torchseq.regularized._expected_shapes(m, t, n).items()
    }


@pytest.mark.parametrize("cfg", list(PLAIN_CONFIGS))
@pytest.mark.parametrize("kind", NN_KINDS)
def test_no_masks_equals_module(kind, cfg):
    L, bi, bf, bias = PLAIN_CONFIGS[cfg]
    m = _module(kind, L, bi, bf, bias)
    x, hx = _inputs(kind, m)
    lengths = torch.tensor(LENGTHS)
    ref = _values_and_grads(lambda x, h: _packed_forward(m, m, x, h, lengths), m, kind, x, hx)
    for masks in (None, {}, _unit_masks(m)):
        got = _values_and_grads(
            lambda x, h, mk=masks: run_regularized(m, x, h, lengths, mk), m, kind, x, hx
        )
        _assert_same(got, ref)
    # lengths=None and hx=None
    ref = _values_and_grads(lambda x, h: m(x), m, kind, x, hx)
    got = _values_and_grads(lambda x, h: run_regularized(m, x), m, kind, x, hx)
    _assert_same(got, ref)


@pytest.mark.parametrize("kind", LN_KINDS)
def test_layernorm_no_masks_equals_module(kind):
    """The loop's layer-normalised steps are the torchseq module's own forward."""
    m = _module(kind, 2, True, True, True)
    x, hx = _inputs(kind, m)
    lengths = torch.tensor(LENGTHS)
    ref = _values_and_grads(lambda x, h: m(x, h, lengths), m, kind, x, hx)
    got = _values_and_grads(lambda x, h: run_regularized(m, x, h, lengths, {}), m, kind, x, hx)
    _assert_same(got, ref)


def _keep(shape, p=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full(shape, 1 - p, dtype=torch.float64), generator=g) / (1 - p)


@pytest.mark.parametrize("kind", NN_KINDS)
def test_input_mask(kind):
    m = _module(kind)
    x, hx = _inputs(kind, m)
    lengths = torch.tensor(LENGTHS)
    mk = _keep((N, I))
    ref = _values_and_grads(lambda x, h: _packed_forward(m, m, x * mk, h, lengths), m, kind, x, hx)
    got = _values_and_grads(
        lambda x, h: run_regularized(m, x, h, lengths, {"input": mk}), m, kind, x, hx
    )
    _assert_same(got, ref)


def _functional(m, replace):
    """A call of m with some parameters replaced by functions of the real ones."""

    def call(x, hx):
        params = dict(m.named_parameters())
        params.update({k: f(params[k]) for k, f in replace.items()})
        return torch.func.functional_call(m, params, (x, hx))

    return call


@pytest.mark.parametrize("kind", NN_KINDS)
def test_weight_hh_mask(kind):
    m = _module(kind)
    x, hx = _inputs(kind, m)
    lengths = torch.tensor(LENGTHS)
    names = ["weight_hh_l0", "weight_hh_l1_reverse"]
    masks = {k: _keep(getattr(m, k).shape, seed=j) for j, k in enumerate(names)}
    call = _functional(m, {k: (lambda w, k=k: w * masks[k]) for k in names})
    ref = _values_and_grads(lambda x, h: _packed_forward(call, m, x, h, lengths), m, kind, x, hx)
    got = _values_and_grads(lambda x, h: run_regularized(m, x, h, lengths, masks), m, kind, x, hx)
    _assert_same(got, ref)


@pytest.mark.parametrize("bi", [False, True])
@pytest.mark.parametrize("kind", NN_KINDS)
def test_output_mask_one_layer(kind, bi):
    m = _module(kind, 1, bi)
    x, hx = _inputs(kind, m)
    lengths = torch.tensor(LENGTHS)
    D = 2 if bi else 1
    mk = _keep((N, D * _sizes(kind)[0]))

    def ref_fn(x, h):
        out, st = _packed_forward(m, m, x, h, lengths)
        return out * mk, st

    ref = _values_and_grads(ref_fn, m, kind, x, hx)
    got = _values_and_grads(
        lambda x, h: run_regularized(m, x, h, lengths, {"output_l0": mk}), m, kind, x, hx
    )
    _assert_same(got, ref)


@pytest.mark.parametrize("kind", NN_KINDS)
def test_hidden_mask_is_a_column_weight_mask(kind):
    """A hidden-state mask whose rows are alike is the weight_hh mask with that row on
    every row of the weight (W (h * m) = (W * m) h), in the module itself."""
    m = _module(kind)
    x, hx = _inputs(kind, m)
    lengths = torch.tensor(LENGTHS)
    h_out = _sizes(kind)[0]
    rows = {k: _keep((2, 1, h_out), seed=k) for k in range(2)}
    masks = {f"hidden_l{k}": rows[k].expand(2, N, h_out) for k in range(2)}
    replace = {
        f"weight_hh_l{k}{sfx}": (lambda w, r=rows[k][d, 0]: w * r)
        for k in range(2)
        for d, sfx in enumerate(["", "_reverse"])
    }
    call = _functional(m, replace)
    ref = _values_and_grads(lambda x, h: _packed_forward(call, m, x, h, lengths), m, kind, x, hx)
    got = _values_and_grads(lambda x, h: run_regularized(m, x, h, lengths, masks), m, kind, x, hx)
    _assert_same(got, ref)


@pytest.mark.parametrize("kind", NN_KINDS)
def test_zoneout_ones_freezes_the_state(kind):
    m = _module(kind)
    x, hx = _inputs(kind, m)
    sizes = _sizes(kind)
    masks = {
        f"zoneout_l{k}": tuple(torch.ones(T, 2, N, s, dtype=torch.float64) for s in sizes)
        for k in range(2)
    }
    hts = [torch.tensor(h) for h in hx]
    out, st = _quiet(run_regularized, m, torch.tensor(x), _state(kind, hts), LENGTHS, masks)
    finals = list(st) if kind in CELL else [st]
    for f, h in zip(finals, hts, strict=True):
        torch.testing.assert_close(f, h, rtol=0, atol=0)
    # the last layer's h0 in both directions at every valid step, 0 on padding
    want = torch.cat([hts[0][2], hts[0][3]], dim=-1)  # (N, 2*H_out)
    valid = torch.tensor(np.arange(T)[:, None] < LENGTHS[None, :])
    torch.testing.assert_close(
        out, torch.where(valid[..., None], want.expand(T, N, -1), 0.0), rtol=0, atol=0
    )


@pytest.mark.parametrize("kind", NN_KINDS)
def test_zoneout_half_on_one_step(kind):
    """zoneout 0.5 on one step: the mean of hx and the module's step (the LSTM's h from
    the un-zoned c), for h and c, in both directions."""
    m = _module(kind, 1, True)
    x, hx = _inputs(kind, m, t=1)
    masks = draw_masks(m, 1, N, zoneout=0.5, train=False)
    assert sorted(masks) == ["zoneout_l0"]
    hts = [torch.tensor(h) for h in hx]
    xt = torch.tensor(x)
    out_m, st_m = _quiet(m, xt, _state(kind, hts))
    out, st = _quiet(run_regularized, m, xt, _state(kind, hts), None, masks)
    fin_m = list(st_m) if kind in CELL else [st_m]
    finals = list(st) if kind in CELL else [st]
    for f, f_m, h in zip(finals, fin_m, hts, strict=True):
        torch.testing.assert_close(f, 0.5 * h + 0.5 * f_m, rtol=TOL, atol=TOL)
    torch.testing.assert_close(out[0], torch.cat([finals[0][0], finals[0][1]], -1), rtol=0, atol=0)


RESETS = np.random.default_rng(8).random((T, N)) < 0.35
RESETS[0, 0] = RESETS[4, 1] = True  # at t = 0 and on padding: ignored


@pytest.mark.parametrize("kind", ["rnn", "lstm_proj", "gru"])
def test_resets_equal_run_segments(kind):
    m = _module(kind, batch_first=True)
    x, hx = _inputs(kind, m, seed=3)
    lengths = torch.tensor(LENGTHS)
    r = torch.tensor(RESETS.T.copy())
    ref = _values_and_grads(lambda x, h: run_segments(m, x, h, lengths, r), m, kind, x, hx)
    got = _values_and_grads(
        lambda x, h: run_regularized(m, x, h, lengths, resets=r), m, kind, x, hx
    )
    _assert_same(got, ref)


def _segments(lengths, resets):
    rows = []
    for n, n_len in enumerate(lengths):
        bounds = [0] + [t for t in range(1, n_len) if resets[t, n]] + [n_len]
        rows.append(list(zip(bounds[:-1], bounds[1:], strict=True)) if n_len else [])
    return rows


def _all_masks(m, kind, seed, t=T, n=N, p=0.3):
    """Every key: random scaled keep masks, random binary zoneout masks."""
    masks = draw_masks(
        m,
        t,
        n,
        input_dropout=p,
        output_dropout=p,
        weight_dropout=p,
        recurrent_dropout=p,
        zoneout=0.5,
        generator=torch.Generator().manual_seed(seed),
    )
    assert sorted(masks) == sorted(torchseq.regularized._expected_shapes(m, t, n))
    return masks


def _segment_loop(m, kind, x, hx, lengths, resets, masks):
    """Per row, per segment: run_regularized on that segment alone, with the row's masks
    (zoneout sliced to the segment's steps), from the row's hx where the segment continues
    the row (forward: the first segment unless a reset starts it; reverse: the last),
    else from zeros (a new episode)."""
    states = list(hx) if kind in CELL else [hx]
    LD = states[0].shape[0]
    D = 2 if m.bidirectional else 1
    outs, fins = [], []
    for n, segs in enumerate(_segments(lengths, resets)):
        row_fin = [s[:, n] for s in states]
        pieces = []
        for j, (a, b) in enumerate(segs):
            mk = {}
            for k, v in masks.items():
                if k.startswith("zoneout"):
                    mk[k] = tuple(z[a:b, :, n : n + 1] for z in v)
                elif k.startswith("hidden"):
                    mk[k] = v[:, n : n + 1]
                elif k.startswith("weight"):
                    mk[k] = v
                else:
                    mk[k] = v[n : n + 1]
            fwd_hx = j == 0 and not bool(resets[a, n])
            rev_hx = j == len(segs) - 1
            st0 = _state(
                kind,
                [
                    torch.stack(
                        [
                            s[q, n : n + 1]
                            if (rev_hx if q % D else fwd_hx)
                            else torch.zeros_like(s[q, n : n + 1])
                            for q in range(LD)
                        ]
                    )
                    for s in states
                ],
            )
            o, f = run_regularized(m, x[a:b, n : n + 1], st0, None, mk)
            pieces.append(o[:, 0])
            f = list(f) if kind in CELL else [f]
            for i in range(len(f)):  # forward: last segment, reverse: first
                row_fin[i] = torch.stack(
                    [f[i][q, 0] if (q % D == 0 or j == 0) else row_fin[i][q] for q in range(LD)]
                )
        pieces.append(x.new_zeros(T - int(lengths[n]), D * _sizes(kind)[0]))
        outs.append(torch.cat(pieces))
        fins.append(row_fin)
    finals = [torch.stack([r[i] for r in fins], dim=1) for i in range(len(states))]
    return torch.stack(outs, dim=1), _state(kind, finals)


@pytest.mark.parametrize("kind", ["rnn", "lstm_proj", "gru"])
def test_resets_with_masks_equal_segment_loop(kind):
    m = _module(kind)
    x, hx = _inputs(kind, m, seed=4)
    masks = _all_masks(m, kind, seed=4)
    r = torch.tensor(RESETS)
    ref = _values_and_grads(
        lambda x, h: _segment_loop(m, kind, x, h, LENGTHS, RESETS, masks), m, kind, x, hx
    )
    got = _values_and_grads(
        lambda x, h: run_regularized(m, x, h, torch.tensor(LENGTHS), masks, r), m, kind, x, hx
    )
    _assert_same(got, ref)


def test_padding_gets_no_gradient_and_masks_act_only_at_valid_steps():
    m = _module("lstm")
    x, hx = _inputs("lstm", m)
    masks = _all_masks(m, "lstm", seed=1)
    got = _values_and_grads(
        lambda x, h: run_regularized(m, x, h, torch.tensor(LENGTHS), masks), m, "lstm", x, hx
    )
    pad = torch.tensor(np.arange(T)[:, None] >= LENGTHS[None, :])
    assert float(got["out"][pad].abs().max()) == 0.0
    assert float(got["grad x"][pad].abs().max()) == 0.0
    # zoneout and the other masks at padded steps change nothing
    masks2 = dict(masks)
    for k in range(2):
        masks2[f"zoneout_l{k}"] = tuple(
            torch.where(pad[:, None, :, None], 1 - z, z) for z in masks[f"zoneout_l{k}"]
        )
    got2 = _values_and_grads(
        lambda x, h: run_regularized(m, x, h, torch.tensor(LENGTHS), masks2), m, "lstm", x, hx
    )
    _assert_same(got2, got, tol=0)


def test_draw_masks():
    m = _module("lstm_proj", 2, True)
    g = torch.Generator().manual_seed(0)
    masks = draw_masks(
        m,
        T,
        N,
        input_dropout=0.25,
        output_dropout=0.5,
        weight_dropout=0.2,
        recurrent_dropout=0.4,
        zoneout=(0.1, 0.6),
        generator=g,
    )
    shapes = torchseq.regularized._expected_shapes(m, T, N)
    assert sorted(masks) == sorted(shapes)
    probs = {"input": 0.25, "output": 0.5, "weight": 0.2, "hidden": 0.4}
    for k, v in masks.items():
        if k.startswith("zoneout"):
            assert tuple(z.shape for z in v) == shapes[k]
            for z, p in zip(v, (0.1, 0.6), strict=True):
                assert set(z.unique().tolist()) <= {0.0, 1.0}
                assert abs(float(z.mean()) - p) < 0.2
            continue
        p = probs[k.split("_")[0]]
        assert v.shape == shapes[k] and v.dtype == torch.float64
        assert set(v.unique().tolist()) <= {0.0, 1 / (1 - p)}
    # the generator seeds the draws
    again = draw_masks(
        m,
        T,
        N,
        input_dropout=0.25,
        output_dropout=0.5,
        weight_dropout=0.2,
        recurrent_dropout=0.4,
        zoneout=(0.1, 0.6),
        generator=torch.Generator().manual_seed(0),
    )
    for k in masks:
        torch.testing.assert_close(masks[k], again[k], rtol=0, atol=0)
    # eval: no dropout, zoneout the constant p
    ev = draw_masks(m, T, N, input_dropout=0.5, weight_dropout=0.5, zoneout=(0.1, 0.6), train=False)
    assert sorted(ev) == ["zoneout_l0", "zoneout_l1"]
    assert bool((ev["zoneout_l1"][0] == 0.1).all()) and bool((ev["zoneout_l1"][1] == 0.6).all())
    assert draw_masks(m, T, N) == {} and draw_masks(m, T, N, input_dropout=0.5, train=False) == {}
    gru = _module("gru", 1, False)
    assert sorted(draw_masks(gru, T, N, weight_dropout=0.3, zoneout=0.2)) == [
        "weight_hh_l0",
        "zoneout_l0",
    ]
    with pytest.raises(ValueError, match="input_dropout"):
        draw_masks(m, T, N, input_dropout=1.0)
    with pytest.raises(ValueError, match="zoneout"):
        draw_masks(m, T, N, zoneout=1.5)
    with pytest.raises(ValueError, match="pair"):
        draw_masks(gru, T, N, zoneout=(0.1, 0.2))


def test_validation():
    m = _module("gru", 2, False)
    x = torch.zeros(T, N, I, dtype=torch.float64)
    with pytest.raises(ValueError, match="unknown mask 'hidden_l2'"):
        run_regularized(m, x, masks={"hidden_l2": torch.ones(1, N, H)})
    with pytest.raises(ValueError, match="unknown mask 'weight_hh_l0_reverse'"):
        run_regularized(m, x, masks={"weight_hh_l0_reverse": torch.ones(3 * H, H)})
    with pytest.raises(ValueError, match="shape"):
        run_regularized(m, x, masks={"input": torch.ones(N, I + 1)})
    with pytest.raises(ValueError, match="tuple"):
        run_regularized(m, x, masks={"zoneout_l0": torch.ones(T, 1, N, H)})
    with pytest.raises(TypeError, match="torch tensors"):
        run_regularized(m, x, masks={"input": np.ones((N, I))})
    with pytest.raises(TypeError, match="dict"):
        run_regularized(m, x, masks=[1])
    with pytest.raises(TypeError, match="module"):
        run_regularized(torch.nn.Linear(I, H), x)
    with pytest.raises(ValueError, match="3-D"):
        run_regularized(m, x[:, 0])
    with pytest.raises(ValueError, match="lengths"):
        run_regularized(m, x, lengths=[T + 1] * N)
    with pytest.raises(ValueError, match="pair"):
        run_regularized(_module("lstm", 2, False), x, torch.zeros(2, N, H))
    with pytest.raises(ValueError, match="hidden size"):
        run_regularized(m, x, torch.zeros(2, N + 1, H))
    with pytest.raises(ValueError, match="resets"):
        run_regularized(m, x, resets=torch.zeros(N, T, dtype=torch.bool))


# --- jaxseq against run_regularized ---------------------------------------------------

# XLA's LLVM backend at -O0 on CPU: the compiles dominate, the programs are tiny.
JIT = functools.partial(
    jax.jit,
    compiler_options=(
        {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else None
    ),
)

FUSED = [("fused", None), ("fused_loop", None), ("fused_hoisted", None), ("fused", 2)]
JAX_KINDS = ["rnn", "lstm", "lstm_proj", "gru"]
# name -> (num_layers, bidirectional, batch_first); the grid samples the first four
JAX_CONFIGS = {
    "1layer-uni": (1, False, False),
    "1layer-bi": (1, True, False),
    "2layer-uni": (2, False, False),
    "2layer-bi": (2, True, False),
    "2layer-bi-batchfirst": (2, True, True),
}
GRID = list(JAX_CONFIGS)[:4]
LOOP_KEYS = ("hidden_l", "zoneout_l")  # the keys that act inside the recurrence


@functools.cache
def _jax_grad(kind: str, impl: str, remat: int | None, batch_first: bool = False):
    """jit(grad) of the random linear functional; jit caches per shape and mask keys."""
    jkind, cell = KINDS[kind][0], kind in CELL
    nonlinearity = "relu" if kind == "rnn_relu" else "tanh"

    def loss(p, x, hx, lengths, masks, resets, cot):
        out, st = jaxseq.run_stack(
            jkind,
            p,
            x,
            tuple(hx) if cell else hx[0],
            lengths,
            masks=masks,
            resets=resets,
            nonlinearity=nonlinearity,
            batch_first=batch_first,
            impl=impl,
            remat=remat,
        )
        finals = list(st) if cell else [st]
        total = jnp.sum(out * cot[0])
        for f, r in zip(finals, cot[1:], strict=True):
            total = total + jnp.sum(f * r)
        return total, (out, finals)

    return JIT(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))


def _select(masks: dict, keys: Any) -> dict:
    """The masks whose key starts with one of ``keys`` ("all": every one)."""
    return {k: v for k, v in masks.items() if keys == "all" or k.startswith(keys)}


@functools.cache
def _torch_case(kind: str, cfg: str, keys: Any = "all", with_resets: bool = False):
    """Inputs, masks and run_regularized's values and gradients (NumPy) of one case."""
    L, bi, bf = JAX_CONFIGS[cfg]
    seed = sorted(KINDS).index(kind) * 10 + sorted(JAX_CONFIGS).index(cfg)
    m = _module(kind, L, bi, bf, seed=seed)
    x, hx = _inputs(kind, m, seed=seed)
    masks = _select(_all_masks(m, kind, seed), keys)
    rng = np.random.default_rng(seed + 1)
    D = 2 if bi else 1
    cot = [rng.normal(size=(N, T, D * _sizes(kind)[0]) if bf else (T, N, D * _sizes(kind)[0]))]
    cot += [rng.normal(size=(L * D, N, s)) for s in _sizes(kind)]
    resets = (RESETS.T.copy() if bf else RESETS) if with_resets else None

    def fn(x, h):
        r = None if resets is None else torch.tensor(resets)
        return run_regularized(m, x, h, torch.tensor(LENGTHS), masks, r)

    m.zero_grad()
    xt = torch.tensor(x, requires_grad=True)
    hts = [torch.tensor(h, requires_grad=True) for h in hx]
    out, st = _quiet(fn, xt, _state(kind, hts))
    finals = list(st) if kind in CELL else [st]
    loss = sum((v * torch.tensor(c)).sum() for v, c in zip([out, *finals], cot, strict=True))
    _quiet(loss.backward)
    ref = {"out": out.detach().numpy(), "grad x": xt.grad.numpy()}
    for j, f in enumerate(finals):
        ref[["h_n", "c_n"][j]] = f.detach().numpy()
        ref[["grad h0", "grad c0"][j]] = hts[j].grad.numpy()
    for k, p in m.named_parameters():
        ref[f"grad {k}"] = p.grad.numpy().copy()
    params = {k: v.detach().numpy().copy() for k, v in m.state_dict().items()}
    j_masks = {
        k: tuple(jnp.asarray(z.numpy()) for z in v)
        if isinstance(v, tuple)
        else jnp.asarray(v.numpy())
        for k, v in masks.items()
    }
    args = (
        {k: jnp.asarray(v) for k, v in params.items()},
        jnp.asarray(x),
        [jnp.asarray(h) for h in hx],
        jnp.asarray(LENGTHS),
        j_masks,
        None if resets is None else jnp.asarray(resets),
        [jnp.asarray(c) for c in cot],
    )
    return args, ref


def _where(a: np.ndarray, b: np.ndarray) -> str:
    bad = np.argwhere(~np.isclose(a, b, rtol=TOL, atol=TOL))
    where = [tuple(int(j) for j in i) for i in bad[:6]]
    return f"max abs diff {np.abs(a - b).max():.3g} at indices {where} ({len(bad)} in all)"


def _check_jax(kind: str, impl: str, remat: int | None, cfg: str, keys: Any = "all", resets=False):
    args, ref = _torch_case(kind, cfg, keys, resets)
    bf = JAX_CONFIGS[cfg][2]
    (gp, gx, ghx), (out, finals) = _jax_grad(kind, impl, remat, bf)(*args)
    got = {"out": out, "grad x": gx}
    for j, (f, g) in enumerate(zip(finals, ghx, strict=True)):
        got[["h_n", "c_n"][j]] = f
        got[["grad h0", "grad c0"][j]] = g
    for k, g in gp.items():
        got[f"grad {k}"] = g
    assert sorted(got) == sorted(ref)
    errors = []
    for k in ref:
        a = np.asarray(got[k])
        assert a.shape == ref[k].shape, f"{k}: shape {a.shape} != {ref[k].shape}"
        if not np.allclose(a, ref[k], rtol=TOL, atol=TOL):
            errors.append(f"{k}: {_where(a, ref[k])}")
    assert not errors, f"{kind} {impl} remat={remat} {cfg} keys={keys}: " + "; ".join(errors)


def _jax_cases() -> list[Any]:
    """Every kind x configuration on "fused"; every other fused impl on a configuration
    drawn with a fixed seed; the relu RNN and a batch-first layout on one each."""
    rng = np.random.default_rng(2025)
    cases = [(kind, "fused", None, cfg) for kind in JAX_KINDS for cfg in GRID]
    for kind in JAX_KINDS:
        for impl, remat in FUSED[1:]:
            cases.append((kind, impl, remat, GRID[int(rng.integers(len(GRID)))]))
    for kind in LN_KINDS:  # two configurations on "fused", one for each other impl
        cases += [(kind, "fused", None, cfg) for cfg in GRID[1::2]]
        for impl, remat in FUSED[1:]:
            cases.append((kind, impl, remat, GRID[int(rng.integers(len(GRID)))]))
    cases.append(("rnn_relu", "fused", None, "2layer-bi"))
    cases.append(("lstm_proj", "fused_hoisted", None, "2layer-bi-batchfirst"))
    return [
        pytest.param(k, i, r, c, id=f"{k}-{i}{'-remat2' if r else ''}-{c}") for k, i, r, c in cases
    ]


@pytest.mark.parametrize("kind, impl, remat, cfg", _jax_cases())
def test_jax_equals_run_regularized(kind, impl, remat, cfg):
    _check_jax(kind, impl, remat, cfg)


@pytest.mark.parametrize(
    "keys", ["input", "output_l1", "weight_hh_l0_reverse", "hidden_l1", "zoneout_l0"]
)
def test_jax_each_key_alone(keys):
    _check_jax("lstm_proj", "fused", None, "2layer-bi", keys)


@pytest.mark.parametrize(
    "kind, impl, remat, cfg",
    [
        ("lstm", "fused", None, "2layer-bi"),
        ("gru", "fused", 2, "2layer-bi-batchfirst"),
        ("layernorm_lstm", "fused", 2, "2layer-bi"),
    ],
)
def test_jax_with_resets(kind, impl, remat, cfg):
    _check_jax(kind, impl, remat, cfg, resets=True)


@pytest.mark.parametrize("kind, impl", [("lstm_proj", "unfused"), ("gru", "reference")])
def test_jax_not_fused(kind, impl):
    """unfused / reference: the masks outside the recurrence match; hidden / zoneout
    masks raise ValueError."""
    cfg = "2layer-bi"
    _check_jax(kind, impl, None, cfg, ("input", "output_l", "weight_hh_l"))
    args, _ = _torch_case(kind, cfg)
    for prefix in LOOP_KEYS:
        bad = (*args[:4], _select(args[4], ("input", prefix)), *args[5:])
        with pytest.raises(ValueError, match="fused"):
            _jax_grad(kind, impl, None)(*bad)
