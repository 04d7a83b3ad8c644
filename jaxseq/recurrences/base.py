"""What a recurrence kind is: :class:`Recurrence`, one frozen definition per kind, and its registry.

Everything that differs between the Elman RNN, the LSTM and the GRU (and any kind a user
adds) lives in one :class:`Recurrence` value: its gate count, carry structure, options,
parameter init, its reference step and the pieces of the fused path (the forward step
that also saves the backward's coefficients, the backward step, and the gate gradients).
The stack (:mod:`jaxseq.stack`), the masked scan and the fused path
(:mod:`jaxseq.fused`) are generic over it: nothing outside a definition and
:func:`register` branches on the kind.

Conventions every definition follows (written once, here):

* **Parameters** keep PyTorch's names and layout, per layer and direction, stripped of
  the ``_l{k}{_reverse}`` suffix (G = ``num_gates``, H_out = proj_size or H)::

      weight_ih  (G*H, I)    weight_hh  (G*H, H_out)    bias_ih, bias_hh  (G*H,)
      weight_hr  (H_out, H)  only for kinds with ``projection=True`` and proj_size > 0

  Both biases are kept separately, as torch keeps them. A kind may declare more
  per-layer parameters (:attr:`Recurrence.extra_params`, e.g. layer-norm gains and
  biases); they follow these, named and suffixed the same way.
* **Carry**: ``h`` (N, H_out) for kinds with one state; ``(h, c)`` with c (N, H) for kinds
  with ``cell_state=True``. The output y of a step is the new ``h``.
* **Gate order** is the kind's torch order (LSTM i, f, g, o; GRU r, z, n).
* **Reference step**: ``step(params, carry, gx) -> (carry, y)`` where
  ``gx = x W_ih^T + b_ih`` (N, G*H) is the input projection (:func:`input_projection`).
  A kind with several nonlinearities (the Elman RNN's tanh and relu) binds one into its
  step and fused pieces (:meth:`Recurrence.bind`), as torch's ``RNN_TANH`` / ``RNN_RELU``.
* **The family** is the type of :attr:`Recurrence.fast`: :class:`Fused` (gated kinds with
  the pieces below), :class:`Linear` (``h_t = a_t h_{t-1} + b_t``), or None (a kind with
  only its reference step, served by the plain scans).
* **Fused pieces** (:class:`Fused`; shapes with a leading direction axis D, see
  :mod:`jaxseq.fused`)::

      forward(w, carry, gx, gh, valid) -> (carry', y, (scan_res, post_res))
          gx (D, N, G*H) input part (b_ih included); gh (D, N, G*H) = h W_hh^T + b_hh, or
          None when ``additive`` and the fused path already added it into gx (one
          [x, h] matmul per step); valid (D, N, 1) bool. Must freeze the carry and zero y
          where not valid. ``scan_res`` (tuple of arrays) holds the backward step's
          coefficients, with the mask folded in: on an invalid step the backward must
          pass the carried gradient through unchanged and emit zero gate gradients.
          ``post_res`` holds what only :attr:`gate_grads` needs.
      backward(w, dcarry, dy, scan_res, hmat) -> (dcarry_prev, emitted)
          dcarry like the carry; dy (D, N, H_out); hmat(dG) = dG W_hh, (D, N, G*H) ->
          (D, N, H_out), called once per step (with ``dgh_field`` set, after the
          step's last read of that field of ``scan_res``).
      gate_grads(emitted, scan_res, post_res, w) -> (dgx, dgh, extra)
          all stacked over steps (T, D, N, ...), with the field
          :attr:`Fused.dgh_field` of ``scan_res`` (when the kind sets it) holding the
          stacked ``hmat``
          arguments instead of the coefficients; dgx / dgh (T, D, N, G*H) the gradients
          of the input projection and of h W_hh^T + b_hh (the same array when they
          coincide); extra: gradients of other fused weights (e.g. ``w_hr``, or the
          kind's extra parameters, keyed by base name).

  ``w`` holds the fused layer's weights: ``w_hh_t`` (D, H_out, G*H), ``b_hh`` (D, G*H)
  or None, ``w_hr`` (D, H_out, H) or None, and the kind's :attr:`Recurrence.extra_params`
  under their base names, each (D, ...) in the carry's dtype.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Params = Mapping[str, Array]

#: The kinds that ship with jaxseq. Registered kinds are plain strings too.
Kind = Literal["rnn", "lstm", "gru", "min_gru", "min_lstm", "layernorm_lstm", "layernorm_gru"]

__all__ = [
    "Kind",
    "Recurrence",
    "Fused",
    "Linear",
    "linear_kind",
    "register",
    "get",
    "registered",
    "unregister",
    "input_projection",
    "linear",
    "torch_uniform_init",
]


def linear(x: Array, w: Array, b: Array | None, out_dtype: Any = None) -> Array:
    """``x @ w.T + b`` with w in PyTorch's (out, in) layout.

    Dtypes: with ``out_dtype`` given, or when x is a wider float than w (a float32 carry
    against bfloat16 weights: the mixed-precision policy of :func:`jaxseq.stack.run_stack`),
    the product is taken in w's dtype and accumulated and returned in ``out_dtype``
    (default x's dtype), with b added in that dtype. Otherwise both are promoted as ``@``
    promotes them.

    Written as a dot contracting x's last axis with w's second, not ``x @ w.T``: outside
    a loop that hoists it, XLA's CPU backend materialised ``w.T`` as a copy on every call.
    """
    x, w = jnp.asarray(x), jnp.asarray(w)
    if out_dtype is None and x.dtype != w.dtype and _wider_float(x.dtype, w.dtype):
        out_dtype = x.dtype
    if out_dtype is not None:
        y = jax.lax.dot_general(
            x.astype(w.dtype),
            w,
            (((x.ndim - 1,), (1,)), ((), ())),
            preferred_element_type=out_dtype,
        )
        b = None if b is None else jnp.asarray(b).astype(out_dtype)
        return y if b is None else y + b.reshape((1,) * (y.ndim - 1) + b.shape)
    dtype = jnp.result_type(x, w)  # the promotion ``@`` applies (strict mode raises)
    x, w = jnp.asarray(x, dtype), jnp.asarray(w, dtype)
    y = jax.lax.dot_general(x, w, (((x.ndim - 1,), (1,)), ((), ())))
    # Explicit rank match: the suite runs with jax_numpy_rank_promotion="raise".
    return y if b is None else y + b.reshape((1,) * (y.ndim - 1) + b.shape)


def _wider_float(a: Any, b: Any) -> bool:
    """a and b floating, a with more bits than b."""
    return bool(
        jnp.issubdtype(a, jnp.floating)
        and jnp.issubdtype(b, jnp.floating)
        and jnp.dtype(a).itemsize > jnp.dtype(b).itemsize
    )


def input_projection(params: Params, x: Array, out_dtype: Any = None) -> Array:
    """The input half of every cell: ``x W_ih^T + b_ih``.

    It does not depend on the carry, so the fast path applies it to all T steps at once
    (one (T*N, I) x (I, G*H) matmul) before the scan.

    Args:
      params: ``weight_ih`` (G*H, I) and optional ``bias_ih`` (G*H,).
      x: (..., I): one step (N, I) or a whole sequence (T, N, I).
      out_dtype: the dtype to accumulate and return in (the carry dtype of the
        mixed-precision policy); default: as :func:`linear`.

    Returns:
      (..., G*H), the gates' input contributions in the cell's gate order.

    >>> import jax.numpy as jnp
    >>> p = {"weight_ih": jnp.ones((8, 3)), "bias_ih": jnp.arange(8.0)}
    >>> gx = input_projection(p, jnp.ones((5, 2, 3)))   # (T, N, I) -> (T, N, 4H)
    >>> gx.shape, gx[0, 0].tolist()
    ((5, 2, 8), [3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0])
    """
    return linear(x, params["weight_ih"], params.get("bias_ih"), out_dtype)


def torch_uniform_init(key: Array, shape: tuple[int, ...], dtype: Any, hidden_size: int) -> Array:
    """PyTorch's init for every recurrent parameter: U(-1/sqrt(H), 1/sqrt(H))."""
    bound = 1.0 / np.sqrt(hidden_size)
    return jax.random.uniform(key, shape, dtype, -bound, bound)


StepFn = Callable[[Params, Any, Array], tuple[Any, Array]]
#: ``extra_params(hidden_size) -> {base name: (shape, init)}``, init ``"ones"`` or ``"zeros"``.
ExtraParams = Callable[[int], Mapping[str, tuple[tuple[int, ...], str]]]
_CONSTANT_INITS = {"ones": jnp.ones, "zeros": jnp.zeros}


@dataclasses.dataclass(frozen=True)
class Fused:
    """The gated fast path's pieces of a kind (module docstring); read by :mod:`jaxseq.fused`.

    Attributes:
      forward: ``forward(w, carry, gx, gh, valid) -> (carry', y, (scan_res, post_res))``.
      backward: ``backward(w, dcarry, dy, scan_res, hmat) -> (dcarry_prev, emitted)``.
      gate_grads: ``gate_grads(emitted, scan_res, post_res, w) -> (dgx, dgh, extra)``.
      additive: the gates see the input and hidden parts only through their sum
        ``gx + gh``, so the fused path may compute both with one ``[x, h]`` matmul.
      dgh_field: the field of ``scan_res`` (a NamedTuple) holding an array of the gate
        gradient's shape that the fused backward scan overwrites, slot t after step t has
        read it, with the argument of that step's ``hmat`` call: ``gate_grads`` then finds
        the stacked ``hmat`` arguments, the gradient of ``h W_hh^T + b_hh``, in that field
        and no (T, D, N, G*H) buffer of their own is needed. None: nothing is overwritten
        (``scan_res`` may then be any tuple).
      cpu_projection: where the fused path computes the input projection on XLA's CPU
        backend by default (:func:`jaxseq.fused.default_projection`): ``"hoisted"``
        (one matmul before the scan) or ``"loop"`` (in the per-step matmul).
    """

    forward: Callable[..., tuple[Any, Array, tuple[Any, Any]]]
    backward: Callable[..., tuple[Any, Any]]
    gate_grads: Callable[..., tuple[Array, Array, dict[str, Array]]]
    additive: bool = True
    dgh_field: str | None = None
    cpu_projection: Literal["loop", "hoisted"] = "hoisted"


@dataclasses.dataclass(frozen=True)
class Linear:
    """The linear fast path of a kind (:func:`linear_kind`): ``coefficients(gx) -> (a, b)``,
    each (..., H), of ``h_t = a_t * h_{t-1} + b_t``; read by :func:`jaxseq.impls.linear_layer`."""

    coefficients: Callable[[Array], tuple[Array, Array]]


#: ``variants(nonlinearity) -> (step, fast)``: a kind's step and fast path for each of its
#: nonlinearities (:meth:`Recurrence.bind`).
Variants = Callable[[str], tuple[StepFn, "Fused | Linear | None"]]


@dataclasses.dataclass(frozen=True)
class Recurrence:
    """One recurrence kind: everything the stack and the fused path need to know about it.

    Attributes:
      name: the registry key and the ``kind`` string (``"lstm"``).
      display_name: the class name used in messages, as torch's (``"LSTM"``).
      num_gates: G; ``weight_ih`` / ``weight_hh`` have G*H rows.
      step: the reference step ``step(params, carry, gx) -> (carry, y)``.
      fast: the family and its fast path: :class:`Fused` pieces (gated kinds),
        :class:`Linear` coefficients (``h_t = a_t * h_{t-1} + b_t``, no ``weight_hh``),
        or None (served by the plain scans only).
      cell_state: the carry is ``(h, c)`` (LSTM) rather than ``h``.
      projection: the kind supports ``proj_size`` (``weight_hr``).
      nonlinearities: the accepted ``nonlinearity`` values, the first the default.
      variants: for kinds with several nonlinearities, ``variants(nl) -> (step, fast)``;
        :meth:`bind` uses it. ``step`` and ``fast`` compute ``nonlinearity``.
      nonlinearity: the nonlinearity ``step`` and ``fast`` compute (None: the first of
        ``nonlinearities``).
      init: ``init(key, shape, dtype, hidden_size) -> array`` for every parameter.
      torch_twin: the PyTorch layer class of the kind, as ``"module:name"`` (e.g.
        ``"torch.nn:LSTM"``), for :func:`jaxseq.interop.from_torch` / ``to_torch``; its
        cell class, where there is one, is the same name with ``Cell`` appended.
      extra_params: per-layer parameters beyond torch's RNN ones, as
        ``extra_params(hidden_size) -> {base name: (shape, init)}`` with init ``"ones"``
        or ``"zeros"`` (layer-norm gains and biases: :mod:`jaxseq.recurrences.layernorm`).
        They follow the plain ones in :meth:`layer_shapes`, are present whatever
        ``bias`` is, and reach the step in ``params`` under their base names.
    """

    name: str
    display_name: str
    num_gates: int
    step: StepFn
    fast: Fused | Linear | None = None
    cell_state: bool = False
    projection: bool = False
    nonlinearities: tuple[str, ...] = ("tanh",)
    variants: Variants | None = None
    nonlinearity: str | None = None
    init: Callable[[Array, tuple[int, ...], Any, int], Array] = torch_uniform_init
    torch_twin: str | None = None
    extra_params: ExtraParams | None = None

    # ----------------------------------------------------------------- family

    @property
    def is_linear(self) -> bool:
        """A linear kind (``fast`` is :class:`Linear`): gates of the input only,
        ``h_t = a_t * h_{t-1} + b_t``, no ``weight_hh`` (minGRU, minLSTM)."""
        return isinstance(self.fast, Linear)

    @property
    def fused(self) -> Fused | None:
        """The gated fast path's pieces, or None for the other families."""
        return self.fast if isinstance(self.fast, Fused) else None

    @functools.cache  # noqa: B019  (kinds live as long as the registry holds them)
    def bind(self, nonlinearity: str | None = None) -> Recurrence:
        """The kind with ``nonlinearity`` bound into its step and fast path, as torch's
        ``RNN_TANH`` / ``RNN_RELU``; itself when it computes that one already (every kind
        with a single nonlinearity). Memoised, so equal calls give the same value and jit
        caches keyed on it hold.

        >>> relu = get("rnn").bind("relu")
        >>> relu.nonlinearity, relu is get("rnn").bind("relu"), get("gru").bind() is get("gru")
        ('relu', True, True)
        """
        nl = self.nonlinearities[0] if nonlinearity is None else nonlinearity
        if nl == (self.nonlinearity or self.nonlinearities[0]):
            return self
        if nl not in self.nonlinearities or self.variants is None:
            raise ValueError(
                f"{self.display_name} takes nonlinearity in {list(self.nonlinearities)}, got {nl!r}"
            )
        step, fast = self.variants(nl)
        return dataclasses.replace(self, step=step, fast=fast, nonlinearity=nl)

    # ----------------------------------------------------------------- carry structure

    @property
    def num_states(self) -> int:
        """1 (carry ``h``) or 2 (carry ``(h, c)``)."""
        return 2 if self.cell_state else 1

    def state_sizes(self, hidden_size: int, output_size: int) -> tuple[int, ...]:
        """Trailing size of each state: ``(H_out,)`` or ``(H_out, H)``."""
        return (output_size, hidden_size)[: self.num_states]

    def carry(self, states: tuple[Any, ...]) -> Any:
        """States tuple -> the kind's carry (``h`` or ``(h, c)``)."""
        return tuple(states) if self.cell_state else states[0]

    def states(self, carry: Any) -> tuple[Any, ...]:
        """The kind's carry -> a tuple of states (``(h,)`` or ``(h, c)``)."""
        return tuple(carry) if self.cell_state else (carry,)

    # ----------------------------------------------------------------- parameters

    def layer_shapes(
        self, input_size: int, hidden_size: int, proj_size: int = 0, bias: bool = True
    ) -> dict[str, tuple[int, ...]]:
        """``{base name: shape}`` of one layer and direction, in torch's order."""
        g = self.num_gates * hidden_size
        out = proj_size if proj_size > 0 else hidden_size
        shapes: dict[str, tuple[int, ...]] = {"weight_ih": (g, input_size)}
        if not self.is_linear:
            shapes["weight_hh"] = (g, out)
        if bias:
            shapes["bias_ih"] = (g,)
            if not self.is_linear:
                shapes["bias_hh"] = (g,)
        if proj_size > 0:
            shapes["weight_hr"] = (proj_size, hidden_size)
        shapes.update({base: tuple(shape) for base, (shape, _) in self._extra(hidden_size).items()})
        return shapes

    def _extra(self, hidden_size: int) -> Mapping[str, tuple[tuple[int, ...], str]]:
        return {} if self.extra_params is None else self.extra_params(hidden_size)

    @property
    def base_names(self) -> tuple[str, ...]:
        """Every per-layer parameter name the kind can have (with bias and, where the kind
        supports one, a projection), in torch's order: the names :mod:`jaxseq.params`
        accepts (with the ``_l{k}{_reverse}`` suffix) and the stack stacks by direction.

        >>> get("gru").base_names
        ('weight_ih', 'weight_hh', 'bias_ih', 'bias_hh')
        """
        return tuple(self.layer_shapes(1, 1, 1 if self.projection else 0, True))

    def init_param(
        self, base: str, key: Array, shape: tuple[int, ...], dtype: Any, hidden_size: int
    ) -> Array:
        """The initial value of the parameter ``base`` (a base name): the constant of an
        extra parameter (:attr:`extra_params`), else :attr:`init`."""
        extra = self._extra(hidden_size)
        if base in extra:
            how = extra[base][1]
            if how not in _CONSTANT_INITS:
                raise ValueError(
                    f"{self.display_name}: extra parameter {base!r} has init {how!r}; "
                    f"expected one of {sorted(_CONSTANT_INITS)}"
                )
            return _CONSTANT_INITS[how](shape, dtype)
        return self.init(key, shape, dtype, hidden_size)

    def cell(self, out_dtype: Any = None) -> Callable[[Params, Any, Array], tuple[Any, Array]]:
        """The whole reference cell ``cell(params, carry, x) -> (carry, y)`` of the bound
        kind (:meth:`bind`); the input projection accumulated in ``out_dtype`` (see
        :func:`input_projection`)."""
        return lambda p, carry, x: self.step(p, carry, input_projection(p, x, out_dtype))


def linear_kind(
    name: str,
    display_name: str,
    num_gates: int,
    coefficients: Callable[[Array], tuple[Array, Array]],
    torch_twin: str | None = None,
) -> Recurrence:
    """A linear recurrence kind: ``h_t = a_t * h_{t-1} + b_t`` with ``(a_t, b_t) =
    coefficients(x_t W_ih^T + b_ih)``.

    Its gates read the input only, so there is no ``weight_hh``: a layer's parameters are
    ``weight_ih`` (G*H, I) and, with ``bias``, ``bias_ih`` (G*H,). The reference step is
    the recurrence itself; the fast implementations (``impl="fused"`` and its
    ``fused_scan`` / ``fused_parallel`` / ``fused_chunked`` variants) compute every
    step's coefficients at once and solve the recurrence sequentially, with
    ``jax.lax.associative_scan`` or in chunks (:mod:`jaxseq.linear_scan`).

    >>> import jax.numpy as jnp
    >>> leaky = linear_kind("leaky", "Leaky", 1, lambda gx: (jnp.full_like(gx, 0.5), gx))
    >>> leaky.is_linear, list(leaky.layer_shapes(3, 4))
    (True, ['weight_ih', 'bias_ih'])
    >>> leaky.step({}, jnp.ones((1, 4)), jnp.full((1, 4), 2.0))[0].tolist()
    [[2.5, 2.5, 2.5, 2.5]]
    """

    def step(params: Params, h: Array, gx: Array) -> tuple[Array, Array]:
        a, b = coefficients(gx)
        h = a * h + b
        return h, h

    return Recurrence(
        name, display_name, num_gates, step, fast=Linear(coefficients), torch_twin=torch_twin
    )


_REGISTRY: dict[str, Recurrence] = {}


def register(rec: Recurrence, *, overwrite: bool = False) -> Recurrence:
    """Make ``rec`` available as ``kind=rec.name`` to the stack, the fused path and modules.

    Returns ``rec``. Registering a taken name raises unless ``overwrite=True``.
    """
    if not isinstance(rec, Recurrence):
        raise TypeError(f"register expects a Recurrence, got {type(rec).__name__}")
    if rec.name in _REGISTRY and not overwrite and _REGISTRY[rec.name] is not rec:
        raise ValueError(f"a recurrence named {rec.name!r} is already registered")
    _REGISTRY[rec.name] = rec
    return rec


def get(kind: str | Recurrence) -> Recurrence:
    """The registered :class:`Recurrence` for ``kind`` (a definition passes through).

    >>> get("gru").num_gates, get("lstm").num_states
    (3, 2)
    """
    if isinstance(kind, Recurrence):
        return kind
    rec = _REGISTRY.get(kind) if isinstance(kind, str) else None
    if rec is None:
        names = ", ".join(repr(k) for k in _REGISTRY)
        raise ValueError(f"Unknown RNN kind {kind!r}; expected one of {names}")
    return rec


def unregister(name: str) -> None:
    """Remove a registered kind (for tests and interactive use); unknown names are ignored."""
    _REGISTRY.pop(name, None)


def registered() -> dict[str, Recurrence]:
    """A copy of the registry: ``{name: Recurrence}``."""
    return dict(_REGISTRY)
