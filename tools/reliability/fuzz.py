"""The model-file fuzz: mutated real files are loaded and, when they load, every signature is run.

The contract it checks (the one `Interpreter` documents):
- loading raises nothing but InvalidModelError (UnsupportedOpError is one);
- a signature call raises nothing but SignatureError or ExecutionError, and a call that raises
  leaves every variable exactly as it was (the same array objects: nothing was touched);
- nothing crashes the process, no file takes a second or more, memory stays bounded.

`check_model` checks one file in-process (hypothesis and atheris call it). `run_fuzz` runs many
seeded cases in worker processes, so a crash or a hang is caught, attributed to its case and
saved, and the run goes on.
"""
from __future__ import annotations

import json
import os
import random
import resource
import select
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field

import numpy as np

from litetrain import ExecutionError, Interpreter, InvalidModelError, SignatureError, UnsupportedOpError
from tools.reliability import child_env, models
from tools.reliability.mutate import mutate, random_mutations, structure

MAX_INPUT_ELEMENTS = 1 << 16  # inputs the fuzz feeds a signature (a file may declare any shape)
HANG_SECONDS = 1.0           # a file that takes this long counts as a hang
KILL_SECONDS = 20.0          # a worker silent this long on one case is killed (and the case is a hang)
MEMORY_LIMIT = 8 << 30       # address-space cap of a worker: a safety net, reported if ever hit


@dataclass
class Outcome:
    """What one file did."""
    loaded: bool = False
    load_error: str = ""          # the exception class at load, if any
    calls: int = 0                # signature calls made
    call_errors: dict = field(default_factory=dict)  # exception class -> count
    skipped_calls: int = 0        # signatures whose declared inputs exceed MAX_INPUT_ELEMENTS
    memory_errors: int = 0        # ExecutionErrors caused by a failed allocation
    changed_on_failure: list = field(default_factory=list)  # signatures that failed yet changed state
    unexpected: str = ""          # any exception outside the contract, with its traceback
    seconds: float = 0.0          # wall-clock time
    cpu_seconds: float = 0.0      # CPU time of this process: what a hang is judged by, since other
    # processes on a shared machine stretch the wall clock but not the work


def _inputs(runner, workdir: str, rng: np.random.Generator):
    feeds = {}
    for name, d in runner.get_input_details().items():
        shape = [2 if s < 0 else int(s) for s in d["shape_signature"]]
        if int(np.prod(shape, dtype=np.float64)) > MAX_INPUT_ELEMENTS:
            return None
        dtype = d["dtype"]
        if dtype is np.bytes_:
            feeds[name] = np.array(os.path.join(workdir, "fuzz.safetensors").encode(), dtype=object)
            if shape:
                feeds[name] = np.full(shape, feeds[name], dtype=object)
        elif dtype is None:
            feeds[name] = np.zeros(shape, np.float32)  # a resource input: the call must refuse it
        elif np.dtype(dtype).kind == "f":
            feeds[name] = rng.standard_normal(shape).astype(dtype)
        elif np.dtype(dtype).kind == "b":
            feeds[name] = rng.integers(0, 2, shape).astype(bool)
        else:
            feeds[name] = rng.integers(0, 3, shape).astype(dtype)
    return feeds


def check_model(data: bytes, workdir: str, rounds: int = 2) -> Outcome:
    """Load `data` and run each of its signatures `rounds` times (so that restore finds what save
    wrote); record what happened. Never raises for a contract violation: it is in `unexpected`."""
    out = Outcome()
    start, cpu = time.perf_counter(), time.process_time()
    with np.errstate(all="ignore"):  # NaN weights and the like are fine: warnings are not the contract
        _check(data, workdir, rounds, out)
    out.seconds, out.cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    return out


def _check(data, workdir, rounds, out):
    try:
        try:
            interp = Interpreter(model_content=data)
        except InvalidModelError as e:
            out.load_error = "UnsupportedOpError" if isinstance(e, UnsupportedOpError) else "InvalidModelError"
            return
        out.loaded = True
        rng = np.random.default_rng(0)
        store = interp._executor.variables
        keys = list(interp.get_signature_list())
        for _ in range(rounds):
            for key in keys:
                runner = interp.get_signature_runner(key)
                feeds = _inputs(runner, workdir, rng)
                if feeds is None:
                    out.skipped_calls += 1
                    continue
                before = (dict(store.values), set(store.initialized))
                out.calls += 1
                try:
                    runner(**feeds)
                except (SignatureError, ExecutionError) as e:
                    label = type(e).__name__
                    out.call_errors[label] = out.call_errors.get(label, 0) + 1
                    if "MemoryError" in str(e):
                        out.memory_errors += 1
                    after = store.values
                    if (store.initialized != before[1] or after.keys() != before[0].keys()
                            or any(after[k] is not v for k, v in before[0].items())):
                        out.changed_on_failure.append(key)
        try:
            interp.get_variables()
        except ExecutionError as e:
            out.call_errors[type(e).__name__] = out.call_errors.get(type(e).__name__, 0) + 1
    except BaseException as e:  # noqa: BLE001 - anything else breaks the contract
        if isinstance(e, KeyboardInterrupt):
            raise
        out.unexpected = "".join(traceback.format_exception(type(e), e, e.__traceback__))[-3000:]


# -- seeded cases ------------------------------------------------------------------------------
class Corpus:
    """The seed files, their structure maps, and the case -> (seed, mutations) rule."""

    def __init__(self, with_mediapipe: bool = True):
        own = models.seed_files()
        extra = models.mediapipe_files() if with_mediapipe else {}
        self.names = list(own) + list(extra)
        self.files = [own.get(n) or extra[n] for n in self.names]
        self.family = ["litetrain"] * len(own) + ["mediapipe"] * len(extra)
        self.structures = [structure(f) for f in self.files]
        # litetrain's own files carry the runnable signatures: draw them about half the time
        self.weights = [max(1, len(extra) // max(len(own), 1)) if f == "litetrain" else 1 for f in self.family]

    def case(self, index: int, base_seed: int = 0):
        rng = random.Random(f"{base_seed}:{index}")
        seed = rng.choices(range(len(self.files)), self.weights)[0]
        mutations = random_mutations(rng)
        data = mutate(self.files[seed], self.structures[seed], mutations, others=self.files[:3])
        return seed, mutations, data


def _worker(start: int, stop: int, base_seed: int, with_mediapipe: bool):
    """Run cases [start, stop): print 'B i' before a case and 'R {json}' after it."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    corpus = Corpus(with_mediapipe)
    print("READY", flush=True)
    with tempfile.TemporaryDirectory(prefix="litetrain-fuzz-") as workdir:
        os.chdir(workdir)  # a mutated file may save a checkpoint under a garbage relative name
        for i in range(start, stop):
            seed, mutations, data = corpus.case(i, base_seed)
            print(f"B {i}", flush=True)
            outcome = check_model(data, workdir)
            record = {"case": i, "seed": corpus.names[seed], "family": corpus.family[seed],
                      "mutations": [m[0] for m in mutations], "size": len(data), **asdict(outcome)}
            print("R " + json.dumps(record), flush=True)
    print(f"M {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}", flush=True)


class _Worker:
    def __init__(self, start, stop, base_seed, with_mediapipe):
        self.next, self.stop = start, stop
        self.args = (base_seed, with_mediapipe)
        self.proc = None
        self.buffer = b""
        self.current = None
        self.since = 0.0
        self.spawn()

    def spawn(self):
        code = ("import sys; from tools.reliability.fuzz import _worker; "
                f"_worker({self.next}, {self.stop}, {self.args[0]}, {self.args[1]})")
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=child_env())
        self.buffer, self.current, self.since = b"", None, time.monotonic() + 120  # start-up allowance


def run_fuzz(cases: int, workers: int = 2, base_seed: int = 0, with_mediapipe: bool = True,
             out_dir: str | None = None, progress=None) -> dict:
    """Run `cases` seeded cases in `workers` processes; returns the summary (see `summarize`)."""
    bounds = [cases * k // workers for k in range(workers + 1)]
    pool = [_Worker(bounds[k], bounds[k + 1], base_seed, with_mediapipe) for k in range(workers) if
            bounds[k] < bounds[k + 1]]
    records, failures, peak_kb = [], [], 0
    started = time.monotonic()
    corpus = None

    def fail(worker, kind):
        nonlocal corpus
        case = worker.current
        failures.append({"case": case, "kind": kind})
        if out_dir is not None:
            corpus = corpus or Corpus(with_mediapipe)
            os.makedirs(out_dir, exist_ok=True)
            with open(os.path.join(out_dir, f"case_{case}_{kind}.tflite"), "wb") as f:
                f.write(corpus.case(case, base_seed)[2])
        worker.proc.kill()
        worker.proc.wait()
        worker.next = case + 1
        if worker.next < worker.stop:
            worker.spawn()
        else:
            worker.proc = None

    while any(w.proc is not None for w in pool):
        live = [w for w in pool if w.proc is not None]
        ready, _, _ = select.select([w.proc.stdout for w in live], [], [], 1.0)
        for w in live:
            if w.proc.stdout in ready:
                chunk = os.read(w.proc.stdout.fileno(), 1 << 16)
                if not chunk:  # the worker ended
                    code = w.proc.wait()
                    if w.current is not None:
                        fail(w, f"crash(exit {code})")
                    else:
                        w.proc = None
                    continue
                w.buffer += chunk
                *lines, w.buffer = w.buffer.split(b"\n")
                for line in lines:
                    text = line.decode()
                    if text.startswith("B "):
                        w.current, w.since = int(text[2:]), time.monotonic()
                    elif text.startswith("R "):
                        record = json.loads(text[2:])
                        records.append(record)
                        w.current, w.since = None, time.monotonic()
                        if progress and len(records) % 500 == 0:
                            progress(len(records), cases)
                        if out_dir is not None and (record["unexpected"] or record["changed_on_failure"]
                                                    or record["cpu_seconds"] >= HANG_SECONDS):
                            corpus = corpus or Corpus(with_mediapipe)
                            os.makedirs(out_dir, exist_ok=True)
                            with open(os.path.join(out_dir, f"case_{record['case']}.tflite"), "wb") as f:
                                f.write(corpus.case(record["case"], base_seed)[2])
                    elif text.startswith("M "):
                        peak_kb = max(peak_kb, int(text[2:]))
            elif w.current is not None and time.monotonic() - w.since > KILL_SECONDS:
                fail(w, "hang")
    summary = summarize(records, failures, cases)
    summary["worker_peak_rss_mb"] = round(peak_kb / 1024, 1)
    summary["wall_seconds"] = round(time.monotonic() - started, 1)
    summary["workers"] = len(pool)
    return summary


def summarize(records: list, failures: list, cases: int) -> dict:
    """Counts and figures over the cases' records."""
    times = np.array([r["seconds"] for r in records]) if records else np.zeros(1)
    cpu = np.array([r["cpu_seconds"] for r in records]) if records else np.zeros(1)
    slow = sorted((r for r in records if r["cpu_seconds"] >= HANG_SECONDS), key=lambda r: -r["cpu_seconds"])
    by_family = {}
    for r in records:
        by_family[r["family"]] = by_family.get(r["family"], 0) + 1
    call_errors = {}
    for r in records:
        for k, v in r["call_errors"].items():
            call_errors[k] = call_errors.get(k, 0) + v
    return {
        "cases": cases,
        "completed": len(records),
        "by_family": by_family,
        "rejected_invalid": sum(r["load_error"] == "InvalidModelError" for r in records),
        "rejected_unsupported": sum(r["load_error"] == "UnsupportedOpError" for r in records),
        "loaded": sum(r["loaded"] for r in records),
        "calls": sum(r["calls"] for r in records),
        "call_errors": call_errors,
        "calls_skipped_large_inputs": sum(r["skipped_calls"] for r in records),
        "memory_errors": sum(r["memory_errors"] for r in records),
        "unexpected_exceptions": sum(bool(r["unexpected"]) for r in records),
        "unexpected_examples": [(r["case"], r["unexpected"][-600:]) for r in records if r["unexpected"]][:5],
        "failed_calls_that_changed_state": sum(len(r["changed_on_failure"]) for r in records),
        "crashes": sum(f["kind"].startswith("crash") for f in failures),
        "hangs_killed": sum(f["kind"] == "hang" for f in failures),
        "slow_cases": len(slow),
        "slow_examples": [(r["case"], r.get("seed", r["family"]), round(r["cpu_seconds"], 2)) for r in slow[:10]],
        "max_cpu_seconds": round(float(cpu.max()), 3),
        "p99_cpu_seconds": round(float(np.percentile(cpu, 99)), 4),
        "max_seconds": round(float(times.max()), 3),
        "p99_seconds": round(float(np.percentile(times, 99)), 4),
        "median_seconds": round(float(np.median(times)), 4),
    }


# -- hypothesis and atheris ------------------------------------------------------------------------
def hypothesis_fuzz(examples: int, corpus: Corpus | None = None, seed: int | None = 0) -> dict:
    """Run `examples` hypothesis-drawn cases (a seed file and one to three mutations, shrunk to a
    minimal failing case if the contract breaks) in this process; returns the summary. Raises
    the failing case's AssertionError when the contract breaks. Needs hypothesis."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as fix_seed
    from hypothesis import strategies as st

    from tools.reliability.mutate import KINDS
    corpus = corpus or Corpus()
    records = []
    mutation = st.tuples(st.sampled_from(KINDS), st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1),
                         st.integers(0, 255), st.integers(0, 255))

    weighted = [i for i, w in enumerate(corpus.weights) for _ in range(w)]

    @settings(max_examples=examples, deadline=None, database=None, derandomize=seed is None,
              suppress_health_check=list(HealthCheck))
    @given(seed_index=st.sampled_from(weighted), mutations=st.lists(mutation, min_size=1, max_size=3))
    def one(seed_index, mutations):
        data = mutate(corpus.files[seed_index], corpus.structures[seed_index], mutations, corpus.files[:3])
        with tempfile.TemporaryDirectory(prefix="litetrain-hyp-") as workdir:
            cwd = os.getcwd()
            os.chdir(workdir)
            try:
                outcome = check_model(data, workdir)
            finally:
                os.chdir(cwd)
        records.append({"case": len(records), "family": corpus.family[seed_index], **asdict(outcome)})
        assert not outcome.unexpected, outcome.unexpected
        assert not outcome.changed_on_failure, f"failed calls changed variables: {outcome.changed_on_failure}"
        assert outcome.cpu_seconds < HANG_SECONDS, f"took {outcome.cpu_seconds:.2f} s of CPU"

    run = fix_seed(seed)(one) if seed is not None else one
    started = time.monotonic()
    run()
    summary = summarize(records, [], len(records))
    summary["wall_seconds"] = round(time.monotonic() - started, 1)
    summary["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return summary


ATHERIS_TARGET = r'''
import os, sys, tempfile
import atheris
with atheris.instrument_imports(include=["litetrain"]):
    from tools.reliability.fuzz import check_model
workdir = tempfile.mkdtemp(prefix="litetrain-atheris-")
os.chdir(workdir)

def test_one_input(data):
    outcome = check_model(bytes(data), workdir, rounds=1)
    if outcome.unexpected:
        raise RuntimeError("the contract broke:\n" + outcome.unexpected)
    if outcome.changed_on_failure:
        raise RuntimeError(f"failed calls changed variables: {outcome.changed_on_failure}")

atheris.Setup(sys.argv, test_one_input)
atheris.Fuzz()
'''


def atheris_available() -> bool:
    import importlib.util
    return importlib.util.find_spec("atheris") is not None


def run_atheris(runs: int, max_seed_bytes: int = 256 << 10, artifacts: str | None = None) -> dict:
    """Coverage-guided fuzzing with atheris (libFuzzer) from the seed files no larger than
    `max_seed_bytes`, for `runs` inputs, in a subprocess: -timeout=1 makes any input that takes a
    second a failure, -rss_limit_mb bounds memory. Returns its figures."""
    import re
    corpus = Corpus()
    seeds = [f for f in corpus.files if len(f) <= max_seed_bytes]
    with tempfile.TemporaryDirectory(prefix="litetrain-atheris-corpus-") as directory:
        for k, f in enumerate(seeds):
            with open(os.path.join(directory, f"seed_{k}.tflite"), "wb") as out:
                out.write(f)
        args = [sys.executable, "-c", ATHERIS_TARGET, f"-runs={runs}", "-timeout=1", "-rss_limit_mb=4096",
                f"-max_len={max(len(f) for f in seeds) + 1024}", "-print_final_stats=1", "-seed=1",
                f"-artifact_prefix={(artifacts or directory).rstrip('/')}/", directory]
        started = time.monotonic()
        proc = subprocess.run(args, capture_output=True, text=True, cwd=directory, env=child_env())
        wall = time.monotonic() - started
    log = proc.stderr + proc.stdout
    stat = dict(re.findall(r"stat::(\w+):\s+(\d+)", log))
    return {"runs": int(stat.get("number_of_executed_units", 0)), "seeds": len(seeds),
            "exit_code": proc.returncode, "crashed": proc.returncode != 0,
            "peak_rss_mb": int(stat.get("peak_rss_mb", 0)), "wall_seconds": round(wall, 1),
            "log_tail": log[-2000:] if proc.returncode != 0 else ""}
