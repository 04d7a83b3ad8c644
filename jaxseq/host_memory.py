"""Keep freed host memory in the process: an opt-in speed-up for JAX training on the CPU.

XLA's CPU runtime allocates every call's temporary buffers with ``malloc`` and frees them
when the call returns: tens of MiB for a recurrent training step (42.6 MiB for the LSTM
step at B=64 T=100 I=32 H=128). glibc serves allocations larger than its mmap threshold
(128 KiB, growing to at most 32 MiB) with fresh ``mmap`` pages and unmaps them again on
``free``, so every call faults in, and the kernel zeroes, every page of its temporaries
once more. :func:`retain_host_memory` tells glibc to serve those allocations from its heap
and to keep freed memory for the next call instead (``mallopt(M_MMAP_MAX, 0)`` and a high
``M_TRIM_THRESHOLD``).

On a 2-core x86_64 VM the jitted LSTM training step above went from 27.9 to 18.3 ms in one
process, before and after the call (see the README's speed section for the interleaved
benchmark). The setting is process-wide: it speeds up every framework in the process that
allocates with ``malloc`` (the JAX peers and PyTorch's CPU tensors too), and the process
keeps the heap it has grown to (up to ``trim_threshold`` of free memory at its top) rather
than returning it to the OS. The same effect without code, for any program::

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1073741824 python train.py

Written by hand (a ``ctypes`` call of glibc's ``mallopt``) because no library wraps it; a
no-op that returns False where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform

__all__ = ["retain_host_memory"]

# glibc's mallopt parameters (malloc.h) and the defaults that enable=False restores.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
_DEFAULT_MMAP_MAX = 65536


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def retain_host_memory(enable: bool = True, *, trim_threshold: int = 1 << 30) -> bool:
    """Make glibc keep freed memory for reuse instead of unmapping it (process-wide).

    Call it once, early, in a training script that runs JAX on the CPU (see the module
    docstring for why it pays: XLA's per-call temporaries otherwise come from fresh pages
    every call).

    Args:
      enable: True: serve every allocation from the heap (``M_MMAP_MAX=0``) and return
        free memory at the heap's top to the OS only beyond ``trim_threshold`` bytes.
        False: put back glibc's default values (``M_MMAP_MAX=65536``,
        ``M_TRIM_THRESHOLD=128 KiB``; glibc's dynamic threshold stays off once set).
      trim_threshold: bytes of free memory the heap may keep at its top (default 1 GiB).

    Returns:
      True where applied (Linux with glibc), False elsewhere (nothing changed).

    Raises:
      ValueError: ``trim_threshold`` is negative.

    Usage, once at the top of a training script: ``jaxseq.retain_host_memory()``. (The
    example below takes the error path only, as the call changes the whole process.)

    >>> retain_host_memory(trim_threshold=-1)
    Traceback (most recent call last):
    ...
    ValueError: trim_threshold must be >= 0 bytes, got -1
    """
    if trim_threshold < 0:
        raise ValueError(f"trim_threshold must be >= 0 bytes, got {trim_threshold}")
    libc = _glibc()
    if libc is None:
        return False
    mmap_max = 0 if enable else _DEFAULT_MMAP_MAX
    trim = min(int(trim_threshold), 2**31 - 1) if enable else _DEFAULT_TRIM_THRESHOLD
    ok = libc.mallopt(_M_MMAP_MAX, mmap_max) == 1
    ok = libc.mallopt(_M_TRIM_THRESHOLD, trim) == 1 and ok
    return ok
