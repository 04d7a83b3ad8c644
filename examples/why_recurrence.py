"""Why recurrence? Memory tasks at growing lengths: RNN vs LSTM vs GRU vs feedforward.

Two synthetic tasks where the answer depends on order and memory:

* **adding problem** (Hochreiter & Schmidhuber): each step carries a value in [0, 1) and a
  marker bit; exactly two steps are marked, one in each half of the sequence. Target: the
  sum of the two marked values (regression, mean squared error). Predicting the mean
  (1.0) scores 1/6 = 0.167; "solved" means far below that.
* **parity**: a bit string of random length in [1, T]; target: the XOR of its bits
  (classification; chance is 0.5). Every bit matters, wherever it is.

For each length T the models get the same budget (``--steps`` Adam steps on fresh random
batches, all models the same batches) and are scored on a fixed test set. The
feedforward baseline sees the whole zero-padded sequence at once (an MLP on T x inputs),
so it has no notion of order to reuse and must learn every position separately.

All lengths share **one compiled train step per model**: sequences are padded to the
longest T and the true lengths are passed to the masked scan (``lengths`` are traced
values in jaxseq, so changing them never recompiles).

The second figure shows *why* the plain RNN fails on long sequences: the gradient of the
adding-problem output with respect to the input at step t, ||d y / d x_t||, against the
distance T - t from the end. For the trained RNN it decays exponentially (vanishing
gradient) and the first marker is out of reach; the gates of the LSTM and GRU learn to
carry it across the whole sequence.

Outputs in ``--out``: ``table.md``, ``results.json``, ``why_recurrence.png``.

    python examples/why_recurrence.py
    python examples/why_recurrence.py --lengths 10,50,100,200 --steps 3000 --framework both
"""

from __future__ import annotations

import time

import numpy as np
from _common import (
    ExampleError,
    base_parser,
    configure_torch,
    frameworks,
    machine_info,
    markdown_table,
    new_figure,
    parse_args,
    prepare_out,
    progress,
    run_main,
    save_figure,
    write_json,
)

MODELS = ("rnn", "lstm", "gru", "ff")
NAMES = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU", "ff": "feedforward"}
TASKS = ("adding", "parity")


def build_parser():
    p = base_parser(
        __doc__.split("\n\n")[0],
        epochs=1,
        hidden_size=32,
        framework="jax",
        out="runs/why_recurrence",
    )
    p.add_argument("--lengths", default="10,30,60", help="comma-separated sequence lengths T")
    p.add_argument(
        "--steps", type=int, default=400, help="Adam steps per (task, length, model) and epoch"
    )
    p.add_argument("--models", default=",".join(MODELS), help=f"subset of {','.join(MODELS)}")
    p.add_argument("--tasks", default=",".join(TASKS), help=f"subset of {','.join(TASKS)}")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate")
    p.add_argument("--clip-norm", type=float, default=1.0)
    p.add_argument("--test-size", type=int, default=1000)
    return p


TINY = {
    "lengths": "5,10",
    "steps": 3,
    "hidden_size": 8,
    "models": "gru,ff",
    "batch_size": 8,
    "test_size": 16,
}


# --------------------------------------------------------------------------- tasks


def make_task(task: str, n: int, T: int, T_max: int, rng: np.random.Generator):
    """A batch padded to T_max: x (n, T_max, I) float32, lengths (n,) int32, y (n,).

    adding: I = 2 (value, marker), all lengths T, y float32 sums.
    parity: I = 1 (bit), lengths uniform in [1, T], y int32 in {0, 1}.
    """
    x = np.zeros((n, T_max, 2 if task == "adding" else 1), np.float32)
    if task == "adding":
        lengths = np.full(n, T, np.int32)
        x[:, :T, 0] = rng.random((n, T))
        half = max(T // 2, 1)
        first = rng.integers(0, half, n)
        second = rng.integers(half, T, n) if T > 1 else first
        rows = np.arange(n)
        x[rows, first, 1] = 1.0
        x[rows, second, 1] = 1.0
        y = (x[rows, first, 0] + x[rows, second, 0] * (second != first)).astype(np.float32)
        return x, lengths, y
    lengths = rng.integers(1, T + 1, n).astype(np.int32)
    bits = rng.integers(0, 2, (n, T_max)) * (
        np.arange(T_max).reshape(1, -1) < lengths.reshape(-1, 1)
    )
    x[:, :, 0] = bits
    return x, lengths, (bits.sum(1) % 2).astype(np.int32)


def score(task: str, out: np.ndarray, y: np.ndarray) -> float:
    """Test MSE (adding) or accuracy (parity) of model outputs (n, 1) or (n, 2)."""
    if task == "adding":
        return float(np.mean((out[:, 0] - y) ** 2))
    return float(np.mean(out.argmax(-1) == y))


# --------------------------------------------------------------------------- models


def build(zoo, kind, task, T_max, args, **kw):
    n_in, n_out = (2, 1) if task == "adding" else (1, 2)
    if kind == "ff":
        return zoo.FeedForwardClassifier(
            n_in, n_out, max_len=T_max, hidden_size=args.hidden_size, **kw
        )
    return zoo.SequenceClassifier(n_in, n_out, hidden_size=args.hidden_size, cell=kind, **kw)


def init_models(kind, task, T_max, seed, args, ckpt_dir):
    """A torch and a JAX model with the same initial weights, through one safetensors file."""
    import torch
    from flax import nnx

    import jaxseq.interop
    import jaxseq.models
    import torchseq.checkpoint
    import torchseq.models

    torch.manual_seed(seed)
    tmodel = build(torchseq.models, kind, task, T_max, args)
    path = ckpt_dir / f"{task}-{kind}-init.safetensors"  # overwritten per length: small files
    torchseq.checkpoint.save(tmodel, path)
    jmodel = build(jaxseq.models, kind, task, T_max, args, rngs=nnx.Rngs(seed))
    jaxseq.interop.load(jmodel, path)
    return tmodel, jmodel


def loss_value(task, out, y, xp):
    """MSE for adding, cross-entropy for parity; ``xp`` is jax.numpy or torch."""
    if task == "adding":
        return xp.mean((out[:, 0] - y) ** 2)
    if xp.__name__ == "torch":
        return xp.nn.functional.cross_entropy(out, y.long())
    import optax

    return xp.mean(optax.softmax_cross_entropy_with_integer_labels(out, y))


class JaxRunner:
    """One jitted train step, predict and input-gradient per (model kind, task), reused for
    every length and fresh initialization (same graph, same shapes: no recompilation)."""

    def __init__(self, model, task, args):
        import jax
        import jax.numpy as jnp
        import optax
        from flax import nnx

        from jaxseq.train import clip_by_global_norm_torch, make_train_step

        self.tx = optax.chain(clip_by_global_norm_torch(args.clip_norm), optax.adam(args.lr))
        self.step = make_train_step(
            model, self.tx, loss_fn=lambda m, x, L, y: loss_value(task, m(x, L), y, jnp)
        )
        graphdef = self.step.graphdef
        self.predict = jax.jit(lambda state, x, L: nnx.merge(graphdef, state)(x, L))

        def output_sum(x, state, L):  # sum over the batch of the first output
            return jnp.sum(nnx.merge(graphdef, state)(x, L)[:, 0])

        self.input_grad = jax.jit(jax.grad(output_sum))  # (N, T, I)

    def train(self, model, data, bar):
        from flax import nnx

        _, params, rest = nnx.split(model, nnx.Param, ...)
        opt_state = self.tx.init(params)
        losses = []
        for x, L, y in data:
            params, rest, opt_state, loss = self.step.step_fn(params, rest, opt_state, x, L, y)
            losses.append(float(loss))
            bar.update(1)
        nnx.update(model, params, rest)
        return losses

    def outputs(self, model, x, L):
        from flax import nnx

        return np.asarray(self.predict(nnx.state(model), x, L))

    def grads(self, model, x, L):
        from flax import nnx

        return np.asarray(self.input_grad(x, nnx.state(model), L))


class TorchRunner:
    def __init__(self, model, task, args):
        import torch

        self.torch, self.task, self.args = torch, task, args

    def train(self, model, data, bar):
        torch = self.torch
        opt = torch.optim.Adam(model.parameters(), lr=self.args.lr)
        model.train()
        losses = []
        for x, L, y in data:
            opt.zero_grad()
            loss = loss_value(
                self.task,
                model(torch.from_numpy(x), torch.from_numpy(L)),
                torch.from_numpy(y),
                torch,
            )
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.args.clip_norm)
            opt.step()
            losses.append(float(loss.detach()))
            bar.update(1)
        return losses

    def outputs(self, model, x, L):
        model.eval()
        with self.torch.no_grad():
            return model(self.torch.from_numpy(x), self.torch.from_numpy(L)).numpy()

    def grads(self, model, x, L):
        model.eval()
        xt = self.torch.from_numpy(x).requires_grad_(True)
        model(xt, self.torch.from_numpy(L))[:, 0].sum().backward()
        return xt.grad.numpy()


# --------------------------------------------------------------------------- main


def _csv(value: str, allowed, flag: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items or any(v not in allowed for v in items):
        raise ExampleError(
            f"{flag} must be a comma-separated subset of {','.join(allowed)}, got {value!r}"
        )
    return items


def main(argv=None):
    args = parse_args(build_parser(), argv, TINY)
    kinds = _csv(args.models, MODELS, "--models")
    tasks = _csv(args.tasks, TASKS, "--tasks")
    try:
        lengths = sorted({int(v) for v in args.lengths.split(",") if v.strip()})
    except ValueError:
        raise ExampleError(
            f"--lengths must be comma-separated integers, got {args.lengths!r}"
        ) from None
    if (
        not lengths
        or lengths[0] < 2
        or min(args.steps, args.epochs, args.batch_size, args.test_size) < 1
    ):
        raise ExampleError(
            "--lengths must be >= 2; --steps, --epochs, --batch-size, --test-size >= 1"
        )
    out = prepare_out(args.out)
    configure_torch(args.torch_threads)
    ckpt_dir = prepare_out(out / "checkpoints")
    T_max = lengths[-1]
    fws = frameworks(args.framework)
    n_steps = args.steps * args.epochs
    print(
        f"tasks {', '.join(tasks)} at lengths {lengths} (padded to {T_max}); {n_steps} Adam steps "
        f"of batch {args.batch_size} per run; hidden {args.hidden_size}"
    )

    results = []  # one dict per (task, T, model, framework)
    grad_curves = {}  # (model, framework, "init"/"trained") -> mean ||dy/dx_t|| over t
    for task in tasks:
        for kind in kinds:
            runners = {}
            for T in lengths:
                seed = args.seed
                tmodel, jmodel = init_models(kind, task, T_max, seed, args, ckpt_dir)
                rng = np.random.default_rng([seed, TASKS.index(task), T])
                data = [make_task(task, args.batch_size, T, T_max, rng) for _ in range(n_steps)]
                test = make_task(
                    task, args.test_size, T, T_max, np.random.default_rng([seed, 99, T])
                )
                probe = test[0][:256], test[1][:256]
                for fw in fws:
                    model = jmodel if fw == "jax" else tmodel
                    if fw not in runners:
                        runners[fw] = (JaxRunner if fw == "jax" else TorchRunner)(model, task, args)
                    runner = runners[fw]
                    track = task == "adding" and T == T_max and kind != "ff"
                    if track:
                        grad_curves[(kind, fw, "init")] = (
                            np.abs(runner.grads(model, *probe)).sum(-1).mean(0)
                        )
                    t0 = time.perf_counter()
                    with progress(
                        range(n_steps),
                        desc=f"{task} T={T} {NAMES[kind]} {fw}",
                        disable=args.no_progress,
                    ) as bar:
                        losses = runner.train(model, data, bar)
                    train_s = time.perf_counter() - t0
                    if track:
                        grad_curves[(kind, fw, "trained")] = (
                            np.abs(runner.grads(model, *probe)).sum(-1).mean(0)
                        )
                    metric = score(task, runner.outputs(model, test[0], test[1]), test[2])
                    results.append(
                        {
                            "task": task,
                            "T": T,
                            "model": kind,
                            "framework": fw,
                            "metric": metric,
                            "train_s": train_s,
                            "losses": losses,
                        }
                    )
                    print(
                        f"{task:6} T={T:<4} {NAMES[kind]:>11} {fw:>5}: "
                        f"{'test MSE' if task == 'adding' else 'test accuracy'} {metric:.3g} "
                        f"({train_s:.1f} s)"
                    )

    # Table: one row per (model, framework), one column per (task, T).
    headers = ["model", "framework"] + [
        f"{'adding MSE' if t == 'adding' else 'parity acc'} T={T}" for t in tasks for T in lengths
    ]
    rows = []
    for kind in kinds:
        for fw in fws:
            row = [NAMES[kind], fw]
            for t in tasks:
                for T in lengths:
                    r = next(
                        r
                        for r in results
                        if (r["task"], r["T"], r["model"], r["framework"]) == (t, T, kind, fw)
                    )
                    row.append(f"{r['metric']:.3g}" if t == "adding" else f"{r['metric']:.3f}")
            rows.append(row)
    rows.append(
        ["chance / predict the mean", "-"]
        + [("0.167" if t == "adding" else "0.500") for t in tasks for T in lengths]
    )
    table = markdown_table(headers, rows)
    caption = (
        f"test MSE (adding; lower is better) and accuracy (parity; higher is better) after "
        f"{n_steps} Adam steps (batch {args.batch_size}, lr {args.lr}, hidden {args.hidden_size}, "
        f"seed {args.seed}); every model sees the same batches"
    )
    print()
    print(caption)
    print(table)

    fig, axes = new_figure(1, 1 + len(tasks), size=(5.0 * (1 + len(tasks)), 4.0))
    colors = {"rnn": "tab:red", "lstm": "tab:blue", "gru": "tab:green", "ff": "tab:gray"}
    for i, t in enumerate(tasks):
        ax = axes[0, i]
        for kind in kinds:
            for fw in fws:
                ys = [
                    next(
                        r["metric"]
                        for r in results
                        if (r["task"], r["T"], r["model"], r["framework"]) == (t, T, kind, fw)
                    )
                    for T in lengths
                ]
                ax.plot(
                    lengths,
                    ys,
                    marker="o",
                    color=colors[kind],
                    linestyle="--" if fw == "torch" else "-",
                    label=f"{NAMES[kind]} ({fw})",
                )
        ax.axhline(
            0.167 if t == "adding" else 0.5,
            color="black",
            linestyle=":",
            linewidth=1,
            label="predict the mean" if t == "adding" else "chance",
        )
        ax.set(
            xlabel="sequence length T",
            ylabel="test MSE" if t == "adding" else "test accuracy",
            title=f"{t}: {'lower' if t == 'adding' else 'higher'} is better",
        )
        if t == "adding":
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    ax = axes[0, -1]
    for (kind, fw, when), g in sorted(grad_curves.items()):
        if fw != fws[0]:
            continue
        dist = np.arange(T_max)[::-1]  # distance T - 1 - t from the last step
        ax.plot(
            dist,
            np.maximum(g, 1e-30),
            color=colors[kind],
            linestyle="-" if when == "trained" else ":",
            label=f"{NAMES[kind]} {when}",
        )
    ax.set(
        xlabel="steps before the end (T - 1 - t)",
        ylabel="mean |d y / d x_t|",
        yscale="log",
        title=f"gradient reaching step t (adding, T={T_max}, {fws[0]})",
    )
    ax.legend(fontsize=7)
    png = save_figure(fig, out / "why_recurrence.png")
    (out / "table.md").write_text(caption + "\n\n" + table + "\n")
    write_json(
        out / "results.json",
        {
            "example": "why_recurrence",
            "config": vars(args),
            "lengths": lengths,
            "table": {"caption": caption, "headers": headers, "rows": rows},
            "results": results,
            "input_gradient_by_distance_from_end": {
                f"{k}/{fw}/{w}": g[::-1] for (k, fw, w), g in grad_curves.items()
            },
            "machine": machine_info(),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
    )
    print(f"\nwrote {out / 'table.md'}, {out / 'results.json'}, {png}")


if __name__ == "__main__":
    run_main(main)
