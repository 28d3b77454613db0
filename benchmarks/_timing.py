"""What every benchmark script here measures the same way: the median latency of a call, and a
one-line error for a table cell. The scripts run as `python benchmarks/NAME.py`, so this module is
imported from their own folder."""
from __future__ import annotations

import statistics
import time


def median_ms(fn, steps, warmup=5):
    """The median of `steps` timed calls of `fn()` after `warmup` untimed ones, in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def error_text(e):
    """An exception as a table cell: its type and the first 80 characters of its first line."""
    return f"{type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''}"
