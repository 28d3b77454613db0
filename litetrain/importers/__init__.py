"""Importers: models made elsewhere, turned into litetrain Modules that trace into the same IR.

`from_torch(model, example_input, ...)` imports a PyTorch nn.Module through `torch.export`
(see litetrain/importers/torch/). torch is imported only when the importer runs.
"""
from __future__ import annotations


def from_torch(model, example_input, *, trainable=None, channels_last=False, name=None):
    """A litetrain Module computing `model` (see litetrain.importers.torch.from_torch)."""
    from .torch import from_torch as _from_torch
    return _from_torch(model, example_input, trainable=trainable, channels_last=channels_last, name=name)


def __getattr__(name):  # lt.importers.TorchImportError without importing torch
    if name in ("TorchImportError", "TorchModule"):
        from . import torch as _torch_importer
        return getattr(_torch_importer, name)
    raise AttributeError(f"module 'litetrain.importers' has no attribute {name!r}")


__all__ = ["from_torch", "TorchImportError", "TorchModule"]
