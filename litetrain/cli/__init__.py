"""The `litetrain` command line: one module per command (demo, inspect, make-trainable,
personalize), each with `add_command(subparsers)` and `run_command(args) -> exit status`."""
from __future__ import annotations

import argparse
import sys

from . import demo, inspect, make_trainable, personalize

COMMANDS = {"demo": demo, "inspect": inspect, "make-trainable": make_trainable, "personalize": personalize}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="litetrain", description="On-device training from one .tflite file.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for module in COMMANDS.values():
        module.add_command(commands)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command].run_command(args)


if __name__ == "__main__":
    sys.exit(main())
