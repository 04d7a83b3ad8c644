"""Shared helpers of the example programs: CLI, output folder, errors, twin models,
training, tables, plots.

Every example is a single file that reads top to bottom; what they all need (the common
flags, a checked output folder, a clear one-line error instead of a traceback, a torch
model and its JAX twin from one checkpoint, Adam through the libraries' own loops
``jaxseq.train`` / ``torchseq.train``, a Markdown table, JSON and PNG output, a progress
bar) lives here so the examples stay about their model and data.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# Examples run on CPU and must not grab every core of a shared machine or spam logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")


class ExampleError(Exception):
    """A user-facing error (missing data, unwritable output): printed as one line, exit 2."""


def base_parser(
    description: str,
    *,
    epochs: int,
    hidden_size: int,
    framework: str = "both",
    out: str = "runs/example",
) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` with the flags every example shares.

    ``--epochs``, ``--hidden-size``, ``--framework jax|torch|both``, ``--seed``, ``--out``,
    ``--tiny`` (a few steps on little data, for tests), ``--no-progress``, ``--torch-threads``,
    and ``--devices`` (JAX CPU devices, default one per core) with the cluster flags
    ``--coordinator``, ``--num-processes``, ``--process-id`` (see :func:`configure_devices`).
    """
    p = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--epochs", type=int, default=epochs, help="training epochs")
    p.add_argument("--hidden-size", type=int, default=hidden_size, help="hidden units H")
    p.add_argument(
        "--framework",
        choices=("jax", "torch", "both"),
        default=framework,
        help="which implementation(s) to train",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (data order, init)")
    p.add_argument("--out", default=out, help="output folder for the table, JSON and PNG")
    p.add_argument(
        "--tiny",
        action="store_true",
        help="a few steps on a little data (smoke test; numbers are meaningless)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="PyTorch intra-op threads (for these small models more threads mostly "
        "spin against JAX's thread pool on a small CPU)",
    )
    g = p.add_argument_group(
        "JAX devices and processes",
        "JAX trains data-parallel over every device (mesh axis 'batch'; exact: the same "
        "losses as one device up to float32 rounding). Under `python -m jaxseq.launch "
        "--nproc N` the three cluster flags come from the environment.",
    )
    g.add_argument(
        "--devices",
        type=int,
        default=default_devices(),
        help="JAX CPU devices per process (jax_num_cpu_devices; default one per core, at "
        f"most {MAX_DEFAULT_DEVICES}); 1 = a single device",
    )
    g.add_argument("--coordinator", default=None, help="HOST:PORT of process 0 (clusters)")
    g.add_argument("--num-processes", type=int, default=None, help="number of processes")
    g.add_argument("--process-id", type=int, default=None, help="this process's index")
    return p


def add_checkpoint_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--checkpoint-dir DIR`` and ``--save-every N``: training checkpoints (one folder
    per run under DIR); the same command started again resumes from the newest valid one
    (see :meth:`Adam.fit`)."""
    p.add_argument(
        "--checkpoint-dir",
        default=None,
        help="save training checkpoints here as the runs train; started again, the same "
        "command resumes each run from its newest valid checkpoint",
    )
    p.add_argument(
        "--save-every",
        type=int,
        default=None,
        help="with --checkpoint-dir: save every N steps (default: at the end of every epoch)",
    )
    return p


MAX_DEFAULT_DEVICES = 8  # more tiny shards of these small batches only add overhead


def default_devices() -> int:
    """One JAX CPU device per core (``os.cpu_count()``), at most ``MAX_DEFAULT_DEVICES``."""
    return max(1, min(os.cpu_count() or 1, MAX_DEFAULT_DEVICES))


# What configure_devices set up: read by Adam (mesh, this process's rows), frameworks,
# machine_info and cores_note.
PARALLEL: dict[str, Any] = {
    "devices": 1,
    "local_devices": 1,
    "processes": 1,
    "process_id": 0,
    "mesh": None,
    "torch_threads": None,
}


def configure_devices(args: argparse.Namespace) -> dict[str, Any]:
    """Set up JAX from ``--devices`` and the cluster flags; call it before any JAX use.

    ``jax.config.update("jax_num_cpu_devices", args.devices)``; with ``--coordinator`` /
    ``--num-processes`` / ``--process-id`` (or the environment of ``python -m
    jaxseq.launch``) joins the processes (``jaxseq.train.initialize_distributed``). With
    more than one device in all, JAX training (:class:`Adam`) runs data-parallel over
    ``Mesh(jax.devices(), ("batch",))``, each process feeding its own rows of every
    batch. On processes other than 0, stdout is silenced and ``args.out`` points to a
    temporary folder (removed at exit): only process 0 prints and writes. Returns
    :data:`PARALLEL`.
    """
    if args.devices < 1:
        raise ExampleError(f"--devices must be >= 1, got {args.devices}")
    import jax

    try:
        jax.config.update("jax_num_cpu_devices", args.devices)
    except RuntimeError as e:  # pragma: no cover - JAX was already in use
        raise ExampleError(f"--devices must be set before JAX starts: {e}") from None
    launched = args.coordinator or args.num_processes or os.environ.get("JAXSEQ_NUM_PROCESSES")
    process_id, processes = 0, 1
    if launched:
        from jaxseq.train import initialize_distributed

        process_id, processes = initialize_distributed(
            args.coordinator, args.num_processes, args.process_id
        )
    devices = jax.devices()
    mesh = None
    if len(devices) > 1:
        from jax.sharding import Mesh

        mesh = Mesh(np.array(devices), ("batch",))
    PARALLEL.update(
        devices=len(devices),
        local_devices=jax.local_device_count(),
        processes=processes,
        process_id=process_id,
        mesh=mesh,
    )
    if process_id != 0:  # only process 0 prints and writes its outputs
        import atexit
        import shutil
        import tempfile

        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
        scratch = tempfile.mkdtemp(prefix=f"jaxseq-example-p{process_id}-")
        atexit.register(shutil.rmtree, scratch, ignore_errors=True)
        args.out = scratch
        args.no_progress = True
    return PARALLEL


def process_rows(n: int) -> np.ndarray:
    """The row indices of a global batch of ``n`` rows that this process feeds."""
    return np.array_split(np.arange(n), PARALLEL["processes"])[PARALLEL["process_id"]]


def local_batches(batches: Any) -> Any:
    """``batches`` (a sequence, or ``epoch -> sequence``) cut to this process's rows of
    every batch array (unchanged with one process)."""
    if PARALLEL["processes"] == 1:
        return batches

    def cut(epoch_batches: Iterable) -> list:
        out = []
        for batch in epoch_batches:
            idx = process_rows(len(batch[0]))
            out.append(tuple(np.asarray(a)[idx] for a in batch))
        return out

    if callable(batches):
        return lambda epoch: cut(batches(epoch))
    return cut(batches)


def cores_note() -> str:
    """How many cores each framework used, for table captions: torch's intra-op threads
    against JAX's devices (and processes)."""
    threads = PARALLEL["torch_threads"]
    torch_part = f"torch {threads} thread{'s' if threads != 1 else ''}" if threads else "torch -"
    d, procs = PARALLEL["devices"], PARALLEL["processes"]
    jax_part = f"JAX {d} device{'s' if d != 1 else ''}"
    if procs > 1:
        jax_part += f" in {procs} processes"
    if d > 1:
        jax_part += " (data parallel)"
    return f"{torch_part}, {jax_part}; {os.cpu_count()} CPU cores"


def configure_torch(threads: int) -> None:
    """Set PyTorch's intra-op thread count (``torch.set_num_threads``)."""
    import torch

    torch.set_num_threads(max(int(threads), 1))
    PARALLEL["torch_threads"] = torch.get_num_threads()


def frameworks(choice: str) -> list[str]:
    """``"both"`` -> ``["jax", "torch"]``, else ``[choice]``.

    On processes other than 0 of a multi-process run, ``"both"`` is ``["jax"]``: torch
    would only repeat process 0's work there, and those processes report nothing."""
    if choice == "both":
        return ["jax"] if PARALLEL["process_id"] != 0 else ["jax", "torch"]
    return [choice]


def parse_list(value: str, allowed: Sequence[str], flag: str) -> list[str]:
    """``"lstm,gru"`` -> ``["lstm", "gru"]``; ExampleError unless a non-empty subset of ``allowed``."""
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items or any(v not in allowed for v in items):
        raise ExampleError(
            f"{flag} must be a comma-separated subset of {','.join(allowed)}, got {value!r}"
        )
    return items


# The two training libraries are twins: the same function names and arguments.
TRAIN_MODULES = {"jax": "jaxseq.train", "torch": "torchseq.train"}


def train_lib(fw: str) -> Any:
    """The training module of framework ``fw``: ``jaxseq.train`` or ``torchseq.train``."""
    import importlib

    return importlib.import_module(TRAIN_MODULES[fw])


def twin_models(make_torch_model: Callable[[], Any], seed: int, checkpoint: Path) -> dict:
    """``{"torch": model, "jax": twin}`` starting from the same checkpoint.

    Seeds torch with ``seed`` and builds the torch model, writes its initial weights to
    ``checkpoint`` (safetensors, torch names; ``torchseq.checkpoint.save``; the file
    ``jaxseq.interop.load`` reads too), and builds the JAX twin with the same configuration
    and a copy of the same weights (``jaxseq.interop.from_torch``, dropout stream
    ``nnx.Rngs(seed)``).
    """
    import torch
    from flax import nnx

    import jaxseq.interop
    import torchseq.checkpoint

    torch.manual_seed(seed)
    tmodel = make_torch_model()
    torchseq.checkpoint.save(tmodel, checkpoint)
    jmodel = jaxseq.interop.from_torch(tmodel, rngs=nnx.Rngs(seed))
    return {"torch": tmodel, "jax": jmodel}


class Adam:
    """Adam training in framework ``fw`` through its library loop: ``jaxseq.train`` (one
    jitted optax step) or ``torchseq.train`` (``torch.optim.Adam``); the same update.

    ``loss`` names the loss in both libraries (``"classification_loss"``,
    ``"regression_loss"``, ``"language_model_loss"``); ``clip_norm`` clips gradients as
    ``clip_grad_norm_``; ``decay_steps`` decays the learning rate to 0 along a cosine over
    that many steps (``optax.cosine_decay_schedule``, ``LambdaLR(cosine_decay)``).

    JAX compiles its step on the first :meth:`fit` and reuses it for every later model of
    the same architecture (a fresh initialisation: no recompilation); each torch fit gets
    a fresh ``torch.optim.Adam``. After :func:`configure_devices` with more than one JAX
    device, the JAX step is data-parallel over the mesh and each process feeds its own
    rows of every batch (the same updates as one device, up to float32 rounding).
    """

    def __init__(
        self,
        fw: str,
        *,
        lr: float,
        loss: str = "classification_loss",
        clip_norm: float | None = None,
        decay_steps: int | None = None,
    ):
        self.fw, self.lib, self.lr = fw, train_lib(fw), lr
        self.loss_fn = getattr(self.lib, loss)
        self.clip_norm, self.decay_steps = clip_norm, decay_steps
        self.step: Any = None  # JAX: the compiled TrainStep, made on the first fit

    def fit(
        self,
        model: Any,
        batches: Any,
        *,
        epochs: int = 1,
        desc: str = "",
        quiet: bool = False,
        eval_fn: Callable[[Any], dict] | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        save_every: int | None = None,
        config: dict | None = None,
    ) -> Any:
        """Train ``model`` in place with a progress bar over the steps; return the
        ``History`` (step losses, per-epoch records, timings). The loop is the library's:
        ``torchseq.train.fit``, or ``TrainStep.fit`` (what ``jaxseq.train.fit`` runs).

        With ``checkpoint_dir``, the loop saves training checkpoints there (every
        ``save_every`` steps, or at every epoch's end) and first resumes from the newest
        valid one, printing ``resumed from step S (epoch E)``; ``config`` is stored in
        them."""
        total = epochs * len(batches(0)) if callable(batches) else epochs * len(batches)
        if checkpoint_dir is not None:
            say_resume(checkpoint_dir, desc)
        with progress(range(total), desc=desc, disable=quiet) as bar:
            kw = {
                "epochs": epochs,
                "eval_fn": eval_fn,
                "checkpoint_dir": checkpoint_dir,
                "save_every": save_every,
                "config": config,
                "callback": lambda epoch, step, loss: bar.update(1),
                "on_epoch_end": lambda epoch, record: bar.set_postfix(
                    {k: f"{v:.3f}" for k, v in record.items()}, refresh=False
                ),
            }
            if self.fw == "jax":  # data parallel when configure_devices made a mesh
                return self._jax_step(model).fit(local_batches(batches), **kw)
            import torch

            opt = torch.optim.Adam(model.parameters(), lr=self.lr)
            sched = None
            if self.decay_steps:
                sched = torch.optim.lr_scheduler.LambdaLR(
                    opt, self.lib.cosine_decay(self.decay_steps)
                )
            return self.lib.fit(
                model,
                batches,
                opt,
                clip_norm=self.clip_norm,
                loss_fn=self.loss_fn,
                scheduler=sched,
                **kw,
            )

    def _jax_step(self, model: Any) -> Any:
        """The compiled train step, bound to ``model`` with a fresh optimizer state."""
        model.train()
        if self.step is not None:
            self.step.reset(model)
            return self.step
        import optax

        lr = optax.cosine_decay_schedule(self.lr, self.decay_steps) if self.decay_steps else self.lr
        tx = optax.adam(lr)
        if self.clip_norm is not None:
            tx = optax.chain(self.lib.clip_by_global_norm_torch(self.clip_norm), tx)
        self.step = self.lib.make_train_step(
            model, tx, self.loss_fn, sync_model=False, mesh=PARALLEL["mesh"]
        )
        return self.step


def say_resume(checkpoint_dir: str | os.PathLike, desc: str = "") -> None:
    """Print ``resumed from step S (epoch E)`` if ``checkpoint_dir`` holds a valid training
    checkpoint (the one the library's ``fit`` resumes from; it warns about skipped files)."""
    import warnings

    from seqfile.training_state import load_latest

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state = load_latest(checkpoint_dir)
    if state is not None:
        where = f"{' '.join(desc.split())}: " if desc.strip() else ""
        print(f"{where}resumed from step {state.step} (epoch {state.epoch})", flush=True)


def prepare_out(out: str | os.PathLike) -> Path:
    """Create the output folder and check that it is writable; ExampleError if not."""
    path = Path(out)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise ExampleError(f"cannot write to output folder '{out}': {reason}") from None
    return path


def run_main(main: Callable[[list[str] | None], Any], argv: list[str] | None = None) -> None:
    """Run ``main(argv)``; an :class:`ExampleError` or a failed write ends in one line, exit 2."""
    prog = Path(sys.argv[0]).name
    try:
        main(argv)
    except ExampleError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # a write that failed after the folder check (disk full, ...)
        print(f"{prog}: error: {e.strerror or e}: {e.filename or ''}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)


def progress(
    iterable: Iterable, *, total: int | None = None, desc: str = "", disable: bool = False
):
    """A tqdm progress bar on stderr (plain iteration when tqdm is missing or disabled)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is in the examples extra
        return iterable
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        disable=disable,
        leave=False,
        dynamic_ncols=True,
        mininterval=0.5,
        file=sys.stderr,
    )


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown (GitHub) table; numbers already formatted as strings by the caller."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    fmt = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([fmt(cells[0]), sep] + [fmt(r) for r in cells[1:]])


def show_table(caption: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Print the caption and the Markdown table; return the table."""
    table = markdown_table(headers, rows)
    print()
    print(caption)
    print(table)
    return table


def mean_spread(values: Sequence[float], fmt: str = "{:.3f}") -> str:
    """``"0.978"`` for one value, ``"0.978 ± 0.003"`` (mean ± sample std) for several."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 1:
        return fmt.format(v[0])
    return f"{fmt.format(v.mean())} ± {fmt.format(v.std(ddof=1))}"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (NumPy scalars/arrays converted, NaN/inf -> null)."""
    path.write_text(json.dumps(_jsonable(obj), indent=2) + "\n")
    return path


def save_results(
    out: Path,
    example: str,
    caption: str,
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    results: dict[str, Any],
    also: Sequence[Path] = (),
) -> None:
    """Write ``OUT/table.md`` (caption and table) and ``OUT/results.json`` (``example``,
    ``results``, the table, the machine and the time); print what was written."""
    table = markdown_table(headers, rows)
    (out / "table.md").write_text(caption + "\n\n" + table + "\n")
    write_json(
        out / "results.json",
        {
            "example": example,
            **results,
            "table": {"caption": caption, "headers": headers, "rows": rows},
            "machine": machine_info(),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
    )
    files = [out / "table.md", out / "results.json", *also]
    print(f"\nwrote {', '.join(map(str, files))}")


def new_figure(nrows: int = 1, ncols: int = 2, size: tuple[float, float] = (11.0, 4.0)):
    """A matplotlib figure on the non-interactive Agg backend: ``(fig, axes)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, figsize=size, squeeze=False)
    return fig, axes


def save_figure(fig: Any, path: Path) -> Path:
    """Save and close ``fig`` as PNG."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds``."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self.start


def machine_info() -> dict[str, Any]:
    """Where the numbers were measured: CPU count, JAX devices and processes, torch
    threads, library versions."""
    import platform

    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "devices": PARALLEL["devices"],
        "processes": PARALLEL["processes"],
        "torch_threads": PARALLEL["torch_threads"],
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    for name in ("jax", "flax", "optax", "torch", "numpy"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:  # pragma: no cover
            pass
    return info


def parse_args(
    parser: argparse.ArgumentParser, argv: list[str] | None, tiny: dict[str, Any]
) -> argparse.Namespace:
    """Parse ``argv``; with ``--tiny`` the values in ``tiny`` replace the defaults.

    Flags given explicitly on the command line still win over the tiny defaults.
    """
    pre, _ = parser.parse_known_args(argv)
    if pre.tiny:
        parser.set_defaults(**tiny)
    return parser.parse_args(argv)


def aeon_data_dir() -> Path:
    """The folder of data sets bundled with ``aeon`` (read offline; nothing is downloaded)."""
    import importlib.util

    spec = importlib.util.find_spec("aeon")  # locate without importing (aeon imports slowly)
    if spec is None or not spec.submodule_search_locations:
        raise ExampleError(
            "the examples need aeon for their data sets: pip install 'jaxseq[examples]'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


def load_ts_classification(
    name: str, data_dir: str | None = None
) -> dict[str, tuple[list[np.ndarray], np.ndarray]]:
    """Load ``{split: (sequences, labels)}`` of a UEA/UCR ``.ts`` data set, without network.

    Looks for ``DATA_DIR/NAME/NAME_TRAIN.ts`` and ``..._TEST.ts`` (DATA_DIR defaults to
    aeon's bundled data). Sequences are float32 arrays (T_i, C); labels as in the file.
    """
    root = Path(data_dir) if data_dir else aeon_data_dir()
    paths = {split: root / name / f"{name}_{split.upper()}.ts" for split in ("train", "test")}
    for path in paths.values():
        if not path.is_file():
            avail = (
                sorted(p.parent.name for p in root.glob("*/*_TRAIN.ts")) if root.is_dir() else []
            )
            hint = f" (available in {root}: {', '.join(avail)})" if avail else ""
            raise ExampleError(
                f"dataset '{name}' not found: no file {path}; the examples never "
                f"download data{hint}"
            )
    from aeon.datasets import load_from_ts_file

    out = {}
    for split, path in paths.items():
        try:
            X, y = load_from_ts_file(str(path))
        except Exception as e:  # a malformed file: say which one
            raise ExampleError(f"could not read {path}: {e}") from None
        seqs = [np.asarray(x, dtype=np.float32).T for x in X]  # (C, T_i) -> (T_i, C)
        out[split] = (seqs, np.asarray(y))
    return out
