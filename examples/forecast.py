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

import time

import numpy as np
from _common import (
    ExampleError,
    aeon_data_dir,
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


def init_models(kind, args, ckpt_dir):
    """A torch and a JAX model with the same initial weights (through one checkpoint)."""
    import torch
    from flax import nnx

    import jaxseq.interop
    import jaxseq.models
    import torchseq.checkpoint
    import torchseq.models

    def build(zoo, **kw):
        if kind == "ff":  # an MLP regressor: the feedforward "classifier" with one output
            return zoo.FeedForwardClassifier(
                1, 1, max_len=args.window, hidden_size=args.hidden_size, **kw
            )
        return zoo.Forecaster(1, hidden_size=args.hidden_size, cell=args.cell, horizon=1, **kw)

    torch.manual_seed(args.seed)
    tmodel = build(torchseq.models)
    path = ckpt_dir / f"{kind}-init.safetensors"
    torchseq.checkpoint.save(tmodel, path)
    jmodel = build(jaxseq.models, rngs=nnx.Rngs(args.seed))
    jaxseq.interop.load(jmodel, path)
    return tmodel, jmodel


def train_jax(model, x, d, x_test, args, bar):
    """Full-batch Adam on the MSE with one jitted step; return losses, time, test output."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from jaxseq.train import make_train_step

    def mse(m, x, d):
        pred = m(x).reshape(-1)  # (N, 1, 1) or (N, 1) -> (N,)
        return jnp.mean((pred - d) ** 2)

    step = make_train_step(model, optax.adam(args.lr), loss_fn=mse)
    losses, t0 = [], time.perf_counter()
    for _ in range(args.epochs):
        losses.append(float(step(x, d)))
        bar.update(1)
    train_s = time.perf_counter() - t0
    graphdef = nnx.graphdef(model)
    pred = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x).reshape(-1))(nnx.state(model), x_test)
    return losses, train_s, np.asarray(pred, dtype=np.float64)


def train_torch(model, x, d, x_test, args, bar):
    import torch

    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    x, d = torch.from_numpy(x), torch.from_numpy(d)
    losses, t0 = [], time.perf_counter()
    model.train()
    for _ in range(args.epochs):
        opt.zero_grad()
        loss = torch.mean((model(x).reshape(-1) - d) ** 2)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        bar.update(1)
    train_s = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(x_test)).reshape(-1).numpy()
    return losses, train_s, pred.astype(np.float64)


# --------------------------------------------------------------------------- main


def main(argv=None):
    args = parse_args(build_parser(), argv, TINY)
    if args.epochs < 1 or args.window < 1 or args.test_months < 1:
        raise ExampleError("--epochs, --window and --test-months must be >= 1")
    out = prepare_out(args.out)
    ckpt_dir = prepare_out(out / "checkpoints")
    y, name = load_series(args)
    if not np.all(y > 0):
        raise ExampleError(f"series '{name}' must be positive (the models work on its logarithm)")
    n_test = args.test_months
    if len(y) < args.window + n_test + 12:
        raise ExampleError(
            f"series '{name}' has {len(y)} values; need window + test months + 12 = "
            f"{args.window + n_test + 12}"
        )
    log_y = np.log(y)
    split = len(y) - n_test  # first test month
    x_tr, d_tr, _ = make_windows(log_y, args.window, range(args.window, split))
    x_te, d_te, t_te = make_windows(log_y, args.window, range(split, len(y)))
    print(
        f"{name}: {len(y)} values; {len(d_tr)} training windows of {args.window}, "
        f"test = last {n_test}"
    )

    truth = y[t_te]

    def scores(forecast):
        err = forecast - truth
        return {
            "rmse": float(np.sqrt(np.mean(err**2))),
            "mape_%": float(100 * np.mean(np.abs(err) / truth)),
        }

    results = [
        {"model": "naive last value", "framework": "-", "forecast": y[t_te - 1], "train_s": 0.0},
        {
            "model": "seasonal naive (t-12)",
            "framework": "-",
            "forecast": y[t_te - 12],
            "train_s": 0.0,
        },
    ]
    fws = frameworks(args.framework)
    configure_torch(args.torch_threads)
    for kind in (args.cell, "ff"):
        tmodel, jmodel = init_models(kind, args, ckpt_dir)
        label = f"{args.cell.upper()} forecaster" if kind != "ff" else "feedforward window MLP"
        for fw in fws:
            with progress(
                range(args.epochs), desc=f"{label} {fw}", disable=args.no_progress
            ) as bar:
                trainer = train_jax if fw == "jax" else train_torch
                losses, train_s, d_hat = trainer(
                    jmodel if fw == "jax" else tmodel, x_tr, d_tr, x_te, args, bar
                )
            results.append(
                {
                    "model": label,
                    "framework": fw,
                    "forecast": y[t_te - 1] * np.exp(d_hat),
                    "train_s": train_s,
                    "losses": losses,
                }
            )

    for r in results:
        r.update(scores(r["forecast"]))
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
    table = markdown_table(headers, rows)
    caption = (
        f"{name}: one-step-ahead forecasts of the last {n_test} values from windows of "
        f"{args.window}; {args.epochs} full-batch Adam steps, hidden {args.hidden_size}, "
        f"seed {args.seed}"
    )
    print()
    print(caption)
    print(table)

    fig, axes = new_figure(1, 2, size=(12.0, 4.0))
    ax = axes[0, 0]
    ax.plot(np.arange(len(y)), y, color="black", linewidth=1.5, label="truth")
    palette = ("tab:gray", "tab:olive", "tab:blue", "tab:cyan", "tab:red", "tab:orange")
    for r, color in zip(results, palette, strict=False):
        r["color"] = color  # the same color in both panels
        ax.plot(
            t_te,
            r["forecast"],
            color=color,
            linestyle="--" if r["framework"] == "torch" else "-",
            label=f"{r['model']} ({r['framework']})" if r["framework"] != "-" else r["model"],
        )
    ax.axvline(split - 0.5, color="gray", linestyle=":", linewidth=1)
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
    png = save_figure(fig, out / "forecast.png")
    (out / "table.md").write_text(caption + "\n\n" + table + "\n")
    write_json(
        out / "results.json",
        {
            "example": "forecast",
            "series": name,
            "config": vars(args),
            "test_index": t_te,
            "truth": truth,
            "table": {"caption": caption, "headers": headers, "rows": rows},
            "results": results,
            "machine": machine_info(),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
    )
    print(f"\nwrote {out / 'table.md'}, {out / 'results.json'}, {png}")


if __name__ == "__main__":
    run_main(main)
