"""What the benchmark scripts here share: the median latency of a call, a process's peak memory, a
one-line error for a table cell, and the text tables they print. The scripts run as
`python benchmarks/NAME.py`, so this module is imported from their own folder."""
from __future__ import annotations

import resource
import statistics
import sys
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


def peak_rss_mb() -> float:
    """This process's peak resident set size. On Linux, VmHWM of /proc/self/status: the high-water
    mark of this process's own address space. (getrusage's ru_maxrss survives exec, so a worker
    would start with its parent's peak.) Elsewhere ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def error_text(e):
    """An exception as a table cell: its type and the first 80 characters of its first line."""
    return f"{type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''}"


def render(table):
    """Rows of cells (strings; the first row the header) as aligned columns, a rule under the header."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    out = [" | ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
    out.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(out)


def train_step_table(rows, key, groups, first_column, titles=None, digits=1):
    """The train-step table of bench_cnn and bench_personalize: for each group (a model, a workload),
    each engine's median step and its ratio to litetrain's in the same group, or why it has none."""
    table = [[first_column, "engine", "train step ms", "vs litetrain"]]
    for group in groups:
        base = next((r.get("train_ms") for r in rows if r[key] == group and r["engine"] == "litetrain"), None)
        for r in (r for r in rows if r[key] == group):
            name = r["engine"] + (f" {r['version']}" if r.get("version") else "")
            title = (titles or {}).get(group, group)
            if "train_ms" in r:
                table.append([title, name, f"{r['train_ms']:.{digits}f}", f"{r['train_ms'] / base:.2f}x" if base else ""])
            else:
                table.append([title, name, r.get("train_error", "n/a"), ""])
    return render(table)
