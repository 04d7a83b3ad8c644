"""The mixed-precision policy: drift against float64, and the training step's cost.

1. **Drift.** A 1-layer LSTM (I=16, H=64, N=8) with a forget-gate bias of +3, so that
   the cell state remembers for long, runs T steps from bfloat16 weights and inputs in
   three ways: float64 throughout (the reference, on the same bfloat16-valued numbers),
   a pure bfloat16 carry (``carry_dtype=jnp.bfloat16``: everything in bfloat16) and the
   policy (bfloat16 matmuls accumulated in float32, float32 gates and carry). Reported:
   max |h_n - h_n(float64)| and max |c_n - c_n(float64)| for each T.
2. **Cost.** One jitted training step (masked mean-squared loss, gradients) of
   ``jaxseq.lstm`` / ``gru`` at B=64, T=100, I=32, H=128 in float32 and in bfloat16 with
   the policy: median time of interleaved repeats, and XLA's temporary + output bytes of
   the compiled step (``memory_analysis``).

    python -m benchmarks.mixed_precision [--T 100 1000 10000] [--repeats 21] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxseq


def drift(Ts: list[int]) -> list[dict]:
    jax.config.update("jax_enable_x64", True)
    I, H, N = 16, 64, 8
    p = jaxseq.init_lstm(jax.random.key(0), I, H)
    p = dict(p, bias_hh_l0=p["bias_hh_l0"].at[H : 2 * H].add(3.0))
    p16 = {k: v.astype(jnp.bfloat16) for k, v in p.items()}
    p64 = {k: v.astype(jnp.float64) for k, v in p16.items()}
    run = {
        "float64": jax.jit(lambda p, x: jaxseq.lstm(p, x)[1]),
        "bf16 carry": jax.jit(lambda p, x: jaxseq.lstm(p, x, carry_dtype=jnp.bfloat16)[1]),
        "policy": jax.jit(lambda p, x: jaxseq.lstm(p, x)[1]),
    }
    rows = []
    for T in Ts:
        x = jax.random.normal(jax.random.key(1), (T, N, I)).astype(jnp.bfloat16)
        h64, c64 = run["float64"](p64, x.astype(jnp.float64))
        row = {"T": T}
        for name in ("bf16 carry", "policy"):
            h, c = run[name](p16, x)
            row[name] = {
                "h": float(jnp.abs(h.astype(jnp.float64) - h64).max()),
                "c": float(jnp.abs(c.astype(jnp.float64) - c64).max()),
            }
        row["|c| max"] = float(jnp.abs(c64).max())
        rows.append(row)
        print(row, flush=True)
    jax.config.update("jax_enable_x64", False)
    return rows


def cost(repeats: int) -> list[dict]:
    B, T, I, H = 64, 100, 32, 128
    rows = []
    for kind in ("lstm", "gru"):
        steps = {}
        for dt in (jnp.float32, jnp.bfloat16):
            p = jaxseq.init_params(jax.random.key(0), kind, I, H, dtype=dt)
            x = jax.random.normal(jax.random.key(1), (T, B, I)).astype(dt)
            lengths = jax.random.randint(jax.random.key(2), (B,), T // 2, T + 1)

            def loss(p, x, lengths=lengths, kind=kind):
                out = jaxseq.run_stack(kind, p, x, lengths=lengths)[0]
                return jnp.mean(out.astype(jnp.float32) ** 2)

            f = jax.jit(jax.value_and_grad(loss))
            ma = f.lower(p, x).compile().memory_analysis()
            jax.block_until_ready(f(p, x))
            steps[jnp.dtype(dt).name] = (
                f,
                p,
                x,
                (ma.temp_size_in_bytes + ma.output_size_in_bytes) / 2**20,
            )
        times = {k: [] for k in steps}
        for _ in range(repeats):
            for k, (f, p, x, _) in steps.items():
                t0 = time.perf_counter()
                jax.block_until_ready(f(p, x))
                times[k].append(time.perf_counter() - t0)
        row = {"kind": kind}
        for k, (_, _, _, mib) in steps.items():
            row[k] = {"ms": 1e3 * float(np.median(times[k])), "xla_MiB": mib}
        row["bf16/f32 time"] = float(
            np.median(np.array(times["bfloat16"]) / np.array(times["float32"]))
        )
        rows.append(row)
        print(row, flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--out", default="runs/mixed_precision")
    args = ap.parse_args()
    result = {"drift": drift(args.T), "cost": cost(args.repeats)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    print("wrote", out / "results.json")


if __name__ == "__main__":
    main()
