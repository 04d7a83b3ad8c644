"""Training step of minGRU / minLSTM (each mode) against GRU / LSTM, as T grows.

One jitted step (loss and gradients of every parameter) of a 1-layer, unidirectional
recurrent layer, B=16 sequences, I=32, H=128, float32, loss = mean(out**2), for

* ``min_gru/<mode>``, ``min_lstm/<mode>`` with mode in sequential, scan, parallel, chunked
  (:func:`jaxseq.min_gru`; see :mod:`jaxseq.linear_scan`);
* ``gru/fused``, ``lstm/fused``: :func:`jaxseq.gru` / :func:`jaxseq.lstm`, ``impl="fused"``;
* ``torch_gru``, ``torch_lstm``: ``torch.nn.GRU`` / ``torch.nn.LSTM`` (forward + backward).

Rounds are interleaved (every model once per round) and the median is reported, with
XLA's temporary buffer size of the compiled step (``memory_analysis``) as a cheap
peak-memory figure for the JAX models. A model whose first step takes longer than
``--budget`` seconds is timed once and skipped at longer T.

    python -m benchmarks.min_scan [--quick] [--T 256 4096 ...] [--models ...]
                                  [--repeats 5] [--budget 20] [--out DIR]

``--quick`` runs T in (64, 256) with 2 repeats: a check that everything runs, not a
measurement. Numbers mean something only on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

B, I, H = 16, 32, 128
MODES = ("sequential", "scan", "parallel", "chunked")
MIN_MODELS = tuple(f"{k}/{m}" for k in ("min_gru", "min_lstm") for m in MODES)
ALL_MODELS = MIN_MODELS + ("gru/fused", "lstm/fused", "torch_gru", "torch_lstm")
FULL_T = (256, 1024, 4096, 16384, 65536)
QUICK_T = (64, 256)


def _jax_step(model: str, T: int) -> tuple[Callable[[], Any], float | None]:
    """A zero-argument callable running one jitted training step, and XLA's temp MiB."""
    import jax
    import jax.numpy as jnp

    import jaxseq

    kind, mode = model.split("/")
    k1, k2 = jax.random.split(jax.random.key(0))
    init = {
        "min_gru": jaxseq.init_min_gru,
        "min_lstm": jaxseq.init_min_lstm,
        "gru": jaxseq.init_gru,
        "lstm": jaxseq.init_lstm,
    }[kind]
    params = init(k1, I, H)
    x = jax.random.normal(k2, (T, B, I), jnp.float32)

    def loss(p, x):
        if kind in ("min_gru", "min_lstm"):
            out = jaxseq.run_stack(
                kind, p, x, impl={"sequential": "unfused"}.get(mode, "fused_" + mode)
            )[0]
        else:
            out = jaxseq.run_stack(kind, p, x, impl=mode)[0]
        return jnp.mean(out**2)

    step = jax.jit(jax.value_and_grad(loss))
    compiled = step.lower(params, x).compile()
    try:
        temp = compiled.memory_analysis().temp_size_in_bytes / 2**20
    except Exception:  # not every backend reports it
        temp = None
    return lambda: jax.block_until_ready(compiled(params, x)), temp


def _torch_step(model: str, T: int) -> Callable[[], Any]:
    import torch

    torch.manual_seed(0)
    cls = {"torch_gru": torch.nn.GRU, "torch_lstm": torch.nn.LSTM}[model]
    m = cls(I, H)
    x = torch.randn(T, B, I)

    def run() -> None:
        m.zero_grad(set_to_none=True)
        out, _ = m(x)
        out.pow(2).mean().backward()

    return run


def measure(models: list[str], Ts: list[int], repeats: int, budget: float) -> list[dict]:
    results: list[dict] = []
    skipped: set[str] = set()
    for T in Ts:
        steps: dict[str, Callable[[], Any]] = {}
        row: dict[str, dict] = {}
        for model in models:
            if model in skipped:
                continue
            t0 = time.perf_counter()
            if model.startswith("torch"):
                fn, temp = _torch_step(model, T), None
            else:
                fn, temp = _jax_step(model, T)
            compile_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            fn()  # warm-up
            first = time.perf_counter() - t0
            row[model] = {"compile_s": compile_s, "times_s": [first], "xla_temp_mib": temp}
            if first > budget:
                skipped.add(model)  # timed once here, not at longer T
                row[model]["single_shot"] = True
            else:
                steps[model] = fn
                row[model]["times_s"] = []
        for _ in range(repeats):  # interleaved rounds
            for model, fn in steps.items():
                t0 = time.perf_counter()
                fn()
                row[model]["times_s"].append(time.perf_counter() - t0)
        for stats in row.values():
            stats["median_ms"] = 1e3 * statistics.median(stats["times_s"])
        results.append({"T": T, "B": B, "I": I, "H": H, "models": row})
        print(
            f"T={T}: " + ", ".join(f"{m} {s['median_ms']:.1f} ms" for m, s in row.items()),
            flush=True,
        )
    return results


def speedups(r: dict) -> dict[str, float]:
    """Fastest min mode over the fused GRU / LSTM at one T (where both were measured)."""
    out = {}
    for kind, base in (("min_gru", "gru/fused"), ("min_lstm", "lstm/fused")):
        mins = [s["median_ms"] for m, s in r["models"].items() if m.startswith(kind + "/")]
        if mins and base in r["models"]:
            out[f"{kind} vs {base}"] = r["models"][base]["median_ms"] / min(mins)
    return out


def table(results: list[dict], models: list[str]) -> str:
    head = (
        "| T | "
        + " | ".join(models)
        + " | fastest min_gru vs gru/fused | fastest min_lstm vs lstm/fused |"
    )
    lines = [head, "|" + "---|" * (len(models) + 3)]
    for r in results:
        cells = []
        for m in models:
            s = r["models"].get(m)
            once = s is not None and s.get("single_shot", False)
            cells.append("—" if s is None else f"{s['median_ms']:.1f}" + ("*" if once else ""))
        sp = speedups(r)
        cells.append(f"{sp['min_gru vs gru/fused']:.1f}x" if "min_gru vs gru/fused" in sp else "—")
        cells.append(
            f"{sp['min_lstm vs lstm/fused']:.1f}x" if "min_lstm vs lstm/fused" in sp else "—"
        )
        lines.append(f"| {r['T']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def memory_table(results: list[dict], models: list[str]) -> str:
    """XLA's temporary buffers of each compiled JAX step (MiB): a cheap peak-memory proxy."""
    jax_models = [m for m in models if not m.startswith("torch")]
    lines = ["| T | " + " | ".join(jax_models) + " |", "|" + "---|" * (len(jax_models) + 1)]
    for r in results:
        cells = []
        for m in jax_models:
            s = r["models"].get(m)
            temp = None if s is None else s.get("xla_temp_mib")
            cells.append("—" if temp is None else f"{temp:.0f}")
        lines.append(f"| {r['T']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="T in (64, 256), 2 repeats: a smoke run")
    ap.add_argument("--T", type=int, nargs="+", default=None)
    ap.add_argument("--models", nargs="+", default=list(ALL_MODELS), choices=ALL_MODELS)
    ap.add_argument("--repeats", type=int, default=None, help="timed rounds (default 5, quick 2)")
    ap.add_argument("--budget", type=float, default=20.0, help="seconds; slower models stop")
    ap.add_argument("--out", type=Path, default=None, help="write min_scan.json and .md here")
    args = ap.parse_args(argv)
    Ts = list(args.T or (QUICK_T if args.quick else FULL_T))
    repeats = args.repeats or (2 if args.quick else 5)
    models = list(args.models)
    try:
        import torch  # noqa: F401
    except ImportError:
        models = [m for m in models if not m.startswith("torch")]

    import jax

    results = measure(models, Ts, repeats, args.budget)
    md = (
        f"# minGRU / minLSTM training step (median ms; B={B}, I={I}, H={H}, float32)\n\n"
        f"{table(results, models)}\n\n"
        f"\\* one step only (slower than --budget; skipped at longer T).\n\n"
        f"XLA temporary buffers of the compiled step, MiB:\n\n{memory_table(results, models)}\n\n"
        f"jax {jax.__version__} on {jax.default_backend()}, {platform.processor() or platform.machine()}; "
        f"{repeats} interleaved rounds{' (--quick: not a measurement)' if args.quick else ''}.\n"
    )
    print(md)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        report = {
            "quick": args.quick,
            "repeats": repeats,
            "jax": jax.__version__,
            "results": results,
        }
        for r in results:
            r["speedups"] = speedups(r)
        (args.out / "min_scan.json").write_text(json.dumps(report, indent=1))
        (args.out / "min_scan.md").write_text(md)


if __name__ == "__main__":
    main()
