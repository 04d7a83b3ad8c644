"""Why recurrence? Memory tasks at growing lengths: RNN vs LSTM vs GRU vs feedforward.

Also minGRU and minLSTM (Feng et al. 2024; ``jaxseq.nn.MinGRU`` / ``MinLSTM``): gates that
read the input only, so the recurrence is linear and can run as a parallel scan.

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

import functools

import numpy as np
from _common import (
    Adam,
    ExampleError,
    base_parser,
    configure_devices,
    configure_torch,
    cores_note,
    frameworks,
    new_figure,
    parse_args,
    parse_list,
    prepare_out,
    run_main,
    save_figure,
    save_results,
    show_table,
    train_lib,
    twin_models,
)

MODELS = ("rnn", "lstm", "gru", "min_gru", "min_lstm", "ff")
NAMES = {
    "rnn": "RNN",
    "lstm": "LSTM",
    "gru": "GRU",
    "min_gru": "minGRU",
    "min_lstm": "minLSTM",
    "ff": "feedforward",
}
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


# --------------------------------------------------------------------------- models

LOSSES = {"adding": "regression_loss", "parity": "classification_loss"}  # in both libraries


def build_model(kind, task, T_max, args):
    """The torch model (its JAX twin comes from the same checkpoint): a recurrent
    classifier/regressor, or ("ff") an MLP on the whole padded sequence."""
    import torchseq.models

    n_in, n_out = (2, 1) if task == "adding" else (1, 2)
    if kind == "ff":
        return torchseq.models.FeedForwardClassifier(
            n_in, n_out, max_len=T_max, hidden_size=args.hidden_size
        )
    return torchseq.models.SequenceClassifier(n_in, n_out, hidden_size=args.hidden_size, cell=kind)


def score(fw, task, model, test):
    """Test MSE (adding, lower is better) or accuracy (parity, higher is better)."""
    lib = train_lib(fw)
    if task == "adding":
        return lib.evaluate_regression(model, [test])["mse"]
    return lib.evaluate(model, [test])["accuracy"]


def input_gradient(fw, model, x, lengths):
    """How much the first output depends on each step: mean over the batch of
    sum_i |d y / d x[t, i]|, for every step t (T,)."""
    if fw == "torch":
        import torch

        model.eval()
        xt = torch.from_numpy(x).requires_grad_(True)
        model(xt, torch.from_numpy(lengths))[:, 0].sum().backward()
        grad = xt.grad.numpy()
    else:
        from flax import nnx

        graphdef, state = nnx.split(model)
        grad = np.asarray(_jax_input_grad()(x, graphdef, state, lengths))
    return np.abs(grad).sum(-1).mean(0)  # (N, T, I) -> (T,)


@functools.cache
def _jax_input_grad():
    """d/dx of the batch sum of the first output, jitted once per model graph."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    def output_sum(x, graphdef, state, lengths):
        return jnp.sum(nnx.merge(graphdef, state)(x, lengths)[:, 0])

    return jax.jit(jax.grad(output_sum), static_argnums=1)


# --------------------------------------------------------------------------- report


def summarize(results, kinds, tasks, lengths, fws, n_steps, args):
    """The caption and a table with one row per (model, framework), one column per
    (task, T)."""
    headers = ["model", "framework"] + [
        f"{'adding MSE' if t == 'adding' else 'parity acc'} T={T}" for t in tasks for T in lengths
    ]
    rows = []
    for kind in kinds:
        for fw in fws:
            row = [NAMES[kind], fw]
            for t in tasks:
                for T in lengths:
                    m = results[t, T, kind, fw]["metric"]
                    row.append(f"{m:.3g}" if t == "adding" else f"{m:.3f}")
            rows.append(row)
    rows.append(
        ["chance / predict the mean", "-"]
        + [("0.167" if t == "adding" else "0.500") for t in tasks for T in lengths]
    )
    caption = (
        f"test MSE (adding; lower is better) and accuracy (parity; higher is better) after "
        f"{n_steps} Adam steps (batch {args.batch_size}, lr {args.lr}, hidden {args.hidden_size}, "
        f"seed {args.seed}); every model sees the same batches; {cores_note()}"
    )
    return caption, headers, rows


def plot(results, grad_curves, kinds, tasks, lengths, fws, path):
    """Test metric against T per task, and the input gradient against the distance from
    the end (adding, longest T, first framework)."""
    T_max = lengths[-1]
    fig, axes = new_figure(1, 1 + len(tasks), size=(5.0 * (1 + len(tasks)), 4.0))
    colors = {
        "rnn": "tab:red",
        "lstm": "tab:blue",
        "gru": "tab:green",
        "min_gru": "tab:olive",
        "min_lstm": "tab:cyan",
        "ff": "tab:gray",
    }
    for i, t in enumerate(tasks):
        ax = axes[0, i]
        for kind in kinds:
            for fw in fws:
                ax.plot(
                    lengths,
                    [results[t, T, kind, fw]["metric"] for T in lengths],
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
    return save_figure(fig, path)


# --------------------------------------------------------------------------- main


def parse_lengths(args) -> list[int]:
    """The sorted distinct ``--lengths``; ExampleError for bad values or flags."""
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
    return lengths


def main(argv=None):
    args = parse_args(build_parser(), argv, TINY)
    configure_devices(args)  # before any JAX use: --devices, cluster flags
    kinds = parse_list(args.models, MODELS, "--models")
    tasks = parse_list(args.tasks, TASKS, "--tasks")
    lengths = parse_lengths(args)
    out = prepare_out(args.out)
    configure_torch(args.torch_threads)
    ckpt_dir = prepare_out(out / "checkpoints")
    T_max, seed = lengths[-1], args.seed  # every length is padded to T_max: one shape
    fws = frameworks(args.framework)
    n_steps = args.steps * args.epochs
    print(
        f"tasks {', '.join(tasks)} at lengths {lengths} (padded to {T_max}); {n_steps} Adam steps "
        f"of batch {args.batch_size} per run; hidden {args.hidden_size}"
    )

    results = {}  # (task, T, model, framework) -> {"metric", "train_s", "losses", ...}
    grad_curves = {}  # (model, framework, "init"/"trained") -> mean |dy/dx_t| over t
    for task in tasks:
        for kind in kinds:
            # One Adam trainer per framework; JAX compiles one step here for every length.
            trainers = {
                fw: Adam(fw, lr=args.lr, clip_norm=args.clip_norm, loss=LOSSES[task]) for fw in fws
            }
            for T in lengths:
                models = twin_models(
                    lambda: build_model(kind, task, T_max, args),  # noqa: B023
                    seed,
                    ckpt_dir / f"{task}-{kind}-init.safetensors",  # overwritten per length
                )
                rng = np.random.default_rng([seed, TASKS.index(task), T])
                data = [make_task(task, args.batch_size, T, T_max, rng) for _ in range(n_steps)]
                test = make_task(
                    task, args.test_size, T, T_max, np.random.default_rng([seed, 99, T])
                )
                probe = test[0][:256], test[1][:256]
                track = task == "adding" and T == T_max and kind != "ff"
                for fw in fws:
                    if track:
                        grad_curves[kind, fw, "init"] = input_gradient(fw, models[fw], *probe)
                    desc = f"{task} T={T} {NAMES[kind]} {fw}"
                    history = trainers[fw].fit(models[fw], data, desc=desc, quiet=args.no_progress)
                    if track:
                        grad_curves[kind, fw, "trained"] = input_gradient(fw, models[fw], *probe)
                    metric = score(fw, task, models[fw], test)
                    results[task, T, kind, fw] = {
                        "task": task,
                        "T": T,
                        "model": kind,
                        "framework": fw,
                        "metric": metric,
                        "train_s": history.train_seconds,
                        "losses": list(history),
                    }
                    print(
                        f"{task:6} T={T:<4} {NAMES[kind]:>11} {fw:>5}: "
                        f"{'test MSE' if task == 'adding' else 'test accuracy'} {metric:.3g} "
                        f"({history.train_seconds:.1f} s)"
                    )

    caption, headers, rows = summarize(results, kinds, tasks, lengths, fws, n_steps, args)
    show_table(caption, headers, rows)
    png = plot(results, grad_curves, kinds, tasks, lengths, fws, out / "why_recurrence.png")
    payload = {"config": vars(args), "lengths": lengths, "results": list(results.values())}
    payload["input_gradient_by_distance_from_end"] = {
        f"{k}/{fw}/{w}": g[::-1] for (k, fw, w), g in grad_curves.items()
    }
    save_results(out, "why_recurrence", caption, headers, rows, payload, also=[png])


if __name__ == "__main__":
    run_main(main)
