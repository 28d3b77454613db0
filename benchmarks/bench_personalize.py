"""Benchmark: personalization train steps on a pretrained MobileNetV2 in litetrain, PyTorch eager and
LiteRT, measured in one run.

    python benchmarks/bench_personalize.py [--steps 5] [--head-steps 50] [--batch 20] [--images 8] [--threads N]

One personalization file (`convert_personalization`) holds torchvision's MobileNetV2 with its ImageNet
weights, imported from PyTorch without its classifier (`BaseModel.from_torch_zoo("mobilenet_v2")`,
224x224x3 in, 1280-d bottleneck out), a softmax head for 4 classes, Adam(0.001), and `finetune=2`
(the last two blocks, `features.17` and `features.18`). Two steps are timed on a fixed batch:

- head: the `train` signature, head only, on cached bottlenecks ([--batch, 1280], 4 classes);
- finetune: the `train_finetune` signature, --images images of 224x224 through the whole network
  (batch norm on its running statistics), updating the head and the last two blocks.

Engines, each in its own subprocess:

- litetrain: `lt.Interpreter` on the file (NumPy only);
- LiteRT: `ai_edge_litert.interpreter.Interpreter` on the SAME file with
  `experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES`, as
  `Personalizer(..., backend="litert")` runs a file with a resizable head (its XNNPACK delegate keeps
  a resized variable's old shape after `add_class`; a fixed-capacity head, `max_classes=K`, runs
  with the delegate; see litetrain.apps.personalize);
- LiteRT+XNNPACK: the same file with LiteRT's default delegate, for its speed (no class is added here);
- PyTorch eager: the same pretrained model (`torch_zoo.feature_extractor`, eval mode) and a Linear
  head from the file's initial weights; a step is zero_grad, forward (normalisation included, as in
  the file), cross_entropy, backward, Adam.step, on the same parameters.

Latency is the median of the timed calls after the warm-up ones; an engine that gives no result
within --timeout seconds (per step kind, loading and warm-up included) shows that instead. Ratios
are engine / litetrain (below 1: faster than litetrain). The last lines print each engine's first-step loss: they must agree, or
the engines are not computing the same thing. Speed is never asserted by tests.
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
from _common import error_text, median_ms, train_step_table  # noqa: E402

ENGINES = ("litetrain", "pytorch", "litert", "litert_xnnpack")
WORKLOADS = ("head", "finetune")
CLASSES, FEATURES, SIZE, LR = 4, 1280, 224, 0.001


def inputs(workload, args, seed=0):
    rng = np.random.default_rng(seed)
    if workload == "head":  # post-ReLU6, average-pooled features are non-negative, mostly below 6
        x = np.abs(rng.normal(0, 1.5, (args.batch, FEATURES))).astype(np.float32)
        y = rng.integers(0, CLASSES, args.batch).astype(np.int32)
    else:
        x = (rng.random((args.images, SIZE, SIZE, 3), dtype=np.float32) * 255).astype(np.float32)
        y = rng.integers(0, CLASSES, args.images).astype(np.int32)
    return x, y


def torch_step(workload, model_path, x, y):
    """PyTorch eager's step for `workload` on (x, y): the file's initial head and, for "finetune", the
    pretrained network (eval mode) with its last two blocks trained; Adam; returns the loss."""
    import torch
    from litetrain import Interpreter
    from litetrain.importers.torch import zoo as torch_zoo
    variables = Interpreter(model_path=model_path).get_variables()  # the file's initial head
    w = torch.nn.Parameter(torch.from_numpy(np.array(variables["head/kernel"])))
    b = torch.nn.Parameter(torch.from_numpy(np.array(variables["head/bias"])))
    ty = torch.from_numpy(y.astype(np.int64))
    if workload == "head":
        tx, features, params = torch.from_numpy(x), (lambda t: t), [w, b]
    else:
        model = torch_zoo.feature_extractor("mobilenet_v2")  # eval mode: batch norm on running statistics
        for p in model.parameters():
            p.requires_grad_(False)
        last = list(model.features[17:].parameters())
        for p in last:
            p.requires_grad_(True)
        pre = torch_zoo.PREPROCESSING["mobilenet_v2"]
        mean = torch.tensor(pre["mean"], dtype=torch.float32).reshape(1, 3, 1, 1)
        std = torch.tensor(pre["std"], dtype=torch.float32).reshape(1, 3, 1, 1)
        tx = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        features, params = (lambda t: model((t - mean) / std)), last + [w, b]
    opt = torch.optim.Adam(params, lr=LR)

    def step():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(torch.nn.functional.linear(features(tx), w, b), ty)
        loss.backward()
        opt.step()
        return loss.item()
    return step


def worker(engine, workload, model_path, args):
    x, y = inputs(workload, args)
    out = {"engine": engine, "workload": workload}
    signature = "train" if workload == "head" else "train_finetune"
    feed = {"bottlenecks" if workload == "head" else "images": x, "labels": y, "learning_rate": np.float32(LR)}
    steps, warmup = (args.head_steps, 5) if workload == "head" else (args.steps, 1)
    try:
        if engine == "litetrain":
            import litetrain as lt
            train = lt.Interpreter(model_path=model_path).get_signature_runner(signature)
            step = lambda: float(train(**feed)["loss"])  # noqa: E731
        elif engine == "pytorch":
            import torch
            if args.threads:
                torch.set_num_threads(args.threads)
            out["version"] = torch.__version__
            step = torch_step(workload, model_path, x, y)
        else:
            import importlib.metadata
            from ai_edge_litert.interpreter import Interpreter, OpResolverType
            out["version"] = importlib.metadata.version("ai-edge-litert")
            kind = OpResolverType.AUTO if engine == "litert_xnnpack" else \
                OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            train = Interpreter(model_path=model_path, num_threads=args.threads or None,
                                experimental_op_resolver_type=kind).get_signature_runner(signature)
            step = lambda: float(np.asarray(train(**feed)["loss"]).reshape(()))  # noqa: E731
        out["first_loss"] = step()
        out["train_ms"] = median_ms(step, steps, warmup)
    except Exception as e:  # a runtime that cannot load or run the file: the table says why
        out["train_error"] = error_text(e)
    print(json.dumps(out))


def prepare(directory):
    import litetrain as lt
    from litetrain.apps.personalize import BaseModel, convert_personalization
    from litetrain.tflite import read_model
    base = BaseModel.from_torch_zoo("mobilenet_v2")
    content = convert_personalization(base, "softmax", num_classes=CLASSES, optimizer=lt.optim.Adam(LR), finetune=2)
    path = os.path.join(directory, "personalize_mobilenet_v2.tflite")
    with open(path, "wb") as f:
        f.write(content)
    program = read_model(content)
    nodes = {s: len(program.functions[program.signature(s).function].nodes) for s in ("train", "train_finetune")}
    trained = sum(int(np.prod(p.value.shape)) for p in base.finetune_params(2))
    return path, len(content), nodes, trained


def run_worker(engine, workload, model_path, args):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", engine, "--workload", workload, "--model",
           model_path, "--steps", str(args.steps), "--head-steps", str(args.head_steps), "--batch", str(args.batch),
           "--images", str(args.images), "--threads", str(args.threads)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:  # LiteRT's builtin kernels take minutes per fine-tuning step at 224x224
        return {"engine": engine, "workload": workload, "train_error": f"no result within {args.timeout} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1][:90]
        return {"engine": engine, "workload": workload, "train_error": f"worker failed: {err}"}
    return json.loads(lines[-1])


def format_table(rows, workloads, titles):
    return train_step_table(rows, "workload", workloads, "step", titles, digits=2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--steps", type=int, default=5, help="timed fine-tuning steps (after 1 warm-up)")
    parser.add_argument("--head-steps", type=int, default=50, help="timed head steps (after 5 warm-up)")
    parser.add_argument("--batch", type=int, default=20, help="bottlenecks per head step")
    parser.add_argument("--images", type=int, default=8, help="224x224 images per fine-tuning step")
    parser.add_argument("--threads", type=int, default=0, help="torch/LiteRT threads (0: their default)")
    parser.add_argument("--timeout", type=int, default=120, help="seconds per engine and step kind")
    parser.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--workload", choices=WORKLOADS, help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.workload, args.model, args)
    workloads = args.workloads.split(",")
    titles = {"head": f"head, batch {args.batch}", "finetune": f"last 2 blocks, {args.images} images"}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path, size, nodes, trained = prepare(tmp)
        for workload in workloads:
            rows += [run_worker(e, workload, path, args) for e in args.engines.split(",")]
    print(f"Personalization train steps, pretrained MobileNetV2 224x224x3 -> 1280 -> {CLASSES} classes, Adam; "
          f"median of {args.head_steps} head / {args.steps} fine-tuning steps after 5 / 1 warm-up; "
          f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}, NumPy {np.__version__}")
    print(f"One .tflite file ({size / 2**20:.1f} MiB, builtin operators only) for litetrain and LiteRT: train "
          f"{nodes['train']} operators, train_finetune {nodes['train_finetune']} operators ({trained:,} base weights "
          "trained); PyTorch eager runs the same pretrained model and initial head.")
    print()
    print(format_table(rows, workloads, titles))
    print()
    for workload in workloads:
        losses = ", ".join(f"{r['engine']} {r['first_loss']:.6f}" for r in rows
                           if r["workload"] == workload and "first_loss" in r)
        print(f"First step's loss, {titles[workload]} (same weights and batch: they should agree): {losses}")


if __name__ == "__main__":
    main()
