"""Sequence ops: dynamic_update_slice, range, gather_nd and scatter_nd (TFLite semantics).

These are what tensor lists and embeddings are made of. A tensor list is a stacked tensor
[capacity, ...] written one slice per loop iteration with DYNAMIC_UPDATE_SLICE at the iteration
counter and read back with GATHER; an embedding lookup is GATHER_ND, and its gradient is the
scatter-add SCATTER_ND (duplicate indices add up). All four are TensorFlow Lite builtins.
"""
from __future__ import annotations

import numpy as np

from ..ir import format_shape
from ..registry import NOT_DIFFERENTIABLE, Builtin, defop
from ..trace import builder_of

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


def _dus_kernel(operand, update, start):
    start = np.asarray(start).reshape(-1)
    if update.ndim != operand.ndim or start.size != operand.ndim:
        raise ValueError(f"operand {list(operand.shape)}, update {list(update.shape)} and "
                         f"{start.size} start indices do not agree in rank")
    if any(u > o for u, o in zip(update.shape, operand.shape)):
        raise ValueError(f"update {list(update.shape)} is larger than operand {list(operand.shape)}")
    begin = clamped_starts(operand.shape, update.shape, start)
    out = operand.copy()
    out[tuple(slice(b, b + u) for b, u in zip(begin, update.shape))] = update
    return out


def _dus_vjp(inputs, outputs, grads):
    """d operand: g with the overwritten window zeroed; d update: the window of g, cut out along
    each axis with GATHER of a RANGE (the start is a run-time value)."""
    from . import cast, gather, maximum, minimum, reshape, shape_of, sub, zeros_like
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
      tflite=Builtin("DYNAMIC_UPDATE_SLICE", "DynamicUpdateSliceOptions"))


# -- range ------------------------------------------------------------------------------------------
def _range_infer(attrs, inputs):
    dtypes = {t.dtype for t in inputs}
    if len(dtypes) != 1:
        raise ValueError(f"start, limit and delta must have one dtype, got {sorted(dtypes)}")
    dtype = dtypes.pop()
    if dtype not in ("int32", "int64", "float32", "float64"):
        raise ValueError(f"range takes int32, int64 or float32/64, got {dtype}")
    if any(t.shape not in ((), (1,)) for t in inputs):
        raise ValueError("start, limit and delta must be scalars")
    return [(dtype, (None,))]


def _range_kernel(start, limit, delta):
    s, l, d = (np.asarray(v).reshape(()) for v in (start, limit, delta))
    if d == 0:
        raise ValueError("range delta must not be zero")
    if (l > s and d < 0) or (l < s and d > 0):
        raise ValueError(f"range from {s} to {l} never ends with delta {d}")
    return np.arange(s, l, d, dtype=np.asarray(start).dtype)


defop("range", infer=_range_infer, kernel=_range_kernel, vjp=NOT_DIFFERENTIABLE, num_inputs=(3, 3),
      tflite=Builtin("RANGE", "RangeOptions"))


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
    flat = idx.reshape(-1, depth)
    bounds = np.asarray(params.shape[:depth])
    if flat.size and ((flat < 0).any() or (flat >= bounds).any()):
        bad = flat[((flat < 0) | (flat >= bounds)).any(axis=1)][0].tolist()
        raise IndexError(f"gather_nd index {bad} is out of range for params {list(params.shape)}")
    out = params[tuple(flat.T)] if depth else np.broadcast_to(params, (flat.shape[0],) + params.shape)
    return np.ascontiguousarray(out).reshape(idx.shape[:-1] + params.shape[depth:])


def _shape_tensor(fb, x):
    from . import shape_of
    return fb.const(np.asarray(x.shape, np.int32)) if None not in x.shape else shape_of(x)


def _gather_nd_vjp(inputs, outputs, grads):
    params, idx = inputs
    fb = builder_of(grads[0])
    return [scatter_nd(idx, grads[0], _shape_tensor(fb, params), known_shape=params.shape), None]


defop("gather_nd", infer=_gather_nd_infer, kernel=_gather_nd_kernel, vjp=_gather_nd_vjp, num_inputs=(2, 2),
      tflite=Builtin("GATHER_ND", "GatherNdOptions"))


def _scatter_nd_infer(attrs, inputs):
    idx, updates, shape = inputs
    from .shape import _static_shape_input
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
      tflite=Builtin("SCATTER_ND", "ScatterNdOptions"))


# -- the frontend functions --------------------------------------------------------------------------
def dynamic_update_slice(operand, update, start):
    """`operand` with `update` written at `start` (one index per dim; clamped so that it fits)."""
    fb = builder_of(operand, update, start)
    return fb.emit("dynamic_update_slice", [fb.to_tensor(operand), fb.to_tensor(update),
                                            fb.to_tensor(np.asarray(start, np.int32) if not hasattr(start, "fb") else start)])


def arange(start, limit, delta=1, dtype=None):
    """RANGE: [start, start + delta, ...) up to `limit`; scalar tensors or Python numbers."""
    fb = builder_of(start, limit, delta)
    like = next(v for v in (start, limit, delta) if hasattr(v, "fb"))
    return fb.emit("range", [fb.to_tensor(v, like) for v in (start, limit, delta)])


def gather_nd(params, indices):
    fb = builder_of(params, indices)
    return fb.emit("gather_nd", [fb.to_tensor(params), fb.to_tensor(indices)])


def scatter_nd(indices, updates, shape, known_shape=None):
    """A tensor of `shape` with `updates` added at `indices` (repeated indices add up)."""
    fb = builder_of(indices, updates, shape)
    st = shape if hasattr(shape, "fb") else fb.const(np.asarray(shape, np.int32))
    y = fb.emit("scatter_nd", [fb.to_tensor(indices), fb.to_tensor(updates), st])
    if known_shape is not None:
        y.info.shape = tuple(k if k is not None else d for k, d in zip(known_shape, y.shape))
    return y
