"""Continual learning on the device: Split Animal-MNIST (five tasks of two classes) learned one task
after the other by one .tflite file, with plain fine-tuning, replay, EWC and L2-SP, beside the same
methods in PyTorch on the same splits.

    python examples/continual_split_mnist.py [--methods finetune,replay,ewc,l2sp] [--epochs 2]
                                             [--ewc 50] [--l2sp 0.01] [--replay 200] [--no-reference]

The file (litetrain.apps.continual.model.continual_file) has a head of ten classes of which the
`grow` signature puts two more in use before each task (class-incremental), EWC and L2-SP as terms
of its `train` graph with their strengths as run-time inputs, and `accumulate_fisher` /
`consolidate` signatures that compute the Fisher diagonal and set the anchor on the device. Replay
keeps a reservoir sample of 200 training images in fixed memory and adds 32 of them to each step.

Printed: per method and framework, the average accuracy over the five tasks after the last one and
the forgetting (the mean drop from each earlier task's best accuracy), class-incremental (argmax
over every class learned so far) and task-aware (argmax over the task's two classes). The PyTorch
twin starts from the file's initial weights and sees the same batches, replay draws and Fisher
examples; tests/test_continual.py (slow) runs this comparison.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from litetrain.apps.continual.benchmark import METHODS, LitetrainLearner, Protocol, format_table, load_split_data, run_method
from litetrain.apps.continual.model import continual_file, mlp


def compare(methods, protocol: Protocol, reference=True, stream=sys.stdout) -> list:
    """[result per (method, framework)] on the same splits; see benchmark.run_method."""
    data = load_split_data()
    results = []
    for method in methods:
        content = continual_file(mlp(protocol.hidden), learning_rate=protocol.learning_rate)
        ours = LitetrainLearner(content)
        initial = ours.weights()
        results.append(run_method(method, ours, data, protocol))
        if reference:
            results.append(_twin(method, initial, data, protocol))
        print(format_table(results[-2 if reference else -1:]).split("\n", 1)[1], file=stream, flush=True)
    return results


def _twin(method, initial, data, protocol):
    import torch

    from litetrain.apps.continual.reference import TorchLearner
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small network: one thread is several times faster than two on 2 cores
    try:
        return run_method(method, TorchLearner(initial, protocol.learning_rate), data, protocol)
    finally:
        torch.set_num_threads(threads)


def main(argv=None) -> int:
    d = Protocol()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated, from " + ", ".join(METHODS))
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--ewc", type=float, default=d.ewc, help=f"EWC strength (default {d.ewc})")
    p.add_argument("--l2sp", type=float, default=d.l2sp, help=f"L2-SP strength (default {d.l2sp})")
    p.add_argument("--replay", type=int, default=d.replay_capacity, help="replay buffer capacity in images")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--no-reference", action="store_true", help="skip the PyTorch twin")
    args = p.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        p.error(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    protocol = replace(d, epochs=args.epochs, ewc=args.ewc, l2sp=args.l2sp, replay_capacity=args.replay,
                       seed=args.seed)
    reference = not args.no_reference
    if reference:
        try:
            import torch  # noqa: F401
        except ImportError:
            print("PyTorch is not installed: the twin is skipped (pip install torch==2.13.0)", file=sys.stderr)
            reference = False
    print(format_table([]))
    results = compare(methods, protocol, reference)
    print("\n" + format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
