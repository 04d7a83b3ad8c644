"""A character language model trained on the Python standard library's own source.

Text: the ``.py`` files next to ``os.py`` (always present wherever Python runs). The
training text is a fixed, sorted selection of those files; one other file is held out
for the test perplexity. Characters outside the training vocabulary map to one ``<unk>``
id.

Model: ``CharLM`` (embedding -> LSTM/GRU/RNN -> Linear over the vocabulary). Training is
truncated backpropagation through time on random windows of ``--seq-len`` characters,
batch-first (N, T): ``fit`` with ``language_model_loss`` from ``jaxseq.train`` (one jitted
optax step) and from ``torchseq.train`` (``torch.optim``). Both start from the same
checkpoint and see the same windows.

It reports the held-out perplexity (``evaluate_language_model``: exp of the mean
cross-entropy per character, over the whole file read in consecutive chunks with the
state carried across them) and a
sampled continuation of a prompt (the state carried step by step). JAX samples with
single-step cells (``jaxseq.nn.LSTMCell``/``GRUCell``/``RNNCell``, built from the trained
layer with ``from_layer``) in one jitted step function, ``CellDecoder``; PyTorch feeds its
layer one character at a time.

Outputs in ``--out``: ``table.md``, ``results.json``, ``loss.png`` and ``samples.txt``.

    python examples/charlm.py
    python examples/charlm.py --framework both --steps 3000 --hidden-size 512
"""

from __future__ import annotations

import os
from pathlib import Path

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
        __doc__.split("\n\n")[0], epochs=1, hidden_size=128, framework="jax", out="runs/charlm"
    )
    p.add_argument("--steps", type=int, default=300, help="training steps per epoch")
    p.add_argument("--cell", choices=("rnn", "lstm", "gru"), default="lstm")
    p.add_argument("--embed-dim", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=64, help="characters per training window (T)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    p.add_argument("--clip-norm", type=float, default=1.0)
    p.add_argument(
        "--train-chars",
        type=int,
        default=400_000,
        help="characters of standard-library source used for training",
    )
    p.add_argument(
        "--eval-chars",
        type=int,
        default=20_000,
        help="characters of the held-out file scored for perplexity",
    )
    p.add_argument(
        "--source-dir",
        default=None,
        help="folder of .py files to train on (default: the standard library)",
    )
    p.add_argument(
        "--heldout",
        default="textwrap.py",
        help="file in the source folder held out for the perplexity",
    )
    p.add_argument("--prompt", default="def ", help="prompt for the sampled continuation")
    p.add_argument("--sample-chars", type=int, default=300)
    p.add_argument("--temperature", type=float, default=0.8)
    return p


TINY = {
    "steps": 3,
    "hidden_size": 16,
    "embed_dim": 8,
    "seq_len": 16,
    "batch_size": 4,
    "train_chars": 20_000,
    "eval_chars": 500,
    "sample_chars": 40,
}


# --------------------------------------------------------------------------- data


def load_text(args) -> tuple[str, str, str]:
    """(training text, held-out text, source folder) from the standard library's .py files."""
    src = Path(args.source_dir) if args.source_dir else Path(os.path.dirname(os.__file__))
    if not src.is_dir():
        raise ExampleError(f"source folder '{src}' does not exist")
    heldout = src / args.heldout
    if not heldout.is_file():
        raise ExampleError(f"held-out file '{heldout}' not found (choose one with --heldout)")
    files = sorted(p for p in src.glob("*.py") if p.name != heldout.name)
    if not files:
        raise ExampleError(f"no .py files in '{src}'")
    parts, n = [], 0
    for p in files:  # sorted, so the same text on every run
        if n >= args.train_chars:
            break
        text = p.read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        n += len(text)
    train = "".join(parts)[: args.train_chars]
    test = heldout.read_text(encoding="utf-8", errors="replace")[: args.eval_chars]
    return train, test, str(src)


class Vocab:
    """Characters of the training text -> ids; id 0 is ``<unk>``."""

    def __init__(self, text: str):
        self.chars = ["<unk>"] + sorted(set(text))
        self.index = {c: i for i, c in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        return np.array([self.index.get(c, 0) for c in text], dtype=np.int32)

    def decode(self, ids) -> str:
        return "".join(self.chars[i] if i > 0 else "?" for i in ids)


def make_batches(ids: np.ndarray, args, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Random windows: inputs (N, T) int32 and next-character targets (N, T) int32."""
    rng = np.random.default_rng(seed)
    T = args.seq_len
    if len(ids) < T + 2:
        raise ExampleError(f"training text has {len(ids)} characters; need more than --seq-len + 1")
    out = []
    for _ in range(args.steps * args.epochs):
        starts = rng.integers(0, len(ids) - T - 1, size=args.batch_size)
        idx = starts.reshape(-1, 1) + np.arange(T + 1).reshape(1, -1)  # (N, T+1)
        window = ids[idx]
        out.append((window[:, :-1], window[:, 1:]))
    return out


# --------------------------------------------------------------------------- sampling


def sample(fw, model, prompt_ids, n, temperature, rng):
    """Feed the prompt, then draw ``n`` ids: JAX through the model's layers as cells
    (:class:`CellDecoder`, one jitted step), torch feeding its layer one id at a time."""
    if fw == "jax":
        return CellDecoder(model).sample(prompt_ids, n, temperature, rng)
    import torch

    model.eval()
    hx, out = None, []
    with torch.no_grad():
        for i in prompt_ids[:-1]:
            _, hx = model(torch.tensor([[int(i)]]), hx)
        cur = int(prompt_ids[-1])
        for _ in range(n):
            logits, hx = model(torch.tensor([[cur]]), hx)
            cur = _draw(logits[0, -1].double().numpy(), temperature, rng)
            out.append(cur)
    return out


class CellDecoder:
    """Step-by-step decoding of a ``jaxseq.models.CharLM`` with ``jaxseq.nn`` cells.

    Each layer of the model's ``rnn`` becomes a cell (``LSTMCell.from_layer(rnn, k)``,
    likewise ``GRUCell`` / ``RNNCell``); with the model's ``embedding`` and ``head`` they
    make one jitted function ``step(tokens (N,), hx) -> (logits (N, V), hx)``. The state
    ``hx`` has the model's layout, h (L, N, H) or (h, c) for the LSTM, so a state from
    the scanned model continues here and back. The cells are copies: build the decoder
    after training. Dropout is not applied (the model in eval mode).
    """

    def __init__(self, model):
        import jax
        import jax.numpy as jnp
        from flax import nnx

        import jaxseq.nn

        rnn = model.rnn
        if rnn.bidirectional:
            raise ExampleError("a bidirectional layer cannot decode step by step")
        cell_cls = {"rnn": jaxseq.nn.RNNCell, "lstm": jaxseq.nn.LSTMCell, "gru": jaxseq.nn.GRUCell}
        cells = [cell_cls[rnn.kind].from_layer(rnn, k) for k in range(rnn.num_layers)]
        self.is_lstm = rnn.kind == "lstm"
        self.shape = (rnn.num_layers, rnn.hidden_size)
        self.dtype = jnp.dtype(rnn.param_dtype)
        parts = nnx.Dict(embedding=model.embedding, cells=nnx.List(cells), head=model.head)
        graphdef, self.state = nnx.split(parts)
        is_lstm = self.is_lstm

        @jax.jit
        def step(state, tokens, hx):
            p = nnx.merge(graphdef, state)
            x = p["embedding"](tokens)  # (N, E)
            new = []
            for k, cell in enumerate(p["cells"]):
                s = cell(x, (hx[0][k], hx[1][k]) if is_lstm else hx[k])  # (N, H) each
                x = s[0] if is_lstm else s
                new.append(s)
            if is_lstm:
                hx = (jnp.stack([h for h, _ in new]), jnp.stack([c for _, c in new]))
            else:
                hx = jnp.stack(new)  # (L, N, H)
            return p["head"](x), hx

        self._step = step

    def initial_state(self, batch: int = 1):
        """Zeros in the model's layout: (L, N, H), or a pair of them for the LSTM."""
        import jax.numpy as jnp

        L, H = self.shape
        h = jnp.zeros((L, batch, H), self.dtype)
        return (h, h) if self.is_lstm else h

    def step(self, tokens, hx=None):
        """Logits (N, V) for the next token after ``tokens`` (N,) int, and the new state."""
        tokens = np.asarray(tokens, dtype=np.int32).reshape(-1)
        if hx is None:
            hx = self.initial_state(len(tokens))
        return self._step(self.state, tokens, hx)

    def sample(self, prompt_ids, n, temperature, rng):
        """Feed the prompt, then draw ``n`` ids (greedy when temperature is 0)."""
        if len(prompt_ids) == 0:
            raise ExampleError("--prompt must not be empty")
        hx = self.initial_state(1)
        for i in prompt_ids:
            logits, hx = self.step([int(i)], hx)
        out = []
        for j in range(n):
            cur = _draw(np.asarray(logits[0], dtype=np.float64), temperature, rng)
            out.append(cur)
            if j + 1 < n:
                logits, hx = self.step([cur], hx)
        return out


def _draw(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    """Sample an id from softmax(logits / temperature) (greedy when temperature is 0)."""
    if temperature <= 0:
        return int(np.argmax(logits))
    z = logits / temperature
    p = np.exp(z - z.max())
    return int(rng.choice(len(p), p=p / p.sum()))


# --------------------------------------------------------------------------- main


def summarize(results, vocab, scored, n_steps, args):
    """The caption, headers and rows of the table (the uniform model as a reference)."""
    headers = [
        "model",
        "framework",
        "held-out perplexity",
        "bits/char",
        "train perplexity (last 20 steps)",
        "train s",
        "steps/s",
    ]
    rows = [
        [
            f"{args.cell.upper()} {args.hidden_size}",
            r["framework"],
            f"{r['test_perplexity']:.2f}",
            f"{r['test_nll_per_char'] / np.log(2):.2f}",
            f"{r['train_perplexity_last']:.2f}",
            f"{r['train_s']:.1f}",
            f"{r['steps_per_s']:.1f}",
        ]
        for r in results
    ]
    rows.append(
        ["uniform over vocabulary", "-", f"{len(vocab):.2f}", f"{np.log2(len(vocab)):.2f}"]
        + ["-"] * 3
    )
    caption = (
        f"character LM on standard-library source: {n_steps} steps of {args.batch_size} x "
        f"{args.seq_len} characters; perplexity on {scored:,} characters of {args.heldout}; "
        f"train s includes JAX compilation, steps/s excludes the first step; {cores_note()}"
    )
    return caption, headers, rows


def plot(results, path):
    """The training loss of each framework."""
    fig, axes = new_figure(1, 1, size=(7.0, 4.0))
    for r in results:
        axes[0, 0].plot(
            r["losses"], label=r["framework"], linestyle="--" if r["framework"] == "torch" else "-"
        )
    axes[0, 0].set(
        xlabel="step", ylabel="train cross-entropy (nats/char)", title="character LM training loss"
    )
    axes[0, 0].legend()
    return save_figure(fig, path)


# --------------------------------------------------------------------------- main


def main(argv=None):
    args = parse_args(build_parser(), argv, TINY)
    configure_devices(args)  # before any JAX use: --devices, cluster flags
    if min(args.steps, args.epochs, args.seq_len, args.batch_size) < 1:
        raise ExampleError("--steps, --epochs, --seq-len and --batch-size must be >= 1")
    if not args.prompt:
        raise ExampleError("--prompt must not be empty")
    out = prepare_out(args.out)
    ckpt_dir = prepare_out(out / "checkpoints")
    train_text, test_text, src = load_text(args)
    configure_torch(args.torch_threads)
    vocab = Vocab(train_text)
    train_ids, test_ids = vocab.encode(train_text), vocab.encode(test_text)
    print(
        f"text: {len(train_ids):,} training characters from {src}, held-out {args.heldout} "
        f"({len(test_ids):,} characters, {100 * np.mean(test_ids == 0):.2f}% <unk>), "
        f"vocabulary {len(vocab)}"
    )
    batches = make_batches(train_ids, args, args.seed)  # every epoch's windows, in order
    eval_chunk = min(256, len(test_ids) - 1)
    scored = (len(test_ids) - 1) // eval_chunk * eval_chunk  # characters predicted

    import torchseq.models

    kw = {"embed_dim": args.embed_dim, "hidden_size": args.hidden_size, "cell": args.cell}
    models = twin_models(
        lambda: torchseq.models.CharLM(len(vocab), **kw),
        args.seed,
        ckpt_dir / "charlm-init.safetensors",
    )
    results = []
    for fw in frameworks(args.framework):
        model = models[fw]
        history = Adam(fw, lr=args.lr, clip_norm=args.clip_norm, loss="language_model_loss").fit(
            model, batches, desc=f"{args.cell.upper()} {fw}", quiet=args.no_progress
        )
        test = train_lib(fw).evaluate_language_model(model, test_ids, eval_chunk)
        rng = np.random.default_rng(args.seed)
        ids = sample(fw, model, vocab.encode(args.prompt), args.sample_chars, args.temperature, rng)
        steady = history.step_seconds[1:]  # without the first step (JAX compiles there)
        results.append(
            {
                "framework": fw,
                "losses": list(history),
                "train_s": history.train_seconds,
                "steps_per_s": len(steady) / sum(steady) if steady else float("nan"),
                "test_nll_per_char": test["loss"],
                "test_perplexity": test["perplexity"],
                "train_perplexity_last": float(np.exp(np.mean(history[-20:]))),
                "sample": args.prompt + vocab.decode(ids),
            }
        )

    caption, headers, rows = summarize(results, vocab, scored, len(batches), args)
    show_table(caption, headers, rows)
    for r in results:
        print(f"\n--- sample ({r['framework']}, temperature {args.temperature}) ---\n{r['sample']}")
    png = plot(results, out / "loss.png")
    samples = out / "samples.txt"
    samples.write_text(
        "\n\n".join(f"--- {r['framework']} ---\n{r['sample']}" for r in results) + "\n"
    )
    payload = {"config": vars(args), "vocab_size": len(vocab), "train_chars": len(train_ids)}
    payload.update(heldout_chars_scored=scored, results=results)
    save_results(out, "charlm", caption, headers, rows, payload, also=[png, samples])


if __name__ == "__main__":
    run_main(main)
