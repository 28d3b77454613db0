"""Shape ops: reshape, transpose, expand/squeeze, broadcast, shape, gather, concat, slice, fill, one_hot."""
from __future__ import annotations

import numpy as np

from ..registry import NOT_DIFFERENTIABLE, Builtin, defop
from ..trace import builder_of
from ._util import broadcast_shapes, const_value, normalize_axes, unbroadcast


def _static_shape_input(info):
    """The partial value of a shape tensor: a list with None for unknown entries."""
    if info.data is not None:
        return [int(v) for v in np.asarray(info.data).reshape(-1)]
    if len(info.shape) != 1 or info.shape[0] is None:
        raise ValueError("the shape must be a 1-D int32 tensor of known length")
    return [None] * info.shape[0]


def _reshape_infer(attrs, inputs):
    x = inputs[0]
    if len(inputs) > 1 and inputs[1] is not None:
        target = _static_shape_input(inputs[1])
    else:
        target = list(attrs["new_shape"])
    if target.count(-1) > 1:
        raise ValueError(f"at most one -1 in a shape, got {target}")
    known = [d for d in target if d is not None and d != -1]
    if -1 in target:
        total = None if None in x.shape else int(np.prod(x.shape))
        if total is not None and None not in target:
            rest = int(np.prod(known)) if known else 1
            if rest == 0 or total % rest:
                raise ValueError(f"cannot reshape {list(x.shape)} to {target}")
            target = [total // rest if d == -1 else d for d in target]
        else:
            target = [None if d == -1 else d for d in target]
    elif None not in x.shape and None not in target and int(np.prod(x.shape)) != int(np.prod(target)):
        raise ValueError(f"cannot reshape {list(x.shape)} to {target}")
    return [(x.dtype, tuple(target))]


def _reshape_kernel(x, shape=None, new_shape=()):
    target = shape if shape is not None else new_shape
    return x.reshape([int(d) for d in np.asarray(target).reshape(-1)])


def _reshape_vjp(inputs, outputs, grads, **attrs):
    x = inputs[0]
    return [_reshape_like(grads[0], x)] + [None] * (len(inputs) - 1)


def _reshape_like(g, x):
    if sum(d is None for d in x.shape) <= 1:
        return reshape(g, [-1 if d is None else d for d in x.shape])
    return reshape(g, shape_of(x), known_shape=x.shape)


defop("reshape", infer=_reshape_infer, kernel=_reshape_kernel, vjp=_reshape_vjp, num_inputs=(1, 2),
      attrs={"new_shape": ()}, tflite=Builtin("RESHAPE", "ReshapeOptions", {"new_shape": "ints"}))


def _transpose_infer(attrs, inputs):
    x, perm = inputs
    p = [int(v) for v in const_value(perm, "perm")]
    if sorted(p) != list(range(len(x.shape))):
        raise ValueError(f"perm {p} is not a permutation of rank {len(x.shape)}")
    return [(x.dtype, tuple(x.shape[i] for i in p))]


def _transpose_vjp(inputs, outputs, grads):
    perm = [int(v) for v in inputs[1].constant]
    return [transpose(grads[0], list(np.argsort(perm))), None]


defop("transpose", infer=_transpose_infer, kernel=lambda x, perm: np.transpose(x, [int(v) for v in perm]),
      vjp=_transpose_vjp, num_inputs=(2, 2), tflite=Builtin("TRANSPOSE", "TransposeOptions"))


def _expand_infer(attrs, inputs):
    x, axis = inputs
    a = int(np.asarray(const_value(axis, "axis")).reshape(-1)[0])
    rank = len(x.shape) + 1
    if not -rank <= a < rank:
        raise ValueError(f"axis {a} out of range for output rank {rank}")
    a %= rank
    return [(x.dtype, tuple(x.shape[:a]) + (1,) + tuple(x.shape[a:]))]


defop("expand_dims", infer=_expand_infer, vjp=lambda i, o, g: [_reshape_like(g[0], i[0]), None],
      kernel=lambda x, axis: np.expand_dims(x, int(np.asarray(axis).reshape(-1)[0])),
      num_inputs=(2, 2), tflite=Builtin("EXPAND_DIMS", "ExpandDimsOptions"))


def _squeeze_axes(shape, dims):
    if dims:
        return normalize_axes(list(dims), len(shape))
    return tuple(i for i, d in enumerate(shape) if d == 1)


def _squeeze_infer(attrs, inputs):
    x, = inputs
    axes = _squeeze_axes(x.shape, attrs["squeeze_dims"])
    for a in axes:
        if x.shape[a] not in (1, None):
            raise ValueError(f"cannot squeeze axis {a} of size {x.shape[a]}")
    return [(x.dtype, tuple(d for i, d in enumerate(x.shape) if i not in axes))]


defop("squeeze", infer=_squeeze_infer, vjp=lambda i, o, g, **a: [_reshape_like(g[0], i[0])],
      kernel=lambda x, squeeze_dims=(): np.squeeze(x, _squeeze_axes(x.shape, squeeze_dims)),
      attrs={"squeeze_dims": ()}, num_inputs=(1, 1),
      tflite=Builtin("SQUEEZE", "SqueezeOptions", {"squeeze_dims": "ints"}))


def _broadcast_to_infer(attrs, inputs):
    x, shape = inputs
    target = _static_shape_input(shape)
    return [(x.dtype, broadcast_shapes(x.shape, tuple(target)))]


defop("broadcast_to", infer=_broadcast_to_infer,
      kernel=lambda x, shape: np.broadcast_to(x, [int(d) for d in shape]).copy(),
      vjp=lambda i, o, g: [unbroadcast(g[0], i[0]), None], num_inputs=(2, 2),
      tflite=Builtin("BROADCAST_TO", version=2))

defop("shape", infer=lambda attrs, ins: [(attrs["out_type"], (len(ins[0].shape),))],
      kernel=lambda x, out_type="int32": np.asarray(x.shape, dtype=out_type),
      vjp=NOT_DIFFERENTIABLE, attrs={"out_type": "int32"}, num_inputs=(1, 1),
      tflite=Builtin("SHAPE", "ShapeOptions", {"out_type": "dtype"}))


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
        raise IndexError(f"gather index out of range [0, {x.shape[axis]})")
    return np.take(x, idx, axis=axis)


def _gather_vjp(inputs, outputs, grads, axis=0, batch_dims=0):
    x, idx = inputs
    if x.ndim == 1 and axis % 1 == 0 and idx.ndim == 1:
        # scatter-add as a one-hot product: one_hot(idx, n)^T @ g
        from . import batch_matmul, one_hot
        n = x.shape[0]
        if n is not None:
            oh = one_hot(idx, n, dtype=x.dtype)
            return [reshape(batch_matmul(oh, reshape(grads[0], [-1, 1]), adj_x=True), [n]), None]
    raise NotImplementedError("the gradient of gather is written for 1-D gathers only so far")


defop("gather", infer=_gather_infer, kernel=_gather_kernel, vjp=_gather_vjp, num_inputs=(2, 2),
      attrs={"axis": 0, "batch_dims": 0},
      tflite=Builtin("GATHER", "GatherOptions", {"axis": "int", "batch_dims": "int"}))


def _concat_infer(attrs, inputs):
    rank = len(inputs[0].shape)
    if any(len(t.shape) != rank for t in inputs) or len({t.dtype for t in inputs}) != 1:
        raise ValueError("concatenated tensors must have one rank and one dtype")
    a, = normalize_axes(attrs["axis"], rank)
    shape = list(inputs[0].shape)
    sizes = [t.shape[a] for t in inputs]
    shape[a] = None if None in sizes else sum(sizes)
    for i in range(rank):
        if i != a:
            shape[i] = broadcast_shapes(*[(t.shape[i],) for t in inputs])[0]
    return [(inputs[0].dtype, tuple(shape))]


def _concat_vjp(inputs, outputs, grads, axis=0, fused_activation_function="NONE"):
    from ._util import no_fused_activation
    no_fused_activation({"fused_activation_function": fused_activation_function}, "concatenation")
    g, = grads
    a = axis % g.ndim
    out, start = [], 0
    for t in inputs:
        size = t.shape[a]
        if size is None:
            raise NotImplementedError("the gradient of concatenation needs static sizes on the axis")
        begin = [0] * g.ndim
        begin[a] = start
        sz = [-1] * g.ndim
        sz[a] = size
        out.append(slice_(g, begin, sz))
        start += size
    return out


defop("concatenation", infer=_concat_infer, vjp=_concat_vjp, num_inputs=(1, None),
      kernel=lambda *xs, axis=0, fused_activation_function="NONE": np.concatenate(xs, axis=axis),
      attrs={"axis": 0, "fused_activation_function": "NONE"},
      tflite=Builtin("CONCATENATION", "ConcatenationOptions",
                     {"axis": "int", "fused_activation_function": "activation"}))


def _slice_infer(attrs, inputs):
    x, begin, size = inputs
    b = [int(v) for v in const_value(begin, "begin")]
    s = [int(v) for v in const_value(size, "size")]
    if len(b) != len(x.shape) or len(s) != len(x.shape):
        raise ValueError(f"begin and size must have {len(x.shape)} entries")
    shape = []
    for d, bi, si in zip(x.shape, b, s):
        if si == -1:
            shape.append(None if d is None else d - bi)
        else:
            if d is not None and bi + si > d:
                raise ValueError(f"slice [{bi}, {bi + si}) exceeds dim {d}")
            shape.append(si)
    return [(x.dtype, tuple(shape))]


def _slice_kernel(x, begin, size):
    idx = tuple(slice(int(b), None if int(s) == -1 else int(b) + int(s)) for b, s in zip(begin, size))
    return x[idx].copy()


def _slice_vjp(inputs, outputs, grads):
    x, begin, size = inputs
    g, = grads
    b = [int(v) for v in begin.constant]
    if None in x.shape or None in g.shape:
        raise NotImplementedError("the gradient of slice needs static shapes")
    pads = [[bi, d - bi - gd] for bi, d, gd in zip(b, x.shape, g.shape)]
    return [pad(g, pads), None, None]


defop("slice", infer=_slice_infer, kernel=_slice_kernel, vjp=_slice_vjp, num_inputs=(3, 3),
      tflite=Builtin("SLICE", "SliceOptions"))


def _pad_infer(attrs, inputs):
    x, paddings = inputs
    p = np.asarray(const_value(paddings, "paddings")).reshape(-1, 2)
    if p.shape[0] != len(x.shape):
        raise ValueError(f"paddings must be [{len(x.shape)}, 2]")
    return [(x.dtype, tuple(None if d is None else d + int(a) + int(b) for d, (a, b) in zip(x.shape, p)))]


def _pad_vjp(inputs, outputs, grads):
    x, paddings = inputs
    p = np.asarray(paddings.constant).reshape(-1, 2)
    return [slice_(grads[0], [int(a) for a, _ in p], [-1 if d is None else d for d in x.shape]), None]


defop("pad", infer=_pad_infer, kernel=lambda x, p: np.pad(x, np.asarray(p).reshape(-1, 2).tolist()),
      vjp=_pad_vjp, num_inputs=(2, 2), tflite=Builtin("PAD", "PadOptions"))


def _fill_infer(attrs, inputs):
    dims, value = inputs
    if value.shape not in ((), (1,)):
        raise ValueError("the fill value must be a scalar")
    return [(value.dtype, tuple(_static_shape_input(dims)))]


defop("fill", infer=_fill_infer, kernel=lambda dims, v: np.full([int(d) for d in dims], v.reshape(()), dtype=v.dtype),
      vjp=lambda i, o, g: [None, None], num_inputs=(2, 2), tflite=Builtin("FILL", "FillOptions"))


def _one_hot_infer(attrs, inputs):
    idx, depth, on, off = inputs
    d = int(np.asarray(const_value(depth, "depth")).reshape(()))
    a = attrs["axis"]
    shape = list(idx.shape)
    shape.insert(len(shape) if a == -1 else a, d)
    return [(on.dtype, tuple(shape))]


def _one_hot_kernel(idx, depth, on, off, axis=-1):
    d = int(np.asarray(depth).reshape(()))
    hot = np.expand_dims(idx, axis) == np.arange(d).reshape([-1 if i == (axis % (idx.ndim + 1)) else 1
                                                             for i in range(idx.ndim + 1)])
    return np.where(hot, on.reshape(()), off.reshape(()))


defop("one_hot", infer=_one_hot_infer, kernel=_one_hot_kernel, vjp=NOT_DIFFERENTIABLE, num_inputs=(4, 4),
      attrs={"axis": -1}, tflite=Builtin("ONE_HOT", "OneHotOptions", {"axis": "int"}))


# -- the frontend functions --------------------------------------------------------------------
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
