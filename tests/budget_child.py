"""Runs hostile files under an address-space limit, for tests/test_budget.py: python budget_child.py CASES.json

CASES.json lists {name, path, inputs (an .npz), budget (bytes or null), headroom (bytes)}. The limit
(RLIMIT_AS) is the address space in use once everything is imported and warmed up, plus the largest
headroom: an allocation the budget fails to stop fails here as MemoryError instead of taking the
machine's memory. Prints one JSON line per case and mode (optimize on and off): the error's type and
message, whether every variable is as before the call, and the peak resident memory's growth.
"""
from __future__ import annotations

import json
import resource
import sys

import numpy as np

import litetrain as lt


def vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run(case, optimize):
    options = {} if case["budget"] == "default" else {"memory_budget": case["budget"]}
    interp = lt.Interpreter(model_path=case["path"], optimize=optimize, **options)
    runner = interp.get_signature_runner("run")
    inputs = dict(np.load(case["inputs"]))
    before = interp.get_variables()
    start = peak_rss()
    try:
        out = runner(**inputs)
        error, message = None, {k: float(np.sum(v)) for k, v in out.items()}
    except Exception as e:  # noqa: BLE001  (reported to the test, which expects one type)
        error, message = type(e).__name__, str(e)
    after = interp.get_variables()
    return {"name": case["name"], "optimize": optimize, "error": error, "message": message,
            "unchanged": all(np.array_equal(before[k], after[k]) for k in before),
            "rss_growth": peak_rss() - start}


def main():
    cases = json.load(open(sys.argv[1]))
    warm = lt.Interpreter(model_path=cases[0]["path"])  # kernels, plans and BLAS buffers made before the limit
    del warm
    np.dot(np.ones((64, 64), np.float32), np.ones((64, 64), np.float32))
    limit = vm_size() + max(c["headroom"] for c in cases)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    for case in cases:
        for optimize in (True, False):
            print(json.dumps(run(case, optimize)), flush=True)


if __name__ == "__main__":
    main()
