"""What the PyTorch importer supports in a given model, before anything is converted.

    report = check_import(model, example_input)      # or an ExportedProgram, or a .pt2 file's path
    print(report.format())                           # every aten op: count, supported or not, modules
    report.supported                                 # True when from_torch will translate every op

`litetrain import-check model.pt2` prints the same for a file saved with torch.export.save. The
refusal of an unsupported op (TorchImportError from from_torch) is `unsupported_message`: the op, the
torch modules that call it and what to do.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from . import aten_conv, aten_nn, aten_rnn, aten_shape  # noqa: F401  (register their handlers)
from .aten import HANDLERS, TorchImportError, _aten_name, _where
from .exporting import examples, export

# what to do instead, for ops people meet (the rest get the general advice)
_HINTS = {
    "nonzero": "its output size depends on the data: use a mask with torch.where instead",
    "index_put": "an in-place write into a tensor: build the result with torch.where or torch.cat",
    "cumsum": "write it as a matmul with a triangular matrix of ones (torch.tril)",
    "topk": "keep it outside the model: return the scores and pick the top k in NumPy",
    "sort": "keep it outside the model: return the values and sort them in NumPy",
    "argmax": "training needs no argmax: return the logits and take argmax outside (or in an infer signature "
              "with lt.ops.argmax)",
    "max": "for a maximum over a dim use torch.amax (the values only)",
    "conv3d": "write it as 2-D convolutions, or reshape the depth into the batch",
    "lstm": "LSTM projections (proj_size) are not supported",
}
GENERAL = ("rewrite that part with supported ops (`litetrain import-check` lists them for a model), or compute "
           "it outside the model")


@dataclass
class OpUse:
    """One aten op of a model: how often it is called, whether the importer translates it, and by whom."""
    op: str
    count: int = 0
    supported: bool = True
    modules: list = field(default_factory=list)


@dataclass
class ImportCheck:
    model: str
    ops: list  # OpUse, in order of first use

    @property
    def supported(self) -> bool:
        return all(u.supported for u in self.ops)

    @property
    def unsupported(self) -> list:
        return [u for u in self.ops if not u.supported]

    def to_dict(self) -> dict:
        return {"model": self.model, "supported": self.supported,
                "ops": [{"op": u.op, "count": u.count, "supported": u.supported, "modules": u.modules}
                        for u in self.ops]}

    def format(self) -> str:
        width = max([len(u.op) for u in self.ops] + [10])
        lines = [f"{self.model}: {len(self.ops)} distinct aten ops, "
                 + ("all supported" if self.supported else f"{len(self.unsupported)} unsupported")]
        for u in self.ops:
            where = ", ".join(u.modules[:3]) + (f", ... ({len(u.modules)} modules)" if len(u.modules) > 3 else "")
            lines.append(f"  {'ok  ' if u.supported else 'NO  '} {u.op:<{width}} x{u.count:<4} {where}")
        for u in self.unsupported:
            lines.append(f"{u.op}: {_advice(u.op)}")
        return "\n".join(lines)


def _advice(target) -> str:
    return _HINTS.get(_aten_name(target) if not isinstance(target, str) else _short(target), GENERAL)


def _short(op: str) -> str:
    parts = op.split(".")
    return parts[1].rstrip("_") if op.startswith("aten.") and len(parts) > 1 else op


def scan(exported, name="model") -> ImportCheck:
    """Every call of the exported graph, grouped by op (the graph is only read)."""
    uses: dict[str, OpUse] = {}
    for node in exported.graph_module.graph.nodes:
        if node.op != "call_function":
            continue
        key = str(node.target) if str(node.target).startswith("aten.") else _aten_name(node.target)
        use = uses.setdefault(key, OpUse(key, supported=_aten_name(node.target) in HANDLERS))
        use.count += 1
        where = _where(node)
        if where not in use.modules:
            use.modules.append(where)
    return ImportCheck(name, list(uses.values()))


def check_import(model, example_input=None, *, dynamic_batch=True) -> ImportCheck:
    """The aten ops of `model` (an nn.Module with its example input, an ExportedProgram, or the path of a
    .pt2 file written by torch.export.save), each marked supported or not. Nothing is converted."""
    try:
        import torch
    except ImportError:
        raise ImportError("checking a torch model needs PyTorch: pip install torch") from None
    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        path = str(model)
        try:
            exported = torch.export.load(path)
        except FileNotFoundError:
            raise
        except Exception as e:
            raise TorchImportError(f"{path} is not a program saved by torch.export.save: {e}") from e
        return scan(exported, path)
    if isinstance(model, torch.export.ExportedProgram):
        return scan(model, "exported program")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"check_import takes a torch.nn.Module, an ExportedProgram or a .pt2 path, got "
                        f"{type(model).__name__}")
    if example_input is None:
        raise TypeError("check_import needs example_input to export an nn.Module")
    exported, _ = export(model, examples(torch, example_input), dynamic_batch)
    return scan(exported, type(model).__name__)


def unsupported_message(nodes) -> str:
    """The refusal of unsupported graph nodes: the first op, the modules calling it, what to do, and the
    other unsupported ops."""
    first = nodes[0]
    where = sorted({_where(n) for n in nodes if n.target == first.target})
    others = sorted({str(n.target) for n in nodes} - {str(first.target)})
    return (f"the torch importer does not support {first.target} (called in {', '.join(where[:3])}"
            f"{', ...' if len(where) > 3 else ''}): {_advice(first.target)}"
            + (f"; also unsupported: {others}" if others else ""))
