"""Op table rows for the convolution, pooling, mobile-activation and random ops (tests/test_ops.py).

References are PyTorch's own convolutions and pools on NCHW tensors, with TensorFlow Lite's padding
rule written out here (SAME puts the odd pixel at the end, which torch's `padding=` cannot say),
so torch.autograd also checks every gradient rule. random_uniform's reference is TensorFlow's
Philox4x32-10 written one block at a time with Python integers (the kernel is vectorised); LiteRT,
which the table runs every case in, is the independent check that both follow TFLite's stream.
"""
from __future__ import annotations

import struct

import numpy as np
import torch
import torch.nn.functional as F

from op_cases import ACT, Bad, Case, In, Torch, away_from, const, distinct, i32, normal, x


def ZERO(n):
    """A constant zero bias, as conv_2d() and depthwise_conv_2d() add when given none."""
    return In((n,), const=True, value=np.zeros(n))


SMALL = normal(0.5)  # keeps sums of products small, so float32 rounding stays within the table's tolerance


# -- TensorFlow Lite's padding rule, and NHWC <-> NCHW --------------------------------------------------
def _same_pads(size, k, stride, dilation, padding):
    effective = (k - 1) * dilation + 1
    if padding == "VALID":
        return 0, 0
    out = (size + stride - 1) // stride
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _pad_nchw(t, kh, kw, sh, sw, dh, dw, padding, value=0.0):
    top, bottom = _same_pads(t.shape[2], kh, sh, dh, padding)
    left, right = _same_pads(t.shape[3], kw, sw, dw, padding)
    return F.pad(t, (left, right, top, bottom), value=value)


def _nchw(t):
    return t.permute(0, 3, 1, 2)


def _nhwc(t):
    return t.permute(0, 2, 3, 1)


# -- references --------------------------------------------------------------------------------------------
def _conv(x, w, b=None, padding="SAME", stride_w=1, stride_h=1, dilation_w_factor=1, dilation_h_factor=1,
          fused_activation_function="NONE"):
    kh, kw = w.shape[1], w.shape[2]
    xt = _pad_nchw(_nchw(x), kh, kw, stride_h, stride_w, dilation_h_factor, dilation_w_factor, padding)
    y = F.conv2d(xt, w.permute(0, 3, 1, 2), b, stride=(stride_h, stride_w),
                 dilation=(dilation_h_factor, dilation_w_factor))
    return ACT[fused_activation_function](_nhwc(y))


def _depthwise(x, w, b=None, padding="SAME", stride_w=1, stride_h=1, depth_multiplier=1, dilation_w_factor=1,
               dilation_h_factor=1, fused_activation_function="NONE"):
    kh, kw = w.shape[1], w.shape[2]
    xt = _pad_nchw(_nchw(x), kh, kw, stride_h, stride_w, dilation_h_factor, dilation_w_factor, padding)
    y = F.conv2d(xt, w[0].permute(2, 0, 1).unsqueeze(1), b, stride=(stride_h, stride_w),
                 dilation=(dilation_h_factor, dilation_w_factor), groups=x.shape[3])
    return ACT[fused_activation_function](_nhwc(y))


def _transpose_conv(shape, w, x, b=None, padding="SAME", stride_w=1, stride_h=1, fused_activation_function="NONE"):
    n, h, wd, o = [int(d) for d in shape.tolist()]
    kh, kw = w.shape[1], w.shape[2]
    full = F.conv_transpose2d(_nchw(x), w.permute(3, 0, 1, 2), stride=(stride_h, stride_w))
    top, _ = _same_pads(h, kh, stride_h, 1, padding)
    left, _ = _same_pads(wd, kw, stride_w, 1, padding)
    full = F.pad(full, (0, max(0, left + wd - full.shape[3]), 0, max(0, top + h - full.shape[2])))
    y = _nhwc(full[:, :, top:top + h, left:left + wd])
    if b is not None:
        y = y + b
    return ACT[fused_activation_function](y)


def _max_pool(x, padding="SAME", stride_w=1, stride_h=1, filter_width=1, filter_height=1,
              fused_activation_function="NONE"):
    xt = _pad_nchw(_nchw(x), filter_height, filter_width, stride_h, stride_w, 1, 1, padding, value=-float("inf"))
    y = F.max_pool2d(xt, (filter_height, filter_width), (stride_h, stride_w))
    return ACT[fused_activation_function](_nhwc(y))


def _avg_pool(x, padding="SAME", stride_w=1, stride_h=1, filter_width=1, filter_height=1,
              fused_activation_function="NONE"):
    """TFLite divides by the number of input pixels in the window (padding is not counted)."""
    def window_sum(t):
        t = _pad_nchw(t, filter_height, filter_width, stride_h, stride_w, 1, 1, padding)
        return F.avg_pool2d(t, (filter_height, filter_width), (stride_h, stride_w), divisor_override=1)
    xt = _nchw(x)
    counts = window_sum(torch.ones_like(xt[:1, :1]))
    return ACT[fused_activation_function](_nhwc(window_sum(xt) / counts))


def _philox_uniform(shape, seed=0, seed2=0):
    """TensorFlow's PhiloxRandom(seed, seed2) and Uint32ToFloat, one 4-word block at a time. The
    seeds are cut to int32 and sign-extended first, as LiteRT's kernel parameters hold them."""
    m = 0xFFFFFFFF

    def int32(v):
        v &= m
        return v - (1 << 32) if v >= 1 << 31 else v

    seed, seed2 = int32(int(seed)) % (1 << 64), int32(int(seed2)) % (1 << 64)
    key, counter = (seed & m, seed >> 32), [0, 0, seed2 & m, seed2 >> 32]
    n = int(np.prod([int(d) for d in shape]))
    words = []
    while len(words) < n:
        c, k = list(counter), list(key)
        for _ in range(10):
            p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
            c = [(p1 >> 32) ^ c[1] ^ k[0], p1 & m, (p0 >> 32) ^ c[3] ^ k[1], p0 & m]
            k = [(k[0] + 0x9E3779B9) & m, (k[1] + 0xBB67AE85) & m]
        words += c
        for i in range(4):  # the 128-bit counter's increment
            counter[i] = (counter[i] + 1) & m
            if counter[i]:
                break
    floats = [struct.unpack("<f", struct.pack("<I", 0x3F800000 | (w & 0x7FFFFF)))[0] - 1.0 for w in words[:n]]
    return np.asarray(floats, np.float32).reshape([int(d) for d in shape])


def _attrs(padding="SAME", strides=(1, 1), dilations=(1, 1), act="NONE", **extra):
    return {"padding": padding, "stride_h": strides[0], "stride_w": strides[1], "dilation_h_factor": dilations[0],
            "dilation_w_factor": dilations[1], "fused_activation_function": act, **extra}


def _pool_attrs(size, strides, padding, act="NONE"):
    return {"padding": padding, "filter_height": size[0], "filter_width": size[1], "stride_h": strides[0],
            "stride_w": strides[1], "fused_activation_function": act}


def _tconv_attrs(padding, strides, act="NONE"):
    return {"padding": padding, "stride_h": strides[0], "stride_w": strides[1], "fused_activation_function": act}


CONV, DW, TCONV = Torch(_conv), Torch(_depthwise), Torch(_transpose_conv)
MAXP, AVGP = Torch(_max_pool), Torch(_avg_pool)


def _x(*shape, batch=False, gen=SMALL):
    return x(*shape, traced=(None,) + shape[1:] if batch else None, gen=gen)


CASES = [
    # -- conv_2d: strides 1 and 2, both paddings, dilation, odd and even sizes, 1x1, fused activation
    Case("conv_2d", "same-s1-bias", (_x(2, 5, 5, 3, batch=True), _x(4, 3, 3, 3), _x(4)), CONV, _attrs()),
    Case("conv_2d", "valid-s2-odd", (_x(2, 7, 7, 3), _x(4, 3, 3, 3), ZERO(4)), CONV, _attrs("VALID", (2, 2))),
    Case("conv_2d", "same-s2-even", (_x(2, 6, 6, 2, batch=True), _x(3, 3, 3, 2), _x(3)), CONV, _attrs("SAME", (2, 2))),
    Case("conv_2d", "same-rect-kernel-strides", (_x(1, 7, 5, 2), _x(3, 3, 2, 2), _x(3)), CONV, _attrs("SAME", (2, 1))),
    Case("conv_2d", "dilation2-same", (_x(2, 7, 7, 2), _x(3, 3, 3, 2), _x(3)), CONV, _attrs("SAME", (1, 1), (2, 2))),
    Case("conv_2d", "dilation2-stride2-valid", (_x(1, 9, 8, 2), _x(2, 3, 3, 2), _x(2)), CONV,
         _attrs("VALID", (2, 2), (2, 2))),
    Case("conv_2d", "valid-unused-rows", (_x(1, 8, 8, 2, batch=True), _x(2, 3, 3, 2), ZERO(2)), CONV, _attrs("VALID", (2, 2))),
    Case("conv_2d", "pointwise", (_x(2, 4, 4, 5, batch=True), _x(3, 1, 1, 5), _x(3)), CONV, _attrs()),
    Case("conv_2d", "pointwise-s2-even", (_x(2, 6, 6, 3), _x(4, 1, 1, 3), _x(4)), CONV, _attrs("SAME", (2, 2))),
    Case("conv_2d", "fused-relu6", (_x(1, 4, 4, 2, gen=normal(1.5)), _x(3, 3, 3, 2), _x(3, gen=normal(3.0))), CONV,
         _attrs(act="RELU6")),
    Case("conv_2d", "fused-relu-n1-to-1", (_x(1, 4, 4, 2), _x(2, 3, 3, 2), _x(2)), CONV, _attrs(act="RELU_N1_TO_1")),
    # -- depthwise_conv_2d: depth multiplier 1, 2 and 3, strides, dilation, a filter larger than the output
    Case("depthwise_conv_2d", "same-s1-bias", (_x(2, 5, 5, 3, batch=True), _x(1, 3, 3, 3), _x(3)), DW, _attrs()),
    Case("depthwise_conv_2d", "same-s2-even-m2", (_x(2, 6, 6, 2, batch=True), _x(1, 3, 3, 4), ZERO(4)), DW,
         _attrs("SAME", (2, 2), depth_multiplier=2)),
    Case("depthwise_conv_2d", "valid-s2-odd", (_x(1, 7, 7, 3), _x(1, 3, 3, 3), _x(3)), DW, _attrs("VALID", (2, 2))),
    Case("depthwise_conv_2d", "dilation2-same", (_x(2, 7, 7, 2), _x(1, 3, 3, 2), _x(2)), DW, _attrs("SAME", (1, 1), (2, 2))),
    Case("depthwise_conv_2d", "m3-rect-valid", (_x(1, 5, 6, 2), _x(1, 2, 3, 6), _x(6)), DW,
         _attrs("VALID", (1, 2), depth_multiplier=3)),
    Case("depthwise_conv_2d", "filter-larger-than-output", (_x(1, 6, 6, 4), _x(1, 5, 5, 4), _x(4)), DW, _attrs("VALID")),
    Case("depthwise_conv_2d", "fused-relu", (_x(2, 5, 5, 2, gen=normal(2.0)), _x(1, 3, 3, 2), _x(2)), DW,
         _attrs("SAME", (2, 2), act="RELU")),
    # -- transpose_conv: (output_shape, filter [out, kh, kw, in], input, bias)
    Case("transpose_conv", "same-s2-bias", (const([2, 6, 6, 3]), _x(3, 3, 3, 4), _x(2, 3, 3, 4), _x(3)), TCONV,
         _tconv_attrs("SAME", (2, 2))),
    Case("transpose_conv", "valid-s2-odd", (const([1, 7, 7, 2]), _x(2, 3, 3, 3), _x(1, 3, 3, 3)), TCONV,
         _tconv_attrs("VALID", (2, 2))),
    Case("transpose_conv", "same-s1", (const([2, 5, 5, 2]), _x(2, 3, 3, 3), _x(2, 5, 5, 3)), TCONV,
         _tconv_attrs("SAME", (1, 1))),
    Case("transpose_conv", "valid-extra-rows", (const([1, 8, 8, 2]), _x(2, 3, 3, 3), _x(1, 3, 3, 3), _x(2)), TCONV,
         _tconv_attrs("VALID", (2, 2))),
    Case("transpose_conv", "k2-s2-rect", (const([1, 6, 5, 2]), _x(2, 2, 2, 3), _x(1, 3, 3, 3)), TCONV,
         _tconv_attrs("SAME", (2, 2))),
    Case("transpose_conv", "fused-relu", (const([1, 5, 5, 2]), _x(2, 3, 3, 3), _x(1, 3, 3, 3, gen=normal(2.0)),
                                           _x(2)), TCONV, _tconv_attrs("SAME", (2, 2), "RELU")),
    # -- pooling: non-overlapping and overlapping windows, both paddings, odd and even sizes
    Case("max_pool_2d", "2x2-valid", (_x(2, 6, 6, 3, batch=True, gen=distinct()),), MAXP,
         _pool_attrs((2, 2), (2, 2), "VALID")),
    Case("max_pool_2d", "2x2-valid-odd", (_x(1, 7, 7, 2, gen=distinct()),), MAXP, _pool_attrs((2, 2), (2, 2), "VALID")),
    Case("max_pool_2d", "3x3-s2-same-odd", (_x(1, 7, 7, 2, gen=distinct()),), MAXP,
         _pool_attrs((3, 3), (2, 2), "SAME")),
    Case("max_pool_2d", "3x3-s2-same-even", (_x(2, 6, 6, 2, batch=True, gen=distinct()),), MAXP,
         _pool_attrs((3, 3), (2, 2), "SAME")),
    Case("max_pool_2d", "2x3-tiles-valid-odd", (_x(2, 5, 7, 2, batch=True, gen=distinct()),), MAXP,
         _pool_attrs((2, 3), (2, 3), "VALID")),
    Case("max_pool_2d", "rect-same", (_x(1, 5, 6, 2, gen=distinct()),), MAXP, _pool_attrs((2, 3), (1, 2), "SAME")),
    Case("max_pool_2d", "fused-relu", (_x(1, 6, 6, 2, gen=distinct(0.125)),), MAXP,
         _pool_attrs((2, 2), (2, 2), "VALID", "RELU")),
    Case("average_pool_2d", "2x2-valid", (_x(2, 6, 6, 3, batch=True),), AVGP, _pool_attrs((2, 2), (2, 2), "VALID")),
    Case("average_pool_2d", "3x3-s2-same-odd", (_x(1, 7, 7, 2),), AVGP, _pool_attrs((3, 3), (2, 2), "SAME")),
    Case("average_pool_2d", "3x3-s1-same", (_x(2, 5, 5, 2, batch=True),), AVGP, _pool_attrs((3, 3), (1, 1), "SAME")),
    Case("average_pool_2d", "rect-s2-same-even", (_x(1, 6, 6, 2),), AVGP, _pool_attrs((2, 3), (2, 2), "SAME")),
    Case("average_pool_2d", "fused-relu6", (_x(1, 4, 4, 2, gen=normal(4.0)),), AVGP,
         _pool_attrs((2, 2), (1, 1), "VALID", "RELU6")),
    # -- activations of mobile networks
    Case("hard_swish", "float", (x(2, 3, 4, traced=(None, 3, 4), gen=away_from(-3, 3, lo=-5, hi=5)),),
         Torch(F.hardswish)),
    Case("leaky_relu", "alpha-0.2", (x(2, 3, 4, traced=(None, 3, 4), gen=away_from(0)),),
         Torch(lambda t, alpha: F.leaky_relu(t, alpha)), {"alpha": 0.2}),
    Case("leaky_relu", "alpha-0.01", (x(3, 5, gen=away_from(0)),), Torch(lambda t, alpha: F.leaky_relu(t, alpha)),
         {"alpha": 0.01}),
]

# random_uniform's kernel needs the executor (its stream lives there), which the table's gradient check
# does not give it; tests/test_cnn.py checks it against the reference below and LiteRT, call after call.
STATEFUL_EXEMPT = {"random_uniform": "draws from a stream kept by the executor; tested in tests/test_cnn.py"}

BAD = [
    Bad("conv_2d", "channels", (x(1, 5, 5, 3), x(2, 3, 3, 4), x(2)), "channels"),
    Bad("conv_2d", "window-too-big", (x(1, 2, 2, 1), x(1, 3, 3, 1), x(1)), "does not fit", _attrs("VALID")),
    Bad("conv_2d", "bad-padding", (x(1, 5, 5, 1), x(1, 3, 3, 1), x(1)), "padding", _attrs("FULL")),
    Bad("conv_2d", "bias-shape", (x(1, 5, 5, 1), x(2, 3, 3, 1), x(3)), "bias"),
    Bad("conv_2d", "no-bias", (x(1, 5, 5, 1), x(2, 3, 3, 1)), "takes 3..3 inputs"),
    Bad("conv_2d", "rank3", (x(5, 5, 1), x(1, 3, 3, 1), x(1)), "rank 4"),
    Bad("conv_2d", "int32", (i32(1, 5, 5, 1), i32(1, 3, 3, 1), i32(1)), "float"),
    *[Bad(op, "fused-tanh", (x(1, 5, 5, 2), x(1, 3, 3, 2), x(2)), "fused activation TANH", _attrs(act="TANH"))
      for op in ("conv_2d", "depthwise_conv_2d")],
    Bad("conv_2d", "zero-dilation", (x(1, 5, 5, 1), x(1, 3, 3, 1), x(1)), "at least 1", _attrs(dilations=(0, 1))),
    Bad("depthwise_conv_2d", "multiplier", (x(1, 5, 5, 3), x(1, 3, 3, 4), x(4)), "depth_multiplier"),
    Bad("depthwise_conv_2d", "filter-layout", (x(1, 5, 5, 3), x(2, 3, 3, 3), x(3)), "filter"),
    Bad("transpose_conv", "shape-length", (const([1, 5, 5]), x(2, 3, 3, 3), x(1, 3, 3, 3)), "output_shape"),
    Bad("transpose_conv", "channels", (const([1, 5, 5, 2]), x(2, 3, 3, 3), x(1, 3, 3, 4)), "channels"),
    Bad("transpose_conv", "shape-vs-filter", (const([1, 5, 5, 4]), x(2, 3, 3, 3), x(1, 3, 3, 3)), "output_shape"),
    *[Bad(op, "window-too-big", (x(1, 2, 2, 1),), "does not fit", _pool_attrs((3, 3), (1, 1), "VALID"))
      for op in ("max_pool_2d", "average_pool_2d")],
    *[Bad(op, "zero-stride", (x(1, 4, 4, 1),), "at least 1", _pool_attrs((2, 2), (0, 2), "VALID"))
      for op in ("max_pool_2d", "average_pool_2d")],
    *[Bad(op, "int32", (i32(1, 4, 4, 1),), "float") for op in ("max_pool_2d", "average_pool_2d")],
    *[Bad(op, "int32", (i32(2, 3),), "float") for op in ("hard_swish", "leaky_relu")],
    Bad("random_uniform", "float-shape", (x(2),), "int32"),
    Bad("random_uniform", "seed-beyond-int32", (const([2, 2]),), "int32", {"seed": 2 ** 40}),
]
