"""Flax NNX modules ``RNN``, ``LSTM``, ``GRU`` with ``torch.nn``'s signatures.

The modules hold parameters as ``nnx.Param`` attributes named exactly as torch names them
(``weight_ih_l0``, ``bias_hh_l1_reverse``, ``weight_hr_l0`` …, both biases kept) and call
the functional stack (:func:`jaxseq.stack.run_stack`); they add no logic of their own.

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

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxseq.impls import Impl
from jaxseq.options import LayerOptions
from jaxseq.params import RNNSpec, init_params
from jaxseq.recurrences import Recurrence, get
from jaxseq.regularizers import draw_masks
from jaxseq.stack import run_stack
from jaxseq.stepping import prepare_step, step
from jaxseq.validation import (
    check_cell_inputs,
    check_dropout,
    check_flags,
    check_input,
    check_nonlinearity,
    check_rngs,
    check_same_dtype,
    check_structure,
    compute_dtype,
)

Array = jax.Array

__all__ = [
    "RNNBase",
    "RNN",
    "LSTM",
    "GRU",
    "MinGRU",
    "MinLSTM",
    "LayerNormLSTM",
    "LayerNormGRU",
    "module_class",
    "RNNCellBase",
    "RNNCell",
    "LSTMCell",
    "GRUCell",
    "LayerNormLSTMCell",
    "LayerNormGRUCell",
]


class RNNBase(nnx.Module):
    """The layer modules' one constructor and call; each kind is a ``kind = ...`` subclass.

    Arguments as ``torch.nn.RNN`` / ``LSTM`` / ``GRU`` (checked as torch checks them),
    plus keyword-only ``dtype`` (computation dtype; None: the promotion of the input and
    parameter dtypes), ``param_dtype``, ``unroll``, ``impl``, ``remat``, ``chunk``,
    ``carry_dtype`` (mixed precision; see
    :func:`jaxseq.stack.run_stack`) and ``rngs``. Parameters are ``nnx.Param`` attributes
    named as torch names them (``weight_ih_l0``, ``bias_hh_l1_reverse`` ...).

    Dropout follows torch: applied to the outputs of every layer but the last, in
    training mode only. Modules start in training mode, as torch's do; ``.eval()``
    turns dropout off and ``.train()`` turns it back on. The dropout key comes from the
    ``dropout`` stream of the ``rngs`` given at construction (or the default stream).

    The recurrent regularisers (keyword-only rates, 0 = off; :mod:`jaxseq.regularizers`):
    ``input_dropout`` and ``output_dropout`` (variational dropout on the stack's input
    and on every layer's output, one mask per sequence and layer), ``recurrent_dropout``
    (variational dropout on the h that enters ``W_hh``), ``weight_dropout`` (DropConnect
    on ``weight_hh``, one mask per call, the AWD-LSTM's WeightDrop) and ``zoneout``
    (Krueger et al.; in eval mode its expectation). Drawn from the same ``dropout``
    stream in training mode and served by the fused path (``recurrent_dropout`` and
    ``zoneout`` need it).

    A registered kind gets its module by subclassing: ``class Leaky(RNNBase): kind =
    "leaky"``; :func:`module_class` finds the subclass of a kind.
    """

    kind: str = ""
    _classes: dict[str, type[RNNBase]] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.kind:
            RNNBase._classes[cls.kind] = cls

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
        chunk: int | None = None,
        carry_dtype: Any = None,
        input_dropout: float = 0.0,
        output_dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        weight_dropout: float = 0.0,
        zoneout: float = 0.0,
        rngs: nnx.Rngs,
    ):
        check_flags(bias=bias, batch_first=batch_first, bidirectional=bidirectional)
        spec = RNNSpec(
            self.kind, input_size, hidden_size, num_layers, bias, bidirectional, proj_size
        )
        spec.validate()
        check_nonlinearity(spec.recurrence, nonlinearity)
        self.dropout = check_dropout(dropout)
        check_rngs(rngs)
        #: How the layer runs, one checked value (:class:`jaxseq.options.LayerOptions`).
        self.options = LayerOptions(
            impl=impl,
            unroll=unroll,
            remat=remat,
            chunk=chunk,
            carry_dtype=carry_dtype,
            input_dropout=input_dropout,
            output_dropout=output_dropout,
            recurrent_dropout=recurrent_dropout,
            weight_dropout=weight_dropout,
            zoneout=zoneout,
        ).check(spec)
        #: The stack's structure (:class:`jaxseq.params.RNNSpec`), built once.
        self.spec = spec
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        self.nonlinearity = nonlinearity
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.deterministic = False  # torch modules start in training mode
        values = init_params(
            rngs.params(),
            self.kind,
            input_size,
            hidden_size,
            num_layers,
            bias=bias,
            bidirectional=bidirectional,
            proj_size=proj_size,
            dtype=param_dtype,
        )
        self._param_names = tuple(values)
        for name, value in values.items():
            setattr(self, name, nnx.Param(value))
        self.dropout_rngs = rngs["dropout"].fork() if self.dropout > 0 and num_layers > 1 else None
        self.mask_rngs = rngs["dropout"].fork() if self.options.regularized else None

    @property
    def recurrence(self) -> Recurrence:
        """The module's recurrence definition (:mod:`jaxseq.recurrences`)."""
        return get(self.kind)

    @property
    def regularizers(self) -> dict[str, float]:
        """The recurrent regularisers' rates, by option name (:mod:`jaxseq.regularizers`)."""
        return self.options.rates()

    def params_dict(self) -> dict[str, Array]:
        """The parameters as a flat ``{torch name: array}`` dict (for the functional API)."""
        return {name: getattr(self, name)[...] for name in self._param_names}

    def __call__(
        self,
        x: Array,
        hx: Any = None,
        lengths: Array | None = None,
        *,
        resets: Any = None,
        reset_hx: Any = None,
        return_all_states: bool = False,
    ) -> tuple[Any, ...]:
        """``(out, h_n)`` or ``(out, (h_n, c_n))``; shapes as :func:`jaxseq.stack.run_stack`.

        ``resets``: optional bool array with the time and batch axes of ``x``; a True
        starts a new, independent episode of that row, from zeros (episode boundaries,
        as RL code passes ``dones``; see :func:`jaxseq.stack.run_stack`); ``hx`` only
        continues each row from the previous batch; ``reset_hx``: the state new episodes
        start from instead of zeros. ``return_all_states``: also return the states after
        every step, ``(out, h_n, states)`` (as :func:`jaxseq.stack.run_stack`; with
        packed episodes, :func:`jaxseq.data.episode_states` picks each one's final)."""
        train = not self.deterministic
        key = None
        if train and self.dropout > 0 and self.dropout_rngs is not None:
            key = self.dropout_rngs()
        masks = None
        if self.options.regularized:
            check_input(self.recurrence.display_name, x, self.input_size)  # before its shape
            T, N = (x.shape[0], 1) if x.ndim == 2 else x.shape[:2][:: -1 if self.batch_first else 1]
            mask_key = self.mask_rngs() if train and self.mask_rngs is not None else None
            dtype = self.dtype if self.dtype is not None else self.param_dtype
            masks = draw_masks(
                mask_key, self.spec, T, N, train=train, dtype=dtype, **self.options.rates()
            )
        if self.dtype is not None and hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating):
            x = jnp.asarray(x, self.dtype)
            hx, reset_hx = jax.tree.map(
                lambda a: jnp.asarray(a, self.dtype) if hasattr(a, "dtype") else a, (hx, reset_hx)
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
            dtype=self.dtype,
            resets=resets,
            reset_hx=reset_hx,
            masks=masks,
            return_all_states=return_all_states,
            **self.options.stack_kwargs(),
        )

    def step(self, x_t: Array, state: Any = None) -> tuple[Array, Any]:
        """One time step of the whole stack: ``(y_t, new_state)``, the state taken and
        returned as one value, structured as ``hx``: (L, N, H_out), or ``(h, c)`` for kinds
        with a cell state (None: zeros). x_t (N, I) or unbatched (I,); y_t (N, H_out).

        Stepping T times equals the call on the T steps with ``hx=state`` (as in eval
        mode: no dropout). Uni-directional layers only. Each call lays the weights out
        for the step; in a loop, lay them out once with ``jaxseq.prepare_step(layer)``
        and call :func:`jaxseq.step` (:mod:`jaxseq.stepping`)."""
        name = self.recurrence.display_name
        if self.options.zoneout > 0:
            raise ValueError(
                f"{name}.step: zoneout={self.options.zoneout} acts in the full call only"
            )
        dropout = self.dropout > 0 and self.num_layers > 1
        if not self.deterministic and (dropout or self.options.regularized):
            raise ValueError(f"{name}.step runs without dropout: call .eval() on the layer first")
        dtype = self.dtype
        if dtype is None and hasattr(x_t, "dtype") and jnp.issubdtype(x_t.dtype, jnp.floating):
            dtype = compute_dtype(x_t.dtype, self.param_dtype)
        weights = prepare_step(
            self.kind,
            self.params_dict(),
            nonlinearity=self.nonlinearity,
            dtype=dtype,
            carry_dtype=self.options.carry_dtype,
        )
        return step(weights, x_t, state)


def module_class(kind: str | Recurrence, cell: bool = False) -> type[nnx.Module]:
    """The layer module (or with ``cell=True`` the cell module) of a registered kind:
    ``module_class("gru") is GRU``, ``module_class("gru", cell=True) is GRUCell``.

    >>> module_class("min_lstm").__name__
    'MinLSTM'
    """
    rec = get(kind)
    base: Any = RNNCellBase if cell else RNNBase
    cls = base._classes.get(rec.name)
    if cls is None:
        raise ValueError(
            f"no jaxseq.nn module for kind {rec.name!r}; define one with "
            f"class {rec.display_name}(jaxseq.nn.{base.__name__}): kind = {rec.name!r}"
        )
    return cls


class RNN(RNNBase):
    """Multi-layer Elman RNN, as ``torch.nn.RNN``; equations in :mod:`jaxseq.recurrences.elman`.

    ``RNN(input_size, hidden_size, num_layers=1, nonlinearity='tanh', bias=True,
    batch_first=False, dropout=0.0, bidirectional=False, *, dtype=None,
    param_dtype=jnp.float32, unroll=1, impl='fused', remat=None, rngs)``.

    Call: ``out, h_n = rnn(x, hx=None, lengths=None)`` with x (T, N, I) (or (N, T, I)
    with ``batch_first``, or unbatched (T, I)), hx (L*D, N, H); out (T, N, D*H), h_n
    (L*D, N, H). See :func:`jaxseq.stack.run_stack` for the meaning of ``lengths``.

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
        # torch's positional order puts nonlinearity fourth; proj_size is refused with
        # torch's message by RNNSpec.validate().
        kw.setdefault("proj_size", 0)
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            nonlinearity=nonlinearity,
            **kw,
        )


class LSTM(RNNBase):
    """Multi-layer LSTM, as ``torch.nn.LSTM`` (optional ``proj_size``); equations in
    :mod:`jaxseq.recurrences.lstm`.

    ``LSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
    dropout=0.0, bidirectional=False, proj_size=0, *, dtype=None,
    param_dtype=jnp.float32, unroll=1, impl='fused', remat=None, rngs)``.

    Call: ``out, (h_n, c_n) = lstm(x, hx=None, lengths=None)``; hx is ``(h0, c0)`` with h0
    (L*D, N, H_out), c0 (L*D, N, H); out (T, N, D*H_out).

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> lstm = LSTM(3, 8, proj_size=2, bidirectional=True, rngs=nnx.Rngs(0))
    >>> out, (h_n, c_n) = lstm(jnp.ones((6, 5, 3)), lengths=jnp.array([6, 1, 0, 3, 6]))
    >>> out.shape, h_n.shape, c_n.shape
    ((6, 5, 4), (2, 5, 2), (2, 5, 8))
    """

    kind = "lstm"


class GRU(RNNBase):
    """Multi-layer GRU, as ``torch.nn.GRU``; equations in :mod:`jaxseq.recurrences.gru`.

    ``GRU(input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
    dropout=0.0, bidirectional=False, *, dtype=None, param_dtype=jnp.float32, unroll=1,
    impl='fused', remat=None, rngs)``.

    Call: ``out, h_n = gru(x, hx=None, lengths=None)`` with x (T, N, I) (or (N, T, I)
    with ``batch_first``, or unbatched (T, I)), hx (L*D, N, H); out (T, N, D*H), h_n
    (L*D, N, H).

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> gru = GRU(3, 4, num_layers=2, rngs=nnx.Rngs(0))
    >>> out, h_n = gru(jnp.ones((6, 2, 3)))
    >>> out.shape, h_n.shape
    ((6, 2, 4), (2, 2, 4))
    """

    kind = "gru"


class MinGRU(RNNBase):
    """Multi-layer minGRU (Feng et al. 2024); equations in :mod:`jaxseq.recurrences.minimal`.

    ``MinGRU(input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
    dropout=0.0, bidirectional=False, *, dtype=None, param_dtype=jnp.float32,
    impl='fused', chunk=None, rngs)``, ``impl`` one of the linear kinds'
    (:func:`jaxseq.stack.run_stack`). Parameters ``weight_ih_l{k}{_reverse}`` (2H, in)
    and ``bias_ih_l{k}{_reverse}`` (2H,); no ``weight_hh``. Call: ``out, h_n = m(x,
    hx=None, lengths=None)``, shapes as :class:`GRU`.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> m = MinGRU(3, 4, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0))
    >>> out, h_n = m(jnp.ones((6, 2, 3)), lengths=jnp.array([6, 2]))
    >>> out.shape, h_n.shape, m.weight_ih_l1_reverse.shape
    ((6, 2, 8), (4, 2, 4), (8, 8))
    """

    kind = "min_gru"


class MinLSTM(RNNBase):
    """Multi-layer minLSTM (Feng et al. 2024); equations in :mod:`jaxseq.recurrences.minimal`.

    Arguments as :class:`MinGRU`, with ``weight_ih`` (3H, in); the carry is h alone (no
    cell state), so the call returns ``(out, h_n)``.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> m = MinLSTM(3, 4, batch_first=True, impl="fused_parallel", rngs=nnx.Rngs(0))
    >>> out, h_n = m(jnp.ones((2, 6, 3)))
    >>> out.shape, h_n.shape, m.weight_ih_l0.shape
    ((2, 6, 4), (1, 2, 4), (12, 3))
    """

    kind = "min_lstm"


class LayerNormLSTM(RNNBase):
    """Multi-layer layer-normalised LSTM (the LN-LSTM of Ba et al. 2016); equations in
    :mod:`jaxseq.recurrences.layernorm`, PyTorch twin ``torchseq.LayerNormLSTM``.

    ``LayerNormLSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
    dropout=0.0, bidirectional=False, *, dtype=None, param_dtype=jnp.float32, unroll=1,
    impl='fused', rngs)`` (no ``proj_size``) and the regularisers of :class:`RNNBase`.
    Parameters as :class:`LSTM`'s plus, per layer and direction, ``ln_ih_weight``,
    ``ln_ih_bias``, ``ln_hh_weight``, ``ln_hh_bias`` (4H,) and ``ln_c_weight``,
    ``ln_c_bias`` (H,) (gains 1, biases 0). Call: ``out, (h_n, c_n) = m(x, hx=None,
    lengths=None)``, shapes as :class:`LSTM`: out (T, N, D*H), h_n and c_n (L*D, N, H).

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> m = LayerNormLSTM(3, 4, bidirectional=True, rngs=nnx.Rngs(0))
    >>> out, (h_n, c_n) = m(jnp.ones((6, 2, 3)), lengths=jnp.array([6, 2]))
    >>> out.shape, c_n.shape, m.ln_c_weight_l0_reverse.shape, float(abs(out[2:, 1]).max())
    ((6, 2, 8), (2, 2, 4), (4,), 0.0)
    """

    kind = "layernorm_lstm"


class LayerNormGRU(RNNBase):
    """Multi-layer layer-normalised GRU (Ba et al. 2016); equations in
    :mod:`jaxseq.recurrences.layernorm`, PyTorch twin ``torchseq.LayerNormGRU``.

    Arguments as :class:`LayerNormLSTM`. Parameters as :class:`GRU`'s plus, per layer and
    direction, ``ln_ih_weight``, ``ln_ih_bias``, ``ln_hh_weight``, ``ln_hh_bias`` (3H,)
    (gains 1, biases 0). Call: ``out, h_n = m(x, hx=None, lengths=None)``, shapes as
    :class:`GRU`: out (T, N, D*H), h_n (L*D, N, H).

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> m = LayerNormGRU(3, 4, num_layers=2, rngs=nnx.Rngs(0))
    >>> out, h_n = m(jnp.ones((6, 2, 3)))
    >>> out.shape, h_n.shape, m.ln_hh_bias_l1.shape
    ((6, 2, 4), (2, 2, 4), (12,))
    """

    kind = "layernorm_gru"


# --------------------------------------------------------------------------- cells


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
    _classes: dict[str, type[RNNCellBase]] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.kind:
            RNNCellBase._classes[cls.kind] = cls

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
        # torch's messages for the sizes (as torch.nn.RNN's; torch's cells accept
        # hidden_size=0, a cell without state, which is refused here).
        check_flags(bias=bias)
        rec = self.recurrence
        check_structure(rec, input_size, hidden_size, 1, 0, cell=True)
        takes_nonlinearity = len(rec.nonlinearities) > 1
        check_nonlinearity(rec, nonlinearity)
        check_rngs(rngs)
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.bias = bool(bias)
        if takes_nonlinearity:  # as torch: only RNNCell has the attribute
            self.nonlinearity = nonlinearity
        self.dtype = dtype
        self.param_dtype = param_dtype
        # torch's cell names: a layer's names without their "_l0" suffix, in the same
        # order and from the same keys as init_params (which refuses input_size=0).
        shapes = rec.layer_shapes(self.input_size, self.hidden_size, 0, self.bias)
        keys = jax.random.split(rngs.params(), len(shapes))
        for key, (base, shape) in zip(keys, shapes.items(), strict=True):
            value = rec.init_param(base, key, shape, param_dtype, self.hidden_size)
            setattr(self, base, nnx.Param(value))
        self._param_names = tuple(shapes)

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
        """The parameters as a flat ``{torch name: array}`` dict (for :func:`jaxseq.lstm_cell` and the others)."""
        return {name: getattr(self, name)[...] for name in self._param_names}

    def __call__(self, x: Array, hx: Any = None) -> Any:
        name = self._name
        states = check_cell_inputs(
            name, x, hx, self.input_size, self.hidden_size, self.recurrence.num_states
        )
        if self.dtype is not None:
            x = jnp.asarray(x, self.dtype)
            states = [(a, b, jnp.asarray(h, self.dtype)) for a, b, h in states]
        for label, _, h in states:
            check_same_dtype(name, label, h, x.dtype)
        params = self.params_dict()
        dtype = compute_dtype(x.dtype, params["weight_ih"].dtype, self.dtype)
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
            cell = rec.bind(getattr(self, "nonlinearity", None)).cell()
            out = cell(params, rec.carry(tuple(hs)), x)[0]
        if unbatched:
            out = jax.tree.map(lambda a: a[0], out)
        return out


class RNNCell(RNNCellBase):
    """An Elman RNN cell, as ``torch.nn.RNNCell``: one time step with act = tanh or relu.


    ``RNNCell(input_size, hidden_size, bias=True, nonlinearity='tanh', *, dtype=None,
    param_dtype=jnp.float32, rngs)``.

    Parameters (I = input_size, H = hidden_size): ``weight_ih`` (H, I), ``weight_hh``
    (H, H), and with ``bias`` ``bias_ih`` (H,), ``bias_hh`` (H,).

    Call: ``h' = cell(x, hx=None)`` with x (N, I) and hx (N, H) -> h' (N, H), or
    unbatched x (I,), hx (H,) -> h' (H,); hx None means zeros. Built on
    :func:`jaxseq.rnn_cell`, equations in :mod:`jaxseq.recurrences.elman`. See :class:`RNNCellBase` for dtypes and errors.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> cell = RNNCell(3, 4, nonlinearity="relu", rngs=nnx.Rngs(0))
    >>> h = cell(jnp.ones((2, 3)))            # (N, I) -> (N, H)
    >>> h = cell(jnp.ones((2, 3)), h)
    >>> h.shape, cell(jnp.ones(3)).shape, bool((h >= 0).all())
    ((2, 4), (4,), True)
    """

    kind = "rnn"


class LSTMCell(RNNCellBase):
    """An LSTM cell, as ``torch.nn.LSTMCell`` (gate order i, f, g, o; no projection).


    ``LSTMCell(input_size, hidden_size, bias=True, *, dtype=None,
    param_dtype=jnp.float32, rngs)``.

    Parameters (I = input_size, H = hidden_size): ``weight_ih`` (4H, I), ``weight_hh``
    (4H, H), and with ``bias`` ``bias_ih`` (4H,), ``bias_hh`` (4H,); the gates stacked
    i, f, g, o as torch.

    Call: ``h', c' = cell(x, hx=None)`` with x (N, I), hx ``(h, c)`` each (N, H) ->
    h', c' (N, H); or unbatched x (I,), h, c (H,) -> h', c' (H,); hx None means zeros.
    Built on :func:`jaxseq.lstm_cell`, equations in :mod:`jaxseq.recurrences.lstm`. See :class:`RNNCellBase` for dtypes and
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


class GRUCell(RNNCellBase):
    """A GRU cell, as ``torch.nn.GRUCell`` (gate order r, z, n; reset after the hidden matmul).


    ``GRUCell(input_size, hidden_size, bias=True, *, dtype=None,
    param_dtype=jnp.float32, rngs)``.

    Parameters (I = input_size, H = hidden_size): ``weight_ih`` (3H, I), ``weight_hh``
    (3H, H), and with ``bias`` ``bias_ih`` (3H,), ``bias_hh`` (3H,); the gates stacked
    r, z, n as torch.

    Call: ``h' = cell(x, hx=None)`` with x (N, I) and hx (N, H) -> h' (N, H), or
    unbatched x (I,), hx (H,) -> h' (H,); hx None means zeros. Built on
    :func:`jaxseq.gru_cell`, equations in :mod:`jaxseq.recurrences.gru`. See :class:`RNNCellBase` for dtypes and errors.

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


class LayerNormLSTMCell(RNNCellBase):
    """One step of :class:`LayerNormLSTM` (Ba et al. 2016; equations in
    :mod:`jaxseq.recurrences.layernorm`): parameters as the layer's without the ``_l0``
    suffix (``weight_ih``, ``weight_hh``, biases, and the layer-norm gains and biases).

    Call: ``(h', c') = cell(x, hx=None)`` as :class:`LSTMCell`; ``from_layer`` copies one
    layer and direction of a :class:`LayerNormLSTM`.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> cell = LayerNormLSTMCell(3, 4, rngs=nnx.Rngs(0))
    >>> h, c = cell(jnp.ones((2, 3)))
    >>> h.shape, c.shape
    ((2, 4), (2, 4))
    """

    kind = "layernorm_lstm"


class LayerNormGRUCell(RNNCellBase):
    """One step of :class:`LayerNormGRU` (equations in
    :mod:`jaxseq.recurrences.layernorm`); call ``h' = cell(x, hx=None)`` as
    :class:`GRUCell`.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> LayerNormGRUCell(3, 4, rngs=nnx.Rngs(0))(jnp.ones(3)).shape
    (4,)
    """

    kind = "layernorm_gru"
