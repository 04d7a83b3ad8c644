"""jaxseq.retain_host_memory: glibc serves a large allocation from its heap once applied.

The check runs in a child process (the setting is process-wide): it allocates 48 MiB with
``malloc`` and reads glibc's ``mallinfo2().hblkhd``, the bytes held in mmap'd blocks. By
default such an allocation is a fresh mmap (hblkhd grows by at least 48 MiB); after
``retain_host_memory()`` it comes from the heap (hblkhd unchanged); after
``retain_host_memory(False)`` (and ``malloc_trim``, which returns what the heap kept)
it is an mmap again.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

import jaxseq

CHILD = r"""
import ctypes, json
import jaxseq

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                 "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = MallInfo2
SIZE = 48 << 20

def mmapped_growth():
    before = libc.mallinfo2().hblkhd
    p = libc.malloc(SIZE)
    ctypes.memset(p, 1, SIZE)
    grown = libc.mallinfo2().hblkhd - before
    libc.free(p)
    return grown

out = {"default": mmapped_growth()}
out["applied"] = jaxseq.retain_host_memory()
out["retained"] = mmapped_growth()
out["restored_ok"] = jaxseq.retain_host_memory(False)
libc.malloc_trim(0)  # hand back what the heap kept, as the default threshold would have
out["restored"] = mmapped_growth()
print(json.dumps(out))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_retain_host_memory_serves_large_allocations_from_the_heap():
    run = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120, check=True
    )
    out = json.loads(run.stdout.strip().splitlines()[-1])
    size = 48 << 20
    assert out["default"] >= size  # glibc's default: a fresh mmap for 48 MiB
    assert out["applied"] is True
    assert out["retained"] == 0  # from the heap, no mmap
    assert out["restored_ok"] is True
    assert out["restored"] >= size  # defaults back: an mmap again


def test_negative_trim_threshold_is_rejected():
    with pytest.raises(ValueError, match="trim_threshold"):
        jaxseq.retain_host_memory(trim_threshold=-5)
