"""The model zoo in Flax NNX: the same classes, arguments and torch names as torchseq.

Each model wraps :mod:`jaxseq.nn` recurrent modules (attribute ``rnn``) and
``nnx.Linear`` / ``nnx.Embed`` layers, so :func:`jaxseq.interop.to_torch_state_dict`
gives exactly the ``state_dict`` names of the matching :mod:`torchseq.models` class and
one checkpoint loads into either. Variable-length batches are handled by passing
``lengths`` to the masked scan (no packing); lengths are traced values, so changing them
never recompiles a jitted step.

Shapes (N = batch, T = time, I = input_size, H = hidden_size, H_out = proj_size or H,
D = 2 if bidirectional else 1, L = num_layers, C = num_classes, V = vocab_size)::

    SequenceClassifier     x (N, T, I) float or (N, T) int tokens, lengths (N,) -> (N, C)
    FeedForwardClassifier  x (N, T, I), T <= max_len, lengths (N,)               -> (N, C)
    Forecaster             x (N, T, I), lengths (N,) or None          -> (N, horizon, O)
    CharLM                 tokens (N, T) int, hx -> logits (N, T, V), state

Every constructor takes the torch arguments plus keyword-only ``param_dtype`` and
``rngs``; the recurrent ones also ``rnn_options``, a :class:`jaxseq.options.LayerOptions`
(``impl``, ``remat``, ``carry_dtype``, zoneout and the other recurrent regularisers: how
the recurrent layer runs; the torch twins have no such argument). Initial values follow torch's distributions (U(-1/sqrt(fan_in), 1/sqrt(fan_in))
for Linear, N(0, 1) for Embedding, U(-1/sqrt(H), 1/sqrt(H)) for the recurrent layers);
for equal *values* load a checkpoint. Models start in training mode, as torch's do;
``.eval()`` turns dropout off, ``.train()`` back on. Floating inputs are cast to
``param_dtype``.

>>> import jax.numpy as jnp
>>> from flax import nnx
>>> import jaxseq
>>> model = SequenceClassifier(3, 4, hidden_size=8, cell="gru", bidirectional=True,
...                            rngs=nnx.Rngs(0))
>>> logits = model(jnp.ones((2, 5, 3)), jnp.array([5, 2]))
>>> sd = jaxseq.interop.to_torch_state_dict(model)
>>> logits.shape, sorted(sd)[:2], sd["head.weight"].shape
((2, 4), ['head.bias', 'head.weight'], (4, 16))
"""

from __future__ import annotations

from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxseq import nn as jnn
from jaxseq.options import LayerOptions
from jaxseq.recurrences import get, registered
from jaxseq.validation import check_dropout

Array = jax.Array

__all__ = [
    "SequenceClassifier",
    "FeedForwardClassifier",
    "Forecaster",
    "CharLM",
    "make_rnn",
    "final_hidden",
    "torch_linear",
    "torch_embed",
]


def _uniform(bound: float):
    def init(key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def torch_linear(
    in_features: int, out_features: int, *, param_dtype: Any, rngs: nnx.Rngs
) -> nnx.Linear:
    """``nnx.Linear`` initialised as ``torch.nn.Linear``: weight and bias U(-1/sqrt(in), 1/sqrt(in)).

    Its ``kernel`` is (in, out), torch's ``weight`` transposed (see ``interop.LAYOUT``).
    """
    bound = 1.0 / np.sqrt(in_features) if in_features > 0 else 0.0
    return nnx.Linear(
        in_features,
        out_features,
        kernel_init=_uniform(bound),
        bias_init=_uniform(bound),
        param_dtype=param_dtype,
        rngs=rngs,
    )


def torch_embed(
    num_embeddings: int, features: int, *, param_dtype: Any, rngs: nnx.Rngs
) -> nnx.Embed:
    """``nnx.Embed`` initialised as ``torch.nn.Embedding``: N(0, 1)."""
    return nnx.Embed(
        num_embeddings,
        features,
        embedding_init=nnx.initializers.normal(1.0),
        param_dtype=param_dtype,
        rngs=rngs,
    )


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
    options: LayerOptions | None = None,
    param_dtype: Any = jnp.float32,
    rngs: nnx.Rngs,
) -> jnn.RNNBase:
    """The batch-first :mod:`jaxseq.nn` layer module of the registered kind ``cell``
    (``"rnn"``, ``"lstm"``, ``"gru"``, ``"min_gru"``, ``"min_lstm"``, ...).

    Mirrors ``torchseq.models.make_rnn``: inter-layer dropout only when ``num_layers > 1``.
    ``options``: how the layer runs (:class:`jaxseq.options.LayerOptions`: ``impl``,
    ``remat``, ``carry_dtype``, the recurrent regularisers, ...); None: the defaults.

    >>> from flax import nnx
    >>> rnn = make_rnn("gru", 3, 4, options=LayerOptions(zoneout=0.1), rngs=nnx.Rngs(0))
    >>> rnn.options.zoneout, rnn.batch_first
    (0.1, True)
    """
    if not isinstance(cell, str) or cell not in registered():
        raise ValueError(f"cell must be one of {sorted(registered())}, got {cell!r}")
    rec = get(cell)
    if proj_size and not rec.projection:
        raise ValueError(f"proj_size is only supported for cell='lstm', got cell={cell!r}")
    cls = cast(type[jnn.RNNBase], jnn.module_class(rec))
    return cls(
        input_size,
        hidden_size,
        num_layers,
        batch_first=True,
        bidirectional=bidirectional,
        dropout=dropout if num_layers > 1 else 0.0,
        proj_size=proj_size,
        nonlinearity=nonlinearity,
        param_dtype=param_dtype,
        rngs=rngs,
        **(LayerOptions() if options is None else options).kwargs(),
    )


def _as_float(x: Any, dtype: Any) -> Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"expected a floating point input, got dtype {x.dtype}")
    return x.astype(dtype)


def _as_tokens(tokens: Any) -> Array:
    tokens = jnp.asarray(tokens)
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise TypeError(f"expected integer token ids, got dtype {tokens.dtype}")
    if tokens.ndim != 2:
        raise ValueError(f"expected tokens of shape (N, T), got {tokens.shape}")
    return tokens


def final_hidden(rnn: jnn.RNNBase, x: Array, lengths: Array | None, hx: Any = None) -> Array:
    """Run ``rnn`` (batch-first) and return the last layer's final hidden state (N, D*H_out).

    With ``lengths`` this is the state at each sequence's true last step (the masked scan
    freezes the carry on padding); forward and reverse are concatenated, as torch's
    ``h_n[-D:]``.
    """
    _, h_n = rnn(x, hx, lengths)
    if isinstance(h_n, tuple):  # LSTM: (h_n, c_n)
        h_n = h_n[0]
    D = 2 if rnn.bidirectional else 1
    last = h_n[-D:]  # (D, N, H_out)
    return jnp.transpose(last, (1, 0, 2)).reshape(last.shape[1], -1)


class SequenceClassifier(nnx.Module):
    """A recurrent classifier over variable-length sequences (see ``torchseq.models``).

    ``embedding`` (only when ``vocab_size`` is given: x holds int tokens (N, T)) ->
    ``rnn`` (batch-first, masked by ``lengths``) -> the last layer's final hidden state at
    each sequence's true length, directions concatenated (N, D*H_out) -> dropout ->
    ``head`` Linear(D*H_out, C).

    Call: ``model(x, lengths=None)`` -> logits (N, C); lengths (N,) ints in [0, T].
    ``rnn_options``: how ``rnn`` runs (:class:`jaxseq.options.LayerOptions`), as for the
    other recurrent models here.
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
        *,
        rnn_options: LayerOptions | None = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        dropout = check_dropout(dropout)
        self.cell = cell
        self.param_dtype = param_dtype
        self.embedding = (
            torch_embed(vocab_size, input_size, param_dtype=param_dtype, rngs=rngs)
            if vocab_size is not None
            else None
        )
        self.rnn = make_rnn(
            cell,
            input_size,
            hidden_size,
            num_layers,
            bidirectional=bidirectional,
            dropout=dropout,
            proj_size=proj_size,
            nonlinearity=nonlinearity,
            options=rnn_options,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        D = 2 if bidirectional else 1
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.head = torch_linear(
            D * (proj_size or hidden_size), num_classes, param_dtype=param_dtype, rngs=rngs
        )

    def __call__(self, x: Array, lengths: Array | None = None) -> Array:
        if self.embedding is not None:
            x = self.embedding(_as_tokens(x))  # (N, T) -> (N, T, I)
        else:
            x = _as_float(x, self.param_dtype)
        feats = final_hidden(self.rnn, x, lengths)  # (N, D*H_out)
        return self.head(self.dropout(feats))


class FeedForwardClassifier(nnx.Module):
    """The non-recurrent baseline: an MLP on the zero-padded, flattened sequence.

    x (N, T, I) with T <= max_len is zero-padded to max_len, steps t >= lengths[n] are
    zeroed, then flattened to (N, max_len*I) -> [Linear -> ReLU -> dropout] x num_layers
    (``layers.0``, ``layers.1``, ... an ``nnx.List``) -> ``head`` Linear(H, C).

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
        *,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.input_size = input_size
        self.max_len = max_len
        self.param_dtype = param_dtype
        sizes = [max_len * input_size] + [hidden_size] * num_layers
        self.layers = nnx.List(
            [
                torch_linear(a, b, param_dtype=param_dtype, rngs=rngs)
                for a, b in zip(sizes[:-1], sizes[1:], strict=True)
            ]
        )
        self.dropout = nnx.Dropout(check_dropout(dropout), rngs=rngs)
        self.head = torch_linear(hidden_size, num_classes, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: Array, lengths: Array | None = None) -> Array:
        x = _as_float(x, self.param_dtype)
        if x.ndim != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"expected input of shape (N, T, {self.input_size}), got {x.shape}")
        N, T, _ = x.shape
        if T > self.max_len:
            raise ValueError(f"sequence length T={T} exceeds max_len={self.max_len}")
        x = jnp.pad(x, ((0, 0), (0, self.max_len - T), (0, 0)))  # (N, max_len, I)
        if lengths is not None:
            lengths = jnp.asarray(lengths)  # int32 or int64: compared in its own dtype
            steps = jnp.arange(self.max_len, dtype=lengths.dtype).reshape(1, -1)  # (1, max_len)
            mask = steps < lengths.reshape(-1, 1)  # (N, max_len)
            x = jnp.where(mask[:, :, None], x, jnp.zeros((), x.dtype))
        h = x.reshape(N, -1)
        for layer in self.layers:
            h = self.dropout(jax.nn.relu(layer(h)))
        return self.head(h)


class Forecaster(nnx.Module):
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
        *,
        rnn_options: LayerOptions | None = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        dropout = check_dropout(dropout)
        self.horizon = horizon
        self.output_size = output_size if output_size is not None else input_size
        self.param_dtype = param_dtype
        self.rnn = make_rnn(
            cell,
            input_size,
            hidden_size,
            num_layers,
            dropout=dropout,
            options=rnn_options,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.head = torch_linear(
            hidden_size, horizon * self.output_size, param_dtype=param_dtype, rngs=rngs
        )

    def __call__(self, x: Array, lengths: Array | None = None) -> Array:
        x = _as_float(x, self.param_dtype)
        feats = final_hidden(self.rnn, x, lengths)  # (N, H)
        return self.head(self.dropout(feats)).reshape(x.shape[0], self.horizon, self.output_size)


class CharLM(nnx.Module):
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
        *,
        rnn_options: LayerOptions | None = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        dropout = check_dropout(dropout)
        self.embedding = torch_embed(vocab_size, embed_dim, param_dtype=param_dtype, rngs=rngs)
        self.rnn = make_rnn(
            cell,
            embed_dim,
            hidden_size,
            num_layers,
            dropout=dropout,
            options=rnn_options,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.head = torch_linear(hidden_size, vocab_size, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, tokens: Array, hx: Any = None) -> tuple[Array, Any]:
        out, state = self.rnn(self.embedding(_as_tokens(tokens)), hx)  # (N, T, H)
        return self.head(self.dropout(out)), state
