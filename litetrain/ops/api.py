"""The op functions: one small function per primitive op that adds it to the traced function.

Models, layers, losses, optimizers and the gradient rules of every op family are written with
these (a gradient rule is graph to graph: it calls them on symbolic tensors). Each function only
turns Python arguments into the op's inputs and attributes and calls `FunctionBuilder.emit`; what
the op means (shape rule, kernel, gradient, file mapping) is its definition in the family's file.
Tracing loops, branches and tensor lists is in control.py and tensor_list.py.
"""
from __future__ import annotations

import numpy as np

from ..core.ir import dtype_name
from ..core.trace import builder_of


def _node(op, inputs, attrs):
    """An op whose inputs are given as a list (None for an absent optional input)."""
    fb = builder_of(*inputs)
    return fb.emit(op, [None if t is None else fb.to_tensor(t) for t in inputs], attrs)


def _emit(op, *inputs, **attrs):
    fb = builder_of(*inputs)
    like = next(t for t in inputs if hasattr(t, "fb"))
    return fb.emit(op, [fb.to_tensor(t, like) for t in inputs], attrs)


# -- elementwise and activations -----------------------------------------------------------------
def add(a, b): return _emit("add", a, b)
def sub(a, b): return _emit("sub", a, b)
def mul(a, b): return _emit("mul", a, b)
def div(a, b): return _emit("div", a, b)
def maximum(a, b): return _emit("maximum", a, b)
def minimum(a, b): return _emit("minimum", a, b)
def pow_(a, b): return _emit("pow", a, b)
def squared_difference(a, b): return _emit("squared_difference", a, b)
def neg(x): return _emit("neg", x)
def exp(x): return _emit("exp", x)
def log(x): return _emit("log", x)
def sqrt(x): return _emit("sqrt", x)
def rsqrt(x): return _emit("rsqrt", x)
def square(x): return _emit("square", x)
def abs_(x): return _emit("abs", x)
def sign(x): return _emit("sign", x)
def floor(x): return _emit("floor", x)
def sin(x): return _emit("sin", x)
def cos(x): return _emit("cos", x)
def tanh(x): return _emit("tanh", x)
def sigmoid(x): return _emit("logistic", x)
def relu(x): return _emit("relu", x)
def relu6(x): return _emit("relu6", x)
def gelu(x, approximate=False): return _emit("gelu", x, approximate=bool(approximate))
def less(a, b): return _emit("less", a, b)
def less_equal(a, b): return _emit("less_equal", a, b)
def greater(a, b): return _emit("greater", a, b)
def greater_equal(a, b): return _emit("greater_equal", a, b)
def equal(a, b): return _emit("equal", a, b)
def not_equal(a, b): return _emit("not_equal", a, b)
def logical_and(a, b): return _emit("logical_and", a, b)
def logical_not(x): return _emit("logical_not", x)
def zeros_like(x): return _emit("zeros_like", x)


def ones_like(x):
    """Ones shaped like `x`. TensorFlow Lite has no ONES_LIKE builtin, so this is FILL: of a
    constant shape (folded to a constant when small) or, with unknown dims, of SHAPE(x)."""
    fb = builder_of(x)
    dims = fb.const(np.asarray(x.shape, np.int32)) if None not in x.shape else shape_of(x)
    y = fill(dims, 1, x.dtype)
    if y.constant is None:
        y.info.shape = tuple(x.shape)
    return y


def where(cond, a, b):
    """Elementwise select: `a` where `cond`, else `b` (SELECT_V2, broadcasting)."""
    fb = builder_of(cond, a, b)
    like = a if hasattr(a, "fb") else b if hasattr(b, "fb") else None
    return fb.emit("select_v2", [fb.to_tensor(cond), fb.to_tensor(a, like), fb.to_tensor(b, like)])


def cast(x, dtype):
    dtype = dtype_name(dtype)
    if x.dtype == dtype:
        return x
    return builder_of(x).emit("cast", [x], {"in_data_type": x.dtype, "out_data_type": dtype})


def hard_swish(x):
    return builder_of(x).emit("hard_swish", [x])


def leaky_relu(x, alpha=0.2):
    return builder_of(x).emit("leaky_relu", [x], {"alpha": float(alpha)})


# -- matrix products ------------------------------------------------------------------------------
def fully_connected(x, weights, bias=None, keep_num_dims=False):
    """x @ weights^T + bias, with weights shaped [units, input_dim] as in TensorFlow Lite."""
    fb = builder_of(x)
    ins = [x, fb.to_tensor(weights)] + ([fb.to_tensor(bias)] if bias is not None else [])
    return fb.emit("fully_connected", ins, {"keep_num_dims": bool(keep_num_dims)})


def batch_matmul(a, b, adj_x=False, adj_y=False):
    fb = builder_of(a, b)
    return fb.emit("batch_matmul", [fb.to_tensor(a), fb.to_tensor(b)],
                   {"adj_x": bool(adj_x), "adj_y": bool(adj_y)})


def matmul(a, b):
    return batch_matmul(a, b)


# -- reductions -----------------------------------------------------------------------------------
def _reduce(op, x, axis, keepdims):
    fb = builder_of(x)
    if axis is None:
        axis = list(range(x.ndim))
    axes = np.asarray(np.atleast_1d(axis), dtype=np.int32)
    return fb.emit(op, [x, fb.const(axes)], {"keep_dims": bool(keepdims)})


def reduce_sum(x, axis=None, keepdims=False): return _reduce("sum", x, axis, keepdims)
def reduce_mean(x, axis=None, keepdims=False): return _reduce("mean", x, axis, keepdims)
def reduce_max(x, axis=None, keepdims=False): return _reduce("reduce_max", x, axis, keepdims)
def reduce_min(x, axis=None, keepdims=False): return _reduce("reduce_min", x, axis, keepdims)
def reduce_prod(x, axis=None, keepdims=False): return _reduce("reduce_prod", x, axis, keepdims)


def argmax(x, axis=-1, output_type="int32"):
    fb = builder_of(x)
    return fb.emit("arg_max", [x, fb.const(np.asarray([axis], np.int32))], {"output_type": output_type})


def softmax(x, beta=1.0):
    return builder_of(x).emit("softmax", [x], {"beta": float(beta)})


def log_softmax(x):
    return builder_of(x).emit("log_softmax", [x])


# -- shapes, gathers and scatters -----------------------------------------------------------------
def reshape(x, shape, known_shape=None):
    """Reshape to `shape` (a list with at most one -1, or an int32 tensor). `known_shape`
    states the static shape when `shape` is a tensor computed at run time."""
    fb = builder_of(x)
    if hasattr(shape, "fb"):
        st = shape
    else:
        st = fb.const(np.asarray(shape, np.int32).reshape(-1))
    y = fb.emit("reshape", [x, st])
    if known_shape is not None:
        y.info.shape = tuple(k if k is not None else d for k, d in zip(known_shape, y.shape))
    return y


def transpose(x, perm):
    fb = builder_of(x)
    return fb.emit("transpose", [x, fb.const(np.asarray(perm, np.int32))])


def expand_dims(x, axis):
    fb = builder_of(x)
    return fb.emit("expand_dims", [x, fb.const(np.asarray([axis], np.int32))])


def squeeze(x, axis=()):
    return builder_of(x).emit("squeeze", [x], {"squeeze_dims": tuple(np.atleast_1d(axis).tolist())})


def broadcast_to(x, shape, known_shape=None):
    fb = builder_of(x)
    st = shape if hasattr(shape, "fb") else fb.const(np.asarray(shape, np.int32))
    y = fb.emit("broadcast_to", [x, st])
    if known_shape is not None:
        y.info.shape = tuple(k if k is not None else d for k, d in zip(known_shape, y.shape))
    return y


def shape_of(x, out_type="int32"):
    return builder_of(x).emit("shape", [x], {"out_type": out_type})


def gather(x, indices, axis=0):
    fb = builder_of(x, indices)
    return fb.emit("gather", [fb.to_tensor(x), fb.to_tensor(indices)], {"axis": int(axis)})


def concat(tensors, axis=0):
    fb = builder_of(tensors)
    return fb.emit("concatenation", [fb.to_tensor(t) for t in tensors], {"axis": int(axis)})


def stack(tensors, axis=0):
    """PACK: the tensors (one shape) stacked along a new dim `axis`."""
    return _node("pack", list(tensors), {"axis": int(axis), "values_count": len(tensors)})


def add_n(tensors):
    """ADD_N: the sum of two or more tensors of one shape and dtype."""
    return _node("add_n", list(tensors), {})


def split(x, num_splits, axis=0):
    """SPLIT: `x` cut into `num_splits` equal parts along `axis` (a list)."""
    fb = builder_of(x)
    out = fb.emit("split", [fb.const(np.int32(axis)), fb.to_tensor(x)], {"num_splits": int(num_splits)})
    return list(out) if isinstance(out, tuple) else [out]


def unstack(x, axis=0):
    """UNPACK: the slices of `x` along `axis` (its size there must be known), as a list."""
    fb = builder_of(x)
    num = x.shape[axis]
    if num is None:
        raise ValueError("unstack needs the size of the dim it unstacks to be known")
    out = fb.emit("unpack", [fb.to_tensor(x)], {"num": int(num), "axis": int(axis)})
    return list(out) if isinstance(out, tuple) else [out]


def slice_(x, begin, size):
    fb = builder_of(x)
    return fb.emit("slice", [x, fb.const(np.asarray(begin, np.int32)), fb.const(np.asarray(size, np.int32))])


def pad(x, paddings):
    fb = builder_of(x)
    return fb.emit("pad", [x, fb.const(np.asarray(paddings, np.int32).reshape(-1, 2))])


def fill(shape, value, dtype="float32"):
    fb = builder_of(shape)
    return fb.emit("fill", [shape, fb.const(value, dtype)])


def one_hot(indices, depth, dtype="float32", on=1.0, off=0.0, axis=-1):
    fb = builder_of(indices)
    return fb.emit("one_hot", [indices, fb.const(np.int32(depth)), fb.const(on, dtype), fb.const(off, dtype)],
                   {"axis": int(axis)})


def tile(x, multiples):
    fb = builder_of(x)
    return fb.emit("tile", [x, fb.const(np.asarray(multiples, np.int32))])


def strided_slice(x, begin, end, strides=None, **masks):
    fb = builder_of(x)
    strides = [1] * len(begin) if strides is None else strides
    return fb.emit("strided_slice", [x] + [fb.const(np.asarray(v, np.int32)) for v in (begin, end, strides)], masks)


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


# -- convolution and pooling ----------------------------------------------------------------------
def _zero_bias(filters, axis):
    """Zeros, one per output channel of a filter (dim `axis`: 0 for conv_2d, 3 for depthwise): a
    constant, or FILL of the run-time size when that dim is unknown."""
    fb = builder_of(filters)
    n = filters.shape[axis]
    if n is not None:
        return fb.const(np.zeros(n), filters.dtype)
    zeros = fill(slice_(shape_of(filters), [axis], [1]), 0.0, filters.dtype)
    zeros.info.shape = (None,)
    return zeros


def _pair(v, what):
    pair = (int(v), int(v)) if np.ndim(v) == 0 else tuple(int(a) for a in v)
    if len(pair) != 2:
        raise ValueError(f"{what} must be an int or a pair of ints, got {v!r}")
    return pair


def conv_2d(x, filters, bias=None, strides=1, padding="SAME", dilations=1, activation="NONE"):
    """2-D convolution of NHWC `x` with OHWI `filters` [out, kh, kw, in]; without a bias, a zero
    bias (TFLite's CONV_2D requires one)."""
    (sh, sw), (dh, dw) = _pair(strides, "strides"), _pair(dilations, "dilations")
    fb = builder_of(x, filters)
    filters = fb.to_tensor(filters)
    bias = _zero_bias(filters, 0) if bias is None else bias
    return _node("conv_2d", [x, filters, bias],
                 {"padding": padding.upper(), "stride_h": sh, "stride_w": sw, "dilation_h_factor": dh,
                  "dilation_w_factor": dw, "fused_activation_function": activation})


def depthwise_conv_2d(x, filters, bias=None, strides=1, padding="SAME", dilations=1, depth_multiplier=1,
                      activation="NONE"):
    """Per-channel 2-D convolution; `filters` is [1, kh, kw, in * depth_multiplier]; without a
    bias, a zero bias (TFLite's DEPTHWISE_CONV_2D requires one)."""
    (sh, sw), (dh, dw) = _pair(strides, "strides"), _pair(dilations, "dilations")
    fb = builder_of(x, filters)
    filters = fb.to_tensor(filters)
    bias = _zero_bias(filters, 3) if bias is None else bias
    return _node("depthwise_conv_2d", [x, filters, bias],
                 {"padding": padding.upper(), "stride_h": sh, "stride_w": sw, "dilation_h_factor": dh,
                  "dilation_w_factor": dw, "depth_multiplier": int(depth_multiplier),
                  "fused_activation_function": activation})


def transpose_conv(output_shape, filters, x, bias=None, strides=1, padding="SAME", activation="NONE",
                   known_shape=None):
    """The transpose of conv_2d (its input gradient): `filters` [out, kh, kw, in], `output_shape` an
    int32[4] tensor or list. `known_shape` states the output's static shape when output_shape is
    computed at run time."""
    fb = builder_of(x)
    sh, sw = _pair(strides, "strides")
    shape = output_shape if hasattr(output_shape, "fb") else fb.const(np.asarray(output_shape, np.int32))
    y = _node("transpose_conv", [shape, filters, x] + ([bias] if bias is not None else []),
              {"padding": padding.upper(), "stride_h": sh, "stride_w": sw, "fused_activation_function": activation})
    if known_shape is not None:
        y.info.shape = tuple(k if k is not None else d for k, d in zip(known_shape, y.shape))
    return y


def _pool(op, x, pool_size, strides, padding, activation):
    (kh, kw) = _pair(pool_size, "pool_size")
    (sh, sw) = _pair(pool_size if strides is None else strides, "strides")
    return builder_of(x).emit(op, [x], {"padding": padding.upper(), "stride_h": sh, "stride_w": sw,
                                        "filter_height": kh, "filter_width": kw,
                                        "fused_activation_function": activation})


def max_pool_2d(x, pool_size=2, strides=None, padding="VALID", activation="NONE"):
    return _pool("max_pool_2d", x, pool_size, strides, padding, activation)


def average_pool_2d(x, pool_size=2, strides=None, padding="VALID", activation="NONE"):
    return _pool("average_pool_2d", x, pool_size, strides, padding, activation)


# -- random numbers -------------------------------------------------------------------------------
def random_uniform(shape, seed=0, seed2=0):
    """Floats uniform in [0, 1) of `shape`, an int32 tensor (e.g. shape_of(x)); every call of the
    signature draws new numbers from the node's stream."""
    return builder_of(shape).emit("random_uniform", [shape], {"seed": int(seed), "seed2": int(seed2)})


def random_uniform_like(x, seed=0, seed2=0):
    """Floats uniform in [0, 1) shaped like `x` (a constant shape when x's shape is known, else
    SHAPE(x) at run time)."""
    fb = builder_of(x)
    dims = fb.const(np.asarray(x.shape, np.int32)) if None not in x.shape else shape_of(x)
    y = random_uniform(dims, seed, seed2)
    y.info.shape = tuple(x.shape)
    return y


# -- resizing images ------------------------------------------------------------------------------------------
def _resize(op, x, size, align_corners, half_pixel_centers):
    fb = builder_of(x)
    st = size if hasattr(size, "fb") else fb.const(np.asarray(size, np.int32))
    return fb.emit(op, [x, st], {"align_corners": bool(align_corners), "half_pixel_centers": bool(half_pixel_centers)})


def resize_bilinear(x, size, align_corners=False, half_pixel_centers=False):
    """NHWC `x` resized to `size` (height, width) by bilinear interpolation. PyTorch's
    `interpolate(mode="bilinear", align_corners=False)` is half_pixel_centers=True."""
    return _resize("resize_bilinear", x, size, align_corners, half_pixel_centers)


def resize_nearest_neighbor(x, size, align_corners=False, half_pixel_centers=False):
    """NHWC `x` resized to `size` (height, width), each output pixel a copy of its nearest input pixel
    (PyTorch's `interpolate(mode="nearest")` is the default: floor(out * in / size))."""
    return _resize("resize_nearest_neighbor", x, size, align_corners, half_pixel_centers)
