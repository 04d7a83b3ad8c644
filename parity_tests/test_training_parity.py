"""Training-curve parity: torchseq + torch.optim against jaxseq + optax, step by step.

Same initial checkpoint (written by torchseq, read by jaxseq through safetensors), the
same batches in the same order (``batch_order`` with one seed), the same optimizer and
gradient clipping: SGD with momentum, Adam, AdamW with weight decay, each with
``clip_grad_norm_`` / ``clip_by_global_norm_torch``. Dropout is off, so the two runs are
the same computation up to rounding. Loss curves and final parameters must agree to a
relative 1e-9 over 200 steps in float64 and to a relative 1e-4 over 50 steps in float32.

Run with ``-s`` to see the worst deviation of each optimizer and dtype (printed at the
end of the module).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

import jaxseq.data
import jaxseq.interop
import torchseq.checkpoint
import torchseq.data
import torchseq.train
from jaxseq import models as jm
from jaxseq import train as jt
from torchseq import models as tm

N, T, I, C = 8, 8, 3, 3
N_DATA = 32
CLIP = 0.5

# One small architecture per cell, between them covering bidirectional and proj_size
# (2-layer stacks are trained in the dropout test).
ARCHS = {
    "rnn": dict(cell="rnn", hidden_size=4, bidirectional=True),
    "lstm": dict(cell="lstm", hidden_size=5, proj_size=3),
    "gru": dict(cell="gru", hidden_size=4),
}
# name -> (torch optimizer factory, the optax transformation it must equal)
OPTIMIZERS = {
    "sgd": (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), optax.sgd(0.1, momentum=0.9)),
    "adam": (
        lambda p: torch.optim.Adam(p, lr=1e-2, betas=(0.9, 0.999), eps=1e-8),
        optax.adam(1e-2, b1=0.9, b2=0.999, eps=1e-8),
    ),
    "adamw": (
        lambda p: torch.optim.AdamW(p, lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1),
        optax.adamw(1e-2, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.1),
    ),
}
DTYPES = {"float64": (200, 1e-9), "float32": (50, 1e-4)}
NP_DTYPES = {"float64": np.float64, "float32": np.float32}
TORCH_DTYPES = {"float64": torch.float64, "float32": torch.float32}

WORST: dict[tuple[str, str], float] = {}


def make_dataset(seed: int = 0):
    """A learnable task: the class is the bucketed mean of feature 0 over the valid steps."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, T + 1, size=N_DATA).astype(np.int32)
    X = rng.normal(size=(N_DATA, T, I)) * jaxseq.data.lengths_to_mask(lengths, T)[:, :, None]
    mean0 = X[:, :, 0].sum(1) / lengths
    y = np.digitize(mean0, [-0.3, 0.3]).astype(np.int64)
    return X, lengths, y


def make_batches(steps: int, np_dtype) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``steps`` batches: epoch e shuffles the data with seed e (the same in both frameworks)."""
    X, lengths, y = make_dataset()
    X = X.astype(np_dtype)
    out: list = []
    epoch = 0
    while len(out) < steps:
        out.extend(jaxseq.data.batches(X, lengths, y, N, seed=epoch, drop_last=True))
        epoch += 1
    return out[:steps]


def rel_dev(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max |a| (a is the torch reference)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-30))


def switch_tx(txs: list[optax.GradientTransformation]) -> optax.GradientTransformation:
    """Run ``txs[i]`` with ``i`` a traced int32 held in the state (``(i, states)``).

    Only so that one compiled train step serves all optimizers of a (cell, dtype): each
    branch is the unchanged optax transformation, under ``lax.switch``.
    """

    def init(params):
        return jnp.zeros((), jnp.int32), tuple(tx.init(params) for tx in txs)

    def update(grads, state, params=None):
        i, states = state

        def branch(k):
            def run(operands):
                g, sts, p = operands
                u, st = txs[k].update(g, sts[k], p)
                return u, sts[:k] + (st,) + sts[k + 1 :]

            return run

        updates, states = jax.lax.switch(
            i, [branch(k) for k in range(len(txs))], (grads, states, params)
        )
        return updates, (i, states)

    return optax.GradientTransformation(init, update)


@pytest.fixture(scope="module")
def jax_steps():
    """(cell, dtype) -> a jaxseq model and its train step over all optimizers (compiled once)."""
    cache = {}

    def get(cell: str, dtype: str):
        if (cell, dtype) not in cache:
            model = jm.SequenceClassifier(
                I, C, **ARCHS[cell], param_dtype=NP_DTYPES[dtype], rngs=nnx.Rngs(1)
            )
            txs = [
                optax.chain(jt.clip_by_global_norm_torch(CLIP), tx) for _, tx in OPTIMIZERS.values()
            ]
            cache[cell, dtype] = jt.make_train_step(model, switch_tx(txs), sync_model=False)
        return cache[cell, dtype]

    return get


@pytest.fixture(scope="module", autouse=True)
def torch_single_thread():
    """Tiny models: torch's intra-op threads only add overhead (and contention)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def to_torch_batches(batches):
    return [
        (torch.from_numpy(x), torch.from_numpy(lb.astype(np.int64)), torch.from_numpy(yb))
        for x, lb, yb in batches
    ]


@pytest.fixture(scope="module")
def report():
    yield WORST
    if WORST:
        print("\nworst relative deviation (loss curve and final parameters), torch vs jax:")
        for (opt, dtype), dev in sorted(WORST.items()):
            print(
                f"  {opt:6s} {dtype}: {dev:.3e}  ({DTYPES[dtype][0]} steps, tolerance {DTYPES[dtype][1]:g})"
            )


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("opt", list(OPTIMIZERS))
@pytest.mark.parametrize("cell", list(ARCHS))
def test_training_curves_match(cell, opt, dtype, tmp_path, jax_steps, report):
    steps, tol = DTYPES[dtype]
    batches = make_batches(steps, NP_DTYPES[dtype])
    # torch: the reference run, from a seeded init that is also the shared checkpoint.
    torch.manual_seed(0)
    tmodel = tm.SequenceClassifier(I, C, **ARCHS[cell]).to(TORCH_DTYPES[dtype])
    init = {k: v.detach().clone().numpy() for k, v in tmodel.state_dict().items()}
    path = tmp_path / "init.safetensors"
    torchseq.checkpoint.save(tmodel, path)
    make_torch_opt, _ = OPTIMIZERS[opt]
    t_losses = np.array(
        torchseq.train.fit(
            tmodel, to_torch_batches(batches), make_torch_opt(tmodel.parameters()), clip_norm=CLIP
        )
    )
    # jax: load the same checkpoint, select the same optimizer, same batches in order.
    step = jax_steps(cell, dtype)
    jaxseq.interop.load(step.model, path)
    step.reset()
    step.opt_state = (jnp.asarray(list(OPTIMIZERS).index(opt), jnp.int32), step.opt_state[1])
    j_losses = np.asarray(jnp.stack([step(*b) for b in batches]))
    step.sync()

    assert len(t_losses) == len(j_losses) == steps
    # The run must actually train (otherwise matching curves would prove little).
    assert t_losses[-10:].mean() < 0.9 * t_losses[:10].mean()
    loss_dev = rel_dev(t_losses, j_losses)
    t_sd = {k: v.detach().numpy() for k, v in tmodel.state_dict().items()}
    j_sd = jaxseq.interop.to_torch_state_dict(step.model)
    assert sorted(t_sd) == sorted(j_sd)
    assert j_sd["head.weight"].dtype == NP_DTYPES[dtype]
    param_dev = max(rel_dev(t_sd[k], j_sd[k]) for k in t_sd)
    # The parameters moved: a match of untouched parameters would prove nothing.
    assert max(rel_dev(init[k], t_sd[k]) for k in t_sd) > 1e-2
    dev = max(loss_dev, param_dev)
    report[opt, dtype] = max(report.get((opt, dtype), 0.0), dev)
    print(f"{cell} {opt} {dtype}: loss curve {loss_dev:.2e}, params {param_dev:.2e}")
    assert loss_dev < tol, f"loss curves differ by {loss_dev:.3e} (relative) > {tol:g}"
    assert param_dev < tol, f"final parameters differ by {param_dev:.3e} (relative) > {tol:g}"


def test_dropout_trains_and_eval_agrees(tmp_path):
    """With dropout on, both frameworks still train (their masks differ); eval() turns it
    off, and then the same weights give the same logits."""
    arch = dict(cell="lstm", hidden_size=4, num_layers=2)
    torch.manual_seed(0)
    tmodel = tm.SequenceClassifier(I, C, dropout=0.3, **arch).double()
    jmodel = jm.SequenceClassifier(
        I, C, dropout=0.3, **arch, param_dtype=np.float64, rngs=nnx.Rngs(1)
    )
    path = tmp_path / "init.safetensors"
    torchseq.checkpoint.save(tmodel, path)
    jaxseq.interop.load(jmodel, path)
    X, lengths, y = make_dataset()
    x_t, l_t = torch.from_numpy(X), torch.from_numpy(lengths.astype(np.int64))

    forward = nnx.jit(lambda m, x, lengths: m(x, lengths))  # one compile per mode

    def eval_losses():
        tmodel.eval()
        jmodel.eval()
        with torch.no_grad():
            lt = torch.nn.functional.cross_entropy(tmodel(x_t, l_t), torch.from_numpy(y)).item()
        lj = float(jt.cross_entropy(forward(jmodel, X, lengths), y))
        return lt, lj

    lt0, lj0 = eval_losses()
    assert abs(lt0 - lj0) < 1e-12 * abs(lt0)
    # Training mode: dropout masks differ between the frameworks and between calls.
    tmodel.train()
    jmodel.train()
    with torch.no_grad():
        train_t = tmodel(x_t, l_t).numpy()
    train_j = np.asarray(forward(jmodel, X, lengths))
    assert rel_dev(train_t, train_j) > 1e-3
    assert rel_dev(train_j, np.asarray(forward(jmodel, X, lengths))) > 1e-3

    batches = make_batches(80, np.float64)
    t_losses = torchseq.train.fit(
        tmodel,
        to_torch_batches(batches),
        torch.optim.Adam(tmodel.parameters(), lr=3e-2),
        clip_norm=CLIP,
    )
    j_losses = jt.fit(jmodel, batches, optax.adam(3e-2), clip_norm=CLIP)
    assert rel_dev(t_losses, j_losses) > 1e-3  # different masks, different curves
    lt1, lj1 = eval_losses()
    print(f"dropout 0.3: eval loss torch {lt0:.4f} -> {lt1:.4f}, jax {lj0:.4f} -> {lj1:.4f}")
    assert lt1 < 0.85 * lt0 and lj1 < 0.85 * lj0, (lt0, lt1, lj0, lj1)
    # eval() makes them agree again: the torch-trained weights give the same logits in jax.
    torchseq.checkpoint.save(tmodel, path)
    jaxseq.interop.load(jmodel, path)
    with torch.no_grad():
        logits_t = tmodel(x_t, l_t).numpy()
    assert rel_dev(logits_t, np.asarray(forward(jmodel, X, lengths))) < 1e-12
