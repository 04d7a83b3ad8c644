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

The single-step cells ``RNNCell``, ``LSTMCell``, ``GRUCell`` mirror ``torch.nn.RNNCell``
etc.: parameters ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh`` (torch's names,
no suffix) and a call ``cell(x, hx=None)`` on one time step. ``Cell.from_layer(module,
layer, reverse)`` copies one layer and direction of a layer module into a cell, e.g. for
step-by-step decoding.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxseq.minimal import MinSpec, Mode, init_min_params, resolve_mode, run_min_stack
from jaxseq.params import RNNSpec, init_params
from jaxseq.recurrences import Recurrence, get
from jaxseq.stack import run_stack
from jaxseq.validation import Impl, check_dropout, check_nonlinearity

Array = jax.Array

__all__ = [
    "RNNBase",
    "RNN",
    "LSTM",
    "GRU",
    "RNNCellBase",
    "RNNCell",
    "LSTMCell",
    "GRUCell",
    "MinRNNBase",
    "MinGRU",
    "MinLSTM",
]


class _TorchNamedStack(nnx.Module):
    """What :class:`RNNBase` and :class:`MinRNNBase` share: torch-named ``nnx.Param``
    attributes, the dropout RNG stream and the casting of a call's inputs."""

    # Set by the subclasses' constructors.
    dropout: float
    dtype: Any
    deterministic: bool
    dropout_rngs: Any
    _param_names: tuple[str, ...]

    def _set_params(self, values: Mapping[str, Array], rngs: nnx.Rngs, num_layers: int) -> None:
        self._param_names = tuple(values)
        for name, value in values.items():
            setattr(self, name, nnx.Param(value))
        self.dropout_rngs = rngs["dropout"].fork() if self.dropout > 0 and num_layers > 1 else None

    def params_dict(self) -> dict[str, Array]:
        """The parameters as a flat ``{torch name: array}`` dict (for the functional API)."""
        return {name: getattr(self, name)[...] for name in self._param_names}

    def _call_inputs(self, x: Array, hx: Any) -> tuple[Array, Any, bool, Array | None]:
        """``(x, hx, train, dropout key)``: x and hx cast to ``dtype`` when one is set."""
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
        return x, hx, train, key


class RNNBase(_TorchNamedStack):
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
        impl: Impl | str = "fused",
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
        self._set_params(values, rngs, num_layers)

    def __call__(self, x: Array, hx: Any = None, lengths: Array | None = None) -> tuple[Array, Any]:
        x, hx, train, key = self._call_inputs(x, hx)
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


# --------------------------------------------------------------------------- cells


def _is_array(a: Any) -> bool:
    return hasattr(a, "shape") and hasattr(a, "dtype") and hasattr(a, "ndim")


class RNNCellBase(nnx.Module):
    """Shared constructor, input checks and call of :class:`RNNCell`, :class:`LSTMCell`
    and :class:`GRUCell` (as ``torch.nn.RNNCellBase``).

    Parameters are ``nnx.Param`` attributes named as torch names them (G = 1 for RNN,
    4 for LSTM, 3 for GRU; every one initialised U(-1/sqrt(H), 1/sqrt(H)) as torch)::

        weight_ih  (G*H, I)
        weight_hh  (G*H, H)
        bias_ih    (G*H,)     only with bias=True
        bias_hh    (G*H,)     only with bias=True

    Call on one time step: x (N, I) or unbatched (I,); hx (N, H) or (H,) (for the LSTM
    a pair ``(h, c)`` of such arrays), zeros when None; the new state has the shape of
    hx. Every bad input raises ``ValueError`` / ``TypeError`` in Python, before tracing,
    with torch's message where torch has one.

    ``dtype`` (None: the promotion of the input and parameter dtypes) is the computation
    dtype: floating x and hx are cast to it, as in :class:`RNN`. ``param_dtype`` is the
    dtype of the parameters.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> cell = GRUCell(3, 4, rngs=nnx.Rngs(0))
    >>> isinstance(cell, RNNCellBase), cell.weight_ih.shape, cell(jnp.ones((2, 3))).shape
    (True, (12, 3), (2, 4))
    """

    kind: str = ""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        nonlinearity: str | None = None,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        # torch's messages for the sizes (as torch.nn.RNN's; torch's cells accept
        # hidden_size=0, a cell without state, which is refused here).
        RNNSpec(self.kind, input_size, hidden_size, 1, bool(bias)).validate()
        rec = self.recurrence
        takes_nonlinearity = len(rec.nonlinearities) > 1
        if takes_nonlinearity and nonlinearity not in rec.nonlinearities:
            raise ValueError(f"Unknown nonlinearity: {nonlinearity}")
        if not isinstance(rngs, nnx.Rngs):
            raise TypeError(f"rngs must be an nnx.Rngs, got {type(rngs).__name__}")
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.bias = bool(bias)
        if takes_nonlinearity:  # as torch: only RNNCell has the attribute
            self.nonlinearity = nonlinearity
        self.dtype = dtype
        self.param_dtype = param_dtype
        values = init_params(
            rngs.params(),
            self.kind,
            self.input_size,
            self.hidden_size,
            1,
            bias=self.bias,
            dtype=param_dtype,
        )
        # torch's cell names: the layer names without their "_l0" suffix.
        names = []
        for name, value in values.items():
            base = name.removesuffix("_l0")
            names.append(base)
            setattr(self, base, nnx.Param(value))
        self._param_names = tuple(names)

    @property
    def recurrence(self) -> Recurrence:
        """The cell's recurrence definition (:mod:`jaxseq.recurrences`)."""
        return get(self.kind)

    @property
    def _name(self) -> str:
        return self.recurrence.display_name + "Cell"

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_layer(cls, module: RNNBase, layer: int = 0, reverse: bool = False) -> RNNCellBase:
        """A cell holding a copy of one layer and direction of a layer module.

        ``LSTMCell.from_layer(lstm, layer=k, reverse=r)`` copies ``weight_ih_l{k}``,
        ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}`` (with ``_reverse`` when
        ``r``) into the cell's ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``;
        also ``bias``, ``nonlinearity`` (RNN), ``dtype`` and ``param_dtype``. The cell's
        input size is the layer's: I for layer 0, D*H for layers above. Stepping the
        cells of a stack layer by layer reproduces the stack (without dropout).

        Raises ``TypeError`` if ``module`` is not the matching layer module
        (:class:`RNN` for :class:`RNNCell` and so on) and ``ValueError`` for an LSTM
        with ``proj_size > 0`` (torch's ``LSTMCell`` has no projection), a layer out of
        range, or ``reverse=True`` on a unidirectional module.

        >>> from flax import nnx
        >>> lstm = LSTM(3, 4, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0))
        >>> cell = LSTMCell.from_layer(lstm, layer=1, reverse=True)
        >>> cell.weight_ih.shape, bool((cell.weight_hh[...] == lstm.weight_hh_l1_reverse[...]).all())
        ((16, 8), True)
        """
        rec = get(cls.kind)
        layer_name = rec.display_name
        where = f"{layer_name}Cell.from_layer"
        if not isinstance(module, RNNBase) or module.kind != cls.kind:
            raise TypeError(
                f"{where} expects a jaxseq.nn.{layer_name} module, got {type(module).__name__}"
            )
        if module.proj_size > 0:
            raise ValueError(
                f"{where}: the LSTM has proj_size={module.proj_size}; torch.nn.LSTMCell has "
                "no projection (weight_hr), so a projected layer cannot become a cell"
            )
        if (
            not isinstance(layer, (int, np.integer))
            or isinstance(layer, bool)
            or not 0 <= layer < module.num_layers
        ):
            raise ValueError(
                f"{where}: layer must be an integer in [0, {module.num_layers - 1}] "
                f"(num_layers={module.num_layers}), got {layer!r}"
            )
        if reverse and not module.bidirectional:
            raise ValueError(f"{where}: reverse=True needs a bidirectional {layer_name}")
        sfx = f"_l{int(layer)}" + ("_reverse" if reverse else "")
        w_ih = getattr(module, "weight_ih" + sfx)[...]
        takes_nonlinearity = len(rec.nonlinearities) > 1
        kw: dict[str, Any] = {"nonlinearity": module.nonlinearity} if takes_nonlinearity else {}
        cell = cls(
            int(w_ih.shape[1]),
            module.hidden_size,
            module.bias,
            **kw,
            dtype=module.dtype,
            param_dtype=module.param_dtype,
            rngs=nnx.Rngs(0),  # overwritten below
        )
        for base in cell._param_names:
            target = getattr(cell, base)
            target[...] = jnp.asarray(getattr(module, base + sfx)[...], target[...].dtype)
        return cell

    # ------------------------------------------------------------------ call

    def params_dict(self) -> dict[str, Array]:
        """The parameters as a flat ``{torch name: array}`` dict (for :mod:`jaxseq.cells`)."""
        return {name: getattr(self, name)[...] for name in self._param_names}

    def _check(self, x: Any, hx: Any) -> list[tuple[str, str, Any]]:
        """Check x and hx in Python; return ``[(rank label, size label, state), ...]``."""
        name, H, num_states = self._name, self.hidden_size, self.recurrence.num_states
        if not _is_array(x):
            raise TypeError(f"{name}: input must be an array, got {type(x).__name__}")
        if x.ndim not in (1, 2):
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {x.ndim}D instead")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(f"{name}: input must be a floating point array, got dtype {x.dtype}")
        states: list[tuple[str, str, Any]] = []
        if hx is not None:
            if num_states > 1:
                if not isinstance(hx, (tuple, list)):
                    raise TypeError(
                        f"{name}: hx must be a tuple (h_0, c_0), got {type(hx).__name__}"
                    )
                if len(hx) != num_states:
                    raise ValueError(f"{name} expects two hidden states (h_0, c_0), got {len(hx)}")
                states = [(f"hx[{i}]", f"hidden{i}", h) for i, h in enumerate(hx)]
            else:
                if isinstance(hx, (tuple, list)):
                    raise TypeError(
                        f"{name}: hx must be a single array for {name}, got a {type(hx).__name__}"
                    )
                states = [("hidden", "hidden0", hx)]
            for label, _, h in states:
                if not _is_array(h):
                    raise TypeError(f"{name}: {label} must be an array, got {type(h).__name__}")
                if h.ndim not in (1, 2):
                    raise ValueError(
                        f"{name}: Expected {label} to be 1D or 2D, got {h.ndim}D instead"
                    )
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"input has inconsistent input_size: got {x.shape[-1]} expected {self.input_size}"
            )
        for label, size_label, h in states:
            if h.ndim != x.ndim:
                # torch reports this case through its batch or size checks; say it plainly.
                raise ValueError(
                    f"{name}: Expected {label} to be {x.ndim}D for a {x.ndim}D input "
                    f"({'batched' if x.ndim == 2 else 'unbatched'}), got {h.ndim}D instead"
                )
            if x.ndim == 2 and h.shape[0] != x.shape[0]:
                raise ValueError(
                    f"Input batch size {x.shape[0]} doesn't match {size_label} batch size "
                    f"{h.shape[0]}"
                )
            if h.shape[-1] != H:
                raise ValueError(
                    f"{size_label} has inconsistent hidden_size: got {h.shape[-1]}, expected {H}"
                )
            if not jnp.issubdtype(h.dtype, jnp.floating):
                raise TypeError(
                    f"{name}: {label} must be a floating point array, got dtype {h.dtype}"
                )
        return states

    def __call__(self, x: Array, hx: Any = None) -> Any:
        name = self._name
        states = self._check(x, hx)
        if self.dtype is not None:
            x = jnp.asarray(x, self.dtype)
            states = [(a, b, jnp.asarray(h, self.dtype)) for a, b, h in states]
        for label, _, h in states:
            if jnp.dtype(h.dtype) != jnp.dtype(x.dtype):
                raise TypeError(
                    f"{name}: input and {label} must have the same dtype, found input of dtype "
                    f"{jnp.dtype(x.dtype)} and {label} of dtype {h.dtype}"
                )
        params = self.params_dict()
        if self.dtype is not None:
            dtype = jnp.dtype(self.dtype)
        else:
            # As the layer modules (and Flax): compute in the promotion of the input and
            # parameter dtypes, even when the caller runs with strict promotion.
            with jax.numpy_dtype_promotion("standard"):
                dtype = jnp.dtype(jnp.promote_types(x.dtype, params["weight_ih"].dtype))
        params = {k: v.astype(dtype) for k, v in params.items()}
        unbatched = x.ndim == 1
        x = jnp.asarray(x, dtype)
        if unbatched:
            x = x[None]
        N, H = x.shape[0], self.hidden_size
        hs = [jnp.asarray(h, dtype) for _, _, h in states]
        if unbatched:
            hs = [h[None] for h in hs]
        rec = self.recurrence
        if not hs:
            hs = [jnp.zeros((N, H), dtype)] * rec.num_states
        with jax.named_scope(f"jaxseq.{name}"):
            cell = rec.cell(getattr(self, "nonlinearity", None))
            out = cell(params, rec.carry(tuple(hs)), x)[0]
        if unbatched:
            out = jax.tree.map(lambda a: a[0], out)
        return out


class RNNCell(RNNCellBase):
    """An Elman RNN cell, as ``torch.nn.RNNCell``: one time step with act = tanh or relu.

    ::

        h' = act(W_ih x + b_ih + W_hh h + b_hh)

    ``RNNCell(input_size, hidden_size, bias=True, nonlinearity='tanh', *, dtype=None,
    param_dtype=jnp.float32, rngs)``.

    Parameters (I = input_size, H = hidden_size): ``weight_ih`` (H, I), ``weight_hh``
    (H, H), and with ``bias`` ``bias_ih`` (H,), ``bias_hh`` (H,).

    Call: ``h' = cell(x, hx=None)`` with x (N, I) and hx (N, H) -> h' (N, H), or
    unbatched x (I,), hx (H,) -> h' (H,); hx None means zeros. Built on
    :func:`jaxseq.cells.rnn_cell`. See :class:`RNNCellBase` for dtypes and errors.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> cell = RNNCell(3, 4, nonlinearity="relu", rngs=nnx.Rngs(0))
    >>> h = cell(jnp.ones((2, 3)))            # (N, I) -> (N, H)
    >>> h = cell(jnp.ones((2, 3)), h)
    >>> h.shape, cell(jnp.ones(3)).shape, bool((h >= 0).all())
    ((2, 4), (4,), True)
    """

    kind = "rnn"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        *,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        super().__init__(
            input_size,
            hidden_size,
            bias,
            nonlinearity=nonlinearity,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )

    def __call__(self, x: Array, hx: Array | None = None) -> Array:
        """``h' = act(W_ih x + b_ih + W_hh h + b_hh)``: x (N, I) or (I,), hx (N, H) or (H,)."""
        return super().__call__(x, hx)


class LSTMCell(RNNCellBase):
    """An LSTM cell, as ``torch.nn.LSTMCell`` (gate order i, f, g, o; no projection).

    ::

        i = sigmoid(W_ii x + b_ii + W_hi h + b_hi)
        f = sigmoid(W_if x + b_if + W_hf h + b_hf)
        g = tanh(W_ig x + b_ig + W_hg h + b_hg)
        o = sigmoid(W_io x + b_io + W_ho h + b_ho)
        c' = f * c + i * g
        h' = o * tanh(c')

    ``LSTMCell(input_size, hidden_size, bias=True, *, dtype=None,
    param_dtype=jnp.float32, rngs)``.

    Parameters (I = input_size, H = hidden_size): ``weight_ih`` (4H, I), ``weight_hh``
    (4H, H), and with ``bias`` ``bias_ih`` (4H,), ``bias_hh`` (4H,); the gates stacked
    i, f, g, o as torch.

    Call: ``h', c' = cell(x, hx=None)`` with x (N, I), hx ``(h, c)`` each (N, H) ->
    h', c' (N, H); or unbatched x (I,), h, c (H,) -> h', c' (H,); hx None means zeros.
    Built on :func:`jaxseq.cells.lstm_cell`. See :class:`RNNCellBase` for dtypes and
    errors.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> cell = LSTMCell(3, 4, rngs=nnx.Rngs(0))
    >>> h, c = cell(jnp.ones((2, 3)))         # (N, I) -> (N, H), (N, H)
    >>> h, c = cell(jnp.ones((2, 3)), (h, c))
    >>> h.shape, c.shape, cell(jnp.ones(3))[1].shape
    ((2, 4), (2, 4), (4,))
    """

    kind = "lstm"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        super().__init__(
            input_size, hidden_size, bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )

    def __call__(self, x: Array, hx: tuple[Array, Array] | None = None) -> tuple[Array, Array]:
        """``(h', c')`` from x (N, I) or (I,) and hx ``(h, c)``, each (N, H) or (H,)."""
        return super().__call__(x, hx)


class GRUCell(RNNCellBase):
    """A GRU cell, as ``torch.nn.GRUCell`` (gate order r, z, n; reset after the hidden matmul).

    ::

        r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
        z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
        n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))
        h' = (1 - z) * n + z * h

    ``GRUCell(input_size, hidden_size, bias=True, *, dtype=None,
    param_dtype=jnp.float32, rngs)``.

    Parameters (I = input_size, H = hidden_size): ``weight_ih`` (3H, I), ``weight_hh``
    (3H, H), and with ``bias`` ``bias_ih`` (3H,), ``bias_hh`` (3H,); the gates stacked
    r, z, n as torch.

    Call: ``h' = cell(x, hx=None)`` with x (N, I) and hx (N, H) -> h' (N, H), or
    unbatched x (I,), hx (H,) -> h' (H,); hx None means zeros. Built on
    :func:`jaxseq.cells.gru_cell`. See :class:`RNNCellBase` for dtypes and errors.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> import jaxseq
    >>> cell = GRUCell(3, 4, bias=False, rngs=nnx.Rngs(0))
    >>> h = cell(jnp.ones((2, 3)))            # (N, I) -> (N, H)
    >>> h = cell(jnp.ones((2, 3)), h)
    >>> h.shape, cell(jnp.ones(3)).shape, sorted(jaxseq.interop.to_torch_state_dict(cell))
    ((2, 4), (4,), ['weight_hh', 'weight_ih'])
    """

    kind = "gru"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        super().__init__(
            input_size, hidden_size, bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )

    def __call__(self, x: Array, hx: Array | None = None) -> Array:
        """``h'`` (N, H) or (H,) from x (N, I) or (I,) and hx (N, H) or (H,)."""
        return super().__call__(x, hx)


# --------------------------------------------------------------------------- minGRU / minLSTM


class MinRNNBase(_TorchNamedStack):
    """Shared constructor and call of :class:`MinGRU` and :class:`MinLSTM` (issue #18).

    Constructor and call as :class:`GRU` where they apply (no ``proj_size``,
    ``nonlinearity``, ``unroll``, ``impl`` or ``remat``), plus ``mode`` (``"auto"``,
    ``"sequential"``, ``"parallel"``, ``"chunked"``; see :mod:`jaxseq.minimal`) and
    ``chunk``. Parameters are ``nnx.Param`` attributes with torch's names,
    ``weight_ih_l{k}{_reverse}`` (G*H, in) and ``bias_ih_l{k}{_reverse}`` (G*H,); there is
    no ``weight_hh``. Dropout as torch: on the outputs of every layer but the last, in
    training mode only (``.train()`` / ``.eval()``).

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> m = MinGRU(3, 4, mode="parallel", rngs=nnx.Rngs(0))
    >>> isinstance(m, MinRNNBase), sorted(m.params_dict()), m(jnp.ones((5, 2, 3)))[0].shape
    (True, ['bias_ih_l0', 'weight_ih_l0'], (5, 2, 4))
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
        *,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        mode: Mode | str = "auto",
        chunk: int | None = None,
        rngs: nnx.Rngs,
    ):
        MinSpec(
            self.kind, input_size, hidden_size, num_layers, bool(bias), bool(bidirectional)
        ).validate()
        resolve_mode(mode)
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
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.mode = mode
        self.chunk = chunk
        self.deterministic = False  # torch modules start in training mode
        values = init_min_params(
            rngs.params(),
            self.kind,
            input_size,
            hidden_size,
            num_layers,
            bias=self.bias,
            bidirectional=self.bidirectional,
            dtype=param_dtype,
        )
        self._set_params(values, rngs, num_layers)

    def __call__(
        self, x: Array, hx: Array | None = None, lengths: Array | None = None
    ) -> tuple[Array, Array]:
        x, hx, train, key = self._call_inputs(x, hx)
        return run_min_stack(
            self.kind,
            self.params_dict(),
            x,
            hx,
            lengths,
            batch_first=self.batch_first,
            mode=self.mode,
            dropout=self.dropout,
            train=train,
            key=key,
            dtype=self.dtype,
            chunk=self.chunk,
        )


class MinGRU(MinRNNBase):
    """Multi-layer minGRU (Feng et al. 2024): ``h_t = (1 - z) h_{t-1} + z h~``, gates of x only.

    ::

        z = sigmoid(x W_z^T + b_z)      h~ = x W_h^T + b_h      (weight_ih rows [z; h~])

    ``MinGRU(input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
    dropout=0.0, bidirectional=False, *, dtype=None, param_dtype=jnp.float32,
    mode='auto', chunk=None, rngs)``. Call: ``out, h_n = m(x, hx=None, lengths=None)``,
    shapes as :class:`GRU`. See :func:`jaxseq.min_gru`.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> m = MinGRU(3, 4, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0))
    >>> out, h_n = m(jnp.ones((6, 2, 3)), lengths=jnp.array([6, 2]))
    >>> out.shape, h_n.shape, m.weight_ih_l1_reverse.shape
    ((6, 2, 8), (4, 2, 4), (8, 8))
    """

    kind = "min_gru"


class MinLSTM(MinRNNBase):
    """Multi-layer minLSTM (Feng et al. 2024): ``h_t = f' h_{t-1} + i' h~``, gates of x only.

    ::

        f = sigmoid(x W_f^T + b_f)   i = sigmoid(x W_i^T + b_i)   h~ = x W_h^T + b_h
        f' = f / (f + i)             i' = i / (f + i)             (weight_ih rows [f; i; h~])

    Arguments as :class:`MinGRU`; the carry is h alone (no cell state), so the call
    returns ``(out, h_n)``. See :func:`jaxseq.min_lstm`.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> m = MinLSTM(3, 4, batch_first=True, rngs=nnx.Rngs(0))
    >>> out, h_n = m(jnp.ones((2, 6, 3)))
    >>> out.shape, h_n.shape, m.weight_ih_l0.shape
    ((2, 6, 4), (1, 2, 4), (12, 3))
    """

    kind = "min_lstm"
