"""Benchmark: the demo MLP's train step and inference in litetrain, PyTorch eager and LiteRT.

    python benchmarks/bench_mlp.py [--batch-size 32] [--steps 1000] [--warmup 50] [--threads N]

One run measures every engine, each in a fresh subprocess (so one engine's imports and memory
do not affect another's numbers), on the same model, batch and initial weights:

- litetrain: `lt.Interpreter` on the demo model's .tflite file, converted with
  portable_checkpoints=True (builtin ops only);
- LiteRT: `ai_edge_litert.interpreter.Interpreter` on that SAME file (signature runners; if
  a signature fails to load or run, the table shows the error instead of a number);
- PyTorch eager: torch.nn Flatten/Linear/ReLU/Linear from the same initial weights; train step =
  zero_grad, forward, cross_entropy, backward, SGD(momentum) step; inference under no_grad.

Latency is the median over `--steps` timed calls after `--warmup` untimed ones (time.perf_counter
around each call, inputs prepared beforehand). Memory is the peak resident set size of the
worker process, from the OS: VmHWM in /proc/self/status on Linux (ru_maxrss elsewhere; on Linux
ru_maxrss survives exec and would start at the parent's peak). Two columns: "peak RSS", the whole
process (Python, NumPy, the engine's imports, the model, every timed call), and "engine RSS",
that peak minus the peak before the engine was imported (Python and NumPy alone): what the engine
itself costs. tracemalloc is not used: it sees only Python's allocator, not torch's or LiteRT's.
Ratios are engine / litetrain, so a ratio below 1 means the engine is faster or smaller than
litetrain. The machine should be otherwise idle: other processes on the same cores distort the
latencies (NumPy's BLAS threads suffer most). Speed is never asserted by tests.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import error_text, median_ms, peak_rss_mb, render  # noqa: E402

ENGINES = ("litetrain", "pytorch", "litert")


def inputs(batch, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((batch, 28, 28), dtype=np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, batch)]
    return x, y


def _measure(name, call, steps, warmup):
    try:
        return {f"{name}_ms": median_ms(call, steps, warmup)}
    except Exception as e:  # an engine that cannot run a signature: show why in the table
        return {f"{name}_error": error_text(e)}


def torch_steps(weights_path, x, y):
    """PyTorch eager's (train step, inference) on the batch (x, y), from the weights and optimizer
    hyperparameters `prepare` saved: the network is Flatten/Linear/ReLU/Linear; a train step is
    zero_grad, forward, cross_entropy, backward, SGD(momentum) step, returning the loss; inference,
    under no_grad, returns (softmax, logits) as arrays."""
    import torch
    with np.load(weights_path) as saved:
        weights = {k: saved[k] for k in saved.files}
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 128), torch.nn.ReLU(),
                              torch.nn.Linear(128, 10))
    with torch.no_grad():  # litetrain's Dense kernel is [units, input_dim], as Linear.weight
        for i, layer in ((1, "dense"), (3, "dense_1")):
            net[i].weight.copy_(torch.from_numpy(weights[f"net|{layer}|kernel"]))
            net[i].bias.copy_(torch.from_numpy(weights[f"net|{layer}|bias"]))
    opt = torch.optim.SGD(net.parameters(), lr=float(weights["hp|learning_rate"]),
                          momentum=float(weights["hp|momentum"]))
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def train_step():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(tx), ty)
        loss.backward()
        opt.step()
        return loss.item()

    def infer_step():
        with torch.no_grad():
            logits = net(tx)
            return torch.softmax(logits, -1).numpy(), logits.numpy()
    return train_step, infer_step


# -- workers (one engine per process) ------------------------------------------------------------
def worker(engine, model_path, weights_path, batch, steps, warmup, threads):
    x, y = inputs(batch)
    base = peak_rss_mb()  # Python + NumPy, before the engine is imported
    out = {"engine": engine}
    if engine == "litetrain":
        import litetrain as lt
        interp = lt.Interpreter(model_path=model_path)
        train, infer = interp.get_signature_runner("train"), interp.get_signature_runner("infer")
        out["first_loss"] = float(train(x=x, y=y)["loss"])
        out.update(_measure("train", lambda: train(x=x, y=y), steps, warmup))
        out.update(_measure("infer", lambda: infer(x=x), steps, warmup))
    elif engine == "pytorch":
        import torch  # litetrain is not imported here, so its memory is not counted as torch's
        if threads:
            torch.set_num_threads(threads)
        out["version"] = torch.__version__
        train_step, infer_step = torch_steps(weights_path, x, y)
        out["first_loss"] = float(train_step())
        out.update(_measure("train", train_step, steps, warmup))
        out.update(_measure("infer", infer_step, steps, warmup))
    elif engine == "litert":
        from ai_edge_litert import interpreter as litert
        import importlib.metadata
        out["version"] = importlib.metadata.version("ai-edge-litert")
        try:
            interp = litert.Interpreter(model_path=model_path, num_threads=threads or None)
        except Exception as e:
            msg = f"load failed: {type(e).__name__}: {str(e).splitlines()[0][:80]}"
            out.update(train_error=msg, infer_error=msg)
            interp = None
        if interp is not None:
            for name, kwargs in (("train", {"x": x, "y": y}), ("infer", {"x": x})):
                try:
                    runner = interp.get_signature_runner(name)
                except Exception as e:
                    out[f"{name}_error"] = error_text(e)
                    continue
                if name == "train":
                    try:
                        out["first_loss"] = float(runner(**kwargs)["loss"])
                    except Exception as e:
                        out["train_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:90]}"
                        continue
                out.update(_measure(name, lambda r=runner, k=kwargs: r(**k), steps, warmup))
    else:
        raise SystemExit(f"unknown engine {engine!r}")
    out["peak_rss_mb"] = peak_rss_mb()
    out["rss_growth_mb"] = out["peak_rss_mb"] - base
    print(json.dumps(out))


# -- the driver ---------------------------------------------------------------------------------
def prepare(directory):
    """Convert the demo model (portable checkpoints) to a file; save its initial weights for
    PyTorch. Returns (model path, weights path, file size)."""
    import litetrain as lt
    from litetrain.apps.demo import DemoModel, Protocol
    model = DemoModel(Protocol().litetrain_optimizer())
    content = lt.convert(model, signatures=["train", "infer", "save", "restore"], portable_checkpoints=True)
    model_path = os.path.join(directory, "demo_mlp_portable.tflite")
    with open(model_path, "wb") as f:
        f.write(content)
    weights = lt.Interpreter(model_content=content).get_variables()  # the file's own initial values
    weights_path = os.path.join(directory, "initial_weights.npz")
    p = Protocol()
    assert p.optimizer == "sgd", "the PyTorch worker builds SGD; update it with the demo's optimizer"
    np.savez(weights_path, **{k.replace("/", "|"): v for k, v in weights.items() if "optimizer" not in k},
             **{"hp|learning_rate": p.learning_rate, "hp|momentum": p.momentum})
    return model_path, weights_path, len(content)


def run_worker(engine, model_path, weights_path, args):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", engine, "--model", model_path,
           "--weights", weights_path, "--batch-size", str(args.batch_size), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1][:90]
        return {"engine": engine, "train_error": f"worker failed: {err}", "infer_error": "worker failed"}
    return json.loads(lines[-1])


def format_table(rows):
    base = next((r for r in rows if r["engine"] == "litetrain"), {})
    cols = [("train_ms", "train step ms", "{:.3f}"), ("infer_ms", "infer ms", "{:.3f}"),
            ("peak_rss_mb", "peak RSS MB", "{:.0f}"), ("rss_growth_mb", "engine RSS MB", "{:.1f}")]
    table = [["engine"] + [c for _, title, _ in cols for c in (title, "vs litetrain")]]
    for r in rows:
        line = [r["engine"] + (f" {r['version']}" if r.get("version") else "")]
        for key, _, fmt in cols:
            if key in r:
                b = base.get(key)
                line += [fmt.format(r[key]), f"{r[key] / b:.2f}x" if b else ""]
            else:  # the engine could not run this: say why
                line += [r.get(key.replace("_ms", "_error"), "n/a"), ""]
        table.append(line)
    return render(table)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--threads", type=int, default=0, help="torch/LiteRT threads (0: their default)")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.model, args.weights, args.batch_size, args.steps, args.warmup, args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model_path, weights_path, size = prepare(tmp)
        rows = [run_worker(e, model_path, weights_path, args) for e in args.engines.split(",")]
    print(f"Demo MLP 784-128-10, batch {args.batch_size}, SGD(momentum 0.9); median of {args.steps} calls after "
          f"{args.warmup} warm-up; {os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}, "
          f"NumPy {np.__version__}")
    print(f"One .tflite file for litetrain and LiteRT ({size / 1024:.1f} KiB, portable_checkpoints=True). "
          "Memory: peak RSS (VmHWM) of each engine's own subprocess.\n")
    print(format_table(rows))
    losses = ", ".join(f"{r['engine']} {r['first_loss']:.6f}" for r in rows if "first_loss" in r)
    print(f"\nFirst training step's loss (same weights, same batch: they should agree): {losses}")


if __name__ == "__main__":
    main()
