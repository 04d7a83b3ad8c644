"""Parameters of a stack: structure (:class:`RNNSpec`), names and shapes, and init.

A stack's parameters are a flat dict with PyTorch's names and layouts — what a
``torch.nn.RNN/LSTM/GRU`` ``state_dict()`` holds. Per layer k and direction (G gates, see
:mod:`jaxseq.recurrences`; D = 2 if bidirectional else 1; H_out = proj_size or H)::

    weight_ih_l{k}{_reverse}   (G*H, I)   for k = 0,   (G*H, D*H_out) for k > 0
    weight_hh_l{k}{_reverse}   (G*H, H_out)
    bias_ih_l{k}{_reverse}     (G*H,)     both biases, kept separately
    bias_hh_l{k}{_reverse}     (G*H,)
    weight_hr_l{k}{_reverse}   (H_out, H) kinds with a projection (LSTM), proj_size > 0

Linear kinds (minGRU, minLSTM) have ``weight_ih`` and ``bias_ih`` only. A kind may add
parameters of its own (:attr:`jaxseq.recurrences.Recurrence.extra_params`, e.g. the
layer-norm kinds' ``ln_ih_weight_l{k}``), after these; the names a kind accepts are its
:attr:`~jaxseq.recurrences.Recurrence.base_names`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxseq.recurrences import Recurrence, get
from jaxseq.validation import check_flags, check_structure
from seqfile.report import mismatch_report

Array = jax.Array

__all__ = [
    "RNNSpec",
    "param_shapes",
    "spec_from_params",
    "init_params",
    "init_rnn",
    "init_lstm",
    "init_gru",
    "init_min_gru",
    "init_min_lstm",
    "init_layernorm_lstm",
    "init_layernorm_gru",
    "suffixes",
    "check_shapes",
    "base_name",
    "BASES",
]

#: The per-layer parameter names of torch's RNN / LSTM / GRU, in torch's order. A kind's
#: own names (these, or fewer, plus its extra parameters) are ``Recurrence.base_names``.
BASES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
_SUFFIX_RE = re.compile(r"_l(\d+)(_reverse)?$")


def _key_re(rec: Recurrence) -> re.Pattern[str]:
    """``{base}_l{k}{_reverse}`` for torch's names and the kind's own; group 2 is the layer.
    (A torch name the kind lacks, e.g. ``weight_hr``, is then reported by the shape check
    with the option it implies.)"""
    names = "|".join(map(re.escape, dict.fromkeys(BASES + rec.base_names)))
    return re.compile(rf"^({names})_l(\d+)(_reverse)?$")


def base_name(name: str) -> str:
    """A parameter's name without its ``_l{k}{_reverse}`` suffix: ``weight_ih_l1_reverse``
    -> ``weight_ih``."""
    return _SUFFIX_RE.sub("", name)


def suffixes(layer: int, bidirectional: bool) -> list[str]:
    """``["_l{k}"]`` or ``["_l{k}", "_l{k}_reverse"]``: the directions of layer k, in order."""
    return [f"_l{layer}"] + ([f"_l{layer}_reverse"] if bidirectional else [])


@dataclasses.dataclass(frozen=True)
class RNNSpec:
    """The static structure of a stack, as torch's constructor arguments."""

    kind: str
    input_size: int
    hidden_size: int
    num_layers: int = 1
    bias: bool = True
    bidirectional: bool = False
    proj_size: int = 0

    @property
    def recurrence(self) -> Recurrence:
        return get(self.kind)

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        """H_out: the size of h (proj_size if > 0, else hidden_size)."""
        return self.proj_size if self.proj_size > 0 else self.hidden_size

    def validate(self) -> None:
        check_flags(bias=self.bias, bidirectional=self.bidirectional)
        check_structure(
            get(self.kind), self.input_size, self.hidden_size, self.num_layers, self.proj_size
        )

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """torch name -> shape, in torch's ``state_dict`` order."""
        rec = get(self.kind)
        shapes: dict[str, tuple[int, ...]] = {}
        for layer in range(self.num_layers):
            in_size = self.input_size if layer == 0 else self.output_size * self.num_directions
            layer_shapes = rec.layer_shapes(in_size, self.hidden_size, self.proj_size, self.bias)
            for sfx in suffixes(layer, self.bidirectional):
                shapes.update({base + sfx: shape for base, shape in layer_shapes.items()})
        return shapes


def param_shapes(
    kind: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    *,
    bias: bool = True,
    bidirectional: bool = False,
    proj_size: int = 0,
) -> dict[str, tuple[int, ...]]:
    """``{torch name: shape}`` for a stack with these constructor arguments, in torch's order.

    >>> param_shapes("lstm", 3, 4, proj_size=2)
    {'weight_ih_l0': (16, 3), 'weight_hh_l0': (16, 2), 'bias_ih_l0': (16,), 'bias_hh_l0': (16,), 'weight_hr_l0': (2, 4)}
    """
    spec = RNNSpec(kind, input_size, hidden_size, num_layers, bias, bidirectional, proj_size)
    spec.validate()
    return spec.param_shapes()


def spec_from_params(kind: str, params: Mapping[str, Any]) -> RNNSpec:
    """Infer the stack's structure from torch-named parameters and check every shape."""
    rec = get(kind)
    name = rec.display_name
    if not isinstance(params, Mapping):
        raise TypeError(
            f"params must be a mapping of torch parameter names to arrays, got {type(params).__name__}"
        )
    key_re = _key_re(rec)
    bad = [k for k in params if not key_re.match(k)]
    if bad:
        raise ValueError(f"{name}: unexpected parameter names {sorted(bad)}")
    required = ["weight_ih_l0"] if rec.is_linear else ["weight_ih_l0", "weight_hh_l0"]
    if any(k not in params for k in required):
        raise ValueError(
            f"{name}: params must hold at least {' and '.join(map(repr, required))}; "
            f"got {sorted(params)}"
        )
    if any(np.ndim(params[k]) != 2 for k in required):
        shapes = " and ".join(str(tuple(np.shape(params[k]))) for k in required)
        raise ValueError(
            f"{name}: {' and '.join(k for k in required)} must be 2-D, got shapes {shapes}"
        )
    layers = {int(m.group(2)) for m in map(key_re.match, params) if m}
    w_ih0 = params["weight_ih_l0"]
    gates = rec.num_gates
    if w_ih0.shape[0] % gates:
        raise ValueError(
            f"{name}: weight_ih_l0 has {w_ih0.shape[0]} rows, not a multiple of {gates} gates"
        )
    proj = int(params["weight_hr_l0"].shape[0]) if "weight_hr_l0" in params else 0
    spec = RNNSpec(
        kind=rec.name,
        input_size=int(w_ih0.shape[1]),
        hidden_size=int(w_ih0.shape[0] // gates),
        num_layers=max(layers) + 1,
        bias="bias_ih_l0" in params,
        bidirectional="weight_ih_l0_reverse" in params,
        proj_size=proj,
    )
    return check_shapes(name, spec, params)


def check_shapes(name: str, spec: Any, params: Mapping[str, Any]) -> Any:
    """Validate ``spec`` and compare ``params``'s shapes with ``spec.param_shapes()``: one
    ``ValueError`` naming every missing, unexpected or mis-shaped parameter. Returns
    ``spec``. The report is :func:`seqfile.report.mismatch_report`, the checkpoint
    loaders' too."""
    spec.validate()
    problems = mismatch_report(
        {k: tuple(v) for k, v in spec.param_shapes().items()},
        {k: tuple(np.shape(v)) for k, v in params.items()},
    )
    if problems:
        raise ValueError(f"{name}: inconsistent parameters: " + ", ".join(problems))
    return spec


def init_params(
    key: Array,
    kind: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    *,
    bias: bool = True,
    bidirectional: bool = False,
    proj_size: int = 0,
    dtype: Any = jnp.float32,
) -> dict[str, Array]:
    """Parameters of a ``kind`` stack with torch's init: every one ~ U(-1/sqrt(H), 1/sqrt(H)).

    Returns a flat dict ``{torch name: array}`` (see :func:`param_shapes` for the shapes),
    one PRNG key per parameter; the kind's definition may choose another init, and its
    extra parameters (layer-norm gains and biases) get their constants (ones, zeros).

    >>> import jax, jaxseq
    >>> p = jaxseq.init_params(jax.random.key(0), "gru", 3, 4, bidirectional=True)
    >>> sorted(p)[:3], p["weight_ih_l0_reverse"].shape
    (['bias_hh_l0', 'bias_hh_l0_reverse', 'bias_ih_l0'], (12, 3))
    """
    shapes = param_shapes(
        kind,
        input_size,
        hidden_size,
        num_layers,
        bias=bias,
        bidirectional=bidirectional,
        proj_size=proj_size,
    )
    rec = get(kind)
    keys = jax.random.split(key, len(shapes))
    return {
        name: rec.init_param(base_name(name), k, shape, dtype, hidden_size)
        for k, (name, shape) in zip(keys, shapes.items(), strict=True)
    }


def _named_init(kind: str, doc: str) -> Callable[..., dict[str, Array]]:
    def init(
        key: Array, input_size: int, hidden_size: int, num_layers: int = 1, **kw: Any
    ) -> dict[str, Array]:
        return init_params(key, kind, input_size, hidden_size, num_layers, **kw)

    init.__name__ = init.__qualname__ = f"init_{kind}"
    init.__doc__ = doc
    return init


init_rnn = _named_init(
    "rnn",
    """Parameters of ``torch.nn.RNN(input_size, hidden_size, num_layers, ...)``, torch's init.

    Keyword arguments as :func:`init_params` (``bias``, ``bidirectional``, ``dtype``).

    >>> import jax, jaxseq
    >>> p = jaxseq.init_rnn(jax.random.key(0), 3, 4)
    >>> p["weight_ih_l0"].shape, p["weight_hh_l0"].shape   # (1*H, I), (1*H, H)
    ((4, 3), (4, 4))
    """,
)
init_lstm = _named_init(
    "lstm",
    """Parameters of ``torch.nn.LSTM(input_size, hidden_size, num_layers, ...)``, torch's init.

    Keyword arguments as :func:`init_params` (``bias``, ``bidirectional``, ``proj_size``,
    ``dtype``).

    >>> import jax, jaxseq
    >>> p = jaxseq.init_lstm(jax.random.key(0), 3, 4)
    >>> p["weight_ih_l0"].shape, p["weight_hh_l0"].shape   # (4*H, I), (4*H, H)
    ((16, 3), (16, 4))
    """,
)
init_gru = _named_init(
    "gru",
    """Parameters of ``torch.nn.GRU(input_size, hidden_size, num_layers, ...)``, torch's init.

    Keyword arguments as :func:`init_params` (``bias``, ``bidirectional``, ``dtype``).

    >>> import jax, jaxseq
    >>> p = jaxseq.init_gru(jax.random.key(0), 3, 4)
    >>> p["weight_ih_l0"].shape, p["weight_hh_l0"].shape   # (3*H, I), (3*H, H)
    ((12, 3), (12, 4))
    """,
)
init_min_gru = _named_init(
    "min_gru",
    """Parameters of ``MinGRU(input_size, hidden_size, num_layers, ...)``, torch's init.

    Keyword arguments as :func:`init_params` (``bias``, ``bidirectional``, ``dtype``).

    >>> import jax, jaxseq
    >>> p = jaxseq.init_min_gru(jax.random.key(0), 3, 4, bidirectional=True)
    >>> {k: v.shape for k, v in p.items() if k.endswith("reverse")}   # rows [z; h~]
    {'weight_ih_l0_reverse': (8, 3), 'bias_ih_l0_reverse': (8,)}
    """,
)
init_min_lstm = _named_init(
    "min_lstm",
    """Parameters of ``MinLSTM(input_size, hidden_size, num_layers, ...)``, torch's init.

    Keyword arguments as :func:`init_params` (``bias``, ``bidirectional``, ``dtype``).

    >>> import jax, jaxseq
    >>> p = jaxseq.init_min_lstm(jax.random.key(0), 3, 4)
    >>> p["weight_ih_l0"].shape                 # rows [f; i; h~]
    (12, 3)
    """,
)
init_layernorm_lstm = _named_init(
    "layernorm_lstm",
    """Parameters of ``torchseq.LayerNormLSTM(input_size, hidden_size, num_layers, ...)``:
    the LSTM's with torch's init, the layer norms' gains ones and biases zeros.

    Keyword arguments as :func:`init_params` (``bias``, ``bidirectional``, ``dtype``).

    >>> import jax, jaxseq
    >>> p = jaxseq.init_layernorm_lstm(jax.random.key(0), 3, 4)
    >>> p["ln_ih_weight_l0"].shape, float(p["ln_c_weight_l0"].min()), float(p["ln_c_bias_l0"].max())
    ((16,), 1.0, 0.0)
    """,
)
init_layernorm_gru = _named_init(
    "layernorm_gru",
    """Parameters of ``torchseq.LayerNormGRU(input_size, hidden_size, num_layers, ...)``:
    the GRU's with torch's init, the layer norms' gains ones and biases zeros.

    Keyword arguments as :func:`init_params` (``bias``, ``bidirectional``, ``dtype``).

    >>> import jax, jaxseq
    >>> p = jaxseq.init_layernorm_gru(jax.random.key(0), 3, 4)
    >>> sorted(k for k in p if k.startswith("ln_"))
    ['ln_hh_bias_l0', 'ln_hh_weight_l0', 'ln_ih_bias_l0', 'ln_ih_weight_l0']
    """,
)
