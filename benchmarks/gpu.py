"""The GPU check: parity of jaxseq's fused and cuDNN LSTM layers with torch's cuDNN LSTM, then
training-step timings against the GPU LSTMs a user would pick instead.

    python -m benchmarks.gpu [--out DIR] [--quick] [--budget-s S] [--repeats R]
                             [--precision default|highest]

1. **Parity** (float32, every matmul at full float32 precision: JAX's
   ``default_matmul_precision("highest")``, torch's TF32 switches off). For 1 and 2
   layers, uni- and bidirectional, ragged lengths in [1, T] (torch through
   ``pack_padded_sequence``) and full lengths, with random ``(h0, c0)``: the output,
   ``h_n``, ``c_n`` and the gradients of a random linear function of them with respect to
   every parameter, the input and ``(h0, c0)``, from ``jaxseq.lstm(..., impl="fused")``
   and from :func:`jaxseq.cudnn.cudnn_layer`, against ``torch.nn.LSTM`` on CUDA (cuDNN).
   Each tensor passes when ``max|a - b| <= 1e-4 * max|torch|`` (plus 1e-6). Lengths of 0
   (which torch rejects) are checked between the two jaxseq paths.
2. **Timing** of one training step (jitted forward and backward of the masked mean
   squared output; torch: forward through ``pack_padded_sequence`` and ``backward``) of
   ``jaxseq_fused``, ``jaxseq_cudnn``, ``flax_linen`` (``nn.RNN(nn.OptimizedLSTMCell)``
   with ``seq_lengths``), ``jax_rnn`` (``jax.experimental.rnn.lstm`` called directly) and
   ``torch_cudnn`` (``nn.LSTM``), one layer, lengths in [T/2, T], at B in {32, 256},
   T in {100, 1000}, H in {256, 1024}, I in {H, 128}, float32, and bfloat16 where the
   library takes it (a library that refuses is recorded with its message). Medians over
   interleaved repeats after a warm-up; configurations run in priority order until the
   time budget is spent (the rest are listed as skipped).
3. A probe of raw ``jax.experimental.rnn.lstm`` with a zero length (what cuDNN does with
   it), run last, after the results are written, and added to them.

Writes ``results.md`` and ``results.json`` to ``--out`` (default ``runs/gpu``). Exit status:
0 when every parity check passes, 1 when one fails, 2 (before any work, with a one-line
message on stderr) when JAX's default backend is not a GPU or torch sees no CUDA device.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import gc
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

NO_GPU = 2
RTOL, ATOL = 1e-4, 1e-6
FRAMEWORKS = ("jaxseq_fused", "jaxseq_cudnn", "flax_linen", "jax_rnn", "torch_cudnn")


@dataclasses.dataclass(frozen=True)
class Size:
    B: int
    T: int
    I: int
    H: int

    def label(self) -> str:
        return f"B={self.B} T={self.T} I={self.I} H={self.H}"


@dataclasses.dataclass
class Env:
    """Where things run: ``torch_device``, the cuDNN stand-ins (None: cuDNN itself) and
    the device synchronisation. :func:`main` uses the GPU; a dry run on the CPU passes
    ``jaxseq.cudnn.reference_lstm`` for both stand-ins."""

    torch_device: str = "cuda"
    lstm_fn: Callable[..., Any] | None = None  # for jaxseq.cudnn.cudnn_layer
    jax_rnn_lstm: Callable[..., Any] | None = None  # for jax.experimental.rnn.lstm
    sync: Callable[[], None] = lambda: None


def gpu_problem() -> str | None:
    """Why this machine cannot run the check (None when it can)."""
    import jax

    backend = jax.default_backend()
    import torch

    cuda = torch.cuda.is_available()
    if backend == "gpu" and cuda:
        return None
    return (
        f"benchmarks.gpu needs a CUDA GPU seen by JAX and torch (JAX's default backend: "
        f"{backend!r}, torch.cuda.is_available(): {cuda}); nothing was run"
    )


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def stand_in_cudnn(lstm_fn: Callable[..., Any] | None):
    """Within the block, ``impl="cudnn"`` runs :func:`jaxseq.cudnn.cudnn_layer` with
    ``lstm_fn`` in place of ``jax.experimental.rnn.lstm`` (None: cuDNN itself)."""
    from jaxseq import impls
    from jaxseq.cudnn import cudnn_layer

    if lstm_fn is None:
        yield
        return
    index = next(i for i, row in enumerate(impls.IMPLS) if row.name == "cudnn")
    saved = impls.IMPLS[index]
    impls.IMPLS[index] = dataclasses.replace(
        saved, fn=functools.partial(cudnn_layer, lstm_fn=lstm_fn)
    )
    try:
        yield
    finally:
        impls.IMPLS[index] = saved


def cudnn_stack(params, x, hx=None, lengths=None, *, env: Env, dtype=None):
    """jaxseq's LSTM through the cuDNN layer, ``jaxseq.lstm(..., impl="cudnn")``, with the
    CPU dry run's stand-in for cuDNN where ``env`` has one."""
    import jaxseq

    with stand_in_cudnn(env.lstm_fn):
        return jaxseq.lstm(params, x, hx, lengths, impl="cudnn", dtype=dtype)


def _rel_err(a, b) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(
        np.max(np.abs(a - b), initial=0.0) / (np.max(np.abs(b), initial=0.0) + ATOL / RTOL)
    )


def _torch_tf32(cudnn: bool, matmul: bool) -> tuple[bool, bool]:
    """Set torch's two TF32 switches; returns the previous ``(cudnn, matmul)``."""
    import torch

    old = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = cudnn
    torch.backends.cuda.matmul.allow_tf32 = matmul
    return old


# --------------------------------------------------------------------------- parity


def _torch_run(module, x, h0, c0, lengths, cots, device: str) -> dict[str, np.ndarray]:
    """torch's outputs and gradients (names as the JAX side's)."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    T = x.shape[0]
    xt = torch.tensor(x, device=device, requires_grad=True)
    h0t = torch.tensor(h0, device=device, requires_grad=True)
    c0t = torch.tensor(c0, device=device, requires_grad=True)
    module.zero_grad(set_to_none=True)
    if lengths is None:
        out, (h_n, c_n) = module(xt, (h0t, c0t))
    else:
        packed = pack_padded_sequence(xt, torch.tensor(lengths), enforce_sorted=False)
        out, (h_n, c_n) = module(packed, (h0t, c0t))
        out, _ = pad_packed_sequence(out, total_length=T)
    co, ch, cc = (torch.tensor(c, device=device) for c in cots)
    loss = (out * co).sum() + (h_n * ch).sum() + (c_n * cc).sum()
    loss.backward()
    res = {"out": out, "h_n": h_n, "c_n": c_n, "d_x": xt.grad, "d_h0": h0t.grad, "d_c0": c0t.grad}
    res.update({f"d_{k}": p.grad for k, p in module.named_parameters()})
    return {k: v.detach().cpu().numpy() for k, v in res.items()}


def _jax_run(path: str, params, x, h0, c0, lengths, cots, env: Env) -> dict[str, np.ndarray]:
    import jax
    import jax.numpy as jnp

    import jaxseq

    def f(p, x, h0, c0):
        if path == "jaxseq_fused":
            out, (h_n, c_n) = jaxseq.lstm(p, x, (h0, c0), lengths, impl="fused")
        else:
            out, (h_n, c_n) = cudnn_stack(p, x, (h0, c0), lengths, env=env)
        co, ch, cc = cots
        loss = jnp.sum(out * co) + jnp.sum(h_n * ch) + jnp.sum(c_n * cc)
        return loss, (out, h_n, c_n)

    with jax.default_matmul_precision("highest"):
        g = jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2, 3), has_aux=True))
        (_, (out, h_n, c_n)), (dp, dx, dh0, dc0) = g(params, x, h0, c0)
    res = {"out": out, "h_n": h_n, "c_n": c_n, "d_x": dx, "d_h0": dh0, "d_c0": dc0}
    res.update({f"d_{k}": v for k, v in dp.items()})
    return {k: np.asarray(v) for k, v in res.items()}


def _compare(got: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, Any]:
    errs = {k: _rel_err(got[k], ref[k]) for k in ref}
    worst = max(errs, key=errs.get)
    return {"max_rel_err": errs[worst], "worst": worst, "ok": errs[worst] <= RTOL}


def parity(quick: bool, env: Env) -> list[dict[str, Any]]:
    """The parity cases (see the module docstring); one record per case and jaxseq path."""
    small, larger = Size(6, 12, 10, 16), Size(16, 64, 48, 128)
    # (size, layers, bidirectional, ragged lengths)
    cases = [(small, L, bi, True) for L in (1, 2) for bi in (False, True)]
    cases += [(small, 2, False, False), (small, 2, True, False)]
    if not quick:
        cases += [(larger, 1, False, True), (larger, 2, True, True)]
    records = []
    old = _torch_tf32(False, False)
    try:
        for case in cases:
            records += _parity_case(*case, env)
        records.append(_zero_length_case(small, env))
    finally:
        _torch_tf32(*old)
    return records


def _zero_length_case(size: Size, env: Env) -> dict[str, Any]:
    """Lengths of 0 (torch rejects them): the cuDNN layer against the fused path, and
    exactly zero output with ``h_n = h0``, ``c_n = c0`` on those rows."""
    import jax
    import jax.numpy as jnp

    import jaxseq

    D = 2
    rng = np.random.default_rng(5)
    params = jaxseq.init_lstm(jax.random.key(0), size.I, size.H, 2, bidirectional=True)
    x = rng.standard_normal((size.T, size.B, size.I)).astype(np.float32)
    h0, c0 = (rng.standard_normal((2 * D, size.B, size.H)).astype(np.float32) for _ in "hc")
    lengths = rng.integers(1, size.T + 1, size=size.B)
    lengths[0], lengths[1], lengths[2] = size.T, 0, 0
    cots = _cots(rng, size, 2, D)
    rec: dict[str, Any] = {"case": f"{size.label()} L=2 bi lengths incl. 0"}
    rec.update(path="jaxseq_cudnn", against="jaxseq_fused")
    try:
        jl = jnp.asarray(lengths, jnp.int32)
        ref = _jax_run("jaxseq_fused", params, x, h0, c0, jl, cots, env)
        got = _jax_run("jaxseq_cudnn", params, x, h0, c0, jl, cots, env)
    except Exception as e:  # noqa: BLE001 - a failure is a parity failure, reported
        return {**rec, "ok": False, "error": f"{type(e).__name__}: {e}"}
    rec.update(_compare(got, ref))
    empty = lengths == 0
    exact = bool(
        np.array_equal(got["h_n"][:, empty], h0[:, empty])
        and np.array_equal(got["c_n"][:, empty], c0[:, empty])
        and not np.any(got["out"][:, empty])
    )
    rec["zero_length_exact"] = exact
    rec["ok"] = rec["ok"] and exact
    return rec


def _cots(rng, size: Size, layers: int, D: int):
    return (
        rng.standard_normal((size.T, size.B, D * size.H)).astype(np.float32),
        rng.standard_normal((layers * D, size.B, size.H)).astype(np.float32),
        rng.standard_normal((layers * D, size.B, size.H)).astype(np.float32),
    )


def _parity_case(size: Size, layers: int, bidirectional: bool, ragged: bool, env: Env):
    import jax.numpy as jnp
    import torch

    D = 2 if bidirectional else 1
    torch.manual_seed(layers + 2 * bidirectional)
    module = torch.nn.LSTM(size.I, size.H, layers, bidirectional=bidirectional)
    module = module.to(env.torch_device)
    params = {k: jnp.asarray(v.detach().cpu().numpy()) for k, v in module.state_dict().items()}
    rng = np.random.default_rng(layers + 2 * bidirectional)
    x = rng.standard_normal((size.T, size.B, size.I)).astype(np.float32)
    h0, c0 = (rng.standard_normal((layers * D, size.B, size.H)).astype(np.float32) for _ in "hc")
    lengths = None
    if ragged:
        lengths = rng.integers(1, size.T + 1, size=size.B)
        lengths[0], lengths[1] = size.T, 1
    cots = _cots(rng, size, layers, D)
    ref = _torch_run(module, x, h0, c0, lengths, cots, env.torch_device)
    jl = None if lengths is None else jnp.asarray(lengths, jnp.int32)
    label = f"{size.label()} L={layers}{' bi' if bidirectional else ''}"
    label += " ragged" if ragged else " full"
    out = []
    for path in ("jaxseq_fused", "jaxseq_cudnn"):
        try:
            got = _jax_run(path, params, x, h0, c0, jl, cots, env)
            rec = {"case": label, "path": path, **_compare(got, ref), "against": "torch_cudnn"}
        except Exception as e:  # noqa: BLE001 - a failure is a parity failure, reported
            rec = {"case": label, "path": path, "ok": False, "error": f"{type(e).__name__}: {e}"}
        out.append(rec)
    return out


# --------------------------------------------------------------------------- timing


class Unsupported(Exception):
    """A framework that does not take a configuration (e.g. cuDNN with bfloat16)."""


def _data(size: Size, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((size.T, size.B, size.I)).astype(np.float32)
    lengths = rng.integers(size.T // 2, size.T + 1, size=size.B)
    lengths[0] = size.T
    return x, lengths.astype(np.int64)


def _jax_step(loss_fn, p, *args) -> Callable[[], float]:
    """A jitted forward + backward of ``loss_fn(p, *args)``, compiled and run once."""
    import jax

    step = jax.jit(jax.value_and_grad(loss_fn))

    def run() -> float:
        loss, grads = jax.block_until_ready(step(p, *args))
        return float(loss)

    run()
    return run


def build(fw: str, size: Size, dtype_name: str, x_np, lengths_np, torch_module, env: Env):
    """One framework's training step: a callable that runs it and waits for the device."""
    import jax
    import jax.numpy as jnp

    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype_name]
    T, B = size.T, size.B
    params = {
        k: jnp.asarray(v.detach().cpu().float().numpy())
        for k, v in torch_module.state_dict().items()
    }
    lengths = jnp.asarray(lengths_np, jnp.int32)
    x_tm = jnp.asarray(x_np)  # (T, B, I)

    def msq(out, lengths, batch_major=False):
        """The mean squared output, padding zeroed (computed in float32)."""
        valid = jnp.arange(T, dtype=jnp.int32).reshape(T, 1) < lengths.reshape(1, B)  # (T, B)
        valid = (valid.T if batch_major else valid)[:, :, None]
        out = out.astype(jnp.float32)
        out = jnp.where(valid, out, jnp.zeros_like(out))
        return jnp.mean(out * out)

    if fw == "jaxseq_fused":
        import jaxseq

        def loss(p, x, lengths):
            out, _ = jaxseq.lstm(p, x, lengths=lengths, impl="fused", dtype=dtype)
            return msq(out, lengths)

        return _jax_step(loss, params, x_tm, lengths)
    if fw == "jaxseq_cudnn":

        def loss(p, x, lengths):
            out, _ = cudnn_stack(p, x, lengths=lengths, env=env, dtype=dtype)
            return msq(out, lengths)

        return _jax_step(loss, params, x_tm, lengths)
    x_bm = jnp.swapaxes(x_tm, 0, 1)  # (B, T, I): the native layout of the next two
    if fw == "flax_linen":
        from flax import linen as nn

        model = nn.RNN(nn.OptimizedLSTMCell(size.H, dtype=dtype, param_dtype=jnp.float32))
        p = model.init(jax.random.key(0), x_bm.astype(dtype), seq_lengths=lengths)

        def loss(p, x, lengths):
            out = model.apply(p, x.astype(dtype), seq_lengths=lengths)
            return msq(out, lengths, batch_major=True)

        return _jax_step(loss, p, x_bm, lengths)
    if fw == "jax_rnn":
        from jax.experimental import rnn as jrnn

        from jaxseq.cudnn import pack_lstm_params

        if dtype != jnp.float32:
            raise Unsupported("jax.experimental.rnn.lstm is float32 only (jaxlib's cuDNN call)")
        lstm = functools.partial(
            env.jax_rnn_lstm or jrnn.lstm,
            input_size=size.I,
            hidden_size=size.H,
            num_layers=1,
            dropout=0.0,
            bidirectional=False,
        )
        flat = pack_lstm_params(params, 1, False)
        h0 = jnp.zeros((1, B, size.H), jnp.float32)

        def loss(w, x, lengths):
            out, _, _ = lstm(x, h0, h0, w, lengths)
            return msq(out, lengths, batch_major=True)

        return _jax_step(loss, flat, x_bm, lengths)
    if fw == "torch_cudnn":
        return _torch_step(size, dtype_name, x_np, lengths_np, torch_module, env)
    raise ValueError(f"unknown framework {fw!r}")


def _torch_step(size: Size, dtype_name: str, x_np, lengths_np, torch_module, env: Env):
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype_name]
    module = torch_module.to(env.torch_device, dtype)
    x = torch.tensor(x_np, device=env.torch_device, dtype=dtype)
    lengths = torch.tensor(lengths_np)  # on the host, as pack_padded_sequence wants them

    def run() -> float:
        module.zero_grad(set_to_none=True)
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        out, _ = module(packed)
        out, _ = pad_packed_sequence(out, total_length=size.T)  # zero on padding
        out = out.float()
        loss = (out * out).mean()
        loss.backward()
        env.sync()
        return float(loss.item())

    run()
    return run


def timing_plan(quick: bool) -> list[tuple[Size, str]]:
    """(size, dtype) in priority order: the extremes first, bfloat16 on three of them."""
    if quick:
        return [
            (Size(32, 100, 128, 256), "float32"),
            (Size(256, 100, 1024, 1024), "float32"),
            (Size(256, 100, 1024, 1024), "bfloat16"),
        ]
    first = [
        Size(32, 100, 128, 256),
        Size(256, 1000, 1024, 1024),
        Size(256, 100, 1024, 1024),
        Size(32, 1000, 256, 256),
    ]
    plan = [(s, "float32") for s in first] + [(s, "bfloat16") for s in first[:3]]
    for T in (100, 1000):
        for B in (32, 256):
            for H in (256, 1024):
                for I in (H, 128):
                    s = Size(B, T, I, H)
                    if s not in first:
                        plan.append((s, "float32"))
    return plan


def timing(
    plan: list[tuple[Size, str]], repeats: int, deadline: float, env: Env
) -> tuple[list[dict[str, Any]], list[str]]:
    """Time every framework on each planned configuration until ``deadline``
    (``time.perf_counter()``); returns the records and the skipped configurations."""
    import torch

    from .run import time_interleaved

    records, skipped = [], []
    cost: dict[int, float] = {}  # the last configuration's cost, by T
    for i, (size, dtype_name) in enumerate(plan):
        label = f"{size.label()} {dtype_name}"
        guess = cost.get(size.T, 30.0 if size.T >= 1000 else 15.0)
        if time.perf_counter() + guess > deadline:
            skipped += [f"{s.label()} {d}" for s, d in plan[i:]]
            break
        t0 = time.perf_counter()
        x_np, lengths_np = _data(size)
        torch.manual_seed(0)
        module = torch.nn.LSTM(size.I, size.H)
        fns, notes = {}, {}
        for fw in FRAMEWORKS:
            try:
                fns[fw] = build(fw, size, dtype_name, x_np, lengths_np, module, env)
            except Exception as e:  # noqa: BLE001 - a refusal or failure is recorded
                notes[fw] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        left = max(deadline - time.perf_counter(), 1.0)
        try:
            stats = time_interleaved(fns, repeats, warmup=1, budget_s=left / 2) if fns else {}
        except Exception as e:  # noqa: BLE001 - e.g. out of memory: recorded, run goes on
            stats = {}
            notes["timing"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        rec = {"config": label, **dataclasses.asdict(size), "dtype": dtype_name}
        rec["median_ms"] = {k: v["median_ms"] for k, v in stats.items()}
        rec["iqr_ms"] = {k: v["iqr_ms"] for k, v in stats.items()}
        rec["n"] = {k: v["n"] for k, v in stats.items()}
        rec["not_run"] = notes
        records.append(rec)
        del fns, module
        gc.collect()
        if env.torch_device == "cuda":
            torch.cuda.empty_cache()
        cost[size.T] = time.perf_counter() - t0
    return records, skipped


# --------------------------------------------------------------------------- probe


def zero_length_probe(env: Env) -> dict[str, Any]:
    """What raw ``jax.experimental.rnn.lstm`` (no clamp) does with a zero length and with
    padding: returns its h_n / output for a batch with lengths (3, 1, 0)."""
    import jax
    import jax.numpy as jnp
    from jax.experimental import rnn as jrnn

    lstm = env.jax_rnn_lstm or jrnn.lstm
    T, B, I, H = 3, 3, 2, 4
    k = jax.random.split(jax.random.key(0), 4)
    x = jax.random.normal(k[0], (B, T, I), jnp.float32)
    h0 = jax.random.normal(k[1], (1, B, H), jnp.float32)
    c0 = jax.random.normal(k[2], (1, B, H), jnp.float32)
    w = jrnn.init_lstm_weight(k[3], I, H, 1, False)
    lengths = jnp.asarray([3, 1, 0], jnp.int32)
    sizes = {"input_size": I, "hidden_size": H, "num_layers": 1}
    try:
        y, h_n, c_n = jax.block_until_ready(
            lstm(x, h0, c0, w, lengths, **sizes, dropout=0.0, bidirectional=False)
        )
    except Exception as e:  # noqa: BLE001 - the probe records what happens
        return {"status": "error", "error": f"{type(e).__name__}: {str(e)[:300]}"}
    y, h_n, h0 = np.asarray(y), np.asarray(h_n), np.asarray(h0)
    return {
        "status": "ran",
        "padding_output_zero": bool(not np.any(y[1, 1:])),
        "zero_length_output_zero": bool(not np.any(y[2])),
        "zero_length_h_n_equals_h0": bool(np.array_equal(h_n[0, 2], h0[0, 2])),
        "zero_length_h_n": h_n[0, 2].tolist(),
        "finite": bool(np.all(np.isfinite(y)) and np.all(np.isfinite(h_n))),
    }


# --------------------------------------------------------------------------- report


def environment() -> dict[str, Any]:
    import jax
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
        "jax_device": str(jax.devices()[0].device_kind),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cudnn_layer_via": "jaxseq.lstm(impl='cudnn')",
    }
    try:
        import jaxlib

        info["jaxlib"] = jaxlib.__version__
    except (ImportError, AttributeError):
        pass
    if torch.cuda.is_available():
        info["torch_device"] = torch.cuda.get_device_name()
    return info


def to_markdown(report: dict[str, Any]) -> str:
    lines = ["# GPU check: jaxseq fused / cuDNN LSTM", ""]
    env = report["environment"]
    lines.append(", ".join(f"{k} {v}" for k, v in env.items()))
    lines += ["", "## Parity (float32, full precision)", ""]
    lines += ["| case | path | against | max rel err | worst | ok |", "|---|---|---|---|---|---|"]
    for r in report["parity"]:
        err = f"{r['max_rel_err']:.1e}" if "max_rel_err" in r else r.get("error", "")
        lines.append(
            f"| {r['case']} | {r['path']} | {r.get('against', '')} | {err} | "
            f"{r.get('worst', '')} | {'yes' if r['ok'] else '**NO**'} |"
        )
    lines += [
        "",
        f"## Training step, median ms (precision: {report['precision']}; "
        f"ratio: torch_cudnn / framework, > 1 is faster than torch)",
        "",
        "| config | " + " | ".join(FRAMEWORKS) + " |",
        "|---|" + "---|" * len(FRAMEWORKS),
    ]
    for r in report["timing"]:
        ref = r["median_ms"].get("torch_cudnn")
        cells = []
        for fw in FRAMEWORKS:
            if fw in r["median_ms"]:
                ms = r["median_ms"][fw]
                ratio = f" ({ref / ms:.2f}x)" if ref and fw != "torch_cudnn" else ""
                cells.append(f"{ms:.2f}{ratio}")
            else:
                cells.append("n/a")
        lines.append(f"| {r['config']} | " + " | ".join(cells) + " |")
    notes = [(r["config"], fw, msg) for r in report["timing"] for fw, msg in r["not_run"].items()]
    if notes:
        lines += ["", "Not run:", ""]
        lines += [f"- {cfg}, {fw}: {msg}" for cfg, fw, msg in notes]
    if report["skipped"]:
        lines += ["", f"Skipped (time budget): {', '.join(report['skipped'])}"]
    if report.get("zero_length_probe"):
        lines += ["", f"Raw cuDNN zero-length probe: {json.dumps(report['zero_length_probe'])}"]
    verdict = "PASS" if report["parity_ok"] else "FAIL"
    lines += ["", f"Parity: {verdict}; wall time {report['wall_s']:.0f} s."]
    return "\n".join(lines) + "\n"


def write(out: Path, report: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=1))
    (out / "results.md").write_text(to_markdown(report))


def run(args: argparse.Namespace, env: Env) -> int:
    """Parity, timing, probe; writes the report; returns the exit status (0 or 1)."""
    import jax

    start = time.perf_counter()
    deadline = start + args.budget_s
    report: dict[str, Any] = {"environment": environment(), "precision": args.precision}
    report["parity"] = parity(args.quick, env)
    report["parity_ok"] = all(r["ok"] for r in report["parity"])
    highest = args.precision == "highest"
    # Timing at "default": torch's own defaults (TF32 allowed in cuDNN, not in matmuls).
    old = _torch_tf32(not highest, False)
    try:
        ctx = jax.default_matmul_precision("highest") if highest else contextlib.nullcontext()
        with ctx:
            plan = timing_plan(args.quick)
            report["timing"], report["skipped"] = timing(plan, args.repeats, deadline, env)
    finally:
        _torch_tf32(*old)
    report["wall_s"] = time.perf_counter() - start
    out = Path(args.out)
    write(out, report)
    report["zero_length_probe"] = zero_length_probe(env)  # last: cuDNN may reject it
    report["wall_s"] = time.perf_counter() - start
    write(out, report)
    print(to_markdown(report))
    return 0 if report["parity_ok"] else 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/gpu", help="output folder (default runs/gpu)")
    ap.add_argument("--quick", action="store_true", help="small parity sizes, three configs")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats per framework")
    ap.add_argument(
        "--budget-s",
        type=float,
        default=210.0,
        help="wall-time budget: no configuration starts past it (default 210)",
    )
    ap.add_argument(
        "--precision",
        choices=("default", "highest"),
        default="default",
        help="timing only: each library's default float32 matmul precision (TF32 allowed "
        "where the library allows it), or full float32 everywhere",
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # JAX and torch share the GPU: JAX must not take 75% of it up front.
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.45")
    problem = gpu_problem()
    if problem is not None:
        print(problem, file=sys.stderr)
        return NO_GPU
    import torch

    return run(args, Env(torch_device="cuda", sync=torch.cuda.synchronize))


if __name__ == "__main__":
    sys.exit(main())
