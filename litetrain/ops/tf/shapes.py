"""TensorFlow's shape-gradient helpers that its gradients leave in files: BroadcastGradientArgs (which
axes a broadcast operand's gradient is summed over) and StridedSliceGrad (a slice's gradient
scattered back into zeros of the input's shape), written from array_ops.cc, bcast.h and
strided_slice_op.cc (the full slice spec: begin/end/ellipsis/new-axis/shrink masks, negative
indices and strides).
"""
from __future__ import annotations

import numpy as np

from ...core.ir import numpy_dtype
from .common import check_t, sized_by, tf_op

SS_ATTRS = {"T": "float32", "Index": "int32", "begin_mask": 0, "end_mask": 0, "ellipsis_mask": 0,
            "new_axis_mask": 0, "shrink_axis_mask": 0}


# -- BroadcastGradientArgs -----------------------------------------------------------------------------
def broadcast_reductions(s0, s1):
    """TensorFlow's BCast without its fewer-dims optimisation: for each operand, the output axes its
    gradient is summed over (where it is 1 and the other is not, and where both are 1)."""
    n = max(len(s0), len(s1))
    a = (1,) * (n - len(s0)) + tuple(s0)
    b = (1,) * (n - len(s1)) + tuple(s1)
    r0, r1 = [], []
    for k, (x, y) in enumerate(zip(a, b)):
        if x == y:
            if x == 1:
                r0.append(k)
                r1.append(k)
        elif x == 1:
            r0.append(k)
        elif y == 1:
            r1.append(k)
        else:
            raise ValueError(f"BroadcastGradientArgs: incompatible shapes {list(s0)} and {list(s1)}")
    return r0, r1


def _broadcast_gradient_args(s0, s1, T="int32"):
    shapes = []
    for s in (s0, s1):
        s = np.asarray(s)
        if s.ndim != 1 or s.dtype != numpy_dtype(T):
            raise ValueError(f"BroadcastGradientArgs: the shapes must be {T} vectors, got {s.dtype}{list(s.shape)}")
        shapes.append([int(d) for d in s])
    r0, r1 = broadcast_reductions(*shapes)
    return np.asarray(r0, numpy_dtype(T)), np.asarray(r1, numpy_dtype(T))


def _broadcast_gradient_args_infer(attrs, inputs):
    if attrs["T"] not in ("int32", "int64"):
        raise ValueError(f"T must be int32 or int64, got {attrs['T']}")
    for t in inputs:
        check_t(attrs, t)
        if len(t.shape) != 1:
            raise ValueError(f"the shapes must be vectors, got {list(t.shape)}")
    if all(t.data is not None for t in inputs):
        r0, r1 = _broadcast_gradient_args(inputs[0].data, inputs[1].data, attrs["T"])
        return [(attrs["T"], r0.shape), (attrs["T"], r1.shape)]
    return [(attrs["T"], (None,)), (attrs["T"], (None,))]


tf_op("BroadcastGradientArgs", infer=_broadcast_gradient_args_infer, kernel=_broadcast_gradient_args,
      num_inputs=(2, 2), attrs={"T": "int32"})


# -- StridedSliceGrad -----------------------------------------------------------------------------------
def _dense_spec(rank, n, masks):
    """The sparse slice spec (n entries, with ellipsis and new axes) as one entry per input dim:
    [(sparse index or None for a whole dim taken by the ellipsis, shrink?)]."""
    ellipsis, new_axis, shrink = masks["ellipsis_mask"], masks["new_axis_mask"], masks["shrink_axis_mask"]
    if ellipsis & (ellipsis - 1):
        raise ValueError("StridedSliceGrad: multiple ellipses in slice spec not allowed")
    after = 0
    seen = False
    for i in range(n):
        after += seen and bool(new_axis >> i & 1)
        seen = seen or bool(ellipsis >> i & 1)
    if not seen:  # an implicit ellipsis at the end takes the dims no entry names
        ellipsis |= 1 << n
        n += 1
    dense = []
    for i in range(n):
        if ellipsis >> i & 1:
            take = min(rank - (n - i) + 1 + after, rank) - len(dense)
            dense += [(None, False)] * max(take, 0)
        elif not new_axis >> i & 1:
            if len(dense) == rank:
                raise ValueError(f"StridedSliceGrad: index out of range using input dim {len(dense)}; the input has "
                                 f"only {rank} dims")
            dense.append((i, bool(shrink >> i & 1)))
    return dense


def slice_indices(shape, begin, end, strides, **masks):
    """For each input dim, the indices a strided slice takes (TensorFlow's canonical begin/end)."""
    dense = _dense_spec(len(shape), len(begin), masks)
    out = []
    for dim, (i, shrink) in zip(shape, dense):
        if i is None:
            out.append(np.arange(dim))
            continue
        s = int(strides[i])
        if s == 0:
            raise ValueError(f"StridedSliceGrad: strides[{i}] must be non-zero")
        if shrink:
            k = int(begin[i]) + (dim if int(begin[i]) < 0 else 0)
            if s < 0 or not 0 <= k < dim:
                raise ValueError(f"StridedSliceGrad: slice index {int(begin[i])} of dimension {len(out)} out of "
                                 f"bounds (size {dim}, stride {s})" if s > 0 else
                                 "StridedSliceGrad: only stride 1 allowed on non-range indexing")
            out.append(np.array([k]))
            continue
        b = _canonical(begin[i], 0, masks["begin_mask"] >> i & 1, dim, s)
        e = _canonical(end[i], 1, masks["end_mask"] >> i & 1, dim, s)
        out.append(np.arange(b, e, s))
    return out


def _canonical(x, which, masked, dim, stride):
    """TensorFlow's canonical begin (which=0) or end (1) of a range along a dim of size `dim`:
    masked, the dim's first/last end for the stride's direction; else x (negative from the end)
    clamped to the range [0, dim] (stride > 0) or [-1, dim - 1] (stride < 0)."""
    lo, hi = (0, dim) if stride > 0 else (-1, dim - 1)
    if masked:
        return (lo, hi)[which] if stride > 0 else (hi, lo)[which]
    x = int(x) + (dim if int(x) < 0 else 0)
    return min(max(x, lo), hi)


def _strided_slice_grad(shape, begin, end, strides, dy, T="float32", Index="int32", **masks):
    dims = [int(d) for d in np.asarray(shape).reshape(-1)]
    vectors = [np.asarray(v).reshape(-1) for v in (begin, end, strides)]
    if min(dims, default=0) < 0 or len({v.size for v in vectors}) != 1:
        raise ValueError(f"StridedSliceGrad: shape {dims} and begin/end/strides of lengths "
                         f"{[v.size for v in vectors]} do not fit")
    index = slice_indices(dims, *vectors, **masks)
    lengths = [len(ix) for ix in index]
    if int(np.prod(lengths)) != np.asarray(dy).size:
        raise ValueError(f"StridedSliceGrad: dy {list(np.shape(dy))} does not fit the slice, which takes "
                         f"{lengths} of {dims}")
    out = np.zeros(dims, np.asarray(dy).dtype)
    out[np.ix_(*index)] = np.reshape(dy, lengths)
    return out


def _strided_slice_grad_infer(attrs, inputs):
    shape, dy = inputs[0], inputs[4]
    check_t(attrs, dy)
    for t in inputs[:4]:
        check_t(attrs, t, "Index")
        if len(t.shape) != 1:
            raise ValueError(f"shape, begin, end and strides must be vectors, got {list(t.shape)}")
    if shape.data is not None:
        return [(dy.dtype, tuple(int(d) for d in shape.data))]
    if shape.shape[0] is None:
        raise ValueError("the output's rank is known when the shape is")
    return [(dy.dtype, (None,) * shape.shape[0])]


tf_op("StridedSliceGrad", infer=_strided_slice_grad_infer, kernel=_strided_slice_grad, num_inputs=(5, 5),
      attrs=SS_ATTRS, allocates=sized_by(0, 4, times=1))
