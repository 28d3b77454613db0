"""`litetrain import-check MODEL.pt2`: every aten op of a PyTorch model, supported by the importer or not."""
from __future__ import annotations

import json
import sys


def add_command(commands) -> None:
    p = commands.add_parser("import-check", help="list a PyTorch model's aten ops, supported by the importer or not",
                            description="Read a program saved with torch.export.save (a .pt2 file) and list "
                                        "every aten op it calls: how often, whether litetrain's PyTorch importer "
                                        "translates it, the torch modules that call it, and what to do about "
                                        "the unsupported ones. Nothing is converted. Exit status 0 when every "
                                        "op is supported, 1 when some are not, 2 when the file cannot be read.")
    p.add_argument("file", help="the .pt2 file (torch.export.save(torch.export.export(model, inputs), path))")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def run_command(args) -> int:
    try:
        import torch  # noqa: F401
    except ImportError:
        print("litetrain import-check: reading a .pt2 file needs PyTorch: pip install torch", file=sys.stderr)
        return 2
    from ..importers.torch.coverage import check_import
    try:
        report = check_import(args.file)
    except OSError as e:
        print(f"litetrain import-check: cannot read {args.file}: {e.strerror or e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001  (not a torch.export program)
        print(f"litetrain import-check: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format())
    return 0 if report.supported else 1
