"""A character language model trained on the Python standard library's own source.

Text: the ``.py`` files next to ``os.py`` (always present wherever Python runs). The
training text is a fixed, sorted selection of those files; one other file is held out
for the test perplexity. Characters outside the training vocabulary map to one ``<unk>``
id.

Model: ``CharLM`` (embedding -> LSTM/GRU/RNN -> Linear over the vocabulary). Training is
truncated backpropagation through time on random windows of ``--seq-len`` characters,
batch-first (N, T). JAX runs one jitted step (``jaxseq.train``); PyTorch the same loop
with ``torch.optim``. Both start from the same checkpoint and see the same windows.

It reports the held-out perplexity (exp of the mean cross-entropy per character, over
the whole file read in consecutive chunks with the state carried across them) and a
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
import time
from pathlib import Path

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


# --------------------------------------------------------------------------- models


def init_models(vocab_size, args, ckpt_dir):
    import torch
    from flax import nnx

    import jaxseq.interop
    import jaxseq.models
    import torchseq.checkpoint
    import torchseq.models

    kw = {"embed_dim": args.embed_dim, "hidden_size": args.hidden_size, "cell": args.cell}
    torch.manual_seed(args.seed)
    tmodel = torchseq.models.CharLM(vocab_size, **kw)
    path = ckpt_dir / "charlm-init.safetensors"
    torchseq.checkpoint.save(tmodel, path)
    jmodel = jaxseq.models.CharLM(vocab_size, **kw, rngs=nnx.Rngs(args.seed))
    jaxseq.interop.load(jmodel, path)
    return tmodel, jmodel


class JaxLM:
    """Training, scoring and sampling of the JAX model, each one jitted function."""

    def __init__(self, model, args):
        import jax
        import jax.numpy as jnp
        import optax
        from flax import nnx

        from jaxseq.train import clip_by_global_norm_torch, make_train_step

        def lm_loss(m, x, y):
            logits, _ = m(x)  # (N, T, V)
            return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

        self.model = model
        tx = optax.chain(clip_by_global_norm_torch(args.clip_norm), optax.adam(args.lr))
        self.step = make_train_step(model, tx, loss_fn=lm_loss)
        graphdef = nnx.graphdef(model)

        @jax.jit
        def chunk_nll(state, x, y, hx):  # summed NLL of a (1, T) chunk, state carried
            logits, hx = nnx.merge(graphdef, state)(x, hx)
            return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, y)), hx

        @jax.jit
        def next_logits(state, x, hx):  # x (1, 1) -> logits (V,)
            logits, hx = nnx.merge(graphdef, state)(x, hx)
            return logits[0, -1], hx

        self.chunk_nll, self.next_logits = chunk_nll, next_logits

    def train_step(self, x, y) -> float:
        return float(self.step(x, y))

    def nll(self, ids, chunk):
        from flax import nnx

        state, total, hx = nnx.state(self.model), 0.0, None
        for s in range(0, len(ids) - 1 - chunk + 1, chunk):
            x, y = ids[s : s + chunk].reshape(1, -1), ids[s + 1 : s + chunk + 1].reshape(1, -1)
            nll, hx = self.chunk_nll(state, x, y, hx)
            total += float(nll)
        return total

    def sample(self, prompt_ids, n, temperature, rng):
        """Sample with the model's layers as cells (:class:`CellDecoder`), one jitted step."""
        return CellDecoder(self.model).sample(prompt_ids, n, temperature, rng)

    def sample_scanned(self, prompt_ids, n, temperature, rng):
        """The same, feeding the scanned layer one character at a time (T = 1)."""
        from flax import nnx

        state, hx, out = nnx.state(self.model), None, []
        for i in prompt_ids[:-1]:
            _, hx = self.next_logits(state, np.array([[i]], dtype=np.int32), hx)
        cur = int(prompt_ids[-1])
        for _ in range(n):
            logits, hx = self.next_logits(state, np.array([[cur]], dtype=np.int32), hx)
            cur = _draw(np.asarray(logits, dtype=np.float64), temperature, rng)
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


class TorchLM:
    """The same three operations in PyTorch."""

    def __init__(self, model, args):
        import torch

        self.torch, self.model, self.args = torch, model, args
        self.opt = torch.optim.Adam(model.parameters(), lr=args.lr)

    def train_step(self, x, y) -> float:
        torch, F = self.torch, self.torch.nn.functional
        self.model.train()
        self.opt.zero_grad()
        logits, _ = self.model(torch.from_numpy(x).long())  # (N, T, V)
        loss = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), torch.from_numpy(y).long().reshape(-1)
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.args.clip_norm)
        self.opt.step()
        return float(loss.detach())

    def nll(self, ids, chunk):
        torch, F = self.torch, self.torch.nn.functional
        self.model.eval()
        total, hx = 0.0, None
        with torch.no_grad():
            for s in range(0, len(ids) - 1 - chunk + 1, chunk):
                x = torch.from_numpy(ids[s : s + chunk].reshape(1, -1)).long()
                y = torch.from_numpy(ids[s + 1 : s + chunk + 1]).long()
                logits, hx = self.model(x, hx)
                total += float(F.cross_entropy(logits[0], y, reduction="sum"))
        return total

    def sample(self, prompt_ids, n, temperature, rng):
        torch = self.torch
        self.model.eval()
        hx, out = None, []
        with torch.no_grad():
            for i in prompt_ids[:-1]:
                _, hx = self.model(torch.tensor([[int(i)]]), hx)
            cur = int(prompt_ids[-1])
            for _ in range(n):
                logits, hx = self.model(torch.tensor([[cur]]), hx)
                cur = _draw(logits[0, -1].double().numpy(), temperature, rng)
                out.append(cur)
        return out


def _draw(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    """Sample an id from softmax(logits / temperature) (greedy when temperature is 0)."""
    if temperature <= 0:
        return int(np.argmax(logits))
    z = logits / temperature
    p = np.exp(z - z.max())
    return int(rng.choice(len(p), p=p / p.sum()))


# --------------------------------------------------------------------------- main


def main(argv=None):
    args = parse_args(build_parser(), argv, TINY)
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
    unk = float(np.mean(test_ids == 0))
    print(
        f"text: {len(train_ids):,} training characters from {src}, held-out {args.heldout} "
        f"({len(test_ids):,} characters, {100 * unk:.2f}% <unk>), vocabulary {len(vocab)}"
    )
    batches = make_batches(train_ids, args, args.seed)
    eval_chunk = min(256, len(test_ids) - 1)
    scored = (len(test_ids) - 1) // eval_chunk * eval_chunk  # characters predicted

    tmodel, jmodel = init_models(len(vocab), args, ckpt_dir)
    results = []
    for fw in frameworks(args.framework):
        lm = JaxLM(jmodel, args) if fw == "jax" else TorchLM(tmodel, args)
        losses, times = [], []
        with progress(batches, desc=f"{args.cell.upper()} {fw}", disable=args.no_progress) as bar:
            for i, (x, y) in enumerate(bar):
                t0 = time.perf_counter()
                losses.append(lm.train_step(x, y))  # a float: waits for the step
                times.append(time.perf_counter() - t0)
                if i % 20 == 0:
                    bar.set_postfix(loss=f"{losses[-1]:.3f}")
        train_s = float(np.sum(times))
        # steps/s without the first step (JAX compiles there)
        steady = len(times) - 1, float(np.sum(times[1:]))
        nll = lm.nll(test_ids, eval_chunk)
        rng = np.random.default_rng(args.seed)
        sample = vocab.decode(
            lm.sample(vocab.encode(args.prompt), args.sample_chars, args.temperature, rng)
        )
        results.append(
            {
                "framework": fw,
                "losses": losses,
                "train_s": train_s,
                "steps_per_s": steady[0] / steady[1] if steady[0] else float("nan"),
                "test_nll_per_char": nll / scored,
                "test_perplexity": float(np.exp(nll / scored)),
                "train_perplexity_last": float(np.exp(np.mean(losses[-20:]))),
                "sample": args.prompt + sample,
            }
        )

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
        [
            "uniform over vocabulary",
            "-",
            f"{len(vocab):.2f}",
            f"{np.log2(len(vocab)):.2f}",
            "-",
            "-",
            "-",
        ]
    )
    table = markdown_table(headers, rows)
    caption = (
        f"character LM on standard-library source: {len(batches)} steps of {args.batch_size} x "
        f"{args.seq_len} characters; perplexity on {scored:,} characters of {args.heldout}; "
        f"train s includes JAX compilation, steps/s excludes the first step"
    )
    print()
    print(caption)
    print(table)
    for r in results:
        print(f"\n--- sample ({r['framework']}, temperature {args.temperature}) ---\n{r['sample']}")

    fig, axes = new_figure(1, 1, size=(7.0, 4.0))
    for r in results:
        axes[0, 0].plot(
            r["losses"], label=r["framework"], linestyle="--" if r["framework"] == "torch" else "-"
        )
    axes[0, 0].set(
        xlabel="step", ylabel="train cross-entropy (nats/char)", title="character LM training loss"
    )
    axes[0, 0].legend()
    png = save_figure(fig, out / "loss.png")
    (out / "table.md").write_text(caption + "\n\n" + table + "\n")
    (out / "samples.txt").write_text(
        "\n\n".join(f"--- {r['framework']} ---\n{r['sample']}" for r in results) + "\n"
    )
    write_json(
        out / "results.json",
        {
            "example": "charlm",
            "config": vars(args),
            "vocab_size": len(vocab),
            "train_chars": len(train_ids),
            "heldout_chars_scored": scored,
            "table": {"caption": caption, "headers": headers, "rows": rows},
            "results": results,
            "machine": machine_info(),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
    )
    print(f"\nwrote {out / 'table.md'}, {out / 'results.json'}, {png}, {out / 'samples.txt'}")


if __name__ == "__main__":
    run_main(main)
