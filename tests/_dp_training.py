"""The float64 training run that the data-parallel parity tests repeat in five ways.

One classifier of each cell kind (``SequenceClassifier``, hidden 5, with lengths), Adam
after torch's global-norm clipping, 25 epochs over two batches of 8 and 7 rows (the 7-row
batch splits 4/3 over two processes, so it is padded): 50 steps. The five configurations:

* JAX, 1 process, 1 device (the reference every other run is compared with);
* JAX, 1 process, 2 devices (``tests/test_data_parallel.py``);
* JAX, 2 processes under ``python -m jaxseq.launch`` (``tests/test_data_parallel.py``);
* torch, 1 process, and torch DDP over 2 processes (``tests/test_torch_ddp.py``).

All start from the same weights: the JAX reference run writes its initial parameters
(``jaxseq.interop.save``, torch names) and the torch runs load them. Every run writes
``{cell: {"losses": [...], "params": {torch name: [...]}}}`` as JSON; :func:`assert_same`
compares two of them to 1e-9 relative.
"""

from __future__ import annotations

import json
import pathlib
import textwrap

import numpy as np

CELLS = ("rnn", "lstm", "gru")
EPOCHS = 25
STEPS = 2 * EPOCHS

# The data: what every process of every configuration builds, before taking its rows.
BATCHES = textwrap.dedent(
    """
    import numpy as np

    def batches(rank=0, world=1, sizes=(8, 7)):
        rng = np.random.default_rng(0)
        out = []
        for n in sizes:
            x, lengths, y = rng.standard_normal((n, 6, 3)), rng.integers(1, 7, n), rng.integers(0, 3, n)
            part = np.array_split(np.arange(n), world)[rank]  # this process's rows
            out.append((x[part], lengths[part], y[part]))
        return out
    """
)

# JAX: ``train(cell, mesh, rank, world, init)`` -> result dict. With ``init`` a folder:
# when ``save_init`` the initial weights are written there, otherwise read from there.
JAX_TRAINING = BATCHES + textwrap.dedent(
    f"""
    import os
    import optax, jax, jax.numpy as jnp
    from flax import nnx
    import jaxseq.interop
    from jaxseq.models import SequenceClassifier
    from jaxseq.train import fit

    def train(cell, mesh, rank=0, world=1, init=None, save_init=False):
        model = SequenceClassifier(3, 3, hidden_size=5, cell=cell, param_dtype=jnp.float64,
                                   rngs=nnx.Rngs(1))
        if init is not None:
            path = os.path.join(init, cell + ".safetensors")
            if save_init:
                jaxseq.interop.save(model, path)
            else:
                jaxseq.interop.load(model, path)
        h = fit(model, batches(rank, world), optax.adam(1e-2), epochs={EPOCHS}, clip_norm=0.5,
                mesh=mesh)
        params = jaxseq.interop.to_torch_state_dict(model)
        return {{"losses": list(map(float, h)),
                 "params": {{k: v.ravel().tolist() for k, v in params.items()}}}}
    """
)

# torch: the same run with torchseq.train.fit (``ddp`` when launched), from the JAX init.
TORCH_TRAINING = BATCHES + textwrap.dedent(
    f"""
    import os
    import torch
    import torchseq.checkpoint
    from torchseq.models import SequenceClassifier
    from torchseq.train import fit

    def train(cell, rank, world, init):
        model = SequenceClassifier(3, 3, hidden_size=5, cell=cell).double()
        torchseq.checkpoint.load(model, os.path.join(init, cell + ".safetensors"))
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        h = fit(model, batches(rank, world), opt, epochs={EPOCHS}, clip_norm=0.5, ddp=world > 1)
        params = {{k: v.detach().numpy().ravel().tolist() for k, v in model.state_dict().items()}}
        return {{"losses": list(map(float, h)), "params": params}}
    """
)


def assert_same(reference: pathlib.Path, other: pathlib.Path, rtol: float = 1e-9) -> float:
    """Loss curves and final parameters of two result files agree; returns the worst
    relative difference (parameters relative to max(|reference|, 1e-3))."""
    a, b = json.loads(reference.read_text()), json.loads(other.read_text())
    assert sorted(a) == sorted(b) == sorted(CELLS), (sorted(a), sorted(b))
    worst = 0.0
    for cell in CELLS:
        l0, l1 = np.array(a[cell]["losses"]), np.array(b[cell]["losses"])
        assert len(l0) == len(l1) == STEPS, (cell, len(l0), len(l1))
        np.testing.assert_allclose(l1, l0, rtol=rtol, atol=0, err_msg=f"{cell} losses")
        worst = max(worst, float(np.max(np.abs(l1 - l0) / np.abs(l0))))
        assert sorted(a[cell]["params"]) == sorted(b[cell]["params"]), cell
        for name, p0 in a[cell]["params"].items():
            p0, p1 = np.array(p0), np.array(b[cell]["params"][name])
            scale = np.maximum(np.abs(p0), 1e-3)
            rel = float(np.max(np.abs(p1 - p0) / scale))
            assert rel <= rtol, (cell, name, rel)
            worst = max(worst, rel)
    return worst
