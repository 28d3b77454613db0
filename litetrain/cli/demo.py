"""`litetrain demo [--epochs N] [--batch-size B] [--out DIR] [--no-reference]`: the demo (apps/demo)."""
from __future__ import annotations

import argparse
import os
import sys

from ..apps.demo import Protocol, format_results, run_demo
from ..apps.demo.data import DataError
from ..apps.plot import PlotError, per_epoch, save_curves


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def add_command(commands) -> None:
    defaults = Protocol()
    demo = commands.add_parser(
        "demo", help="train an MLP on Animal MNIST from one .tflite file and compare with PyTorch",
        description="Convert an MLP to one .tflite file, train it on Animal MNIST with litetrain's "
                    "interpreter, save a checkpoint, restore it into a fresh interpreter, evaluate on "
                    "the test split, and compare with PyTorch trained the same way.")
    demo.add_argument("--epochs", type=_positive, default=defaults.epochs,
                      help=f"training epochs (default {defaults.epochs})")
    demo.add_argument("--batch-size", type=_positive, default=defaults.batch_size,
                      help=f"examples per training step (default {defaults.batch_size})")
    demo.add_argument("--out", default="demo_out", metavar="DIR",
                      help="where to write the .tflite file and the checkpoint (default ./demo_out)")
    demo.add_argument("--no-reference", action="store_true", help="skip the PyTorch reference run")
    demo.add_argument("--quiet", action="store_true", help="no progress line")
    demo.add_argument("--plot", metavar="PNG", help="also draw the loss per epoch (litetrain and PyTorch) into PNG")


def run_command(args) -> int:
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        print(f"litetrain demo: --out {args.out} is a file; give a directory (it is created if missing)",
              file=sys.stderr)
        return 2
    try:
        results = run_demo(epochs=args.epochs, batch_size=args.batch_size, out_dir=args.out,
                           reference=not args.no_reference, progress=not args.quiet)
    except DataError as e:
        print(f"litetrain demo: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"litetrain demo: cannot write to {args.out}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(format_results(results))
    if args.plot:
        steps = -(-results["train_examples"] // results["protocol"]["batch_size"])
        try:
            save_curves(args.plot, {"litetrain": per_epoch(results["losses"], steps),
                                    "PyTorch": None if results["reference_losses"] is None else
                                    per_epoch(results["reference_losses"], steps)},
                        title="Animal MNIST MLP: training loss")
        except PlotError as e:
            print(f"litetrain demo: {e}", file=sys.stderr)
            return 2
        print(f"  loss plot               : {args.plot}")
    return 0
