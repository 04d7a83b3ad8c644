"""Peak memory of a training step on a very long sequence, with and without ``remat``.

A sequence classifier — a 1-layer LSTM, a linear head on the final state ``h_n``, cross
entropy — takes one SGD step on B=8 sequences of T=100,000 steps, I=16, H=256, float32.
Storing every step's gates alone would take T*B*4H*4 bytes = 3.3 GB; with
``remat=K`` only the carries at chunk boundaries are stored and each chunk of K steps
is recomputed on the backward pass.

Each measurement runs in a fresh subprocess (JAX only, no torch import) and reports the
process's peak resident set size (``ru_maxrss``), i.e. the whole process: Python, JAX,
compilation and the step.

    python -m benchmarks.long_sequence [--T 100000] [--remat 500] [--no-remat] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def child(T: int, B: int, I: int, H: int, remat: int | None, unroll: int) -> dict:
    import resource

    import jax
    import jax.numpy as jnp

    import jaxseq

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    classes = 4
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    params = {
        "lstm": jaxseq.init_lstm(k1, I, H),
        "head_w": jax.random.normal(k2, (classes, H), jnp.float32) * 0.01,
        "head_b": jnp.zeros((classes,), jnp.float32),
    }
    x = jax.random.normal(k3, (T, B, I), jnp.float32)
    labels = jnp.arange(B, dtype=jnp.int32) % classes
    lengths = jnp.asarray([T - 997 * b for b in range(B)], jnp.int32)

    def loss_fn(p, x, lengths):
        _, (h_n, _) = jaxseq.lstm(p["lstm"], x, lengths=lengths, remat=remat, unroll=unroll)
        logits = h_n[-1] @ p["head_w"].T + p["head_b"].reshape(1, classes)
        logp = jax.nn.log_softmax(logits, axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))

    @jax.jit
    def step(p, x, lengths):
        loss, g = jax.value_and_grad(loss_fn)(p, x, lengths)
        return loss, jax.tree.map(lambda a, b: a - 0.1 * b, p, g)

    t0 = time.perf_counter()
    compiled = step.lower(params, x, lengths).compile()
    compile_s = time.perf_counter() - t0
    ma = compiled.memory_analysis()
    t0 = time.perf_counter()
    loss, new = compiled(params, x, lengths)
    jax.block_until_ready(new)
    step_s = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "T": T,
        "B": B,
        "I": I,
        "H": H,
        "remat": remat,
        "unroll": unroll,
        "loss": float(loss),
        "compile_s": compile_s,
        "step_s": step_s,
        "peak_rss_mib": rss / 1024,
        "rss_after_imports_mib": rss0 / 1024,
        "xla_temp_mib": ma.temp_size_in_bytes / 2**20,
        "gates_if_stored_mib": T * B * 4 * H * 4 / 2**20,
    }


def measure(
    T: int,
    remat: int | None,
    B: int = 8,
    I: int = 16,
    H: int = 256,
    unroll: int = 1,
    timeout: float = 1800,
) -> dict:
    """Run :func:`child` in a fresh interpreter and return its report."""
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.long_sequence",
        "--child",
        "--T",
        str(T),
        "--B",
        str(B),
        "--I",
        str(I),
        "--H",
        str(H),
        "--unroll",
        str(unroll),
    ]
    cmd += ["--remat", str(remat)] if remat else ["--no-remat"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        return {"T": T, "remat": remat, "error": proc.stderr[-2000:], "returncode": proc.returncode}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--T", type=int, default=100_000)
    ap.add_argument("--B", type=int, default=8)
    ap.add_argument("--I", type=int, default=16)
    ap.add_argument("--H", type=int, default=256)
    ap.add_argument("--remat", type=int, default=500, help="chunk length (default 500)")
    ap.add_argument(
        "--no-remat",
        action="store_true",
        help="measure without checkpointing (needs several GB at the default T)",
    )
    ap.add_argument("--unroll", type=int, default=1)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    remat = None if args.no_remat else args.remat
    if args.child:
        print(json.dumps(child(args.T, args.B, args.I, args.H, remat, args.unroll)))
        return
    r = measure(args.T, remat, args.B, args.I, args.H, args.unroll)
    print(json.dumps(r, indent=1))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"long_sequence_T{args.T}_remat{remat}.json").write_text(
            json.dumps(r, indent=1)
        )


if __name__ == "__main__":
    main()
