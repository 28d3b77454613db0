"""Shape ops: reshape, transpose, expand/squeeze, broadcast, shape, gather, concat, slice, fill, one_hot."""
from __future__ import annotations

import numpy as np

from ..ir import format_shape
from ..registry import NOT_DIFFERENTIABLE, Builtin, defop
from ..trace import builder_of
from ._util import checked_dims, const_value, normalize_axes, unbroadcast


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
    if not attrs["squeeze_dims"] and None in x.shape:
        raise ValueError(f"name the squeeze_dims: with unknown dims in {format_shape(x.shape)} the "
                         "output's rank would depend on the run-time shape")
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
    """x's dims stretch to the target (a 1 or an equal dim); the target's rank is at least x's."""
    x, shape = inputs
    target = _static_shape_input(shape)
    lead = len(target) - len(x.shape)
    if lead < 0:
        raise ValueError(f"cannot broadcast {format_shape(x.shape)} to the lower rank of {target}")
    out = list(target[:lead])
    for d, t in zip(x.shape, target[lead:]):
        if t is None:
            out.append(None if d in (1, None) else d)
        elif d in (1, None, t):
            out.append(t)
        else:
            raise ValueError(f"cannot broadcast {format_shape(x.shape)} to {target}: dim {d} is not 1 or {t}")
    return [(x.dtype, tuple(out))]


defop("broadcast_to", infer=_broadcast_to_infer,
      kernel=lambda x, shape: np.broadcast_to(x, checked_dims(shape, "broadcast_to")).copy(),
      vjp=lambda i, o, g: [unbroadcast(g[0], i[0]), None], num_inputs=(2, 2),
      tflite=Builtin("BROADCAST_TO", version=2))


def _shape_infer(attrs, inputs):
    if attrs["out_type"] not in ("int32", "int64"):
        raise ValueError(f"out_type must be int32 or int64, got {attrs['out_type']!r}")
    return [(attrs["out_type"], (len(inputs[0].shape),))]


defop("shape", infer=_shape_infer,
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
        bad = int(idx.min()) if idx.min() < 0 else int(idx.max())
        raise IndexError(f"gather index {bad} is out of range [0, {x.shape[axis]})")
    return np.take(x, idx, axis=axis)


def _gather_vjp(inputs, outputs, grads, axis=0, batch_dims=0):
    """Scatter-add as a one-hot product: with x viewed as [P, n, Q] and the K indices flattened,
    g is [P, K, Q] and dx = one_hot(indices, n)^T @ g (repeated indices add up)."""
    from . import batch_matmul, one_hot
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


def _prod(dims):
    return None if None in dims else int(np.prod(dims, dtype=np.int64))


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
            known = {t.shape[i] for t in inputs if t.shape[i] is not None}
            if len(known) > 1:
                raise ValueError(f"dim {i} differs between the inputs: "
                                 f"{', '.join(format_shape(t.shape) for t in inputs)}")
            shape[i] = known.pop() if known else None
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
        if bi < 0 or si < -1 or (d is not None and bi > d):
            raise ValueError(f"begin {b} and size {s} do not fit {format_shape(x.shape)} "
                             "(begin must be in [0, dim], size >= 0 or -1)")
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
    pads = []
    for bi, si, d in zip(begin.constant.tolist(), size.constant.tolist(), x.shape):
        if si != -1 and d is None:
            raise NotImplementedError("the gradient of slice needs the size of every dim it cuts short")
        pads.append([bi, 0 if si == -1 else d - bi - si])
    return [pad(g, pads), None, None]


defop("slice", infer=_slice_infer, kernel=_slice_kernel, vjp=_slice_vjp, num_inputs=(3, 3),
      tflite=Builtin("SLICE", "SliceOptions"))


def _pad_infer(attrs, inputs):
    x, paddings = inputs
    p = np.asarray(const_value(paddings, "paddings"))
    if p.shape != (len(x.shape), 2):
        raise ValueError(f"paddings must be [{len(x.shape)}, 2], got {list(p.shape)}")
    if (p < 0).any():
        raise ValueError(f"paddings must not be negative, got {p.tolist()}")
    return [(x.dtype, tuple(None if d is None else d + int(a) + int(b) for d, (a, b) in zip(x.shape, p)))]


def _pad_vjp(inputs, outputs, grads):
    x, paddings = inputs
    p = np.asarray(paddings.constant).reshape(-1, 2)
    if any(d is None and after for d, (_, after) in zip(x.shape, p)):
        raise NotImplementedError("the gradient of pad needs the size of an unknown dim padded after its end")
    return [slice_(grads[0], [int(a) for a, _ in p], [-1 if d is None else d for d in x.shape]), None]


def _pad_kernel(x, p):
    p = np.asarray(p).reshape(-1, 2)
    if p.shape[0] == x.ndim:
        checked_dims([d + int(a) + int(b) for d, (a, b) in zip(x.shape, p)], "pad")
    return np.pad(x, p.tolist())


defop("pad", infer=_pad_infer, kernel=_pad_kernel,
      vjp=_pad_vjp, num_inputs=(2, 2), tflite=Builtin("PAD", "PadOptions"))


def _fill_infer(attrs, inputs):
    dims, value = inputs
    if dims.dtype not in ("int32", "int64"):
        raise ValueError(f"dims must be int32 or int64, got {dims.dtype}")
    if value.shape not in ((), (1,)):
        raise ValueError("the fill value must be a scalar")
    return [(value.dtype, tuple(_static_shape_input(dims)))]


defop("fill", infer=_fill_infer, kernel=lambda dims, v: np.full(checked_dims(dims, "fill"), v.reshape(()), dtype=v.dtype),
      vjp=lambda i, o, g: [None, _fill_value_grad(g[0], i[1])], num_inputs=(2, 2),
      tflite=Builtin("FILL", "FillOptions"))


def _fill_value_grad(g, value):
    """Every output element is the value: its gradient is the sum of the output's."""
    from . import reduce_sum
    total = reduce_sum(g) if g.ndim else g
    return total if value.ndim == 0 else reshape(total, [1])


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
