"""SPLIT, UNPACK and ADD_N: one tensor into several equal parts or slices, and several tensors summed
into one (what TensorFlow's converter writes for recurrent layers' gates and their gradients).

Their gradients are each other's duals, written with builtins: SPLIT's is the CONCATENATION of its
outputs' gradients, UNPACK's their PACK, ADD_N's the output's gradient for every input.
"""
from __future__ import annotations

import numpy as np

from ..core.registry import Builtin, defop
from ._util import const_value
from .api import concat, stack


def _merged(inputs, what):
    """One shape for tensors that must share it (unknown dims filled from the others)."""
    if any(t.dtype != inputs[0].dtype or len(t.shape) != len(inputs[0].shape) for t in inputs):
        raise ValueError(f"{what} must share dtype and rank, got {[f'{t.dtype}{list(t.shape)}' for t in inputs]}")
    dims = tuple(next((d for d in col if d is not None), None) for col in zip(*[t.shape for t in inputs]))
    if any(a is not None and b is not None and a != b for t in inputs for a, b in zip(t.shape, dims)):
        raise ValueError(f"{what} must have one shape, got {[list(t.shape) for t in inputs]}")
    return dims


def _axis(axis, rank, what):
    if not -rank <= axis < rank:
        raise ValueError(f"{what} {axis} is out of range for rank {rank}")
    return axis % rank


# -- SPLIT ------------------------------------------------------------------------------------------------
def _split_infer(attrs, inputs):
    axis_t, x = inputs
    if axis_t.dtype != "int32" or len(axis_t.shape) not in (0, 1) or (axis_t.shape and axis_t.shape[0] != 1):
        raise ValueError(f"the axis must be one int32, got {axis_t.dtype}{list(axis_t.shape)}")
    axis = _axis(int(np.asarray(const_value(axis_t, "the split axis")).reshape(())), len(x.shape), "axis")
    n = attrs["num_splits"]
    if n < 1:
        raise ValueError(f"num_splits must be positive, got {n}")
    d = x.shape[axis]
    if d is not None and d % n:
        raise ValueError(f"dim {axis} of size {d} does not split into {n} equal parts")
    part = None if d is None else d // n
    return [(x.dtype, x.shape[:axis] + (part,) + x.shape[axis + 1:])] * n


def _split_kernel(axis, x, num_splits=1):
    axis = int(np.asarray(axis).reshape(()))
    if not -x.ndim <= axis < x.ndim or x.shape[axis] % num_splits:
        raise ValueError(f"split: {list(x.shape)} does not split into {num_splits} equal parts along axis {axis}")
    parts = np.split(x, num_splits, axis=axis)
    return tuple(parts) if num_splits > 1 else parts[0]


def _split_vjp(inputs, outputs, grads, num_splits=1):
    axis = int(np.asarray(const_value(inputs[0].info, "the split axis")).reshape(()))
    return [None, concat(list(grads), axis % inputs[1].ndim)]


defop("split", infer=_split_infer, kernel=_split_kernel, vjp=_split_vjp, attrs={"num_splits": 1},
      num_inputs=(2, 2), tflite=Builtin("SPLIT", "SplitOptions", {"num_splits": "int"}))


# -- UNPACK -----------------------------------------------------------------------------------------------
def _unpack_infer(attrs, inputs):
    x, = inputs
    if not x.shape:
        raise ValueError("cannot unpack a scalar")
    axis = _axis(attrs["axis"], len(x.shape), "axis")
    num = attrs["num"]
    if x.shape[axis] is not None and x.shape[axis] != num:
        raise ValueError(f"num {num} but dim {axis} has size {x.shape[axis]}")
    if num < 1:
        raise ValueError(f"num must be positive, got {num}")
    return [(x.dtype, x.shape[:axis] + x.shape[axis + 1:])] * num


def _unpack_kernel(x, num=1, axis=0):
    if x.ndim == 0 or not -x.ndim <= axis < x.ndim or x.shape[axis] != num:
        raise ValueError(f"unpack: {list(x.shape)} has no dim {axis} of size {num}")
    parts = tuple(np.take(x, i, axis=axis) for i in range(num))
    return parts if num > 1 else parts[0]


defop("unpack", infer=_unpack_infer, kernel=_unpack_kernel,
      vjp=lambda inputs, outputs, grads, num=1, axis=0: [stack(list(grads), axis % inputs[0].ndim)],
      attrs={"num": 1, "axis": 0}, num_inputs=(1, 1),
      tflite=Builtin("UNPACK", "UnpackOptions", {"num": "int", "axis": "int"}))


# -- ADD_N ------------------------------------------------------------------------------------------------
def _add_n_kernel(*xs):
    if any(x.shape != xs[0].shape or x.dtype != xs[0].dtype for x in xs):
        raise ValueError(f"add_n: inputs must have one shape and dtype, got {[f'{x.dtype}{list(x.shape)}' for x in xs]}")
    total = xs[0].copy()
    for x in xs[1:]:
        total += x
    return total


def _add_n_infer(attrs, inputs):
    if inputs[0].dtype not in ("float32", "float64", "float16", "int32", "int64"):
        raise ValueError(f"inputs must be numbers, got {inputs[0].dtype}")
    return [(inputs[0].dtype, _merged(inputs, "add_n inputs"))]


defop("add_n", infer=_add_n_infer, kernel=_add_n_kernel, vjp=lambda inputs, outputs, grads: [grads[0]] * len(inputs),
      num_inputs=(2, None), tflite=Builtin("ADD_N", "AddNOptions"))  # LiteRT's ADD_N takes two or more
