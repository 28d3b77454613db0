"""The TensorFlow Lite schema as litetrain reads and writes it: file constants, and access to the
generated `tflite` package (tables, enums, options unions, field slots) shared by the reader, the
writer and `inspect`.
"""
from __future__ import annotations

import functools
import sys

import tflite as _schema  # noqa: F401  (the generated package imports every schema module)

SCHEMA_VERSION = 3
FILE_IDENTIFIER = b"TFL3"


PROGRAM_METADATA = "litetrain_program"
MIN_RUNTIME_METADATA = "min_runtime_version"


MIN_RUNTIME_VERSION = b"2.16.0"  # resource variables and CALL_ONCE need >= 2.6; written as TF does
DATA_ALIGNMENT = 16


PLACEHOLDER_FOR_GREATER_OP_CODES = 127


# field kind -> the schema enum whose member names the IR uses
ENUM_KINDS = {"activation": "ActivationFunctionType", "padding": "Padding",
              "weights_format": "FullyConnectedOptionsWeightsFormat"}


@functools.lru_cache(maxsize=None)
def schema_module(name: str):
    """The generated module tflite.<name> (the package re-exports classes under the same names,
    so `tflite.X` is the class; the builder functions live in the module). Looked up among the
    modules the package already imported: no import is driven by a name."""
    module = sys.modules.get(f"tflite.{name}")
    if module is None:
        raise ValueError(f"the TensorFlow Lite schema has no table or enum {name!r}")
    return module


@functools.lru_cache(maxsize=None)
def enum_members(enum: str) -> dict[str, int]:
    cls = getattr(schema_module(enum), enum)
    return {k: v for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


@functools.lru_cache(maxsize=None)
def enum_names(enum: str) -> dict[int, str]:
    names: dict[int, str] = {}
    for k, v in enum_members(enum).items():
        names.setdefault(v, k)
    return names


def camel(attr: str) -> str:
    """IR attribute name (snake_case) -> the generated accessor's CamelCase name."""
    return "".join(part[:1].upper() + part[1:] for part in attr.split("_"))


@functools.lru_cache(maxsize=None)
def options_union(options: str) -> tuple[int, int]:
    """(1 or 2, type code): which of Operator.builtin_options / builtin_options_2 holds the table."""
    for which, enum in ((1, "BuiltinOptions"), (2, "BuiltinOptions2")):
        code = enum_members(enum).get(options)
        if code:
            return which, code
    raise ValueError(f"options table {options!r} is in neither BuiltinOptions nor BuiltinOptions2 "
                     f"of the TensorFlow Lite schema")


class _SlotRecorder:
    """Stands in for a Builder to learn which vtable slot and default an Add<Field> function uses."""
    slot = default = None

    def __getattr__(self, name):
        def record(slot, value, default=None):
            self.slot, self.default = slot, default
        return record


@functools.lru_cache(maxsize=None)
def field_slot(options: str, attr: str) -> tuple[int, object]:
    """(vtable slot, schema default) of attribute `attr` in options table `options`."""
    adder = getattr(schema_module(options), f"{options}Add{camel(attr)}", None)
    if adder is None:
        raise ValueError(f"options table {options} has no field {camel(attr)} (attribute {attr!r})")
    rec = _SlotRecorder()
    adder(rec, 0)
    return rec.slot, rec.default
