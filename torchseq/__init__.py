"""torchseq: the canonical PyTorch versions of the jaxseq model zoo.

``torchseq.models`` (SequenceClassifier, FeedForwardClassifier, Forecaster, CharLM) share
constructor arguments and ``state_dict`` names with ``jaxseq.models``; ``torchseq.data``
pads and batches; ``torchseq.train`` is a plain ``torch.optim`` loop;
``torchseq.checkpoint`` reads and writes the safetensors files that ``jaxseq.interop``
reads and writes.

torchseq needs PyTorch, which ``pip install .`` (jaxseq alone) does not install:
``pip install '.[torch]'`` adds it. torchseq never imports jax.
"""

try:
    import torch  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised in a subprocess by tests/test_packaging.py
    raise ImportError(
        "torchseq needs PyTorch, which is not installed. jaxseq alone installs without it; "
        "for torchseq install the extra: pip install 'jaxseq[torch]' (or pip install '.[torch]' "
        "from a checkout)."
    ) from e

from torchseq import (
    checkpoint,
    data,
    layernorm,
    minimal,
    models,
    regularized,
    segments,
    train,
    train_state,
)
from torchseq.layernorm import LayerNormGRU, LayerNormGRUCell, LayerNormLSTM, LayerNormLSTMCell
from torchseq.minimal import MinGRU, MinLSTM
from torchseq.models import CharLM, FeedForwardClassifier, Forecaster, SequenceClassifier
from torchseq.regularized import draw_masks, run_regularized
from torchseq.segments import run_segments

__all__ = [
    "models",
    "data",
    "train",
    "train_state",
    "checkpoint",
    "minimal",
    "layernorm",
    "segments",
    "run_segments",
    "regularized",
    "run_regularized",
    "draw_masks",
    "MinGRU",
    "MinLSTM",
    "LayerNormLSTM",
    "LayerNormGRU",
    "LayerNormLSTMCell",
    "LayerNormGRUCell",
    "SequenceClassifier",
    "FeedForwardClassifier",
    "Forecaster",
    "CharLM",
]
