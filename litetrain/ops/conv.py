"""Convolutions (NHWC, TensorFlow Lite semantics), with gradients in builtin ops.

conv_2d, depthwise_conv_2d and transpose_conv follow TFLite: filters
OHWI (conv_2d, transpose_conv) and [1, kh, kw, C*M] (depthwise), SAME padding with the odd pixel at
the end (bottom/right), strides, dilations, and a fused clamp (RELU, RELU6, RELU_N1_TO_1, as files
from other converters carry; its gradient is taken from the op's output). The gradient rules emit builtins only, so a
training file runs on stock LiteRT, where TensorFlow's own converter needs Flex kernels
(Conv2DBackpropInput/Filter, DepthwiseConv2dNative backprops, ...):

- conv_2d:     input gradient = TRANSPOSE_CONV with the filter transposed (and dilated by inserting
               zeros); filter gradient = CONV_2D of the transposed input [C, H, W, N] with the
               transposed output gradient [O, Ho, Wo, N] as filter (stride <-> dilation swap);
               1x1 stride-1 convolutions take two BATCH_MATMULs instead.
- depthwise:   input gradient = DEPTHWISE_CONV_2D of the output gradient (zeros interleaved for
               strides, padded) with the spatially flipped filter; filter gradient = per kernel tap,
               the strided slice of the input the tap reads times the output gradient, summed.
- transpose_conv: input gradient = CONV_2D; filter gradient = CONV_2D over transposed operands.

Kernels are matrix products (im2col, col2im) made a part of the batch at a time, or loop over taps
(never over pixels). The helpers at the end (windows, padding fits, the depthwise gradients) serve
pool.py too. MediaPipe's custom transposed convolution with bias (Convolution2DTransposeBias) is at
the very end.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..core.ir import FLOAT_DTYPES
from ..core.registry import OPS, Builtin, Custom, defop
from ..core.trace import builder_of
from ._util import fused, sized, static_shape
from .api import (batch_matmul, concat, conv_2d, depthwise_conv_2d, gather, greater, less, logical_and, mul, pad,
                  reduce_sum, reshape, shape_of, slice_, strided_slice, transpose, transpose_conv, where,
                  zeros_like)

PADDINGS = ("SAME", "VALID")
CLAMPS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")  # the fused activations these TFLite kernels apply
CACHED = 1 << 20  # bytes of im2col (or of col2im's products) made and used at once, so that they stay in cache


CONV_ATTRS = {"padding": "SAME", "stride_w": 1, "stride_h": 1, "dilation_w_factor": 1, "dilation_h_factor": 1,
              "fused_activation_function": "NONE"}


CONV_FIELDS = {"padding": "padding", "stride_w": "int", "stride_h": "int", "dilation_w_factor": "int",
               "dilation_h_factor": "int", "fused_activation_function": "activation"}


# -- geometry (TFLite's ComputeOutSize / ComputePaddingHeightWidth) ---------------------------------------
def geometry(size, k, stride, dilation, padding):
    """(output size, padding before, padding after) along one spatial axis."""
    ek = (k - 1) * dilation + 1
    out = -(-size // stride) if padding == "SAME" else (size - ek) // stride + 1
    total = max((out - 1) * stride + ek - size, 0) if padding == "SAME" else 0
    return out, total // 2, total - total // 2


def _check_window(attrs, kh, kw, sh, sw, dh=1, dw=1):
    if attrs["padding"] not in PADDINGS:
        raise ValueError(f"padding must be SAME or VALID, got {attrs['padding']!r}")
    if attrs["fused_activation_function"] not in CLAMPS:
        raise ValueError(f"fused activation {attrs['fused_activation_function']} is not one of {', '.join(CLAMPS)}: "
                         "TFLite's convolution and pooling kernels apply only these (as a clamp)")
    for name, v in (("stride_h", sh), ("stride_w", sw), ("dilation_h_factor", dh), ("dilation_w_factor", dw),
                    ("filter height", kh), ("filter width", kw)):
        if v is not None and int(v) < 1:
            raise ValueError(f"{name} must be at least 1, got {v}")


def _out_dim(size, k, stride, dilation, padding, axis):
    if size is None:
        return None
    out = geometry(size, k, stride, dilation, padding)[0]
    if out < 1:
        raise ValueError(f"a window of {(k - 1) * dilation + 1} (VALID) does not fit the input's {axis} of {size}")
    return out


def _float_operands(*infos):
    dtypes = {t.dtype for t in infos if t is not None}
    if len(dtypes) != 1 or not dtypes <= set(FLOAT_DTYPES):
        raise ValueError(f"input, filter and bias must have one float dtype, got {sorted(dtypes)}")


def _rank4(info, what):
    if len(info.shape) != 4:
        raise ValueError(f"{what} must be rank 4 (NHWC / filter layout), got rank {len(info.shape)}")


def _bias_check(b, channels):
    if b is not None and (len(b.shape) != 1 or None not in (b.shape[0], channels) and b.shape[0] != channels):
        raise ValueError(f"bias must be [{channels}], got {list(b.shape)}")


def _same(a, b):
    return a is None or b is None or a == b


# -- kernel helpers -------------------------------------------------------------------------------------
def _pad_hw(x, pads, value=0.0):
    (pt, pb), (pl, pr) = pads
    if not (pt or pb or pl or pr):
        return x
    return np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=value)


def _prepare(x, kh, kw, sh, sw, dh, dw, padding, value=0.0):
    """The padded input and the output's height and width."""
    for k, d, n, what in ((kh, dh, x.shape[1], "height"), (kw, dw, x.shape[2], "width")):
        if (k - 1) * d + 1 > 2 * n + 1:  # a hostile file's window: each tap costs a pass over the input
            raise ValueError(f"a window {(k - 1) * d + 1} pixels high/wide is more than twice the input's "
                             f"{what} {n}; refusing it")
    ho, pt, pb = geometry(x.shape[1], kh, sh, dh, padding)
    wo, pl, pr = geometry(x.shape[2], kw, sw, dw, padding)
    return _pad_hw(x, ((pt, pb), (pl, pr)), value), ho, wo


def _tap(xp, i, j, sh, sw, dh, dw, ho, wo):
    """The input pixels that kernel tap (i, j) meets, one per output pixel: [N, Ho, Wo, C] (a view)."""
    return xp[:, i * dh:i * dh + (ho - 1) * sh + 1:sh, j * dw:j * dw + (wo - 1) * sw + 1:sw, :]


def _finish(y, b, x_dtype, activation):
    """y (a new array of the kernel's) plus the bias, added in place, with the fused clamp applied."""
    if b is not None and np.any(b):
        np.add(y, b, out=y)
    return fused(np.asarray(y, dtype=x_dtype), activation)


# -- conv_2d --------------------------------------------------------------------------------------------
def _conv_infer(attrs, inputs):
    x, w = inputs[0], inputs[1]
    b = inputs[2] if len(inputs) > 2 else None
    _rank4(x, "the input")
    _rank4(w, "the filter [out, kh, kw, in]")
    _float_operands(x, w, b)
    o, kh, kw, i = w.shape
    sh, sw, dh, dw = attrs["stride_h"], attrs["stride_w"], attrs["dilation_h_factor"], attrs["dilation_w_factor"]
    if kh is None or kw is None:
        raise ValueError("the filter's height and width must be known")
    _check_window(attrs, kh, kw, sh, sw, dh, dw)
    if not _same(x.shape[3], i):
        raise ValueError(f"the input has {x.shape[3]} channels but the filter [out, kh, kw, in] takes {i}")
    _bias_check(b, o)
    p = attrs["padding"]
    return [(x.dtype, (x.shape[0], _out_dim(x.shape[1], kh, sh, dh, p, "height"),
                       _out_dim(x.shape[2], kw, sw, dw, p, "width"), o))]


def _conv_kernel(x, w, b=None, padding="SAME", stride_w=1, stride_h=1, dilation_w_factor=1, dilation_h_factor=1,
                 fused_activation_function="NONE"):
    """CONV_2D as one matrix product: the windows (im2col) times the filter."""
    o, kh, kw, c = w.shape
    sh, sw, dh, dw = stride_h, stride_w, dilation_h_factor, dilation_w_factor
    _, ho, wo = _prepare(x[:, :, :, :0], kh, kw, sh, sw, dh, dw, padding)  # refuses a hostile file's window
    pt, pl = geometry(x.shape[1], kh, sh, dh, padding)[1], geometry(x.shape[2], kw, sw, dw, padding)[1]
    y = np.empty((x.shape[0], ho, wo, o), np.result_type(x, w))
    step = max(1, CACHED // max(1, ho * wo * kh * kw * c * y.itemsize))  # images per im2col
    for k in range(0, x.shape[0], step):
        cols = im2col(x[k:k + step], kh, kw, sh, sw, dh, dw, pt, pl, ho, wo)
        np.dot(cols, w.reshape(o, -1).T, out=y[k:k + step].reshape(-1, o))
    return _finish(y, b, x.dtype, fused_activation_function)


def _span(size, out, stride, offset):
    """The output positions [first, last) whose input position p * stride + offset is in [0, size), and first's."""
    first = max(0, -(offset // stride))
    return first, max(first, min(out, (size - 1 - offset) // stride + 1)), first * stride + offset


def im2col(x, kh, kw, sh, sw, dh, dw, top, left, ho, wo):
    """The windows as an [N*Ho*Wo, kh*kw*C] matrix (x's first pixel at (top, left) in the zero-padded input):
    pixel-major, or with few channels and taps tap-major (the transpose of [kh*kw*C, N*Ho*Wo])."""
    n, h, wd, c = x.shape
    if kh == kw == sh == sw == 1 and top == left == 0:
        return x.reshape(-1, c)
    hn, wn = (ho - 1) * sh + (kh - 1) * dh + 1, (wo - 1) * sw + (kw - 1) * dw + 1  # the rows and columns read
    xp = x[:, -top:hn - top, -left:wn - left]
    if top > 0 or left > 0 or xp.shape[1:3] != (hn, wn):
        xp = np.zeros((n, hn, wn, c), x.dtype)
        xs = x[:, max(-top, 0):max(hn - top, 0), max(-left, 0):max(wn - left, 0)]  # the pixels read
        xp[:, max(top, 0):max(top, 0) + xs.shape[1], max(left, 0):max(left, 0) + xs.shape[2]] = xs
    view = sliding_window_view(xp, (hn - (ho - 1) * sh, wn - (wo - 1) * sw), (1, 2))[:, ::sh, ::sw, :, ::dh, ::dw]
    if c < 8 and kh * kw <= ho * wo:
        return np.ascontiguousarray(view.transpose(4, 5, 3, 0, 1, 2)).reshape(kh * kw * c, -1).T
    return view.transpose(0, 1, 2, 4, 5, 3).reshape(n * ho * wo, -1)


def _conv_vjp(inputs, outputs, grads, padding="SAME", stride_w=1, stride_h=1, dilation_w_factor=1,
              dilation_h_factor=1, fused_activation_function="NONE"):
    x, w = inputs[0], inputs[1]
    g = _unfuse(grads[0], outputs[0], fused_activation_function)
    n, h, wd, c = x.shape
    o, kh, kw, _ = w.shape
    _need_static(x, "conv_2d")
    sh, sw, dh, dw = stride_h, stride_w, dilation_h_factor, dilation_w_factor
    if kh == kw == sh == sw == 1:  # pointwise: two matrix products
        g2 = reshape(g, [-1, o])
        dx = reshape(batch_matmul(g2, reshape(w, [o, c])), [-1, h, wd, c])
        dw_ = reshape(batch_matmul(g2, reshape(x, [-1, c]), adj_x=True), [o, 1, 1, c])
    else:
        wt = _dilate(transpose(w, [3, 1, 2, 0]), dh, dw)  # [in, kh', kw', out]
        dx = transpose_conv(_shape_like(x), wt, g, padding=padding, strides=(sh, sw), known_shape=x.shape)
        (ho, pt, _), (wo, pl, _) = geometry(h, kh, sh, dh, padding), geometry(wd, kw, sw, dw, padding)
        xf = _fit_hw(x, (pt, (ho - 1) * sh + (kh - 1) * dh + 1), (pl, (wo - 1) * sw + (kw - 1) * dw + 1))
        dwt = conv_2d(transpose(xf, [3, 1, 2, 0]), transpose(g, [3, 1, 2, 0]), padding="VALID",
                      strides=(dh, dw), dilations=(sh, sw))  # [in, kh, kw, out]
        dw_ = transpose(dwt, [3, 1, 2, 0])
    return [dx, dw_, reduce_sum(g, [0, 1, 2])]


defop("conv_2d", infer=_conv_infer, kernel=_conv_kernel, vjp=_conv_vjp, attrs=CONV_ATTRS, num_inputs=(3, 3),
      tflite=Builtin("CONV_2D", "Conv2DOptions", CONV_FIELDS))


# -- depthwise_conv_2d ----------------------------------------------------------------------------------
def _depthwise_infer(attrs, inputs):
    x, w = inputs[0], inputs[1]
    b = inputs[2] if len(inputs) > 2 else None
    _rank4(x, "the input")
    _rank4(w, "the filter [1, kh, kw, channels * multiplier]")
    _float_operands(x, w, b)
    one, kh, kw, cm = w.shape
    m = attrs["depth_multiplier"]
    sh, sw, dh, dw = attrs["stride_h"], attrs["stride_w"], attrs["dilation_h_factor"], attrs["dilation_w_factor"]
    if one not in (1, None) or kh is None or kw is None:
        raise ValueError(f"the filter must be [1, kh, kw, channels * multiplier] with known kh, kw; got {list(w.shape)}")
    if m < 1:
        raise ValueError(f"depth_multiplier must be at least 1, got {m}")
    _check_window(attrs, kh, kw, sh, sw, dh, dw)
    if x.shape[3] is not None and cm is not None and x.shape[3] * m != cm:
        raise ValueError(f"the filter has {cm} channels; the input's {x.shape[3]} channels times "
                         f"depth_multiplier {m} make {x.shape[3] * m}")
    out_c = cm if cm is not None else (None if x.shape[3] is None else x.shape[3] * m)
    _bias_check(b, out_c)
    p = attrs["padding"]
    return [(x.dtype, (x.shape[0], _out_dim(x.shape[1], kh, sh, dh, p, "height"),
                       _out_dim(x.shape[2], kw, sw, dw, p, "width"), out_c))]


def _depthwise_kernel(x, w, b=None, padding="SAME", stride_w=1, stride_h=1, depth_multiplier=1,
                      dilation_w_factor=1, dilation_h_factor=1, fused_activation_function="NONE", scratch=None):
    """Each tap's products accumulated in place, in float32 when the operands are. The padded input is
    split by the strides' phases into planes (one plane with stride 1) laid end to end in one flat
    buffer, where a tap is a shift: its products run over long contiguous rows (the weights repeated
    along them), a block of rows at a time so that the block stays in cache. Small images, where the
    padding would be most of the work, take each tap's strided view instead. `scratch` (a dict a plan
    keeps) holds the buffers between calls; the output is always a new array."""
    n, h, wd, c = x.shape
    _, kh, kw, cm = w.shape
    m = cm // c
    sh, sw, dh, dw = stride_h, stride_w, dilation_h_factor, dilation_w_factor
    dtype = np.result_type(x, w)
    _prepare(x[:, :, :, :0], kh, kw, sh, sw, dh, dw, padding)  # refuses a hostile file's window (pads nothing)
    (ho, pt, _), (wo, pl, _) = geometry(h, kh, sh, dh, padding), geometry(wd, kw, sw, dw, padding)
    hq, wq = ho + (kh - 1) * dh // sh, wo + (kw - 1) * dw // sw  # a plane: every tap's pixels in range
    phases = sorted({(i * dh % sh, j * dw % sw) for i in range(kh) for j in range(kw)})
    scratch = {} if scratch is None else scratch
    if 0 < 2 * hq * wq <= 3 * ho * wo:
        period = cm * max(1, 4096 // cm)  # a row of products: whole pixels, the weights repeated along it
        plane, block = n * hq * wq * cm, max(1, (1 << 16) // period)
        rows = -(-plane // period)
        if scratch.get("for") != (x.shape, w.shape, padding, sh, sw, dh, dw, dtype):  # zero padding kept
            scratch.clear()
            scratch.update({"for": (x.shape, w.shape, padding, sh, sw, dh, dw, dtype),
                            "flat": np.zeros(len(phases) * plane + rows * period + (hq * wq + wq) * cm, dtype),
                            "y": np.empty((rows, period), dtype), "term": np.empty((min(block, rows), period), dtype)})
        flat, y, term = scratch["flat"], scratch["y"], scratch["term"]
        for k, (a, e) in enumerate(phases):  # plane k: padded rows a, a + sh, ... and columns e, e + sw, ...
            (r0, r1), (s0, s1) = [(max(0, -(-(p - o) // s)), min(q, -(-(p - o + size) // s)))
                                  for p, o, s, q, size in ((pt, a, sh, hq, h), (pl, e, sw, wq, wd))]
            into = flat[k * plane:(k + 1) * plane].reshape(n, hq, wq, c, m)[:, r0:r1, s0:s1]
            seen = x[:, r0 * sh + a - pt::sh, s0 * sw + e - pl::sw][:, :r1 - r0, :s1 - s0]
            if m > 1:
                into[...] = seen[..., None]  # channel c*M + k reads input channel c
            else:
                into[..., 0] = seen
        wide = np.tile(w[0].astype(dtype, copy=False), (1, 1, period // cm))
        shifts = [(i, j, phases.index((i * dh % sh, j * dw % sw)) * plane + (i * dh // sh * wq + j * dw // sw) * cm)
                  for i in range(kh) for j in range(kw)]
        for a in range(0, rows, block):
            e = min(rows, a + block)
            into, part = y[a:e], term[:e - a]
            for i, j, shift in shifts:
                seen = flat[shift + a * period:shift + e * period].reshape(e - a, period)
                np.multiply(seen, wide[i, j], out=part if i or j else into)
                if i or j:
                    np.add(into, part, out=into)
        y = y.reshape(-1)[:plane].reshape(n, hq, wq, cm)[:, :ho, :wo]
    else:
        xp, ho, wo = _prepare(np.repeat(x, m, axis=3) if m > 1 else x, kh, kw, sh, sw, dh, dw, padding)
        y = np.empty((n, ho, wo, cm), dtype)
        if kh * kw > ho * wo:  # a filter larger than the output (gradient graphs): loop over the output pixels
            for p in range(ho):
                for q in range(wo):
                    win = xp[:, p * sh:p * sh + (kh - 1) * dh + 1:dh, q * sw:q * sw + (kw - 1) * dw + 1:dw, :]
                    y[:, p, q, :] = np.einsum("nhwc,hwc->nc", win, w[0])
        else:
            wide = np.repeat(w[0].astype(dtype, copy=False)[:, :, None, :], wo, axis=2)  # [kh, kw, Wo, C*M]
            if scratch.get("for") != (y.shape, dtype):
                scratch.clear()
                scratch.update({"for": (y.shape, dtype), "term": np.empty_like(y)})
            term = scratch["term"]
            for i in range(kh):
                for j in range(kw):
                    np.multiply(_tap(xp, i, j, sh, sw, dh, dw, ho, wo), wide[i, j], out=term if i or j else y)
                    if i or j:
                        np.add(y, term, out=y)
    out = np.empty((n, ho, wo, cm), dtype)
    if b is not None and np.any(b):
        np.add(y, b, out=out)
    else:
        np.copyto(out, y)
    return _finish(out, None, x.dtype, fused_activation_function)


def _depthwise_vjp(inputs, outputs, grads, padding="SAME", stride_w=1, stride_h=1, depth_multiplier=1,
                   dilation_w_factor=1, dilation_h_factor=1, fused_activation_function="NONE"):
    x, w = inputs[0], inputs[1]
    g = _unfuse(grads[0], outputs[0], fused_activation_function)
    _need_static(x, "depthwise_conv_2d")
    if x.shape[3] is None or w.shape[3] is None:
        raise NotImplementedError("the gradient of depthwise_conv_2d needs the number of channels")
    _, h, wd, c = x.shape
    _, kh, kw, cm = w.shape
    win = _Window(h, wd, kh, kw, stride_h, stride_w, dilation_h_factor, dilation_w_factor, padding)
    return [_depthwise_input_grad(g, w, win, cm // c), _depthwise_filter_grad(x, g, win, cm // c),
            reduce_sum(g, [0, 1, 2])]


defop("depthwise_conv_2d", infer=_depthwise_infer, kernel=_depthwise_kernel, vjp=_depthwise_vjp,
      attrs={**CONV_ATTRS, "depth_multiplier": 1}, num_inputs=(3, 3),
      tflite=Builtin("DEPTHWISE_CONV_2D", "DepthwiseConv2DOptions", {**CONV_FIELDS, "depth_multiplier": "int"},
                     version=2))


# -- transpose_conv -------------------------------------------------------------------------------------
def _tconv_infer(attrs, inputs):
    shape, w, x = inputs[0], inputs[1], inputs[2]
    b = inputs[3] if len(inputs) > 3 else None
    if shape.dtype != "int32" or len(shape.shape) != 1 or shape.shape[0] not in (4, None):
        raise ValueError(f"output_shape must be int32[4], got {shape.dtype}{list(shape.shape)}")
    _rank4(w, "the filter [out, kh, kw, in]")
    _rank4(x, "the input")
    _float_operands(x, w, b)
    o, kh, kw, i = w.shape
    if kh is None or kw is None:
        raise ValueError("the filter's height and width must be known")
    _check_window(attrs, kh, kw, attrs["stride_h"], attrs["stride_w"])
    if not _same(x.shape[3], i):
        raise ValueError(f"the input has {x.shape[3]} channels but the filter [out, kh, kw, in] takes {i}")
    _bias_check(b, o)
    if shape.data is None:
        return [(x.dtype, (None, None, None, o))]
    dims = [int(d) for d in np.asarray(shape.data).reshape(-1)]
    if len(dims) != 4 or min(dims) < 1:
        raise ValueError(f"output_shape must hold 4 positive dims, got {dims}")
    if not _same(dims[3], o) or not _same(dims[0], x.shape[0]):
        raise ValueError(f"output_shape {dims} does not fit the filter's {o} outputs / the input's batch")
    return [(x.dtype, tuple(dims))]


def _tconv_kernel(output_shape, w, x, b=None, padding="SAME", stride_w=1, stride_h=1,
                  fused_activation_function="NONE"):
    """TRANSPOSE_CONV as a matrix product per filter tap, each tap's products added where they land (col2im)."""
    n, h, wd, o = [int(d) for d in np.asarray(output_shape).reshape(-1)]
    (_, kh, kw, i), (_, hi, wi, _), sh, sw = w.shape, x.shape, stride_h, stride_w
    if o != w.shape[0] or n != x.shape[0]:
        raise ValueError(f"output_shape {[n, h, wd, o]} does not fit filter {list(w.shape)} and input {list(x.shape)}")
    pt, pl = geometry(h, kh, sh, 1, padding)[1], geometry(wd, kw, sw, 1, padding)[1]
    y = np.zeros((n, h, wd, o), dtype=np.result_type(x, w))
    step = max(1, CACHED // max(1, hi * wi * kh * kw * o * y.itemsize))  # images per product
    for k in range(0, n, step):
        taps = np.matmul(x[k:k + step].reshape(-1, i), w.transpose(1, 2, 3, 0).reshape(kh * kw, i, o))
        for a, c in np.ndindex(kh, kw):
            (p0, p1, r), (q0, q1, s) = _span(h, hi, sh, a - pt), _span(wd, wi, sw, c - pl)
            into = y[k:k + step, r:r + (p1 - p0 - 1) * sh + 1:sh, s:s + (q1 - q0 - 1) * sw + 1:sw]
            if p1 > p0 and q1 > q0:
                np.add(into, taps[a * kw + c].reshape(-1, hi, wi, o)[:, p0:p1, q0:q1], out=into)
    return _finish(y, b, x.dtype, fused_activation_function)


def _tconv_vjp(inputs, outputs, grads, padding="SAME", stride_w=1, stride_h=1, fused_activation_function="NONE"):
    w, x = inputs[1], inputs[2]
    g = _unfuse(grads[0], outputs[0], fused_activation_function)
    _, h, wd, _ = g.shape
    _, kh, kw, _ = w.shape
    _, hi, wi, _ = x.shape
    if None in (h, wd, hi, wi):
        raise NotImplementedError("the gradient of transpose_conv needs the input's and output's height and width")
    pt, pl = geometry(h, kh, stride_h, 1, padding)[1], geometry(wd, kw, stride_w, 1, padding)[1]
    gf = _fit_hw(g, (pt, (hi - 1) * stride_h + kh), (pl, (wi - 1) * stride_w + kw))  # every tap in range
    dx = conv_2d(gf, transpose(w, [3, 1, 2, 0]), padding="VALID", strides=(stride_h, stride_w))
    dw = conv_2d(transpose(gf, [3, 1, 2, 0]), transpose(x, [3, 1, 2, 0]), padding="VALID",
                 dilations=(stride_h, stride_w))  # [out, kh, kw, in]: the filter's own layout
    out = [None, dw, dx]
    if len(inputs) > 3:
        out.append(None if inputs[3] is None else reduce_sum(g, [0, 1, 2]))
    return out


defop("transpose_conv", infer=_tconv_infer, kernel=_tconv_kernel, vjp=_tconv_vjp, num_inputs=(3, 4),
      allocates=lambda shape, w, x, b=None, **_: sized(np.result_type(x, w), np.asarray(shape).reshape(-1), "transpose_conv"),
      attrs={"padding": "SAME", "stride_w": 1, "stride_h": 1, "fused_activation_function": "NONE"},
      tflite=Builtin("TRANSPOSE_CONV", "TransposeConvOptions",
                     {"padding": "padding", "stride_w": "int", "stride_h": "int",
                      "fused_activation_function": "activation"}, version=3))


# -- gradient plumbing ----------------------------------------------------------------------------------
class _Window:
    """One sliding window's geometry over a known input height and width."""

    def __init__(self, h, w, kh, kw, sh, sw, dh, dw, padding):
        self.h, self.w, self.kh, self.kw, self.sh, self.sw, self.dh, self.dw = h, w, kh, kw, sh, sw, dh, dw
        self.padding = padding
        self.ho, self.pt, self.pb = geometry(h, kh, sh, dh, padding)
        self.wo, self.pl, self.pr = geometry(w, kw, sw, dw, padding)
        self.padded = bool(self.pt or self.pb or self.pl or self.pr)


def _need_static(x, op):
    if x.shape[1] is None or x.shape[2] is None:
        raise NotImplementedError(f"the gradient of {op} needs the input's height and width")


def _unfuse(g, y, activation):
    """The gradient before a fused clamp (RELU, RELU6, RELU_N1_TO_1), from the op's output y."""
    if activation == "NONE":
        return g
    lo, hi = {"RELU": (0.0, None), "RELU6": (0.0, 6.0), "RELU_N1_TO_1": (-1.0, 1.0)}[activation]
    inside = greater(y, lo) if hi is None else logical_and(greater(y, lo), less(y, hi))
    return where(inside, g, zeros_like(g))


def _shape_like(x):
    """x's shape as an int32 tensor: a constant when known, else SHAPE(x)."""
    if None not in x.shape:
        return builder_of(x).const(np.asarray(x.shape, np.int32))
    return shape_of(x)


def _fit_hw(t, rows, cols):
    """Shift and size axes 1 and 2 of a rank-4 tensor: (before, total) pads `before` zeros in front
    (or drops -before leading entries), then pads with zeros or cuts at the end to `total`."""
    pads, begin, size, cut = [[0, 0]], [0], [-1], False
    for axis, (before, total) in ((1, rows), (2, cols)):
        n = t.shape[axis]
        after = total - (n + before)
        pads.append([max(before, 0), max(after, 0)])
        begin.append(max(-before, 0))
        size.append(total)
        cut |= before < 0 or after < 0
    pads.append([0, 0])
    if any(a or b for a, b in pads):
        t = pad(t, pads)
    if cut:
        t = slice_(t, begin + [0], size + [-1])
    return t


def _spread(t, axis, factor):
    """Insert factor - 1 zeros after every entry of axis 1 or 2 of a rank-4 tensor (dim 0 may be
    unknown): size n -> n * factor, the original entries at multiples of `factor`."""
    if factor == 1:
        return t
    _, a, b, c = t.shape
    if axis == 1:
        t = pad(reshape(t, [-1, a, 1, b * c]), [[0, 0], [0, 0], [0, factor - 1], [0, 0]])
        return reshape(t, [-1, a * factor, b, c])
    t = pad(reshape(t, [-1, b, 1, c]), [[0, 0], [0, 0], [0, factor - 1], [0, 0]])
    return reshape(t, [-1, a, b * factor, c])


def _dilate(w, dh, dw):
    """A [A, kh, kw, B] filter with dilations written out as zeros: [A, (kh-1)dh+1, (kw-1)dw+1, B]."""
    _, kh, kw, _ = w.shape
    if dh == dw == 1:
        return w
    w = _spread(_spread(w, 1, dh), 2, dw)
    return _fit_hw(w, (0, (kh - 1) * dh + 1), (0, (kw - 1) * dw + 1))


def _flip_hw(w):
    """A [1, kh, kw, C] filter turned by 180 degrees (GATHER with reversed indices)."""
    fb = builder_of(w)
    for axis in (1, 2):
        if w.shape[axis] > 1:
            w = gather(w, fb.const(np.arange(w.shape[axis] - 1, -1, -1, dtype=np.int32)), axis=axis)
    return w


def _depthwise_input_grad(g, w, win: _Window, m):
    """d input of a depthwise convolution: the output gradient with zeros between strided pixels,
    padded so that every tap lands, correlated with the flipped filter; then summed over the M
    filter channels of each input channel."""
    gz = _spread(_spread(g, 1, win.sh), 2, win.sw)
    eh, ew = (win.kh - 1) * win.dh, (win.kw - 1) * win.dw
    gz = _fit_hw(gz, (eh - win.pt, win.h + eh), (ew - win.pl, win.w + ew))
    z = depthwise_conv_2d(gz, _flip_hw(w), padding="VALID", dilations=(win.dh, win.dw))
    if m == 1:
        return z
    c = w.shape[3] // m
    return reduce_sum(reshape(z, [-1, win.h, win.w, c, m]), [4])


def _window_input(x, win: _Window):
    """x zero-padded (or cut) to exactly the rows and columns the window's taps read."""
    hn, wn = (win.ho - 1) * win.sh + (win.kh - 1) * win.dh + 1, (win.wo - 1) * win.sw + (win.kw - 1) * win.dw + 1
    return _fit_hw(x, (win.pt, hn), (win.pl, wn))


def _tap_slice(xf, win: _Window, i, j):
    """The pixels of _window_input that kernel tap (i, j) reads, one per output pixel: [N, Ho, Wo, C]."""
    r, s = i * win.dh, j * win.dw
    return strided_slice(xf, [0, r, s, 0], [0, r + (win.ho - 1) * win.sh + 1, s + (win.wo - 1) * win.sw + 1, 0],
                         [1, win.sh, win.sw, 1], begin_mask=0b1001, end_mask=0b1001)


def _depthwise_filter_grad(x, g, win: _Window, m):
    """d filter of a depthwise convolution, one kernel tap at a time: the input pixels the tap reads
    (a strided slice [N, Ho, Wo, C]) times the output gradient, summed over batch and pixels; the
    kh*kw sums [C*M] are concatenated. (Not one DEPTHWISE_CONV_2D with batch and channels folded
    into N*C*M channels: LiteRT's float depthwise kernel never returns above 4832 output channels,
    which MobileNetV2's 960-channel blocks reach at a batch of 6.)"""
    c = x.shape[3]
    xf = _window_input(x, win)
    if m > 1:  # filter channel c*M + k reads input channel c
        g = reshape(g, [-1, win.ho * win.wo, c, m])
    taps = []
    for i in range(win.kh):
        for j in range(win.kw):
            xs = _tap_slice(xf, win, i, j)  # [N, Ho, Wo, C]
            if m > 1:
                xs = reshape(xs, [-1, win.ho * win.wo, c, 1])
            taps.append(reshape(reduce_sum(mul(xs, g), [0, 1] if m > 1 else [0, 1, 2]), [1, c * m]))
    return reshape(concat(taps, 0), [1, win.kh, win.kw, c * m])


# -- MediaPipe's Convolution2DTransposeBias (a custom op in MediaPipe's segmentation models) ----------------------
# TRANSPOSE_CONV with a bias and its output size implied by the padding, as MediaPipe's
# transpose_conv_bias.cc defines it; options are the raw TfLiteTransposeConvParams struct
# (int32 padding: 1 SAME, 2 VALID; int32 stride_width; int32 stride_height).
_MP_PADDING = {1: "SAME", 2: "VALID"}


def _mp_decode(raw: bytes) -> dict:
    if len(raw) < 12:
        raise ValueError(f"options hold {len(raw)} bytes; TfLiteTransposeConvParams needs 12")
    padding, stride_w, stride_h = np.frombuffer(raw[:12], "<i4").tolist()
    if padding not in _MP_PADDING or stride_w < 1 or stride_h < 1:
        raise ValueError(f"padding {padding} / strides {stride_w}x{stride_h} are not valid")
    return {"padding": _MP_PADDING[padding], "stride_w": stride_w, "stride_h": stride_h}


def _mp_encode(attrs: dict) -> bytes:
    code = {v: k for k, v in _MP_PADDING.items()}[attrs.get("padding", "SAME")]
    return np.asarray([code, attrs.get("stride_w", 1), attrs.get("stride_h", 1)], "<i4").tobytes()


def _mp_out(size, k, stride, padding):
    return None if size is None else size * stride if padding == "SAME" else (size - 1) * stride + k


def _mp_out_shape(x_shape, w_shape, attrs):
    return (x_shape[0], _mp_out(x_shape[1], w_shape[1], attrs["stride_h"], attrs["padding"]),
            _mp_out(x_shape[2], w_shape[2], attrs["stride_w"], attrs["padding"]), w_shape[0])


def _mp_infer(attrs, inputs):
    x, w, b = inputs
    if len(x.shape) != 4 or len(w.shape) != 4 or w.shape[1] is None or w.shape[2] is None:
        raise ValueError("Convolution2DTransposeBias takes a 4-D input and a 4-D filter [out, kh, kw, in]")
    if x.shape[3] is not None and w.shape[3] is not None and x.shape[3] != w.shape[3]:
        raise ValueError(f"the input has {x.shape[3]} channels, the filter takes {w.shape[3]}")
    return [(x.dtype, _mp_out_shape(x.shape, w.shape, attrs))]


def _mp_kernel(x, w, b, padding="SAME", stride_w=1, stride_h=1):
    shape = np.asarray(_mp_out_shape(x.shape, w.shape, {"padding": padding, "stride_w": stride_w,
                                                          "stride_h": stride_h}), np.int32)
    return OPS["transpose_conv"].kernel(shape, w, x, b, padding=padding, stride_w=stride_w, stride_h=stride_h)


def _mp_vjp(inputs, outputs, grads, **attrs):
    x, w, b = inputs
    shape = static_shape(outputs[0], "Convolution2DTransposeBias's output")
    fb = builder_of(x)
    _, dw, dx, db = OPS["transpose_conv"].vjp([fb.const(np.asarray(shape, np.int32)), w, x, b], outputs, grads,
                                               fused_activation_function="NONE", **attrs)
    return [dx, dw, db]


def _mp_custom():
    return Custom("Convolution2DTransposeBias", decode=_mp_decode, encode=_mp_encode)


defop("mediapipe.convolution_2d_transpose_bias", infer=_mp_infer, kernel=_mp_kernel, vjp=_mp_vjp,
      attrs={"padding": "SAME", "stride_w": 1, "stride_h": 1}, num_inputs=(3, 3), tflite=_mp_custom())
