"""The checker of the exercises: independent float64 NumPy references, and the printing.

Run one part with ``python exercises/part01_elman.py`` (the part's file calls
:func:`run_part`), or several with this file::

    python exercises/check.py            # every part, your files
    python exercises/check.py 3 4        # parts 3 and 4
    python exercises/check.py --solutions

Each check feeds your functions random inputs *and random states* (a zero state hides
bugs: an LSTM without its forget gate is exact from ``c = 0``), computes the same thing
with a plain NumPy loop written independently here, and prints one line per comparison:
what was compared, its magnitude, the largest absolute difference and ``OK`` or
``FAIL``. Checks run in float64 (``jax.enable_x64`` inside the check), so a right answer
is exact to ~1e-15 and a wrong one is off by ~1e-1: there is no grey zone.

Only NumPy and JAX are needed (no torch): the references are the equations themselves.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib
import sys
import traceback
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.extend
import jax.numpy as jnp
import jax.test_util
import numpy as np

HERE = pathlib.Path(__file__).resolve().parent

# --------------------------------------------------------------------------- printing


class Report:
    """Collects the lines of one part's check; ``ok`` is False as soon as one line fails."""

    def __init__(self) -> None:
        self.ok = True

    def compare(self, label: str, got: Any, want: np.ndarray, tol: float = 1e-10) -> bool:
        """Print ``label``, the reference's magnitude and ``max |diff|``; tol is relative
        to the magnitude (absolute below 1)."""
        want = np.asarray(want, np.float64)
        try:
            got_np = np.asarray(got, np.float64)
        except (TypeError, ValueError):
            return self.claim(label, False, f"got {type(got).__name__}, not an array")
        if got_np.shape != want.shape:
            return self.claim(label, False, f"shape {got_np.shape}, expected {want.shape}")
        mag = float(np.max(np.abs(want))) if want.size else 0.0
        diff = float(np.max(np.abs(got_np - want))) if want.size else 0.0
        ok = bool(np.isfinite(got_np).all()) and diff <= tol * max(1.0, mag)
        self.ok &= ok
        print(f"  {label:<52s} |ref| <= {mag:7.3g}   max |diff| = {diff:.1e}  {_verdict(ok)}")
        return ok

    def claim(self, label: str, ok: bool, detail: str = "") -> bool:
        """A yes/no check, e.g. "the jaxpr has a scan"; detail says what was seen."""
        self.ok &= bool(ok)
        print(f"  {label:<52s} {detail:<41s} {_verdict(ok)}")
        return bool(ok)


def _verdict(ok: bool) -> str:
    return "OK" if ok else "FAIL"


def _j(a: Any) -> Any:
    """NumPy (or a pytree of NumPy) -> JAX arrays; float64 inside the checks' x64 scope."""
    return jax.tree.map(jnp.asarray, a)


def _primitives(jaxpr: Any) -> list[str]:
    """Names of the primitives of a jaxpr, sub-jaxprs (scan bodies, ...) included."""
    names = []
    for eqn in jaxpr.eqns:
        names.append(eqn.primitive.name)
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            names += _primitives(sub)
    return names


# --------------------------------------------------------------------------- references


def sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


def elman_ref(p: Mapping[str, np.ndarray], h: np.ndarray, x: np.ndarray) -> np.ndarray:
    """h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh), row by row."""
    return np.tanh(x @ p["weight_ih"].T + p["bias_ih"] + h @ p["weight_hh"].T + p["bias_hh"])


def _gate(p: Mapping[str, np.ndarray], k: int, x: np.ndarray, h: np.ndarray, H: int):
    """Gate block k of a stacked weight: W_i[k] x + b_i[k] + W_h[k] h + b_h[k]."""
    rows = slice(k * H, (k + 1) * H)
    return (
        x @ p["weight_ih"][rows].T
        + p["bias_ih"][rows]
        + h @ p["weight_hh"][rows].T
        + p["bias_hh"][rows]
    )


def lstm_ref(p, h, c, x):
    """torch.nn.LSTMCell: gates stacked i, f, g, o."""
    H = h.shape[-1]
    i, f = sigmoid(_gate(p, 0, x, h, H)), sigmoid(_gate(p, 1, x, h, H))
    g, o = np.tanh(_gate(p, 2, x, h, H)), sigmoid(_gate(p, 3, x, h, H))
    c = f * c + i * g
    return o * np.tanh(c), c


def gru_ref(p, h, x, reset_after=True):
    """torch.nn.GRUCell (reset_after) or the reset-before-matmul GRU: gates r, z, n."""
    H = h.shape[-1]
    r, z = sigmoid(_gate(p, 0, x, h, H)), sigmoid(_gate(p, 1, x, h, H))
    n_rows = slice(2 * H, 3 * H)
    xn = x @ p["weight_ih"][n_rows].T + p["bias_ih"][n_rows]
    w_hn, b_hn = p["weight_hh"][n_rows], p["bias_hh"][n_rows]
    n = (
        np.tanh(xn + r * (h @ w_hn.T + b_hn))
        if reset_after
        else np.tanh(xn + (r * h) @ w_hn.T + b_hn)
    )
    return (1.0 - z) * n + z * h


def run_rows(step, carry, xs, lengths, reverse=False):
    """Each row on its own: its valid steps only, in order (or reversed), no mask at all.

    step(carry_row, x_row) -> (carry_row, y_row) on (1, ...) rows; carry is a tuple of
    (N, H) arrays. Returns the final carries and ys (T, N, H_out) with zeros on padding.
    """
    T, N = xs.shape[:2]
    finals, ys = [list(a.copy()) for a in carry], None
    for n in range(N):
        c = tuple(a[n : n + 1] for a in carry)
        order = range(int(lengths[n]))
        for t in reversed(order) if reverse else order:
            c, y = step(c, xs[t, n : n + 1])
            if ys is None:
                ys = np.zeros((T, N, y.shape[-1]))
            ys[t, n] = y[0]
        for k, a in enumerate(c):
            finals[k][n] = a[0]
    if ys is None:  # every length 0: the output width is the carry's
        ys = np.zeros((T, N, carry[0].shape[-1]))
    return tuple(np.stack(f) for f in finals), ys


def elman_steps(p):
    return lambda c, x: ((elman_ref(p, c[0], x),), elman_ref(p, c[0], x))


def lstm_steps(p):
    def step(c, x):
        h, c2 = lstm_ref(p, c[0], c[1], x)
        return (h, c2), h

    return step


def elman_vjp_ref(p, xs, h0, dys, dh_last):
    """Backpropagation through time for h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh),
    all T steps: the gradients of sum(ys * dys) + sum(h_T * dh_last)."""
    hs = [h0]
    for x in xs:
        hs.append(elman_ref(p, hs[-1], x))
    grads = {k: np.zeros_like(v) for k, v in p.items()}
    dxs, dh = np.zeros_like(xs), dh_last.copy()
    for t in reversed(range(len(xs))):
        dh = dh + dys[t]
        da = dh * (1.0 - hs[t + 1] ** 2)  # through tanh
        grads["weight_ih"] += da.T @ xs[t]
        grads["weight_hh"] += da.T @ hs[t]
        grads["bias_ih"] += da.sum(0)
        grads["bias_hh"] += da.sum(0)
        dxs[t] = da @ p["weight_ih"]
        dh = da @ p["weight_hh"]
    return grads, dxs, dh


def _params(rng, shapes: Mapping[str, tuple[int, ...]], scale: float = 0.6):
    return {k: rng.uniform(-scale, scale, s) for k, s in shapes.items()}


def _cell_shapes(G: int, I: int, H: int) -> dict[str, tuple[int, ...]]:
    return {
        "weight_ih": (G * H, I),
        "weight_hh": (G * H, H),
        "bias_ih": (G * H,),
        "bias_hh": (G * H,),
    }


# --------------------------------------------------------------------------- the checks
# One function per part: it receives the namespace of the part's file (its globals) and
# adds lines to the report. Names the student writes are listed in PARTS below.


def check_elman(ns, rep: Report) -> None:
    rng = np.random.default_rng(1)
    N, I, H = 3, 5, 4
    p = _params(rng, _cell_shapes(1, I, H))
    h, x = rng.standard_normal((N, H)), rng.standard_normal((N, I))
    h_new, y = ns["elman_cell"](_j(p), _j(h), _j(x))
    want = elman_ref(p, h, x)
    rep.compare("elman_cell: new carry h' from a random h", h_new, want)
    rep.compare("elman_cell: output y (the same h')", y, want)
    p0 = {k: np.zeros_like(v) if k == "bias_hh" else v for k, v in p.items()}
    rep.compare(
        "elman_cell: both biases used (b_hh = 0 here)",
        ns["elman_cell"](_j(p0), _j(h), _j(x))[0],
        elman_ref(p0, h, x),
    )


def check_rnn_scan(ns, rep: Report) -> None:
    rng = np.random.default_rng(2)
    T, N, I, H = 6, 3, 4, 5
    p = _params(rng, _cell_shapes(1, I, H))
    xs, h0 = rng.standard_normal((T, N, I)), rng.standard_normal((N, H))
    (h_last,), ys = run_rows(elman_steps(p), (h0,), xs, np.full(N, T))
    h_T, got_ys = ns["rnn_scan"](_j(p), _j(xs), _j(h0))
    rep.compare("rnn_scan: outputs ys (T, N, H), random h0", got_ys, ys)
    rep.compare("rnn_scan: final carry h_T", h_T, h_last)
    jaxpr = jax.make_jaxpr(ns["rnn_scan"])(_j(p), _j(xs), _j(h0)).jaxpr
    top = [e.primitive.name for e in jaxpr.eqns]
    rep.claim(
        "rnn_scan: one lax.scan, the cell traced once",
        "scan" in top and "tanh" not in top,
        f"top-level: {top.count('scan')} scan, {top.count('tanh')} tanh",
    )


def check_lstm(ns, rep: Report) -> None:
    rng = np.random.default_rng(3)
    N, I, H = 3, 4, 5
    p = _params(rng, _cell_shapes(4, I, H))
    h, c, x = (
        rng.standard_normal((N, H)),
        2.0 * rng.standard_normal((N, H)),
        rng.standard_normal((N, I)),
    )
    (h_new, c_new), y = ns["lstm_cell"](_j(p), (_j(h), _j(c)), _j(x))
    h_ref, c_ref = lstm_ref(p, h, c, x)
    rep.compare("lstm_cell: c' from a random (h, c)", c_new, c_ref)
    rep.compare("lstm_cell: h'", h_new, h_ref)
    rep.compare("lstm_cell: output y = h'", y, h_ref)


def check_gru(ns, rep: Report) -> None:
    rng = np.random.default_rng(4)
    N, I, H = 3, 4, 5
    p = _params(rng, _cell_shapes(3, I, H))
    h, x = rng.standard_normal((N, H)), rng.standard_normal((N, I))
    for reset_after, name in [(True, "reset after (torch)"), (False, "reset before matmul")]:
        h_new, y = ns["gru_cell"](_j(p), _j(h), _j(x), reset_after=reset_after)
        want = gru_ref(p, h, x, reset_after)
        rep.compare(f"gru_cell: h', {name}", h_new, want)
        rep.compare(f"gru_cell: output y, {name}", y, want)


def check_mask(ns, rep: Report) -> None:
    lengths = np.array([4, 0, 2, 5, 1])
    T = 5
    want = np.array([[t < n for n in lengths] for t in range(T)])
    got = ns["length_mask"](jnp.asarray(lengths, jnp.int32), T)
    rep.claim(
        "length_mask: dtype bool",
        getattr(got, "dtype", None) == jnp.bool_,
        f"dtype {getattr(got, 'dtype', type(got).__name__)}",
    )
    rep.compare("length_mask: (T, N) with lengths 4, 0, 2, 5, 1", got, want, tol=0.0)
    f = jax.jit(ns["length_mask"], static_argnums=1)
    rep.compare(
        "length_mask: under jit, lengths traced",
        f(jnp.asarray(lengths[::-1], jnp.int32), T),
        want[:, ::-1],
        tol=0.0,
    )


def check_masked_scan(ns, rep: Report) -> None:
    rng = np.random.default_rng(6)
    T, N, I, H = 5, 4, 3, 4
    lengths = np.array([5, 2, 0, 3])
    masked_scan = ns["masked_scan"]
    p = _params(rng, _cell_shapes(4, I, H))
    xs = rng.standard_normal((T, N, I))
    h0, c0 = rng.standard_normal((N, H)), rng.standard_normal((N, H))
    (h_ref, c_ref), ys_ref = run_rows(lstm_steps(p), (h0, c0), xs, lengths)
    (h, c), ys = masked_scan(
        _lstm_cell, _j(p), (_j(h0), _j(c0)), _j(xs), jnp.asarray(lengths, jnp.int32)
    )
    rep.compare("masked_scan (LSTM): outputs, 0 on padding", ys, ys_ref)
    rep.compare("masked_scan (LSTM): h_n = h at each last valid step", h, h_ref)
    rep.compare("masked_scan (LSTM): c_n (length 0 keeps c0)", c, c_ref)
    pad = np.arange(T)[:, None] >= lengths[None, :]
    rep.claim("masked_scan: padded outputs exactly 0", bool(np.all(np.asarray(ys)[pad] == 0.0)), "")

    # The gradient of a loss must not see the padding, even if it is NaN.
    pe = _params(rng, _cell_shapes(1, I, H))
    h0e = rng.standard_normal((N, H))
    xs_nan = np.where(pad[:, :, None], np.nan, xs)

    def loss(p, xs):
        h, ys = masked_scan(_elman_cell, p, _j(h0e), xs, jnp.asarray(lengths, jnp.int32))
        return jnp.sum(ys**2) + jnp.sum(jnp.sin(h))

    g_p, g_x = jax.grad(loss, argnums=(0, 1))(_j(pe), _j(xs_nan))
    grads_ref, dxs_ref = _masked_elman_grads(pe, xs, h0e, lengths)
    rep.compare(
        "NaN in padding: d loss / d W_hh (finite)", g_p["weight_hh"], grads_ref["weight_hh"]
    )
    rep.compare("NaN in padding: d loss / d b_ih (finite)", g_p["bias_ih"], grads_ref["bias_ih"])
    rep.compare("NaN in padding: d loss / d xs, 0 on padding", g_x, dxs_ref)


def _masked_elman_grads(p, xs, h0, lengths):
    """Gradients of sum(ys^2) + sum(sin(h_n)) for the masked Elman RNN, row by row."""
    (h_n,), ys = run_rows(elman_steps(p), (h0,), xs, lengths)
    grads = {k: np.zeros_like(v) for k, v in p.items()}
    dxs = np.zeros_like(xs)
    for n, L in enumerate(lengths):
        g, dx, _ = elman_vjp_ref(
            p, xs[:L, n : n + 1], h0[n : n + 1], 2 * ys[:L, n : n + 1], np.cos(h_n[n : n + 1])
        )
        for k in grads:
            grads[k] += g[k]
        dxs[:L, n : n + 1] = dx
    return grads, dxs


def check_reverse(ns, rep: Report) -> None:
    rng = np.random.default_rng(7)
    T, N, I, H = 5, 4, 3, 4
    lengths = np.array([5, 3, 0, 1])
    xs = rng.standard_normal((T, N, I))
    want = xs.copy()
    for n, L in enumerate(lengths):
        want[:L, n] = xs[:L, n][::-1]
    rep.compare(
        "reverse_padded: valid part of each row reversed",
        ns["reverse_padded"](_j(xs), jnp.asarray(lengths, jnp.int32)),
        want,
        tol=0.0,
    )

    p_f, p_r = _params(rng, _cell_shapes(1, I, H)), _params(rng, _cell_shapes(1, I, H))
    h0 = rng.standard_normal((N, H))
    (h_f,), y_f = run_rows(elman_steps(p_f), (h0,), xs, lengths)
    (h_r,), y_r = run_rows(elman_steps(p_r), (h0,), xs, lengths, reverse=True)
    ys, (g_f, g_r) = ns["bidirectional"](
        _elman_cell, _j(p_f), _j(p_r), _j(h0), _j(xs), jnp.asarray(lengths, jnp.int32)
    )
    rep.compare("bidirectional: forward half of ys", np.asarray(ys)[..., :H], y_f)
    rep.compare(
        "bidirectional: reverse half (own last element first)", np.asarray(ys)[..., H:], y_r
    )
    rep.compare("bidirectional: h_n forward", g_f, h_f)
    rep.compare("bidirectional: h_n reverse (= state after t = 0)", g_r, h_r)


def check_stack(ns, rep: Report) -> None:
    rng = np.random.default_rng(8)
    T, N, I, H, L, D = 5, 3, 3, 4, 2, 2
    lengths = np.array([5, 2, 4])
    params = {}
    for layer in range(L):
        for sfx in ("", "_reverse"):
            for k, s in _cell_shapes(4, I if layer == 0 else D * H, H).items():
                params[f"{k}_l{layer}{sfx}"] = rng.uniform(-0.6, 0.6, s)
    xs = rng.standard_normal((T, N, I))
    h0, c0 = rng.standard_normal((L * D, N, H)), rng.standard_normal((L * D, N, H))
    x, hs, cs = xs, [], []
    for layer in range(L):
        outs = []
        for d, sfx in enumerate(("", "_reverse")):
            p = {k: params[f"{k}_l{layer}{sfx}"] for k in _cell_shapes(4, 1, 1)}
            (h, c), y = run_rows(
                lstm_steps(p), (h0[layer * D + d], c0[layer * D + d]), x, lengths, reverse=d == 1
            )
            outs.append(y)
            hs.append(h)
            cs.append(c)
        x = np.concatenate(outs, axis=-1)
    out, (h_n, c_n) = ns["lstm_stack"](
        _j(params),
        _j(xs),
        jnp.asarray(lengths, jnp.int32),
        (_j(h0), _j(c0)),
        num_layers=L,
        bidirectional=True,
    )
    rep.compare("lstm_stack: output of the last layer (T, N, 2H)", out, x)
    rep.compare("lstm_stack: h_n (L*D, N, H), l0 fwd, l0 rev, l1 ...", h_n, np.stack(hs))
    rep.compare("lstm_stack: c_n", c_n, np.stack(cs))


def check_train(ns, rep: Report) -> None:
    rng = np.random.default_rng(9)
    T, N, I, H = 6, 5, 1, 6
    lengths = np.array([6, 2, 4, 1, 5])
    pad = np.arange(T)[:, None] >= lengths[None, :]
    xs = np.where(pad[:, :, None], 0.0, rng.standard_normal((T, N, I)))
    y = xs[:, :, 0].sum(0)
    p = _params(rng, _cell_shapes(1, I, H)) | {
        "head.weight": rng.uniform(-0.6, 0.6, (1, H)),
        "head.bias": rng.uniform(-0.6, 0.6, (1,)),
    }
    core = {k: v for k, v in p.items() if not k.startswith("head.")}
    (h_n,), _ = run_rows(elman_steps(core), (np.zeros((N, H)),), xs, lengths)
    pred = h_n @ p["head.weight"].T + p["head.bias"]
    err = pred[:, 0] - y
    loss_ref = np.mean(err**2)
    dpred = (2.0 / N * err)[:, None]
    grads = {"head.weight": dpred.T @ h_n, "head.bias": dpred.sum(0)} | {
        k: np.zeros_like(v) for k, v in core.items()
    }
    dh_n = dpred @ p["head.weight"]
    for n, L in enumerate(lengths):
        g, _, _ = elman_vjp_ref(
            core, xs[:L, n : n + 1], np.zeros((1, H)), np.zeros((L, 1, H)), dh_n[n : n + 1]
        )
        for k in core:
            grads[k] += g[k]

    rep.compare(
        "predict: (N,) predictions from each row's h_n",
        ns["predict"](_j(p), _j(xs), jnp.asarray(lengths, jnp.int32)),
        pred[:, 0],
    )
    rep.compare(
        "loss_fn: mean squared error",
        ns["loss_fn"](_j(p), _j(xs), _j(y), jnp.asarray(lengths, jnp.int32)),
        loss_ref,
    )
    lr = 0.05
    step = jax.jit(ns["train_step"])
    new_p, loss = step(_j(p), _j(xs), _j(y), jnp.asarray(lengths, jnp.int32), lr)
    rep.compare("train_step (jitted): loss before the update", loss, loss_ref)
    keys = sorted(p)
    rep.compare(
        "train_step: all parameters, p - lr * dL/dp",
        np.concatenate([np.ravel(new_p[k]) for k in keys]),
        np.concatenate([np.ravel(p[k] - lr * grads[k]) for k in keys]),
    )
    q, losses = _j(p), []
    for _ in range(100):
        q, loss = step(q, _j(xs), _j(y), jnp.asarray(lengths, jnp.int32), lr)
        losses.append(float(loss))
    rep.claim(
        "train_step: 100 steps lower the loss",
        losses[-1] < 0.5 * losses[0],
        f"loss {losses[0]:.3f} -> {losses[-1]:.3f}",
    )


def check_backward(ns, rep: Report) -> None:
    rng = np.random.default_rng(10)
    T, N, I, H = 6, 3, 4, 5
    p = _params(rng, _cell_shapes(1, I, H))
    xs, h0 = rng.standard_normal((T, N, I)), rng.standard_normal((N, H))
    dys, dh_T = rng.standard_normal((T, N, H)), rng.standard_normal((N, H))
    (h_T, ys), vjp = jax.vjp(ns["rnn_scan_vjp"], _j(p), _j(xs), _j(h0))
    (h_ref,), ys_ref = run_rows(elman_steps(p), (h0,), xs, np.full(N, T))
    rep.compare("rnn_scan_vjp forward: ys", ys, ys_ref)
    rep.compare("rnn_scan_vjp forward: h_T", h_T, h_ref)
    g_p, g_x, g_h0 = vjp((_j(dh_T), _j(dys)))
    grads, dxs, dh0 = elman_vjp_ref(p, xs, h0, dys, dh_T)
    for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        rep.compare(f"backward scan: d/d {k}", g_p[k], grads[k])
    rep.compare("backward scan: d/d xs", g_x, dxs)
    rep.compare("backward scan: d/d h0 (the last carried dh)", g_h0, dh0)
    try:
        jax.test_util.check_grads(
            ns["rnn_scan_vjp"], (_j(p), _j(xs), _j(h0)), order=1, modes=["rev"]
        )
        ok, detail = True, "order 1, reverse mode"
    except AssertionError as err:
        ok, detail = False, str(err).strip().splitlines()[0][:41]
    rep.claim("jax.test_util.check_grads (finite differences)", ok, detail)


def check_linear(ns, rep: Report) -> None:
    rng = np.random.default_rng(11)
    T, N, H = 9, 2, 3
    s = [(rng.uniform(0.2, 1.0, (N, H)), rng.standard_normal((N, H))) for _ in range(3)]
    h = rng.standard_normal((N, H))
    a12, b12 = ns["combine"](_j(s[0]), _j(s[1]))
    twice = s[1][0] * (s[0][0] * h + s[0][1]) + s[1][1]  # step 1, then step 2
    rep.compare(
        "combine(s1, s2) applied to h = s2(s1(h))", np.asarray(a12) * h + np.asarray(b12), twice
    )
    left = ns["combine"](ns["combine"](_j(s[0]), _j(s[1])), _j(s[2]))
    right = ns["combine"](_j(s[0]), ns["combine"](_j(s[1]), _j(s[2])))
    rep.compare("combine: associative, (s1 s2) s3 = s1 (s2 s3)", np.stack(left), np.stack(right))
    a, b = rng.uniform(0.2, 1.0, (T, N, H)), rng.standard_normal((T, N, H))
    hs, loop = h, []
    for t in range(T):
        hs = a[t] * hs + b[t]
        loop.append(hs)
    rep.compare(
        "linear_recurrence: h_t for all t, random h0",
        ns["linear_recurrence"](_j(a), _j(b), _j(h)),
        np.stack(loop),
    )
    names = _primitives(jax.make_jaxpr(ns["linear_recurrence"])(_j(a), _j(b), _j(h)).jaxpr)
    loops = [n for n in names if n in ("scan", "while")]
    rep.claim(
        "linear_recurrence: no sequential loop", not loops, f"{len(loops)} scan/while in the jaxpr"
    )


# Cells the checks of parts 6 and 7 give to the student's masked_scan (written here
# rather than taken from the student's earlier parts, so that each part stands alone).
def _elman_cell(p, h, x):
    b = p["bias_ih"] + p["bias_hh"]
    h = jnp.tanh(x @ p["weight_ih"].T + h @ p["weight_hh"].T + b[None, :])
    return h, h


def _lstm_cell(p, carry, x):
    h, c = carry
    gates = x @ p["weight_ih"].T + h @ p["weight_hh"].T + (p["bias_ih"] + p["bias_hh"])[None, :]
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return (h, c), h


# --------------------------------------------------------------------------- the parts


@dataclasses.dataclass(frozen=True)
class Part:
    number: int
    stem: str  # the file: exercises/<stem>.py, exercises/solutions/<stem>.py
    title: str
    names: tuple[str, ...]  # what the student writes
    check: Callable[[Mapping[str, Any], Report], None]

    def path(self, solutions: bool = False) -> pathlib.Path:
        return HERE / ("solutions" if solutions else "") / f"{self.stem}.py"


PARTS = [
    Part(1, "part01_elman", "the Elman cell", ("elman_cell",), check_elman),
    Part(2, "part02_rnn_scan", "rnn_scan: the loop as jax.lax.scan", ("rnn_scan",), check_rnn_scan),
    Part(3, "part03_lstm", "the LSTM cell", ("lstm_cell",), check_lstm),
    Part(4, "part04_gru", "the GRU cell, both reset variants", ("gru_cell",), check_gru),
    Part(5, "part05_mask", "the length mask", ("length_mask",), check_mask),
    Part(6, "part06_masked_scan", "masked_scan", ("masked_scan",), check_masked_scan),
    Part(
        7,
        "part07_reverse",
        "the reverse direction",
        ("reverse_padded", "bidirectional"),
        check_reverse,
    ),
    Part(8, "part08_stack", "a 2-layer bidirectional stack", ("lstm_stack",), check_stack),
    Part(9, "part09_train", "a training step", ("predict", "loss_fn", "train_step"), check_train),
    Part(
        10,
        "part10_backward_scan",
        "the backward scan (custom_vjp)",
        ("rnn_scan_fwd", "rnn_scan_bwd"),
        check_backward,
    ),
    Part(
        11,
        "part11_linear",
        "combine: linear recurrences in parallel",
        ("combine", "linear_recurrence"),
        check_linear,
    ),
]


def part(number: int) -> Part:
    return PARTS[number - 1]


def check_part(number: int, ns: Mapping[str, Any]) -> bool:
    """Run part ``number``'s check on the namespace ``ns`` (a module's globals); print a
    line per comparison and return True when every line is OK."""
    pt = part(number)
    print(f"part {pt.number:02d}: {pt.title}")
    missing = [name for name in pt.names if name not in ns]
    if missing:
        print(f"  missing: {', '.join(missing)}  FAIL")
        return False
    rep = Report()
    try:
        with jax.enable_x64(True):
            pt.check(ns, rep)
    except NotImplementedError:
        frame = traceback.extract_tb(sys.exc_info()[2])[-1]
        print(
            f"  not implemented yet: {frame.name} (line {frame.lineno} of {pathlib.Path(frame.filename).name})"
        )
        return False
    print(f"  part {pt.number:02d}: {'all OK' if rep.ok else 'FAIL'}")
    return rep.ok


def run_part(number: int, ns: Mapping[str, Any]) -> int:
    """For a part's ``if __name__ == "__main__"``: the check, as an exit status."""
    return 0 if check_part(number, ns) else 1


def load(path: pathlib.Path) -> Any:
    """Import a part's file as a module (its name: the stem, prefixed to stay unique)."""
    name = f"_exercise_{path.parent.name}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    solutions = "--solutions" in argv
    numbers = [int(a) for a in argv if a != "--solutions"] or [pt.number for pt in PARTS]
    results = {n: check_part(n, vars(load(part(n).path(solutions)))) for n in numbers}
    print()
    for n, ok in results.items():
        print(f"part {n:02d} {part(n).title:<42s} {'OK' if ok else 'not yet'}")
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
