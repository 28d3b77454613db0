"""Quantization parameters in the file: reading a tensor's (scale, zero point, quantized dimension),
giving each node whose tensors are quantized its quantized op, and the parameters the writer stores
on each tensor.

In the file, quantization lives on tensors; in the IR, a quantized op carries its tensors'
parameters in its `quantization` attribute (ops/quantize.py), so kernels, tracing and make_trainable
see them, and TensorInfo.quant keeps what the file said. The writer takes a tensor's parameters
from TensorInfo.quant, else from the quantized ops that read or write it, passed on through the
ops that only move values (RESHAPE, TRANSPOSE, ...).
"""
from __future__ import annotations

import numpy as np

from ..core.ir import Function, Node, Quantization
from ..ops.quantization import QUANT_DTYPES, QUANTIZED, TRANSPARENT
from .schema import schema_module

MAX_CHANNELS = 1 << 20
# ops that read quantized integers as they are: casts, indices of maxima, variable handles, control flow
PASSES_INTEGERS = TRANSPARENT | {"cast", "arg_max", "arg_min", "var_handle", "call_once", "while", "if", "densify",
                                 "quantize", "dequantize"}
INTEGER_DTYPES = QUANT_DTYPES + ("int32", "int64")


def read_tensor_quantization(reader, t, dtype: str, dims: tuple) -> Quantization | None:
    """The tensor's affine quantization, checked against its shape; None when it has none (or is a
    float tensor, whose parameters TensorFlow Lite ignores)."""
    q = t.Quantization()
    if q is None:
        return None
    if q.DetailsType():
        reader.fail("custom quantization details are not supported (only scale and zero point)")
    n = reader.count(q.ScaleLength(), "quantization scale") if not q.ScaleIsNone() else 0
    nz = reader.count(q.ZeroPointLength(), "quantization zero point", 8) if not q.ZeroPointIsNone() else 0
    if n == 0 and nz == 0:
        return None  # only calibration ranges (min/max): no meaning at run time
    if dtype not in INTEGER_DTYPES:
        return None
    scales, zeros = q.ScaleAsNumpy().astype(np.float32), q.ZeroPointAsNumpy().astype(np.int64)
    axis = int(q.QuantizedDimension())
    if n != nz and not (nz == 1 or (nz == 0 and n >= 1)):
        reader.fail(f"quantization has {n} scales but {nz} zero points")
    if nz == 0:
        zeros = np.zeros(n, np.int64)
    elif nz == 1 and n > 1:
        zeros = np.repeat(zeros, n)
    if n > MAX_CHANNELS or not np.all(np.isfinite(scales)) or np.any(scales < 0):
        reader.fail(f"quantization scales must be finite and non-negative ({n} given)")
    if n > 1 and (not 0 <= axis < len(dims) or dims[axis] not in (None, n)):
        reader.fail(f"{n} per-channel scales along dim {axis} of a tensor of shape {list(dims)}")
    lo, hi = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}.get(dtype, (-2 ** 63, 2 ** 63 - 1))
    if zeros.size and (zeros.min() < lo or zeros.max() > hi):
        reader.fail(f"a zero point is outside the {dtype} range")
    return Quantization(tuple(float(s) for s in scales), tuple(int(z) for z in zeros), axis if n > 1 else 0)


def _entry(fn: Function, index: int):
    if index < 0 or fn.tensors[index].quant is None:
        return None
    return fn.tensors[index].quant.as_attr()


def quantized_node(fn: Function, node: Node) -> str | None:
    """Give `node` its quantized op and `quantization` attribute when its tensors are quantized.
    Returns None, or what cannot run (e.g. "quantized RELU (int8)") for the reader's error."""
    tensors = [i for i in list(node.inputs) + list(node.outputs) if i >= 0]
    quantized = [i for i in tensors if fn.tensors[i].quant is not None and fn.tensors[i].dtype in QUANT_DTYPES]
    entries = tuple(_entry(fn, i) for i in list(node.inputs) + list(node.outputs))
    if node.op == "quantize":
        if len(entries) == 2 and entries[1] is not None:
            node.attrs.update(quantization=entries, out_dtype=fn.tensors[node.outputs[0]].dtype)
        return None
    if node.op == "dequantize":
        if len(entries) == 2 and entries[0] is not None:
            node.attrs["quantization"] = entries
        return None
    if not quantized:
        return None
    if node.op in QUANTIZED:
        first = fn.tensors[node.inputs[0]].dtype if node.inputs and node.inputs[0] >= 0 else None
        if first not in QUANT_DTYPES:
            return f"{node.op.upper()} with {first} activations and quantized weights (dynamic-range quantization)"
        node.op = QUANTIZED[node.op]
        node.attrs["quantization"] = entries
        return None
    if node.op in PASSES_INTEGERS:
        return None
    return f"quantized {node.op.upper()} ({fn.tensors[quantized[0]].dtype})"


def tensor_quantization(fn: Function) -> dict[int, Quantization]:
    """Each tensor's parameters for the file: its own, else its quantized ops', else passed on."""
    found = {i: t.quant for i, t in enumerate(fn.tensors) if t.quant is not None}
    for node in fn.nodes:
        entries = node.attrs.get("quantization")
        if entries is None:
            continue
        for index, entry in zip(list(node.inputs) + list(node.outputs), entries):
            if index >= 0 and entry is not None and index not in found:
                found[index] = Quantization.from_attr(entry)
    movers = [n for n in fn.nodes if n.op in TRANSPARENT]
    changed = True
    while changed:
        changed = False
        for node in movers:
            ends = [i for i in list(node.inputs) + list(node.outputs) if i >= 0 and fn.tensors[i].dtype in QUANT_DTYPES]
            known = [found[i] for i in ends if i in found and len(found[i].scale) == 1]
            if known:
                for i in ends:
                    if i not in found:
                        found[i] = known[0]
                        changed = True
    return found


def quantization_table(builder, q: Quantization):
    """The file's QuantizationParameters table for q."""
    Q = schema_module("QuantizationParameters")
    scale = builder.CreateNumpyVector(np.asarray(q.scale, "<f4"))
    zero = builder.CreateNumpyVector(np.asarray(q.zero_point, "<i8"))
    Q.QuantizationParametersStart(builder)
    Q.QuantizationParametersAddScale(builder, scale)
    Q.QuantizationParametersAddZeroPoint(builder, zero)
    Q.QuantizationParametersAddQuantizedDimension(builder, int(q.axis))
    return Q.QuantizationParametersEnd(builder)
