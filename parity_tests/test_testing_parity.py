"""The model zoo's parity, checked with the tool users get: ``jaxseq.testing.check_parity``.

Every class of :mod:`torchseq.models` against its :mod:`jaxseq.models` twin, in float64,
with the torch model's weights copied into the JAX one: the outputs, the gradient of
every parameter, and 3 steps of each optimizer (SGD with momentum, Adam, AdamW), loss
by loss and parameter by parameter, at the checker's default float64 tolerances.

Grid: ``SequenceClassifier`` for each cell (rnn / lstm / gru) x features or tokens
(``vocab_size``) x one or two directions x one or two layers. The full grid (24 models)
takes about 55 s on one core, so each cell runs a half fraction of the 2 x 2 x 2 design
(4 models, the other half for the middle cell): every cell still meets every pair of
values of any two of (tokens, directions, layers). Plus an LSTM with ``proj_size`` and
an RNN with ReLU; ``FeedForwardClassifier``; ``Forecaster`` for each cell, with and
without lengths; ``CharLM`` for each cell with a given ``hx``. Each model runs all three
optimizers (the JAX side compiles once per model and is reused).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from flax import nnx

import jaxseq.testing
from jaxseq import models as jm
from torchseq import models as tm

N, T, I, H, C, V = 3, 6, 3, 4, 3, 7
RNG = np.random.default_rng(0)
X = RNG.normal(size=(N, T, I))  # float64
TOKENS = RNG.integers(0, V, size=(N, T))  # int64
LENGTHS = np.array([6, 2, 4])  # int64; torch cannot pack length 0
OPTIMIZERS = ("sgd", "adam", "adamw")

# name -> (class name, constructor kwargs, call args)
CASES: dict[str, tuple[str, dict, tuple]] = {}
for (c, cell), tokens, bidirectional, layers in itertools.product(
    enumerate(("rnn", "lstm", "gru")), (False, True), (False, True), (1, 2)
):
    if (tokens + bidirectional + layers + c) % 2:  # a half fraction: see the docstring
        continue
    kw = dict(
        input_size=I,
        num_classes=C,
        hidden_size=H,
        cell=cell,
        num_layers=layers,
        bidirectional=bidirectional,
        vocab_size=V if tokens else None,
    )
    name = f"classifier-{cell}-{'tokens' if tokens else 'features'}-D{1 + bidirectional}-L{layers}"
    CASES[name] = ("SequenceClassifier", kw, (TOKENS if tokens else X, LENGTHS))
CASES["classifier-lstm-proj"] = (
    "SequenceClassifier",
    dict(input_size=I, num_classes=C, hidden_size=H, cell="lstm", bidirectional=True, proj_size=2),
    (X, LENGTHS),
)
CASES["classifier-rnn-relu"] = (
    "SequenceClassifier",
    dict(input_size=I, num_classes=C, hidden_size=H, cell="rnn", nonlinearity="relu"),
    (X, LENGTHS),
)
CASES["feedforward"] = (
    "FeedForwardClassifier",
    dict(input_size=I, num_classes=C, max_len=8, hidden_size=H, num_layers=2),
    (X, LENGTHS),
)
for cell in ("rnn", "lstm", "gru"):
    kw = dict(input_size=I, hidden_size=H, cell=cell, horizon=2, output_size=2)
    CASES[f"forecaster-{cell}-lengths"] = ("Forecaster", kw, (X, LENGTHS))
    CASES[f"forecaster-{cell}-no-lengths"] = ("Forecaster", {**kw, "num_layers": 2}, (X,))
    h0 = RNG.normal(size=(2, N, H))
    hx = (h0, RNG.normal(size=(2, N, H))) if cell == "lstm" else h0
    kw = dict(vocab_size=V, embed_dim=I, hidden_size=H, cell=cell, num_layers=2)
    CASES[f"charlm-{cell}-hx"] = ("CharLM", kw, (TOKENS, hx))


def build(cls: str, kw: dict, seed: int):
    torch.manual_seed(seed)
    t = getattr(tm, cls)(**kw).double()
    j = getattr(jm, cls)(**kw, param_dtype=np.float64, rngs=nnx.Rngs(seed))
    return t, jaxseq.testing.copy_weights(t, j)


@pytest.mark.parametrize("case", list(CASES))
def test_zoo_parity(case):
    cls, kw, args = CASES[case]
    t, j = build(cls, kw, seed=len(case))
    n_params = len(list(t.parameters()))
    for optimizer in OPTIMIZERS:
        report = jaxseq.testing.check_parity(t, j, *args, steps=3, optimizer=optimizer)
        whats = [r.what for r in report.rows]
        assert whats.count("grad") == whats.count("param@3") == n_params
        assert whats.count("output") >= 1 and "loss@3" in whats
    if cls == "CharLM":  # logits, and the final state (h_n, or (h_n, c_n) for LSTM)
        names = [r.name for r in report.rows if r.what == "output"]
        assert names == (
            ["out[0]", "out[1][0]", "out[1][1]"] if kw["cell"] == "lstm" else ["out[0]", "out[1]"]
        )
