"""Data-parallel training step of ``jaxseq.train`` over host CPU devices, against one device.

One process, interleaved: for each kind it builds a ``SequenceClassifier`` train step
(clipping + Adam, lengths in [T/2, T]) three ways, on the same batch:

* ``1 device``: ``make_train_step(model, tx)``;
* ``mesh``: ``make_train_step(model, tx, mesh=mesh)`` over every host device (shard_map);
* ``jit+NamedSharding``: the same global step jitted with batch-sharded inputs (XLA's
  partitioner chooses the communication), for comparison.

Scaling efficiency = t(1 device) / (devices * t(mesh)).

With ``--processes 2`` the same ``mesh`` step also runs over 2 processes of one device
each (``python -m jaxseq.launch``, gloo collectives over 127.0.0.1), each feeding its own
half of the batch: a process group cannot be interleaved step by step with the in-process
runs, so the in-process runs are timed before *and* after it and their medians pool both
blocks. The workers also time an all-reduce (``psum``) of a float32 vector the size of the
model's gradient: the communication one data-parallel step adds.

    python -m benchmarks.data_parallel [--devices 2] [--processes 2] [--kinds lstm gru rnn]
                                       [--repeats 11] [--out DIR]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", type=int, default=2)
    ap.add_argument("--kinds", nargs="+", default=["lstm", "gru", "rnn"])
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--B", type=int, default=64)
    ap.add_argument("--T", type=int, default=100)
    ap.add_argument("--I", type=int, default=32)
    ap.add_argument("--H", type=int, default=128)
    ap.add_argument("--processes", type=int, default=0, help="also time N processes (0: no)")
    ap.add_argument("--out", default=None, help="folder for data_parallel.json")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # result file
    args = ap.parse_args(argv)
    if args.worker:
        return _worker(args)

    import jax

    jax.config.update("jax_num_cpu_devices", args.devices)
    import numpy as np
    import optax
    from flax import nnx
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    from jaxseq.models import SequenceClassifier
    from jaxseq.train import classification_loss, clip_by_global_norm_torch, make_train_step

    B, T, I, H = args.B, args.T, args.I, args.H
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    lengths = rng.integers(T // 2, T + 1, size=B).astype(np.int32)
    y = rng.integers(0, 4, size=B).astype(np.int32)
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    rows = NamedSharding(mesh, P("batch"))
    results = []

    def new_step(kind: str, m: Mesh | None = None):
        model = SequenceClassifier(I, 4, hidden_size=H, cell=kind, rngs=nnx.Rngs(0))
        tx = optax.chain(clip_by_global_norm_torch(1.0), optax.adam(1e-3))
        return make_train_step(model, tx, classification_loss, mesh=m)

    sharded = tuple(jax.device_put(a, rows) for a in (x, lengths, y))
    built = {}
    for kind in args.kinds:
        # "jit+NamedSharding": the single-device step's jitted function, fed sharded inputs.
        one, dp, gspmd = new_step(kind), new_step(kind, mesh), new_step(kind)
        built[kind] = {
            "1 device": functools.partial(one, x, lengths, y),
            "mesh": functools.partial(dp, x, lengths, y),
            "jit+NamedSharding": functools.partial(gspmd, *sharded),
        }
        for f in built[kind].values():
            for _ in range(3):
                float(f())
    samples = {kind: {k: [] for k in built[kind]} for kind in args.kinds}
    blocks = 2 if args.processes else 1
    procs: dict = {}
    for block in range(blocks):
        for kind in args.kinds:
            _time_interleaved(built[kind], samples[kind], (args.repeats + blocks - 1) // blocks)
        if args.processes and block == 0:
            procs = _launch_workers(args)
    n_dev = len(jax.devices())
    for kind in args.kinds:
        med = {k: float(np.median(v)) * 1e3 for k, v in samples[kind].items()}
        row = {
            "kind": kind,
            "median_ms": med,
            "efficiency": med["1 device"] / (n_dev * med["mesh"]),
        }
        if procs:
            med[f"{args.processes} processes"] = procs[kind]["median_ms"]
            row["process_efficiency"] = med["1 device"] / (
                args.processes * procs[kind]["median_ms"]
            )
            row["allreduce_ms"] = procs[kind]["allreduce_ms"]
            row["gradient_bytes"] = procs[kind]["gradient_bytes"]
        results.append(row)
        line = ", ".join(f"{k} {v:6.1f} ms" for k, v in med.items())
        line += f" | {n_dev}-device efficiency {row['efficiency']:.0%}"
        if procs:
            line += (
                f", {args.processes}-process efficiency {row['process_efficiency']:.0%}"
                f" | all-reduce of {row['gradient_bytes'] / 1e3:.0f} kB: "
                f"{row['allreduce_ms']:.2f} ms"
            )
        print(f"{kind:4s} B={B} T={T} I={I} H={H}: {line}", flush=True)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        config = {"B": B, "T": T, "I": I, "H": H, "devices": n_dev, "processes": args.processes}
        with open(os.path.join(args.out, "data_parallel.json"), "w") as f:
            json.dump({"config": config, "results": results}, f, indent=1)
    return results


def _time_interleaved(steps: dict, samples: dict, repeats: int) -> None:
    """Append ``repeats`` timings (3 steps each, per-step seconds) of every step function,
    alternating their order round by round."""
    names = list(steps)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            for _ in range(3):
                loss = steps[name]()
            float(loss)
            samples[name].append((time.perf_counter() - t0) / 3)


def _launch_workers(args: argparse.Namespace) -> dict:
    """Run the worker in ``args.processes`` processes; returns rank 0's results."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "workers.json")
        argv = [sys.executable, "-m", "jaxseq.launch", "--nproc", str(args.processes)]
        argv += ["--timeout", "900", os.path.abspath(__file__), "--worker", out]
        argv += ["--kinds", *args.kinds, "--repeats", str(args.repeats)]
        argv += [f"--{k}={getattr(args, k)}" for k in ("B", "T", "I", "H")]
        env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
        subprocess.run(argv, check=True, env=env)
        with open(out) as f:
            return json.load(f)


def _worker(args: argparse.Namespace) -> list[dict]:
    """One process of the multi-process run: one CPU device, this process's rows."""
    import jax

    jax.config.update("jax_num_cpu_devices", 1)
    import numpy as np
    import optax
    from flax import nnx
    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P

    from jaxseq.models import SequenceClassifier
    from jaxseq.train import (
        classification_loss,
        clip_by_global_norm_torch,
        initialize_distributed,
        make_train_step,
    )

    rank, world = initialize_distributed()
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    B, T, I, H = args.B, args.T, args.I, args.H
    rng = np.random.default_rng(0)  # the same global batch as the parent's
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    lengths = rng.integers(T // 2, T + 1, size=B).astype(np.int32)
    y = rng.integers(0, 4, size=B).astype(np.int32)
    part = np.array_split(np.arange(B), world)[rank]
    out = {}
    for kind in args.kinds:
        model = SequenceClassifier(I, 4, hidden_size=H, cell=kind, rngs=nnx.Rngs(0))
        n_params = sum(int(np.size(p)) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
        tx = optax.chain(clip_by_global_norm_torch(1.0), optax.adam(1e-3))
        step = make_train_step(model, tx, classification_loss, mesh=mesh)
        f = functools.partial(step, x[part], lengths[part], y[part])
        # The gradient's all-reduce alone: a psum of as many float32 values over the mesh.
        grad = jax.make_array_from_process_local_data(
            jax.sharding.NamedSharding(mesh, P("batch")), np.ones((n_params,), np.float32)
        )
        allreduce = jax.jit(
            jax.shard_map(
                lambda g: jax.lax.psum(g, "batch"), mesh=mesh, in_specs=P("batch"), out_specs=P()
            )
        )
        for _ in range(3):
            float(f())
            allreduce(grad).block_until_ready()
        samples: dict[str, list[float]] = {"step": [], "allreduce": []}
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for _ in range(3):
                loss = f()
            float(loss)
            samples["step"].append((time.perf_counter() - t0) / 3)
            t0 = time.perf_counter()
            for _ in range(3):
                r = allreduce(grad)
            r.block_until_ready()
            samples["allreduce"].append((time.perf_counter() - t0) / 3)
        # Every process's ones were summed.
        assert float(np.sum(r.addressable_data(0))) == world * n_params
        out[kind] = {
            "median_ms": float(np.median(samples["step"])) * 1e3,
            "allreduce_ms": float(np.median(samples["allreduce"])) * 1e3,
            "gradient_bytes": 4 * n_params,
        }
    if rank == 0:
        with open(args.worker, "w") as fh:
            json.dump(out, fh)
    return []


if __name__ == "__main__":
    main()
