"""The intermediate representation: a Program of variables, functions (subgraphs) and signatures.

A Function mirrors a TensorFlow Lite subgraph: a table of tensors (name, dtype, shape with None
for unknown dimensions, optional constant data) and nodes in execution order whose inputs and
outputs are indices into that table. Lowering to the file is therefore almost the identity.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# name -> (numpy dtype or None, TensorFlow Lite TensorType code)
DTYPES: dict[str, tuple[Any, int]] = {
    "float32": (np.float32, 0),
    "float16": (np.float16, 1),
    "int32": (np.int32, 2),
    "uint8": (np.uint8, 3),
    "int64": (np.int64, 4),
    "string": (np.object_, 5),
    "bool": (np.bool_, 6),
    "int16": (np.int16, 7),
    "int8": (np.int8, 9),
    "float64": (np.float64, 10),
    "resource": (None, 13),
    "variant": (None, 14),
    "uint32": (np.uint32, 15),
    "uint16": (np.uint16, 16),
}
DTYPE_FROM_CODE = {code: name for name, (_, code) in DTYPES.items()}
FLOAT_DTYPES = ("float16", "float32", "float64")


def dtype_name(dtype) -> str:
    """Normalise a dtype given as a name, a NumPy dtype or a NumPy scalar type to our name."""
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; known: {', '.join(DTYPES)}")
        return dtype
    dt = np.dtype(dtype)
    if dt.kind in "SUO":
        return "string"
    name = dt.name
    if name not in DTYPES:
        raise ValueError(f"dtype {dt} is not supported")
    return name


def numpy_dtype(name: str):
    np_type = DTYPES[name][0]
    if np_type is None:
        raise ValueError(f"dtype {name!r} has no NumPy equivalent")
    return np.dtype(np_type)


Shape = tuple  # of int | None


def format_shape(shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


@dataclass(frozen=True)
class Quantization:
    """How an integer tensor stands for real numbers: real = scale * (q - zero_point), with one
    scale and zero point for the tensor, or one per index of dim `axis` (per channel)."""
    scale: tuple      # of float (float32 values)
    zero_point: tuple  # of int
    axis: int = 0

    def as_attr(self) -> tuple:
        """The plain-value form quantized ops carry in their `quantization` attribute."""
        return (tuple(self.scale), tuple(self.zero_point), int(self.axis))

    @classmethod
    def from_attr(cls, value) -> "Quantization | None":
        return None if value is None else cls(tuple(value[0]), tuple(value[1]), int(value[2]))


@dataclass
class TensorInfo:
    """One tensor of a function: a value that flows between nodes, or a constant."""
    name: str
    dtype: str
    shape: Shape
    data: np.ndarray | None = None  # constant data; None for computed tensors
    quant: Quantization | None = None  # an integer tensor's quantization (read from or written to a file)

    def __repr__(self):
        const = " const" if self.data is not None else ""
        q = f" q(scale={self.quant.scale[0]:.4g}{'...' if len(self.quant.scale) > 1 else ''}, " \
            f"zero={self.quant.zero_point[0]})" if self.quant is not None else ""
        return f"{self.name}: {self.dtype}{format_shape(self.shape)}{const}{q}"


@dataclass
class Node:
    """One operation: op name from the registry, attributes as plain values, tensor indices.

    An input index of -1 marks an optional input that is absent (as in TensorFlow Lite)."""
    op: str
    inputs: list[int]
    outputs: list[int]
    attrs: dict = field(default_factory=dict)
    where: str = ""  # where it was traced (file:line) or read from


@dataclass
class Function:
    name: str
    tensors: list[TensorInfo] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)

    def add_tensor(self, name, dtype, shape, data=None) -> int:
        self.tensors.append(TensorInfo(name, dtype, tuple(shape), data))
        return len(self.tensors) - 1

    def __str__(self):
        lines = [f"function {self.name}({', '.join(self._t(i) for i in self.inputs)}):"]
        for node in self.nodes:
            outs = ", ".join(self._t(i) for i in node.outputs)
            ins = ", ".join("-" if i < 0 else self.tensors[i].name for i in node.inputs)
            attrs = "".join(f", {k}={v!r}" for k, v in node.attrs.items())
            lines.append(f"  {outs} = {node.op}({ins}{attrs})")
        lines.append(f"  return {', '.join(self.tensors[i].name for i in self.outputs)}")
        return "\n".join(lines)

    def _t(self, i):
        return repr(self.tensors[i])


@dataclass
class Variable:
    """A resource variable of the program, keyed by its path (the file's shared_name)."""
    name: str
    dtype: str
    shape: Shape
    initial: np.ndarray
    trainable: bool = False
    kind: str = "buffer"  # "param", "buffer" or "slot"


@dataclass
class Signature:
    """A named entry point: a function and the names of its inputs and outputs."""
    key: str
    function: int
    inputs: dict[str, int]   # input name -> tensor index in the function
    outputs: dict[str, int]  # output name -> tensor index in the function
    defaults: dict[str, np.ndarray] = field(default_factory=dict)  # optional inputs


@dataclass
class Program:
    functions: list[Function] = field(default_factory=list)
    signatures: list[Signature] = field(default_factory=list)
    variables: dict[str, Variable] = field(default_factory=dict)
    init_function: int | None = None
    metadata: dict[str, bytes] = field(default_factory=dict)
    description: str = "litetrain"

    def signature(self, key: str) -> Signature:
        for sig in self.signatures:
            if sig.key == key:
                return sig
        known = ", ".join(repr(s.key) for s in self.signatures) or "none"
        raise KeyError(f"no signature {key!r}; the model has: {known}")

    def __str__(self):
        parts = [f"variables ({len(self.variables)}):"]
        for v in self.variables.values():
            parts.append(f"  {v.name}: {v.dtype}{format_shape(v.shape)} {v.kind}"
                         f"{' trainable' if v.trainable else ''}")
        for sig in self.signatures:
            parts.append(f"signature {sig.key} -> function {sig.function}")
        parts.extend(str(f) for f in self.functions)
        return "\n".join(parts)
