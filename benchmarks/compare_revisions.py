"""Time jaxseq at another git revision against the working tree: one process, interleaved.

Timings of separate benchmark runs on a shared machine move by more than the changes a
refactor should be held to (5%). This puts both versions in one process: the other
revision's ``jaxseq`` (and ``seqfile``) are extracted with ``git archive`` into a
temporary folder and imported under the names ``jaxseq_rev`` / ``seqfile_rev``; each
repeat times one training step (masked loss, gradients, SGD update) of each version, in
alternating order, and the ratio is the median of the per-repeat ratios.

    python -m benchmarks.compare_revisions --rev HEAD~5 [--kinds lstm gru rnn]
        [--configs target target_l2_bi long] [--repeats 31] [--out DIR]
        [--impl IMPL] [--host-memory system|retain]

Both versions run their default layer implementation (or ``--impl``) on the same parameters and batch
(float32, lengths drawn in [T/2, T], as ``benchmarks.run``).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import io
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.run import CONFIGS, Config, add_host_memory_arg, apply_host_memory

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("jaxseq", "seqfile")


def import_revision(rev: str) -> Any:
    """``jaxseq`` as of ``rev``, imported as ``jaxseq_rev``."""
    blob = subprocess.run(
        ["git", "archive", "--format=tar", rev, *PACKAGES],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    tmp = Path(tempfile.mkdtemp(prefix="jaxseq_rev_"))
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(tmp, filter="data")
    pattern = re.compile(r"\b(" + "|".join(PACKAGES) + r")\b")
    for name in PACKAGES:
        src = tmp / name
        for path in src.rglob("*.py"):
            path.write_text(pattern.sub(r"\1_rev", path.read_text()))
        src.rename(tmp / f"{name}_rev")
    sys.path.insert(0, str(tmp))
    return importlib.import_module("jaxseq_rev")


def make_step(lib: Any, kind: str, impl: str | None = None):
    import jax
    import jax.numpy as jnp

    # A kind without a function of its own (the layer-normalised kinds): the generic stack.
    run = getattr(lib, kind, None) or functools.partial(lib.run_stack, kind)

    def loss(p, x, lengths):
        kw = {} if impl is None else {"impl": impl}
        out, _ = run(p, x, lengths=lengths, **kw)
        return jnp.mean(out * out)

    @jax.jit
    def step(p, x, lengths):
        value, grads = jax.value_and_grad(loss)(p, x, lengths)
        return value, jax.tree.map(lambda a, g: a - 1e-3 * g, p, grads)

    return step


def time_pair(steps: dict[str, Any], args: tuple, repeats: int, calls: int) -> dict[str, Any]:
    import jax

    for step in steps.values():  # compile and warm up
        for _ in range(3):
            jax.block_until_ready(step(*args))
    samples: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            for _ in range(calls):
                out = steps[name](*args)
            jax.block_until_ready(out)
            samples[name].append((time.perf_counter() - t0) / calls)
    ratios = np.array(samples["working tree"]) / np.array(samples["revision"])
    return {
        "median_ms": {k: float(np.median(v) * 1e3) for k, v in samples.items()},
        "ratio_median": float(np.median(ratios)),
        "ratio_iqr": [float(np.percentile(ratios, 25)), float(np.percentile(ratios, 75))],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rev", required=True, help="the git revision to compare against")
    ap.add_argument(
        "--kinds", nargs="+", default=["lstm", "gru", "rnn"], help="any registered kinds"
    )
    ap.add_argument("--configs", nargs="+", default=["target"], choices=list(CONFIGS))
    ap.add_argument("--repeats", type=int, default=31)
    ap.add_argument("--calls", type=int, default=3, help="steps per timed sample")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--impl", default=None, help="layer implementation of both (default: each's default)"
    )
    add_host_memory_arg(ap)
    args = ap.parse_args(argv)

    import jax
    import jax.numpy as jnp

    import jaxseq

    apply_host_memory(args.host_memory)
    old = import_revision(args.rev)
    results = []
    for config in args.configs:
        cfg: Config = CONFIGS[config]
        for kind in args.kinds:
            rng = np.random.default_rng(0)
            x = jnp.asarray(rng.standard_normal((cfg.T, cfg.B, cfg.I)).astype(np.float32))
            lengths = jnp.asarray(rng.integers(cfg.T // 2, cfg.T + 1, size=cfg.B).astype(np.int32))
            params = jaxseq.init_params(
                jax.random.key(0), kind, cfg.I, cfg.H, cfg.layers, bidirectional=cfg.bidirectional
            )
            steps = {
                "revision": make_step(old, kind, args.impl),
                "working tree": make_step(jaxseq, kind, args.impl),
            }
            r = time_pair(steps, (params, x, lengths), args.repeats, args.calls)
            r.update(kind=kind, config=config, label=cfg.label())
            results.append(r)
            ms = r["median_ms"]
            print(
                f"{kind:4s} {config:13s} train: revision {ms['revision']:7.2f} ms, working tree "
                f"{ms['working tree']:7.2f} ms | ratio {r['ratio_median']:.3f} "
                f"(IQR {r['ratio_iqr'][0]:.3f}-{r['ratio_iqr'][1]:.3f})",
                flush=True,
            )
    command = "python -m benchmarks.compare_revisions " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    report = {"rev": args.rev, "command": command, "results": results}
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "compare.json").write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
