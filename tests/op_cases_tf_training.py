"""Op table rows for what TensorFlow's training files add (litetrain/ops/split.py and the Flex ops of
litetrain/ops/tf/ that batch norm, depthwise convolutions, average pooling and recurrent layers need).

References are PyTorch (torch.split/unbind/stack, and torch.autograd for TensorFlow's gradient
kernels: the gradient TensorFlow computes is the one autograd gives for the same forward op, padding
and layout) or NumPy written differently from the kernels. The builtins (SPLIT, UNPACK, ADD_N) also
run in LiteRT and have their gradients checked through tests/test_ops.py. TensorFlow's tensor lists
are not arrays: tests/test_flex.py runs them (VALUE_EXEMPT below).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from op_cases import Bad, Case, NumPy, Torch, const, value, x

NO_GRAD = "TensorFlow's own gradient kernels: a file contains them, litetrain never differentiates them"
_LIST_TESTS = "tests/test_flex.py runs the tensor-list ops together; tests/test_tf_fixtures.py runs the LSTM/GRU files"
VALUE_EXEMPT = {f"tf.{name}": f"a tensor list (variant) in or out; {_LIST_TESTS}" for name in (
    "EmptyTensorList", "TensorListReserve", "TensorListFromTensor", "TensorListGetItem", "TensorListSetItem",
    "TensorListStack", "TensorListPushBack", "TensorListPopBack", "TensorListElementShape", "TensorListLength")}


# -- SPLIT, UNPACK, ADD_N -----------------------------------------------------------------------------------
def _split(k):
    return Torch(lambda axis, t, num_splits=1: torch.chunk(t, num_splits, int(axis))[k])


def _unpack(k):
    return Torch(lambda t, num=1, axis=0: torch.unbind(t, axis)[k])


def _add_n(*ts):
    return torch.stack(ts).sum(0)


# -- FusedBatchNormV3 and its gradient, through torch ----------------------------------------------------
def _nhwc(t, data_format):
    return t if data_format.endswith("C") else t.movedim(1, -1)


def _back(t, data_format):
    return t if data_format.endswith("C") else t.movedim(-1, 1)


def _bn_forward(k):
    """Output k of FusedBatchNormV3, in float64: y, running mean, running (unbiased) variance, batch
    mean, batch (biased) variance."""
    def fn(t, scale, offset, mean, var, epsilon=1e-4, exponential_avg_factor=1.0, data_format="NHWC",
           is_training=True, **_):
        t64 = _nhwc(t, data_format).double()
        flat = t64.reshape(-1, t64.shape[-1])
        if not is_training:
            y = (t64 - mean.double()) / torch.sqrt(var.double() + epsilon) * scale.double() + offset.double()
            return [_back(y, data_format).float(), mean, var, mean, var][k]
        bm, bv, uv = flat.mean(0), flat.var(0, unbiased=False), flat.var(0, unbiased=True)
        y = (t64 - bm) / torch.sqrt(bv + epsilon) * scale.double() + offset.double()
        a = exponential_avg_factor
        running = ((1 - a) * mean.double() + a * bm, (1 - a) * var.double() + a * uv) if a != 1 else (bm, uv)
        return [_back(y, data_format), *running, bm, bv][k].float()
    return Torch(fn)


def _bn_grad(k):
    """Output k of FusedBatchNormGradV3 (x, scale, offset backprop): torch.autograd of batch norm in
    float64, with the batch's statistics (is_training) or the given ones held fixed."""
    def fn(dy, t, scale, mean, var, _reserve, epsilon=1e-4, data_format="NHWC", is_training=True, **_):
        xs = _nhwc(t, data_format).double().requires_grad_(True)
        sc = scale.double().requires_grad_(True)
        off = torch.zeros_like(sc, requires_grad=True)
        if is_training:
            flat = xs.reshape(-1, xs.shape[-1])
            m, v = flat.mean(0), flat.var(0, unbiased=False)
        else:
            m, v = mean.double(), var.double()
        y = (xs - m) / torch.sqrt(v + epsilon) * sc + off
        y.backward(_nhwc(dy, data_format).double())
        return [_back(xs.grad, data_format), sc.grad, off.grad][k].float()
    return Torch(fn)


_RNG = np.random.default_rng(17)
_BN_X = _RNG.standard_normal((2, 3, 4, 3)).astype(np.float32) * 2 + 0.5
_BN_MEAN = _BN_X.reshape(-1, 3).mean(0, dtype=np.float64).astype(np.float32)
_BN_VAR = _BN_X.reshape(-1, 3).var(0, dtype=np.float64).astype(np.float32)
_BN_X_NCHW = np.ascontiguousarray(np.moveaxis(_BN_X, -1, 1))


def _positive(*shape):
    return x(*shape, gen=lambda rng, s, d: rng.uniform(0.5, 2.0, s).astype(d))


# float attributes as a file holds them (float32 values): they then round-trip through a file unchanged
BN = {"T": "float32", "U": "float32", "epsilon": float(np.float32(1e-3)), "data_format": "NHWC", "is_training": True}
BN_KERAS = {**BN, "exponential_avg_factor": float(np.float32(0.01))}  # what Keras writes (momentum 0.99)


def _bn_grad_inputs(x_arr, c=3):
    return (x(*x_arr.shape), value(x_arr, "float32"), _positive(c), value(_BN_MEAN, "float32"),
            value(_BN_VAR, "float32"), x())


# -- depthwise convolution and average pooling gradients, through torch.autograd ------------------------------
def _tf_pads(size, k, stride, padding):
    if padding == "VALID":
        return 0, 0
    total = max((-(-size // stride) - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


def _to_nchw(t, data_format):
    return t if data_format == "NCHW" else t.permute(0, 3, 1, 2)


def _from_nchw(t, data_format):
    return t if data_format == "NCHW" else t.permute(0, 2, 3, 1)


def _hw(attr, data_format):
    return (attr[2], attr[3]) if data_format == "NCHW" else (attr[1], attr[2])


def _depthwise_forward(xt, wt, strides, padding, data_format):
    """TensorFlow's depthwise convolution (filter [kh, kw, C, M], output channel c * M + m) with torch's
    grouped convolution."""
    kh, kw, c, m = wt.shape
    t = _to_nchw(xt, data_format)
    (sh, sw) = _hw(strides, data_format)
    top, bottom = _tf_pads(t.shape[2], kh, sh, padding)
    left, right = _tf_pads(t.shape[3], kw, sw, padding)
    weight = wt.permute(2, 3, 0, 1).reshape(c * m, 1, kh, kw)
    y = F.conv2d(F.pad(t, (left, right, top, bottom)), weight, stride=(sh, sw), groups=c)
    return _from_nchw(y, data_format)


def _depthwise_filter_grad(xt, sizes, dy, strides=(1, 1, 1, 1), padding="VALID", data_format="NHWC", **_):
    w = torch.zeros([int(v) for v in sizes], dtype=xt.dtype, requires_grad=True)
    _depthwise_forward(xt, w, strides, padding, data_format).backward(dy)
    return w.grad


def _depthwise_input_grad(sizes, wt, dy, strides=(1, 1, 1, 1), padding="VALID", data_format="NHWC", **_):
    xt = torch.zeros([int(v) for v in sizes], dtype=wt.dtype, requires_grad=True)
    _depthwise_forward(xt, wt, strides, padding, data_format).backward(dy)
    return xt.grad


def _avg_pool_grad(sizes, dy, ksize=(1, 1, 1, 1), strides=(1, 1, 1, 1), padding="VALID", data_format="NHWC", **_):
    """The average over the window's values inside the input (TensorFlow excludes the padding): window
    sums of the zero-padded input over window sums of ones; its gradient by torch.autograd."""
    xt = torch.zeros([int(v) for v in sizes], dtype=dy.dtype, requires_grad=True)
    t = _to_nchw(xt, data_format)
    (kh, kw), (sh, sw) = _hw(ksize, data_format), _hw(strides, data_format)
    top, bottom = _tf_pads(t.shape[2], kh, sh, padding)
    left, right = _tf_pads(t.shape[3], kw, sw, padding)

    def window_sums(a):
        return F.avg_pool2d(F.pad(a, (left, right, top, bottom)), (kh, kw), (sh, sw)) * (kh * kw)
    y = window_sums(t) / window_sums(torch.ones_like(t))
    _from_nchw(y, data_format).backward(dy)
    return xt.grad


# -- BroadcastGradientArgs, StridedSliceGrad, AddN, ZerosLike -------------------------------------------------
def _reduction_axes(k):
    """The axes (of the broadcast shape) where operand k, padded with leading 1s, has size 1."""
    def fn(s0, s1, T="int32"):
        shapes = [list(s0), list(s1)]
        n = max(map(len, shapes))
        padded = [1] * (n - len(shapes[k])) + shapes[k]
        return np.array([a for a in range(n) if padded[a] == 1], np.int32)
    return NumPy(fn)


def _python_slices(shape, begin, end, strides, begin_mask=0, end_mask=0, shrink_axis_mask=0, **_):
    """The slice as Python indexing (which takes negative strides and clamps as TensorFlow does)."""
    index = []
    for i, (b0, e0, s0) in enumerate(zip(begin, end, strides)):
        if shrink_axis_mask >> i & 1:
            index.append(int(b0))
        else:
            index.append(slice(None if begin_mask >> i & 1 else int(b0), None if end_mask >> i & 1 else int(e0),
                               int(s0)))
    return tuple(index) + (Ellipsis,)


def _strided_slice_grad(shape, begin, end, strides, dy, **attrs):
    out = np.zeros([int(d) for d in shape], dy.dtype)
    out[_python_slices(shape, begin, end, strides, **attrs)] = dy
    return out


SS = {"T": "float32", "Index": "int32", "begin_mask": 0, "end_mask": 0, "ellipsis_mask": 0, "new_axis_mask": 0,
      "shrink_axis_mask": 0}
DW = {"T": "float32", "explicit_paddings": (), "dilations": (1, 1, 1, 1)}
DW_SAME_S2 = {**DW, "strides": (1, 2, 2, 1), "padding": "SAME", "data_format": "NHWC"}  # the fixture's
DW_VALID_NCHW = {**DW, "strides": (1, 1, 1, 2), "padding": "VALID", "data_format": "NCHW"}
AVG = {"T": "float32"}
TOL = {"grad": NO_GRAD, "rtol": 1e-4, "atol": 1e-5}

CASES = [
    Case("split", "axis1-in-3", (const(1), x(2, 6, 3)), _split(1), {"num_splits": 3}, output=1),
    Case("split", "axis-last-in-2", (const(-1), x(4, 2, 4)), _split(0), {"num_splits": 2}),
    Case("split", "one", (const(0), x(3, 2)), _split(0), {"num_splits": 1}),
    Case("split", "unknown-batch", (const(1), x(3, 8, traced=(None, 8))), _split(3), {"num_splits": 4}, output=3),
    Case("unpack", "axis0", (x(3, 4),), _unpack(2), {"num": 3, "axis": 0}, output=2),
    Case("unpack", "axis-last", (x(2, 3, 2),), _unpack(1), {"num": 2, "axis": -1}, output=1),
    Case("unpack", "one", (x(1, 5),), _unpack(0), {"num": 1, "axis": 0}),
    Case("add_n", "three", (x(2, 3), x(2, 3), x(2, 3)), Torch(_add_n)),
    Case("add_n", "int32", (x(2, 2, dtype="int32", gen=lambda r, s, d: r.integers(-5, 5, s).astype(d)),) * 2,
         Torch(_add_n)),
    Case("add_n", "unknown-batch", (x(3, 2, traced=(None, 2)), x(3, 2, traced=(None, 2))), Torch(_add_n)),
    # batch norm
    *[Case("tf.FusedBatchNormV3", f"train-keras-out{k}", (value(_BN_X, "float32"), _positive(3), x(3),
                                                          x(3), _positive(3)),
           _bn_forward(k), BN_KERAS, output=k, **TOL) for k in range(5)],
    Case("tf.FusedBatchNormV3", "train-factor1", (x(3, 2, 2, 4), _positive(4), x(4), x(0), x(0)),
         _bn_forward(0), {**BN, "exponential_avg_factor": 1.0}, **TOL),
    Case("tf.FusedBatchNormV3", "train-factor1-var", (x(3, 2, 2, 4), _positive(4), x(4), x(0), x(0)),
         _bn_forward(2), {**BN, "exponential_avg_factor": 1.0}, output=2, **TOL),
    Case("tf.FusedBatchNormV3", "train-nchw", (value(_BN_X_NCHW, "float32"), _positive(3), x(3), x(3), _positive(3)),
         _bn_forward(0), {**BN_KERAS, "data_format": "NCHW"}, **TOL),
    Case("tf.FusedBatchNormV3", "inference", (x(2, 3, 3, 2), _positive(2), x(2), x(2), _positive(2)),
         _bn_forward(0), {**BN, "is_training": False}, **TOL),
    *[Case("tf.FusedBatchNormGradV3", f"train-out{k}", _bn_grad_inputs(_BN_X), _bn_grad(k), BN, output=k, **TOL)
      for k in range(3)],
    Case("tf.FusedBatchNormGradV3", "train-nchw", _bn_grad_inputs(_BN_X_NCHW), _bn_grad(0),
         {**BN, "data_format": "NCHW"}, **TOL),
    *[Case("tf.FusedBatchNormGradV3", f"frozen-out{k}", (x(2, 2, 3, 2), x(2, 2, 3, 2), _positive(2), x(2),
                                                         _positive(2), x()),
           _bn_grad(k), {**BN, "is_training": False}, output=k, **TOL) for k in range(3)],
    # depthwise convolution and average pooling
    Case("tf.DepthwiseConv2dNativeBackpropFilter", "same-stride2-m2",
         (x(2, 7, 6, 3), const([3, 3, 3, 2]), x(2, 4, 3, 6)), Torch(_depthwise_filter_grad), DW_SAME_S2, **TOL),
    Case("tf.DepthwiseConv2dNativeBackpropFilter", "valid-nchw", (x(1, 2, 5, 6), const([2, 3, 2, 1]), x(1, 2, 4, 2)),
         Torch(_depthwise_filter_grad), DW_VALID_NCHW, **TOL),
    Case("tf.DepthwiseConv2dNativeBackpropInput", "same-stride2-m2",
         (const([2, 7, 6, 3]), x(3, 3, 3, 2), x(2, 4, 3, 6)), Torch(_depthwise_input_grad), DW_SAME_S2, **TOL),
    Case("tf.DepthwiseConv2dNativeBackpropInput", "valid-nchw", (const([1, 2, 5, 6]), x(2, 3, 2, 1), x(1, 2, 4, 2)),
         Torch(_depthwise_input_grad), DW_VALID_NCHW, **TOL),
    Case("tf.AvgPoolGrad", "valid-2x2", (const([2, 6, 4, 3]), x(2, 3, 2, 3)), Torch(_avg_pool_grad),
         {**AVG, "ksize": (1, 2, 2, 1), "strides": (1, 2, 2, 1), "padding": "VALID", "data_format": "NHWC"}, **TOL),
    Case("tf.AvgPoolGrad", "same-3x3-stride2", (const([1, 5, 6, 2]), x(1, 3, 3, 2)), Torch(_avg_pool_grad),
         {**AVG, "ksize": (1, 3, 3, 1), "strides": (1, 2, 2, 1), "padding": "SAME", "data_format": "NHWC"}, **TOL),
    Case("tf.AvgPoolGrad", "same-nchw", (const([2, 3, 4, 4]), x(2, 3, 4, 2)), Torch(_avg_pool_grad),
         {**AVG, "ksize": (1, 1, 2, 3), "strides": (1, 1, 1, 2), "padding": "SAME", "data_format": "NCHW"}, **TOL),
    # shapes
    Case("tf.BroadcastGradientArgs", "out0", (value([2, 1, 3]), value([4, 1])), _reduction_axes(0), {"T": "int32"},
         grad=NO_GRAD),
    Case("tf.BroadcastGradientArgs", "out1", (value([2, 1, 3]), value([4, 1])), _reduction_axes(1),
         {"T": "int32"}, grad=NO_GRAD, output=1),
    Case("tf.BroadcastGradientArgs", "both-one", (value([1, 3]), value([2, 1, 1])), _reduction_axes(1),
         {"T": "int32"}, grad=NO_GRAD, output=1),
    Case("tf.BroadcastGradientArgs", "scalar", (value(np.zeros(0, np.int32)), value([5, 2])), _reduction_axes(0),
         {"T": "int32"}, grad=NO_GRAD),
    Case("tf.StridedSliceGrad", "shrink-axis0", (const([4, 3, 2]), const([2, 0, 0]), const([3, 0, 0]),
                                                 const([1, 1, 1]), x(3, 2)),
         NumPy(_strided_slice_grad), {**SS, "shrink_axis_mask": 1, "end_mask": 6, "begin_mask": 6}, grad=NO_GRAD),
    Case("tf.StridedSliceGrad", "stride2", (const([5, 6]), const([1, 0]), const([4, 6]), const([1, 2]), x(3, 3)),
         NumPy(_strided_slice_grad), SS, grad=NO_GRAD),
    Case("tf.StridedSliceGrad", "reverse-negative", (const([6]), const([-1]), const([0]), const([-2]), x(3)),
         NumPy(_strided_slice_grad), SS, grad=NO_GRAD),
    Case("tf.AddN", "tensors", (x(2, 3), x(2, 3), x(2, 3)), Torch(lambda *ts, N=0, T="": _add_n(*ts)),
         {"N": 3, "T": "float32"}, grad=NO_GRAD),
    Case("tf.ZerosLike", "tensor", (x(3, 2),), NumPy(lambda a, T="": np.full(a.shape, 0, a.dtype)), {"T": "float32"},
         grad=NO_GRAD),
]

BAD = [
    Bad("split", "uneven", (const(1), x(2, 5)), "equal parts", {"num_splits": 2}),
    Bad("split", "runtime-axis", (x(dtype="int32"), x(2, 4)), "constant|known", {"num_splits": 2}),
    Bad("unpack", "num", (x(3, 4),), "num 2", {"num": 2, "axis": 0}),
    Bad("unpack", "scalar", (x(),), "scalar", {"num": 1, "axis": 0}),
    Bad("add_n", "one-input", (x(4),), "takes 2"),
    Bad("add_n", "shapes", (x(2, 3), x(3, 2)), "one shape"),
    Bad("add_n", "bool", (x(2, dtype="bool"), x(2, dtype="bool")), "numbers"),
    Bad("tf.FusedBatchNormV3", "rank-2", (x(4, 3), x(3), x(3), x(3), x(3)), "4-D or 5-D", BN),
    Bad("tf.FusedBatchNormV3", "half-u", (x(1, 2, 2, 3), x(3), x(3), x(3), x(3)), "not supported",
        {**BN, "U": "float16"}),
    Bad("tf.FusedBatchNormGradV3", "format", (x(1, 2, 2, 3), x(1, 2, 2, 3), x(3), x(3), x(3), x()), "data_format",
        {**BN, "data_format": "NWHC"}),
    Bad("tf.DepthwiseConv2dNativeBackpropFilter", "sizes", (x(1, 4, 4, 1), const([3, 3, 1]), x(1, 2, 2, 1)),
        "int32\\[4\\]", DW_SAME_S2),
    Bad("tf.DepthwiseConv2dNativeBackpropInput", "sizes-dtype", (x(4), x(3, 3, 1, 1), x(1, 2, 2, 1)), "int32\\[4\\]",
        DW_SAME_S2),
    Bad("tf.AvgPoolGrad", "sizes", (const([1, 4, 4]), x(1, 2, 2, 1)), "int32\\[4\\]",
        {**AVG, "ksize": (1, 2, 2, 1), "strides": (1, 2, 2, 1), "padding": "VALID", "data_format": "NHWC"}),
    Bad("tf.BroadcastGradientArgs", "matrix", (x(2, 2, dtype="int32"), x(2, dtype="int32")), "vectors",
        {"T": "int32"}),
    Bad("tf.StridedSliceGrad", "index-type", (const([4]), const([0]), const([2]), const([1]), x(2)), "Index",
        {**SS, "Index": "int64"}),
    Bad("tf.AddN", "n", (x(2), x(2)), "N=3", {"N": 3, "T": "float32"}),
    Bad("tf.ZerosLike", "type-attr", (x(2),), "attribute T", {"T": "int32"}),
]
