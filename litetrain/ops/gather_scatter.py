"""Gathers and scatters: gather, gather_nd, scatter_nd, one_hot and dynamic_update_slice.

These are what tensor lists and embeddings are made of: a tensor list is a stacked tensor
[capacity, ...] written one slice per loop iteration with DYNAMIC_UPDATE_SLICE at the iteration
counter and read back with GATHER_ND; an embedding lookup is GATHER, and its gradient the
scatter-add SCATTER_ND (duplicate indices add up). All are TensorFlow Lite builtins.
"""
from __future__ import annotations

import numpy as np

from ..core.ir import format_shape
from ..core.registry import NOT_DIFFERENTIABLE, Builtin, defop
from ..core.trace import builder_of
from ._util import checked_dims, const_value, normalize_axes, sized
from .api import (arange, batch_matmul, cast, dynamic_update_slice, gather, gather_nd, maximum, minimum, one_hot,
                  reshape, scatter_nd, shape_of, sub, zeros_like)
from .shape import _prod, _reshape_like, _static_shape_input


def _gather_infer(attrs, inputs):
    x, idx = inputs
    if idx.dtype not in ("int32", "int64"):
        raise ValueError(f"indices must be int32 or int64, got {idx.dtype}")
    if attrs["batch_dims"] != 0:
        raise ValueError("batch_dims other than 0 is not supported")
    a, = normalize_axes(attrs["axis"], len(x.shape))
    return [(x.dtype, tuple(x.shape[:a]) + tuple(idx.shape) + tuple(x.shape[a + 1:]))]


def _gather_kernel(x, idx, axis=0, batch_dims=0):
    if idx.size and (idx.min() < 0 or idx.max() >= x.shape[axis]):
        bad = int(idx.min()) if idx.min() < 0 else int(idx.max())
        raise IndexError(f"gather index {bad} is out of range [0, {x.shape[axis]})")
    return np.take(x, idx, axis=axis)


def _gather_vjp(inputs, outputs, grads, axis=0, batch_dims=0):
    """Scatter-add as a one-hot product: with x viewed as [P, n, Q] and the K indices flattened,
    g is [P, K, Q] and dx = one_hot(indices, n)^T @ g (repeated indices add up)."""
    x, idx = inputs
    a = axis % x.ndim
    n = x.shape[a]
    if n is None:
        raise NotImplementedError("the gradient of gather needs the size of the gathered axis")
    dims = [_prod(x.shape[:a]), _prod(idx.shape), _prod(x.shape[a + 1:])]
    if dims.count(None) > 1:
        raise NotImplementedError("the gradient of gather allows unknown dims in one of: the dims "
                                  "before the axis, the indices, the dims after the axis")
    oh = one_hot(idx if idx.ndim == 1 else reshape(idx, [-1]), n, dtype=x.dtype)
    g = reshape(grads[0], [-1 if d is None else d for d in dims])
    return [_reshape_like(batch_matmul(oh, g, adj_x=True), x), None]


defop("gather", infer=_gather_infer, kernel=_gather_kernel, vjp=_gather_vjp, num_inputs=(2, 2),
      attrs={"axis": 0, "batch_dims": 0},
      tflite=Builtin("GATHER", "GatherOptions", {"axis": "int", "batch_dims": "int"}))


def _one_hot_infer(attrs, inputs):
    idx, depth, on, off = inputs
    if idx.dtype not in ("int32", "int64"):
        raise ValueError(f"indices must be int32 or int64, got {idx.dtype}")
    if on.dtype != off.dtype:
        raise ValueError(f"on_value and off_value must have one dtype, got {on.dtype} and {off.dtype}")
    d = int(np.asarray(const_value(depth, "depth")).reshape(()))
    a = attrs["axis"]
    if not -1 <= a <= len(idx.shape):
        raise ValueError(f"axis {a} is out of range for output rank {len(idx.shape) + 1}")
    shape = list(idx.shape)
    shape.insert(len(shape) if a == -1 else a, d)
    return [(on.dtype, tuple(shape))]


def _one_hot_kernel(idx, depth, on, off, axis=-1):
    d = int(np.asarray(depth).reshape(()))
    checked_dims([*idx.shape, d], "one_hot")
    hot = np.expand_dims(idx, axis) == np.arange(d).reshape([-1 if i == (axis % (idx.ndim + 1)) else 1
                                                             for i in range(idx.ndim + 1)])
    return np.where(hot, on.reshape(()), off.reshape(()))


def _one_hot_allocates(idx, depth, on, off, axis=-1):
    """The output and the bool mask the kernel compares first (one byte an element)."""
    d = int(np.asarray(depth).reshape(()))
    dtype, dims, n = sized(on.dtype, [*idx.shape, d], "one_hot")
    return dtype, dims, n + n // max(1, dtype.itemsize) + 8 * max(d, 0)


defop("one_hot", infer=_one_hot_infer, kernel=_one_hot_kernel, vjp=NOT_DIFFERENTIABLE, num_inputs=(4, 4),
      attrs={"axis": -1}, allocates=_one_hot_allocates, tflite=Builtin("ONE_HOT", "OneHotOptions", {"axis": "int"}))


INDEX_DTYPES = ("int32", "int64")


# -- dynamic_update_slice ---------------------------------------------------------------------
def _dus_infer(attrs, inputs):
    operand, update, start = inputs
    if operand.dtype != update.dtype:
        raise ValueError(f"operand and update must have one dtype, got {operand.dtype} and {update.dtype}")
    if len(update.shape) != len(operand.shape):
        raise ValueError(f"update rank {len(update.shape)} differs from operand rank {len(operand.shape)}")
    for o, u in zip(operand.shape, update.shape):
        if o is not None and u is not None and u > o:
            raise ValueError(f"update {format_shape(update.shape)} is larger than operand "
                             f"{format_shape(operand.shape)}")
    if start.dtype not in INDEX_DTYPES:
        raise ValueError(f"start_indices must be int32 or int64, got {start.dtype}")
    if len(start.shape) != 1 or start.shape[0] not in (None, len(operand.shape)):
        raise ValueError(f"start_indices must be a vector of {len(operand.shape)} entries (one per "
                         f"operand dim), got {format_shape(start.shape)}")
    return [(operand.dtype, operand.shape)]


def clamped_starts(operand_shape, update_shape, start):
    """TFLite (like XLA) clamps each start index to [0, operand dim - update dim]."""
    return [min(max(int(s), 0), o - u) for s, o, u in zip(start, operand_shape, update_shape)]


def _dus_kernel(operand, update, start, out=None):
    start = start.tolist() if type(start) is np.ndarray and start.ndim == 1 else np.asarray(start).reshape(-1).tolist()
    if update.ndim != operand.ndim or len(start) != operand.ndim:
        raise ValueError(f"operand {list(operand.shape)}, update {list(update.shape)} and "
                         f"{len(start)} start indices do not agree in rank")
    window = []
    for s, o, u in zip(start, operand.shape, update.shape):
        if u > o:
            raise ValueError(f"update {list(update.shape)} is larger than operand {list(operand.shape)}")
        b = min(max(int(s), 0), o - u)  # clamped as TFLite (and XLA) clamp: clamped_starts
        window.append(slice(b, b + u))
    out = operand.copy() if out is None else out  # out: the operand itself, when the runtime gives it
    out[tuple(window)] = update
    return out


def _dus_vjp(inputs, outputs, grads):
    """d operand: g with the overwritten window zeroed; d update: the window of g, cut out along
    each axis with GATHER of a RANGE (the start is a run-time value)."""
    operand, update, start = inputs
    g, = grads
    fb = builder_of(g)
    if None in operand.shape or None in update.shape:  # g has the operand's shape: the operand's
        room = sub(shape_of(g), shape_of(update))      # value is not needed (a loop need not keep it)
    else:
        room = fb.const(np.subtract(operand.shape, update.shape).astype(np.int32))
    begin = minimum(maximum(cast(start, "int32"), 0), room)
    d_operand = dynamic_update_slice(g, zeros_like(update), begin)
    d_update = g
    for axis, (o, u) in enumerate(zip(operand.shape, update.shape)):
        if o is not None and o == u:
            continue  # the window spans the whole axis
        first = gather(begin, fb.const(np.int32(axis)))
        size = fb.const(np.int32(u)) if u is not None else gather(shape_of(update), fb.const(np.int32(axis)))
        d_update = gather(d_update, arange(first, first + size), axis=axis)
    if d_update.shape != update.shape:
        d_update = reshape(d_update, shape_of(update), known_shape=update.shape) if sum(
            d is None for d in update.shape) > 1 else reshape(d_update, [-1 if d is None else d for d in update.shape])
    return [d_operand, d_update, None]


defop("dynamic_update_slice", infer=_dus_infer, kernel=_dus_kernel, vjp=_dus_vjp, num_inputs=(3, 3),
      inplace=(0,), tflite=Builtin("DYNAMIC_UPDATE_SLICE", "DynamicUpdateSliceOptions"))


# -- gather_nd / scatter_nd ------------------------------------------------------------------------
def _gather_nd_infer(attrs, inputs):
    params, idx = inputs
    if idx.dtype not in INDEX_DTYPES:
        raise ValueError(f"indices must be int32 or int64, got {idx.dtype}")
    if not idx.shape or idx.shape[-1] is None:
        raise ValueError(f"the indices' last dim (index depth) must be known, got {format_shape(idx.shape)}")
    depth = idx.shape[-1]
    if depth > len(params.shape):
        raise ValueError(f"index depth {depth} exceeds params rank {len(params.shape)}")
    return [(params.dtype, tuple(idx.shape[:-1]) + tuple(params.shape[depth:]))]


def _gather_nd_kernel(params, idx):
    depth = idx.shape[-1]
    if idx.ndim == 1 and 0 < depth <= params.ndim:  # one index: a slot of a tensor list, a row
        at = idx.tolist()
        if any(not 0 <= i < n for i, n in zip(at, params.shape)):
            raise IndexError(f"gather_nd index {at} is out of range for params {list(params.shape)}")
        return params[tuple(at) + (Ellipsis,)].copy()
    flat = idx.reshape(-1, depth)
    bounds = np.asarray(params.shape[:depth])
    if flat.size and ((flat < 0).any() or (flat >= bounds).any()):
        bad = flat[((flat < 0) | (flat >= bounds)).any(axis=1)][0].tolist()
        raise IndexError(f"gather_nd index {bad} is out of range for params {list(params.shape)}")
    out = params[tuple(flat.T)] if depth else np.broadcast_to(params, (flat.shape[0],) + params.shape)
    return np.ascontiguousarray(out).reshape(idx.shape[:-1] + params.shape[depth:])


def _shape_tensor(fb, x):
    return fb.const(np.asarray(x.shape, np.int32)) if None not in x.shape else shape_of(x)


def _gather_nd_vjp(inputs, outputs, grads):
    params, idx = inputs
    fb = builder_of(grads[0])
    return [scatter_nd(idx, grads[0], _shape_tensor(fb, params), known_shape=params.shape), None]


defop("gather_nd", infer=_gather_nd_infer, kernel=_gather_nd_kernel, vjp=_gather_nd_vjp, num_inputs=(2, 2),
      tflite=Builtin("GATHER_ND", "GatherNdOptions"))


def _scatter_nd_infer(attrs, inputs):
    idx, updates, shape = inputs
    if idx.dtype not in INDEX_DTYPES or shape.dtype != idx.dtype:
        raise ValueError(f"indices and shape must be int32 or int64 of one dtype, got {idx.dtype} and {shape.dtype}")
    if not idx.shape or idx.shape[-1] is None:
        raise ValueError(f"the indices' last dim (index depth) must be known, got {format_shape(idx.shape)}")
    out = tuple(_static_shape_input(shape))
    depth = idx.shape[-1]
    want = tuple(idx.shape[:-1]) + out[depth:]
    if depth > len(out) or len(updates.shape) != len(want) or any(
            a is not None and b is not None and a != b for a, b in zip(updates.shape, want)):
        raise ValueError(f"updates {format_shape(updates.shape)} do not fit indices {format_shape(idx.shape)} "
                         f"into shape {format_shape(out)} (expected {format_shape(want)})")
    return [(updates.dtype, out)]


def _scatter_nd_kernel(idx, updates, shape):
    shape = [int(d) for d in np.asarray(shape).reshape(-1)]
    depth = idx.shape[-1]
    flat = idx.reshape(-1, depth)
    bounds = np.asarray(shape[:depth])
    if flat.size and ((flat < 0).any() or (flat >= bounds).any()):
        bad = flat[((flat < 0) | (flat >= bounds)).any(axis=1)][0].tolist()
        raise IndexError(f"scatter_nd index {bad} is out of range for shape {shape}")
    out = np.zeros(shape, updates.dtype)
    np.add.at(out, tuple(flat.T), updates.reshape((flat.shape[0],) + tuple(shape[depth:])))
    return out


def _scatter_nd_vjp(inputs, outputs, grads):
    idx, updates, shape = inputs
    return [None, gather_nd(grads[0], idx), None]


defop("scatter_nd", infer=_scatter_nd_infer, kernel=_scatter_nd_kernel, vjp=_scatter_nd_vjp, num_inputs=(3, 3),
      allocates=lambda idx, updates, shape: sized(updates.dtype, np.asarray(shape).reshape(-1), "scatter_nd"),
      tflite=Builtin("SCATTER_ND", "ScatterNdOptions"))
