"""The checkpoint file format shared by ``jaxseq.interop`` and ``torchseq.checkpoint``.

Plain safetensors files with torch names, plus two things the plain safetensors writer
does not give:

* Byte-identical output: safetensors writes ``__metadata__`` in a random (hash map)
  order, so the header is rewritten with its metadata sorted.
* Corruption is detected: the header's metadata gets ``sha256``, the hash of the rest of
  the header (names, dtypes, shapes, offsets, metadata; as canonical JSON) and of the
  data section. A file whose ``writer`` is jaxseq or torchseq must carry a matching hash;
  files from other writers (e.g. ``safetensors.torch.save_file``) load unchecked.

This module imports neither jax nor torch, so each framework's package can use it
without importing the other.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from typing import Any

__all__ = ["WRITERS", "split", "digest", "finalize", "write_atomic", "read_checked"]

WRITERS = ("jaxseq", "torchseq")


def split(blob: bytes) -> tuple[dict, bytes]:
    n = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8 : 8 + n].decode("utf-8")), blob[8 + n :]


def digest(header: dict, data: bytes) -> str:
    header = dict(header)
    meta = {k: v for k, v in (header.pop("__metadata__", None) or {}).items() if k != "sha256"}
    canon = json.dumps({"__metadata__": meta, **header}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode("utf-8") + data).hexdigest()


def finalize(blob: bytes) -> bytes:
    """Sort the metadata, add ``sha256`` and re-pad the header (to 8 bytes, with spaces)."""
    header, data = split(blob)
    meta = dict(header.pop("__metadata__", None) or {})
    meta["sha256"] = digest({"__metadata__": meta, **header}, data)
    head = json.dumps(
        {"__metadata__": dict(sorted(meta.items())), **header},
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode("utf-8")
    head += b" " * (-len(head) % 8)
    return len(head).to_bytes(8, "little") + head + data


def write_atomic(blob: bytes, path: Any) -> None:
    # Write a temporary file and rename it: an interrupted save never leaves a truncated file.
    tmp = f"{os.fspath(path)}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(blob)
    os.replace(tmp, path)


def read_checked(path: Any, load_bytes: Callable[[bytes], dict]) -> dict:
    """Read a safetensors file with ``load_bytes``; any invalid or corrupted file raises a
    ``ValueError`` naming it (never a raw safetensors error)."""
    if os.path.isdir(path):
        raise IsADirectoryError(f"{os.fspath(path)} is a directory, expected a safetensors file")
    with open(path, "rb") as f:
        blob = f.read()
    try:
        tensors = load_bytes(blob)
        header, data = split(blob)
    except Exception as e:  # safetensors' Rust errors have no common Python base class
        raise ValueError(f"{os.fspath(path)} is not a valid safetensors file: {e}") from e
    meta = header.get("__metadata__") or {}
    if "sha256" in meta or meta.get("writer") in WRITERS:
        expected, actual = meta.get("sha256"), digest(header, data)
        if expected != actual:
            raise ValueError(
                f"{os.fspath(path)} is corrupted: its header records sha256 {expected}, "
                f"its contents hash to {actual}"
            )
    return tensors
