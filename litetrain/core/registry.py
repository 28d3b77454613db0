"""The op registry: one definition per op holds shape inference, kernel, gradient and file mapping.

An op is registered with `defop`. Its definition is the single place that says
1. `infer(attrs, inputs) -> [(dtype, shape), ...]`: output dtypes and shapes (None = unknown dim),
   from the inputs' TensorInfo (dtype, shape, and constant data when known);
2. `kernel(*arrays, **attrs) -> array | tuple`: the NumPy implementation
   (stateful ops get the runtime context first: `kernel(ctx, *arrays, **attrs)`);
3. `vjp(inputs, outputs, grads, **attrs) -> [grad or None per input]`: the gradient rule,
   written with other registered ops on symbolic tensors, or NOT_DIFFERENTIABLE;
4. `tflite`: a `Builtin` (operator code, options table and which attributes it carries)
   or a `Custom` op name.
An op may also say `inplace=(input positions)`: its kernel takes `out=` and may write its result
into the buffer of one of those inputs when it has the output's shape and dtype (the runtime
offers one only when nothing else holds it). An op whose output size comes from tensor values
(FILL's dims, TILE's multiples, RANGE's bounds, ...) says `allocates(*arrays, **attrs) -> (dtype,
shape, bytes)`: what its kernel would allocate on those inputs (output and working memory), computed
without allocating it, so that the runtime can hold a call to its memory budget first.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

NOT_DIFFERENTIABLE = "not differentiable"


@dataclass(frozen=True)
class Builtin:
    """How an op is written as a TensorFlow Lite builtin operator.

    `options` names the options table (e.g. "AddOptions"); `fields` maps each IR attribute to
    its kind in that table: "int", "float", "bool", "str", "ints", "activation" (an
    ActivationFunctionType name), "padding" (a Padding name) or "dtype" (a TensorType name).
    `version` is the operator version written to the file."""
    code: str
    options: str | None = None
    fields: dict = field(default_factory=dict)
    version: int = 1


@dataclass(frozen=True)
class Custom:
    """An op written as a TensorFlow Lite custom op; its attributes go in custom_options
    as a FlexBuffer map, unless the op family has its own options format: then `decode(bytes) ->
    attrs` reads it and `encode(attrs) -> bytes` writes it (e.g. TensorFlow's Flex ops, whose
    options hold a serialized NodeDef)."""
    name: str
    decode: Callable | None = None
    encode: Callable | None = None


@dataclass
class OpDef:
    name: str
    infer: Callable
    kernel: Callable
    vjp: Any  # callable or NOT_DIFFERENTIABLE
    tflite: Builtin | Custom
    attrs: dict = field(default_factory=dict)  # attribute name -> default value
    stateful: bool = False  # has side effects or reads state: never folded, merged or dropped
    num_inputs: tuple = (0, None)  # (min, max) number of inputs; max None = any
    inplace: tuple = ()  # inputs whose buffer the kernel may write its result into (kernel(..., out=))
    allocates: Callable | None = None  # value-sized ops: (*arrays, **attrs) -> (dtype, shape, bytes) before running

    def check_attrs(self, attrs: dict) -> dict:
        unknown = set(attrs) - set(self.attrs)
        if unknown:
            raise ValueError(f"op {self.name!r} has no attribute(s) {sorted(unknown)}; "
                             f"it takes {sorted(self.attrs) or 'none'}")
        return {**self.attrs, **attrs}


OPS: dict[str, OpDef] = {}


def defop(name, *, infer, kernel, vjp, tflite, attrs=None, stateful=False, num_inputs=(0, None), inplace=(),
          allocates=None):
    """Register an op. See the module docstring for what each part means."""
    if name in OPS:
        raise ValueError(f"op {name!r} is registered twice")
    if vjp is None:
        raise ValueError(f"op {name!r}: give a gradient rule or NOT_DIFFERENTIABLE")
    OPS[name] = OpDef(name, infer, kernel, vjp, tflite, dict(attrs or {}), stateful, num_inputs, tuple(inplace),
                      allocates)
    return OPS[name]


def get_op(name: str) -> OpDef:
    try:
        return OPS[name]
    except KeyError:
        hint = "" if OPS else " (no op is registered: importing litetrain.ops registers the op families)"
        raise KeyError(f"unknown op {name!r}{hint}") from None
