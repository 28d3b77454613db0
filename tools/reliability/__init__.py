"""Reliability checks: the model-file fuzz, the kill-while-saving crash test, failure injection
in the middle of a call, and the long training soak. `scripts/reliability.py` runs them all and
writes the table in RELIABILITY.md; tests/test_fuzz.py, test_crash.py, test_soak.py and
test_reliability.py run small versions (and the full ones when marked slow).

This is test tooling, outside the installed package: it uses litetrain's public API and runs from
a checkout (the repository's root on sys.path, as pytest and scripts/ arrange).
"""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def child_env() -> dict:
    """The environment for a worker process that imports tools.reliability: the checkout's root
    first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env
