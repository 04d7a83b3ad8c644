"""Flax NNX modules ``RNN``, ``LSTM``, ``GRU`` with ``torch.nn``'s signatures.

The modules hold parameters as ``nnx.Param`` attributes named exactly as torch names them
(``weight_ih_l0``, ``bias_hh_l1_reverse``, ``weight_hr_l0`` …, both biases kept) and call
the functional stack in :mod:`jaxseq.layers`; they add no logic of their own.

>>> import jax.numpy as jnp
>>> from flax import nnx
>>> import jaxseq
>>> lstm = jaxseq.nn.LSTM(3, 5, num_layers=2, batch_first=True, rngs=nnx.Rngs(0))
>>> out, (h_n, c_n) = lstm(jnp.ones((4, 7, 3)), lengths=jnp.array([7, 2, 0, 5]))
>>> out.shape, h_n.shape, sorted(jaxseq.interop.to_torch_state_dict(lstm))[:2]
((4, 7, 5), (2, 4, 5), ['bias_hh_l0', 'bias_hh_l1'])
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxseq.layers import RNNSpec, check_dropout, check_nonlinearity, init_params, run_stack

Array = jax.Array

__all__ = ["RNNBase", "RNN", "LSTM", "GRU"]


class RNNBase(nnx.Module):
    """Shared constructor and call of :class:`RNN`, :class:`LSTM` and :class:`GRU`.

    Dropout follows torch: applied to the outputs of every layer but the last, in
    training mode only. Modules start in training mode, as torch's do; ``.eval()``
    turns dropout off and ``.train()`` turns it back on. The dropout key comes from the
    ``dropout`` stream of the ``rngs`` given at construction (or the default stream).
    """

    kind: str = ""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        *,
        nonlinearity: str = "tanh",
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        unroll: int = 1,
        impl: str = "fast",
        remat: int | None = None,
        rngs: nnx.Rngs,
    ):
        spec = RNNSpec(
            self.kind,
            input_size,
            hidden_size,
            num_layers,
            bool(bias),
            bool(bidirectional),
            proj_size,
        )
        spec.validate()
        check_nonlinearity(self.kind, nonlinearity)
        check_dropout(dropout)
        if not isinstance(rngs, nnx.Rngs):
            raise TypeError(f"rngs must be an nnx.Rngs, got {type(rngs).__name__}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bool(bias)
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        self.proj_size = proj_size
        self.nonlinearity = nonlinearity
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.unroll = unroll
        self.impl = impl
        self.remat = remat
        self.deterministic = False  # torch modules start in training mode
        values = init_params(
            rngs.params(),
            self.kind,
            input_size,
            hidden_size,
            num_layers,
            bias=self.bias,
            bidirectional=self.bidirectional,
            proj_size=proj_size,
            dtype=param_dtype,
        )
        self._param_names = tuple(values)
        for name, value in values.items():
            setattr(self, name, nnx.Param(value))
        self.dropout_rngs = rngs["dropout"].fork() if self.dropout > 0 and num_layers > 1 else None

    @property
    def spec(self) -> RNNSpec:
        return RNNSpec(
            self.kind,
            self.input_size,
            self.hidden_size,
            self.num_layers,
            self.bias,
            self.bidirectional,
            self.proj_size,
        )

    def params_dict(self) -> dict[str, Array]:
        """The parameters as a flat ``{torch name: array}`` dict (for the functional API)."""
        return {name: getattr(self, name)[...] for name in self._param_names}

    def __call__(self, x: Array, hx: Any = None, lengths: Array | None = None) -> tuple[Array, Any]:
        train = not self.deterministic
        key = None
        if train and self.dropout > 0 and self.dropout_rngs is not None:
            key = self.dropout_rngs()
        if self.dtype is not None and hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating):
            x = jnp.asarray(x, self.dtype)
            if hx is not None:
                hx = jax.tree.map(
                    lambda a: jnp.asarray(a, self.dtype) if hasattr(a, "dtype") else a, hx
                )
        return run_stack(
            self.kind,
            self.params_dict(),
            x,
            hx,
            lengths,
            nonlinearity=self.nonlinearity,
            batch_first=self.batch_first,
            dropout=self.dropout,
            train=train,
            key=key,
            unroll=self.unroll,
            impl=self.impl,
            dtype=self.dtype,
            remat=self.remat,
        )

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        for k, default in (
            ("num_layers", 1),
            ("bias", True),
            ("batch_first", False),
            ("dropout", 0.0),
            ("bidirectional", False),
        ):
            if getattr(self, k) != default:
                s += f", {k}={getattr(self, k)}"
        return s


class RNN(RNNBase):
    """Multi-layer Elman RNN, as ``torch.nn.RNN``: ``h' = act(W_ih x + b_ih + W_hh h + b_hh)``.

    ``RNN(input_size, hidden_size, num_layers=1, nonlinearity='tanh', bias=True,
    batch_first=False, dropout=0.0, bidirectional=False, *, dtype=None,
    param_dtype=jnp.float32, unroll=1, impl='fast', remat=None, rngs)``.

    Call: ``out, h_n = rnn(x, hx=None, lengths=None)`` with x (T, N, I) (or (N, T, I)
    with ``batch_first``, or unbatched (T, I)), hx (L*D, N, H); out (T, N, D*H), h_n
    (L*D, N, H). See :func:`jaxseq.rnn` for the meaning of ``lengths``.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> rnn = RNN(3, 4, nonlinearity="relu", rngs=nnx.Rngs(0))
    >>> out, h_n = rnn(jnp.ones((6, 3)))   # unbatched
    >>> out.shape, h_n.shape
    ((6, 4), (1, 4))
    """

    kind = "rnn"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        **kw: Any,
    ):
        # proj_size is not an RNN argument; RNNSpec.validate() raises torch's error for it.
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            kw.pop("proj_size", 0),
            nonlinearity=nonlinearity,
            **kw,
        )


class LSTM(RNNBase):
    """Multi-layer LSTM, as ``torch.nn.LSTM`` (gates i, f, g, o; optional ``proj_size``).

    ``LSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
    dropout=0.0, bidirectional=False, proj_size=0, *, dtype=None,
    param_dtype=jnp.float32, unroll=1, impl='fast', remat=None, rngs)``.

    Call: ``out, (h_n, c_n) = lstm(x, hx=None, lengths=None)``; hx is ``(h0, c0)`` with h0
    (L*D, N, H_out), c0 (L*D, N, H); out (T, N, D*H_out). See :func:`jaxseq.lstm`.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> lstm = LSTM(3, 8, proj_size=2, bidirectional=True, rngs=nnx.Rngs(0))
    >>> out, (h_n, c_n) = lstm(jnp.ones((6, 5, 3)), lengths=jnp.array([6, 1, 0, 3, 6]))
    >>> out.shape, h_n.shape, c_n.shape
    ((6, 5, 4), (2, 5, 2), (2, 5, 8))
    """

    kind = "lstm"


class GRU(RNNBase):
    """Multi-layer GRU, as ``torch.nn.GRU`` (gates r, z, n; reset after the hidden matmul).

    ``GRU(input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
    dropout=0.0, bidirectional=False, *, dtype=None, param_dtype=jnp.float32, unroll=1,
    impl='fast', remat=None, rngs)``.

    Call: ``out, h_n = gru(x, hx=None, lengths=None)`` with x (T, N, I) (or (N, T, I)
    with ``batch_first``, or unbatched (T, I)), hx (L*D, N, H); out (T, N, D*H), h_n
    (L*D, N, H). See :func:`jaxseq.gru` for the meaning of ``lengths``.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> gru = GRU(3, 4, num_layers=2, rngs=nnx.Rngs(0))
    >>> out, h_n = gru(jnp.ones((6, 2, 3)))
    >>> out.shape, h_n.shape
    ((6, 2, 4), (2, 2, 4))
    """

    kind = "gru"
