"""Variable-length sequence classification on JapaneseVowels, in JAX and in PyTorch.

JapaneseVowels (bundled with aeon, read offline): 9 speakers saying /ae/, 12 LPC
cepstrum channels per frame, 7 to 29 frames per utterance, 270 train / 370 test. The
task: which speaker?

For each model (RNN, LSTM, GRU and a feedforward baseline on the zero-padded, flattened
sequence) and each seed this program

1. builds the torch model (``torchseq.models``), saves its initial weights as a
   safetensors checkpoint and loads that file into the JAX model (``jaxseq.models``), so
   both frameworks start from the same checkpoint;
2. trains both on the *same* batches in the same order (``jaxseq.data.batches``: NumPy
   arrays padded in time to a length bucket, plus the same Gaussian input jitter), with
   the same optimizer (Adam, cosine-decayed learning rate, torch-style gradient clipping):
   JAX through one jitted train step with masking by lengths (``jaxseq.train``), torch
   through ``pack_padded_sequence``;
3. reports test accuracy, training time, steps/s and the largest difference between the
   two frameworks' test-set logits.

It prints one table (model x framework), writes it to ``OUT/table.md``, the numbers and
curves to ``OUT/results.json`` and the loss/accuracy curves to ``OUT/curves.png``.

    python examples/classify.py                   # 4 models x 2 frameworks, 1 seed
    python examples/classify.py --seeds 3         # mean ± std over seeds 0, 1, 2
    python examples/classify.py --models lstm,gru --framework jax --epochs 80
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
from _common import (
    ExampleError,
    base_parser,
    configure_torch,
    frameworks,
    load_ts_classification,
    machine_info,
    markdown_table,
    mean_spread,
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


def build_parser():
    p = base_parser(
        __doc__.split("\n\n")[0], epochs=40, hidden_size=64, framework="both", out="runs/classify"
    )
    p.add_argument(
        "--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}"
    )
    p.add_argument("--seeds", type=int, default=1, help="number of seeds (seed, seed+1, ...)")
    p.add_argument("--batch-size", type=int, default=30, help="30 divides the 270 training cases")
    p.add_argument(
        "--lr", type=float, default=1e-2, help="Adam learning rate (cosine-decayed to 0)"
    )
    p.add_argument(
        "--noise",
        type=float,
        default=0.3,
        help="std of the Gaussian jitter added to the standardized training inputs",
    )
    p.add_argument("--clip-norm", type=float, default=1.0, help="gradient clipping by global norm")
    p.add_argument(
        "--buckets",
        type=int,
        default=2,
        help="number of time-length buckets (bounds the number of JAX compilations)",
    )
    p.add_argument(
        "--dataset", default="JapaneseVowels", help="a UEA/UCR multivariate .ts data set"
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder holding DATASET/DATASET_TRAIN.ts (default: aeon's bundled data)",
    )
    return p


TINY = {"epochs": 1, "hidden_size": 8, "models": "gru,ff", "batch_size": 17}  # 68 = 4 x 17 cases


# --------------------------------------------------------------------------- data


def load_data(data, args):
    """Standardized, padded NumPy arrays: X (N, T, C) float32, lengths (N,) int32, y (N,) int32."""
    from jaxseq.data import pad_sequences

    (tr_seqs, tr_labels), (te_seqs, te_labels) = data["train"], data["test"]
    classes = sorted(set(tr_labels.tolist()))
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(te_labels.tolist()) - set(classes))
    if unknown:
        raise ExampleError(f"test labels {unknown} do not occur in the training set")
    if args.tiny:  # a little data for smoke tests
        tr_seqs, tr_labels = tr_seqs[::4], tr_labels[::4]  # every class, few cases
        te_seqs, te_labels = te_seqs[::6], te_labels[::6]
    # Standardize every channel with statistics of the training frames only.
    frames = np.concatenate(tr_seqs)  # (sum T_i, C)
    mu, sd = frames.mean(0), frames.std(0) + 1e-8
    max_len = max(max(len(s) for s in tr_seqs), max(len(s) for s in te_seqs))
    out = {}
    for split, seqs, labels in (("train", tr_seqs, tr_labels), ("test", te_seqs, te_labels)):
        X, lengths = pad_sequences([(s - mu) / sd for s in seqs], max_len=max_len, dtype=np.float32)
        y = np.array([index[c] for c in labels.tolist()], dtype=np.int32)
        out[split] = (X, lengths, y)  # (N, T, C), (N,), (N,)
    return out, len(classes), max_len


def make_epochs(train, args, seed, buckets):
    """The batches of every epoch as NumPy arrays, shared by both frameworks.

    Each epoch is a new permutation (``jaxseq.data.batches``, seeded); each batch is cut
    to its length bucket and gets Gaussian jitter on its valid steps (padding stays 0).
    """
    from jaxseq.data import batches

    X, lengths, y = train
    rng = np.random.default_rng([seed, 1])
    epochs = []
    for epoch in range(args.epochs):
        epoch_batches = []
        for xb, lb, yb in batches(
            X, lengths, y, args.batch_size, seed=seed * 100_003 + epoch, buckets=buckets
        ):
            valid = (np.arange(xb.shape[1]).reshape(1, -1) < lb.reshape(-1, 1))[:, :, None]
            noise = rng.standard_normal(xb.shape).astype(np.float32) * np.float32(args.noise)
            epoch_batches.append((xb + noise * valid, lb, yb))  # (B, T_b, C), (B,), (B,)
        epochs.append(epoch_batches)
    return epochs


def lr_factor(step: int, total: int) -> float:
    """Cosine decay from 1 to 0 over ``total`` steps (optax.cosine_decay_schedule's rule)."""
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))


# --------------------------------------------------------------------------- models


def init_models(kind, seed, n_features, n_classes, max_len, args, ckpt_dir):
    """A torch model and a JAX model holding the same initial weights (via one checkpoint)."""
    import torch
    from flax import nnx

    import jaxseq.interop
    import jaxseq.models
    import torchseq.checkpoint
    import torchseq.models

    def build(zoo, **kw):
        if kind == "ff":
            return zoo.FeedForwardClassifier(
                n_features, n_classes, max_len=max_len, hidden_size=args.hidden_size, **kw
            )
        return zoo.SequenceClassifier(
            n_features, n_classes, hidden_size=args.hidden_size, cell=kind, **kw
        )

    torch.manual_seed(seed)
    tmodel = build(torchseq.models)
    path = ckpt_dir / f"{kind}-seed{seed}-init.safetensors"
    torchseq.checkpoint.save(tmodel, path)
    jmodel = build(jaxseq.models, rngs=nnx.Rngs(seed))
    jaxseq.interop.load(jmodel, path)  # same values, torch names
    return tmodel, jmodel


# --------------------------------------------------------------------------- training


def train_jax(model, epochs, test, args, bar):
    """Train with one jitted optax step; return curves, timings and test logits."""
    import jax
    import optax
    from flax import nnx

    from jaxseq.train import clip_by_global_norm_torch, make_train_step

    total = sum(len(e) for e in epochs)
    tx = optax.chain(
        clip_by_global_norm_torch(args.clip_norm),
        optax.adam(optax.cosine_decay_schedule(args.lr, total)),
    )
    step = make_train_step(model, tx)  # loss = cross_entropy(model(x, lengths), y)
    graphdef = nnx.graphdef(model)

    @jax.jit
    def predict(state, x, lengths):
        return nnx.merge(graphdef, state)(x, lengths)  # (N, C)

    Xte, Lte, yte = test
    curves = {"loss": [], "test_acc": []}
    steady_time, steady_steps, wall = 0.0, 0, 0.0
    for epoch_batches in epochs:
        losses = []
        for xb, lb, yb in epoch_batches:
            compiles = step.compiles
            t0 = time.perf_counter()
            loss = float(step(xb, lb, yb))  # float() waits for the result
            dt = time.perf_counter() - t0
            wall += dt
            if step.compiles == compiles:  # not a compiling call
                steady_time, steady_steps = steady_time + dt, steady_steps + 1
            losses.append(loss)
        logits = np.asarray(predict(nnx.state(model), Xte, Lte))
        curves["loss"].append(float(np.mean(losses)))
        curves["test_acc"].append(float(np.mean(logits.argmax(-1) == yte)))
        bar.set_postfix(loss=f"{curves['loss'][-1]:.3f}", acc=f"{curves['test_acc'][-1]:.3f}")
        bar.update(1)
    return {
        "curves": curves,
        "train_s": wall,
        "steps": total,
        "compiles": step.compiles,
        "steps_per_s": steady_steps / steady_time if steady_time else float("nan"),
        "test_acc": curves["test_acc"][-1],
        "logits": logits,
    }


def train_torch(model, epochs, test, args, bar):
    """The same loop in PyTorch (packed sequences inside the model)."""
    import torch
    import torch.nn.functional as F

    total = sum(len(e) for e in epochs)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total))
    Xte, Lte, yte = (torch.from_numpy(a) for a in test)
    curves = {"loss": [], "test_acc": []}
    wall = 0.0
    for epoch_batches in epochs:
        model.train()
        losses = []
        for xb, lb, yb in epoch_batches:
            t0 = time.perf_counter()
            x, lengths, y = torch.from_numpy(xb), torch.from_numpy(lb), torch.from_numpy(yb).long()
            opt.zero_grad()
            loss = F.cross_entropy(model(x, lengths), y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_norm)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            wall += time.perf_counter() - t0
        model.eval()
        with torch.no_grad():
            logits = model(Xte, Lte).numpy()  # (N, C)
        curves["loss"].append(float(np.mean(losses)))
        curves["test_acc"].append(float(np.mean(logits.argmax(-1) == test[2])))
        bar.set_postfix(loss=f"{curves['loss'][-1]:.3f}", acc=f"{curves['test_acc'][-1]:.3f}")
        bar.update(1)
    return {
        "curves": curves,
        "train_s": wall,
        "steps": total,
        "compiles": 0,
        "steps_per_s": total / wall if wall else float("nan"),
        "test_acc": curves["test_acc"][-1],
        "logits": logits,
    }


# --------------------------------------------------------------------------- report


def summarize(runs, kinds, fws):
    """One table row per (model, framework), aggregated over seeds."""
    headers = [
        "model",
        "framework",
        "test accuracy",
        "train s",
        "steps/s",
        "compiles",
        "max logit diff jax vs torch",
        "same prediction",
    ]
    rows = []
    for kind in kinds:
        both = [r for r in runs if r["model"] == kind and "logit_diff" in r]
        diffs = [r["logit_diff"] for r in both]
        agree = [r["prediction_agreement"] for r in both]
        for fw in fws:
            rs = [r for r in runs if r["model"] == kind and r["framework"] == fw]
            rows.append(
                [
                    NAMES[kind],
                    fw,
                    mean_spread([r["test_acc"] for r in rs]),
                    f"{np.mean([r['train_s'] for r in rs]):.1f}",
                    f"{np.mean([r['steps_per_s'] for r in rs]):.0f}",
                    str(max(r["compiles"] for r in rs)) if fw == "jax" else "-",
                    f"{max(diffs):.2e}" if diffs else "-",
                    f"{100 * min(agree):.1f}%" if agree else "-",
                ]
            )
    return headers, rows


def plot(runs, kinds, fws, seed, path):
    fig, axes = new_figure(1, 2)
    colors = {"rnn": "tab:red", "lstm": "tab:blue", "gru": "tab:green", "ff": "tab:gray"}
    styles = {"jax": "-", "torch": "--"}
    for r in runs:
        if r["seed"] != seed:
            continue
        c = r["curves"]
        epochs = np.arange(1, len(c["loss"]) + 1)
        label = f"{NAMES[r['model']]} ({r['framework']})"
        kw = {"color": colors[r["model"]], "linestyle": styles[r["framework"]], "label": label}
        axes[0, 0].plot(epochs, c["loss"], **kw)
        axes[0, 1].plot(epochs, c["test_acc"], **kw)
    axes[0, 0].set(
        xlabel="epoch",
        ylabel="train cross-entropy",
        yscale="log",
        title="training loss (solid: JAX, dashed: PyTorch)",
    )
    axes[0, 1].set(xlabel="epoch", ylabel="test accuracy", title=f"test accuracy (seed {seed})")
    axes[0, 1].legend(fontsize=8)
    return save_figure(fig, path)


def main(argv=None):
    args = parse_args(build_parser(), argv, TINY)
    kinds = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in kinds if m not in MODELS]
    if bad or not kinds:
        raise ExampleError(
            f"--models must be a comma-separated subset of {','.join(MODELS)}, got {args.models!r}"
        )
    if args.epochs < 1 or args.seeds < 1 or args.batch_size < 1:
        raise ExampleError("--epochs, --seeds and --batch-size must be >= 1")
    fws = frameworks(args.framework)
    out = prepare_out(args.out)  # fail early, before any training
    ckpt_dir = prepare_out(out / "checkpoints")
    raw = load_ts_classification(args.dataset, args.data_dir)  # ExampleError if missing

    import torch

    from jaxseq.data import make_buckets

    configure_torch(args.torch_threads)
    data, n_classes, max_len = load_data(raw, args)
    train, test = data["train"], data["test"]
    n_features = train[0].shape[2]
    buckets = make_buckets(max_len, num=max(args.buckets, 1))
    print(
        f"{args.dataset}: {len(train[2])} train / {len(test[2])} test sequences, {n_features} "
        f"channels, lengths {int(min(train[1].min(), test[1].min()))}-{max_len}, {n_classes} classes; "
        f"time buckets {buckets}"
    )

    runs = []
    seeds = list(range(args.seed, args.seed + args.seeds))
    for seed in seeds:
        epochs = make_epochs(train, args, seed, buckets)
        for kind in kinds:
            tmodel, jmodel = init_models(kind, seed, n_features, n_classes, max_len, args, ckpt_dir)
            with torch.no_grad():
                init_diff = float(
                    np.abs(
                        np.asarray(jmodel(test[0], test[1]))
                        - tmodel(*(torch.from_numpy(a) for a in test[:2])).numpy()
                    ).max()
                )
            results = {}
            for fw in fws:
                with progress(
                    range(args.epochs),
                    desc=f"seed {seed} {NAMES[kind]:>11} {fw:>5}",
                    disable=args.no_progress,
                ) as bar:
                    trainer = train_jax if fw == "jax" else train_torch
                    results[fw] = trainer(
                        jmodel if fw == "jax" else tmodel, epochs, test, args, bar
                    )
            diff = agree = None
            if len(fws) == 2:
                jl, tl = results["jax"]["logits"], results["torch"]["logits"]  # (N_test, C)
                diff = float(np.abs(jl - tl).max())
                agree = float(np.mean(jl.argmax(-1) == tl.argmax(-1)))
            for fw, res in results.items():
                run = {
                    "model": kind,
                    "framework": fw,
                    "seed": seed,
                    "init_logit_diff": init_diff,
                    **{k: v for k, v in res.items() if k != "logits"},
                }
                if diff is not None:
                    run["logit_diff"], run["prediction_agreement"] = diff, agree
                runs.append(run)
            line = ", ".join(f"{fw} acc {results[fw]['test_acc']:.3f}" for fw in fws)
            print(
                f"seed {seed} {NAMES[kind]}: {line}"
                + (
                    f", max |logit diff| {diff:.2e} (at init {init_diff:.1e}), same prediction on "
                    f"{100 * agree:.1f}% of test cases"
                    if diff is not None
                    else ""
                )
            )

    headers, rows = summarize(runs, kinds, fws)
    table = markdown_table(headers, rows)
    spread = (
        "mean ± std over seeds " + ", ".join(map(str, seeds))
        if len(seeds) > 1
        else f"seed {seeds[0]}"
    )
    caption = (
        f"{args.dataset} test accuracy ({spread}); {args.epochs} epochs, hidden {args.hidden_size}, "
        f"batch {args.batch_size}; train s includes JAX compilation; steps/s excludes "
        f"compiling steps; logit diff and same prediction: worst over seeds, on the test set; "
        f"{os.cpu_count()} CPU cores"
    )
    print()
    print(caption)
    print(table)
    goal = [k for k in ("lstm", "gru") if k in kinds]
    goal_met = None
    if goal and not args.tiny:
        worst = min(r["test_acc"] for r in runs if r["model"] in goal)
        goal_met = worst >= 0.97
        print(
            f"\ngoal (LSTM/GRU test accuracy >= 0.97 in every run): "
            f"{'met' if goal_met else 'NOT met'}, lowest {worst:.3f}"
        )

    (out / "table.md").write_text(caption + "\n\n" + table + "\n")
    png = plot(runs, kinds, fws, seeds[0], out / "curves.png")
    write_json(
        out / "results.json",
        {
            "example": "classify",
            "dataset": args.dataset,
            "config": vars(args),
            "buckets": buckets,
            "n_train": len(train[2]),
            "n_test": len(test[2]),
            "classes": n_classes,
            "table": {"caption": caption, "headers": headers, "rows": rows},
            "goal_met": goal_met,
            "runs": runs,
            "machine": machine_info(),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
    )
    print(f"\nwrote {out / 'table.md'}, {out / 'results.json'}, {png}")


if __name__ == "__main__":
    run_main(main)
