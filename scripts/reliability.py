#!/usr/bin/env python
"""Run litetrain's reliability checks and write their table into RELIABILITY.md.

    python scripts/reliability.py            # the full runs (about 15 minutes on 2 cores)
    python scripts/reliability.py --quick    # small runs (under a minute), the quick table
    python scripts/reliability.py --check    # run, then compare with the table in the file

The table goes between the `<!-- reliability:full -->` (or `quick`) markers of the output file.
Its columns Check, Cases tried, Failures and Outcome are deterministic (seeded); Measured holds
times, memory, where the kills happened to land, and what hypothesis drew: for a fixed seed its
draws still change with the code under test, since it mixes constants found in the source of
local (not installed) modules into what it draws, so an editable install, a wheel install and
every edit of litetrain draw other files. How many of them loaded is therefore measured, not
compared; that none broke the contract is compared. `--check` compares the deterministic
columns with the committed table and exits 1 when they differ.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = {
    "full": {"fuzz": 20_000, "hypothesis": 20_000, "atheris": 20_000, "kills": 200, "soak": (20_000, 500, 1000)},
    "quick": {"fuzz": 500, "hypothesis": 200, "atheris": 1000, "kills": 10, "soak": (1000, 100, 300)},
}
COLUMNS = ("Check", "Cases tried", "Failures", "Outcome", "Measured")


def _n(x) -> str:
    return f"{x:,}"


def _guarded(name, run):
    """Run one check; an exception becomes a failing row instead of stopping the script."""
    started = time.monotonic()
    try:
        return run(), round(time.monotonic() - started, 1), None
    except Exception as e:  # noqa: BLE001 - reported in the table
        return None, round(time.monotonic() - started, 1), f"{type(e).__name__}: {e}"[:300]


def fuzz_row(label, s, seeds, drawn_by=None):
    """A fuzz run's row. `drawn_by` names the library whose draws the cases are when they are not
    fixed by the seed alone (hypothesis): the breakdown of outcomes then goes under Measured."""
    failures = (s["unexpected_exceptions"] + s.get("crashes", 0) + s.get("hangs_killed", 0) + s["slow_cases"]
                + s["failed_calls_that_changed_state"] + s["memory_errors"])
    calls_ok = s["calls"] - sum(s["call_errors"].values())
    errors = ", ".join(f"{k} {_n(v)}" for k, v in sorted(s["call_errors"].items())) or "none"
    outcome = (f"rejected at load: InvalidModelError {_n(s['rejected_invalid'])}, UnsupportedOpError "
               f"{_n(s['rejected_unsupported'])}; loaded {_n(s['loaded'])}; signature calls {_n(s['calls'])} "
               f"(succeeded {_n(calls_ok)}; {errors}; skipped for inputs over 65,536 elements "
               f"{_n(s['calls_skipped_large_inputs'])}); other exceptions, crashes, hangs (>= 1 s CPU), state "
               f"changed by a failed call, MemoryError: 0/0/0/0/0" if failures == 0 else
               f"unexpected {s['unexpected_exceptions']}, crashes {s.get('crashes', 0)}, hangs "
               f"{s.get('hangs_killed', 0) + s['slow_cases']} (>= 1 s CPU: {s['slow_examples']}), state changed "
               f"{s['failed_calls_that_changed_state']}, MemoryError {s['memory_errors']}")
    rss = s.get("worker_peak_rss_mb", s.get("peak_rss_mb"))
    measured = (f"per file CPU: p99 {s['p99_cpu_seconds']} s, max {s['max_cpu_seconds']} s (wall: median "
                f"{s['median_seconds']} s, max {s['max_seconds']} s); peak RSS {rss} MB; {s['wall_seconds']} s")
    if drawn_by is not None and failures == 0:
        measured = f"{drawn_by} drew: {outcome.split('; other exceptions')[0]}; {measured}"
        outcome = ("no file broke the contract: other exceptions, crashes, hangs (>= 1 s CPU), state changed "
                   "by a failed call, MemoryError: 0/0/0/0/0")
    return (label, f"{_n(s['cases'])} files from {seeds}", str(failures), outcome, measured)


def run_all(mode: str) -> tuple[list, dict]:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))  # tools/
    from tools.reliability import crash, faults, fuzz, soak
    sizes = SIZES[mode]
    rows, raw = [], {}
    rows += _fuzz_rows(fuzz, sizes, raw)
    rows.append(_crash_row(crash, sizes["kills"], raw))
    rows.append(_fault_injection_row(faults, raw))
    rows.append(_guard_row(faults, raw))
    rows.append(_threads_row(faults, raw))
    rows.append(_soak_row(soak, sizes["soak"], raw))
    return rows, raw


def _fuzz_rows(fuzz, sizes, raw) -> list:
    """The rows of the seeded, the hypothesis-drawn and the atheris fuzz runs."""
    corpus = fuzz.Corpus()
    own = corpus.family.count("litetrain")
    seeds = f"{len(corpus.files)} seeds ({own} litetrain, {len(corpus.files) - own} MediaPipe)"
    rows = []

    s, secs, err = _guarded("fuzz", lambda: fuzz.run_fuzz(sizes["fuzz"], workers=2))
    raw["fuzz"] = s
    rows.append(fuzz_row("Fuzz: seeded mutations, one process per worker", s, seeds) if s else
                ("Fuzz: seeded mutations", _n(sizes["fuzz"]), "1", err, f"{secs} s"))

    s, secs, err = _guarded("hypothesis", lambda: fuzz.hypothesis_fuzz(sizes["hypothesis"], corpus, seed=0))
    raw["hypothesis"] = s
    import hypothesis
    rows.append(fuzz_row("Fuzz: hypothesis-drawn mutations", s, seeds, f"hypothesis {hypothesis.__version__}") if s else
                ("Fuzz: hypothesis-drawn mutations", _n(sizes["hypothesis"]), "1", err, f"{secs} s"))

    rows.append(_atheris_row(fuzz, sizes["atheris"], raw))
    return rows


def _atheris_row(fuzz, runs, raw) -> tuple:
    """The coverage-guided fuzz run's row, or a row saying atheris is not installed."""
    if not fuzz.atheris_available():
        return ("Fuzz: atheris", "not run", "-", "atheris is not installed on this Python", "-")
    s, secs, err = _guarded("atheris", lambda: fuzz.run_atheris(runs))
    raw["atheris"] = s
    if not s:
        return ("Fuzz: atheris", _n(runs), "1", err, f"{secs} s")
    return ("Fuzz: atheris (libFuzzer, coverage-guided, -timeout=1)",
            f"{_n(s['runs'])} inputs from {s['seeds']} seeds up to 256 KB", str(int(s["crashed"])),
            "no input broke the contract or took 1 s" if not s["crashed"] else s["log_tail"][-300:],
            f"peak RSS {s['peak_rss_mb']} MB; {s['wall_seconds']} s")


def _crash_row(crash, kills, raw) -> tuple:
    """The row of the test that kills a training process while it saves checkpoints."""
    s, secs, err = _guarded("crash", lambda: crash.run_crash_test(kills=kills, seed=0))
    raw["crash"] = s
    if not s:
        return ("Crash: SIGKILL while saving", f"{_n(kills)} kills", "1", err, f"{secs} s")
    return ("Crash: SIGKILL a training process that saves after every step",
            f"{_n(s['kills'])} kills", "0",
            f"after every kill the checkpoint on disk passed its checksum and equalled the uninterrupted "
            f"run at its step (or none existed yet); every restart resumed from the latest "
            f"checkpoint; the resumed run ended bit-identical to the uninterrupted one; stale temporaries "
            f"left: {s['stale_temporaries_left']}",
            f"{s['checkpoints_verified']} checkpoints verified ({s['kills_before_first_checkpoint']} kills "
            f"before the first save); {s['kills_mid_write']} kills landed mid-write, "
            f"{s['kills_before_ready']} while starting; "
            f"{_n(s['max_step_reached'])} steps; {s['checkpoint_bytes'] // 1000} KB checkpoints; "
            f"{s['wall_seconds']} s")


def _fault_injection_row(faults, raw) -> tuple:
    """The row of the exceptions injected into each node of `train`."""
    s, secs, err = _guarded("faults", faults.run_fault_injection)
    raw["faults"] = s
    if not s:
        return ("Failure injection", "-", "1", err, f"{secs} s")
    nodes = ", ".join(f"{k} {v}" for k, v in s["nodes_per_train"].items())
    return ("Failure injection: an exception in each node of `train`, every optimizer",
            f"{_n(s['faults_injected'])} faults", str(s["not_raised"] + s["variables_changed"]),
            f"every call raised ExecutionError and left every variable bit-identical (nodes: {nodes})",
            f"{secs} s")


def _guard_row(faults, raw) -> tuple:
    """The row of the non-finite guard's check."""
    s, secs, err = _guarded("guard", faults.run_guard_check)
    raw["guard"] = s
    if not s:
        return ("Non-finite guard", "-", "1", err, f"{secs} s")
    return ("Non-finite guard: NaN / inf / -inf batches, every optimizer",
            f"{s['bad_steps']} bad steps", str(s["not_reported"] + s["variables_changed"] + s["diverged_after"]),
            "each reported step_skipped, changed no weight, slot or step count; training then matched a "
            "run that never saw them", f"{secs} s")


def _threads_row(faults, raw) -> tuple:
    """The row of the threads training and reading one interpreter."""
    s, secs, err = _guarded("threads", faults.run_thread_check)
    raw["threads"] = s
    if not s:
        return ("Threads", "-", "1", err, f"{secs} s")
    return ("Threads: 2 threads train one interpreter while a third reads it",
            f"{s['calls']} calls", str(s["errors"] + int(s["end_state_differs"]) + s["torn_reads"]),
            "end state equals sequential training; every read saw the state after a whole step",
            f"{_n(s['reads'])} reads; {secs} s")


def _soak_row(soak, sizes, raw) -> tuple:
    """The row of the long training run with periodic save + restore."""
    steps, every, warmup = sizes
    s, secs, err = _guarded("soak", lambda: soak.run_soak(steps, every, warmup))
    raw["soak"] = s
    if not s:
        return ("Soak", f"{_n(steps)} steps", "1", err, f"{secs} s")
    bad = (s["save_restores"] - s["matching_checkpoints"] + (not s["final_matches_uninterrupted"])
           + (s["rss_growth_percent"] >= 5.0))
    return ("Soak: training with save + restore every few hundred steps",
            f"{_n(steps)} steps, {s['save_restores']} save/restores", str(bad),
            f"{s['matching_checkpoints']}/{s['save_restores']} checkpoints bit-identical to an "
            f"uninterrupted run; resident memory grew less than 5% after warm-up",
            f"RSS {s['rss_after_warmup_mb']} MB after {_n(s['warmup_steps'])} steps, peak "
            f"{s['rss_peak_after_warmup_mb']} MB (+{s['rss_growth_percent']}%); {s['steps_per_second_first']} "
            f"then {s['steps_per_second_last']} steps/s; {s['seconds_with_save_restore']} s")


def render(rows, mode: str) -> str:
    import numpy
    env = (f"Python {platform.python_version()}, NumPy {numpy.__version__}, {os.cpu_count()} cores, "
           f"{platform.machine()}; `python scripts/reliability.py{' --quick' if mode == 'quick' else ''}`")
    lines = [f"_{env}_", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(str(c).replace("|", "/").replace("\n", " ") for c in row) + " |")
    return "\n".join(lines)


def parse_rows(text: str) -> list[tuple]:
    return [tuple(c.strip() for c in line.strip().strip("|").split("|")) for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| Check ")]


def section(document: str, mode: str):
    begin, end = f"<!-- reliability:{mode} -->", f"<!-- /reliability:{mode} -->"
    m = re.search(re.escape(begin) + r"\n(.*?)" + re.escape(end), document, re.S)
    return m, begin, end


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small runs; writes the quick table")
    parser.add_argument("--check", action="store_true", help="compare with the table in --output, write nothing")
    parser.add_argument("--output", default=os.path.join(ROOT, "RELIABILITY.md"))
    parser.add_argument("--json", help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    rows, raw = run_all(mode)
    table = render(rows, mode)
    print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(raw, f, indent=1, default=str)
    with open(args.output) as f:
        document = f.read()
    m, begin, end = section(document, mode)
    if args.check:
        if m is None:
            print(f"{args.output} has no {mode} table", file=sys.stderr)
            return 1
        want = [r[:4] for r in parse_rows(m.group(1))]
        got = [r[:4] for r in parse_rows(table)]
        if want != got:
            for w, g in zip(want, got):
                if w != g:
                    print(f"committed: {w}\nnow:       {g}", file=sys.stderr)
            print("the table does not reproduce", file=sys.stderr)
            return 1
        print("the table reproduces (deterministic columns identical)")
        return 0
    if m is None:
        document = document.rstrip("\n") + f"\n\n{begin}\n{table}\n{end}\n"
    else:
        document = document[:m.start()] + f"{begin}\n{table}\n{end}" + document[m.end():]
    with open(args.output, "w") as f:
        f.write(document)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        traceback.print_exc()
        sys.exit(130)
