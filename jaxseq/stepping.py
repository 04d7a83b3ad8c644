"""One time step of a stack, at full speed: acting, serving and streaming.

:func:`prepare_step` lays a uni-directional stack's torch-named parameters out once for
the step's matmuls (transposed to (in, G*H), and for kinds whose gates see only the sum
of the input and hidden parts one ``[W_ih; W_hh]^T`` block with the two biases folded
into one); :func:`step` runs one time step of every layer on them. Inside a jitted
``lax.scan`` / ``fori_loop`` rollout, the prepared weights are loop constants: no weight
is transposed or copied per step (``tests/test_step.py`` checks the compiled loop body).

Every registered kind steps with its own definition, so no kind's equations are
restated here: gated kinds through their fused forward piece
(:attr:`jaxseq.recurrences.Fused.forward`, every step valid), linear kinds through
their coefficients (:attr:`jaxseq.recurrences.Linear.coefficients`), and kinds with
neither through their reference step (:attr:`jaxseq.recurrences.Recurrence.step`).

Shapes (L layers, N batch, I input features, H hidden, H_out = proj_size or H)::

    x_t     (N, I), or unbatched (I,)
    state   (L, N, H_out) as the stack's hx, or (h, c) with c (L, N, H) for kinds with a
            cell state (LSTM); unbatched: no N. None: zeros.
    y_t     (N, H_out), the last layer's output (the stack's output at that step)

Stepping T times from ``state`` gives the outputs and the final state of the
full-sequence call with ``hx=state`` (:func:`jaxseq.run_stack`). The state is kept in
the carry dtype (the mixed-precision policy's, :func:`jaxseq.validation.carry_dtype_for`),
so a stream continued step by step equals the full-sequence call; ``y_t`` is in the
compute dtype.

>>> import jax, jax.numpy as jnp, jaxseq
>>> params = jaxseq.init_gru(jax.random.key(0), 3, 8, num_layers=2)
>>> w = jaxseq.prepare_step("gru", params)
>>> xs = jax.random.normal(jax.random.key(1), (5, 4, 3), jnp.float32)
>>> def body(h, x):
...     y, h = jaxseq.step(w, x, h)
...     return h, y
>>> h_n, ys = jax.lax.scan(body, jnp.zeros((2, 4, 8), jnp.float32), xs)
>>> out, h_ref = jaxseq.gru(params, xs)
>>> bool(jnp.allclose(ys, out, atol=1e-6)), bool(jnp.allclose(h_n, h_ref, atol=1e-6))
(True, True)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jaxseq.params import spec_from_params
from jaxseq.recurrences import Fused, Linear, Recurrence, get
from jaxseq.validation import carry_dtype_for, check_nonlinearity

Array = jax.Array

__all__ = ["StepWeights", "prepare_step", "step"]

#: torch's per-layer names; any other entry of a layer is a kind's extra parameter.
_TORCH_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")


@dataclasses.dataclass(frozen=True)
class StepWeights:
    """A stack's weights laid out for :func:`step` (a pytree: pass it to ``jit``, close
    over it in a loop, ``jax.device_put`` it).

    Attributes:
      layers: per layer a dict of arrays: ``w_cat`` (I + H_out, G*H) and ``b`` (G*H,) for
        additive gated kinds; ``w_ih_t`` (I, G*H), ``b_ih``, and for the other gated
        kinds ``w_hh_t`` (H_out, G*H), ``b_hh``; ``fused`` the dict a gated kind's
        forward piece reads (``w_hr``, extra parameters, with their direction axis);
        ``params`` a reference kind's own torch-named parameters. Absent biases are None.
      kind, nonlinearity: the registered kind and its nonlinearity (:attr:`rec`).
      input_size, hidden_size, output_size: I, H, H_out.
      dtype: the compute dtype (the weights'); carry_dtype: the state's.
    """

    layers: tuple[dict[str, Any], ...]
    kind: str
    nonlinearity: str | None
    input_size: int
    hidden_size: int
    output_size: int
    dtype: Any
    carry_dtype: Any

    @property
    def rec(self) -> Recurrence:
        """The kind with its nonlinearity bound (:meth:`Recurrence.bind`)."""
        return get(self.kind).bind(self.nonlinearity)

    @property
    def num_layers(self) -> int:
        return len(self.layers)


# The static fields are small strings and ints (hashed at every jitted call).
jax.tree_util.register_dataclass(
    StepWeights,
    data_fields=["layers"],
    meta_fields=[
        "kind",
        "nonlinearity",
        "input_size",
        "hidden_size",
        "output_size",
        "dtype",
        "carry_dtype",
    ],
)


def prepare_step(
    kind: str | Recurrence | Any,
    params: Mapping[str, Any] | None = None,
    *,
    nonlinearity: str = "tanh",
    dtype: Any = None,
    carry_dtype: Any = None,
) -> StepWeights:
    """Lay a uni-directional stack's parameters out once for :func:`step`.

    Args:
      kind: a registered kind (``"gru"``, ``"lstm"``, ...), or a :mod:`jaxseq.nn` layer,
        whose kind, parameters, nonlinearity, dtype and carry dtype are used (then
        leave the other arguments out).
      params: the stack's flat dict of torch-named parameters (:mod:`jaxseq.params`).
      nonlinearity: the Elman RNN's ``"tanh"`` or ``"relu"``.
      dtype: the compute dtype (default: the parameters'); the weights are cast to it.
      carry_dtype: the state's dtype (default :func:`jaxseq.validation.carry_dtype_for`).

    Returns:
      :class:`StepWeights`.

    Raises:
      ValueError: a bidirectional stack (its reverse direction needs the whole sequence).

    >>> import jax, jaxseq
    >>> w = prepare_step("lstm", jaxseq.init_lstm(jax.random.key(0), 3, 4, proj_size=2))
    >>> w.num_layers, w.layers[0]["w_cat"].shape, w.layers[0]["b"].shape
    (1, (5, 16), (16,))
    """
    if not isinstance(kind, (str, Recurrence)):
        layer = kind
        if params is not None or not hasattr(layer, "params_dict"):
            raise TypeError(
                "prepare_step takes (kind, params) or a jaxseq.nn layer alone, got "
                f"{type(layer).__name__}"
                + ("" if params is None else f" and params={type(params).__name__}")
            )
        return prepare_step(
            layer.kind,
            layer.params_dict(),
            nonlinearity=getattr(layer, "nonlinearity", "tanh"),
            dtype=layer.dtype,
            carry_dtype=layer.options.carry_dtype,
        )
    rec = get(kind)
    if get(rec.name).bind(rec.nonlinearity) is not rec:
        raise ValueError(
            f"prepare_step: kind {rec.name!r} is not the registered one; register it first "
            "(jaxseq.recurrences.register)"
        )
    if params is None:
        raise TypeError(f"prepare_step({rec.name!r}, params): params is missing")
    spec = spec_from_params(rec.name, params)
    check_nonlinearity(rec, nonlinearity)
    rec = rec.bind(nonlinearity)
    if spec.bidirectional:
        raise ValueError(
            f"{rec.display_name}: params: step runs uni-directional stacks only; this one "
            "is bidirectional (its reverse direction starts from the end of the sequence); "
            "run the whole sequence instead"
        )
    dt = jnp.dtype(params["weight_ih_l0"].dtype if dtype is None else dtype)
    cd = carry_dtype_for(dt, carry_dtype)
    layers = []
    for k in range(spec.num_layers):
        p = {
            name[: -len(f"_l{k}")]: jnp.asarray(v)
            for name, v in params.items()
            if name.endswith(f"_l{k}")
        }
        layers.append(_layer_weights(rec, p, dt, cd))
    return StepWeights(
        tuple(layers),
        rec.name,
        rec.nonlinearity,
        spec.input_size,
        spec.hidden_size,
        spec.output_size,
        dt,
        cd,
    )


def _layer_weights(rec: Recurrence, p: dict[str, Array], dt: Any, cd: Any) -> dict[str, Any]:
    """One layer's weights in the step's layout (see :class:`StepWeights`)."""

    def bias(name: str) -> Array | None:
        return None if name not in p else p[name].astype(cd)

    w_ih_t = p["weight_ih"].astype(dt).T
    if rec.fast is None:  # the reference step reads the kind's own parameters
        return {
            "w_ih_t": w_ih_t,
            "b_ih": bias("bias_ih"),
            "params": {k: v.astype(dt) for k, v in p.items()},
        }
    if isinstance(rec.fast, Linear):
        return {"w_ih_t": w_ih_t, "b_ih": bias("bias_ih")}
    w_hh_t = p["weight_hh"].astype(dt).T
    # What the kind's forward piece reads, with its direction axis (D = 1).
    fused: dict[str, Any] = {
        "b_hh": None if "bias_hh" not in p else p["bias_hh"].astype(cd)[None],
        "w_hr": None if "weight_hr" not in p else p["weight_hr"].astype(dt)[None],
    }
    fused |= {k: v.astype(cd)[None] for k, v in p.items() if k not in _TORCH_NAMES}
    if rec.fast.additive:
        biases = [b for b in (bias("bias_ih"), bias("bias_hh")) if b is not None]
        return {
            "w_cat": jnp.concatenate([w_ih_t, w_hh_t], axis=0),
            "b": None if not biases else sum(biases[1:], biases[0]),
            "fused": fused,
        }
    return {
        "w_ih_t": w_ih_t,
        "b_ih": bias("bias_ih"),
        "w_hh_t": w_hh_t,
        "b_hh": bias("bias_hh"),
        "fused": fused,
    }


def _dot(a: Array, w: Array, cd: Any, b: Array | None) -> Array:
    """``a @ w + b``: operands in w's dtype, accumulated in ``cd``."""
    y = jnp.matmul(a.astype(w.dtype), w, preferred_element_type=cd)
    return y if b is None else y + b[None]


def _layer_step(rec: Recurrence, w: dict[str, Any], x: Array, carry: Any, cd: Any) -> tuple:
    """One layer, one step: ``(carry', y)``, x (N, in) in the compute dtype."""
    fast = rec.fast
    if fast is None:
        gx = _dot(x, w["w_ih_t"], cd, w["b_ih"])
        return rec.step(w["params"], carry, gx)
    if isinstance(fast, Linear):
        a, b = fast.coefficients(_dot(x, w["w_ih_t"], cd, w["b_ih"]))
        h = a * carry + b
        return h, h
    assert isinstance(fast, Fused)
    h = rec.states(carry)[0]
    valid = jnp.ones((1, h.shape[0], 1), bool)  # every step valid: folded away by XLA
    fw = dict(w["fused"])
    if fast.additive:
        n_in = x.shape[-1]
        gx = _dot(jnp.concatenate([x, h.astype(x.dtype)], axis=-1), w["w_cat"], cd, w["b"])
        gh = None
        fw["w_hh_t"] = w["w_cat"][None, n_in:]  # read by no shipped kind: not computed then
    else:
        gx = _dot(x, w["w_ih_t"], cd, w["b_ih"])
        gh = _dot(h, w["w_hh_t"], cd, w["b_hh"])[None]
        fw["w_hh_t"] = w["w_hh_t"][None]
    d_carry = jax.tree.map(lambda a: a[None], carry)
    new, y, _ = fast.forward(fw, d_carry, gx[None], gh, valid)
    return jax.tree.map(lambda a: a[0], new), y[0]


def step(weights: StepWeights, x_t: Any, state: Any = None) -> tuple[Array, Any]:
    """One time step of the stack: ``(y_t, new_state)``.

    Args:
      weights: from :func:`prepare_step`.
      x_t: (N, I), or unbatched (I,).
      state: as the stack's ``hx``: (L, N, H_out), or ``(h, c)`` with c (L, N, H) for
        kinds with a cell state; unbatched without N; None: zeros.

    Returns:
      ``(y_t, new_state)``: y_t (N, H_out) in the compute dtype, ``new_state`` structured
      as ``state``, in the carry dtype.

    >>> import jax, jax.numpy as jnp, jaxseq
    >>> w = prepare_step("gru", jaxseq.init_gru(jax.random.key(0), 3, 4, num_layers=2))
    >>> y, h = step(w, jnp.ones((5, 3), jnp.float32))  # from zeros
    >>> y, h = step(w, jnp.ones((5, 3), jnp.float32), h)
    >>> y.shape, h.shape
    ((5, 4), (2, 5, 4))
    """
    if not isinstance(weights, StepWeights):
        raise TypeError(
            f"weights must be StepWeights (from jaxseq.prepare_step), got {type(weights).__name__}"
        )
    rec, name, cd = weights.rec, weights.rec.display_name, weights.carry_dtype
    if not hasattr(x_t, "shape") or not hasattr(x_t, "dtype"):
        raise TypeError(f"{name}: x_t must be an array, got {type(x_t).__name__}")
    I = weights.input_size
    if x_t.ndim not in (1, 2) or x_t.shape[-1] != I:
        raise ValueError(
            f"{name}: x_t must be (N, {I}) or unbatched ({I},), got {tuple(x_t.shape)}"
        )
    unbatched = x_t.ndim == 1
    x = jnp.asarray(x_t, weights.dtype)
    if unbatched:
        x = x[None]
    L, N = weights.num_layers, x.shape[0]
    sizes = rec.state_sizes(weights.hidden_size, weights.output_size)
    shapes = [(L, s) if unbatched else (L, N, s) for s in sizes]
    if state is None:
        states = tuple(jnp.zeros((L, N, s), cd) for s in sizes)
    else:
        states = _check_state(rec, name, state, shapes)
        states = tuple((s[:, None] if unbatched else s).astype(cd) for s in states)
    finals = []
    for k, w in enumerate(weights.layers):
        carry = rec.carry(tuple(s[k] for s in states))
        carry, y = _layer_step(rec, w, x, carry, cd)
        finals.append(rec.states(carry))
        x = y.astype(weights.dtype)
    new = tuple(jnp.stack(per_state) for per_state in zip(*finals, strict=True))
    if unbatched:
        x, new = x[0], tuple(s[:, 0] for s in new)
    return x, rec.carry(new)


def _check_state(rec: Recurrence, name: str, state: Any, shapes: list) -> tuple[Array, ...]:
    """The state's arrays, checked against the expected shapes (errors name ``state``)."""
    parts = tuple(state) if isinstance(state, (tuple, list)) else (state,)
    if rec.num_states == 2 and (not isinstance(state, (tuple, list)) or len(state) != 2):
        raise TypeError(f"{name}: state must be a tuple (h, c), got {type(state).__name__}")
    if rec.num_states == 1 and isinstance(state, (tuple, list)):
        raise TypeError(f"{name}: state must be a single array h, got a {type(state).__name__}")
    labels = ("state[0] (h)", "state[1] (c)") if rec.num_states == 2 else ("state",)
    for label, a, shape in zip(labels, parts, shapes, strict=True):
        if not hasattr(a, "shape") or not hasattr(a, "dtype"):
            raise TypeError(f"{name}: {label} must be an array, got {type(a).__name__}")
        if tuple(a.shape) != tuple(shape):
            raise ValueError(
                f"{name}: {label} must have shape {tuple(shape)}, got {tuple(a.shape)}"
            )
        if not jnp.issubdtype(a.dtype, jnp.floating):
            raise TypeError(f"{name}: {label} must be a floating array, got {a.dtype}")
    return parts
