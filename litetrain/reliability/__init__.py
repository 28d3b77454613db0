"""Reliability checks: the model-file fuzz, the kill-while-saving crash test, failure injection
in the middle of a call, and the long training soak. `scripts/reliability.py` runs them all and
writes the table in RELIABILITY.md; tests/test_fuzz.py, test_crash.py, test_soak.py and
test_reliability.py run small versions (and the full ones when marked slow).

Nothing here is imported by the runtime: it is test tooling that ships with the package so that
a device build can run the same checks.
"""
