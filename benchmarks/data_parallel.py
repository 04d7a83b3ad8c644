"""Data-parallel training step of ``jaxseq.train`` over host CPU devices, against one device.

One process, interleaved: for each kind it builds a ``SequenceClassifier`` train step
(clipping + Adam, lengths in [T/2, T]) three ways, on the same batch:

* ``1 device``: ``make_train_step(model, tx)``;
* ``mesh``: ``make_train_step(model, tx, mesh=mesh)`` over every host device (shard_map);
* ``jit+NamedSharding``: the same global step jitted with batch-sharded inputs (XLA's
  partitioner chooses the communication), for comparison.

Scaling efficiency = t(1 device) / (devices * t(mesh)).

    python -m benchmarks.data_parallel [--devices 2] [--kinds lstm gru rnn] [--repeats 11]
"""

from __future__ import annotations

import argparse
import functools
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
    args = ap.parse_args(argv)

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
    for kind in args.kinds:
        # "jit+NamedSharding": the single-device step's jitted function, fed sharded inputs.
        one, dp, gspmd = new_step(kind), new_step(kind, mesh), new_step(kind)
        steps = {
            "1 device": functools.partial(one, x, lengths, y),
            "mesh": functools.partial(dp, x, lengths, y),
            "jit+NamedSharding": functools.partial(gspmd, *sharded),
        }
        for f in steps.values():
            for _ in range(3):
                float(f())
        samples: dict[str, list[float]] = {k: [] for k in steps}
        names = list(steps)
        for r in range(args.repeats):
            for name in names if r % 2 == 0 else names[::-1]:
                t0 = time.perf_counter()
                for _ in range(3):
                    loss = steps[name]()
                float(loss)
                samples[name].append((time.perf_counter() - t0) / 3)
        med = {k: float(np.median(v)) * 1e3 for k, v in samples.items()}
        eff = med["1 device"] / (len(jax.devices()) * med["mesh"])
        results.append({"kind": kind, "median_ms": med, "efficiency": eff})
        print(
            f"{kind:4s} B={B} T={T} I={I} H={H}: "
            + ", ".join(f"{k} {v:6.1f} ms" for k, v in med.items())
            + f" | {len(jax.devices())}-device efficiency {eff:.0%}",
            flush=True,
        )
    return results


if __name__ == "__main__":
    main()
