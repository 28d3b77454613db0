"""Benchmark: every workload's step in litetrain, PyTorch eager and LiteRT (builtin kernels, XNNPACK),
the engines interleaved in one run; MobileNetV2 fine-tuning's peak memory; litetrain's import time.

    python benchmarks/bench_train.py [--rows NAME,...] [--steps N] [--warmup 5] [--rounds 10] [--threads N]
                                     [--skip-personalize] [--personalize-steps 3]
                                     [--memory-variants full,remat,last2,bias]

Rows (names for --rows; the scripts they come from say more):

  mlp_train_b1 ... mlp_train_b512  the demo MLP 784-128-10 (Flatten, Dense(128, relu), Dense(10),
                                   cross-entropy from logits, SGD momentum 0.9), one train step at
                                   batch 1, 8, 32, 128, 512 (bench_mlp.py)
  mlp_infer_b1, mlp_infer_b32      the same file's `infer` signature
  small_cnn_train                  SmallCNN, 28x28x1, batch 32, SGD momentum 0.9 (bench_cnn.py)
  mobilenet_v2_train               MobileNetV2 0.35, 96x96x3, batch 8, every weight trained, batch
                                   norms in training mode, SGD momentum 0.9 (bench_cnn.py)
  lstm_train                       LSTM(32) -> Dense(1), batch 32, length 20 (masked), MSE, Adam
                                   (bench_rnn.py)
  personalize_finetune             pretrained MobileNetV2 224x224, last two blocks and the head
                                   fine-tuned on 8 images, Adam (bench_personalize.py; slow)

Each row's model is converted once with portable_checkpoints=True (builtin operators only), and four
engines run that one file or its network:

- litetrain: `lt.Interpreter` on the file (NumPy only);
- PyTorch eager: the same network from the same initial weights, the same optimizer;
- LiteRT builtin: `ai_edge_litert.interpreter.Interpreter` on the same file with
  OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES;
- LiteRT XNNPACK: the same with the default op resolver (the XNNPACK delegate).

Interleaving: each engine runs in a long-lived worker process of its own (one engine's imports and
thread pools never share a process with another's). After loading, the first call (its loss is
printed) and --warmup untimed calls, the parent drives the four workers round-robin, one at a time:
in each round every engine makes a block of timed calls (the row's steps split into --rounds
blocks; fewer rounds where the fastest engine's block would take under --min-block-ms), the order of
the engines rotating from round to round. A change in the machine's load during a row so reaches
every engine alike. Two things keep one engine from slowing the next: a worker replies only once its
process has stopped using the CPU (OpenBLAS's idle threads spin for about 0.1 s after a call, which
would take a core from the engine that follows), and each block starts with one untimed call (the
engine's threads parked and its caches emptied while the others ran), so every engine is timed in
its steady state. Each call is timed inside its worker (time.perf_counter); a cell is the median of
its row's timed calls. Ratios are litetrain's time divided by the peer's: below 1.00x litetrain is
faster. A cell whose engine cannot run the row shows the error instead.

Threads: --threads (default: the CPU count) for every engine: torch.set_num_threads, LiteRT's
num_threads, litetrain's num_threads (the BLAS threads of its calls; NumPy's BLAS threads are
litetrain's only threads), and OMP/OpenBLAS/MKL_NUM_THREADS in every worker's environment.

Memory: the peak resident set size (VmHWM, see _common.peak_rss_mb) of MobileNetV2 0.35 training,
batch 8, for --memory-steps steps, each engine and variant in a fresh process, for the variants
--memory-variants names (bench_cnn.VARIANTS): every weight trained (full); the same with every
stage's activations recomputed in the backward pass (remat, litetrain only: MobileNetV2(recompute=
"all")); the last two stages and the classifier trained (last2); only biases and batch-norm offsets
trained (bias). Import time: the median wall time of several fresh `python -c "import litetrain"`
processes, beside `python -c pass`.

Speed is never asserted by tests.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_cnn  # noqa: E402
import bench_mlp  # noqa: E402
import bench_personalize  # noqa: E402
import bench_rnn  # noqa: E402
from _common import error_text, peak_rss_mb, render  # noqa: E402

ENGINES = ("litetrain", "pytorch", "litert", "litert_xnnpack")
ENGINE_TITLES = {"litetrain": "litetrain", "pytorch": "PyTorch", "litert": "LiteRT builtin",
                 "litert_xnnpack": "LiteRT XNNPACK"}
PERSONALIZE = SimpleNamespace(images=8, batch=20)  # bench_personalize's defaults: 8 images per step
LSTM = {"cell": "LSTM", "units": 32, "batch": 32, "length": 20}
MEMORY_ROW = "mobilenet_v2_train"


def _rows():
    """Row name -> the row: its title, the model whose file it runs, the signature, default timed steps."""
    rows = {}
    for b in (1, 8, 32, 128, 512):
        rows[f"mlp_train_b{b}"] = {"title": f"MLP 784-128-10 train, batch {b}", "model": "mlp", "signature": "train",
                                   "batch": b, "steps": 300}
    for b in (1, 32):
        rows[f"mlp_infer_b{b}"] = {"title": f"MLP 784-128-10 infer, batch {b}", "model": "mlp", "signature": "infer",
                                   "batch": b, "steps": 300}
    rows["small_cnn_train"] = {"title": "small CNN train, batch 32", "model": "small_cnn", "signature": "train",
                               "steps": 30}
    rows["mobilenet_v2_train"] = {"title": "MobileNetV2 0.35 96x96 train, batch 8", "model": "mobilenet_v2",
                                  "signature": "train", "steps": 20}
    rows["lstm_train"] = {"title": f"LSTM({LSTM['units']}) train, batch {LSTM['batch']}, length {LSTM['length']}",
                          "model": "lstm", "signature": "train", "steps": 30}
    rows["personalize_finetune"] = {"title": f"personalize: last 2 blocks, {PERSONALIZE.images} images 224",
                                    "model": "personalize", "signature": "train_finetune", "steps": None}
    return rows


ROWS = _rows()


# -- the files: each model converted once, in the parent ------------------------------------------
def _operators(path, signature):
    from litetrain.tflite import read_model
    with open(path, "rb") as f:
        program = read_model(f.read())
    return len(program.functions[program.signature(signature).function].nodes)


def prepare(model, directory, variant="full"):
    """Convert `model` to a builtins-only file in `directory`: {"path", "note", and what PyTorch's
    worker needs to start from the same weights}. `variant`: what a MobileNetV2 trains and
    recomputes (bench_cnn.VARIANTS)."""
    import litetrain as lt
    if model == "mlp":
        path, weights, _ = bench_mlp.prepare(directory)
        files = {"path": path, "weights": weights}
        what = "demo MLP"
    elif model in bench_cnn.MODELS:
        path, _, _ = bench_cnn.prepare(directory, model, variant)
        files = {"path": path, "variant": variant}
        what = bench_cnn.MODELS[model]["title"]
    elif model == "lstm":
        net = bench_rnn.build_model(LSTM["cell"], LSTM["units"], LSTM["length"])
        path, weights = os.path.join(directory, "lstm.tflite"), os.path.join(directory, "lstm_torch.npz")
        with open(path, "wb") as f:
            f.write(lt.convert(net, ["train"], portable_checkpoints=True))
        np.savez(weights, **bench_rnn.torch_weights(net))
        files = {"path": path, "weights": weights}
        what = "LSTM, tensor lists of 2 x length"
    elif model == "personalize":
        path, _, _, trained = bench_personalize.prepare(directory)
        files = {"path": path}
        what = f"pretrained MobileNetV2 224x224 + 4-class head, {trained:,} base weights fine-tuned"
    else:
        raise ValueError(f"unknown model {model!r}")
    signatures = ["train", "infer"] if model == "mlp" else ["train_finetune"] if model == "personalize" else ["train"]
    ops = ", ".join(f"{s} {_operators(path, s)} operators" for s in signatures)
    files["note"] = f"{model}: {what}; file {os.path.getsize(path) / 1024:,.0f} KiB, {ops}"
    return files


# -- the workers: one engine on one row per process -----------------------------------------------
def engine_call(engine, row, files, threads):
    """Set `engine` up on `row` (its file or its PyTorch network, its fixed batch): returns (call,
    version), where call() makes one step and returns its loss (for inference: the mean |logit|)."""
    spec, files = ROWS[row], files[ROWS[row]["model"]]
    model, signature = spec["model"], spec["signature"]
    training = signature != "infer"
    if model == "mlp":
        x, y = bench_mlp.inputs(spec["batch"])
        feed = {"x": x, "y": y} if training else {"x": x}
    elif model == "lstm":
        x, mask, y, lengths = bench_rnn.inputs(LSTM["batch"], LSTM["length"])
        feed = {"x": x, "mask": mask, "y": y}
    elif model == "personalize":
        x, y = bench_personalize.inputs("finetune", PERSONALIZE)
        feed = {"images": x, "labels": y, "learning_rate": np.float32(bench_personalize.LR)}
    else:
        x, y = bench_cnn.inputs(model)
        feed = {"x": x, "y": y}

    def summary(outputs):
        value = outputs["loss"] if training else np.mean(np.abs(outputs["logits"]))
        return float(np.asarray(value).reshape(()))

    if engine == "litetrain":
        import litetrain as lt
        runner = lt.Interpreter(model_path=files["path"], num_threads=threads).get_signature_runner(signature)
        return (lambda: summary(runner(**feed))), lt.__version__
    if engine in ("litert", "litert_xnnpack"):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
        kind = OpResolverType.AUTO if engine == "litert_xnnpack" else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        runner = Interpreter(model_path=files["path"], num_threads=threads,
                             experimental_op_resolver_type=kind).get_signature_runner(signature)
        return (lambda: summary(runner(**feed))), importlib.metadata.version("ai-edge-litert")
    if engine != "pytorch":
        raise ValueError(f"unknown engine {engine!r}")
    import torch
    torch.set_num_threads(threads)
    if model == "mlp":
        train, infer = bench_mlp.torch_steps(files["weights"], x, y)
        step = train if training else (lambda: float(np.mean(np.abs(infer()[1]))))
    elif model == "lstm":
        with np.load(files["weights"]) as saved:
            weights = {k: saved[k] for k in saved.files}
        step = bench_rnn.torch_step(LSTM["cell"], LSTM["units"], weights, x, lengths, y)
    elif model == "personalize":
        step = bench_personalize.torch_step("finetune", files["path"], x, y)
    else:
        step = bench_cnn.torch_step(model, x, y, files.get("variant", "full"))
    return step, torch.__version__


def settle(window=0.01, limit=1.0):
    """Return once this process's threads have stopped using the CPU (at most `limit` s): after a call,
    OpenBLAS's idle threads spin for about 0.1 s and OpenMP's for a few ms, which would take a core
    from the engine that runs next."""
    end = time.perf_counter() + limit
    while time.perf_counter() < end:
        cpu = time.process_time()  # every thread of the process
        time.sleep(window)
        if time.process_time() - cpu < window / 10:
            return


def serve(engine, row, files, threads):
    """A timing worker: set up, make the first call and report its loss, then for each line `N` read
    from stdin make one untimed call and N timed ones and report their times; stop at end of input or
    at the first error. Every reply waits until the process is idle (`settle`)."""
    channel = os.fdopen(os.dup(1), "w", buffering=1)  # the replies; anything else printed goes to stderr
    os.dup2(2, 1)

    def send(message):
        settle()
        channel.write(json.dumps(message) + "\n")
        channel.flush()
    try:
        call, version = engine_call(engine, row, files, threads)
        send({"first": call(), "version": version})
    except Exception as e:
        return send({"error": error_text(e)})
    for line in sys.stdin:
        times = []
        try:
            if int(line):
                call()  # untimed: while the other engines ran, this one's threads parked and its caches emptied
            for _ in range(int(line)):
                t0 = time.perf_counter()
                call()
                times.append(time.perf_counter() - t0)
        except Exception as e:
            return send({"error": error_text(e)})
        send({"times": times})


def memory_worker(engine, row, files, threads, steps):
    """A memory worker: peak RSS before the engine is imported, after it has loaded the model, and after
    `steps` steps; prints them as one JSON line."""
    base = peak_rss_mb()  # Python and NumPy
    try:
        call, version = engine_call(engine, row, files, threads)
        loaded = peak_rss_mb()
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
    except Exception as e:
        return print(json.dumps({"error": error_text(e)}))
    print(json.dumps({"version": version, "base": base, "loaded": loaded, "peak": peak_rss_mb(),
                      "ms": 1e3 * statistics.median(times)}))


class Worker:
    """The parent's handle on a timing worker (`serve`) in its own process."""

    def __init__(self, engine, row, files, args, env):
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", engine, "--row", row,
               "--files", json.dumps(files), "--threads", str(args.threads)]
        self.stderr = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                     text=True, env=env)
        self.replies = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.replies.put(json.loads(line))
        self.replies.put(None)

    def reply(self, timeout):
        try:
            message = self.replies.get(timeout=timeout)
        except queue.Empty:
            self.proc.kill()
            return {"error": f"no result within {timeout} s"}
        if message is None:  # the worker died: its last words
            self.proc.wait()
            self.stderr.seek(0)
            last = (self.stderr.read().strip().splitlines() or [f"exit status {self.proc.returncode}"])[-1]
            return {"error": f"worker died: {last[:80]}"}
        return message

    def ask(self, calls, timeout):
        try:
            self.proc.stdin.write(f"{calls}\n")
            self.proc.stdin.flush()
        except OSError:
            pass  # the worker is gone; reply() says why
        return self.reply(timeout)

    def close(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


# -- the parent -----------------------------------------------------------------------------------
def steps_of(row, args):
    """(timed steps, warm-up calls) of `row`."""
    if ROWS[row]["model"] == "personalize":
        return args.personalize_steps, min(args.warmup, 1)
    return args.steps or ROWS[row]["steps"], args.warmup


def measure(row, files, args, env):
    """Every engine's first-call loss and median step time on `row`, measured interleaved; under
    "timing", the timed calls per engine and the rounds they took."""
    steps, warmup = steps_of(row, args)
    workers = {e: Worker(e, row, files, args, env) for e in ENGINES}  # set up side by side; nothing is timed yet
    results = {e: {} for e in ENGINES}
    for engine, worker in workers.items():
        message = worker.reply(args.timeout)
        results[engine].update(message)
    live = [e for e in ENGINES if "error" not in results[e]]
    estimate = {}
    for engine in list(live):
        message = workers[engine].ask(warmup, args.timeout)
        if "error" in message:
            results[engine]["error"] = message["error"]
            live.remove(engine)
        elif message["times"]:
            estimate[engine] = statistics.median(message["times"])
    rounds = max(1, min(args.rounds, steps))
    if estimate:  # fewer rounds where the fastest engine's blocks would be too short to be warm
        rounds = max(1, min(rounds, int(steps * min(estimate.values()) * 1e3 / args.min_block_ms)))
    block = -(-steps // rounds)
    times = {e: [] for e in live}
    for i in range(-(-steps // block)):
        shift = i % len(live) if live else 0
        for engine in live[shift:] + live[:shift]:
            message = workers[engine].ask(min(block, steps - len(times[engine])), args.timeout)
            if "error" in message:
                results[engine]["error"] = message["error"]
                live.remove(engine)
            else:
                times[engine] += message["times"]
    for worker in workers.values():
        worker.close()
    for engine in live:
        results[engine]["ms"] = 1e3 * statistics.median(times[engine])
    results["timing"] = f"{steps} x {-(-steps // block)}"
    return results


def run_memory(label, engine, files, args, env):
    """One memory worker (`memory_worker`) on MobileNetV2 fine-tuning in a fresh process: its result row."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", engine, "--row", MEMORY_ROW,
           "--files", json.dumps(files), "--threads", str(args.threads), "--measure", "memory",
           "--memory-steps", str(args.memory_steps)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"label": label, "error": f"no result within {args.timeout} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        return {"label": label, "error": f"worker died: {last[:80]}"}
    return {"label": label, **json.loads(lines[-1])}


def import_times(runs, env):
    """Median wall times (ms) of fresh `python -c "import litetrain"` and `python -c pass` processes,
    run alternately."""
    commands = {"import litetrain": [sys.executable, "-c", "import litetrain"],
                "import litetrain; lt.Interpreter": [sys.executable, "-c", "import litetrain as lt; lt.Interpreter"],
                "pass": [sys.executable, "-c", "pass"]}
    times = {k: [] for k in commands}
    for _ in range(runs):
        for key, cmd in commands.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, env=env, check=True)
            times[key].append(time.perf_counter() - t0)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def fmt_ms(ms):
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.1f}"


def time_table(rows, results):
    peers = ENGINES[1:]
    table = [["workload"] + [f"{ENGINE_TITLES[e]} ms" for e in ENGINES]
             + [f"litetrain/{ENGINE_TITLES[e]}" for e in peers]]
    for row in rows:
        r = results[row]
        cells = [fmt_ms(r[e]["ms"]) if "ms" in r[e] else r[e].get("error", "n/a") for e in ENGINES]
        base = r["litetrain"].get("ms")
        ratios = [f"{base / r[e]['ms']:.2f}x" if base and r[e].get("ms") else "-" for e in peers]
        table.append([ROWS[row]["title"]] + cells + ratios)
    return render(table)


def loss_table(rows, results):
    table = [["workload", "value"] + [ENGINE_TITLES[e] for e in ENGINES] + ["max rel. diff", "calls x rounds"]]
    for row in rows:
        r = results[row]
        values = [r[e].get("first") for e in ENGINES]
        known = [v for v in values if v is not None]
        diff = max(abs(v - known[0]) for v in known) / max(abs(known[0]), 1e-12) if len(known) > 1 else None
        table.append([ROWS[row]["title"], "loss" if ROWS[row]["signature"] != "infer" else "mean |logit|"]
                     + [f"{v:.6f}" if v is not None else "-" for v in values]
                     + [f"{diff:.1e}" if diff is not None else "-", r["timing"]])
    return render(table)


def memory_table(entries):
    base = next((e["peak"] for e in entries if e["label"].startswith("litetrain") and "peak" in e), None)
    table = [["engine", "peak RSS MB", "vs litetrain", "Python+NumPy MB", "model loaded MB", "growth in steps MB",
              "step ms"]]
    for e in entries:
        if "peak" not in e:
            table.append([e["label"], e.get("error", "n/a")] + [""] * 5)
            continue
        table.append([e["label"], f"{e['peak']:.0f}", f"{e['peak'] / base:.2f}x" if base else "", f"{e['base']:.0f}",
                      f"{e['loaded']:.0f}", f"{e['peak'] - e['loaded']:.0f}", fmt_ms(e["ms"])])
    return render(table)


def _version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def build_parser():
    """The command line (the hidden --worker, --row, --files and --measure start a worker process)."""
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n")[:2]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="rows: " + ", ".join(ROWS))
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated row names (default: all)")
    parser.add_argument("--steps", type=int, default=0,
                        help="timed calls per engine in every row but personalization (default: each row's own: "
                             + ", ".join(sorted({f"{v['model']} {v['steps']}" for v in ROWS.values() if v['steps']}))
                             + ")")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls after the first (personalization: 1)")
    parser.add_argument("--rounds", type=int, default=10, help="blocks each engine's timed calls are split into")
    parser.add_argument("--min-block-ms", type=float, default=10,
                        help="fewer rounds where the fastest engine's block would take less (estimated from warm-up)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="threads of every engine (default: the CPU count)")
    parser.add_argument("--skip-personalize", action="store_true", help="leave out the personalization row")
    parser.add_argument("--personalize-steps", type=int, default=3, help="timed calls in the personalization row")
    parser.add_argument("--memory-steps", type=int, default=3, help="steps of each memory worker (0: no memory)")
    parser.add_argument("--memory-variants", default="full,remat,last2,bias",
                        help="what trains and what is recomputed in the memory table (bench_cnn.VARIANTS)")
    parser.add_argument("--import-runs", type=int, default=7, help="fresh processes timing the import (0: none)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds a worker may take for one reply")
    parser.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--row", choices=list(ROWS), help=argparse.SUPPRESS)
    parser.add_argument("--files", help=argparse.SUPPRESS)
    parser.add_argument("--measure", choices=["time", "memory"], default="time", help=argparse.SUPPRESS)
    return parser


def print_header(rows, args):
    """The machine, the versions and how every row is timed."""
    import litetrain as lt
    print(f"litetrain train/inference steps, engines interleaved in each row; {os.cpu_count()} CPUs, "
          f"{platform.machine()}, {platform.system()}, Python {platform.python_version()}, NumPy {np.__version__}, "
          f"torch {_version('torch')}, LiteRT {_version('ai-edge-litert')}, litetrain {lt.__version__} "
          f"({os.path.dirname(lt.__file__)})")
    print(f"Threads: {args.threads} for every engine (torch.set_num_threads, LiteRT num_threads, "
          "OMP/OpenBLAS/MKL_NUM_THREADS for NumPy). Timed calls per engine: "
          + ", ".join(f"{r} {steps_of(r, args)[0]}" for r in rows)
          + f"; after the first call and {args.warmup} warm-up (personalization {min(args.warmup, 1)}); "
          f"in up to {args.rounds} interleaved rounds (blocks of at least {args.min_block_ms:g} ms for the fastest "
          "engine), each block after one untimed call.")


def time_rows(rows, files, tmp, args, env):
    """Measure every row (converting each model once) and print the time and first-call tables."""
    results, notes = {}, []
    for row in rows:
        model = ROWS[row]["model"]
        if model not in files:
            files[model] = prepare(model, tmp)
            notes.append(files[model]["note"])
        results[row] = measure(row, files, args, env)
    print("One .tflite file per model (builtin operators only) for litetrain and both LiteRT columns; PyTorch "
          "eager runs the same network from the same initial weights.")
    for note in notes:
        print("  " + note)
    if rows:
        print("\nMedian step, ms (ratio = litetrain time / peer time: below 1.00x litetrain is faster)\n")
        print(time_table(rows, results))
        print("\nFirst call of each engine (same weights, same batch: the values must agree), and the timed "
              "calls per engine and the rounds they were split into\n")
        print(loss_table(rows, results))


def memory_rows(files, tmp, args, env):
    """Peak memory of MobileNetV2 training in litetrain and PyTorch, for each --memory-variants choice
    of what trains and what is recomputed."""
    model = ROWS[MEMORY_ROW]["model"]
    entries = []
    for variant in [v for v in args.memory_variants.split(",") if v]:
        if variant not in bench_cnn.VARIANTS:
            raise SystemExit(f"unknown memory variant {variant!r}; known: {', '.join(bench_cnn.VARIANTS)}")
        os.makedirs(os.path.join(tmp, variant), exist_ok=True)
        chosen = {model: prepare(model, os.path.join(tmp, variant), variant)}
        entries.append(run_memory(f"litetrain {variant}", "litetrain", chosen, args, env))
        if variant != "remat":  # PyTorch eager keeps its activations
            entries.append(run_memory(f"pytorch {variant}", "pytorch", chosen, args, env))
    print(f"\nMemory: MobileNetV2 0.35 96x96, batch 8, {args.memory_steps} steps, each engine and variant in a "
          "fresh process: " + "; ".join(f"{k}: {v}" for k, v in bench_cnn.VARIANTS.items()) + ". Peak RSS (VmHWM) "
          "of the whole process, before the engine is imported, once it has loaded the model, and the growth "
          "during the steps (activations, gradients, optimizer state); step ms: median of those steps\n")
    print(memory_table(entries))


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.worker:
        files = json.loads(args.files)
        if args.measure == "memory":
            return memory_worker(args.worker, args.row, files, args.threads, args.memory_steps)
        return serve(args.worker, args.row, files, args.threads)
    rows = [r for r in args.rows.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; known: {', '.join(ROWS)}")
    if args.skip_personalize:
        rows = [r for r in rows if ROWS[r]["model"] != "personalize"]
    env = {**os.environ, **{k: str(args.threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                           "MKL_NUM_THREADS")}}
    print_header(rows, args)
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        time_rows(rows, files, tmp, args, env)
        if args.memory_steps:
            memory_rows(files, tmp, args, env)
    if args.import_runs:
        t = import_times(args.import_runs, env)
        print(f"\nImport time (median of {args.import_runs} fresh processes, minus python -c pass's "
              f"{t['pass']:.0f} ms): import litetrain {t['import litetrain'] - t['pass']:.0f} ms; import litetrain and "
              f"its Interpreter (NumPy, the op set, the .tflite reader) "
              f"{t['import litetrain; lt.Interpreter'] - t['pass']:.0f} ms")


if __name__ == "__main__":
    main()
