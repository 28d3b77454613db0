"""How the C allocator under NumPy keeps the memory a step frees.

A training step makes and frees the same arrays every call (activations, gradients, the new value of
every variable: a call never writes into a stored array). glibc's malloc hands an array of 128 KiB or
more to the kernel with munmap when it is freed, and gives back the top of its heap once 128 KiB is
free there; it raises both limits only after it has seen large blocks freed, which a process that
only loads a file and trains may never do. Then every step faults its arrays' pages in again: the
demo MLP's step took 0.58 ms at batch 8 in such a process against 0.29 ms once the limits were up.
So the first interpreter of a process sets them (mallopt: M_MMAP_THRESHOLD 32 MiB, M_TRIM_THRESHOLD
64 MiB): arrays under 32 MiB come from the heap and up to 64 MiB of freed heap is kept for the next
step. The resident memory of a process that trained stays at its peak instead of shrinking between
steps. Only on Linux with glibc; `LITETRAIN_KEEP_FREED_MEMORY=0` in the environment, or MALLOC_*
settings of one's own, leave malloc as it is.
"""
from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 64 << 20

_state = {"done": False, "set": False}


def keep_freed_memory() -> bool:
    """Set malloc's limits once per process (see the module doc); whether they were set."""
    if _state["done"]:
        return _state["set"]
    _state["done"] = True
    env = os.environ
    if (not sys.platform.startswith("linux") or env.get("LITETRAIN_KEEP_FREED_MEMORY", "1") == "0"
            or any(k in env for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                                      "GLIBC_TUNABLES"))):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt, version = libc.mallopt, libc.gnu_get_libc_version  # glibc only (musl has no version call)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _state["set"] = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _state["set"]
