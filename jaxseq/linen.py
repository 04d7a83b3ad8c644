"""Flax linen modules for the stacks: ``jaxseq.linen.LSTM(hidden_size, ...)`` in linen code.

Each module is an ``nn.Module`` whose parameters are the stack's flat dict of torch names
(``weight_ih_l0``, ``bias_hh_l1_reverse``, ...; :mod:`jaxseq.params`), made with
``self.param`` and torch's init, and whose call is the functional API
(:func:`jaxseq.run_stack`): ``model.apply(variables, x, hx, lengths, resets=...)``
returns ``(out, h_n)``, or ``(out, (h_n, c_n))`` for the LSTM, with the shapes of
:func:`jaxseq.run_stack`. ``variables["params"]`` is then exactly what :func:`jaxseq.lstm`
and friends take, and what a torch ``state_dict`` holds. The input size is read from the
input at ``init``, as linen's layers do.

Dropout between layers follows linen's convention: ``deterministic`` (an attribute, or an
argument of the call that overrides it) False applies it, with a key from the
``"dropout"`` PRNG stream (``model.apply(..., rngs={"dropout": key})``).

>>> import jax, jax.numpy as jnp, jaxseq
>>> model = jaxseq.linen.LSTM(hidden_size=4, num_layers=2, batch_first=True)
>>> x = jnp.ones((3, 5, 2), jnp.float32)                     # (N, T, I)
>>> variables = model.init(jax.random.key(0), x)
>>> sorted(variables["params"])[:3]
['bias_hh_l0', 'bias_hh_l1', 'bias_ih_l0']
>>> out, (h_n, c_n) = model.apply(variables, x, lengths=jnp.array([5, 2, 0]))
>>> out.shape, h_n.shape, float(abs(out[1, 2:]).max())
((3, 5, 4), (2, 3, 4), 0.0)
>>> ref, _ = jaxseq.lstm(variables["params"], x, lengths=[5, 2, 0], batch_first=True)
>>> bool((out == ref).all())
True
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseq.params import base_name, param_shapes
from jaxseq.recurrences import get
from jaxseq.regularizers import RATES
from jaxseq.stack import run_stack

Array = jax.Array

__all__ = ["RNNBase", "RNN", "LSTM", "GRU", "MinGRU", "MinLSTM", "Stack"]


def _init(rec: Any, base: str, dtype: Any, hidden_size: int) -> Any:
    """The initializer ``(key, shape) -> array`` of the parameter ``base`` of a kind."""
    return lambda key, shape: rec.init_param(base, key, shape, dtype, hidden_size)


class RNNBase(nn.Module):
    """The stacks' one linen module; each kind is a subclass that sets ``kind``.

    The attributes are ``torch.nn.RNN`` / ``LSTM`` / ``GRU``'s arguments but
    ``input_size``, which the input gives at ``init``:

    * ``hidden_size``: H; ``num_layers``, ``bias``, ``bidirectional``, ``batch_first``:
      as torch's;
    * ``dropout``: the probability of dropout on every layer's output but the last;
      ``input_dropout``, ``output_dropout``, ``recurrent_dropout``, ``weight_dropout``,
      ``zoneout``: the recurrent regularisers' rates, as :func:`jaxseq.run_stack`'s
      (``docs/training.md``); ``deterministic``: none of them (linen's convention; the
      call's argument overrides it);
    * ``param_dtype``: the parameters' dtype (default float32); ``dtype``: the
      computation dtype (None: the promotion of the input and parameter dtypes);
    * ``impl``, ``unroll``, ``remat``, ``chunk``, ``carry_dtype``: as
      :func:`jaxseq.run_stack`'s.

    Call ``module(x, hx=None, lengths=None, *, resets=None, reset_hx=None,
    deterministic=None, return_all_states=False)``; the arguments and the result
    ``(out, state)`` are :func:`jaxseq.run_stack`'s.
    """

    hidden_size: int
    num_layers: int = 1
    bias: bool = True
    bidirectional: bool = False
    batch_first: bool = False
    dropout: float = 0.0
    input_dropout: float = 0.0
    output_dropout: float = 0.0
    recurrent_dropout: float = 0.0
    weight_dropout: float = 0.0
    zoneout: float = 0.0
    deterministic: bool | None = None
    param_dtype: Any = jnp.float32
    dtype: Any = None
    impl: str = "fused"
    unroll: int = 1
    remat: int | None = None
    chunk: int | None = None
    carry_dtype: Any = None

    #: The registered kind (:mod:`jaxseq.recurrences`) the module runs.
    kind = ""

    def _kind(self) -> str:
        return self.kind

    def _options(self) -> dict[str, Any]:
        """Constructor arguments beyond the shared ones (``proj_size``, ``nonlinearity``)."""
        return {}

    @nn.compact
    def __call__(
        self,
        x: Array,
        hx: Any = None,
        lengths: Any = None,
        *,
        resets: Any = None,
        reset_hx: Any = None,
        deterministic: bool | None = None,
        return_all_states: bool = False,
    ) -> tuple[Any, ...]:
        """``(out, h_n)`` or ``(out, (h_n, c_n))``; shapes and arguments as
        :func:`jaxseq.run_stack` (``return_all_states``: ``(out, h_n, states)``)."""
        kind = self._kind()
        rec = get(kind)
        options = self._options()
        shapes = param_shapes(
            kind,
            int(x.shape[-1]),
            self.hidden_size,
            self.num_layers,
            bias=self.bias,
            bidirectional=self.bidirectional,
            proj_size=options.get("proj_size", 0),
        )
        params = {
            name: self.param(
                name, _init(rec, base_name(name), self.param_dtype, self.hidden_size), shape
            )
            for name, shape in shapes.items()
        }
        rates: dict[str, Any] = {name: getattr(self, name) for name in RATES}
        train, key = False, None
        if (self.dropout > 0 and self.num_layers > 1) or any(r > 0 for r in rates.values()):
            train = not nn.merge_param("deterministic", self.deterministic, deterministic)
            if train:
                key = self.make_rng("dropout")
        if self.dtype is not None and jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating):
            x = jnp.asarray(x, self.dtype)
            if hx is not None:
                hx = jax.tree.map(lambda a: jnp.asarray(a, self.dtype), hx)
        return run_stack(
            kind,
            params,
            x,
            hx,
            lengths,
            nonlinearity=options.get("nonlinearity", "tanh"),
            batch_first=self.batch_first,
            dropout=self.dropout,
            train=train,
            key=key,
            unroll=self.unroll,
            impl=self.impl,
            dtype=self.dtype,
            remat=self.remat,
            chunk=self.chunk,
            carry_dtype=self.carry_dtype,
            resets=resets,
            reset_hx=reset_hx,
            return_all_states=return_all_states,
            **rates,
        )


class RNN(RNNBase):
    """Elman RNN stack, as ``torch.nn.RNN`` (``nonlinearity`` ``"tanh"`` or ``"relu"``);
    attributes and call as :class:`RNNBase`.

    >>> import jax, jax.numpy as jnp
    >>> m = RNN(4, nonlinearity="relu")
    >>> x = jnp.ones((5, 2, 3), jnp.float32)                   # (T, N, I)
    >>> out, h_n = m.apply(m.init(jax.random.key(0), x), x)
    >>> out.shape, h_n.shape
    ((5, 2, 4), (1, 2, 4))
    """

    nonlinearity: str = "tanh"
    kind = "rnn"

    def _options(self) -> dict[str, Any]:
        return {"nonlinearity": self.nonlinearity}


class LSTM(RNNBase):
    """LSTM stack, as ``torch.nn.LSTM`` (optional ``proj_size``); the state is ``(h, c)``;
    attributes and call as :class:`RNNBase`.

    >>> import jax, jax.numpy as jnp
    >>> m = LSTM(4, proj_size=2, bidirectional=True)
    >>> x = jnp.ones((5, 2, 3), jnp.float32)
    >>> out, (h_n, c_n) = m.apply(m.init(jax.random.key(0), x), x)
    >>> out.shape, h_n.shape, c_n.shape
    ((5, 2, 4), (2, 2, 2), (2, 2, 4))
    """

    proj_size: int = 0
    kind = "lstm"

    def _options(self) -> dict[str, Any]:
        return {"proj_size": self.proj_size}


class GRU(RNNBase):
    """GRU stack, as ``torch.nn.GRU`` (reset after the hidden matmul, with ``b_hn``);
    attributes and call as :class:`RNNBase`.

    >>> import jax, jax.numpy as jnp
    >>> m = GRU(4, num_layers=2)
    >>> x = jnp.ones((5, 2, 3), jnp.float32)
    >>> out, h_n = m.apply(m.init(jax.random.key(0), x), x, resets=jnp.zeros((5, 2), bool))
    >>> out.shape, h_n.shape
    ((5, 2, 4), (2, 2, 4))
    """

    kind = "gru"


class MinGRU(RNNBase):
    """minGRU stack (:func:`jaxseq.min_gru`); attributes and call as :class:`RNNBase`, with
    the linear kinds' ``impl`` values."""

    kind = "min_gru"


class MinLSTM(RNNBase):
    """minLSTM stack (:func:`jaxseq.min_lstm`); attributes and call as :class:`RNNBase`,
    with the linear kinds' ``impl`` values."""

    kind = "min_lstm"


class Stack(RNNBase):
    """The stack of any registered kind, named by ``kind_name`` (e.g. ``"layernorm_gru"``,
    or one added with :func:`jaxseq.recurrences.register`); attributes and call as
    :class:`RNNBase`, plus ``nonlinearity`` and ``proj_size`` where the kind takes them.

    >>> import jax, jax.numpy as jnp
    >>> m = Stack(4, kind_name="layernorm_lstm")
    >>> x = jnp.ones((5, 2, 3), jnp.float32)
    >>> out, (h_n, c_n) = m.apply(m.init(jax.random.key(0), x), x)
    >>> out.shape
    (5, 2, 4)
    """

    kind_name: str = "lstm"
    nonlinearity: str = "tanh"
    proj_size: int = 0

    def _kind(self) -> str:
        return self.kind_name

    def _options(self) -> dict[str, Any]:
        return {"nonlinearity": self.nonlinearity, "proj_size": self.proj_size}
