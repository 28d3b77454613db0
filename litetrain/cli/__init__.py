"""The `litetrain` command line: one module per command (demo, inspect, make-trainable,
personalize, import-check), each with `add_command(subparsers)` and `run_command(args) -> exit status`."""
from __future__ import annotations

import argparse
import os
import sys

from ..core import VERSION
from . import demo, federate, import_check, inspect, make_trainable, personalize

COMMANDS = {"demo": demo, "inspect": inspect, "make-trainable": make_trainable, "personalize": personalize,
            "import-check": import_check, "federate": federate}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="litetrain", description="On-device training from one .tflite file.")
    parser.add_argument("--version", action="version", version=f"litetrain {VERSION}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for module in COMMANDS.values():
        module.add_command(commands)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command].run_command(args)
    except BrokenPipeError:  # the reader went away (`litetrain inspect m.tflite | head`): not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
