"""One definition per recurrence kind, and the registry the rest of jaxseq dispatches on.

:class:`Recurrence` (in :mod:`jaxseq.recurrences.base`) holds everything that differs
between kinds; ``elman.py``, ``lstm.py`` and ``gru.py`` each define and register one.
A new kind is one more such definition and a call to :func:`register`; see
``tests/test_extensibility.py`` for a leaky Elman RNN defined entirely in a test file.

>>> import jaxseq.recurrences as rec
>>> [k in rec.registered() for k in ("rnn", "lstm", "gru")], rec.get("lstm").num_gates
([True, True, True], 4)
"""

from jaxseq.recurrences.base import (
    Kind,
    Recurrence,
    get,
    input_projection,
    linear,
    register,
    registered,
    torch_uniform_init,
    unregister,
)
from jaxseq.recurrences.elman import RNN_TANH_RELU, rnn_cell, rnn_step
from jaxseq.recurrences.gru import GRU, gru_cell, gru_step
from jaxseq.recurrences.lstm import LSTM, lstm_cell, lstm_step

__all__ = [
    "Kind",
    "Recurrence",
    "register",
    "get",
    "registered",
    "unregister",
    "input_projection",
    "linear",
    "torch_uniform_init",
    "RNN_TANH_RELU",
    "LSTM",
    "GRU",
    "rnn_step",
    "lstm_step",
    "gru_step",
    "rnn_cell",
    "lstm_cell",
    "gru_cell",
]
