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

import contextlib
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


TMP_MARK = ".tmp-"  # temporary files are named ``{path}.tmp-{pid}``


def write_atomic(blob: bytes, path: Any) -> None:
    """Write ``blob`` to ``path`` so that ``path`` is either the old file or the new one.

    A temporary file next to it is written (``os.write``), ``fsync``-ed, renamed over
    ``path`` and the directory ``fsync``-ed, so neither a crash (kill -9, power loss) nor a
    failed write (disk full: ``OSError`` ENOSPC, re-raised) leaves a truncated ``path``;
    on failure the temporary file is removed and an existing ``path`` is untouched.
    """
    path = os.fspath(path)
    tmp = f"{path}{TMP_MARK}{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view, done = memoryview(blob), 0
        while done < len(view):
            done += os.write(fd, view[done:])
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(path) or ".")


def _fsync_dir(directory: str) -> None:
    """``fsync`` a directory, so that a rename in it survives a crash (POSIX only)."""
    if os.name != "posix":  # pragma: no cover - Windows cannot open directories
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
