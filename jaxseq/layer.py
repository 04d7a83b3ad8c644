"""What crosses the seam between the stack and a layer implementation, as values.

:func:`jaxseq.stack.run_stack` calls one implementation per layer as
``impl(plan, w, x, states, seg, masks)``:

* :class:`Plan`, static and hashable: the kind with its nonlinearity bound, the
  implementation's name, ``unroll``, ``remat``, the projection / method variant,
  ``chunk`` and the carry dtype. It is the one non-differentiated static argument of the
  fused path's custom derivatives.
* :class:`Segments`, traced, built once per stack call: the (T, N) mask of valid steps,
  the episode resets and each direction's restart flags, and (sliced per layer) the
  states restarted segments begin from.
* :class:`StepMasks`, traced, per layer, never differentiated: the regularisers that act
  inside the recurrence (recurrent dropout on the h entering ``W_hh``, zoneout).

Each implementation is declared once, as a :class:`LayerImpl` in
:data:`jaxseq.impls.IMPLS`, with the kinds it serves and the :data:`Feature` s it
supports; :func:`check` turns that table into every capability error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, NamedTuple, Protocol

import jax

from jaxseq.fused_ops import direction_resets
from jaxseq.recurrences import Fused, Linear, Recurrence

Array = jax.Array
#: A layer's weights, torch-named and stacked by direction (leading axis D).
Weights = Mapping[str, Array]
#: A layer's states, each (D, N, ...): ``(h,)`` or ``(h, c)``.
States = tuple[Array, ...]
#: What a layer returns: ``(out (T, N, D*H_out), final states)``, and with
#: :attr:`Plan.all_states` its states after every step too (:class:`LayerFn`).
LayerOut = tuple[Array, States] | tuple[Array, States, States]

__all__ = [
    "Feature",
    "FEATURES",
    "Plan",
    "Segments",
    "StepMasks",
    "STEP_MASKS",
    "STEP_FEATURES",
    "LayerFn",
    "Weights",
    "States",
    "LayerOut",
    "LayerImpl",
    "check",
    "serving",
]

#: What a call may ask of an implementation beyond the plain masked layer. ``jvp`` and
#: ``vmap`` are transformations (declared for the conformance suite); the others are
#: asked for by the call's arguments.
Feature = Literal[
    "remat", "chunk", "resets", "reset_hx", "hidden_mask", "zoneout", "all_states", "jvp", "vmap"
]
FEATURES: tuple[Feature, ...] = (
    "remat",
    "chunk",
    "resets",
    "reset_hx",
    "hidden_mask",
    "zoneout",
    "all_states",
    "jvp",
    "vmap",
)


@dataclasses.dataclass(frozen=True)
class Plan:
    """How to run one layer: static and hashable (a ``jit`` / custom-derivative static).

    Attributes:
      rec: the kind, its nonlinearity bound (:meth:`~jaxseq.recurrences.Recurrence.bind`).
      impl: the implementation's name (a key of :data:`jaxseq.impls.IMPLS`).
      unroll: ``jax.lax.scan`` unroll of the forward and backward scans.
      remat: None, or a chunk length K: store every K-th carry, recompute inside chunks.
      project: the fused path's input projection, ``"loop"`` / ``"hoisted"``; None: the
        kind's default for the backend (:func:`jaxseq.fused.default_projection`).
      method: the linear path's solver, ``"auto"``, ``"sequential"``, ``"parallel"`` or
        ``"chunked"``.
      chunk: the chunk length of ``method="chunked"`` (None: about sqrt(T)).
      carry_dtype: the dtype of the carried state and of the matmuls' accumulation (the
        mixed-precision policy); None: the compute dtype.
      all_states: the layer also returns its states after every step (the
        ``"all_states"`` feature): ``(out, finals, seq)``, see :class:`LayerFn`.
    """

    rec: Recurrence
    impl: str = "fused"
    unroll: int = 1
    remat: int | None = None
    project: Literal["loop", "hoisted"] | None = None
    method: Literal["auto", "sequential", "parallel", "chunked"] = "auto"
    chunk: int | None = None
    carry_dtype: Any = None
    all_states: bool = False

    def with_(self, **changes: Any) -> Plan:
        """A copy with ``changes`` (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)


class Segments(NamedTuple):
    """The traced segment context of a call, built once (:meth:`build`).

    Attributes:
      mask: (T, N) bool, True at valid steps, or None (every step valid).
      resets: (T, N) bool, True where a new segment of a row starts, or None.
      restart: (T, D, N, 1) bool, time order: where each direction restarts from its
        reset state before the step (:func:`jaxseq.scan.reset_flags`), or None.
      reset_states: the states restarted segments begin from, each (D, N, ...) for one
        layer (:meth:`layer`), or None: the layer's initial states.
    """

    mask: Array | None = None
    resets: Array | None = None
    restart: Array | None = None
    reset_states: tuple[Array, ...] | None = None

    @classmethod
    def build(
        cls,
        mask: Array | None,
        resets: Array | None,
        num_directions: int,
        reset_states: tuple[Array, ...] | None = None,
    ) -> Segments:
        """The context of a stack call: restart flags for ``num_directions`` directions;
        ``reset_states`` for every layer, each (L*D, N, ...)."""
        restart = None if resets is None else direction_resets(resets, mask, num_directions)
        return cls(mask, resets, restart, reset_states)

    def layer(self, index: int, num_directions: int) -> Segments:
        """The context of layer ``index``: its slice of ``reset_states``."""
        if self.reset_states is None:
            return self
        lo, hi = index * num_directions, (index + 1) * num_directions
        return self._replace(reset_states=tuple(s[lo:hi] for s in self.reset_states))


class StepMasks(NamedTuple):
    """Regulariser masks that act inside the recurrence, for one layer (not differentiated).

    Attributes:
      hidden: (D, N, H_out), multiplies the h that enters the ``W_hh`` matmul (recurrent
        dropout), or None.
      zoneout: one (T, D, N, size) array per state, time order, values in [0, 1]: after a
        valid step each state is ``z * previous + (1 - z) * new``; or None.
    """

    hidden: Array | None = None
    zoneout: tuple[Array, ...] | None = None

    @classmethod
    def of(cls, masks: Mapping[str, Any], layer: int) -> StepMasks:
        """Layer ``layer``'s masks out of a ``masks=`` dict (:data:`STEP_MASKS` keys)."""
        return cls(**{f: masks.get(f"{key}{layer}") for f, key in STEP_MASKS.items()})


#: The fields of :class:`StepMasks`, each the :data:`Feature` it asks for, and the
#: ``masks=`` key prefix (``+ layer``) it comes from.
STEP_MASKS: dict[str, str] = {"hidden": "hidden_l", "zoneout": "zoneout_l"}
STEP_FEATURES: dict[str, str] = {"hidden": "hidden_mask", "zoneout": "zoneout"}


class LayerFn(Protocol):
    """One layer, all its directions: ``fn(plan, w, x, states, seg, masks) -> (out, finals)``.

    Args:
      plan: :class:`Plan`.
      w: torch-named weights stacked by direction (leading axis D): ``weight_ih``
        (D, G*H, I), ``weight_hh`` (D, G*H, H_out), optional ``bias_ih`` / ``bias_hh``
        (D, G*H), optional ``weight_hr`` (D, H_out, H), and the kind's extra parameters.
      x: (T, N, I) time-major input, in the compute dtype, zero on padding.
      states: initial states, each (D, N, ...) in ``plan.carry_dtype``: ``(h0,)`` or
        ``(h0, c0)``.
      seg: :class:`Segments` for this layer.
      masks: :class:`StepMasks` for this layer.

    Returns:
      ``(out, finals)``: out (T, N, D*H_out), forward direction first, 0 where the mask is
      False; finals the final states, each (D, N, ...). With ``plan.all_states``,
      ``(out, finals, seq)``: ``seq`` the states after every step, each (T, D, N, ...),
      time order, in the carry's dtype: at step t each direction's carry once it has read
      ``x[t]`` (forward from t = 0, reverse from t = T - 1); frozen where the mask is
      False (so a forward direction holds its final state past the row's length, and a
      reverse one its initial state).
    """

    def __call__(
        self, plan: Plan, w: Weights, x: Array, states: States, seg: Segments, masks: StepMasks
    ) -> LayerOut: ...


def _any_kind(rec: Recurrence) -> bool:
    return True


@dataclasses.dataclass(frozen=True)
class LayerImpl:
    """One row of the capability table: an implementation, whom it serves, what it supports.

    Attributes:
      name: the ``impl=`` name. Several rows may share a name for different families
        (``"fused"`` is the gated, the linear and the fallback fast path).
      fn: the layer (:class:`LayerFn`).
      serves: ``serves(rec) -> bool``: the kinds this row runs.
      supports: the :data:`Feature` s it takes.
      plan: :class:`Plan` fields this row fixes (``{"project": "loop"}``).
      refusals: a message per unsupported feature, where a generic one would not say
        why (``{"resets": "impl='cudnn' cannot take resets (...)"}``).
      kind_refusal: the message for a kind the name exists for but this row does not
        serve (``{kind}`` is the kind's display name).
    """

    name: str
    fn: LayerFn
    serves: Callable[[Recurrence], bool] = _any_kind
    supports: frozenset[str] = frozenset()
    plan: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    refusals: Mapping[str, str] = dataclasses.field(default_factory=dict)
    kind_refusal: str | None = None

    def __hash__(self) -> int:
        return hash((self.name, self.fn))


def gated(rec: Recurrence) -> bool:
    """A kind with the gated fast path's pieces (:class:`~jaxseq.recurrences.Fused`)."""
    return isinstance(rec.fast, Fused)


def linear(rec: Recurrence) -> bool:
    """A linear kind (:class:`~jaxseq.recurrences.Linear`)."""
    return isinstance(rec.fast, Linear)


def plain(rec: Recurrence) -> bool:
    """A kind with only its reference step (no fast path)."""
    return rec.fast is None


def serving(table: Sequence[LayerImpl], rec: Recurrence) -> dict[str, LayerImpl]:
    """``{name: row}`` of the rows of ``table`` that serve ``rec`` (first row per name)."""
    out: dict[str, LayerImpl] = {}
    for row in table:
        if row.name not in out and row.serves(rec):
            out[row.name] = row
    return out


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(repr(n) for n in names)


def check(
    table: Sequence[LayerImpl],
    rec: Recurrence,
    impl: Any,
    used: Mapping[str, Any] | Sequence[str] = (),
) -> LayerImpl:
    """The row of ``table`` that runs ``impl`` for ``rec``, or the capability error.

    ``used``: the features the call asks for; a mapping may give, for ``hidden_mask`` and
    ``zoneout``, the phrase naming what asked (``"masks ['zoneout_l0']"``).

    >>> from jaxseq.impls import IMPLS
    >>> from jaxseq.recurrences import get
    >>> check(IMPLS, get("lstm"), "fused_loop", ["remat"]).plan
    {'project': 'loop'}
    >>> check(IMPLS, get("lstm"), "unfused", ["remat"])
    Traceback (most recent call last):
    ...
    ValueError: LSTM: remat is supported by impl in ['fused', 'fused_loop', 'fused_hoisted'], got impl='unfused'
    """
    name = rec.display_name
    rows = serving(table, rec)
    if not isinstance(impl, str) or impl not in rows:
        refusal = next(
            (r.kind_refusal for r in table if r.name == impl and r.kind_refusal is not None), None
        )
        if refusal is not None:
            raise ValueError(refusal.format(kind=name))
        raise ValueError(f"{name}: Unknown impl {impl!r}; expected one of {sorted(rows)}")
    row = rows[impl]
    phrases = dict(used) if isinstance(used, Mapping) else dict.fromkeys(used)
    for feature, phrase in phrases.items():
        if feature in row.supports:
            continue
        if feature in row.refusals:
            raise ValueError(row.refusals[feature])
        allowed = [n for n, r in rows.items() if feature in r.supports]
        if feature in ("hidden_mask", "zoneout"):
            every = [r.name for r in table if feature in r.supports]
            every = list(dict.fromkeys(every))
            what = phrase or feature
            verb = "act" if what.startswith("masks") or " and " in what else "acts"
            raise ValueError(
                f"{name}: {what} {verb} inside the recurrence, which only the fused "
                f"implementations of gated kinds take (impl={_quoted(every)}), got "
                f"impl={impl!r}"
            )
        raise ValueError(f"{name}: {feature} is supported by impl in {allowed}, got impl={impl!r}")
    return row
