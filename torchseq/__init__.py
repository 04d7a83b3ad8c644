"""torchseq: the canonical PyTorch versions of the jaxseq model zoo.

``torchseq.models`` (SequenceClassifier, FeedForwardClassifier, Forecaster, CharLM) share
constructor arguments and ``state_dict`` names with ``jaxseq.models``; ``torchseq.data``
pads and batches; ``torchseq.train`` is a plain ``torch.optim`` loop;
``torchseq.checkpoint`` reads and writes the safetensors files that ``jaxseq.interop``
reads and writes.
"""

from torchseq import checkpoint, data, models, train
from torchseq.models import CharLM, FeedForwardClassifier, Forecaster, SequenceClassifier

__all__ = [
    "models",
    "data",
    "train",
    "checkpoint",
    "SequenceClassifier",
    "FeedForwardClassifier",
    "Forecaster",
    "CharLM",
]
