"""Recurrent regularisers as masks: variational dropout, DropConnect and zoneout.

The stack takes every regulariser as an explicit multiplier (``masks=`` of
:func:`jaxseq.stack.run_stack`, shapes in its docstring), so the fused path runs them
inside its one scan and custom backward, a test can hand the same masks to the torch twin
(``torchseq.regularized``), and :func:`draw_masks` is the only place that draws random
numbers. The NNX layers (:mod:`jaxseq.nn`) take the rates as options and call it on every
forward pass, in training mode, with a key from their ``rngs``:

* ``input_dropout``: mask ``"input"`` (N, I), variational (Gal & Ghahramani 2016);
* ``output_dropout``: masks ``"output_l{k}"`` (N, D*H_out), variational;
* ``recurrent_dropout``: masks ``"hidden_l{k}"`` (D, N, H_out), variational, on the h
  that enters ``W_hh``;
* ``weight_dropout``: masks ``"weight_hh_l{k}{sfx}"``, DropConnect (Merity et al. 2017,
  the AWD-LSTM's WeightDrop);
* ``zoneout``: masks ``"zoneout_l{k}"``, one per state (Krueger et al. 2016).

Dropout masks are drawn once per sequence and layer (variational: the same units are
dropped at every time step; DropConnect: once per forward call for the whole batch) and
scaled by 1 / (1 - p), so their expectation is 1 and evaluation uses none. Zoneout draws a
fresh keep-the-previous-value mask per step and unit in training; in evaluation it uses
the expectation, z = p everywhere, as the paper does (so a zoneout layer in eval mode is
*not* the plain layer: each state is ``p * previous + (1 - p) * new``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxseq.impls import IMPLS
from jaxseq.layer import check as check_impl
from jaxseq.params import RNNSpec
from jaxseq.validation import expected_mask_shapes

Array = jax.Array

__all__ = ["RATES", "rate_values", "check_rates", "draw_masks"]

#: The regulariser options of the layers, as named there.
RATES = ("input_dropout", "output_dropout", "recurrent_dropout", "weight_dropout", "zoneout")


def rate_values(rates: dict[str, Any]) -> dict[str, float]:
    """The rates as floats, each a number in [0, 1): ``TypeError`` / ``ValueError``
    naming the option otherwise (zoneout 1 would freeze the state for good)."""
    out = {}
    for name, p in rates.items():
        if isinstance(p, bool) or not isinstance(p, (int, float)):
            raise TypeError(f"{name} must be a number, got {type(p).__name__}")
        if not 0.0 <= p < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {p}")
        out[name] = float(p)
    return out


def check_rates(spec: RNNSpec, impl: str, rates: dict[str, Any]) -> dict[str, float]:
    """The rates as floats (:func:`rate_values`), servable by the kind and implementation:
    ValueError otherwise."""
    out = rate_values(rates)
    rec = spec.recurrence
    in_recurrence = [n for n in ("recurrent_dropout", "weight_dropout", "zoneout") if out[n] > 0]
    if in_recurrence and rec.is_linear:
        raise ValueError(
            f"{rec.display_name} has no recurrent weight or state update to regularise: "
            f"{', '.join(in_recurrence)} must be 0"
        )
    asked = {"hidden_mask": "recurrent_dropout", "zoneout": "zoneout"}
    used = {f: rate for f, rate in asked.items() if out[rate] > 0}
    check_impl(IMPLS, rec, impl, dict.fromkeys(used, " and ".join(used.values())))
    return out


def _keep(key: Array, p: float, shape: tuple[int, ...], dtype: Any) -> Array:
    keep = jax.random.bernoulli(key, 1.0 - p, shape)
    return keep.astype(dtype) / jnp.asarray(1.0 - p, dtype)


def draw_masks(
    key: Array | None,
    spec: RNNSpec,
    T: int,
    N: int,
    *,
    train: bool = True,
    dtype: Any = jnp.float32,
    input_dropout: float = 0.0,
    output_dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
    weight_dropout: float = 0.0,
    zoneout: float = 0.0,
) -> dict[str, Any] | None:
    """The ``masks=`` of one forward pass of the stack ``spec`` on (T, N) inputs.

    ``train=False``: no dropout masks, and zoneout at its expectation p (None when
    nothing is left). ``key`` is needed in training when any rate is above 0.

    >>> import jax
    >>> from jaxseq.params import RNNSpec
    >>> spec = RNNSpec("lstm", 3, 4, num_layers=2)
    >>> m = draw_masks(jax.random.key(0), spec, 5, 2, output_dropout=0.5, zoneout=0.1)
    >>> sorted(m), m["output_l0"].shape, [z.shape for z in m["zoneout_l0"]]
    (['output_l0', 'output_l1', 'zoneout_l0', 'zoneout_l1'], (2, 4), [(5, 1, 2, 4), (5, 1, 2, 4)])
    >>> sorted(draw_masks(None, spec, 5, 2, train=False, output_dropout=0.5, zoneout=0.1))
    ['zoneout_l0', 'zoneout_l1']
    """
    rec = spec.recurrence
    shapes = expected_mask_shapes(rec, spec, T, N)
    rates = {
        "input": input_dropout,
        "output": output_dropout,
        "hidden": recurrent_dropout,
        "weight_hh": weight_dropout,
    }
    masks: dict[str, Any] = {}
    if not train:
        if zoneout > 0:
            for k in range(spec.num_layers):
                masks[f"zoneout_l{k}"] = tuple(
                    jnp.full(s, zoneout, dtype) for s in shapes[f"zoneout_l{k}"]
                )
        return masks or None
    if not any(p > 0 for p in (*rates.values(), zoneout)):
        return None
    if key is None:
        raise ValueError("draw_masks: a PRNG key is needed to draw masks in training mode")
    shape: Any
    for name, shape in shapes.items():
        prefix = name.split("_l")[0] if not name.startswith("weight_hh") else "weight_hh"
        key, sub = jax.random.split(key)
        if prefix == "zoneout":
            if zoneout > 0:
                subs = jax.random.split(sub, len(shape))
                masks[name] = tuple(
                    jax.random.bernoulli(s, zoneout, sh).astype(dtype)
                    for s, sh in zip(subs, shape, strict=True)
                )
        elif rates[prefix] > 0:
            masks[name] = _keep(sub, rates[prefix], shape, dtype)
    return masks
