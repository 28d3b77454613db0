"""Pooling (max, average; NHWC, TensorFlow Lite semantics) with gradients in builtin ops.

Max pool's gradient goes to each window's first maximum (as TFLite's and PyTorch's kernels pick it;
padding never wins). When the windows tile the image, their pixels are gathered by RESHAPE/TRANSPOSE
and ARG_MAX / ONE_HOT route the gradient. Overlapping or padded windows go one kernel tap at a time,
never wider than the input's C channels: each tap's pixels by STRIDED_SLICE, a running maximum and
the index of the tap that holds it by GREATER / SELECT_V2; then each tap's share of the gradient
(EQUAL / SELECT_V2) spread by its stride and PADded into place, and the taps ADDed. (Not a one-hot
DEPTHWISE_CONV_2D of multiplier kh*kw: LiteRT's float depthwise kernel never returns above 4832
output channels, which a 3x3 pool reaches at 537 channels.)
Average pool's gradient: the depthwise input gradient of an all-ones filter, applied to the
gradient divided by each window's count.

TFLite's SAME pooling ignores the padding (max) and divides by the window's input pixels (average).
Kernels loop over the window's taps, vectorised over everything else.
"""
from __future__ import annotations

import numpy as np

from ..core.ir import FLOAT_DTYPES
from ..core.registry import Builtin, defop
from ..core.trace import builder_of
from ._util import fused
from .api import add, argmax, div, equal, greater, mul, one_hot, reshape, transpose, where
from .conv import (_check_window, _depthwise_input_grad, _fit_hw, _need_static, _out_dim, _prepare, _rank4,
                   _spread, _tap, _tap_slice, _unfuse, _Window, _window_input)

POOL_ATTRS = {"padding": "SAME", "stride_w": 1, "stride_h": 1, "filter_width": 1, "filter_height": 1,
              "fused_activation_function": "NONE"}


POOL_FIELDS = {"padding": "padding", "stride_w": "int", "stride_h": "int", "filter_width": "int",
               "filter_height": "int", "fused_activation_function": "activation"}


# -- pooling --------------------------------------------------------------------------------------------
def _pool_infer(attrs, inputs):
    x, = inputs
    _rank4(x, "the input")
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"takes float input, got {x.dtype}")
    kh, kw, sh, sw = attrs["filter_height"], attrs["filter_width"], attrs["stride_h"], attrs["stride_w"]
    _check_window(attrs, kh, kw, sh, sw)
    p = attrs["padding"]
    return [(x.dtype, (x.shape[0], _out_dim(x.shape[1], kh, sh, 1, p, "height"),
                       _out_dim(x.shape[2], kw, sw, 1, p, "width"), x.shape[3]))]


def _max_pool_kernel(x, padding="SAME", stride_w=1, stride_h=1, filter_width=1, filter_height=1,
                     fused_activation_function="NONE"):
    xp, ho, wo = _prepare(x, filter_height, filter_width, stride_h, stride_w, 1, 1, padding, value=-np.inf)
    y = None
    for i in range(filter_height):
        for j in range(filter_width):
            t = _tap(xp, i, j, stride_h, stride_w, 1, 1, ho, wo)
            y = t.copy() if y is None else np.maximum(y, t, out=y)
    return fused(y, fused_activation_function)


def _window_counts(h, wd, kh, kw, sh, sw, padding):
    """How many input pixels (not padding) each output pixel's window holds: [Ho, Wo]."""
    ones = np.ones((1, h, wd, 1))
    xp, ho, wo = _prepare(ones, kh, kw, sh, sw, 1, 1, padding)
    return sum(_tap(xp, i, j, sh, sw, 1, 1, ho, wo) for i in range(kh) for j in range(kw))[0, :, :, 0]


def _avg_pool_kernel(x, padding="SAME", stride_w=1, stride_h=1, filter_width=1, filter_height=1,
                     fused_activation_function="NONE"):
    xp, ho, wo = _prepare(x, filter_height, filter_width, stride_h, stride_w, 1, 1, padding)
    total = None
    for i in range(filter_height):
        for j in range(filter_width):
            t = _tap(xp, i, j, stride_h, stride_w, 1, 1, ho, wo)
            total = t.copy() if total is None else np.add(total, t, out=total)
    counts = _window_counts(x.shape[1], x.shape[2], filter_height, filter_width, stride_h, stride_w, padding)
    return fused((total / counts[None, :, :, None].astype(x.dtype)).astype(x.dtype), fused_activation_function)


def _pool_window(x, attrs, op):
    _need_static(x, op)
    if x.shape[3] is None:
        raise NotImplementedError(f"the gradient of {op} needs the number of channels")
    return _Window(x.shape[1], x.shape[2], attrs["filter_height"], attrs["filter_width"], attrs["stride_h"],
                   attrs["stride_w"], 1, 1, attrs["padding"])


def _max_pool_vjp(inputs, outputs, grads, **attrs):
    x, = inputs
    g = _unfuse(grads[0], outputs[0], attrs["fused_activation_function"])
    win = _pool_window(x, attrs, "max_pool_2d")
    fb = builder_of(x)
    c, taps = x.shape[3], win.kh * win.kw
    if win.kh == win.sh and win.kw == win.sw and not win.padded:  # the windows tile the image
        tiles = _tiles(_fit_hw(x, (0, win.ho * win.kh), (0, win.wo * win.kw)), win)  # [N, Ho*Wo, T, C]
        first = one_hot(argmax(tiles, 2), taps, dtype=x.dtype, axis=2)
        routed = mul(first, reshape(g, [-1, win.ho * win.wo, 1, c]))
        return [_fit_hw(_untile(routed, win), (0, win.h), (0, win.w))]
    # overlapping or padded windows, one tap at a time: a running first maximum and its tap index
    xf, inside, first_inside = _window_input(x, win), *_tap_masks(win)
    best = idx = None
    for t in range(taps):
        seen = _tap_slice(xf, win, t // win.kw, t % win.kw)  # [N, Ho, Wo, C]
        if t == 0:
            best, idx = seen, fb.const(np.int32(0))
            continue
        better = greater(seen, best)
        decided = first_inside[t] | ~inside[t]  # a tap on padding never wins; a window's first inside tap does
        if decided.any():
            better = where(fb.const(decided), fb.const(first_inside[t]), better)
        best = where(better, seen, best)
        idx = where(better, fb.const(np.int32(t)), idx)
    dx = None
    for t in range(taps):
        routed = where(equal(idx, fb.const(np.int32(t))), g, 0.0)
        placed = _fit_hw(_spread(_spread(routed, 1, win.sh), 2, win.sw), (t // win.kw - win.pt, win.h),
                         (t % win.kw - win.pl, win.w))
        dx = placed if dx is None else add(dx, placed)
    return [dx]


def _avg_pool_vjp(inputs, outputs, grads, **attrs):
    x, = inputs
    g = _unfuse(grads[0], outputs[0], attrs["fused_activation_function"])
    win = _pool_window(x, attrs, "average_pool_2d")
    fb = builder_of(x)
    counts = _window_counts(win.h, win.w, win.kh, win.kw, win.sh, win.sw, win.padding)
    share = div(g, fb.const(counts[None, :, :, None].astype(x.dtype), x.dtype))
    ones = fb.const(np.ones((1, win.kh, win.kw, x.shape[3])), x.dtype)
    return [_depthwise_input_grad(share, ones, win, 1)]


defop("max_pool_2d", infer=_pool_infer, kernel=_max_pool_kernel, vjp=_max_pool_vjp, attrs=POOL_ATTRS,
      num_inputs=(1, 1), tflite=Builtin("MAX_POOL_2D", "Pool2DOptions", POOL_FIELDS))
defop("average_pool_2d", infer=_pool_infer, kernel=_avg_pool_kernel, vjp=_avg_pool_vjp, attrs=POOL_ATTRS,
      num_inputs=(1, 1), tflite=Builtin("AVERAGE_POOL_2D", "Pool2DOptions", POOL_FIELDS))


def _tiles(x, win: _Window):
    """[N, Ho*kh, Wo*kw, C] -> [N, Ho*Wo, kh*kw, C]: each window's pixels in row-major order."""
    c = x.shape[3]
    t = reshape(x, [-1, win.ho, win.kh, win.wo, win.kw, c])
    return reshape(transpose(t, [0, 1, 3, 2, 4, 5]), [-1, win.ho * win.wo, win.kh * win.kw, c])


def _untile(t, win: _Window):
    """The inverse of _tiles."""
    c = t.shape[3]
    t = reshape(t, [-1, win.ho, win.wo, win.kh, win.kw, c])
    return reshape(transpose(t, [0, 1, 3, 2, 4, 5]), [-1, win.ho * win.kh, win.wo * win.kw, c])


def _tap_masks(win: _Window):
    """Per tap t, [1, Ho, Wo, 1] bool constants: whether the tap falls inside the image (not on
    padding), and whether it is the first such tap of its window (row-major order)."""
    rows = np.arange(win.ho)[:, None] * win.sh - win.pt + np.arange(win.kh)[None, :]  # [Ho, kh]
    cols = np.arange(win.wo)[:, None] * win.sw - win.pl + np.arange(win.kw)[None, :]  # [Wo, kw]
    inside = ((rows >= 0) & (rows < win.h))[:, None, :, None] & ((cols >= 0) & (cols < win.w))[None, :, None, :]
    inside = inside.reshape(win.ho, win.wo, win.kh * win.kw)
    first = np.argmax(inside, axis=2)  # every window holds at least one input pixel
    taps = np.arange(win.kh * win.kw)
    return (inside.transpose(2, 0, 1)[:, None, :, :, None],
            (first[None] == taps[:, None, None])[:, None, :, :, None])
