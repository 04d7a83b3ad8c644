"""The model zoo in PyTorch, written as the PyTorch documentation teaches.

Every model is batch-first and takes ``(x, lengths)``; variable-length batches go through
``pack_padded_sequence(..., enforce_sorted=False)`` so the recurrent layer never reads
padding. :mod:`jaxseq.models` defines the same classes with the same constructor
arguments and the same ``state_dict`` names, so one checkpoint loads into either.

Shapes (N = batch, T = time, I = input_size, H = hidden_size, H_out = proj_size or H,
D = 2 if bidirectional else 1, L = num_layers, C = num_classes, V = vocab_size)::

    SequenceClassifier     x (N, T, I) float or (N, T) int tokens, lengths (N,) -> (N, C)
    FeedForwardClassifier  x (N, T, I), T <= max_len, lengths (N,)               -> (N, C)
    Forecaster             x (N, T, I), lengths (N,) or None          -> (N, horizon, O)
    CharLM                 tokens (N, T) int, hx -> logits (N, T, V), state

``dropout`` is applied to the features that enter the ``head`` (and, as torch does,
between recurrent layers when ``num_layers > 1``); ``eval()`` turns it off.

>>> import torch
>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<torch._C.Generator object at ...>
>>> model = SequenceClassifier(3, 4, hidden_size=8, cell="gru", bidirectional=True)
>>> logits = model(torch.randn(2, 5, 3), torch.tensor([5, 2]))
>>> tuple(logits.shape), list(model.state_dict())[:2], tuple(model.head.weight.shape)
((2, 4), ['rnn.weight_ih_l0', 'rnn.weight_hh_l0'], (4, 16))
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from torchseq._loop import MaskedRNNBase
from torchseq.layernorm import LayerNormGRU, LayerNormLSTM
from torchseq.minimal import MinGRU, MinLSTM

__all__ = [
    "SequenceClassifier",
    "FeedForwardClassifier",
    "Forecaster",
    "CharLM",
    "make_rnn",
    "final_hidden",
]

#: The recurrent layer of each ``cell``, and the one extra constructor argument it takes
#: from :func:`make_rnn` (``proj_size``: LSTM only, ``nonlinearity``: RNN only). torchseq's
#: own modules (:class:`torchseq._loop.MaskedRNNBase`) take lengths and mask, not packed
#: sequences.
_CELLS: dict[str, tuple[Callable[..., nn.RNNBase | MaskedRNNBase], str | None]] = {
    "rnn": (nn.RNN, "nonlinearity"),
    "lstm": (nn.LSTM, "proj_size"),
    "gru": (nn.GRU, None),
    "min_gru": (MinGRU, None),
    "min_lstm": (MinLSTM, None),
    "layernorm_lstm": (LayerNormLSTM, None),
    "layernorm_gru": (LayerNormGRU, None),
}


def make_rnn(
    cell: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    *,
    bidirectional: bool = False,
    dropout: float = 0.0,
    proj_size: int = 0,
    nonlinearity: str = "tanh",
) -> nn.RNNBase | MaskedRNNBase:
    """A batch-first ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` (or torchseq's ``MinGRU``,
    ``MinLSTM``, ``LayerNormLSTM``, ``LayerNormGRU`` for ``"min_gru"``, ``"min_lstm"``,
    ``"layernorm_lstm"``, ``"layernorm_gru"``) chosen by ``cell``.

    Dropout between layers is passed on only when ``num_layers > 1`` (torch warns that it
    has no effect otherwise). ``proj_size`` is LSTM-only and ``nonlinearity`` RNN-only.
    """
    if cell not in _CELLS:
        raise ValueError(f"cell must be one of {sorted(_CELLS)}, got {cell!r}")
    module, option = _CELLS[cell]
    if proj_size and option != "proj_size":
        raise ValueError(f"proj_size is only supported for cell='lstm', got cell={cell!r}")
    kw: dict = {
        "batch_first": True,
        "bidirectional": bidirectional,
        "dropout": dropout if num_layers > 1 else 0.0,
    }
    if option is not None:
        kw[option] = {"proj_size": proj_size, "nonlinearity": nonlinearity}[option]
    return module(input_size, hidden_size, num_layers, **kw)


def _check_dropout(dropout: float) -> float:
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
        raise ValueError(f"dropout should be a number in range [0, 1], got {dropout!r}")
    return float(dropout)


def final_hidden(
    rnn: nn.RNNBase | MaskedRNNBase,
    x: torch.Tensor,
    lengths: torch.Tensor | None,
    hx=None,
) -> torch.Tensor:
    """Run ``rnn`` (batch-first) on ``x`` and return the last layer's final hidden state.

    With ``lengths`` the batch is packed (``enforce_sorted=False``), so the state is the
    one at each sequence's true last step; forward and reverse are concatenated.

    Returns: (N, D*H_out).
    """
    if lengths is not None:
        lengths = torch.as_tensor(lengths)
        if lengths.ndim != 1 or lengths.shape[0] != x.shape[0]:
            raise ValueError(f"lengths must have shape ({x.shape[0]},), got {tuple(lengths.shape)}")
    inputs: torch.Tensor | PackedSequence = x
    masked = isinstance(rnn, MaskedRNNBase)  # takes lengths itself, with packing's semantics
    if lengths is not None and not masked:
        inputs = pack_padded_sequence(
            x, lengths.cpu().to(torch.int64), batch_first=True, enforce_sorted=False
        )
    _, h_n = rnn(inputs, hx, lengths) if masked else rnn(inputs, hx)
    if isinstance(h_n, tuple):  # LSTM: (h_n, c_n)
        h_n = h_n[0]
    D = 2 if rnn.bidirectional else 1
    last = h_n[-D:]  # (D, N, H_out): the last layer's directions
    return last.transpose(0, 1).reshape(last.shape[1], -1)


class SequenceClassifier(nn.Module):
    """A recurrent classifier over variable-length sequences.

    ``embedding`` (only when ``vocab_size`` is given: x holds int tokens (N, T)) ->
    ``rnn`` (batch-first, packed by ``lengths``) -> the last layer's final hidden state
    at each sequence's true length, directions concatenated (N, D*H_out) -> dropout ->
    ``head`` Linear(D*H_out, C).

    Args: input_size I (the embedding size with tokens), num_classes C, hidden_size H,
    cell ("rnn" | "lstm" | "gru"), num_layers L, bidirectional, dropout, proj_size
    (LSTM only), nonlinearity (RNN only), vocab_size V (tokens in) or None (features in).

    Call: ``model(x, lengths=None)`` -> logits (N, C); lengths (N,) ints in [1, T].
    """

    def __init__(
        self,
        input_size: int,
        num_classes: int,
        hidden_size: int = 64,
        cell: str = "lstm",
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        proj_size: int = 0,
        nonlinearity: str = "tanh",
        vocab_size: int | None = None,
    ):
        super().__init__()
        dropout = _check_dropout(dropout)
        self.cell = cell
        self.embedding = nn.Embedding(vocab_size, input_size) if vocab_size is not None else None
        self.rnn = make_rnn(
            cell,
            input_size,
            hidden_size,
            num_layers,
            bidirectional=bidirectional,
            dropout=dropout,
            proj_size=proj_size,
            nonlinearity=nonlinearity,
        )
        D = 2 if bidirectional else 1
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(D * (proj_size or hidden_size), num_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if self.embedding is not None:
            x = self.embedding(x)  # (N, T) -> (N, T, I)
        feats = final_hidden(self.rnn, x, lengths)  # (N, D*H_out)
        return self.head(self.dropout(feats))


class FeedForwardClassifier(nn.Module):
    """The non-recurrent baseline: an MLP on the zero-padded, flattened sequence.

    x (N, T, I) with T <= max_len is zero-padded to max_len, steps t >= lengths[n] are
    zeroed, then flattened to (N, max_len*I) -> [Linear -> ReLU -> dropout] x num_layers
    (``layers.0``, ``layers.1``, ...) -> ``head`` Linear(H, C).

    Call: ``model(x, lengths=None)`` -> logits (N, C).
    """

    def __init__(
        self,
        input_size: int,
        num_classes: int,
        max_len: int,
        hidden_size: int = 64,
        num_layers: int = 2,
        dropout: float = 0.0,
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.input_size = input_size
        self.max_len = max_len
        sizes = [max_len * input_size] + [hidden_size] * num_layers
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.dropout = nn.Dropout(_check_dropout(dropout))
        self.head = nn.Linear(hidden_size, num_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 3 or x.shape[2] != self.input_size:
            raise ValueError(
                f"expected input of shape (N, T, {self.input_size}), got {tuple(x.shape)}"
            )
        N, T, _ = x.shape
        if T > self.max_len:
            raise ValueError(f"sequence length T={T} exceeds max_len={self.max_len}")
        x = nn.functional.pad(x, (0, 0, 0, self.max_len - T))  # (N, max_len, I)
        if lengths is not None:
            steps = torch.arange(self.max_len, device=x.device).unsqueeze(0)  # (1, max_len)
            mask = steps < torch.as_tensor(lengths, device=x.device).unsqueeze(1)  # (N, max_len)
            x = x * mask.unsqueeze(2).to(x.dtype)
        h = x.reshape(N, -1)
        for layer in self.layers:
            h = self.dropout(torch.relu(layer(h)))
        return self.head(h)


class Forecaster(nn.Module):
    """Sequence -> the next ``horizon`` values: ``rnn`` then a Linear ``head`` on the last
    layer's final hidden state (at each sequence's true length when ``lengths`` is given).

    Call: ``model(x (N, T, I), lengths=None)`` -> (N, horizon, O) with
    O = output_size or input_size.
    """

    def __init__(
        self,
        input_size: int = 1,
        hidden_size: int = 64,
        cell: str = "lstm",
        num_layers: int = 1,
        horizon: int = 1,
        output_size: int | None = None,
        dropout: float = 0.0,
    ):
        super().__init__()
        dropout = _check_dropout(dropout)
        self.horizon = horizon
        self.output_size = output_size if output_size is not None else input_size
        self.rnn = make_rnn(cell, input_size, hidden_size, num_layers, dropout=dropout)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, horizon * self.output_size)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        feats = final_hidden(self.rnn, x, lengths)  # (N, H)
        return self.head(self.dropout(feats)).reshape(x.shape[0], self.horizon, self.output_size)


class CharLM(nn.Module):
    """A character language model: next-token logits at every step.

    ``embedding`` (V, E) -> ``rnn`` -> dropout -> ``head`` Linear(H, V).

    Call: ``model(tokens (N, T) int, hx=None)`` -> ``(logits (N, T, V), state)`` where
    state is h_n (L, N, H), or (h_n, c_n) for LSTM; pass it back as ``hx`` to continue.
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 64,
        hidden_size: int = 256,
        cell: str = "lstm",
        num_layers: int = 1,
        dropout: float = 0.0,
    ):
        super().__init__()
        dropout = _check_dropout(dropout)
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.rnn = make_rnn(cell, embed_dim, hidden_size, num_layers, dropout=dropout)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, tokens: torch.Tensor, hx=None):
        out, state = self.rnn(self.embedding(tokens), hx)  # (N, T, H)
        return self.head(self.dropout(out)), state
