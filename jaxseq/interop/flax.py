"""Flax interop: exact weight conversion between Flax's recurrent cells and jaxseq's kinds.

Flax's cells (``flax.linen`` and ``flax.nnx``: ``SimpleCell``, ``GRUCell``, ``LSTMCell``,
``OptimizedLSTMCell``) compute torch's equations with some biases left out, and store
each weight transposed: a Flax kernel is (in, out) where torch's weight is (out, in).
Per cell (H the hidden size; jaxseq's rows are gate blocks of H in torch's order, LSTM
``i, f, g, o`` and GRU ``r, z, n``, the order the Flax cells use too):

* ``SimpleCell`` (linen and NNX) -> ``"rnn"``: ``weight_ih = i.kernel.T``,
  ``bias_ih = i.bias``, ``weight_hh = h.kernel.T``, ``bias_hh = 0``;
* linen ``LSTMCell`` and ``OptimizedLSTMCell``, NNX ``LSTMCell`` -> ``"lstm"``:
  ``weight_ih`` = the ``ii, if, ig, io`` kernels, transposed and stacked by rows,
  ``weight_hh`` = the ``hi, hf, hg, ho`` kernels likewise, ``bias_hh`` = their biases,
  ``bias_ih = 0``;
* NNX ``OptimizedLSTMCell`` -> ``"lstm"``: ``weight_ih = dense_i.kernel.T``,
  ``weight_hh = dense_h.kernel.T``, ``bias_hh = dense_h.bias``, ``bias_ih = 0``;
* linen ``GRUCell`` -> ``"gru"``: ``weight_ih`` = the ``ir, iz, in`` kernels,
  ``bias_ih`` = their biases, ``weight_hh`` = the ``hr, hz, hn`` kernels,
  ``bias_hh = [0, 0, hn.bias]`` (torch's GRU with ``b_hr = b_hz = 0``);
* NNX ``GRUCell`` -> ``"gru"``: ``weight_ih = dense_i.kernel.T``,
  ``bias_ih = dense_i.bias``, ``weight_hh = dense_h.kernel.T``, ``bias_hh = 0``.

(NNX names the LSTM's forget kernels ``if_``; in linen's ``SimpleCell`` the input dense is
``i`` and the hidden one ``h``, in NNX's ``dense_i`` and ``dense_h``.)

From Flax (:func:`from_flax_cell`) every map is exact: transposes, concatenations and
zeros. Back to Flax (:func:`to_flax_cell`) the map is exact where the Flax cell holds the
parameter; a bias that it lacks must be zero, or the conversion raises a ``ValueError``
naming it — a nonzero ``bias_hh`` for ``SimpleCell``, a nonzero ``bias_ih`` for the
LSTM cells, a nonzero ``b_hr`` or ``b_hz`` (rows ``[0, 2H)`` of ``bias_hh``) for both
GRU cells and a nonzero ``b_hn`` (rows ``[2H, 3H)``) for NNX's ``GRUCell``. With
``fold_biases=True`` a bias that is summed with another before any nonlinearity is
folded into it (the same function up to rounding, but one parameter where torch trains
two); ``b_hn`` never folds, since ``r`` multiplies it: NNX's ``GRUCell`` cannot compute
torch's GRU with ``b_hn != 0``.

Flax's LSTM carry is ``(c, h)``, jaxseq's (and torch's) ``(h, c)``, and a stack's state
has a leading layer-direction axis: :func:`carry_from_flax` / :func:`carry_to_flax`.

>>> import jax, jax.numpy as jnp, flax.linen as ln, jaxseq
>>> cell = ln.GRUCell(features=4)
>>> x = jnp.ones((2, 5, 3), jnp.float32)                          # (N, T, I)
>>> variables = ln.RNN(cell).init(jax.random.key(0), x)
>>> p = from_flax_cell(variables)
>>> sorted(p), p["weight_hh_l0"].shape
(['bias_hh_l0', 'bias_ih_l0', 'weight_hh_l0', 'weight_ih_l0'], (12, 4))
>>> out, h_n = jaxseq.gru(p, x, batch_first=True)
>>> ref = ln.RNN(cell).apply(variables, x)
>>> bool(jnp.allclose(out, ref, atol=1e-6))
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as ln
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Array = jax.Array

__all__ = [
    "from_flax_cell",
    "to_flax_cell",
    "flax_cell_kind",
    "carry_from_flax",
    "carry_to_flax",
]

# The parameter names of linen's cells (a cell's ``params`` collection), by kind.
_LINEN_NAMES = {
    "rnn": ("i", "h"),
    "lstm": ("ii", "if", "ig", "io", "hi", "hf", "hg", "ho"),
    "gru": ("ir", "iz", "in", "hr", "hz", "hn"),
}
_LINEN_CELLS: dict[type, str] = {
    ln.SimpleCell: "rnn",
    ln.LSTMCell: "lstm",
    ln.OptimizedLSTMCell: "lstm",
    ln.GRUCell: "gru",
}
_NNX_CELLS: dict[type, str] = {
    nnx.SimpleCell: "rnn",
    nnx.LSTMCell: "lstm",
    nnx.OptimizedLSTMCell: "lstm",
    nnx.GRUCell: "gru",
}
_GATES = {"rnn": 1, "lstm": 4, "gru": 3}
_CELL_NAMES = ", ".join(
    f"{fw}.{c.__name__}"
    for fw, cells in (("linen", _LINEN_CELLS), ("nnx", _NNX_CELLS))
    for c in cells
)


def _suffix(layer: int, reverse: bool) -> str:
    if not isinstance(layer, (int, np.integer)) or isinstance(layer, bool) or layer < 0:
        raise ValueError(f"layer must be a non-negative int, got {layer!r}")
    return f"_l{int(layer)}" + ("_reverse" if reverse else "")


def _cell_class(cell: Any) -> tuple[str, type, str]:
    """``(framework, Flax cell class, kind)`` of a Flax cell class or instance."""
    cls = cell if isinstance(cell, type) else type(cell)
    for framework, table in (("linen", _LINEN_CELLS), ("nnx", _NNX_CELLS)):
        for base in sorted(table, key=lambda c: len(c.__mro__), reverse=True):
            if issubclass(cls, base):
                return framework, base, table[base]
    raise TypeError(f"not a supported Flax cell: {cls.__name__}; supported: {_CELL_NAMES}")


def _linen_params(tree: Mapping[str, Any]) -> dict[str, Any]:
    """A linen cell's own parameters, from its variables (``{"params": ...}``), its
    ``params`` collection, or those of an ``nn.RNN`` around it (``{"cell": ...}``)."""
    node: Any = tree
    while isinstance(node, Mapping) and set(node) in ({"params"}, {"cell"}):
        node = node["params"] if "params" in node else node["cell"]
    if not isinstance(node, Mapping):
        raise TypeError(f"expected a linen cell's parameters (a mapping), got {type(node)}")
    return dict(node)


def _linen_kind(params: Mapping[str, Any]) -> str:
    for kind, names in _LINEN_NAMES.items():
        if set(params) == set(names):
            return kind
    raise ValueError(
        f"not the parameters of a linen SimpleCell, GRUCell, LSTMCell or OptimizedLSTMCell: "
        f"names {sorted(params)}"
    )


def _unwrap_rnn(module: Any) -> Any:
    """The cell of an ``nn.RNN`` / ``nnx.RNN``, else ``module``."""
    return module.cell if isinstance(module, (ln.RNN, nnx.RNN)) else module


def flax_cell_kind(cell: Any) -> str:
    """The jaxseq kind (``"rnn"``, ``"lstm"`` or ``"gru"``) that a Flax cell maps onto.

    ``cell``: an NNX cell (or ``nnx.RNN``), a linen cell module or class (or ``nn.RNN``),
    or a linen cell's parameters (as :func:`from_flax_cell` takes them).

    >>> import flax.linen as ln
    >>> flax_cell_kind(ln.OptimizedLSTMCell), flax_cell_kind(ln.GRUCell(features=3))
    ('lstm', 'gru')
    """
    if isinstance(cell, Mapping):
        return _linen_kind(_linen_params(cell))
    return _cell_class(_unwrap_rnn(cell))[2]


def _check_config(module: Any, kind: str) -> None:
    """Refuse a cell configured away from torch's equations (activation, residual)."""
    name = type(module).__name__
    if getattr(module, "residual", False):
        raise ValueError(f"{name}(residual=True) adds h to the pre-activation: no jaxseq kind")
    act = getattr(module, "activation_fn", jnp.tanh)
    acts = (jnp.tanh, jax.nn.relu) if kind == "rnn" else (jnp.tanh,)
    if act not in acts:
        allowed = "tanh or relu" if kind == "rnn" else "tanh"
        raise ValueError(f"{name}: activation_fn {act!r} is not {allowed}")
    gate = getattr(module, "gate_fn", jax.nn.sigmoid)
    if gate is not jax.nn.sigmoid:
        raise ValueError(f"{name}: gate_fn {gate!r} is not sigmoid")


def _value(a: Any) -> Array:
    return jnp.asarray(a[...] if isinstance(a, nnx.Variable) else a)


def _nnx_linear(lin: Any) -> tuple[Array, Array | None]:
    bias = getattr(lin, "bias", None)
    return _value(lin.kernel), (None if bias is None else _value(bias))


def _from_nnx(cell: Any, kind: str, cls: type) -> dict[str, Array]:
    """``{base name: array}`` of an NNX cell."""
    if kind == "lstm" and cls is nnx.LSTMCell:
        ki = [_value(getattr(cell, n).kernel) for n in ("ii", "if_", "ig", "io")]
        hs = [_nnx_linear(getattr(cell, n)) for n in ("hi", "hf", "hg", "ho")]
        b_hh = jnp.concatenate([b for _, b in hs if b is not None])
        return {
            "weight_ih": jnp.concatenate(ki, axis=1).T,
            "weight_hh": jnp.concatenate([k for k, _ in hs], axis=1).T,
            "bias_ih": jnp.zeros_like(b_hh),
            "bias_hh": b_hh,
        }
    k_i, b_i = _nnx_linear(cell.dense_i)
    k_h, b_h = _nnx_linear(cell.dense_h)
    zeros = jnp.zeros(k_h.shape[1], k_h.dtype)
    return {
        "weight_ih": k_i.T,
        "weight_hh": k_h.T,
        "bias_ih": zeros if b_i is None else b_i,
        "bias_hh": zeros if b_h is None else b_h,
    }


def _from_linen(params: Mapping[str, Any], kind: str) -> dict[str, Array]:
    """``{base name: array}`` of a linen cell's parameters."""

    def kernel(n: str) -> Array:
        return jnp.asarray(params[n]["kernel"])

    def bias(n: str) -> Array | None:
        b = params[n].get("bias")
        return None if b is None else jnp.asarray(b)

    if kind == "rnn":
        k_h = kernel("h")
        b_i = bias("i")
        assert b_i is not None
        return {
            "weight_ih": kernel("i").T,
            "weight_hh": k_h.T,
            "bias_ih": b_i,
            "bias_hh": jnp.zeros_like(b_i),
        }
    names = _LINEN_NAMES[kind]
    gates = len(names) // 2
    ins, hids = names[:gates], names[gates:]
    w_ih = jnp.concatenate([kernel(n) for n in ins], axis=1).T
    w_hh = jnp.concatenate([kernel(n) for n in hids], axis=1).T
    zero = jnp.zeros(w_hh.shape[1], w_hh.dtype)

    def biases(group: Sequence[str]) -> Array:
        return jnp.concatenate([b if (b := bias(n)) is not None else zero for n in group])

    return {"weight_ih": w_ih, "weight_hh": w_hh, "bias_ih": biases(ins), "bias_hh": biases(hids)}


def from_flax_cell(
    cell: Any, *, module: Any = None, layer: int = 0, reverse: bool = False
) -> dict[str, Array]:
    """A Flax cell's weights as jaxseq parameters of one layer and direction; exact.

    Args:
      cell: an NNX cell (``nnx.SimpleCell``, ``GRUCell``, ``LSTMCell``,
        ``OptimizedLSTMCell``, or an ``nnx.RNN`` around one), or the parameters of a
        linen cell (the same four): its variables ``{"params": {...}}``, its ``params``
        collection, or the variables of an ``nn.RNN`` around it.
      module: for a linen cell, optionally the cell module (or the ``nn.RNN``): its
        configuration is then checked as an NNX cell's is (see below).
      layer: the jaxseq layer index k of the names (``weight_ih_l{k}``).
      reverse: name the parameters of the reverse direction (``..._reverse``).

    Returns:
      ``{torch name: array}`` with ``weight_ih``, ``weight_hh``, ``bias_ih`` and
      ``bias_hh`` of the kind :func:`flax_cell_kind` names (the module docstring has the
      map), in the cell's dtype. Merge the dicts of several cells for a stack.

    Raises:
      ValueError: a cell whose configuration no jaxseq kind computes: ``residual=True``,
        a ``gate_fn`` other than sigmoid, an ``activation_fn`` other than tanh (a
        ``SimpleCell`` may use ``jax.nn.relu``: pass ``nonlinearity="relu"`` to
        :func:`jaxseq.rnn`).
    """
    suffix = _suffix(layer, reverse)
    if isinstance(cell, Mapping):
        params = _linen_params(cell)
        kind = _linen_kind(params)
        if module is not None:
            module = _unwrap_rnn(module)
            framework, _, module_kind = _cell_class(module)
            if framework != "linen" or module_kind != kind:
                raise ValueError(
                    f"module {type(module).__name__} does not match parameters of a linen "
                    f"{kind} cell"
                )
            _check_config(module, kind)
        base = _from_linen(params, kind)
    else:
        cell = _unwrap_rnn(cell)
        framework, cls, kind = _cell_class(cell)
        if framework != "nnx":
            raise TypeError(
                f"a linen module holds no weights: pass its parameters (the variables from "
                f"init) and the module as module=..., got {type(cell).__name__}"
            )
        _check_config(cell, kind)
        base = _from_nnx(cell, kind, cls)
    return {name + suffix: value for name, value in base.items()}


def _refuse(name: str, rows: str, what: str, cell: str, fold: bool) -> ValueError:
    hint = " (fold_biases=True folds it into the bias the cell has)" if fold else ""
    return ValueError(f"{name}{rows} ({what}) is nonzero and {cell} has no such bias{hint}")


def to_flax_cell(
    params: Mapping[str, Any],
    cell: Any,
    *,
    layer: int = 0,
    reverse: bool = False,
    fold_biases: bool = False,
    **kwargs: Any,
) -> Any:
    """One layer and direction of jaxseq parameters as a Flax cell's weights.

    Args:
      params: torch-named parameters (a stack's flat dict) of the kind the cell maps
        onto (see :func:`flax_cell_kind`): ``"rnn"`` for ``SimpleCell``, ``"lstm"`` for
        ``LSTMCell`` and ``OptimizedLSTMCell``, ``"gru"`` for ``GRUCell``. A stack
        without biases converts with zero biases.
      cell: the Flax cell class (linen or NNX), or a linen cell instance (whose
        ``features`` is then checked).
      layer, reverse: which layer and direction of ``params`` to convert.
      fold_biases: add a bias that the Flax cell lacks to the one it has where the two
        are summed (``SimpleCell``: ``bias_hh`` into ``i.bias``; LSTM cells:
        ``bias_ih`` into the hidden biases; GRU cells: ``b_hr``, ``b_hz`` into ``b_ir``,
        ``b_iz``). The cell then computes the same function up to rounding, but the
        parameters no longer convert back to these.
      kwargs: for an NNX class, more constructor arguments (``dtype`` and
        ``param_dtype`` default to the parameters' dtype; e.g. ``activation_fn``).

    Returns:
      For a linen cell, its ``params`` collection ``p``, applied as
      ``cell.apply({"params": p}, carry, x)``, or inside an ``nn.RNN`` as
      ``{"params": {"cell": p}}``; for an NNX class, a new cell holding the weights.

    Raises:
      ValueError: naming the parameter that the cell cannot carry: a nonzero bias it
        lacks (the module docstring lists them; ``b_hn`` for NNX's ``GRUCell`` even
        with ``fold_biases``), a projection (``weight_hr``) or another kind's
        parameter (e.g. layer norm's), or shapes of another kind.
    """
    framework, cls, kind = _cell_class(cell)
    suffix = _suffix(layer, reverse)
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping of torch names, got {type(params).__name__}")
    mine = {k[: -len(suffix)]: v for k, v in params.items() if k.endswith(suffix)}
    if "weight_ih" not in mine or "weight_hh" not in mine:
        raise ValueError(
            f"params hold no weight_ih{suffix} and weight_hh{suffix}: not layer {layer}"
            f"{' reverse' if reverse else ''} of a gated stack; names {sorted(params)[:8]}"
        )
    extra = sorted(set(mine) - {"weight_ih", "weight_hh", "bias_ih", "bias_hh"})
    if extra:
        raise ValueError(
            f"{extra[0]}{suffix} cannot be carried by {framework}.{cls.__name__}: it has no "
            f"such parameter (only weight_ih, weight_hh, bias_ih, bias_hh map onto it)"
        )
    w_ih, w_hh = jnp.asarray(mine["weight_ih"]), jnp.asarray(mine["weight_hh"])
    gates = _GATES[kind]
    if w_ih.ndim != 2 or w_hh.ndim != 2 or w_hh.shape[0] != gates * w_hh.shape[1]:
        raise ValueError(
            f"weight_hh{suffix} of shape {tuple(w_hh.shape)} is not ({gates}*H, H): not "
            f"the parameters of a {kind!r} layer, which {framework}.{cls.__name__} needs"
        )
    H, I = w_hh.shape[1], w_ih.shape[1]
    if w_ih.shape[0] != gates * H:
        raise ValueError(f"weight_ih{suffix} has {w_ih.shape[0]} rows, expected {gates}*{H}")
    features = getattr(cell, "features", None) if not isinstance(cell, type) else None
    if features is not None and features != H:
        raise ValueError(f"{cls.__name__}(features={features}) but the hidden size is {H}")
    zeros = jnp.zeros(gates * H, w_hh.dtype)
    b_ih = jnp.asarray(mine.get("bias_ih", zeros))
    b_hh = jnp.asarray(mine.get("bias_hh", zeros))
    title = f"{framework}.{cls.__name__}"

    def nonzero(b: Array) -> bool:
        return bool(jnp.any(b != 0))

    # The biases the cell holds, in jaxseq's layout (G*H,): folded or refused.
    if kind == "rnn":
        if nonzero(b_hh):
            if not fold_biases:
                raise _refuse(f"bias_hh{suffix}", "", "b_hh", title, True)
            b_ih = b_ih + b_hh
        b_in, b_h = b_ih, None
    elif kind == "lstm":
        if nonzero(b_ih):
            if not fold_biases:
                raise _refuse(f"bias_ih{suffix}", "", "b_ii, b_if, b_ig, b_io", title, True)
            b_hh = b_hh + b_ih
        b_in, b_h = None, b_hh
    else:
        if framework == "nnx" and nonzero(b_hh[2 * H :]):
            raise ValueError(
                f"bias_hh{suffix}[{2 * H}:{3 * H}] (b_hn) is nonzero and {title} has no "
                f"hidden bias; r multiplies b_hn, so it cannot be folded into b_in either "
                f"(linen's GRUCell carries it)"
            )
        if nonzero(b_hh[: 2 * H]):
            if not fold_biases:
                raise _refuse(f"bias_hh{suffix}", f"[0:{2 * H}]", "b_hr, b_hz", title, True)
            b_ih = b_ih.at[: 2 * H].add(b_hh[: 2 * H])
        # linen keeps b_hn (rows 2H:3H of b_hh); NNX has no hidden bias
        b_in, b_h = b_ih, (b_hh if framework == "linen" else None)

    if framework == "linen":
        return _to_linen(kind, w_ih, w_hh, b_in, b_h, H)
    kwargs.setdefault("dtype", w_hh.dtype)
    kwargs.setdefault("param_dtype", w_hh.dtype)
    # Built abstractly (no initializer runs); every parameter is set below.
    module = nnx.eval_shape(lambda: cls(I, H, rngs=nnx.Rngs(0), **kwargs))
    if cls is nnx.LSTMCell:
        assert b_h is not None
        for g, (ni, nh) in enumerate(
            zip(("ii", "if_", "ig", "io"), ("hi", "hf", "hg", "ho"), strict=True)
        ):
            rows = slice(g * H, (g + 1) * H)
            _set(getattr(module, ni).kernel, w_ih[rows].T)
            _set(getattr(module, nh).kernel, w_hh[rows].T)
            _set(getattr(module, nh).bias, b_h[rows])
        return module
    _set(module.dense_i.kernel, w_ih.T)
    _set(module.dense_h.kernel, w_hh.T)
    if b_in is not None:
        _set(module.dense_i.bias, b_in)
    if b_h is not None:
        _set(module.dense_h.bias, b_h)
    return module


def _set(variable: Any, value: Array) -> None:
    """Replace an NNX variable's value (also an abstract one, from ``nnx.eval_shape``)."""
    if hasattr(variable, "set_value"):
        variable.set_value(value)
    else:  # older Flax
        variable.value = value


def _to_linen(
    kind: str, w_ih: Array, w_hh: Array, b_in: Array | None, b_h: Array | None, H: int
) -> dict[str, dict[str, Array]]:
    if kind == "rnn":
        assert b_in is not None
        return {"i": {"kernel": w_ih.T, "bias": b_in}, "h": {"kernel": w_hh.T}}
    names = _LINEN_NAMES[kind]
    gates = len(names) // 2
    out: dict[str, dict[str, Array]] = {}
    for g in range(gates):
        rows = slice(g * H, (g + 1) * H)
        out[names[g]] = {"kernel": w_ih[rows].T}
        out[names[gates + g]] = {"kernel": w_hh[rows].T}
        if kind == "lstm":
            assert b_h is not None
            out[names[gates + g]]["bias"] = b_h[rows]
        else:  # GRU: biases on ir, iz, in and hn
            assert b_in is not None and b_h is not None
            out[names[g]]["bias"] = b_in[rows]
            if g == 2:
                out[names[gates + g]]["bias"] = b_h[rows]
    return out


def carry_from_flax(*carries: Any) -> Any:
    """Flax cell carries -> a jaxseq stack's ``hx``: one carry per layer and direction, in
    the stack's order (l0 forward, l0 reverse, l1 forward, ...).

    A carry ``h`` (N, H) gives ``h0`` (L*D, N, H); an LSTM carry ``(c, h)`` (Flax's
    order) gives ``(h0, c0)`` (jaxseq's and torch's order).

    >>> import jax.numpy as jnp
    >>> c, h = jnp.zeros((2, 3)), jnp.ones((2, 3))
    >>> h0, c0 = carry_from_flax((c, h))
    >>> h0.shape, float(h0[0, 0, 0]), float(c0[0, 0, 0])
    ((1, 2, 3), 1.0, 0.0)
    """
    if not carries:
        raise ValueError("carry_from_flax needs at least one carry")
    pairs = [isinstance(c, (tuple, list)) for c in carries]
    if any(pairs) and not all(pairs):
        raise ValueError("mixed carries: every carry must be (c, h) or every one h")
    if all(pairs):
        if any(len(c) != 2 for c in carries):
            raise ValueError("an LSTM carry is a pair (c, h)")
        h0 = jnp.stack([jnp.asarray(h) for _, h in carries])
        c0 = jnp.stack([jnp.asarray(c) for c, _ in carries])
        return h0, c0
    return jnp.stack([jnp.asarray(h) for h in carries])


def carry_to_flax(hx: Any) -> list[Any]:
    """A jaxseq stack's state (``h_n`` (L*D, N, H), or the LSTM's ``(h_n, c_n)``) -> one
    Flax carry per layer and direction (``h``, or ``(c, h)``), in the stack's order.

    >>> import jax.numpy as jnp
    >>> (c, h), = carry_to_flax((jnp.ones((1, 2, 3)), jnp.zeros((1, 2, 3))))
    >>> float(h[0, 0]), float(c[0, 0])
    (1.0, 0.0)
    """
    if isinstance(hx, (tuple, list)):
        if len(hx) != 2:
            raise ValueError("an LSTM state is a pair (h, c)")
        h, c = (jnp.asarray(a) for a in hx)
        if h.shape[0] != c.shape[0]:
            raise ValueError(f"h and c have different leading sizes {h.shape[0]}, {c.shape[0]}")
        return [(c[k], h[k]) for k in range(h.shape[0])]
    h = jnp.asarray(hx)
    return [h[k] for k in range(h.shape[0])]
