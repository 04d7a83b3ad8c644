"""jaxseq: RNN, LSTM and GRU as masked ``jax.lax.scan`` with exact PyTorch parity.

Functional API (flat dict of torch-named parameters)::

    params = jaxseq.init_lstm(key, input_size, hidden_size, num_layers=1, ...)
    out, (h_n, c_n) = jaxseq.lstm(params, x, hx=None, lengths=None, batch_first=False)

Modules (Flax NNX, ``torch.nn`` signatures): ``jaxseq.nn.RNN/LSTM/GRU``.
Interop: ``jaxseq.interop.load_torch_state_dict`` / ``to_torch_state_dict``.
"""

from jaxseq import (
    cells,
    checks,
    convert,
    data,
    host_memory,
    impls,
    interop,
    layers,
    linear_scan,
    minimal,
    models,
    nn,
    params,
    plotting,
    recurrences,
    scan,
    stack,
    testing,
    train,
    train_state,
    validation,
)
from jaxseq.cells import gru_cell, lstm_cell, rnn_cell
from jaxseq.host_memory import retain_host_memory
from jaxseq.minimal import init_min_gru, init_min_lstm, min_gru, min_lstm
from jaxseq.params import init_gru, init_lstm, init_params, init_rnn, param_shapes
from jaxseq.scan import masked_scan
from jaxseq.stack import gru, lstm, rnn

__version__ = "0.1.0"

__all__ = [
    "recurrences",
    "params",
    "validation",
    "impls",
    "stack",
    "cells",
    "scan",
    "convert",
    "testing",
    "layers",
    "nn",
    "interop",
    "checks",
    "models",
    "data",
    "train",
    "train_state",
    "plotting",
    "host_memory",
    "rnn_cell",
    "lstm_cell",
    "gru_cell",
    "masked_scan",
    "rnn",
    "lstm",
    "gru",
    "init_rnn",
    "init_lstm",
    "init_gru",
    "init_params",
    "param_shapes",
    "linear_scan",
    "minimal",
    "min_gru",
    "min_lstm",
    "init_min_gru",
    "init_min_lstm",
    "retain_host_memory",
]
