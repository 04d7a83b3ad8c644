"""Time jaxseq against torch padded, torch packed and Flax linen, in one process, interleaved.

For each kind (RNN, LSTM, GRU) and config (B, T, I, H, layers, bidirectional) it times
three jitted / eager programs per framework, float32, lengths drawn in [T/2, T]:

* ``train``: loss, gradients and an SGD update (forward + backward);
* ``fwd``:   the training forward pass and the loss, no gradients;
* ``infer``: the forward pass alone (torch: ``inference_mode``).

Frameworks: ``jaxseq`` (the default fast path, lengths given), ``jaxseq_ref`` (the
reference layer, lengths given), ``jaxseq_hoisted`` (opt-in: the fast path with the input
projection hoisted out of the scan, the default off the CPU), ``jaxseq_loop`` (opt-in: the
input projection in the per-step matmul), ``jaxseq_dp`` (the default fast path with the batch
split over every local JAX device by ``shard_map``; on a CPU the harness makes XLA expose
2 host devices, one per core, with ``--devices``, alias ``--host-devices``), ``torch_padded`` (``nn.LSTM`` on the padded batch, no
lengths), ``torch_packed`` (``pack_padded_sequence`` — the like-for-like way to honour
lengths in torch), ``flax_linen`` (``nn.RNN`` with its own cells and ``seq_lengths``), and
the other JAX peers of :mod:`benchmarks.peers`: ``flax_nnx`` (``nnx.RNN``), ``equinox``
(its cells in a masked ``lax.scan``) and ``keras`` (Keras 3 on the JAX backend, masked).
Repeats are interleaved across frameworks after a warm-up; medians and IQRs are reported,
with the ratio of jaxseq to each baseline, the achieved GFLOP/s against a matmul peak
measured in this process, the jit compile time, the compile count when only the lengths
change (must be 1), and memory: XLA's own estimate for the compiled JAX steps and the
bytes torch's autograd saves for backward. A roofline column sets jaxseq's achieved
GFLOP/s against the rate of the *same-shaped* matmuls alone (the input projection and
T dependent (B, H) x (H, G*H) products in a scan, measured in this process). Unless
``--no-streaming``, the run ends with the B=1 one-step-at-a-time latency of the cell
modules against torch's cells (:func:`benchmarks.peers.streaming`).

    python -m benchmarks.run [--quick | --full] [--kinds lstm gru] [--configs target]
                             [--frameworks ...] [--repeats R] [--devices N]
                             [--host-memory system|retain] --out DIR

``--host-memory retain`` calls :func:`jaxseq.retain_host_memory` first: glibc then keeps
freed memory for reuse instead of unmapping it, which spares XLA's per-call temporaries
their page faults. It is process-wide, so every framework in the run is timed under it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import peers

THREADS = 2


@dataclasses.dataclass(frozen=True)
class Config:
    B: int
    T: int
    I: int
    H: int
    layers: int = 1
    bidirectional: bool = False

    def label(self) -> str:
        s = f"B={self.B} T={self.T} I={self.I} H={self.H}"
        if self.layers > 1:
            s += f" L={self.layers}"
        if self.bidirectional:
            s += " bi"
        return s


CONFIGS = {
    "target": Config(64, 100, 32, 128),
    "target_l2_bi": Config(64, 100, 32, 128, 2, True),
    "long": Config(32, 500, 64, 256),
    "wide": Config(256, 50, 128, 512),
    "tiny_long": Config(1, 1000, 4, 8),
    "smoke": Config(3, 6, 4, 5),  # for the smoke tests only
    "smoke_even": Config(4, 6, 4, 5),
}
DEFAULT_PLAN = [
    ("target", "lstm"),
    ("target", "gru"),
    ("target", "rnn"),
    ("target_l2_bi", "lstm"),
    ("long", "lstm"),
]
FULL_CONFIGS = ["target", "target_l2_bi", "long", "wide", "tiny_long"]
FRAMEWORKS = [
    "jaxseq",
    "jaxseq_ref",
    "jaxseq_hoisted",
    "jaxseq_loop",
    "jaxseq_dp",
    "torch_padded",
    "torch_packed",
    "flax_linen",
    "flax_nnx",
    "equinox",
    "keras",
]
#: Timed unless --frameworks says otherwise (jaxseq_hoisted and jaxseq_loop are opt-in).
DEFAULT_FRAMEWORKS = [
    "jaxseq",
    "jaxseq_dp",
    "jaxseq_ref",
    "torch_padded",
    "torch_packed",
    "flax_linen",
    "flax_nnx",
    "equinox",
    "keras",
]
#: The JAX libraries a user would otherwise pick (for the "best JAX peer" ratio).
JAX_PEERS = ["flax_linen", "flax_nnx", "equinox", "keras"]
BASELINES = [
    "torch_padded",
    "torch_packed",
    "flax_linen",
    "flax_nnx",
    "equinox",
    "keras",
    "jaxseq_ref",
    "jaxseq_hoisted",
    "jaxseq_loop",
    "jaxseq_dp",
]
_JAXSEQ_IMPLS = {
    "jaxseq": "fused",
    "jaxseq_ref": "reference",
    "jaxseq_hoisted": "fused_hoisted",
    "jaxseq_loop": "fused_loop",
    "jaxseq_dp": "fused",
}
#: Frameworks that shard the batch over all local devices.
_DATA_PARALLEL = ("jaxseq_dp",)
MODES = ["train", "fwd", "infer"]
GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def flops(kind: str, cfg: Config) -> dict[str, float]:
    """Matmul FLOPs of one step: forward = 2 * B*T * (I_l + H) * G*H per layer and direction;
    training = 3 x forward (the backward does two matmuls per forward matmul)."""
    D = 2 if cfg.bidirectional else 1
    G = GATES[kind]
    fwd = 0.0
    for layer in range(cfg.layers):
        in_size = cfg.I if layer == 0 else D * cfg.H
        fwd += D * 2.0 * cfg.B * cfg.T * (in_size + cfg.H) * G * cfg.H
    return {"train": 3 * fwd, "fwd": fwd, "infer": fwd}


# --------------------------------------------------------------------------- builders
# Each builder returns {mode: callable() -> float loss (blocking)} plus extra info.


def _data(cfg: Config, seed: int = 0, full_lengths: bool = False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((cfg.T, cfg.B, cfg.I)).astype(np.float32)
    if full_lengths:
        lengths = np.full((cfg.B,), cfg.T, np.int64)
    else:
        lengths = rng.integers(cfg.T // 2, cfg.T + 1, size=cfg.B)
        lengths[0] = cfg.T  # pad_packed_sequence then returns length T
    return x, lengths.astype(np.int64)


def _torch_module(kind: str, cfg: Config, seed: int = 0):
    import torch

    torch.manual_seed(seed)
    cls = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind]
    return cls(cfg.I, cfg.H, cfg.layers, bidirectional=cfg.bidirectional)


def build_torch(kind: str, cfg: Config, x_np, lengths_np, packed: bool):
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    module = _torch_module(kind, cfg)
    opt = torch.optim.SGD(module.parameters(), lr=1e-3)
    x = torch.from_numpy(x_np)
    lengths = torch.from_numpy(lengths_np)

    def forward():
        if packed:
            p = pack_padded_sequence(x, lengths, enforce_sorted=False)
            out, _ = module(p)
            out, _ = pad_packed_sequence(out, total_length=cfg.T)
        else:
            out, _ = module(x)
        return (out * out).mean()

    def train():
        opt.zero_grad(set_to_none=True)
        loss = forward()
        loss.backward()
        opt.step()
        return loss.detach().item()

    def fwd():
        return forward().detach().item()

    def infer():
        with torch.inference_mode():
            return forward().item()

    def saved_bytes():
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            forward()
        return total

    info = {"memory_bytes": {"train": saved_bytes(), "kind": "autograd saved tensors"}}
    return {"train": train, "fwd": fwd, "infer": infer}, info, module


def _compile_info(jitted, args) -> dict[str, Any]:
    t0 = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    secs = time.perf_counter() - t0
    mem = None
    try:
        ma = compiled.memory_analysis()
        mem = int(ma.temp_size_in_bytes + ma.output_size_in_bytes)
    except Exception:  # noqa: BLE001 - not every backend reports it
        pass
    return {"compile_s": secs, "temp_plus_output_bytes": mem}


def build_jaxseq(
    kind: str,
    cfg: Config,
    x_np,
    lengths_np,
    impl: str,
    torch_module=None,
    unroll: int = 1,
    data_parallel: bool = False,
):
    """jaxseq's programs; ``data_parallel``: the batch split over every local device by
    ``shard_map`` (parameters replicated; loss and gradients averaged across devices)."""
    import jax
    import jax.numpy as jnp

    import jaxseq

    if torch_module is None:
        torch_module = _torch_module(kind, cfg)
    params = {k: jnp.asarray(v.detach().numpy()) for k, v in torch_module.state_dict().items()}
    x = jnp.asarray(x_np)
    lengths = jnp.asarray(lengths_np, jnp.int32)
    run = {"rnn": jaxseq.rnn, "lstm": jaxseq.lstm, "gru": jaxseq.gru}[kind]

    def loss_fn(p, x, lengths):
        out, _ = run(p, x, lengths=lengths, impl=impl, unroll=unroll)
        return jnp.mean(out * out)

    def average(tree):
        """Across devices when data-parallel (equal slices: the mean of the means)."""
        return jax.lax.pmean(tree, "batch") if data_parallel else tree

    traces = []

    def train_step(p, x, lengths):
        traces.append(1)
        # Data-parallel: the gradient of the averaged loss is the whole batch's gradient.
        loss, g = jax.value_and_grad(lambda q: average(loss_fn(q, x, lengths)))(p)
        return loss, jax.tree.map(lambda a, b: a - 1e-3 * b, p, g)

    def infer_fn(p, x, lengths):
        return run(p, x, lengths=lengths, impl=impl, unroll=unroll)[0]

    if data_parallel:
        # shard_map: each device runs the single-device program on its slice of the batch.
        from jax.sharding import Mesh, NamedSharding
        from jax.sharding import PartitionSpec as P

        devices = jax.devices()
        if cfg.B % len(devices):
            raise ValueError(f"batch {cfg.B} does not split over {len(devices)} devices")
        mesh = Mesh(np.array(devices), ("batch",))
        specs = (P(), P(None, "batch"), P("batch"))

        def dp_loss(p, x, lengths):
            return average(loss_fn(p, x, lengths))

        def wrap(f, out_specs):
            sm = jax.shard_map(f, mesh=mesh, in_specs=specs, out_specs=out_specs)
            return jax.jit(sm)

        params = jax.device_put(params, NamedSharding(mesh, specs[0]))
        x = jax.device_put(x, NamedSharding(mesh, specs[1]))
        lengths = jax.device_put(lengths, NamedSharding(mesh, specs[2]))
        train_j = wrap(train_step, (P(), P()))
        fwd_j = wrap(dp_loss, P())
        infer_j = wrap(infer_fn, P(None, "batch"))
    else:
        train_j = jax.jit(train_step)
        fwd_j = jax.jit(loss_fn)
        infer_j = jax.jit(infer_fn)

    info = {
        "compile": _compile_info(train_j, (params, x, lengths)),
        "compile_fwd": _compile_info(fwd_j, (params, x, lengths)),
    }
    # Compile count when only the lengths change: must stay 1.
    for seed in range(3):
        _, other = _data(cfg, seed=seed + 1)
        other = jnp.asarray(other, jnp.int32)
        if data_parallel:
            other = jax.device_put(other, lengths.sharding)
        jax.block_until_ready(train_j(params, x, other))
    info["compile_count_lengths_change"] = len(traces)
    info["memory_bytes"] = {
        "train": info["compile"]["temp_plus_output_bytes"],
        "kind": "XLA temp + output",
    }

    def train():
        loss, _ = train_j(params, x, lengths)
        return float(loss)

    def fwd():
        return float(fwd_j(params, x, lengths))

    def infer():
        out = infer_j(params, x, lengths)
        return float(jax.block_until_ready(out)[0, 0, 0])

    def loss_no_lengths():
        return float(jax.jit(lambda p, x: loss_fn(p, x, None))(params, x))

    info["devices"] = len(jax.devices()) if data_parallel else 1

    return {"train": train, "fwd": fwd, "infer": infer}, info, loss_no_lengths


def build_linen(kind: str, cfg: Config, x_np, lengths_np):
    import jax
    from flax import linen as nn

    cell_cls = {"rnn": nn.SimpleCell, "lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell}[kind]

    class Stack(nn.Module):
        @nn.compact
        def __call__(self, x, seq_lengths):
            for _ in range(cfg.layers):
                fwd = nn.RNN(cell_cls(cfg.H))
                if cfg.bidirectional:
                    x = nn.Bidirectional(fwd, nn.RNN(cell_cls(cfg.H)))(x, seq_lengths=seq_lengths)
                else:
                    x = fwd(x, seq_lengths=seq_lengths)
            return x

    model = Stack()
    x, lengths, mask = peers.batch_major(cfg, x_np, lengths_np)  # linen's native (B, T, I)
    params = model.init(jax.random.key(0), x, lengths)

    def loss_fn(p, x, lengths):
        return peers.masked_loss(model.apply(p, x, lengths), mask)  # linen leaves padding

    return peers.programs(loss_fn, model.apply, params, x, lengths, _compile_info)


# --------------------------------------------------------------------------- timing


def matmul_peak(n: int = 1024, repeats: int = 10) -> dict[str, float]:
    """Best achieved GFLOP/s of an (n, n) x (n, n) float32 matmul, torch and jax."""
    import jax
    import jax.numpy as jnp
    import torch

    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    ta = torch.from_numpy(a)
    ja = jnp.asarray(a)
    mm = jax.jit(lambda u: u @ u)
    jax.block_until_ready(mm(ja))
    torch.mm(ta, ta)
    best = {"torch": math.inf, "jax": math.inf}
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(ta, ta)
        best["torch"] = min(best["torch"], time.perf_counter() - t0)
        t0 = time.perf_counter()
        jax.block_until_ready(mm(ja))
        best["jax"] = min(best["jax"], time.perf_counter() - t0)
    gf = {k: 2.0 * n**3 / v / 1e9 for k, v in best.items()}
    gf["peak"] = max(gf.values())
    return gf


def shaped_matmul_rate(kind: str, cfg: Config, repeats: int = 10) -> float:
    """GFLOP/s of the forward pass's matmuls alone, in their shapes: per layer and
    direction one (T*B, I_l) x (I_l, G*H) projection and T dependent (B, H) x (H, G*H)
    products in a ``lax.scan`` (a tanh of a slice keeps them dependent). The roofline that
    jaxseq's achieved rate is set against; best of ``repeats``."""
    import jax
    import jax.numpy as jnp

    G, D = GATES[kind], 2 if cfg.bidirectional else 1
    rng = np.random.default_rng(0)
    args = []
    for layer in range(cfg.layers):
        in_size = cfg.I if layer == 0 else D * cfg.H
        for _ in range(D):
            args.append(
                (
                    jnp.asarray(rng.standard_normal((cfg.T, cfg.B, in_size)), jnp.float32),
                    jnp.asarray(rng.standard_normal((in_size, G * cfg.H)), jnp.float32) * 0.01,
                    jnp.asarray(rng.standard_normal((cfg.H, G * cfg.H)), jnp.float32) * 0.01,
                )
            )

    @jax.jit
    def matmuls(args):
        total = 0.0
        for x, w_ih, w_hh in args:
            gx = x @ w_ih

            def step(h, g, w_hh=w_hh):
                z = h @ w_hh + g
                return jnp.tanh(z[:, : cfg.H]), None

            h, _ = jax.lax.scan(step, jnp.zeros((cfg.B, cfg.H), jnp.float32), gx)
            total = total + h[0, 0]
        return total

    jax.block_until_ready(matmuls(args))
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(matmuls(args))
        best = min(best, time.perf_counter() - t0)
    return flops(kind, cfg)["fwd"] / best / 1e9


def _stats(ts: list[float]) -> dict[str, float]:
    q = np.percentile(np.asarray(ts), [25, 50, 75])
    return {
        "median_ms": float(q[1] * 1e3),
        "iqr_ms": float((q[2] - q[0]) * 1e3),
        "min_ms": float(min(ts) * 1e3),
        "n": len(ts),
    }


def time_interleaved(
    fns: dict[str, Callable[[], float]],
    repeats: int,
    warmup: int = 2,
    budget_s: float | None = None,
) -> dict[str, dict[str, float]]:
    """Round-robin over frameworks: each repeat times every framework once."""
    for _ in range(warmup):
        for f in fns.values():
            f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    start = time.perf_counter()
    for r in range(repeats):
        order = list(fns) if r % 2 == 0 else list(fns)[::-1]
        for k in order:
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
        if budget_s is not None and r >= 2 and time.perf_counter() - start > budget_s:
            break
    return {k: _stats(v) for k, v in times.items()}


# --------------------------------------------------------------------------- driver


def bench_one(
    kind: str,
    cfg_name: str,
    frameworks: list[str],
    repeats: int,
    peak: float,
    budget_s: float | None,
) -> dict[str, Any]:
    cfg = CONFIGS[cfg_name]
    x, lengths = _data(cfg)
    tmod = _torch_module(kind, cfg)
    fns: dict[str, dict[str, Callable[[], float]]] = {}
    infos: dict[str, Any] = {}
    check: dict[str, float] = {}
    skipped: dict[str, str] = {}
    import jax

    # A batch that does not split evenly over the devices (B=1) has no data-parallel run.
    frameworks = [
        fw for fw in frameworks if fw not in _DATA_PARALLEL or cfg.B % len(jax.devices()) == 0
    ]
    for fw in frameworks:
        if fw in _JAXSEQ_IMPLS:
            f, info, loss_nl = build_jaxseq(
                kind, cfg, x, lengths, _JAXSEQ_IMPLS[fw], tmod, data_parallel=fw in _DATA_PARALLEL
            )
            if fw == "jaxseq":
                check["jaxseq_loss_no_lengths"] = loss_nl()
            if fw in ("jaxseq", "jaxseq_dp"):
                check[f"{fw}_loss"] = f["fwd"]()
        elif fw in ("torch_padded", "torch_packed"):
            f, info, module = build_torch(kind, cfg, x, lengths, packed=fw == "torch_packed")
            if fw == "torch_padded":
                check["torch_padded_loss"] = f["fwd"]()
        elif fw == "flax_linen":
            f, info = build_linen(kind, cfg, x, lengths)
        elif fw in peers.BUILDERS:
            try:
                f, info = peers.BUILDERS[fw](kind, cfg, x, lengths, _compile_info)
            except peers.Unsupported as e:  # e.g. no Elman cell in equinox
                skipped[fw] = str(e)
                continue
        else:
            raise ValueError(f"unknown framework {fw!r}; expected one of {FRAMEWORKS}")
        fns[fw] = f
        infos[fw] = info
    frameworks = [fw for fw in frameworks if fw in fns]
    rate = shaped_matmul_rate(kind, cfg)
    results: dict[str, Any] = {
        "kind": kind,
        "config": cfg_name,
        "shape": dataclasses.asdict(cfg),
        "label": cfg.label(),
        "flops": flops(kind, cfg),
        "info": infos,
        "loss_check": check,
        "skipped": skipped,
        "shaped_matmul_gflops": rate,
        "modes": {},
    }
    for mode in MODES:
        stats = time_interleaved(
            {fw: fns[fw][mode] for fw in frameworks}, repeats, budget_s=budget_s
        )
        for s in stats.values():
            s["gflops"] = results["flops"][mode] / (s["median_ms"] / 1e3) / 1e9
            s["frac_of_peak"] = s["gflops"] / peak
            s["frac_of_shaped_matmuls"] = s["gflops"] / rate
        for ours in ("jaxseq", "jaxseq_dp"):
            if ours not in stats:
                continue
            for base in BASELINES:
                if base in stats and base != ours:
                    stats[ours][f"ratio_vs_{base}"] = (
                        stats[ours]["median_ms"] / stats[base]["median_ms"]
                    )
            timed_peers = [p for p in JAX_PEERS if p in stats]
            if timed_peers:
                best = min(timed_peers, key=lambda p: stats[p]["median_ms"])
                stats[ours]["best_jax_peer"] = best
                stats[ours]["ratio_vs_best_jax_peer"] = stats[ours][f"ratio_vs_{best}"]
        results["modes"][mode] = stats
    return results


def to_markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# jaxseq benchmarks",
        "",
        f"{m['platform']}, {m['cpu_count']} CPUs, torch threads {m['torch_threads']}, "
        f"JAX devices {m.get('devices', m.get('jax_devices', 1))} in "
        f"{m.get('processes', 1)} process(es) (jaxseq_dp splits the batch over them), "
        f"float32, lengths uniform in [T/2, T]. Matmul peak (1024x1024 f32): "
        f"{report['matmul_peak']['peak']:.1f} GFLOP/s (torch {report['matmul_peak']['torch']:.1f}, "
        f"jax {report['matmul_peak']['jax']:.1f}). Host allocator: "
        + (
            "freed memory retained for reuse (`jaxseq.retain_host_memory()`, process-wide)."
            if m.get("host_memory") == "retain"
            else "glibc's default settings."
        ),
        f"Command: `{report['command']}`",
        "",
        "Times are medians (IQR) in ms over interleaved repeats. Ratio = jaxseq / baseline "
        "(< 1 means jaxseq is faster). torch_padded ignores lengths; torch_packed and "
        "flax_linen honour them.",
        "",
    ]
    for r in report["results"]:
        lines += [f"## {r['kind'].upper()} {r['label']}", ""]
        fws = list(r["modes"]["train"])
        lines.append(
            "| mode | "
            + " | ".join(fws)
            + " | jaxseq GFLOP/s (% 1024² peak, % same-shaped matmuls) |"
        )
        lines.append("|---" * (len(fws) + 2) + "|")
        for mode, stats in r["modes"].items():
            cells = [f"{stats[f]['median_ms']:.2f} ({stats[f]['iqr_ms']:.2f})" for f in fws]
            js = stats.get("jaxseq")
            gf = (
                f"{js['gflops']:.1f} ({100 * js['frac_of_peak']:.0f}%, "
                f"{100 * js.get('frac_of_shaped_matmuls', float('nan')):.0f}%)"
                if js
                else "-"
            )
            lines.append(f"| {mode} | " + " | ".join(cells) + f" | {gf} |")
        lines.append("")
        if r.get("shaped_matmul_gflops"):
            lines.append(
                f"Same-shaped matmuls alone (forward): {r['shaped_matmul_gflops']:.1f} GFLOP/s."
            )
        for fw, why in r.get("skipped", {}).items():
            lines.append(f"Not timed: {fw} ({why}).")
        js = r["modes"]["train"].get("jaxseq")
        if js:
            for ours, title in (
                ("jaxseq", "Training-step ratio jaxseq"),
                ("jaxseq_dp", "jaxseq_dp ({devices} devices)"),
            ):
                st = r["modes"]["train"].get(ours)
                if not st:
                    continue
                ratios = ", ".join(
                    f"{b}: {st[f'ratio_vs_{b}']:.2f}x" for b in BASELINES if f"ratio_vs_{b}" in st
                )
                devices = r["info"][ours]["devices"]
                lines.append(f"{title.format(devices=devices)} / baseline: {ratios}.")
                for mode in MODES:
                    sm = r["modes"][mode].get(ours, {})
                    if "best_jax_peer" in sm:
                        lines.append(
                            f"{ours} {mode} / best JAX peer ({sm['best_jax_peer']}): "
                            f"{sm['ratio_vs_best_jax_peer']:.2f}x."
                        )
            info = r["info"]["jaxseq"]
            lines.append(
                f"jaxseq compile: train step {info['compile']['compile_s']:.2f} s, "
                f"forward {info['compile_fwd']['compile_s']:.2f} s; compiles when only "
                f"lengths change: {info['compile_count_lengths_change']}."
            )
        mem = ", ".join(
            f"{fw} {v['memory_bytes']['train'] / 2**20:.2f} MiB"
            for fw, v in r["info"].items()
            if v.get("memory_bytes", {}).get("train") is not None
        )
        lines += [
            f"Training-step memory (JAX: XLA temp + output; torch: autograd saved tensors): {mem}.",
            "",
        ]
    if report.get("streaming"):
        lines += [
            "## Streaming: one step at a time at B=1",
            "",
            "Median microseconds per step (the state fed back each step; torch under "
            "`inference_mode`). jaxseq_module: the cell module split once with `nnx.split`, "
            "the step `jax.jit` of merge-and-call; jaxseq_nnx_jit: the module through `nnx.jit`.",
            "",
            "| cell | I | H | jaxseq_module | jaxseq_nnx_jit | torch | module / torch |",
            "|---|---|---|---|---|---|---|",
        ]
        for st in report["streaming"]:
            m = st["median_us"]
            lines.append(
                f"| {st['kind']} | {st['I']} | {st['H']} | {m['jaxseq_module']:.1f} | "
                f"{m['jaxseq_nnx_jit']:.1f} | {m['torch']:.1f} | "
                f"{st['ratio_vs_torch']['jaxseq_module']:.2f}x |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


def _write(out: Path, report: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=1))
    (out / "results.md").write_text(to_markdown(report))


def add_host_memory_arg(ap: argparse.ArgumentParser) -> None:
    """The ``--host-memory system|retain`` option, shared with ``compare_revisions``."""
    ap.add_argument(
        "--host-memory",
        choices=("system", "retain"),
        default="system",
        help="system: glibc's default allocator settings; retain: jaxseq.retain_host_memory() "
        "first, so that freed memory is kept for reuse (process-wide: every framework timed "
        "runs under it)",
    )


def apply_host_memory(setting: str) -> None:
    """Call :func:`jaxseq.retain_host_memory` for ``"retain"`` (imports jaxseq, so JAX)."""
    if setting == "retain":
        from jaxseq.host_memory import retain_host_memory

        if not retain_host_memory():
            raise SystemExit("--host-memory retain needs Linux with glibc")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="target config, few repeats")
    g.add_argument("--full", action="store_true", help="every config for every kind")
    ap.add_argument("--kinds", nargs="+", choices=list(GATES), default=None)
    ap.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=None)
    ap.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="stop a (mode, config) after this many seconds of timing",
    )
    ap.add_argument(
        "--devices",
        "--host-devices",  # the old name, kept as an alias
        dest="devices",
        type=int,
        default=None,
        help="split the CPU into this many XLA host devices for jaxseq_dp (default: 2 when "
        "jaxseq_dp is timed, else 1); set before JAX starts, so it must be the first use of "
        "JAX in the process (--host-devices is an alias)",
    )
    ap.add_argument("--no-streaming", action="store_true", help="skip the B=1 streaming latency")
    add_host_memory_arg(ap)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    frameworks = args.frameworks or DEFAULT_FRAMEWORKS
    if args.devices is None:
        args.devices = 2 if "jaxseq_dp" in frameworks else 1
    if args.devices > 1:
        if "jax" in sys.modules:
            raise RuntimeError("--devices must be set before JAX is imported")
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (
            f"{flags} --xla_force_host_platform_device_count={args.devices}"
        ).strip()
    apply_host_memory(args.host_memory)  # after XLA_FLAGS: importing jaxseq starts JAX

    import torch

    torch.set_num_threads(THREADS)
    repeats = args.repeats or (5 if args.quick else 15 if args.full else 11)
    budget = args.budget_s if args.budget_s is not None else (None if args.full else 20.0)
    if args.configs or args.kinds:
        kinds = args.kinds or ["lstm", "gru", "rnn"]
        configs = args.configs or ["target"]
        plan = [(c, k) for c in configs for k in kinds]
    elif args.full:
        plan = [(c, k) for c in FULL_CONFIGS for k in ("lstm", "gru", "rnn")]
    elif args.quick:
        plan = [("target", k) for k in ("lstm", "gru", "rnn")]
    else:
        plan = DEFAULT_PLAN

    import jax

    peak = matmul_peak()
    report: dict[str, Any] = {
        "command": "python -m benchmarks.run "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "jax_devices": len(jax.devices()),
            "devices": len(jax.devices()),
            "processes": jax.process_count(),
            "jax": jax.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "host_memory": args.host_memory,
        },
        "matmul_peak": peak,
        "results": [],
    }
    for cfg_name, kind in plan:
        t0 = time.perf_counter()
        r = bench_one(kind, cfg_name, frameworks, repeats, peak["peak"], budget)
        r["wall_s"] = time.perf_counter() - t0
        report["results"].append(r)
        _write(args.out, report)
        js = r["modes"]["train"].get("jaxseq", {})
        print(
            f"{kind:4s} {cfg_name:14s} train: "
            + ", ".join(f"{fw} {s['median_ms']:.1f} ms" for fw, s in r["modes"]["train"].items())
            + (
                " | ratios "
                + ", ".join(
                    f"{b} {js[f'ratio_vs_{b}']:.2f}" for b in BASELINES if f"ratio_vs_{b}" in js
                )
                if js
                else ""
            ),
            flush=True,
        )
    if not args.no_streaming:
        target = CONFIGS["target"]
        report["streaming"] = []
        for kind in dict.fromkeys(k for _, k in plan):
            reps = args.repeats or (5 if args.quick else 15)
            st = peers.streaming(kind, target.I, target.H, repeats=reps)
            report["streaming"].append(st)
            print(
                f"{kind:4s} streaming B=1: "
                + ", ".join(f"{k} {v:.1f} us" for k, v in st["median_us"].items()),
                flush=True,
            )
    _write(args.out, report)  # also when the plan is empty
    print(f"wrote {args.out / 'results.md'} and {args.out / 'results.json'}")
    return report


if __name__ == "__main__":
    main()
