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
    python examples/classify.py --models gru --framework jax --export gru.jax

``--export PATH`` writes each trained JAX model as a serialized ``jax.export.Exported``
(``jaxseq.export``) that runs where only jax and numpy are installed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from _common import (
    PARALLEL,
    Adam,
    ExampleError,
    add_checkpoint_args,
    base_parser,
    configure_devices,
    configure_torch,
    cores_note,
    frameworks,
    load_ts_classification,
    mean_spread,
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
DEFAULT_MODELS = ("rnn", "lstm", "gru", "ff")  # --models min_gru,min_lstm adds the others
NAMES = {
    "rnn": "RNN",
    "lstm": "LSTM",
    "gru": "GRU",
    "min_gru": "minGRU",
    "min_lstm": "minLSTM",
    "ff": "feedforward",
}


class _DefaultOnce(argparse.ArgumentDefaultsHelpFormatter):
    """``(default: ...)`` after each help, except where the help already states its default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser():
    p = base_parser(
        __doc__.split("\n\n")[0], epochs=40, hidden_size=64, framework="both", out="runs/classify"
    )
    p.formatter_class = _DefaultOnce  # --data-dir, --devices, --save-every say theirs in words
    p.add_argument(
        "--models",
        default=",".join(DEFAULT_MODELS),
        help=f"comma-separated subset of {','.join(MODELS)}",
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
    p.add_argument(
        "--export",
        metavar="PATH",
        default=None,
        help="after training, write the JAX model to PATH as a serialized jax.export.Exported "
        "(jaxseq.export; symbolic batch size): f(x (N, T, C) float32 standardized with the "
        "training mean and std stored in results.json, lengths (N,) int32) -> logits (N, "
        "classes); several models go to PATH-<model>-seed<seed>",
    )
    return add_checkpoint_args(p)  # --checkpoint-dir DIR: resumable runs


TINY = {"epochs": 1, "hidden_size": 8, "models": "gru,ff", "batch_size": 17}  # 68 = 4 x 17 cases


# --------------------------------------------------------------------------- data


def load_data(raw, args):
    """Standardized, padded NumPy arrays ``{"train": ..., "test": ...}``, each X (N, T, C)
    float32, lengths (N,) int32, y (N,) int32; and the number of classes, the longest
    length and the time buckets. Prints a summary."""
    from jaxseq.data import make_buckets, pad_sequences

    (tr_seqs, tr_labels), (te_seqs, te_labels) = raw["train"], raw["test"]
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
    data = {}
    for split, seqs, labels in (("train", tr_seqs, tr_labels), ("test", te_seqs, te_labels)):
        X, lengths = pad_sequences([(s - mu) / sd for s in seqs], max_len=max_len, dtype=np.float32)
        y = np.array([index[c] for c in labels.tolist()], dtype=np.int32)
        data[split] = (X, lengths, y)  # (N, T, C), (N,), (N,)
    data["standardize"] = {"mean": mu, "std": sd}  # (C,) each: what a served model needs
    buckets = make_buckets(max_len, num=max(args.buckets, 1))
    (X, lengths, _), (_, te_lengths, _) = data["train"], data["test"]
    print(
        f"{args.dataset}: {len(tr_seqs)} train / {len(te_seqs)} test sequences, {X.shape[2]} "
        f"channels, lengths {int(min(lengths.min(), te_lengths.min()))}-{max_len}, "
        f"{len(classes)} classes; time buckets {buckets}"
    )
    return data, len(classes), max_len, buckets


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


# --------------------------------------------------------------------------- models


def build_model(kind, n_features, n_classes, max_len, args):
    """The torch model of ``kind`` (its JAX twin comes from the same checkpoint)."""
    import torchseq.models

    if kind == "ff":
        return torchseq.models.FeedForwardClassifier(
            n_features, n_classes, max_len=max_len, hidden_size=args.hidden_size
        )
    return torchseq.models.SequenceClassifier(
        n_features, n_classes, hidden_size=args.hidden_size, cell=kind
    )


def train(fw, model, epochs, test, args, desc, ckpt=None):
    """Adam with a cosine-decayed learning rate and clipping, test accuracy after every
    epoch (``jaxseq.train`` / ``torchseq.train``); curves, timings and test logits.
    With ``ckpt`` (a folder), saves training checkpoints there and resumes from them."""
    lib = train_lib(fw)
    total = sum(len(e) for e in epochs)
    h = Adam(fw, lr=args.lr, clip_norm=args.clip_norm, decay_steps=total).fit(
        model,
        lambda epoch: epochs[epoch],
        epochs=len(epochs),
        eval_fn=lambda m: {"test_acc": lib.evaluate(m, [test])["accuracy"]},
        desc=desc,
        quiet=args.no_progress,
        checkpoint_dir=ckpt,
        save_every=args.save_every,
        config=vars(args),
    )
    return {
        "curves": {
            "loss": [r["train_loss"] for r in h.epochs],
            "test_acc": [r["test_acc"] for r in h.epochs],
        },
        "train_s": h.train_seconds,
        "steps": len(h),
        "compiles": h.compiles,
        "steps_per_s": h.steps_per_second,
        "test_acc": h.epochs[-1]["test_acc"],
        "logits": lib.predict(model, *test[:2]),  # (N_test, C)
    }


def compare(kind, seed, results, init_diff):
    """One run record per framework, with the JAX-vs-torch logit difference; print it."""
    diff = agree = None
    if len(results) == 2:
        jl, tl = results["jax"]["logits"], results["torch"]["logits"]  # (N_test, C)
        diff = float(np.abs(jl - tl).max())
        agree = float(np.mean(jl.argmax(-1) == tl.argmax(-1)))
    runs = []
    for fw, res in results.items():
        run = {"model": kind, "framework": fw, "seed": seed, "init_logit_diff": init_diff}
        run.update({k: v for k, v in res.items() if k != "logits"})
        if diff is not None:
            run["logit_diff"], run["prediction_agreement"] = diff, agree
        runs.append(run)
    line = ", ".join(f"{fw} acc {res['test_acc']:.3f}" for fw, res in results.items())
    if diff is not None:
        line += (
            f", max |logit diff| {diff:.2e} (at init {init_diff:.1e}), same prediction on "
            f"{100 * agree:.1f}% of test cases"
        )
    print(f"seed {seed} {NAMES[kind]}: {line}")
    return runs


def export_path(path, kind, seed, several):
    """``PATH``, or ``PATH`` with ``-<kind>-seed<seed>`` before its suffix when several
    models are exported (``model.jax`` -> ``model-gru-seed0.jax``)."""
    path = Path(path)
    return path.with_name(f"{path.stem}-{kind}-seed{seed}{path.suffix}") if several else path


def export_model(model, kind, n_features, max_len, path):
    """Write the trained JAX ``model`` to ``path`` (``jaxseq.export``): the batch size is
    symbolic, and so is T for the recurrent models; the feedforward baseline reads a fixed
    T = max_len (pad the inputs with zeros)."""
    import jaxseq.export

    shape = ("b", max_len, n_features) if kind == "ff" else ("b", "t", n_features)
    jaxseq.export.save(jaxseq.export.export(model, shape), path)
    print(f"exported the trained JAX {NAMES[kind]} to {path}")
    return str(path)


# --------------------------------------------------------------------------- report


def summarize(runs, kinds, fws, seeds, args):
    """The caption and one table row per (model, framework), aggregated over seeds."""
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
    spread = (
        "mean ± std over seeds " + ", ".join(map(str, seeds))
        if len(seeds) > 1
        else f"seed {seeds[0]}"
    )
    caption = (
        f"{args.dataset} test accuracy ({spread}); {args.epochs} epochs, hidden "
        f"{args.hidden_size}, batch {args.batch_size}; train s includes JAX compilation; "
        f"steps/s excludes compiling steps; logit diff and same prediction: worst over "
        f"seeds, on the test set; {cores_note()}"
    )
    return caption, headers, rows


def check_goal(runs, kinds, args):
    """Whether LSTM and GRU reach 0.97 test accuracy in every run (None if not measured)."""
    goal = [k for k in ("lstm", "gru") if k in kinds]
    if not goal or args.tiny:
        return None
    worst = min(r["test_acc"] for r in runs if r["model"] in goal)
    print(
        f"\ngoal (LSTM/GRU test accuracy >= 0.97 in every run): "
        f"{'met' if worst >= 0.97 else 'NOT met'}, lowest {worst:.3f}"
    )
    return worst >= 0.97


def plot(runs, seed, path):
    """Training loss and test accuracy per epoch, of every model and framework."""
    fig, axes = new_figure(1, 2)
    colors = {"rnn": "tab:red", "lstm": "tab:blue", "gru": "tab:green", "ff": "tab:gray"}
    colors.update({"min_gru": "tab:olive", "min_lstm": "tab:cyan"})
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
    configure_devices(args)  # before any JAX use: --devices, cluster flags
    kinds = parse_list(args.models, MODELS, "--models")
    if args.epochs < 1 or args.seeds < 1 or args.batch_size < 1:
        raise ExampleError("--epochs, --seeds and --batch-size must be >= 1")
    fws = frameworks(args.framework)
    if args.export and "jax" not in fws:
        raise ExampleError("--export writes the JAX model: use it with --framework jax or both")
    out = prepare_out(args.out)  # fail early, before any training
    ckpt_dir = prepare_out(out / "checkpoints")
    raw = load_ts_classification(args.dataset, args.data_dir)  # ExampleError if missing
    configure_torch(args.torch_threads)
    data, n_classes, max_len, buckets = load_data(raw, args)
    train_set, test = data["train"], data["test"]
    n_features = train_set[0].shape[2]

    runs, exported = [], []
    seeds = list(range(args.seed, args.seed + args.seeds))
    for seed in seeds:
        epochs = make_epochs(train_set, args, seed, buckets)  # the same batches for both
        for kind in kinds:
            models = twin_models(
                lambda: build_model(kind, n_features, n_classes, max_len, args),  # noqa: B023
                seed,
                ckpt_dir / f"{kind}-seed{seed}-init.safetensors",
            )
            jl, tl = (train_lib(fw).predict(models[fw], *test[:2]) for fw in ("jax", "torch"))
            trained = {
                fw: train(
                    fw,
                    models[fw],
                    epochs,
                    test,
                    args,
                    f"seed {seed} {NAMES[kind]:>11} {fw:>5}",
                    ckpt=args.checkpoint_dir and f"{args.checkpoint_dir}/{kind}-seed{seed}-{fw}",
                )
                for fw in fws
            }
            runs += compare(kind, seed, trained, init_diff=float(np.abs(jl - tl).max()))
            if args.export and PARALLEL["process_id"] == 0:  # one writer
                path = export_path(args.export, kind, seed, len(kinds) * len(seeds) > 1)
                exported.append(export_model(models["jax"], kind, n_features, max_len, path))

    caption, headers, rows = summarize(runs, kinds, fws, seeds, args)
    show_table(caption, headers, rows)
    goal_met = check_goal(runs, kinds, args)
    png = plot(runs, seeds[0], out / "curves.png")
    results = {
        "dataset": args.dataset,
        "config": vars(args),
        "buckets": buckets,
        "n_train": len(train_set[2]),
        "n_test": len(test[2]),
        "classes": n_classes,
        "goal_met": goal_met,
        "runs": runs,
        "export": {"paths": exported, **data["standardize"]} if exported else None,
    }
    save_results(out, "classify", caption, headers, rows, results, also=[png])


if __name__ == "__main__":
    run_main(main)
