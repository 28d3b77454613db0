"""What the ONNX importer's handlers share: the graph's nodes as plain Python, the values a handler gets
and returns, sizes known only at run time, and the handler table (see litetrain/importers/onnx/__init__.py).

A handler is `fn(ctx, node, *inputs) -> value or list of values`, one per ONNX op type. Its inputs are
(None for an absent optional input):
- `np.ndarray`: a constant known at import (initializers that are not variables, Constant nodes, and
  whatever the importer computed from them: shapes, axes, pads);
- `Dims`: a 1-D (or 0-d) integer tensor whose entries are ints or int32 scalars computed at run time
  (what Shape gives for a tensor with an unknown batch; Gather, Concat, Slice, arithmetic keep it so);
- `V`: a traced tensor, and whether it holds a 4-D NCHW tensor as NHWC (TFLite's image layout);
- `P`: a variable (a Param or Buffer) and the layout its value is stored in.
`ctx.plain(v)` gives any of them as a tensor in ONNX's dim order, `ctx.nhwc(v)` as NHWC, `ctx.const(v)`
as an ndarray when it is known at import (else None).
"""
from __future__ import annotations

import numpy as np

from ... import ops


class OnnxImportError(Exception):
    """An ONNX model (or one node of its graph) that the importer cannot translate."""


class V:
    """An activation: a traced tensor and whether it holds a 4-D NCHW tensor as NHWC."""

    def __init__(self, t, nhwc=False):
        self.t, self.nhwc = t, bool(nhwc)


class P:
    """A variable: its State and the layout its value is stored in ("onnx", "ohwi" or "dw")."""

    def __init__(self, state, layout="onnx"):
        self.state, self.layout = state, layout


class Dims:
    """An integer vector (or scalar) whose entries are Python ints or int32 scalar tensors (sizes known
    at run time only)."""

    def __init__(self, entries, scalar=False):
        self.entries = list(entries)
        self.scalar = bool(scalar)

    @property
    def known(self):
        return all(isinstance(e, (int, np.integer)) for e in self.entries)

    def array(self):
        a = np.asarray([int(e) for e in self.entries], np.int64)
        return a.reshape(()) if self.scalar else a

    def tensor(self, fb):
        """The int32 tensor (built from SHAPE at run time)."""
        if self.known:
            return fb.const(self.array().astype(np.int32))
        if self.scalar:
            return self.entries[0]
        parts = [ops.reshape(e, [1]) if hasattr(e, "fb") else fb.const(np.int32([e])) for e in self.entries]
        return ops.concat(parts, 0)


def is_tensor(v):
    return hasattr(v, "fb")


class Node:
    """One ONNX node, read once: op type, names of its inputs ("" for an absent one) and outputs, attributes
    as Python values (tensors as ndarrays, graphs as GraphProtos), and where it came from."""

    def __init__(self, proto, attrs, scope=""):
        self.op = proto.op_type
        self.domain = proto.domain or ""
        self.name = proto.name or (proto.output[0] if proto.output else proto.op_type)
        self.inputs = list(proto.input)
        self.outputs = list(proto.output)
        self.attrs = attrs
        self.scope = scope  # the exporter's module path, when it recorded one

    def attr(self, name, default=None):
        return self.attrs.get(name, default)

    def where(self):
        scope = f", module {self.scope}" if self.scope and self.scope not in self.name else ""
        return f"ONNX {self.op} node {self.name!r}{scope}"

    def refuse(self, what, todo=""):
        return OnnxImportError(f"{self.where()}: {what}" + (f"; {todo}" if todo else ""))


# -- the handler table ----------------------------------------------------------------------------------------
HANDLERS: dict = {}


def handles(*op_types):
    def register(fn):
        for op in op_types:
            HANDLERS[op] = fn
        return fn
    return register


# -- small helpers shared by the handlers ----------------------------------------------------------------------
# NCHW dim -> NHWC axis, for a 4-D tensor held as NHWC
TO_NHWC = (0, 3, 1, 2)


def axis_of(v, axis, rank):
    """ONNX axis `axis` of a value of rank `rank` as an axis of the tensor that holds it."""
    axis = int(axis) % rank
    return TO_NHWC[axis] if isinstance(v, V) and v.nhwc else axis


def size_of(t, dim):
    """Dim `dim` of tensor t: an int when known while tracing, else an int32 scalar from SHAPE."""
    d = t.shape[dim]
    if d is not None:
        return int(d)
    return ops.gather(ops.shape_of(t), t.fb.const(np.int32(dim % t.ndim)))


def same_pads(size, k, stride, dilation):
    """TFLite SAME's (before, after) padding of one spatial dim."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (k - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def auto_pads(node, hw, kernel, strides, dilations):
    """((top, bottom), (left, right)): ONNX's `pads` [begins..., ends...] or what `auto_pad` asks for."""
    auto = node.attr("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    n = len(kernel)
    if auto in ("NOTSET", ""):
        pads = list(node.attr("pads", [0] * (2 * n)))
        return tuple((int(pads[i]), int(pads[i + n])) for i in range(n))
    if auto == "VALID":
        return tuple((0, 0) for _ in range(n))
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        if None in hw:
            raise node.refuse(f"auto_pad={auto} needs the spatial size known", "give the input's size")
        out = []
        for s, k, st, d in zip(hw, kernel, strides, dilations):
            lo, hi = same_pads(s, k, st, d)
            out.append((lo, hi) if auto == "SAME_UPPER" else (hi, lo))
        return tuple(out)
    raise node.refuse(f"auto_pad={auto!r} is not an ONNX padding")


def float_tensor(t):
    return t if t.dtype in ("float32", "float64") else ops.cast(t, "float32")
