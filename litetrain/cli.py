"""The `litetrain` command line: `litetrain demo [--epochs N] [--batch-size B] [--out DIR] [--no-reference]`."""
from __future__ import annotations

import argparse
import sys


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from .demo import Protocol
    defaults = Protocol()
    parser = argparse.ArgumentParser(prog="litetrain", description="On-device training from one .tflite file.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
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
    from .inspect import add_command as add_inspect
    from .make_trainable import add_command as add_make_trainable  # (lt.make_trainable is the function)
    from .personalize_cli import add_command as add_personalize
    add_inspect(commands)
    add_make_trainable(commands)
    add_personalize(commands)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "inspect":
        from .inspect import run_command
        return run_command(args)
    if args.command == "personalize":
        from .personalize_cli import run_command
        return run_command(args)
    if args.command == "make-trainable":
        from .make_trainable import run_command
        return run_command(args)
    if args.command == "demo":
        from .data import DataError
        from .demo import format_results, run_demo
        try:
            results = run_demo(epochs=args.epochs, batch_size=args.batch_size, out_dir=args.out,
                               reference=not args.no_reference, progress=not args.quiet)
        except DataError as e:
            print(f"litetrain demo: {e}", file=sys.stderr)
            return 2
        print(format_results(results))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
