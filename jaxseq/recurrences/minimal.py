"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?"): linear recurrences.

Their gates read the input only, never the previous state, so one layer is the
elementwise linear recurrence ``h_t = a_t * h_{t-1} + b_t`` with ``(a_t, b_t)`` a function
of ``x_t`` alone. A :class:`LinearRecurrence` holds that function; the stack
(:mod:`jaxseq.minimal`) solves the recurrence sequentially or in parallel
(:mod:`jaxseq.linear_scan`). Equations (G gates, rows of ``weight_ih`` in this order)::

    minGRU  (G = 2, rows [z; h~])
        z  = sigmoid(x W_z^T + b_z)        h~ = x W_h^T + b_h
        h_t = (1 - z) * h_{t-1} + z * h~                      a = 1 - z,  b = z * h~
    minLSTM (G = 3, rows [f; i; h~])
        f  = sigmoid(x W_f^T + b_f)        i  = sigmoid(x W_i^T + b_i)
        h~ = x W_h^T + b_h                 f' = f / (f + i),  i' = i / (f + i)
        h_t = f' * h_{t-1} + i' * h~                          a = f',     b = i' * h~

Parameters per layer k and direction keep torch's names: ``weight_ih_l{k}{_reverse}``
(G*H, I) for k = 0, (G*H, D*H) for k > 0, and ``bias_ih_l{k}{_reverse}`` (G*H,) with
``bias``. There is no ``weight_hh``: nothing multiplies the state. These kinds have their
own small registry (they are not :class:`jaxseq.recurrences.Recurrence` values, whose
contract is a state matmul per step); :func:`get_linear` looks one up.

>>> import jax.numpy as jnp
>>> a, b = get_linear("min_gru").coefficients(jnp.array([[0.0, 4.0]]))   # z = 0.5, h~ = 4
>>> a.tolist(), b.tolist()
([[0.5]], [[2.0]])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

Array = jax.Array

__all__ = [
    "LinearRecurrence",
    "MIN_GRU",
    "MIN_LSTM",
    "register_linear",
    "get_linear",
    "registered_linear",
    "min_gru_coefficients",
    "min_lstm_coefficients",
]


@dataclasses.dataclass(frozen=True)
class LinearRecurrence:
    """A recurrence ``h_t = a_t * h_{t-1} + b_t`` whose coefficients read ``x_t`` only.

    Attributes:
      name: the registry key (``"min_gru"``).
      display_name: the class name used in messages (``"MinGRU"``).
      num_gates: G; ``weight_ih`` has G*H rows.
      coefficients: ``coefficients(gx) -> (a, b)``: gx (..., G*H) is the input projection
        ``x W_ih^T + b_ih``; a and b are (..., H).
    """

    name: str
    display_name: str
    num_gates: int
    coefficients: Callable[[Array], tuple[Array, Array]]

    def step(self, h: Array, gx: Array) -> tuple[Array, Array]:
        """One step of the recurrence: ``h' = a h + b``; returns ``(h', h')``."""
        a, b = self.coefficients(gx)
        h = a * h + b
        return h, h

    def layer_shapes(self, input_size: int, hidden_size: int, bias: bool = True) -> dict:
        """``{base name: shape}`` of one layer and direction: ``weight_ih`` (and ``bias_ih``)."""
        g = self.num_gates * hidden_size
        shapes: dict[str, tuple[int, ...]] = {"weight_ih": (g, input_size)}
        if bias:
            shapes["bias_ih"] = (g,)
        return shapes


def min_gru_coefficients(gx: Array) -> tuple[Array, Array]:
    """minGRU: gx (..., 2H) rows [z; h~] -> ``a = 1 - z``, ``b = z * h~``, each (..., H)."""
    gz, h_tilde = jnp.split(gx, 2, axis=-1)
    z = jax.nn.sigmoid(gz)
    return 1.0 - z, z * h_tilde


def min_lstm_coefficients(gx: Array) -> tuple[Array, Array]:
    """minLSTM: gx (..., 3H) rows [f; i; h~] -> ``a = f / (f + i)``, ``b = i / (f + i) * h~``."""
    gf, gi, h_tilde = jnp.split(gx, 3, axis=-1)
    f = jax.nn.sigmoid(gf)
    i = jax.nn.sigmoid(gi)
    s = f + i  # in (0, 2): never zero
    return f / s, (i / s) * h_tilde


_REGISTRY: dict[str, LinearRecurrence] = {}


def register_linear(rec: LinearRecurrence, *, overwrite: bool = False) -> LinearRecurrence:
    """Make ``rec`` available as ``kind=rec.name`` to :func:`jaxseq.minimal.run_min_stack`."""
    if not isinstance(rec, LinearRecurrence):
        raise TypeError(f"register_linear expects a LinearRecurrence, got {type(rec).__name__}")
    if rec.name in _REGISTRY and not overwrite and _REGISTRY[rec.name] is not rec:
        raise ValueError(f"a linear recurrence named {rec.name!r} is already registered")
    _REGISTRY[rec.name] = rec
    return rec


def get_linear(kind: str | LinearRecurrence) -> LinearRecurrence:
    """The registered :class:`LinearRecurrence` for ``kind`` (a definition passes through)."""
    if isinstance(kind, LinearRecurrence):
        return kind
    rec = _REGISTRY.get(kind) if isinstance(kind, str) else None
    if rec is None:
        names = ", ".join(repr(k) for k in _REGISTRY)
        raise ValueError(f"Unknown linear recurrence kind {kind!r}; expected one of {names}")
    return rec


def registered_linear() -> dict[str, LinearRecurrence]:
    """A copy of the registry: ``{name: LinearRecurrence}``."""
    return dict(_REGISTRY)


MIN_GRU = register_linear(LinearRecurrence("min_gru", "MinGRU", 2, min_gru_coefficients))
MIN_LSTM = register_linear(LinearRecurrence("min_lstm", "MinLSTM", 3, min_lstm_coefficients))
