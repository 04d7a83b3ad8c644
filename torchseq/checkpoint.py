"""Checkpoints as safetensors files with torch names, shared with ``jaxseq.interop``.

``save(model, path)`` writes ``model.state_dict()``; ``load(model, path)`` reads a file
written by either framework. Names or shapes that do not fit raise one ``ValueError``
that lists every missing key, unexpected key and size mismatch.

>>> import os, tempfile, torch
>>> a, b = torch.nn.GRU(2, 3), torch.nn.GRU(2, 3)
>>> path = os.path.join(tempfile.mkdtemp(), "gru.safetensors")
>>> save(a, path)
>>> _ = load(b, path)
>>> torch.equal(a.weight_hh_l0, b.weight_hh_l0)
True
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from safetensors.torch import load as deserialize
from safetensors.torch import save as serialize

# The file format (sorted metadata, sha256, atomic writes) is shared with ``jaxseq.interop``.
from seqfile import finalize as _finalize
from seqfile import read_checked as _read_checked
from seqfile import write_atomic as _write_atomic
from seqfile.report import compare, dtype_error, load_error, torch_parts

__all__ = ["save", "load", "check_state_dict"]


def save(model: torch.nn.Module, path: Any, metadata: Mapping[str, str] | None = None) -> None:
    """Write ``model.state_dict()`` to a safetensors file (tensors made contiguous, on CPU).

    ``metadata`` adds string entries to the header, with ``sha256`` (a hash of the rest of
    the file) added last; the same tensors and metadata always give the same bytes, the
    same bytes as ``jaxseq.interop.save``. Written to a temporary name, then renamed.
    """
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": "pt", "writer": "torchseq", "model": type(model).__name__}
    meta.update(dict(metadata or {}))
    _write_atomic(_finalize(serialize(tensors, metadata=meta)), path)


def check_state_dict(
    model: torch.nn.Module, state_dict: Mapping[str, Any], strict: bool = True
) -> None:
    """Raise one ``ValueError`` naming every key or shape of ``state_dict`` that does not fit."""
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    parts = torch_parts(compare(own, {k: tuple(v.shape) for k, v in state_dict.items()}), strict)
    if parts:
        raise ValueError(load_error(type(model).__name__, parts))


def load(model: torch.nn.Module, path: Any, strict: bool = True) -> torch.nn.Module:
    """Load a safetensors checkpoint (from :func:`save` or ``jaxseq.interop.save``) in place.

    Floating values are cast to each parameter's dtype; non-floating tensors for floating
    parameters raise a ``ValueError``. A file that is not valid safetensors (empty,
    truncated, another format) or whose ``sha256`` does not match its contents (corrupted)
    raises a ``ValueError`` naming the file. Returns the model.
    """
    state_dict = _read_checked(path, deserialize)
    own = model.state_dict()
    bad = [
        (k, str(state_dict[k].dtype), str(own[k].dtype))
        for k in sorted(own)
        if k in state_dict and own[k].is_floating_point() and not state_dict[k].is_floating_point()
    ]
    if bad:
        raise ValueError(dtype_error(os.fspath(path), type(model).__name__, bad))
    check_state_dict(model, state_dict, strict=strict)
    model.load_state_dict(state_dict, strict=strict)
    return model
