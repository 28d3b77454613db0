"""Exporting a torch model for the importer: torch.export with a dynamic batch where the model allows it."""
from __future__ import annotations

import numpy as np

from .aten import TorchImportError

DTYPES = {"torch.float32": "float32", "torch.int64": "int32", "torch.int32": "int32", "torch.bool": "bool"}


def examples(torch, example_input):
    """The example inputs as a tuple of torch tensors, checked."""
    items = tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)
    out = []
    for k, v in enumerate(items):
        if isinstance(v, np.ndarray):
            v = torch.from_numpy(v)
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"example_input must be a torch tensor or NumPy array (or a tuple of them), got "
                            f"{type(v).__name__}" + (f" for input {k}" if len(items) > 1 else ""))
        if str(v.dtype) not in DTYPES:
            raise TypeError(f"example_input{f' {k}' if len(items) > 1 else ''} must be float32, int64, int32 or "
                            f"bool, got {v.dtype}")
        out.append(v)
    return tuple(out)


def export(model, examples, dynamic_batch=True):
    """(torch.export's program of `model.eval()` on `examples`, the example batch if the sizes are fixed
    or None if dim 0 is dynamic). Dim 0 of the inputs whose size is the first input's is one dynamic
    size, unless torch cannot export it so (then the example's sizes are fixed)."""
    import torch
    was_training = model.training
    batch = int(examples[0].shape[0]) if examples[0].dim() else None
    try:
        model.eval()
        if dynamic_batch and batch is not None:
            try:
                return _export_dynamic(torch, model, examples, batch), None
            except Exception:  # noqa: BLE001  (a model that fixes its batch: export it as it is)
                pass
        return torch.export.export(model, examples), batch
    except Exception as e:
        raise TorchImportError(f"torch.export could not export {type(model).__name__}: {e}") from e
    finally:
        model.train(was_training)


def _export_dynamic(torch, model, examples, batch):
    dim = torch.export.Dim("batch")
    batched = [e.dim() > 0 and e.shape[0] == batch for e in examples]
    if batch == 1:  # torch.export fixes sizes of 1: export on the example repeated to a batch of 2
        examples = tuple(torch.cat([e, e]) if b else e for e, b in zip(examples, batched))
    shapes = tuple({0: dim} if b else None for b in batched)
    return torch.export.export(model, examples, dynamic_shapes=shapes)
