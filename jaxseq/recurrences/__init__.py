"""One definition per recurrence kind, and the registry the rest of jaxseq dispatches on.

:class:`Recurrence` (in :mod:`jaxseq.recurrences.base`) holds everything that differs
between kinds; ``elman.py``, ``lstm.py`` and ``gru.py`` each define and register one gated kind;
``minimal.py`` registers minGRU and minLSTM, built with :func:`linear_kind`;
``layernorm.py`` the layer-normalised LSTM and GRU (extra parameters and fused pieces).
A new kind is one more such definition and a call to :func:`register`; see
``tests/test_extensibility.py`` for a leaky Elman RNN defined entirely in a test file.

>>> import jaxseq.recurrences as rec
>>> sorted(rec.registered()), rec.get("lstm").num_gates, rec.get("min_gru").is_linear
(['gru', 'layernorm_gru', 'layernorm_lstm', 'lstm', 'min_gru', 'min_lstm', 'rnn'], 4, True)
"""

from jaxseq.recurrences.base import (
    Fused,
    Kind,
    Linear,
    Recurrence,
    get,
    input_projection,
    linear,
    linear_kind,
    register,
    registered,
    torch_uniform_init,
    unregister,
)
from jaxseq.recurrences.elman import RNN_TANH_RELU, rnn_step
from jaxseq.recurrences.gru import GRU, gru_step
from jaxseq.recurrences.layernorm import LAYERNORM_GRU, LAYERNORM_LSTM
from jaxseq.recurrences.lstm import LSTM, lstm_step
from jaxseq.recurrences.minimal import MIN_GRU, MIN_LSTM

__all__ = [
    "Kind",
    "Recurrence",
    "Fused",
    "Linear",
    "register",
    "get",
    "registered",
    "unregister",
    "input_projection",
    "linear",
    "linear_kind",
    "torch_uniform_init",
    "RNN_TANH_RELU",
    "LSTM",
    "GRU",
    "MIN_GRU",
    "MIN_LSTM",
    "LAYERNORM_LSTM",
    "LAYERNORM_GRU",
    "rnn_step",
    "lstm_step",
    "gru_step",
]
