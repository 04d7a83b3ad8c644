"""``state_dict`` <-> jaxseq modules, by torch name alone; checkpoint files.

Because jaxseq keeps torch's parameter names and layouts, a torch ``state_dict`` maps
onto a jaxseq module with no transposes for the recurrent layers. Layouts that differ
between the frameworks (e.g. ``nnx.Linear`` stores ``kernel`` as (in, out) where torch's
``weight`` is (out, in)) are listed once, in :data:`LAYOUT`.

Checkpoints: :func:`save` / :func:`load` write and read safetensors files under the torch
names, the same files that ``torchseq.checkpoint.save`` / ``load`` write and read.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxseq.nn import RNNBase

# The file format (sorted metadata, sha256, atomic writes) is shared with ``torchseq.checkpoint``.
from seqfile import finalize as _finalize
from seqfile import read_checked as _read_checked
from seqfile import write_atomic as _write_atomic
from seqfile.report import compare, dtype_error, load_error, torch_parts

__all__ = [
    "load_torch_state_dict",
    "to_torch_state_dict",
    "torch_named_params",
    "LAYOUT",
    "save",
    "load",
]

#: ``(module type, torch name) -> (nnx attribute, to_jax, to_torch)``: one table for every
#: layout that is not the identity (``nnx.Linear``'s kernel is torch's weight transposed).
#: Extended by the model zoo.
LAYOUT: dict[
    tuple[type, str],
    tuple[str, Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]],
] = {
    (nnx.Linear, "weight"): ("kernel", lambda w: w.T, lambda k: k.T),
    (nnx.Linear, "bias"): ("bias", lambda b: b, lambda b: b),
    (nnx.Embed, "weight"): ("embedding", lambda w: w, lambda w: w),
}


def to_numpy(v: Any) -> np.ndarray:
    """A torch tensor (bfloat16 included, via ``ml_dtypes``) or array as a NumPy array."""
    if hasattr(v, "detach"):  # torch.Tensor, without importing torch
        v = v.detach().cpu()
        if str(v.dtype) == "torch.bfloat16":
            import ml_dtypes

            return v.float().numpy().astype(ml_dtypes.bfloat16)
        return v.numpy()
    return np.asarray(v)


def torch_named_params(module: nnx.Module) -> dict[str, tuple[nnx.Module, str, Callable, Callable]]:
    """Map every torch name of ``module`` to (owner, attribute, to_jax, to_torch).

    Walks the module tree: jaxseq recurrent modules contribute their own torch-named
    parameters, ``nnx.Linear``/``nnx.Embed`` contribute via :data:`LAYOUT`, and other
    modules contribute parameters whose attribute name is already the torch name.
    """
    out: dict[str, tuple[nnx.Module, str, Callable, Callable]] = {}
    ident = (lambda a: a, lambda a: a)

    def visit(mod: nnx.Module, prefix: str) -> None:
        if isinstance(mod, RNNBase):
            for name in mod._param_names:
                out[prefix + name] = (mod, name, *ident)
            return
        handled = set()
        for (typ, tname), (attr, to_jax, to_th) in LAYOUT.items():
            if type(mod) is typ and isinstance(getattr(mod, attr, None), nnx.Param):
                out[prefix + tname] = (mod, attr, to_jax, to_th)
                handled.add(attr)
        for attr, value in vars(mod).items():
            if attr in handled or attr.startswith("_"):
                continue
            if isinstance(value, nnx.Param):
                out[prefix + attr] = (mod, attr, *ident)
            elif isinstance(value, nnx.Module):
                visit(value, f"{prefix}{attr}.")
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, nnx.Module):
                        visit(item, f"{prefix}{attr}.{i}.")

    visit(module, "")
    return out


def load_torch_state_dict(
    module: nnx.Module, state_dict: Mapping[str, Any], strict: bool = True
) -> nnx.Module:
    """Load a torch ``state_dict`` (torch tensors or NumPy arrays) into ``module`` in place.

    Values are cast to each parameter's dtype (``param_dtype``). With ``strict=True`` any
    missing key, unexpected key or shape mismatch raises one ``ValueError`` that lists
    all of them; with ``strict=False`` missing and unexpected keys are skipped, but a
    shape mismatch still raises. Returns the module.

    >>> import torch, jax.numpy as jnp
    >>> from flax import nnx
    >>> import jaxseq
    >>> tl = torch.nn.GRU(3, 4)
    >>> jl = jaxseq.nn.GRU(3, 4, rngs=nnx.Rngs(0))
    >>> _ = jaxseq.interop.load_torch_state_dict(jl, tl.state_dict())
    >>> bool(jnp.allclose(jl.weight_hh_l0[...], tl.weight_hh_l0.detach().numpy()))
    True
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            f"state_dict must be a mapping of names to tensors, got {type(state_dict).__name__}"
        )
    targets = torch_named_params(module)
    expected, updates = {}, []
    for name, (owner, attr, _, to_th) in targets.items():
        param = getattr(owner, attr)
        # Compare in torch's layout: the message names torch names, so it shows torch shapes.
        expected[name] = tuple(to_th(np.empty(param.shape, dtype=np.bool_)).shape)
    raw = {k: to_numpy(v) for k, v in state_dict.items()}
    parts = torch_parts(compare(expected, {k: tuple(v.shape) for k, v in raw.items()}), strict)
    if parts:
        raise ValueError(load_error(type(module).__name__, parts))
    for name, (owner, attr, to_jax, _) in targets.items():
        if name in raw:
            param = getattr(owner, attr)
            # A copy: on the CPU a JAX array may otherwise share memory with the torch tensor.
            updates.append((param, jnp.array(to_jax(raw[name]), dtype=param.dtype, copy=True)))
    for param, value in updates:
        param[...] = value
    return module


def to_torch_state_dict(module: nnx.Module) -> dict[str, np.ndarray]:
    """``{torch name: numpy array}`` for ``module`` (also for a module merged from gradients).

    ``torch.nn.Module.load_state_dict({k: torch.from_numpy(v) ...})`` loads it.
    """
    out = {}
    for name, (owner, attr, _, to_th) in torch_named_params(module).items():
        # A writable copy: torch.from_numpy warns on (and cannot own) read-only arrays.
        out[name] = np.array(
            to_th(np.asarray(jax.device_get(getattr(owner, attr)[...]))), copy=True
        )
    return out


def _deserialize_numpy(blob: bytes) -> dict[str, np.ndarray]:
    """``safetensors.numpy.load`` plus the dtypes it lacks (bfloat16, float8: ml_dtypes)."""
    import ml_dtypes
    from safetensors import deserialize

    types = {
        "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
        "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2,
        "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
        "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
    }  # fmt: skip
    out = {}
    for name, t in deserialize(blob):
        if t["dtype"] not in types:
            raise ValueError(f"tensor {name!r} has dtype {t['dtype']}, which cannot be read")
        out[name] = np.frombuffer(t["data"], dtype=types[t["dtype"]]).reshape(t["shape"])
    return out


def _check_dtypes(
    module: Any, own: Mapping[str, Any], tensors: Mapping[str, Any], path: Any
) -> None:
    """Refuse non-floating tensors for floating parameters (a silent cast would hide them)."""
    bad = [
        (k, str(tensors[k].dtype), str(own[k]))
        for k in sorted(own)
        if k in tensors and not jnp.issubdtype(tensors[k].dtype, jnp.floating)
    ]
    if bad:
        raise ValueError(dtype_error(os.fspath(path), type(module).__name__, bad))


def save(module: nnx.Module, path: Any, metadata: Mapping[str, str] | None = None) -> None:
    """Write ``module``'s parameters to a safetensors file under their torch names.

    The file is what ``torchseq.checkpoint.save`` writes for the matching torchseq model
    (``safetensors.torch.load_file`` + ``load_state_dict`` reads it), and what
    :func:`load` reads. ``metadata`` adds string entries to the file header, with
    ``sha256`` (a hash of the rest of the file) added last; the same module and metadata
    always give the same bytes. The file is written to a temporary name, then renamed.

    >>> import os, tempfile, jax.numpy as jnp
    >>> from flax import nnx
    >>> import jaxseq
    >>> a = jaxseq.nn.LSTM(2, 3, rngs=nnx.Rngs(0))
    >>> b = jaxseq.nn.LSTM(2, 3, rngs=nnx.Rngs(1))
    >>> path = os.path.join(tempfile.mkdtemp(), "lstm.safetensors")
    >>> jaxseq.interop.save(a, path)
    >>> _ = jaxseq.interop.load(b, path)
    >>> bool(jnp.array_equal(a.weight_hh_l0[...], b.weight_hh_l0[...]))
    True
    """
    from safetensors.numpy import save as serialize

    tensors = {k: np.ascontiguousarray(v) for k, v in to_torch_state_dict(module).items()}
    meta = {"format": "pt", "writer": "jaxseq", "model": type(module).__name__}
    meta.update(dict(metadata or {}))
    _write_atomic(_finalize(serialize(tensors, metadata=meta)), path)


def load(module: nnx.Module, path: Any, strict: bool = True) -> nnx.Module:
    """Load a safetensors file with torch names (from :func:`save` or ``torchseq``) in place.

    Floating values are cast to each parameter's dtype. Names or shapes that do not fit
    raise one ``ValueError`` listing every missing key, unexpected key and size mismatch
    (see :func:`load_torch_state_dict`); so do non-floating tensors. A file that is not
    valid safetensors (empty, truncated, another format) or whose ``sha256`` does not match
    its contents (corrupted) raises a ``ValueError`` naming the file. Returns the module.
    """
    tensors = _read_checked(path, _deserialize_numpy)
    own = {k: getattr(o, a).dtype for k, (o, a, _, _) in torch_named_params(module).items()}
    _check_dtypes(module, own, tensors, path)
    return load_torch_state_dict(module, tensors, strict=strict)
