"""Op table rows for the interop family (builtins real .tflite files use, from several families of litetrain/ops/)
and for TensorFlow's Flex ops run natively (litetrain/ops/tf/).

References are PyTorch (its ops, or its autograd for TensorFlow's gradient kernels: the gradient
TensorFlow computes is the one torch.autograd gives for the same forward op and padding) or NumPy
written differently from the kernels. The builtins also run in LiteRT through tests/test_ops.py.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from op_cases import Bad, Case, In, NumPy, Torch, away_from, b, const, distinct, x

STATEFUL_EXEMPT = {
    "tf.ResourceApplyGradientDescent": "updates a variable; tests/test_flex.py runs it against TensorFlow's formula",
    "tf.ResourceApplyAdam": "updates three variables; tests/test_flex.py runs it against TensorFlow's formula",
    "tf.ResourceApplyKerasMomentum": "updates two variables; tests/test_flex.py runs it against TensorFlow's formula",
    "tf.VarHandleOp": "yields a variable handle; tests/test_flex.py runs the Flex variable ops together",
    "tf.ReadVariableOp": "reads the variable store; tests/test_flex.py runs the Flex variable ops together",
    "tf.AssignVariableOp": "writes the variable store; tests/test_flex.py runs the Flex variable ops together",
    "tf.AssignAddVariableOp": "updates the variable store; tests/test_flex.py runs the Flex variable ops together",
    "tf.AssignSubVariableOp": "updates the variable store; tests/test_flex.py runs the Flex variable ops together",
    "tf.Save": "writes a file; tests/test_tf_fixtures.py compares it with TensorFlow's",
    "tf.Restore": "reads a file; tests/test_tf_fixtures.py restores TensorFlow's",
    "tf.SaveV2": "writes a file; tests/test_tf_fixtures.py compares it with TensorFlow's",
    "tf.RestoreV2": "reads a file; tests/test_tf_fixtures.py restores TensorFlow's",
}


# -- interop builtins ---------------------------------------------------------------------------------
def _stack(*ts, axis=0, values_count=0):
    return torch.stack(ts, axis)


def _repeat(t, m):
    return t.repeat(*[int(v) for v in m])


def _rows(c, a, b_):
    if c.ndim == 1 and a.ndim > 1:  # a rank-1 condition picks rows
        c = c.reshape([-1] + [1] * (a.ndim - 1))
    return torch.where(c, a, b_)


def _torch_slice(t, begin, end, strides, begin_mask=0, end_mask=0, ellipsis_mask=0, new_axis_mask=0,
                 shrink_axis_mask=0, offset=False):
    index = []
    for i, (b0, e0, s0) in enumerate(zip(begin.tolist(), end.tolist(), strides.tolist())):
        if shrink_axis_mask >> i & 1:
            index.append(b0)
        else:
            index.append(slice(None if begin_mask >> i & 1 else b0, None if end_mask >> i & 1 else e0, s0))
    return t[tuple(index)]


def _numpy_reverse_slice(a, begin, end, strides, **masks):
    """Negative strides, which torch tensors cannot take: walk the indices by hand."""
    out = a
    for axis, (b0, e0, s0) in enumerate(zip(begin, end, strides)):
        n = a.shape[axis]
        b0 = b0 + n if b0 < 0 else b0
        e0 = e0 + n if e0 < 0 else e0
        picks = []
        i = min(b0, n - 1)
        while i > e0 and i >= 0:
            picks.append(i)
            i += s0
        out = np.take(out, picks, axis=axis)
    return out


def _prelu(t, a):
    return torch.where(t >= 0, t, t * a)


def _asymmetric_resize(a, size, align_corners=False, half_pixel_centers=False):
    """TFLite's default bilinear resize (no align_corners, no half-pixel centres), one pixel at a time."""
    n, h, w, c = a.shape
    oh, ow = (int(v) for v in size)
    out = np.zeros((n, oh, ow, c), a.dtype)
    for i in range(oh):
        for j in range(ow):
            y, xx = i * np.float32(h / oh), j * np.float32(w / ow)
            y0, x0 = int(np.floor(y)), int(np.floor(xx))
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            dy, dx = y - y0, xx - x0
            out[:, i, j] = (a[:, y0, x0] * (1 - dy) * (1 - dx) + a[:, y1, x0] * dy * (1 - dx)
                            + a[:, y0, x1] * (1 - dy) * dx + a[:, y1, x1] * dy * dx)
    return out


def _torch_resize(t, size, align_corners=False, half_pixel_centers=False):
    y = F.interpolate(t.permute(0, 3, 1, 2), size=[int(v) for v in size], mode="bilinear",
                      align_corners=bool(align_corners))
    return y.permute(0, 2, 3, 1)


def f16(*shape):
    return x(*shape, dtype="float16")


# -- TensorFlow's gradient kernels, through torch.autograd ----------------------------------------------
def _tf_pads(size, k, stride, dilation, padding):
    if padding == "VALID":
        return 0, 0
    out = -(-size // stride)
    total = max((out - 1) * stride + (k - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _conv_forward(xt, wt, strides, padding, dilations):
    """NHWC input, HWIO filter -> NHWC output with TensorFlow's padding."""
    kh, kw = wt.shape[0], wt.shape[1]
    top, bottom = _tf_pads(xt.shape[1], kh, strides[1], dilations[1], padding)
    left, right = _tf_pads(xt.shape[2], kw, strides[2], dilations[2], padding)
    y = F.conv2d(F.pad(xt.permute(0, 3, 1, 2), (left, right, top, bottom)), wt.permute(3, 2, 0, 1),
                 stride=(strides[1], strides[2]), dilation=(dilations[1], dilations[2]))
    return y.permute(0, 2, 3, 1)


def _filter_grad(xt, sizes, dy, strides=(1, 1, 1, 1), padding="VALID", dilations=(1, 1, 1, 1), **_):
    w = torch.zeros([int(v) for v in sizes], dtype=xt.dtype, requires_grad=True)
    _conv_forward(xt, w, strides, padding, dilations).backward(dy)
    return w.grad


def _input_grad(sizes, wt, dy, strides=(1, 1, 1, 1), padding="VALID", dilations=(1, 1, 1, 1), **_):
    xt = torch.zeros([int(v) for v in sizes], dtype=wt.dtype, requires_grad=True)
    _conv_forward(xt, wt, strides, padding, dilations).backward(dy)
    return xt.grad


def _max_pool_grad(xt, _y, dy, ksize=(1, 1, 1, 1), strides=(1, 1, 1, 1), padding="VALID", **_):
    xt = xt.detach().clone().requires_grad_(True)
    top, bottom = _tf_pads(xt.shape[1], ksize[1], strides[1], 1, padding)
    left, right = _tf_pads(xt.shape[2], ksize[2], strides[2], 1, padding)
    padded = F.pad(xt.permute(0, 3, 1, 2), (left, right, top, bottom), value=-float("inf"))
    y = F.max_pool2d(padded, (ksize[1], ksize[2]), (strides[1], strides[2]))
    y.permute(0, 2, 3, 1).backward(dy)
    return xt.grad


def _size(*dims):
    return const(list(dims))


CONV = {"T": "float32", "data_format": "NHWC", "explicit_paddings": (), "use_cudnn_on_gpu": True}
SAME_S2 = {**CONV, "padding": "SAME", "strides": (1, 2, 2, 1), "dilations": (1, 1, 1, 1)}
VALID_D2 = {**CONV, "padding": "VALID", "strides": (1, 1, 1, 1), "dilations": (1, 2, 2, 1)}
POOL = {"T": "float32", "data_format": "NHWC", "explicit_paddings": ()}
NO_GRAD = "TensorFlow's own gradient kernels: a file contains them, litetrain never differentiates them"

CASES = [
    Case("pack", "axis0", (x(2, 3), x(2, 3), x(2, 3)), Torch(_stack), {"axis": 0, "values_count": 3}),
    Case("pack", "axis-last-unknown-batch", (x(4, 3, traced=(None, 3)), x(4, 3, traced=(None, 3))),
         Torch(_stack), {"axis": -1, "values_count": 2}, grad="the gradient slices need static shapes"),
    Case("pack", "scalars", (x(), x()), Torch(_stack), {"axis": 0, "values_count": 2}),
    Case("tile", "2d", (x(2, 3), const([2, 3])), Torch(_repeat)),
    Case("tile", "3d-ones", (x(1, 2, 3), const([4, 1, 1])), Torch(_repeat)),
    Case("select", "rows", (b(4), x(4, 3), x(4, 3)), Torch(_rows)),
    Case("select", "elementwise", (b(2, 3), x(2, 3), x(2, 3)), Torch(_rows)),
    Case("strided_slice", "basic", (x(5, 6), const([1, 0]), const([4, 6]), const([1, 2])), Torch(_torch_slice)),
    Case("strided_slice", "masks-shrink", (x(4, 5, 3), const([1, 2, 0]), const([0, 4, 0]), const([1, 1, 1])),
         Torch(_torch_slice), {"begin_mask": 4, "end_mask": 5, "shrink_axis_mask": 1}),
    Case("strided_slice", "negative-begin", (x(6, 2), const([-4, 0]), const([-1, 2]), const([2, 1])),
         Torch(_torch_slice)),
    Case("strided_slice", "reverse", (x(6,), const([4]), const([0]), const([-2])), NumPy(_numpy_reverse_slice)),
    Case("strided_slice", "offset", (x(6, 4), const([1, 1]), const([3, 2]), const([1, 1])),
         NumPy(lambda a, b0, e0, s0, offset=False: a[1:4, 1:3]), {"offset": True}),
    Case("prelu", "channel-alpha", (x(2, 3, 4, gen=away_from(0.0)), x(4)), Torch(_prelu)),
    Case("prelu", "broadcast-alpha", (x(2, 4, 3, gen=away_from(0.0)), x(1, 1, 3)), Torch(_prelu)),
    Case("depth_to_space", "interop-block2", (x(2, 3, 4, 8),), NumPy(
        lambda a, block_size=2: np.stack([a[..., k * 2:(k + 1) * 2] for k in range(4)], 0).reshape(2, 2, 2, 3, 4, 2)
        .transpose(2, 3, 0, 4, 1, 5).reshape(2, 6, 8, 2)), {"block_size": 2}),
    Case("dequantize", "float16", (f16(2, 3),), Torch(lambda t: t.float())),
    Case("densify", "dense", (x(3, 4),), NumPy(lambda a: a + 0),
         litert="LiteRT's DENSIFY takes only a sparse constant; in a file it has one, which the reader expands"),
    Case("resize_bilinear", "asymmetric", (x(1, 3, 4, 2), const([5, 7])), NumPy(_asymmetric_resize)),
    Case("resize_bilinear", "half-pixel", (x(2, 4, 4, 3), const([8, 8])), Torch(_torch_resize),
         {"half_pixel_centers": True}),
    Case("resize_bilinear", "align-corners", (x(1, 3, 5, 2), const([5, 9])), Torch(_torch_resize),  # dyadic scales: torch computes them in float64
         {"align_corners": True}),
    Case("mediapipe.convolution_2d_transpose_bias", "same-stride2", (x(2, 3, 4, 5), x(3, 2, 2, 5), x(3)),
         Torch(lambda t, w, b_, padding="SAME", stride_w=1, stride_h=1: F.conv_transpose2d(
             t.permute(0, 3, 1, 2), w.permute(3, 0, 1, 2), b_, stride=(stride_h, stride_w)).permute(0, 2, 3, 1)),
         {"padding": "SAME", "stride_w": 2, "stride_h": 2}),
    Case("mediapipe.convolution_2d_transpose_bias", "valid-3x3", (x(1, 4, 3, 2), x(2, 3, 3, 2), x(2)),
         Torch(lambda t, w, b_, padding="VALID", stride_w=1, stride_h=1: F.conv_transpose2d(
             t.permute(0, 3, 1, 2), w.permute(3, 0, 1, 2), b_, stride=(stride_h, stride_w)).permute(0, 2, 3, 1)),
         {"padding": "VALID", "stride_w": 1, "stride_h": 2}),
    # TensorFlow's ops (Flex in files)
    Case("tf.ReluGrad", "basic", (x(3, 4), x(3, 4, gen=away_from(0.0))),
         Torch(lambda g, f, T="float32": torch.ops.aten.threshold_backward(g, f, 0.0)), {"T": "float32"}, grad=NO_GRAD),
    Case("tf.Relu6Grad", "basic", (x(3, 4), x(3, 4, gen=away_from(0.0, 6.0, lo=-2, hi=8))),
         Torch(lambda g, f, T="float32": torch.ops.aten.hardtanh_backward(g, f, 0.0, 6.0)), {"T": "float32"},
         grad=NO_GRAD),
    Case("tf.BiasAddGrad", "nhwc", (x(2, 3, 4, 5),), Torch(lambda g, **_: g.sum(dim=(0, 1, 2))), grad=NO_GRAD),
    Case("tf.BiasAddGrad", "2d", (x(6, 5),), Torch(lambda g, **_: g.sum(dim=0)), grad=NO_GRAD),
    Case("tf.Conv2DBackpropFilter", "same-stride2", (x(2, 7, 6, 3), _size(3, 3, 3, 4), x(2, 4, 3, 4)),
         Torch(_filter_grad), SAME_S2, grad=NO_GRAD, rtol=1e-4, atol=1e-5),
    Case("tf.Conv2DBackpropFilter", "valid-dilated", (x(1, 8, 8, 2), _size(3, 2, 2, 3), x(1, 4, 6, 3)),
         Torch(_filter_grad), VALID_D2, grad=NO_GRAD, rtol=1e-4, atol=1e-5),
    Case("tf.Conv2DBackpropInput", "same-stride2", (_size(2, 7, 6, 3), x(3, 3, 3, 4), x(2, 4, 3, 4)),
         Torch(_input_grad), SAME_S2, grad=NO_GRAD, rtol=1e-4, atol=1e-5),
    Case("tf.Conv2DBackpropInput", "valid-dilated", (_size(1, 8, 8, 2), x(3, 2, 2, 3), x(1, 4, 6, 3)),
         Torch(_input_grad), VALID_D2, grad=NO_GRAD, rtol=1e-4, atol=1e-5),
    Case("tf.MaxPoolGrad", "valid-2x2", (x(2, 6, 4, 3, gen=distinct()), x(2, 3, 2, 3), x(2, 3, 2, 3)),
         Torch(_max_pool_grad), {**POOL, "ksize": (1, 2, 2, 1), "strides": (1, 2, 2, 1), "padding": "VALID"},
         grad=NO_GRAD),
    Case("tf.MaxPoolGrad", "same-overlapping", (x(1, 5, 5, 2, gen=distinct()), x(1, 3, 3, 2), x(1, 3, 3, 2)),
         Torch(_max_pool_grad), {**POOL, "ksize": (1, 3, 3, 1), "strides": (1, 2, 2, 1), "padding": "SAME"},
         grad=NO_GRAD),
]

BAD = [
    Bad("pack", "shapes", (x(2, 3), x(3, 2)), "one shape"),
    Bad("tile", "multiples-length", (x(2, 3), const([2])), "length"),
    Bad("select", "float-condition", (x(3), x(3), x(3)), "bool"),
    Bad("strided_slice", "zero-stride", (x(4, 5), const([0, 0]), const([2, 2]), const([1, 0])), "stride 0"),
    Bad("strided_slice", "runtime-begin", (x(4), In((1,), "int32", value=[1]), const([3]), const([1])), "constant"),
    Bad("prelu", "int-input", (x(2, 3, dtype="int32"), x(3, dtype="int32")), "float"),
    Bad("depth_to_space", "interop-channels", (x(1, 2, 2, 6),), "multiple", {"block_size": 2}),
    Bad("dequantize", "int8-needs-scales", (x(2, dtype="int8"),), "needs quantization parameters"),
    Bad("densify", "bool", (b(2, 3),), "numeric"),
    Bad("resize_bilinear", "rank-3", (x(3, 4, 2), const([5, 7])), "4-D"),
    Bad("mediapipe.convolution_2d_transpose_bias", "channels", (x(1, 3, 3, 4), x(2, 2, 2, 5), x(2)), "channels"),
    Bad("tf.ReluGrad", "shapes", (x(2, 3), x(3, 2)), "one shape"),
    Bad("tf.Relu6Grad", "shapes", (x(2, 3), x(2, 4)), "one shape"),
    Bad("tf.BiasAddGrad", "scalar", (x(),), "rank"),
    Bad("tf.Conv2DBackpropFilter", "sizes-length", (x(1, 4, 4, 1), _size(3, 3, 1), x(1, 2, 2, 1)), "int32\\[4\\]"),
    Bad("tf.Conv2DBackpropInput", "sizes-dtype", (x(4), x(3, 3, 1, 1), x(1, 2, 2, 1)), "int32\\[4\\]"),
    Bad("tf.MaxPoolGrad", "rank-3", (x(4, 4, 1), x(2, 2, 1), x(2, 2, 1)), "4-D"),
]
