"""Benchmark: CNN train steps in litetrain, PyTorch eager and LiteRT, measured in one run.

    python benchmarks/bench_cnn.py [--models small_cnn,mobilenet_v2] [--steps 30] [--warmup 5] [--threads N]

Two models, each converted once to a .tflite file with builtin operators only
(portable_checkpoints=True), trained with SGD (momentum 0.9) on a fixed random batch:

- small_cnn: litetrain.models.SmallCNN on 28x28x1, batch 32 (2 conv + batch norm + max pool blocks);
- mobilenet_v2: litetrain.models.MobileNetV2 width 0.35 on 96x96x3, batch 8, 10 classes
  (52 batch norms in training mode, 17 depthwise convolutions).

Engines, each in its own subprocess (one engine's imports and threads do not affect another's):

- litetrain: `lt.Interpreter` on the file (NumPy only);
- LiteRT: `ai_edge_litert.interpreter.Interpreter` on the SAME file, through its signature runners;
  gradients included, since the file's backward pass is TFLite builtins;
- PyTorch eager: the same network built by tools.torch_mirror.to_torch from the same
  initial weights; a train step is zero_grad, forward, cross_entropy, backward, SGD.step.

Latency is the median of `--steps` timed calls after `--warmup` untimed ones. Ratios are engine /
litetrain (below 1: faster than litetrain). The last lines print each engine's first-step loss: they
must agree, or the engines are not running the same computation. Speed is never asserted by tests.
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
sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))  # tools/
from _common import error_text, median_ms, train_step_table  # noqa: E402

ENGINES = ("litetrain", "pytorch", "litert")
MODELS = {
    "small_cnn": {"shape": (28, 28, 1), "batch": 32, "lr": 0.01, "title": "small CNN, 28x28x1, batch 32"},
    "mobilenet_v2": {"shape": (96, 96, 3), "batch": 8, "lr": 0.001,
                     "title": "MobileNetV2 0.35, 96x96x3, batch 8"},
}


VARIANTS = {"full": "every weight trained", "remat": "every weight trained, every stage's activations recomputed",
            "last2": "the last 2 stages and the classifier trained", "bias": "biases and batch-norm offsets trained"}


def build_net(model, variant="full"):
    """The litetrain network; `variant` (MobileNetV2 only) chooses what trains and what is recomputed."""
    from litetrain.models import MobileNetV2, SmallCNN
    if model == "small_cnn":
        return SmallCNN()
    net = MobileNetV2(alpha=0.35, input_shape=(96, 96, 3), num_classes=10,
                      recompute="all" if variant == "remat" else ())
    if variant == "last2":
        net.set_trainable_from(len(net.stages) - 2)
    elif variant == "bias":
        for state in net.states():
            if state.path.endswith(("/bias", "/beta")):
                continue
            state.trainable = False
    return net


def inputs(model, seed=0):
    spec = MODELS[model]
    rng = np.random.default_rng(seed)
    x = rng.random((spec["batch"], *spec["shape"]), dtype=np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, spec["batch"])]
    return x, y


def torch_step(model, x, y, variant="full"):
    """PyTorch eager's train step on the batch (x, y): the same network built by to_torch from the
    constructor's weights (the file's initial values); zero_grad, forward, cross_entropy, backward,
    SGD(momentum 0.9) step; returns the loss."""
    import torch
    from tools.torch_mirror import to_torch
    net = to_torch(build_net(model, variant)).train()
    if variant == "bias":
        for name, p in net.named_parameters():
            p.requires_grad_(name.endswith("bias"))
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=MODELS[model]["lr"], momentum=0.9)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(tx), ty)
        loss.backward()
        opt.step()
        return loss.item()
    return step


def worker(engine, model, model_path, steps, warmup, threads):
    x, y = inputs(model)
    out = {"engine": engine, "model": model}
    if engine == "litetrain":
        import litetrain as lt
        train = lt.Interpreter(model_path=model_path).get_signature_runner("train")
        out["first_loss"] = float(train(x=x, y=y)["loss"])
        out["train_ms"] = median_ms(lambda: train(x=x, y=y), steps, warmup)
    elif engine == "pytorch":
        import torch
        if threads:
            torch.set_num_threads(threads)
        out["version"] = torch.__version__
        step = torch_step(model, x, y)
        out["first_loss"] = step()
        out["train_ms"] = median_ms(step, steps, warmup)
    elif engine == "litert":
        import importlib.metadata
        from ai_edge_litert import interpreter as litert
        out["version"] = importlib.metadata.version("ai-edge-litert")
        try:
            train = litert.Interpreter(model_path=model_path, num_threads=threads or None).get_signature_runner("train")
            out["first_loss"] = float(np.asarray(train(x=x, y=y)["loss"]).reshape(()))
            out["train_ms"] = median_ms(lambda: train(x=x, y=y), steps, warmup)
        except Exception as e:  # a runtime that cannot load or run the file: the table says why
            out["train_error"] = error_text(e)
    print(json.dumps(out))


def prepare(directory, model, variant="full", **convert_options):
    """Convert `model` (builtin operators only, plus any other `lt.convert` options) to a file in
    `directory`. Returns (path, file size, operators in the train subgraph)."""
    import litetrain as lt
    from litetrain.models import image_classifier
    spec = MODELS[model]
    net = build_net(model, variant)
    trainer = image_classifier(net, spec["shape"], 10, lt.optim.SGD(spec["lr"], momentum=0.9))
    content = lt.convert(trainer, signatures=["train", "infer", "save", "restore"], portable_checkpoints=True,
                         **convert_options)
    path = os.path.join(directory, f"{model}.tflite" if variant == "full" else f"{model}_{variant}.tflite")
    with open(path, "wb") as f:
        f.write(content)
    from litetrain.tflite import read_model
    program = read_model(content)
    nodes = len(program.functions[program.signature("train").function].nodes)
    return path, len(content), nodes


def run_worker(engine, model, model_path, args):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", engine, "--model-name", model, "--model", model_path,
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1][:90]
        return {"engine": engine, "model": model, "train_error": f"worker failed: {err}"}
    return json.loads(lines[-1])


def format_table(rows, models):
    return train_step_table(rows, "model", models, "model")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch/LiteRT threads (0: their default)")
    parser.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--model-name", choices=list(MODELS), help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.model_name, args.model, args.steps, args.warmup, args.threads)
    models = args.models.split(",")
    rows, notes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            path, size, nodes = prepare(tmp, model)
            notes.append(f"{model}: {MODELS[model]['title']}, SGD(momentum 0.9); file {size / 1024:.0f} KiB, "
                         f"train subgraph {nodes} operators")
            rows += [run_worker(e, model, path, args) for e in args.engines.split(",")]
    print(f"CNN train steps; median of {args.steps} calls after {args.warmup} warm-up; {os.cpu_count()} CPUs, "
          f"{platform.machine()}, Python {platform.python_version()}, NumPy {np.__version__}")
    print("One .tflite file per model (builtin operators only) for litetrain and LiteRT; PyTorch eager runs the "
          "same network from the same initial weights.")
    for n in notes:
        print("  " + n)
    print()
    print(format_table(rows, models))
    print()
    for model in models:
        losses = ", ".join(f"{r['engine']} {r['first_loss']:.6f}" for r in rows
                           if r["model"] == model and "first_loss" in r)
        print(f"First step's loss, {model} (same weights and batch: they should agree): {losses}")


if __name__ == "__main__":
    main()
