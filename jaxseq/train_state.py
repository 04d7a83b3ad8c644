"""Training-state checkpoints of a :class:`jaxseq.train.TrainStep`: save, restore, resume.

The file format, file naming, keep-last-k, the fallback past corrupted files and the one
table that names optimizer state in both frameworks live in
:mod:`seqfile.training_state` (NumPy only); this module maps a train step's state onto it:

* parameters -> their torch names (:func:`jaxseq.interop.to_torch_state_dict`, so
  ``nnx.Linear`` kernels are stored transposed, as torch's ``weight``);
* optax state: the fields the table names (``TraceState.trace``, ``ScaleByAdamState.mu``
  / ``nu``) -> ``optim/{torch key}/{torch name}`` in torch's layout, the Adam ``count`` ->
  ``optim/step``; every other leaf (e.g. a schedule's ``count``) -> ``jax/optax/{path}``;
* the rest of the model state (the ``nnx.Rngs`` keys and counters of dropout) ->
  ``jax/rest/{path}``;
* the carried state of truncated backpropagation through time (``carry_state=True``,
  :attr:`jaxseq.train.TrainStep.state`, whole even when sharded over a mesh) ->
  ``jax/carry/state{path}``, its tree (tuples, lists, dicts, None) in the JSON
  ``extra["carry"]``; absent while the state is None.

Read back by the same framework, every bit is restored, so a resumed run equals an
uninterrupted one exactly, a stream included: the resumed step continues from the
carried state it was cut at. From a torch checkpoint, the table's fields come from
torch.optim's state, optax ``count`` leaves from ``optim/step`` (or the step count), and
the dropout RNG keeps the model's own state (torch's RNG means nothing to JAX).

>>> import tempfile, numpy as np, optax
>>> from flax import nnx
>>> from jaxseq.models import SequenceClassifier
>>> from jaxseq.train import TrainStep
>>> model = SequenceClassifier(2, 3, hidden_size=4, rngs=nnx.Rngs(0))
>>> step = TrainStep(model, optax.adam(1e-2))
>>> batch = (np.ones((4, 5, 2), np.float32), np.array([5, 1, 3, 2]), np.array([0, 1, 2, 0]))
>>> _ = step(*batch)
>>> d = tempfile.mkdtemp()
>>> path = save(step, d, step_count=1)
>>> twin = TrainStep(SequenceClassifier(2, 3, hidden_size=4, rngs=nnx.Rngs(1)),
...                  optax.adam(1e-2))
>>> restore(twin, d).step
1
>>> float(step(*batch)) == float(twin(*batch))
True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, cast

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxseq.interop import load_torch_state_dict, to_torch_state_dict
from seqfile import training_state as ts
from seqfile.history import History


class TrainStep(Protocol):
    """What this module needs of a :class:`jaxseq.train.TrainStep` (named here, not
    imported: ``jaxseq.train`` imports this module)."""

    model: nnx.Module
    opt_state: Any
    mesh: Any
    carry_state: bool
    state: Any

    def sync(self) -> None: ...

    def host_state(self) -> Any: ...

    def reset(self) -> None: ...

    def replicate(self, tree: Any) -> Any: ...


__all__ = ["optimizer_family", "optimizer_detail", "state_tensors", "save", "load", "restore"]

_OPTAX = "jax/optax/"
_REST = "jax/rest/"
_CARRY = "jax/carry/state"


def _is_namedtuple(node: Any) -> bool:
    return isinstance(node, tuple) and hasattr(node, "_fields")


def _state_classes(opt_state: Any) -> list[str]:
    """The NamedTuple class names in an optax state, in order."""
    out: list[str] = []

    def visit(node: Any) -> None:
        if _is_namedtuple(node):
            out.append(type(node).__name__)
            for v in node:
                visit(v)
        elif isinstance(node, (tuple, list)):
            for v in node:
                visit(v)
        elif isinstance(node, dict):
            for k in sorted(node):
                visit(node[k])

    visit(opt_state)
    return out


def optimizer_family(opt_state: Any) -> str:
    """The optimizer family of an optax state, a key of
    :data:`seqfile.training_state.OPTIMIZER_STATE` (``"sgd"`` for a ``TraceState``,
    ``"adam"`` for a ``ScaleByAdamState``), ``"none"`` for a state without either.

    >>> import optax, jax.numpy as jnp
    >>> optimizer_family(optax.adamw(1e-3).init({"w": jnp.zeros(2)}))
    'adam'
    """
    found = {ts.OPTAX_STATES[c] for c in _state_classes(opt_state) if c in ts.OPTAX_STATES}
    if len(found) > 1:
        raise ValueError(f"an optax state of several optimizer families: {sorted(found)}")
    return found.pop() if found else "none"


def optimizer_detail(opt_state: Any) -> str:
    """A signature of an optax state: its state classes in order (e.g.
    ``"optax:ClipByGlobalNormTorchState,ScaleByAdamState,EmptyState"``)."""
    return "optax:" + ",".join(_state_classes(opt_state))


def _local(tree: Any) -> Any:
    """Every array of ``tree`` as this process's copy (replicated global arrays)."""

    def one(a: Any) -> Any:
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            return a.addressable_data(0)
        return a

    return jax.tree.map(one, tree)


def _leaf_arrays(tree: Any, prefix: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """``({prefix + keypath: array}, {name: PRNG impl})`` of every leaf; typed PRNG keys
    are stored as their key data (uint32) with the implementation's name on the side."""
    arrays, impls = {}, {}
    for kp, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = prefix + jax.tree_util.keystr(kp)
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            impls[name] = str(jax.random.key_impl(leaf))
            leaf = jax.random.key_data(leaf)
        arrays[name] = np.asarray(jax.device_get(leaf))
    return arrays, impls


def _moments_to_torch(graphdef: Any, rest: Any, moment: Any) -> dict[str, np.ndarray]:
    """A parameter-shaped optax moment as ``{torch name: array}`` in torch's layout."""
    return to_torch_state_dict(nnx.merge(graphdef, moment, rest))


def state_tensors(step: TrainStep) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``(tensors, extra)``: the train step's state as checkpoint tensors (parameters,
    optimizer state, RNG state; see the module docstring) and the JSON ``extra`` (PRNG
    implementations). With a mesh, this process's copy of the replicated state."""
    step.sync()
    graphdef, _, rest = cast(tuple[Any, Any, Any], nnx.split(step.model, nnx.Param, ...))
    tensors = dict(to_torch_state_dict(step.model))
    rest_arrays, impls = _leaf_arrays(rest, _REST)
    tensors.update(rest_arrays)
    opt_state = _local(step.opt_state)

    def visit(node: Any, path: str) -> None:
        family = ts.OPTAX_STATES.get(type(node).__name__) if _is_namedtuple(node) else None
        if family is not None:
            for field, value in zip(node._fields, node, strict=True):
                key = ts.torch_key(field)
                if key == "step":
                    tensors[ts.STEP_KEY] = np.asarray(value).astype(np.int64)
                    visit(value, f"{path}.{field}")  # also verbatim (its exact dtype)
                elif key is not None:
                    for name, a in _moments_to_torch(graphdef, rest, value).items():
                        tensors[ts.optim_name(key, name)] = a
                else:
                    visit(value, f"{path}.{field}")
        elif _is_namedtuple(node):
            for field, value in zip(node._fields, node, strict=True):
                visit(value, f"{path}.{field}")
        elif isinstance(node, (tuple, list)):
            for i, value in enumerate(node):
                visit(value, f"{path}.{i}")
        elif isinstance(node, dict):
            for k in sorted(node):
                visit(node[k], f"{path}.{k}")
        else:
            arrays, key_impls = _leaf_arrays(node, _OPTAX + path.lstrip("."))
            tensors.update(arrays)
            impls.update(key_impls)

    visit(opt_state, "")
    extra: dict[str, Any] = {"prng_impls": impls}
    if step.carry_state:
        carried = step.host_state()  # every process takes part in gathering it
        if carried is not None:
            extra["carry"] = _encode_carry(carried, tensors, impls)
    return tensors, extra


def _encode_carry(
    tree: Any, tensors: dict[str, np.ndarray], impls: dict[str, str], path: str = ""
) -> Any:
    """The JSON form of the carried state's tree; its arrays go into ``tensors`` as
    ``jax/carry/state{path}``."""
    if tree is None:
        return None
    if isinstance(tree, (tuple, list)) and not _is_namedtuple(tree):
        kind = "tuple" if isinstance(tree, tuple) else "list"
        return {
            kind: [_encode_carry(v, tensors, impls, f"{path}[{i}]") for i, v in enumerate(tree)]
        }
    if isinstance(tree, dict) and all(isinstance(k, str) for k in tree):
        return {
            "dict": {k: _encode_carry(v, tensors, impls, f"{path}[{k!r}]") for k, v in tree.items()}
        }
    if hasattr(tree, "shape") and hasattr(tree, "dtype"):
        arrays, key_impls = _leaf_arrays(tree, _CARRY + path)
        tensors.update(arrays)
        impls.update(key_impls)
        return {"leaf": _CARRY + path}
    raise TypeError(
        f"cannot checkpoint the carried state: state{path} is a {type(tree).__name__}; "
        "a checkpoint holds arrays in tuples, lists, dicts with str keys and None"
    )


def _decode_carry(spec: Any, tensors: Mapping[str, np.ndarray], impls: Mapping[str, str], where):
    """The carried state from its JSON form and the ``jax/carry/...`` tensors."""
    if spec is None:
        return None
    if "tuple" in spec or "list" in spec:
        kind = tuple if "tuple" in spec else list
        return kind(
            _decode_carry(v, tensors, impls, where) for v in spec.get("tuple", spec.get("list"))
        )
    if "dict" in spec:
        return {k: _decode_carry(v, tensors, impls, where) for k, v in spec["dict"].items()}
    name = spec["leaf"]
    if name not in tensors:
        raise ValueError(f"{where} has no carried-state tensor {name!r}")
    a = np.asarray(tensors[name])
    if name in impls:
        return jax.random.wrap_key_data(jnp.asarray(a), impl=impls[name])
    return a


def _read_leaves(
    template: Any,
    prefix: str,
    tensors: Mapping[str, np.ndarray],
    impls: Mapping[str, str],
    fallback: Callable[[str, Any], Any],
) -> Any:
    """``template`` with every leaf read from ``tensors[prefix + keypath]`` (in the
    template's dtype and shape), or ``fallback(name, leaf)`` where there is none."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    out = []
    for kp, leaf in leaves:
        name = prefix + jax.tree_util.keystr(kp)
        if name not in tensors:
            out.append(fallback(name, leaf))
            continue
        a = tensors[name]
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            value = jax.random.wrap_key_data(jnp.asarray(a), impl=impls.get(name))
        else:
            value = jnp.asarray(np.asarray(a).astype(leaf.dtype))
        if value.shape != leaf.shape:
            raise ValueError(f"{name}: checkpoint has shape {value.shape}, expected {leaf.shape}")
        out.append(value)
    return jax.tree_util.tree_unflatten(treedef, out)


def load(step: TrainStep, state: ts.TrainingState) -> None:
    """Put a checkpoint read by :func:`seqfile.training_state.read` into ``step`` (and its
    model): parameters, optimizer state and (when written by jaxseq) the RNG state and,
    for a step with ``carry_state=True``, the carried state (None if the file has none)."""
    tensors, meta = state.tensors, state.meta
    impls = (meta.get("extra") or {}).get("prng_impls", {})
    where = state.path
    model = step.model
    load_torch_state_dict(model, {k: v for k, v in tensors.items() if "/" not in k})
    graphdef, _, rest = cast(tuple[Any, Any, Any], nnx.split(model, nnx.Param, ...))
    if any(k.startswith(_REST) for k in tensors):  # written by jaxseq: its dropout RNG
        rest = _read_leaves(rest, _REST, tensors, impls, lambda name, leaf: leaf)
        nnx.update(model, rest)
    step.reset()  # re-reads the model (replicated over a mesh) and a fresh opt_state
    template = _local(step.opt_state)
    step_count = int(tensors[ts.STEP_KEY]) if ts.STEP_KEY in tensors else state.step

    def leaf_fallback(name: str, leaf: Any) -> Any:
        if name.endswith("count"):  # a step counter (e.g. a schedule's)
            return jnp.asarray(np.asarray(state.step).astype(leaf.dtype))
        raise ValueError(f"{where} has no optimizer state {name!r} for this optimizer")

    def moment(key: str, value: Any) -> Any:
        prefix = ts.optim_name(key, "")
        found = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        if not found and state.step == 0:
            return value  # torch creates its buffers at the first step
        clone = nnx.merge(graphdef, value, rest)
        try:
            load_torch_state_dict(clone, found)
        except ValueError as e:
            raise ValueError(f"{where}: optimizer state {key!r} does not fit: {e}") from e
        return nnx.split(clone, nnx.Param, ...)[1]

    def visit(node: Any, path: str) -> Any:
        family = ts.OPTAX_STATES.get(type(node).__name__) if _is_namedtuple(node) else None
        if _is_namedtuple(node):
            values = []
            for field, value in zip(node._fields, node, strict=True):
                key = ts.torch_key(field) if family is not None else None
                if key == "step":
                    name = _OPTAX + f"{path}.{field}".lstrip(".")
                    values.append(
                        jnp.asarray(np.asarray(tensors.get(name, step_count)).astype(value.dtype))
                    )
                elif key is not None:
                    values.append(moment(key, value))
                else:
                    values.append(visit(value, f"{path}.{field}"))
            return type(node)(*values)
        if isinstance(node, (tuple, list)):
            return type(node)(visit(v, f"{path}.{i}") for i, v in enumerate(node))
        if isinstance(node, dict):
            return {k: visit(node[k], f"{path}.{k}") for k in node}
        return _read_leaves(node, _OPTAX + path.lstrip("."), tensors, impls, leaf_fallback)

    opt_state = visit(template, "")
    if step.mesh is not None:
        step.opt_state = step.replicate(opt_state)
    else:
        step.opt_state = opt_state
    carry = (meta.get("extra") or {}).get("carry")
    if step.carry_state and carry is not None:  # else the state starts from None
        state_ = _decode_carry(carry, tensors, impls, where)
        # One device: arrays on it; a mesh: the whole arrays, cut along the batch by the
        # next call (every process reads the same file).
        step.state = state_ if step.mesh is not None else jax.tree.map(jnp.asarray, state_)


def _signature(step: TrainStep) -> dict[str, Any]:
    """What a checkpoint must match: model class, parameter shapes, optimizer."""
    params = to_torch_state_dict(step.model)
    return {
        "framework": "jax",
        "model": type(step.model).__name__,
        "params": {k: list(v.shape) for k, v in params.items()},
        "optimizer": optimizer_family(step.opt_state),
        "optimizer_detail": optimizer_detail(step.opt_state),
    }


def save(
    step: TrainStep,
    directory: Any,
    *,
    step_count: int,
    epoch: int = 0,
    batch: int = 0,
    history: History | None = None,
    config: Mapping[str, Any] | None = None,
    keep: int = 3,
) -> Path | None:
    """Write a training checkpoint of ``step`` after ``step_count`` steps into
    ``directory`` (``step-{step_count:09d}.safetensors``, the newest ``keep`` kept).

    ``epoch`` / ``batch``: the data-order state (the epoch in progress, batches of it
    done); ``history``: the losses so far; ``config``: JSON-serialisable settings kept in
    the file. Under several processes every process calls it and process 0 writes (the
    others return None)."""
    tensors, extra = state_tensors(step)
    if jax.process_index() != 0:
        return None
    return ts.save_run(
        directory,
        tensors,
        _signature(step),
        step_count=step_count,
        epoch=epoch,
        batch=batch,
        history=history,
        config=config,
        extra=extra,
        keep=keep,
        writer="jaxseq",
    )


def restore(step: TrainStep, directory: Any) -> ts.TrainingState | None:
    """Load the newest valid checkpoint of ``directory`` into ``step`` and its model (see
    :func:`seqfile.training_state.load_latest`); None (nothing changed) if there is none.
    A checkpoint of another model or optimizer raises ``ValueError``."""
    state = ts.load_latest_compatible(directory, framework="jax", signature=_signature(step))
    if state is not None:
        load(step, state)
    return state
