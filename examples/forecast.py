"""Forecasting the Airline series: a recurrent forecaster against a feedforward window
model and naive baselines, in JAX and/or PyTorch.

Data: ``aeon.datasets.load_airline()``, monthly international airline passengers
1949-1960 (144 values, bundled with aeon, read offline). The last 24 months are the test
period. Every model sees a window of the previous W months and predicts the next one.

Preprocessing: take logs (the seasonal swing grows with the level), then express each
window relative to its own last value, so the models learn the *change* to the next
month and the upward trend does not push test inputs outside the range seen in training::

    window   w = log(y[t-W:t]) - log(y[t-1])       # (W,) 0 at the last step
    target   d = log(y[t])     - log(y[t-1])       # scalar
    forecast y_hat[t] = y[t-1] * exp(d_hat)

Models: ``Forecaster`` (an LSTM or GRU, then a Linear head on its final hidden state),
``FeedForwardClassifier`` with one output (an MLP on the flattened window), the naive
last value ``y[t-1]`` and the seasonal naive ``y[t-12]``. Both frameworks start from the
same checkpoint and train full-batch with Adam on the mean squared error.

Outputs in ``--out``: ``table.md``, ``results.json`` and ``forecast.png`` (one-step-ahead
forecasts against the truth, and the training curves).

    python examples/forecast.py
    python examples/forecast.py --cell gru --window 12 --epochs 1000 --framework jax
"""

from __future__ import annotations

import numpy as np
from _common import (
    Adam,
    ExampleError,
    aeon_data_dir,
    base_parser,
    configure_devices,
    configure_torch,
    cores_note,
    frameworks,
    new_figure,
    parse_args,
    prepare_out,
    run_main,
    save_figure,
    save_results,
    show_table,
    train_lib,
    twin_models,
)


def build_parser():
    p = base_parser(
        __doc__.split("\n\n")[0], epochs=400, hidden_size=32, framework="both", out="runs/forecast"
    )
    p.add_argument(
        "--cell",
        choices=("rnn", "lstm", "gru"),
        default="lstm",
        help="recurrent cell of the forecaster",
    )
    p.add_argument("--window", type=int, default=24, help="months of history per prediction (W)")
    p.add_argument("--test-months", type=int, default=24, help="length of the test period")
    p.add_argument("--lr", type=float, default=5e-3, help="Adam learning rate")
    p.add_argument(
        "--csv",
        default=None,
        help="forecast a univariate series from this CSV file (last column, one value "
        "per row, optional header) instead of Airline",
    )
    return p


TINY = {"epochs": 3, "hidden_size": 8}


# --------------------------------------------------------------------------- data


def load_series(args) -> tuple[np.ndarray, str]:
    """The series as float64 (T,) and its name."""
    if args.csv is None:
        path = aeon_data_dir() / "Airline"
        if not path.is_dir():
            raise ExampleError(
                f"the Airline series is not bundled with this aeon: no folder {path}; "
                "give a series with --csv (the examples never download data)"
            )
        from aeon.datasets import load_airline

        try:
            return np.asarray(load_airline(), dtype=np.float64), "Airline"
        except Exception as e:
            raise ExampleError(f"could not read the Airline series from {path}: {e}") from None
    try:
        with open(args.csv) as f:
            rows = [line.strip().split(",")[-1] for line in f if line.strip()]
    except OSError as e:
        raise ExampleError(f"cannot read series '{args.csv}': {e.strerror}") from None
    try:
        values = [float(v) for v in (rows[1:] if rows and not _is_float(rows[0]) else rows)]
    except ValueError as e:
        raise ExampleError(f"'{args.csv}' is not a one-value-per-row CSV: {e}") from None
    return np.asarray(values, dtype=np.float64), args.csv


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def make_windows(log_y: np.ndarray, W: int, targets: range):
    """Windows relative to their last value: x (N, W, 1) float32, d (N,) float32, t (N,)."""
    ts = np.array(list(targets))
    x = np.stack([log_y[t - W : t] - log_y[t - 1] for t in ts])  # (N, W)
    d = log_y[ts] - log_y[ts - 1]  # (N,)
    return x[:, :, None].astype(np.float32), d.astype(np.float32), ts


# --------------------------------------------------------------------------- models


def build_model(kind, args):
    """The torch model: the recurrent forecaster, or ("ff") an MLP regressor on the window
    (the feedforward "classifier" with one output). Its JAX twin comes from its checkpoint."""
    import torchseq.models

    if kind == "ff":
        return torchseq.models.FeedForwardClassifier(
            1, 1, max_len=args.window, hidden_size=args.hidden_size
        )
    return torchseq.models.Forecaster(1, hidden_size=args.hidden_size, cell=kind, horizon=1)


def baselines(y, t_test):
    """The naive forecasts: last value y[t-1] and seasonal naive y[t-12]."""
    return [
        {"model": "naive last value", "framework": "-", "forecast": y[t_test - 1], "train_s": 0.0},
        {
            "model": "seasonal naive (t-12)",
            "framework": "-",
            "forecast": y[t_test - 12],
            "train_s": 0.0,
        },
    ]


def scores(forecast, truth):
    """Test RMSE and MAPE (%) of a forecast."""
    err = forecast - truth
    return {
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mape_%": float(100 * np.mean(np.abs(err) / truth)),
    }


# --------------------------------------------------------------------------- report


def summarize(results, name, args):
    """The caption, headers and rows of the table."""
    headers = [
        "model",
        "framework",
        "test RMSE (passengers)" if name == "Airline" else "test RMSE",
        "test MAPE %",
        "train s",
    ]
    rows = [
        [
            r["model"],
            r["framework"],
            f"{r['rmse']:.1f}",
            f"{r['mape_%']:.2f}",
            f"{r['train_s']:.1f}",
        ]
        for r in results
    ]
    caption = (
        f"{name}: one-step-ahead forecasts of the last {args.test_months} values from windows "
        f"of {args.window}; {args.epochs} full-batch Adam steps, hidden {args.hidden_size}, "
        f"seed {args.seed}; {cores_note()}"
    )
    return caption, headers, rows


def plot(y, t_test, results, name, path):
    """One-step-ahead forecasts against the truth, and the training curves."""
    fig, axes = new_figure(1, 2, size=(12.0, 4.0))
    ax = axes[0, 0]
    ax.plot(np.arange(len(y)), y, color="black", linewidth=1.5, label="truth")
    palette = ("tab:gray", "tab:olive", "tab:blue", "tab:cyan", "tab:red", "tab:orange")
    for r, color in zip(results, palette, strict=False):
        r["color"] = color  # the same color in both panels
        ax.plot(
            t_test,
            r["forecast"],
            color=color,
            linestyle="--" if r["framework"] == "torch" else "-",
            label=f"{r['model']} ({r['framework']})" if r["framework"] != "-" else r["model"],
        )
    ax.axvline(t_test[0] - 0.5, color="gray", linestyle=":", linewidth=1)
    ax.set(
        xlabel="month",
        ylabel="value",
        title=f"{name}: forecast vs truth (test after the dotted line)",
    )
    ax.legend(fontsize=7)
    ax = axes[0, 1]
    for r in results:
        if "losses" in r:
            ax.plot(
                r["losses"],
                color=r["color"],
                linestyle="--" if r["framework"] == "torch" else "-",
                label=f"{r['model']} ({r['framework']})",
            )
    ax.set(xlabel="Adam step", ylabel="train MSE (log change)", yscale="log", title="training loss")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


# --------------------------------------------------------------------------- main


def main(argv=None):
    args = parse_args(build_parser(), argv, TINY)
    configure_devices(args)  # before any JAX use: --devices, cluster flags
    if args.epochs < 1 or args.window < 1 or args.test_months < 1:
        raise ExampleError("--epochs, --window and --test-months must be >= 1")
    out = prepare_out(args.out)
    ckpt_dir = prepare_out(out / "checkpoints")
    y, name = load_series(args)
    if not np.all(y > 0):
        raise ExampleError(f"series '{name}' must be positive (the models work on its logarithm)")
    if len(y) < args.window + args.test_months + 12:
        raise ExampleError(
            f"series '{name}' has {len(y)} values; need window + test months + 12 = "
            f"{args.window + args.test_months + 12}"
        )
    log_y = np.log(y)
    split = len(y) - args.test_months  # first test month
    x_tr, d_tr, _ = make_windows(log_y, args.window, range(args.window, split))
    x_te, _, t_te = make_windows(log_y, args.window, range(split, len(y)))
    print(
        f"{name}: {len(y)} values; {len(d_tr)} training windows of {args.window}, "
        f"test = last {args.test_months}"
    )

    results = baselines(y, t_te)
    configure_torch(args.torch_threads)
    for kind in (args.cell, "ff"):
        models = twin_models(
            lambda: build_model(kind, args),  # noqa: B023
            args.seed,
            ckpt_dir / f"{kind}-init.safetensors",
        )
        label = f"{args.cell.upper()} forecaster" if kind != "ff" else "feedforward window MLP"
        for fw in frameworks(args.framework):
            history = Adam(fw, lr=args.lr, loss="regression_loss").fit(
                models[fw],
                [(x_tr, d_tr)],  # full batch: one step per epoch
                epochs=args.epochs,
                desc=f"{label} {fw}",
                quiet=args.no_progress,
            )
            d_hat = train_lib(fw).predict(models[fw], x_te).reshape(-1).astype(np.float64)
            results.append(
                {
                    "model": label,
                    "framework": fw,
                    "forecast": y[t_te - 1] * np.exp(d_hat),  # back from the log change
                    "train_s": history.train_seconds,
                    "losses": list(history),
                }
            )

    for r in results:
        r.update(scores(r["forecast"], y[t_te]))
    caption, headers, rows = summarize(results, name, args)
    show_table(caption, headers, rows)
    png = plot(y, t_te, results, name, out / "forecast.png")
    payload = {"series": name, "config": vars(args), "test_index": t_te, "truth": y[t_te]}
    save_results(out, "forecast", caption, headers, rows, {**payload, "results": results}, [png])


if __name__ == "__main__":
    run_main(main)
