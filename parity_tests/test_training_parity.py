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

# One architecture per cell, between them covering bidirectional, 2 layers and proj_size.
ARCHS = {
    "rnn": dict(cell="rnn", hidden_size=6, bidirectional=True),
    "lstm": dict(cell="lstm", hidden_size=6, num_layers=2, proj_size=4),
    "gru": dict(cell="gru", hidden_size=6, num_layers=2, bidirectional=True),
}
OPTIMIZERS = {
    "sgd": (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), lambda: optax.sgd(0.1, momentum=0.9)),
    "adam": (lambda p: torch.optim.Adam(p, lr=1e-2, betas=(0.9, 0.999), eps=1e-8),
             lambda: optax.adam(1e-2, b1=0.9, b2=0.999, eps=1e-8)),
    "adamw": (lambda p: torch.optim.AdamW(p, lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1),
              lambda: optax.adamw(1e-2, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.1)),
}
DTYPES = {"float64": (200, 1e-9), "float32": (50, 1e-4)}

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


def run_pair(cell: str, opt: str, dtype: str, tmp_path, dropout: float = 0.0):
    steps, _ = DTYPES[dtype]
    torch_dtype = {"float64": torch.float64, "float32": torch.float32}[dtype]
    np_dtype = {"float64": np.float64, "float32": np.float32}[dtype]
    torch.manual_seed(0)
    tmodel = tm.SequenceClassifier(I, C, dropout=dropout, **ARCHS[cell]).to(torch_dtype)
    jmodel = jm.SequenceClassifier(I, C, dropout=dropout, **ARCHS[cell], param_dtype=np_dtype,
                                   rngs=nnx.Rngs(1))
    path = tmp_path / "init.safetensors"
    torchseq.checkpoint.save(tmodel, path)
    jaxseq.interop.load(jmodel, path)
    batches = make_batches(steps, np_dtype)

    make_torch_opt, make_tx = OPTIMIZERS[opt]
    t_batches = [(torch.from_numpy(x), torch.from_numpy(lb.astype(np.int64)), torch.from_numpy(yb))
                 for x, lb, yb in batches]
    t_losses = torchseq.train.fit(tmodel, t_batches, make_torch_opt(tmodel.parameters()), epochs=1,
                                  clip_norm=CLIP)
    j_losses = jt.fit(jmodel, batches, make_tx(), epochs=1, clip_norm=CLIP)
    return tmodel, jmodel, np.array(t_losses), np.array(j_losses)


@pytest.fixture(scope="module")
def report():
    yield WORST
    if WORST:
        print("\nworst relative deviation (loss curve and final parameters), torch vs jax:")
        for (opt, dtype), dev in sorted(WORST.items()):
            print(f"  {opt:6s} {dtype}: {dev:.3e}  ({DTYPES[dtype][0]} steps, tolerance {DTYPES[dtype][1]:g})")


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("opt", list(OPTIMIZERS))
@pytest.mark.parametrize("cell", list(ARCHS))
def test_training_curves_match(cell, opt, dtype, tmp_path, report):
    tmodel, jmodel, t_losses, j_losses = run_pair(cell, opt, dtype, tmp_path)
    steps, tol = DTYPES[dtype]
    assert len(t_losses) == len(j_losses) == steps
    # The run must actually train (otherwise matching curves would prove little).
    assert t_losses[-10:].mean() < 0.8 * t_losses[:10].mean()
    loss_dev = rel_dev(t_losses, j_losses)
    t_sd = {k: v.detach().numpy() for k, v in tmodel.state_dict().items()}
    j_sd = jaxseq.interop.to_torch_state_dict(jmodel)
    assert sorted(t_sd) == sorted(j_sd)
    param_dev = max(rel_dev(t_sd[k], j_sd[k]) for k in t_sd)
    # The parameters moved: a match of untouched parameters would prove nothing.
    torch.manual_seed(0)
    init = tm.SequenceClassifier(I, C, **ARCHS[cell])
    assert max(rel_dev(init.state_dict()[k].numpy(), t_sd[k]) for k in t_sd) > 1e-2
    dev = max(loss_dev, param_dev)
    key = (opt, dtype)
    report[key] = max(report.get(key, 0.0), dev)
    print(f"{cell} {opt} {dtype}: loss curve {loss_dev:.2e}, params {param_dev:.2e}")
    assert loss_dev < tol, f"loss curves differ by {loss_dev:.3e} (relative) > {tol:g}"
    assert param_dev < tol, f"final parameters differ by {param_dev:.3e} (relative) > {tol:g}"


def test_dropout_trains_and_eval_agrees(tmp_path):
    """With dropout on, both frameworks still train (their masks differ); eval() turns it
    off, and then the same weights give the same logits."""
    arch = dict(cell="lstm", hidden_size=6, num_layers=2)
    torch.manual_seed(0)
    tmodel = tm.SequenceClassifier(I, C, dropout=0.3, **arch).double()
    jmodel = jm.SequenceClassifier(I, C, dropout=0.3, **arch, param_dtype=np.float64, rngs=nnx.Rngs(1))
    path = tmp_path / "init.safetensors"
    torchseq.checkpoint.save(tmodel, path)
    jaxseq.interop.load(jmodel, path)
    X, lengths, y = make_dataset()
    x_t, l_t = torch.from_numpy(X), torch.from_numpy(lengths.astype(np.int64))

    def eval_losses():
        tmodel.eval()
        jmodel.eval()
        with torch.no_grad():
            lt = torch.nn.functional.cross_entropy(tmodel(x_t, l_t), torch.from_numpy(y)).item()
        lj = float(jt.cross_entropy(jmodel(X, lengths), y))
        return lt, lj

    lt0, lj0 = eval_losses()
    assert abs(lt0 - lj0) < 1e-12 * abs(lt0)
    # Training mode: dropout masks differ between the frameworks and between calls.
    tmodel.train()
    jmodel.train()
    with torch.no_grad():
        train_t = tmodel(x_t, l_t).numpy()
    train_j = np.asarray(jmodel(X, lengths))
    assert rel_dev(train_t, train_j) > 1e-3
    assert rel_dev(train_j, np.asarray(jmodel(X, lengths))) > 1e-3

    batches = make_batches(100, np.float64)
    t_batches = [(torch.from_numpy(x), torch.from_numpy(lb.astype(np.int64)), torch.from_numpy(yb))
                 for x, lb, yb in batches]
    t_losses = torchseq.train.fit(tmodel, t_batches, torch.optim.Adam(tmodel.parameters(), lr=1e-2),
                                  clip_norm=CLIP)
    j_losses = jt.fit(jmodel, batches, optax.adam(1e-2), clip_norm=CLIP)
    assert rel_dev(t_losses, j_losses) > 1e-3  # different masks, different curves
    lt1, lj1 = eval_losses()
    assert lt1 < 0.8 * lt0 and lj1 < 0.8 * lj0, (lt0, lt1, lj0, lj1)
    # eval() makes them agree again: the torch-trained weights give the same logits in jax.
    torchseq.checkpoint.save(tmodel, path)
    jaxseq.interop.load(jmodel, path)
    with torch.no_grad():
        logits_t = tmodel(x_t, l_t).numpy()
    assert rel_dev(logits_t, np.asarray(jmodel(X, lengths))) < 1e-12
