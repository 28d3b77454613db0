"""Shape ops: reshape, transpose, expand/squeeze, broadcast, shape, concat, slice, strided_slice, pad,
fill, tile, pack and range."""
from __future__ import annotations

import numpy as np

from ..core.ir import format_shape
from ..core.registry import NOT_DIFFERENTIABLE, Builtin, defop
from ..core.trace import builder_of
from ._util import checked_dims, const_value, no_fused_activation, normalize_axes, sized, static_shape, unbroadcast
from .api import pad, reduce_sum, reshape, scatter_nd, shape_of, slice_, transpose


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
      allocates=lambda x, shape: sized(x.dtype, np.asarray(shape).reshape(-1), "broadcast_to"),
      tflite=Builtin("BROADCAST_TO", version=2))


def _shape_infer(attrs, inputs):
    if attrs["out_type"] not in ("int32", "int64"):
        raise ValueError(f"out_type must be int32 or int64, got {attrs['out_type']!r}")
    return [(attrs["out_type"], (len(inputs[0].shape),))]


defop("shape", infer=_shape_infer,
      kernel=lambda x, out_type="int32": np.asarray(x.shape, dtype=out_type),
      vjp=NOT_DIFFERENTIABLE, attrs={"out_type": "int32"}, num_inputs=(1, 1),
      tflite=Builtin("SHAPE", "ShapeOptions", {"out_type": "dtype"}))


def _prod(dims):
    return None if None in dims else int(np.prod(dims, dtype=np.int64))


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


def _pad_allocates(x, p):
    p = np.asarray(p).reshape(-1, 2)
    if p.shape[0] != x.ndim:  # the kernel says what is wrong
        return x.dtype, x.shape, 0
    return sized(x.dtype, [d + int(a) + int(b) for d, (a, b) in zip(x.shape, p)], "pad")


defop("pad", infer=_pad_infer, kernel=_pad_kernel, allocates=_pad_allocates,
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
      allocates=lambda dims, v: sized(v.dtype, np.asarray(dims).reshape(-1), "fill"),
      tflite=Builtin("FILL", "FillOptions"))


def _fill_value_grad(g, value):
    """Every output element is the value: its gradient is the sum of the output's."""
    total = reduce_sum(g) if g.ndim else g
    return total if value.ndim == 0 else reshape(total, [1])




# -- PACK -------------------------------------------------------------------------------------------------
def _pack_infer(attrs, inputs):
    first = inputs[0]
    if any(t.dtype != first.dtype or len(t.shape) != len(first.shape) for t in inputs):
        raise ValueError("pack inputs must share dtype and rank")
    shape = tuple(next((d for d in dims if d is not None), None) for dims in zip(*[t.shape for t in inputs]))
    for t in inputs:
        if any(a is not None and b is not None and a != b for a, b in zip(t.shape, shape)):
            raise ValueError(f"pack inputs must have one shape, got {[list(t.shape) for t in inputs]}")
    rank = len(shape) + 1
    axis = attrs["axis"]
    if not -rank <= axis < rank:
        raise ValueError(f"axis {axis} is out of range for rank {rank}")
    if attrs["values_count"] not in (0, len(inputs)):
        raise ValueError(f"values_count {attrs['values_count']} but {len(inputs)} inputs")
    axis %= rank
    return [(first.dtype, shape[:axis] + (len(inputs),) + shape[axis:])]


def _pack_vjp(inputs, outputs, grads, axis=0, values_count=0):
    g, = grads
    shape = static_shape(outputs[0], "pack's output")
    axis %= len(shape)
    out = []
    for i, x in enumerate(inputs):
        begin = [0] * len(shape)
        begin[axis] = i
        size = list(shape)
        size[axis] = 1
        out.append(reshape(slice_(g, begin, size), list(static_shape(x, "a pack input"))))
    return out


defop("pack", infer=_pack_infer, kernel=lambda *xs, axis=0, values_count=0: np.stack(xs, axis=axis),
      vjp=_pack_vjp, attrs={"axis": 0, "values_count": 0}, num_inputs=(1, None),
      tflite=Builtin("PACK", "PackOptions", {"axis": "int", "values_count": "int"}))


# -- TILE -------------------------------------------------------------------------------------------------
def _tile_infer(attrs, inputs):
    x, m = inputs
    if m.dtype not in ("int32", "int64") or len(m.shape) != 1 or m.shape[0] not in (None, len(x.shape)):
        raise ValueError(f"multiples must be an int vector of length {len(x.shape)}")
    if m.data is None:
        return [(x.dtype, (None,) * len(x.shape))]
    reps = [int(v) for v in m.data]
    if any(r < 0 for r in reps):
        raise ValueError(f"negative multiples {reps}")
    return [(x.dtype, tuple(None if d is None else d * r for d, r in zip(x.shape, reps)))]


def _tile_vjp(inputs, outputs, grads):
    x, m = inputs
    shape = static_shape(x, "tile's input")
    reps = [int(v) for v in const_value(m.info, "multiples")]
    split = [d for r, s in zip(reps, shape) for d in (r, s)]
    g = reshape(grads[0], split)
    return [reshape(reduce_sum(g, list(range(0, 2 * len(shape), 2))), list(shape)), None]


def _tile_allocates(x, m):
    reps = [int(v) for v in np.asarray(m).reshape(-1)]
    if len(reps) != x.ndim:  # the kernel says what is wrong
        return x.dtype, x.shape, 0
    if any(r < 0 for r in reps):
        raise ValueError(f"tile: negative multiples {reps}")
    return sized(x.dtype, [d * r for d, r in zip(x.shape, reps)], "tile")


defop("tile", infer=_tile_infer, kernel=lambda x, m: np.tile(x, [int(v) for v in m]), vjp=_tile_vjp,
      allocates=_tile_allocates, num_inputs=(2, 2), tflite=Builtin("TILE", "TileOptions"))


# -- STRIDED_SLICE ----------------------------------------------------------------------------------------
SS_ATTRS = {"begin_mask": 0, "end_mask": 0, "ellipsis_mask": 0, "new_axis_mask": 0, "shrink_axis_mask": 0,
            "offset": False}


def _ss_index(shape, begin, end, strides, begin_mask=0, end_mask=0, ellipsis_mask=0, new_axis_mask=0,
              shrink_axis_mask=0, offset=False):
    """The NumPy index (a tuple of slices / ints) of a strided slice; dims may be None."""
    if ellipsis_mask or new_axis_mask:
        raise ValueError("strided_slice with ellipsis_mask or new_axis_mask is not supported")
    n = len(begin)
    if not (len(end) == len(strides) == n) or n > len(shape):
        raise ValueError(f"begin/end/strides lengths {len(begin)}/{len(end)}/{len(strides)} do not fit rank {len(shape)}")
    index = []
    for i in range(n):
        b, e, s = int(begin[i]), int(end[i]), int(strides[i])
        if s == 0:
            raise ValueError("strided_slice stride 0")
        if offset:
            e = b + e
        if shrink_axis_mask >> i & 1:
            index.append(b)
            continue
        index.append(slice(None if begin_mask >> i & 1 else b, None if end_mask >> i & 1 else e, s))
    return tuple(index)


def _ss_infer(attrs, inputs):
    x, begin, end, strides = inputs
    b, e, s = (const_value(t, name) for t, name in ((begin, "begin"), (end, "end"), (strides, "strides")))
    index = _ss_index(x.shape, b, e, s, **attrs)
    out = []
    for i, d in enumerate(x.shape):
        if i >= len(index):
            out.append(d)
        elif isinstance(index[i], int):
            if d is not None and not -d <= index[i] < d:
                raise ValueError(f"shrink index {index[i]} is out of range for dim {d}")
        else:
            out.append(None if d is None else len(range(*index[i].indices(d))))
    return [(x.dtype, tuple(out))]


def _ss_kernel(x, begin, end, strides, **attrs):
    return np.array(x[_ss_index(x.shape, begin, end, strides, **attrs)])


def _ss_vjp(inputs, outputs, grads, **attrs):
    """Scatter the gradient back to the sliced positions (their flat indices are constants)."""
    x, begin, end, strides = inputs
    shape = static_shape(x, "strided_slice's input")
    flat = np.arange(int(np.prod(shape)), dtype=np.int32).reshape(shape)
    b, e, s = (const_value(t.info, n) for t, n in ((begin, "begin"), (end, "end"), (strides, "strides")))
    picked = np.asarray(flat[_ss_index(shape, b, e, s, **attrs)]).reshape(-1, 1)
    fb = builder_of(grads[0])
    g = scatter_nd(fb.const(picked), reshape(grads[0], [-1]), [int(np.prod(shape))])
    return [reshape(g, list(shape)), None, None, None]


defop("strided_slice", infer=_ss_infer, kernel=_ss_kernel, vjp=_ss_vjp, attrs=SS_ATTRS, num_inputs=(4, 4),
      tflite=Builtin("STRIDED_SLICE", "StridedSliceOptions",
                     {"begin_mask": "int", "end_mask": "int", "ellipsis_mask": "int", "new_axis_mask": "int",
                      "shrink_axis_mask": "int", "offset": "bool"}))


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
    if all(t.data is not None for t in inputs):  # constant bounds: a known length
        s, l, d = (np.asarray(t.data).reshape(()) for t in inputs)
        if d != 0:
            return [(dtype, (max(0, int(np.ceil((l - s) / d))),))]
    return [(dtype, (None,))]


def _range_kernel(start, limit, delta):
    s, l, d = (np.asarray(v).reshape(()) for v in (start, limit, delta))
    if d == 0:
        raise ValueError("range delta must not be zero")
    if (l > s and d < 0) or (l < s and d > 0):
        raise ValueError(f"range from {s} to {l} never ends with delta {d}")
    return np.arange(s, l, d, dtype=np.asarray(start).dtype)


def _range_allocates(start, limit, delta):
    s, l, d = (np.asarray(v).reshape(()) for v in (start, limit, delta))
    if d == 0:  # the kernel says what is wrong
        return s.dtype, (0,), 0
    span = (float(l) - float(s)) / float(d)
    if not np.isfinite(span):
        raise ValueError(f"range from {s} to {l} by {d} has no finite length")
    return sized(np.asarray(start).dtype, [max(0, int(np.ceil(span)))], "range")


defop("range", infer=_range_infer, kernel=_range_kernel, vjp=NOT_DIFFERENTIABLE, num_inputs=(3, 3),
      allocates=_range_allocates, tflite=Builtin("RANGE", "RangeOptions"))
