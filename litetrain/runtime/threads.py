"""How many threads NumPy's BLAS may use while litetrain runs a signature.

NumPy's kernels run on the calling thread; only matrix products (BLAS) start threads of their
own. OpenBLAS starts one per core and keeps them spinning after each product: on a device with
two cores and anything else running, that oversubscribes the machine (the demo ran several times
slower than on one thread), and the matrices of on-device training are small enough that one
thread is as fast. So by default a call runs BLAS on one thread; `Interpreter(num_threads=N)`
allows N (TensorFlow Lite's argument: the threads the interpreter may use). The setting is made
around each call and the caller's own setting put back after it, through threadpoolctl's handle on
the BLAS library NumPy loaded (a dependency of the runtime; without it, BLAS keeps its own setting).
"""
from __future__ import annotations

import functools

DEFAULT_THREADS = 1


@functools.lru_cache(maxsize=None)
def _blas():
    """The controllers of the BLAS libraries loaded in this process (empty without threadpoolctl)."""
    try:
        import numpy  # noqa: F401  (its BLAS must be loaded to be found)
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return ()
    try:
        return tuple(c for c in ThreadpoolController().lib_controllers if c.user_api == "blas")
    except Exception:  # noqa: BLE001  (a library threadpoolctl cannot drive: leave BLAS as it is)
        return ()


def check_threads(num_threads):
    """num_threads as TensorFlow Lite takes it: None or -1 (litetrain's default) or a positive int."""
    if num_threads is None or num_threads == -1:
        return DEFAULT_THREADS
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"num_threads must be a positive int, -1 or None, got {num_threads!r}")
    return num_threads


def limit(threads: int) -> tuple:
    """Set BLAS to `threads` threads; returns what to give `restore` to put the setting back."""
    saved = tuple((lib, lib.get_num_threads()) for lib in _blas())
    for lib, now in saved:
        if now != threads:
            lib.set_num_threads(threads)
    return saved


def restore(saved: tuple) -> None:
    for lib, before in saved:
        if lib.get_num_threads() != before:
            lib.set_num_threads(before)
