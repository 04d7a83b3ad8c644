"""Compatibility home of the functional stack's names.

The stack was split by job: parameters and init in :mod:`jaxseq.params`, argument checks
in :mod:`jaxseq.validation`, layer implementations in :mod:`jaxseq.impls`, the stack
itself in :mod:`jaxseq.stack`. Every public name that lived here is re-exported, so
``from jaxseq.layers import ...`` keeps working.
"""

from __future__ import annotations

from jaxseq.impls import LAYER_IMPLS, REMAT_IMPLS, LayerImpl
from jaxseq.params import (
    RNNSpec,
    init_gru,
    init_lstm,
    init_params,
    init_rnn,
    param_shapes,
    spec_from_params,
)
from jaxseq.stack import gru, lstm, rnn, run_stack
from jaxseq.validation import check_dropout, check_nonlinearity

__all__ = [
    "rnn",
    "lstm",
    "gru",
    "init_rnn",
    "init_lstm",
    "init_gru",
    "init_params",
    "param_shapes",
    "RNNSpec",
    "spec_from_params",
    "run_stack",
    "LAYER_IMPLS",
    "REMAT_IMPLS",
    "LayerImpl",
    "check_dropout",
    "check_nonlinearity",
]
