"""Acting: one step of a GRU / LSTM, jaxseq's :func:`jaxseq.step` and its linen module
against Flax linen's cell.

Two measurements per config (batch N, hidden H, input I, float32, one layer):

* ``call``: one jitted step, called and waited for (an agent acting: the next input
  depends on this output), median over ``--inner`` calls per round;
* ``loop``: per step inside a jitted ``lax.scan`` rollout of ``--steps`` steps (one call
  of the rollout, divided by the number of steps).

jaxseq: ``jaxseq.prepare_step(kind, params)`` once, then ``jaxseq.step(w, x_t, state)``;
module: ``jaxseq.linen.GRU(H)`` / ``LSTM(H)`` applied to a one-step sequence with
``resets=`` (what a linen policy does: its variables in torch's layout, every call);
Flax: ``flax.linen.GRUCell(H)`` / ``LSTMCell(H)`` applied to ``(carry, x_t)``. Rounds are
interleaved (every model and config once per round, the order alternating) and the
medians are reported with the ratios jaxseq / Flax and module / Flax (below 1: faster
than Flax).

    python -m benchmarks.acting [--N 8 16 64] [--H 128 256] [--I 64] [--kinds gru lstm]
                                [--repeats 15] [--inner 200] [--steps 128] [--out DIR]

Numbers mean something only on an otherwise idle machine.
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

LIBS = ("jaxseq", "module", "flax")


def _models(kind: str, N: int, H: int, I: int, steps: int) -> dict[str, dict[str, Callable]]:
    """``{"jaxseq" | "module" | "flax": {"call": f, "loop": g}}``: zero-argument callables
    that run and wait for one jitted step / one jitted rollout of ``steps`` steps."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    import jaxseq

    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(k2, (N, I), jnp.float32)
    xs = jax.random.normal(k3, (steps, N, I), jnp.float32)

    w = jaxseq.prepare_step(kind, jaxseq.init_params(k1, kind, I, H))
    zeros = jnp.zeros((1, N, H), jnp.float32)
    state = (zeros, zeros) if kind == "lstm" else zeros

    def j_rollout(w, s, xs):
        def body(s, xt):
            y, s = jaxseq.step(w, xt, s)
            return s, y

        return jax.lax.scan(body, s, xs)

    j_step, j_roll = jax.jit(jaxseq.step), jax.jit(j_rollout)

    cell = nn.GRUCell(features=H) if kind == "gru" else nn.LSTMCell(features=H)
    carry = cell.initialize_carry(k1, (N, I))
    params = cell.init(k1, carry, x)

    def f_rollout(p, c, xs):
        return jax.lax.scan(lambda c, xt: cell.apply(p, c, xt), c, xs)

    f_step, f_roll = jax.jit(cell.apply), jax.jit(f_rollout)

    module = jaxseq.linen.GRU(H) if kind == "gru" else jaxseq.linen.LSTM(H)
    no_reset = jnp.zeros((1, N), bool)
    variables = module.init(k1, x[None], state, resets=no_reset)

    def m_step(v, s, x_t):
        y, s = module.apply(v, x_t[None], s, resets=no_reset)
        return y[0], s

    def m_rollout(v, s, xs):
        return jax.lax.scan(lambda s, xt: m_step(v, s, xt)[::-1], s, xs)

    m_call, m_roll = jax.jit(m_step), jax.jit(m_rollout)
    return {
        "jaxseq": {
            "call": lambda: jax.block_until_ready(j_step(w, x, state)),
            "loop": lambda: jax.block_until_ready(j_roll(w, state, xs)),
        },
        "module": {
            "call": lambda: jax.block_until_ready(m_call(variables, state, x)),
            "loop": lambda: jax.block_until_ready(m_roll(variables, state, xs)),
        },
        "flax": {
            "call": lambda: jax.block_until_ready(f_step(params, carry, x)),
            "loop": lambda: jax.block_until_ready(f_roll(params, carry, xs)),
        },
    }


def time_call(fn: Callable[[], Any], inner: int) -> float:
    """Median seconds of one call over ``inner`` calls."""
    times = []
    for _ in range(inner):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import jax

    configs = [(k, n, h) for k in args.kinds for n in args.N for h in args.H]
    models = {c: _models(c[0], c[1], c[2], args.I, args.steps) for c in configs}
    for m in models.values():  # compile and warm up
        for fns in m.values():
            for fn in fns.values():
                fn()
                fn()
    samples: dict[tuple, dict[str, dict[str, list[float]]]] = {
        c: {lib: {"call": [], "loop": []} for lib in LIBS} for c in configs
    }
    for r in range(args.repeats):
        for c in configs:
            for lib in LIBS if r % 2 == 0 else LIBS[::-1]:
                fns = models[c][lib]
                samples[c][lib]["call"].append(time_call(fns["call"], args.inner))
                t0 = time.perf_counter()
                fns["loop"]()
                samples[c][lib]["loop"].append((time.perf_counter() - t0) / args.steps)
    results = []
    for c in configs:
        row: dict[str, Any] = {"kind": c[0], "N": c[1], "H": c[2], "I": args.I}
        for what in ("call", "loop"):
            med = {lib: statistics.median(samples[c][lib][what]) for lib in LIBS}
            row[what] = {
                "median_us": {lib: 1e6 * v for lib, v in med.items()},
                "ratio": med["jaxseq"] / med["flax"],
                "ratio_module": med["module"] / med["flax"],
                "n": len(samples[c]["jaxseq"][what]),
            }
        results.append(row)
    return {
        "machine": {
            "platform": platform.platform(),
            "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()],
            "jax": jax.__version__,
        },
        "args": {k: v for k, v in vars(args).items() if k != "out"},
        "results": results,
    }


def table(report: dict[str, Any]) -> str:
    a = report["args"]
    lines = [
        "# Acting: jaxseq.step and jaxseq.linen vs Flax linen cells",
        "",
        f"float32, one layer, I={a['I']}; call: median of {a['inner']} calls per round; "
        f"loop: per step of a {a['steps']}-step jitted lax.scan; {a['repeats']} interleaved "
        "rounds, medians, µs; ratios to Flax (step: jaxseq.step on prepared weights; "
        "module: the jaxseq.linen module on a one-step sequence).",
        "",
        "| kind | N | H | call Flax | call step | ratio | call module | ratio "
        "| loop Flax | loop step | ratio | loop module | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        cells = [r["kind"], r["N"], r["H"]]
        for what, fmt in (("call", ".1f"), ("loop", ".2f")):
            s = r[what]
            us = s["median_us"]
            cells += [f"{us['flax']:{fmt}}", f"{us['jaxseq']:{fmt}}", f"{s['ratio']:.2f}"]
            cells += [f"{us['module']:{fmt}}", f"{s['ratio_module']:.2f}"]
        lines.append("| " + " | ".join(str(v) for v in cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--N", type=int, nargs="+", default=[8, 16, 64])
    p.add_argument("--H", type=int, nargs="+", default=[128, 256])
    p.add_argument("--I", type=int, default=64)
    p.add_argument("--kinds", nargs="+", choices=["gru", "lstm"], default=["gru", "lstm"])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--inner", type=int, default=200)
    p.add_argument("--steps", type=int, default=128)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    report = run(args)
    text = table(report)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "acting.json").write_text(json.dumps(report, indent=1))
        (args.out / "acting.md").write_text(text)


if __name__ == "__main__":
    main()
