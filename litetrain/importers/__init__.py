"""Importers: models made elsewhere, turned into litetrain Modules that trace into the same IR.

`from_torch(model, example_input, ...)` imports a PyTorch nn.Module through `torch.export`
(see litetrain/importers/torch/). torch is imported only when the importer runs.
`from_onnx(model_or_path, ...)` imports an ONNX model (see litetrain/importers/onnx/); the onnx
package is imported only when the importer runs.
"""
from __future__ import annotations


def from_torch(model, example_input=None, *, trainable=None, channels_last=False, name=None, dynamic_batch=True):
    """A litetrain Module computing `model` (see litetrain.importers.torch.from_torch)."""
    from .torch import from_torch as _from_torch
    return _from_torch(model, example_input, trainable=trainable, channels_last=channels_last, name=name,
                       dynamic_batch=dynamic_batch)


def from_onnx(model_or_path, *, trainable=None, channels_last=False, name=None):
    """A litetrain Module computing an ONNX model (see litetrain.importers.onnx.from_onnx)."""
    from .onnx import from_onnx as _from_onnx
    return _from_onnx(model_or_path, trainable=trainable, channels_last=channels_last, name=name)


def __getattr__(name):  # lt.importers.TorchImportError without importing torch (or onnx)
    if name in ("TorchImportError", "TorchModule"):
        from . import torch as _torch_importer
        return getattr(_torch_importer, name)
    if name in ("OnnxImportError", "OnnxModule"):
        from . import onnx as _onnx_importer
        return getattr(_onnx_importer, name)
    raise AttributeError(f"module 'litetrain.importers' has no attribute {name!r}")


__all__ = ["from_onnx", "from_torch", "OnnxImportError", "OnnxModule", "TorchImportError", "TorchModule"]
