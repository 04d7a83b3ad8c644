"""Whole-module conversion between PyTorch and jaxseq: configuration *and* weights.

:func:`from_torch` reads a torch module's constructor configuration from its attributes,
builds the jaxseq (Flax NNX) module with the same configuration and loads the torch
weights into it by name; :func:`to_torch` goes the other way. Both are exact: the
parameters are copied bit for bit (in the parameters' dtype), so a round trip
``to_torch(from_torch(m))`` gives back ``m``'s ``state_dict`` exactly.

Supported pairs (the class must match *exactly*: a subclass may compute something else)::

    torch.nn.RNN / LSTM / GRU                 <-> jaxseq.nn.RNN / LSTM / GRU
    torch.nn.RNNCell / LSTMCell / GRUCell     <-> jaxseq.nn.RNNCell / LSTMCell / GRUCell
    torchseq.MinGRU / MinLSTM                 <-> jaxseq.nn.MinGRU / MinLSTM
    torchseq.LayerNormLSTM / LayerNormGRU     <-> jaxseq.nn.LayerNormLSTM / LayerNormGRU
    torch.nn.Linear                           <-> flax.nnx.Linear   (weight = kernel.T)
    torch.nn.Embedding                        <-> flax.nnx.Embed
    torchseq.models.SequenceClassifier, ...   <-> jaxseq.models.SequenceClassifier, ...

The mode travels too: a torch module in ``eval()`` mode gives a jaxseq module in
``eval()`` mode, and back. (``nnx.Linear``, ``nnx.Embed`` and the cells have no mode,
since nothing they compute depends on it; ``to_torch`` leaves their twins in torch's
default training mode.) Float64 modules need ``jax_enable_x64``.

This module imports torch only inside :func:`from_torch` / :func:`to_torch`, which need it.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxseq.interop.state_dict import load_torch_state_dict, to_torch_state_dict
from jaxseq.nn import RNNBase, module_class
from jaxseq.recurrences import Recurrence, get, registered
from jaxseq.validation import check_rngs

__all__ = ["from_torch", "to_torch", "SUPPORTED"]


def _rate(dropout: Any) -> float:
    """Dropout probability of ``torch.nn.Dropout`` (``p``) or ``nnx.Dropout`` (``rate``)."""
    return float(dropout.p if hasattr(dropout, "p") else dropout.rate)


def _twins(rec: Recurrence) -> list[tuple[str, str, bool]]:
    """``(torch path, jaxseq path, is_cell)`` of a kind's layer and cell modules."""
    out = []
    for cell in (False, True):
        try:
            cls = module_class(rec, cell=cell)
        except ValueError:  # no module of that kind (module_class says so)
            continue
        if rec.torch_twin:
            out.append(
                (rec.torch_twin + ("Cell" if cell else ""), f"jaxseq.nn:{cls.__name__}", cell)
            )
    return out


def _cell(rnn: Any) -> str:
    """The registered kind of a torch or jaxseq recurrent layer or cell, read off its
    definition (jaxseq modules carry ``kind``; torch classes are the kinds' ``torch_twin``)."""
    kind = getattr(rnn, "kind", None)
    if isinstance(kind, str) and kind:
        return kind
    for rec in registered().values():
        if any(type(rnn) is _Pair.resolve(t) for t, _, _ in _twins(rec)):
            return rec.name
    raise TypeError(f"{type(rnn).__name__} is not the module of a registered kind")


def _embed_size(embed: Any) -> int:
    return int(embed.embedding_dim if hasattr(embed, "embedding_dim") else embed.features)


def _layer_config(m: Any) -> dict[str, Any]:
    cfg = {
        "input_size": m.input_size,
        "hidden_size": m.hidden_size,
        "num_layers": m.num_layers,
        "bias": bool(m.bias),
        "batch_first": bool(m.batch_first),
        "dropout": float(m.dropout),
        "bidirectional": bool(m.bidirectional),
    }
    rec = get(_cell(m))
    if rec.projection:
        cfg["proj_size"] = m.proj_size
    if len(rec.nonlinearities) > 1:
        cfg["nonlinearity"] = m.nonlinearity
    return cfg


def _cell_config(m: Any) -> dict[str, Any]:
    cfg = {"input_size": m.input_size, "hidden_size": m.hidden_size, "bias": bool(m.bias)}
    if len(get(_cell(m)).nonlinearities) > 1:
        cfg["nonlinearity"] = m.nonlinearity
    return cfg


def _linear_config(m: Any) -> dict[str, Any]:
    has_bias = m.use_bias if hasattr(m, "use_bias") else m.bias is not None
    return {"in_features": m.in_features, "out_features": m.out_features, "bias": bool(has_bias)}


def _embedding_config(m: Any) -> dict[str, Any]:
    unsupported = {
        "padding_idx": None,
        "max_norm": None,
        "scale_grad_by_freq": False,
    }
    for name, default in unsupported.items():
        if getattr(m, name, default) != default:
            raise ValueError(
                f"Embedding with {name}={getattr(m, name)!r} has no nnx.Embed counterpart "
                f"(it changes the {'output' if name == 'max_norm' else 'gradient'}); "
                f"convert an Embedding with the default {name}={default!r}"
            )
    return {"num_embeddings": m.num_embeddings, "embedding_dim": _embed_size(m)}


def _classifier_config(m: Any) -> dict[str, Any]:
    rnn = m.rnn
    return {
        "input_size": rnn.input_size,
        "num_classes": m.head.out_features,
        "hidden_size": rnn.hidden_size,
        "cell": _cell(rnn),
        "num_layers": rnn.num_layers,
        "bidirectional": bool(rnn.bidirectional),
        "dropout": _rate(m.dropout),
        "proj_size": getattr(rnn, "proj_size", 0),
        "nonlinearity": getattr(rnn, "nonlinearity", "tanh"),
        "vocab_size": None
        if m.embedding is None
        else _embedding_config(m.embedding)["num_embeddings"],
    }


def _feedforward_config(m: Any) -> dict[str, Any]:
    return {
        "input_size": m.input_size,
        "num_classes": m.head.out_features,
        "max_len": m.max_len,
        "hidden_size": m.layers[0].out_features,
        "num_layers": len(m.layers),
        "dropout": _rate(m.dropout),
    }


def _forecaster_config(m: Any) -> dict[str, Any]:
    rnn = m.rnn
    return {
        "input_size": rnn.input_size,
        "hidden_size": rnn.hidden_size,
        "cell": _cell(rnn),
        "num_layers": rnn.num_layers,
        "horizon": m.horizon,
        "output_size": m.output_size,
        "dropout": _rate(m.dropout),
    }


def _charlm_config(m: Any) -> dict[str, Any]:
    emb = _embedding_config(m.embedding)
    return {
        "vocab_size": emb["num_embeddings"],
        "embed_dim": emb["embedding_dim"],
        "hidden_size": m.rnn.hidden_size,
        "cell": _cell(m.rnn),
        "num_layers": m.rnn.num_layers,
        "dropout": _rate(m.dropout),
    }


def _nnx_linear_kwargs(cfg: dict[str, Any]) -> dict[str, Any]:
    return {
        "in_features": cfg["in_features"],
        "out_features": cfg["out_features"],
        "use_bias": cfg["bias"],
    }


def _nnx_embed_kwargs(cfg: dict[str, Any]) -> dict[str, Any]:
    return {"num_embeddings": cfg["num_embeddings"], "features": cfg["embedding_dim"]}


def _same(cfg: dict[str, Any]) -> dict[str, Any]:
    return cfg


@dataclasses.dataclass(frozen=True)
class _Pair:
    """One torch class and its jaxseq/NNX twin, with the configuration read off either."""

    torch_path: str  # "module:qualname"
    jax_path: str
    config: Callable[[Any], dict[str, Any]]  # works on a module of either side
    jax_kwargs: Callable[[dict[str, Any]], dict[str, Any]] = _same  # config -> jax kwargs
    torch_kwargs: Callable[[dict[str, Any]], dict[str, Any]] = _same  # config -> torch kwargs

    @staticmethod
    def resolve(path: str) -> type:
        module, name = path.split(":")
        return getattr(importlib.import_module(module), name)


def _pairs() -> list[_Pair]:
    out = [
        _Pair(torch_path, jax_path, _cell_config if cell else _layer_config)
        for rec in registered().values()
        for torch_path, jax_path, cell in _twins(rec)
    ]
    out.append(
        _Pair(
            "torch.nn:Linear",
            "flax.nnx:Linear",
            _linear_config,
            _nnx_linear_kwargs,
            _same,
        )
    )
    out.append(_Pair("torch.nn:Embedding", "flax.nnx:Embed", _embedding_config, _nnx_embed_kwargs))
    for name, config in (
        ("SequenceClassifier", _classifier_config),
        ("FeedForwardClassifier", _feedforward_config),
        ("Forecaster", _forecaster_config),
        ("CharLM", _charlm_config),
    ):
        out.append(_Pair(f"torchseq.models:{name}", f"jaxseq.models:{name}", config))
    return out


#: The supported (torch class, jaxseq class) pairs, as ``"module:name"`` strings.
SUPPORTED: tuple[tuple[str, str], ...] = tuple((p.torch_path, p.jax_path) for p in _pairs())


def _unsupported(module: Any, direction: str, side: int) -> TypeError:
    names = ", ".join(pair[side].replace(":", ".") for pair in SUPPORTED)
    cls = type(module)
    return TypeError(
        f"{direction} does not support {cls.__module__}.{cls.__qualname__}; "
        f"supported classes: {names}"
    )


def _find(module: Any, side: int) -> _Pair | None:
    for pair in _pairs():
        path = pair.torch_path if side == 0 else pair.jax_path
        if type(module) is _Pair.resolve(path):
            return pair
    return None


def _jax_dtype(torch_dtype: Any) -> Any:
    name = str(torch_dtype).removeprefix("torch.")
    if name not in ("float16", "bfloat16", "float32", "float64"):
        raise TypeError(f"from_torch: parameters of dtype {torch_dtype} are not supported")
    if name == "float64" and not jax.config.read("jax_enable_x64"):
        raise ValueError(
            "from_torch: the module has float64 parameters but JAX's float64 is off; "
            'call jax.config.update("jax_enable_x64", True) first'
        )
    return jnp.dtype(name)


def _param_dtypes(state_dict: dict[str, Any]) -> set[str]:
    return {str(v.dtype) for v in state_dict.values()}


def from_torch(module: Any, *, rngs: nnx.Rngs | None = None) -> nnx.Module:
    """The jaxseq / Flax NNX module equivalent to the torch ``module``: same configuration,
    same weights (copied exactly, in the same dtype), same train/eval mode.

    Args:
      module: a ``torch.nn.Module`` of a supported class (see :data:`SUPPORTED`).
      rngs: for the new module's dropout stream (and its discarded initial values);
        default ``nnx.Rngs(0)``.

    Returns:
      The new module, e.g. ``jaxseq.nn.LSTM`` for ``torch.nn.LSTM``.

    Raises:
      TypeError: for an unsupported class, naming it and listing the supported ones.
      ValueError: for a configuration the twin cannot reproduce (e.g. an ``Embedding``
        with ``padding_idx``), or float64 weights while JAX's float64 is off.

    >>> import torch, jaxseq
    >>> m = jaxseq.interop.from_torch(torch.nn.GRU(3, 4, num_layers=2))
    >>> type(m).__name__, m.num_layers
    ('GRU', 2)
    """
    if rngs is not None:
        check_rngs(rngs)
    try:
        import torch
    except ImportError as e:  # pragma: no cover - needs an environment without torch
        raise ImportError("from_torch needs PyTorch: pip install 'jaxseq[torch]'") from e
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"from_torch expects a torch.nn.Module, got {type(module).__name__}")
    pair = _find(module, side=0)
    if pair is None:
        raise _unsupported(module, "from_torch", side=0)
    state_dict = module.state_dict()
    dtypes = _param_dtypes(state_dict)
    if len(dtypes) > 1:
        raise ValueError(f"from_torch: the module mixes parameter dtypes {sorted(dtypes)}")
    param_dtype = _jax_dtype(next(iter(dtypes))) if dtypes else jnp.dtype(jnp.float32)
    kwargs = pair.jax_kwargs(pair.config(module))
    jax_cls = _Pair.resolve(pair.jax_path)
    new = jax_cls(**kwargs, param_dtype=param_dtype, rngs=rngs if rngs is not None else nnx.Rngs(0))
    load_torch_state_dict(new, state_dict, strict=True)
    if not module.training:
        new.eval()
    return new


def _refuse_uncarried(module: nnx.Module) -> None:
    """Raise ValueError naming every recurrent regulariser in ``module``: torch's twins
    cannot carry them, and converting without them would silently change the model."""
    found = []
    for path, node in nnx.iter_graph(module):
        if isinstance(node, RNNBase):
            where = f" ({'.'.join(str(p) for p in path)})" if path else ""
            found += [f"{k}={v}{where}" for k, v in node.options.rates().items() if v > 0]
    if found:
        raise ValueError(
            "to_torch: the torch twin cannot carry the recurrent regularisers "
            f"{', '.join(found)} (they change what the layer computes; zoneout in eval mode "
            "too). Convert a copy built with them at 0 (the same weights load into it), and "
            "for the regularised torch forward use torchseq.run_regularized with masks from "
            "jaxseq.regularizers.draw_masks"
        )


def _in_eval_mode(module: nnx.Module) -> bool:
    return any(
        getattr(node, "deterministic", False) is True
        for _, node in nnx.iter_graph(module)
        if isinstance(node, nnx.Module)
    )


def to_torch(module: nnx.Module) -> Any:
    """The torch module equivalent to the jaxseq / Flax NNX ``module``: same configuration,
    same weights (copied exactly, in the parameters' dtype), same train/eval mode.

    The reverse of :func:`from_torch`. Building the torch module does not advance torch's
    global random generator (its discarded initial values are drawn in a forked one).

    What only says how a jaxseq layer runs (``impl``, ``unroll``, ``remat``, ``chunk``,
    ``carry_dtype``: :class:`jaxseq.options.LayerOptions`) is not carried: the torch module
    computes the same function in its parameters' dtype. A recurrent regulariser changes
    the function (zoneout even in eval mode) and ``torch.nn``'s layers have none, so a
    module with one is refused, naming each.

    Raises:
      TypeError: for an unsupported class, naming it and listing the supported ones.
      ValueError: for a module whose recurrent layers have regularisers (each named, with
        what to do instead).
    """
    try:
        import torch
    except ImportError as e:  # pragma: no cover - needs an environment without torch
        raise ImportError("to_torch needs PyTorch: pip install 'jaxseq[torch]'") from e
    if not isinstance(module, nnx.Module):
        raise TypeError(f"to_torch expects a flax.nnx.Module, got {type(module).__name__}")
    pair = _find(module, side=1)
    if pair is None:
        raise _unsupported(module, "to_torch", side=1)
    _refuse_uncarried(module)
    state = to_torch_state_dict(module)
    dtypes = {str(v.dtype) for v in state.values()}
    if len(dtypes) > 1:
        raise ValueError(f"to_torch: the module mixes parameter dtypes {sorted(dtypes)}")
    torch_dtype = getattr(torch, next(iter(dtypes))) if dtypes else torch.float32
    torch_cls = _Pair.resolve(pair.torch_path)
    with torch.random.fork_rng(devices=[]):
        new = torch_cls(**pair.torch_kwargs(pair.config(module))).to(torch_dtype)
    tensors = {}
    for name, value in state.items():
        if value.dtype.name == "bfloat16":  # NumPy has no bfloat16: go through float32, exactly
            tensors[name] = torch.from_numpy(value.astype(np.float32)).to(torch.bfloat16)
        else:
            tensors[name] = torch.from_numpy(value)
    new.load_state_dict(tensors, strict=True)
    if _in_eval_mode(module):
        new.eval()
    return new
