"""`litetrain inspect FILE`: a .tflite file's signatures, variables, ops, and who can run it."""
from __future__ import annotations

import json
import sys

from ..tflite.inspect import format_inspection, inspect_model


def add_command(commands) -> None:
    p = commands.add_parser("inspect", help="describe a .tflite file: signatures, variables, ops, who can run it",
                            description="Print a .tflite file's signatures (inputs and outputs), variables "
                                        "(shapes, trainable flags), op counts by type, custom ops, and whether "
                                        "stock LiteRT and litetrain can run it.")
    p.add_argument("file", help="the .tflite file")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def run_command(args) -> int:
    try:
        info = inspect_model(args.file)
    except OSError as e:
        print(f"litetrain inspect: cannot read {args.file}: {e.strerror or e}", file=sys.stderr)
        return 2
    except ValueError as e:  # InvalidModelError: a malformed or foreign file
        print(f"litetrain inspect: {args.file}: {e}", file=sys.stderr)
        return 2
    print(json.dumps(info, indent=2) if args.json else format_inspection(info, args.file))
    return 0
