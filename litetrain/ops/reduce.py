"""Reductions over axes (sum, mean, max, min, prod, arg_max) and softmax / log_softmax."""
from __future__ import annotations

import numpy as np

from ..core.ir import FLOAT_DTYPES
from ..core.registry import NOT_DIFFERENTIABLE, Builtin, defop
from ..core.trace import builder_of
from ._util import const_value, normalize_axes, num_elements
from .api import broadcast_to, cast, div, equal, exp, mul, reduce_sum, reshape, shape_of, sub, where

KEEP = {"keep_dims": False}
KEEP_FIELD = {"keep_dims": "bool"}


def _reduce_infer(attrs, inputs):
    x, axis = inputs
    if axis.dtype not in ("int32", "int64"):
        raise ValueError(f"axis must be int32, got {axis.dtype}")
    axes = normalize_axes(const_value(axis, "axis"), len(x.shape)) if x.shape else ()
    if attrs["keep_dims"]:
        shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    else:
        shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
    return [(x.dtype, shape)]


def _reducer(fn):
    def kernel(x, axis, keep_dims=False):
        axes = normalize_axes(axis, x.ndim) if x.ndim else ()
        return np.asarray(fn(x, axis=axes, keepdims=keep_dims), dtype=x.dtype)
    return kernel


def _axes_of(x, axis):
    return normalize_axes(axis.constant, x.ndim) if x.ndim else ()


def _expand_back(g, x, axes, keep_dims):
    """Broadcast a reduced gradient back to x's shape."""
    if not keep_dims:
        kept = [1 if i in axes else d for i, d in enumerate(x.shape)]
        if sum(d is None for d in kept) <= 1:
            g = reshape(g, [-1 if d is None else d for d in kept])
        else:
            fb = builder_of(g)
            mask = fb.const(np.asarray([i in axes for i in range(x.ndim)]))
            dyn = where(mask, fb.const(np.ones(x.ndim, np.int32)), shape_of(x))
            g = reshape(g, dyn, known_shape=tuple(kept))
    if None in x.shape:
        return broadcast_to(g, shape_of(x), known_shape=x.shape)
    return broadcast_to(g, list(x.shape))


def _sum_vjp(inputs, outputs, grads, keep_dims=False):
    x, axis = inputs
    return [_expand_back(grads[0], x, _axes_of(x, axis), keep_dims), None]


def _mean_vjp(inputs, outputs, grads, keep_dims=False):
    x, axis = inputs
    axes = _axes_of(x, axis)
    g = div(grads[0], num_elements(x, axes))
    return [_expand_back(g, x, axes, keep_dims), None]


def _extreme_vjp(inputs, outputs, grads, keep_dims=False):
    """Gradient of max/min: shared equally among the elements that attain it."""
    x, axis = inputs
    axes = _axes_of(x, axis)
    y = _expand_back(outputs[0], x, axes, keep_dims)
    mask = cast(equal(x, y), x.dtype)
    count = reduce_sum(mask, list(axes), keepdims=True)
    g = _expand_back(grads[0], x, axes, keep_dims)
    return [div(mul(g, mask), _expand_back(count, x, axes, True)), None]


def _prod_vjp(inputs, outputs, grads, keep_dims=False):
    x, axis = inputs
    axes = _axes_of(x, axis)
    # d prod / dx_i = prod / x_i (inputs with zeros are outside this rule's domain)
    y = _expand_back(outputs[0], x, axes, keep_dims)
    g = _expand_back(grads[0], x, axes, keep_dims)
    return [div(mul(g, y), x), None]


for _name, _code, _fn, _vjp in [("sum", "SUM", np.sum, _sum_vjp), ("mean", "MEAN", np.mean, _mean_vjp),
                                ("reduce_max", "REDUCE_MAX", np.max, _extreme_vjp),
                                ("reduce_min", "REDUCE_MIN", np.min, _extreme_vjp),
                                ("reduce_prod", "REDUCE_PROD", np.prod, _prod_vjp)]:
    defop(_name, infer=_reduce_infer, kernel=_reducer(_fn), vjp=_vjp, attrs=KEEP, num_inputs=(2, 2),
          tflite=Builtin(_code, "ReducerOptions", KEEP_FIELD))


def _argmax_infer(attrs, inputs):
    x, axis = inputs
    if attrs["output_type"] not in ("int32", "int64"):
        raise ValueError(f"output_type must be int32 or int64, got {attrs['output_type']!r}")
    if axis.dtype not in ("int32", "int64"):
        raise ValueError(f"axis must be int32 or int64, got {axis.dtype}")
    a = np.asarray(const_value(axis, "axis")).reshape(-1)
    if a.size != 1:
        raise ValueError(f"arg_max takes one axis, got {a.tolist()}")
    a, = normalize_axes(a, len(x.shape))
    return [(attrs["output_type"], tuple(d for i, d in enumerate(x.shape) if i != a))]


defop("arg_max", infer=_argmax_infer, vjp=NOT_DIFFERENTIABLE, num_inputs=(2, 2),
      kernel=lambda x, axis, output_type="int64": np.argmax(x, axis=int(np.asarray(axis).reshape(-1)[0])).astype(output_type),
      attrs={"output_type": "int64"}, tflite=Builtin("ARG_MAX", "ArgMaxOptions", {"output_type": "dtype"}))


def _softmax_kernel(x, beta=1.0):
    z = (x - x.max(axis=-1, keepdims=True)) * np.asarray(beta, x.dtype)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(x.dtype, copy=False)


def _softmax_vjp(inputs, outputs, grads, beta=1.0):
    y, = outputs
    g, = grads
    gy = mul(g, y)
    d = sub(gy, mul(y, reduce_sum(gy, [-1], keepdims=True)))
    return [d if beta == 1.0 else mul(d, float(beta))]


def _log_softmax_kernel(x):
    z = x - x.max(axis=-1, keepdims=True)
    return (z - np.log(np.exp(z).sum(axis=-1, keepdims=True))).astype(x.dtype, copy=False)


def _log_softmax_vjp(inputs, outputs, grads):
    g, = grads
    return [sub(g, mul(exp(outputs[0]), reduce_sum(g, [-1], keepdims=True)))]


def _softmax_infer(attrs, inputs):
    x, = inputs
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"takes float input, got {x.dtype}")
    if not x.shape:
        raise ValueError("the input must have rank >= 1 (softmax runs over the last axis)")
    return [(x.dtype, x.shape)]


defop("softmax", infer=_softmax_infer, kernel=_softmax_kernel, vjp=_softmax_vjp, attrs={"beta": 1.0},
      num_inputs=(1, 1), tflite=Builtin("SOFTMAX", "SoftmaxOptions", {"beta": "float"}))
defop("log_softmax", infer=_softmax_infer, kernel=_log_softmax_kernel, vjp=_log_softmax_vjp, num_inputs=(1, 1),
      tflite=Builtin("LOG_SOFTMAX", "LogSoftmaxOptions"))
