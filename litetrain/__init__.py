"""litetrain: on-device training for Python. Author a model once, convert it to one .tflite file
with train/infer/save/restore signatures, and run any of them with NumPy only.

The package is layered (ARCHITECTURE.md): core, ops, tflite, runtime, frontend, models, importers,
apps, cli, each importing only the ones before it. This module is the public face over all of
them; a name is imported from its layer the first time it is used, so `import litetrain` stays
light and `import litetrain.ops` loads no file format and no application.
"""
from __future__ import annotations

from .core import VERSION as __version__

# public name -> (module, attribute); attribute None: the module itself
_PUBLIC = {
    "Module": ("litetrain.frontend.module", "Module"), "Param": ("litetrain.frontend.module", "Param"),
    "Buffer": ("litetrain.frontend.module", "Buffer"), "TensorSpec": ("litetrain.frontend.module", "TensorSpec"),
    "signature": ("litetrain.frontend.module", "signature"),
    "convert": ("litetrain.frontend.convert", "convert"),
    "trace_program": ("litetrain.frontend.convert", "trace_program"),
    "gradients": ("litetrain.core.autodiff", "gradients"), "TraceError": ("litetrain.core.trace", "TraceError"),
    "Interpreter": ("litetrain.runtime.interpreter", "Interpreter"),
    "SignatureRunner": ("litetrain.runtime.interpreter", "SignatureRunner"),
    "SignatureError": ("litetrain.runtime.interpreter", "SignatureError"),
    "ExecutionError": ("litetrain.runtime.executor", "ExecutionError"),
    "NonFiniteError": ("litetrain.runtime.executor", "NonFiniteError"),
    "LoopLimitError": ("litetrain.runtime.executor", "LoopLimitError"),
    "MemoryBudgetError": ("litetrain.runtime.executor", "MemoryBudgetError"),
    "CheckpointError": ("litetrain.ops.checkpoint", "CheckpointError"),
    "InvalidModelError": ("litetrain.tflite.reader", "InvalidModelError"),
    "UnsupportedOpError": ("litetrain.tflite.reader", "UnsupportedOpError"),
    "make_trainable": ("litetrain.importers.tflite", "make_trainable"),
    "MakeTrainableError": ("litetrain.importers.tflite", "MakeTrainableError"),
    "BaseModel": ("litetrain.apps.personalize", "BaseModel"),
    "Preprocessing": ("litetrain.apps.personalize", "Preprocessing"),
    "PersonalizeError": ("litetrain.apps.personalize", "PersonalizeError"),
    "convert_personalization": ("litetrain.apps.personalize", "convert_personalization"),
    "Personalizer": ("litetrain.apps.personalize", "Personalizer"),
    "ops": ("litetrain.ops", None), "nn": ("litetrain.frontend.nn", None),
    "losses": ("litetrain.frontend.losses", None), "optim": ("litetrain.frontend.optim", None),
    "models": ("litetrain.models", None), "importers": ("litetrain.importers", None),
    "heads": ("litetrain.apps.personalize.heads", None),
}

__all__ = sorted(_PUBLIC)


def __getattr__(name):
    try:
        module, attribute = _PUBLIC[name]
    except KeyError:
        raise AttributeError(f"module 'litetrain' has no attribute {name!r}") from None
    value = _module(module)
    if attribute is not None:
        value = getattr(value, attribute)
    globals()[name] = value  # later lookups do not come here
    return value


def _module(name):
    """The module `name` of _PUBLIC, imported (statically: no module is imported by a computed name)."""
    if name == "litetrain.frontend.module":
        from .frontend import module as found
    elif name == "litetrain.frontend.convert":
        from .frontend import convert as found
    elif name == "litetrain.core.autodiff":
        from .core import autodiff as found
    elif name == "litetrain.core.trace":
        from .core import trace as found
    elif name == "litetrain.runtime.interpreter":
        from .runtime import interpreter as found
    elif name == "litetrain.runtime.executor":
        from .runtime import executor as found
    elif name == "litetrain.ops.checkpoint":
        from .ops import checkpoint as found
    elif name == "litetrain.tflite.reader":
        from .tflite import reader as found
    elif name == "litetrain.importers.tflite":
        from .importers import tflite as found
    elif name == "litetrain.apps.personalize":
        from .apps import personalize as found
    elif name == "litetrain.ops":
        import litetrain.ops as found  # (not "from . import": that would ask this __getattr__ first)
    elif name == "litetrain.frontend.nn":
        from .frontend import nn as found
    elif name == "litetrain.frontend.losses":
        from .frontend import losses as found
    elif name == "litetrain.frontend.optim":
        from .frontend import optim as found
    elif name == "litetrain.models":
        import litetrain.models as found  # (not "from . import": that would ask this __getattr__ first)
    elif name == "litetrain.importers":
        import litetrain.importers as found  # (not "from . import": that would ask this __getattr__ first)
    elif name == "litetrain.apps.personalize.heads":
        from .apps.personalize import heads as found
    else:
        raise AttributeError(name)
    return found


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
