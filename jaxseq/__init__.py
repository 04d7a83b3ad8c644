"""jaxseq: RNN, LSTM, GRU, minGRU and minLSTM as masked ``jax.lax.scan`` with exact PyTorch
parity.

Every public name has one import path (see ``docs/architecture.md``):

* here, the functional API on a flat dict of torch-named parameters —
  ``jaxseq.lstm(params, x, hx=None, lengths=None, batch_first=False, ...)`` and
  ``rnn``, ``gru``, ``min_gru``, ``min_lstm``, ``layernorm_lstm``, ``layernorm_gru``;
  their ``init_*``; the single-step cells
  ``rnn_cell``, ``lstm_cell``, ``gru_cell``; ``masked_scan``;
  ``retain_host_memory``; ``prepare_step`` and ``step`` (one time step of a stack, for
  acting and streaming: the module ``jaxseq.stepping``);
* the public modules: ``jaxseq.nn`` (Flax NNX modules with ``torch.nn`` signatures),
  ``jaxseq.linen`` (the stacks as Flax linen modules),
  ``jaxseq.interop`` (state_dict, checkpoints, ``from_torch`` / ``to_torch``, Flax cells),
  ``jaxseq.options`` (``LayerOptions``: how a layer runs, one value),
  ``jaxseq.models``, ``jaxseq.data``, ``jaxseq.export``, ``jaxseq.train``, ``jaxseq.train_state``,
  ``jaxseq.testing``, ``jaxseq.checks``, ``jaxseq.launch``, ``jaxseq.linear_scan``
  (``linear_recurrence``) and ``jaxseq.recurrences`` (the kinds and their registry:
  how to add one).

The other modules (``stack``, ``params``, ``validation``, ``impls``, ``fused``, ...) are
the implementation; their names may change.
"""

# The public modules, importable as attributes after ``import jaxseq``.
from jaxseq import checks as checks
from jaxseq import data as data
from jaxseq import export as export
from jaxseq import interop as interop
from jaxseq import linen as linen
from jaxseq import models as models
from jaxseq import nn as nn
from jaxseq import options as options
from jaxseq import recurrences as recurrences
from jaxseq import regularizers as regularizers
from jaxseq import testing as testing
from jaxseq import train as train
from jaxseq import train_state as train_state
from jaxseq.host_memory import retain_host_memory
from jaxseq.params import (
    init_gru,
    init_layernorm_gru,
    init_layernorm_lstm,
    init_lstm,
    init_min_gru,
    init_min_lstm,
    init_params,
    init_rnn,
    param_shapes,
)
from jaxseq.recurrences.elman import rnn_cell
from jaxseq.recurrences.gru import gru_cell
from jaxseq.recurrences.lstm import lstm_cell
from jaxseq.scan import masked_scan
from jaxseq.stack import (
    gru,
    layernorm_gru,
    layernorm_lstm,
    lstm,
    min_gru,
    min_lstm,
    rnn,
    run_stack,
)
from jaxseq.stepping import prepare_step, step

__version__ = "0.1.0"

__all__ = [
    "rnn",
    "lstm",
    "gru",
    "min_gru",
    "min_lstm",
    "layernorm_lstm",
    "layernorm_gru",
    "run_stack",
    "init_rnn",
    "init_lstm",
    "init_gru",
    "init_min_gru",
    "init_min_lstm",
    "init_layernorm_lstm",
    "init_layernorm_gru",
    "init_params",
    "param_shapes",
    "rnn_cell",
    "lstm_cell",
    "gru_cell",
    "masked_scan",
    "retain_host_memory",
    "prepare_step",
    "step",
]
