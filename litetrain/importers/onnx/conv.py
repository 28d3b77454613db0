"""The ONNX importer's convolution, pooling, normalisation-with-statistics and resizing handlers (see
graph.py). 2-D ops run NHWC, TFLite's layout; 1-D ones on the sequence seen as a 1-pixel-high image."""
from __future__ import annotations

import copy

import numpy as np

from ... import ops
from ...frontend.nn.norm import normalize
from ...ops._util import num_elements
from ..common import conv1d_op, conv_op
from .graph import P, V, auto_pads, handles, same_pads

_PAD_BIG = 3.0e38  # max pooling's padding value (stands for -inf)


def onnx_shape(ctx, v):
    """The shape of a value in ONNX's order."""
    if isinstance(v, P):
        shape = tuple(v.state.value.shape)
        return (shape[0], shape[3], shape[1], shape[2]) if v.layout == "ohwi" else \
            (shape[3], shape[0], shape[1], shape[2]) if v.layout == "dw" else shape
    if isinstance(v, V):
        s = v.t.shape
        return (s[0], s[3], s[1], s[2]) if v.nhwc else tuple(s)
    return tuple(np.shape(ctx.const(v)))


def _ints(v, n, default):
    v = default if v is None else v
    v = [int(a) for a in (v if isinstance(v, (list, tuple, np.ndarray)) else [v])]
    return tuple(v * n if len(v) == 1 else v)


def _spatial(ctx, x, pads, hw, kernel, stride, dilation, pad_value=None):
    """(x, TFLite padding): SAME when the pads are SAME's, else x padded explicitly and VALID."""
    if not any(any(p) for p in pads):
        return x, "VALID"
    if None not in hw and pad_value is None:
        same = tuple(same_pads(s, k, st, d) for s, k, st, d in zip(hw, kernel, stride, dilation))
        # (a window wider than twice the input is refused by the kernels under SAME: padded, it fits)
        if same == tuple(pads) and all((k - 1) * d + 1 <= 2 * s + 1 for s, k, d in zip(hw, kernel, dilation)):
            return x, "SAME"
    (t, b), (l, r) = pads
    y = ops.pad(x, [[0, 0], [t, b], [l, r], [0, 0]])
    if pad_value is not None:  # max pooling: the padding must never win
        h, w = hw
        if h is None or w is None:
            raise ValueError("max pooling with padding needs the input's height and width known")
        mask = np.full((1, h + t + b, w + l + r, 1), pad_value, np.float32)
        mask[:, t:t + h, l:l + w] = 0.0
        y = ops.add(y, ctx.fb.const(mask))
    return y, "VALID"


# convolution
@handles("Conv")
def _conv(ctx, node, x, w, b=None):
    wshape = onnx_shape(ctx, w)
    if len(wshape) == 3:
        return _conv1d(ctx, node, x, w, b, wshape)
    if len(wshape) != 4:
        raise node.refuse(f"a {len(wshape) - 2}-D convolution (weight {list(wshape)})",
                          "only 1-D and 2-D convolutions are supported")
    t = ctx.nhwc(x)
    cout, cin_g, kh, kw = wshape
    groups = int(node.attr("group", 1))
    cin = t.shape[3]
    stride, dilation = _ints(node.attr("strides"), 2, 1), _ints(node.attr("dilations"), 2, 1)
    hw = (t.shape[1], t.shape[2])
    pads = auto_pads(node, hw, (kh, kw), stride, dilation)
    t, tfl = _spatial(ctx, t, pads, hw, (kh, kw), stride, dilation)
    depthwise = groups > 1 and groups == cin and cin_g == 1
    kernel = ctx.weight(w, "dw" if depthwise else "ohwi")
    bias = None if b is None else ctx.plain(b)
    return V(conv_op(t, kernel, bias, stride, tfl, dilation, groups, depthwise, cin, cout), True)


def _as_image(t):
    return ops.expand_dims(ops.transpose(t, [0, 2, 1]), 1)  # [N, C, L] -> [N, 1, L, C]


def _from_image(y):
    return V(ops.transpose(ops.squeeze(y, [1]), [0, 2, 1]))


def _conv1d(ctx, node, x, w, b, wshape):
    t = ctx.plain(x)  # [N, C, L]
    cout, cin_g, k = wshape
    cin, length = t.shape[1], t.shape[2]
    groups = int(node.attr("group", 1))
    stride, dilation = _ints(node.attr("strides"), 1, 1)[0], _ints(node.attr("dilations"), 1, 1)[0]
    (lo, hi), = auto_pads(node, (length,), (k,), (stride,), (dilation,))
    image = _as_image(t)
    if length is None and (lo or hi):
        image, tfl = ops.pad(image, [[0, 0], [0, 0], [lo, hi], [0, 0]]), "VALID"
    else:
        image, tfl = _spatial(ctx, image, ((0, 0), (lo, hi)), (1, length), (1, k), (1, stride), (1, dilation))
    kernel = ctx.plain(w)  # [O, C/g, k]
    bias = None if b is None else ctx.plain(b)
    y = conv1d_op(image, kernel, bias, stride, tfl, dilation, groups, cin, cout)
    return _from_image(y)


@handles("ConvTranspose")
def _conv_transpose(ctx, node, x, w, b=None):
    wshape = onnx_shape(ctx, w)
    groups = int(node.attr("group", 1))
    if len(wshape) != 4 or groups != 1 or _ints(node.attr("dilations"), 2, 1) != (1, 1) or \
            node.attr("output_shape") is not None:
        raise node.refuse(f"a transposed convolution with weight {list(wshape)}, group {groups}, dilations "
                          f"{node.attr('dilations')}, output_shape {node.attr('output_shape')}",
                          "only 2-D ones without groups, dilation or output_shape are supported")
    t = ctx.nhwc(x)
    n, h, w_, _ = t.shape
    if h is None or w_ is None:
        raise node.refuse("a transposed convolution of an input whose height or width is unknown")
    _, cout, kh, kw = wshape
    (sh, sw) = _ints(node.attr("strides"), 2, 1)
    (pt, pb), (pl, pr) = auto_pads(node, (h, w_), (kh, kw), (sh, sw), (1, 1))
    oph, opw = _ints(node.attr("output_padding"), 2, 0)
    full = ((h - 1) * sh + kh, (w_ - 1) * sw + kw)
    out = (full[0] - pt - pb + oph, full[1] - pl - pr + opw)
    made = (max(full[0], pt + out[0]), max(full[1], pl + out[1]))  # rows past the full output: bias only
    kernel = ops.transpose(ctx.plain(w), [1, 2, 3, 0])  # [in, out, kh, kw] -> [out, kh, kw, in]
    batch = ops.slice_(ops.shape_of(t), [0], [1])
    shape = ops.concat([batch, ctx.fb.const(np.int32([made[0], made[1], cout]))], 0)
    y = ops.transpose_conv(shape, kernel, t, None if b is None else ctx.plain(b), strides=(sh, sw),
                           padding="VALID", known_shape=[n, made[0], made[1], cout])
    if (pt, pl) != (0, 0) or made != out:
        y = ops.slice_(y, [0, pt, pl, 0], [-1, out[0], out[1], -1])
    return V(y, True)


# batch normalisation and other normalisations with per-channel parameters
@handles("BatchNormalization")
def _batch_norm(ctx, node, x, scale, bias, mean, var):
    rank = len(onnx_shape(ctx, x))
    if rank not in (2, 3, 4):
        raise node.refuse(f"batch norm of a rank-{rank} tensor", "only [N, C], [N, C, L] and [N, C, H, W] inputs")
    t = ctx.nhwc(x) if rank == 4 else ctx.plain(x)
    if rank == 3:  # [N, C, L]: channels last for the statistics, back at the end
        t = ops.transpose(t, [0, 2, 1])
    axes = list(range(t.ndim - 1))
    eps = float(node.attr("epsilon", 1e-5))
    if ctx.trains(scale, bias) or node.attr("training_mode", 0) and ctx.training:
        batch_mean = ops.reduce_mean(t, axes)
        centered = ops.sub(t, batch_mean)
        batch_var = ops.reduce_mean(ops.square(centered), axes)
        m = float(node.attr("momentum", 0.9))
        n = num_elements(t, axes)
        unbiased = ops.mul(batch_var, ops.div(n, ops.sub(n, 1.0)))
        for p, value in ((mean, batch_mean), (var, unbiased)):
            if isinstance(p, P):
                ctx.fb.assign(p.state, ops.add(ops.mul(ctx.read(p), m), ops.mul(value, 1.0 - m)))
        inv = ops.rsqrt(ops.add(batch_var, eps))
    else:
        centered = ops.sub(t, ctx.plain(mean))
        inv = ops.rsqrt(ops.add(ctx.plain(var), eps))
    y = ops.add(ops.mul(centered, ops.mul(inv, ctx.plain(scale))), ctx.plain(bias))
    return V(ops.transpose(y, [0, 2, 1]) if rank == 3 else y, rank == 4), None, None


@handles("InstanceNormalization")
def _instance_norm(ctx, node, x, scale, bias):
    rank = len(onnx_shape(ctx, x))
    eps = float(node.attr("epsilon", 1e-5))
    if rank == 4:
        t = ctx.nhwc(x)
        return V(ops.add(ops.mul(normalize(t, [1, 2], eps), ctx.plain(scale)), ctx.plain(bias)), True)
    t = ctx.plain(x)
    y = normalize(t, list(range(2, rank)), eps)
    per_channel = [-1] + [1] * (rank - 2)
    return V(ops.add(ops.mul(y, ops.reshape(ctx.plain(scale), per_channel)), ops.reshape(ctx.plain(bias), per_channel)))


@handles("GroupNormalization")
def _group_norm(ctx, node, x, scale, bias):
    if len(onnx_shape(ctx, x)) != 4:
        raise node.refuse("group norm of a tensor that is not [N, C, H, W]")
    t = ctx.nhwc(x)
    _, h, w, c = t.shape
    g = int(node.attr("num_groups"))
    if None in (h, w, c):
        raise node.refuse("group norm of a map whose size is unknown")
    y = normalize(ops.reshape(t, [-1, h, w, g, c // g]), [1, 2, 4], float(node.attr("epsilon", 1e-5)))
    y = ops.reshape(y, [-1, h, w, c])
    s, b = ctx.plain(scale), ctx.plain(bias)
    if s.shape[0] != c:  # opset 18's per-group scale and bias
        s, b = (ops.reshape(ops.tile(ops.reshape(v, [g, 1]), [1, c // g]), [c]) for v in (s, b))
    return V(ops.add(ops.mul(y, s), b), True)


# pooling
def _pool_geometry(ctx, node, t):
    """(kernel, strides, pads ((top, bottom), (left, right)), hw, whether ceil_mode added windows) of a
    2-D pooling node on NHWC t; ceil_mode's extra windows become extra padding at the end."""
    kernel = _ints(node.attr("kernel_shape"), 2, 1)
    stride = _ints(node.attr("strides"), 2, 1)
    if _ints(node.attr("dilations"), 2, 1) != (1, 1):
        raise node.refuse("dilated pooling", "only dilations of 1 are supported")
    hw = (t.shape[1], t.shape[2])
    pads = auto_pads(node, hw, kernel, stride, (1, 1))
    if not node.attr("ceil_mode", 0):
        return kernel, stride, pads, hw, False
    if None in hw:
        raise node.refuse("pooling with ceil_mode=1 of a map whose size is unknown")
    extra = []
    for s, k, st, (lo, hi) in zip(hw, kernel, stride, pads):
        out = -(-(s + lo + hi - k) // st) + 1
        if (out - 1) * st >= s + lo:  # the last window would start in the padding: it is dropped
            out -= 1
        extra.append(max((out - 1) * st + k - (s + lo + hi), 0))
    pads = tuple((lo, hi + e) for (lo, hi), e in zip(pads, extra))
    return kernel, stride, pads, hw, any(extra)


def _pool_input(ctx, node, x):
    """(the input as an NHWC image, whether it is a 1-D [N, C, L] sequence seen as one, the node with 2-D
    attributes)."""
    if len(onnx_shape(ctx, x)) == 3:
        flat = copy.copy(node)
        flat.attrs = {**node.attrs, **_pool1d_attrs(node)}
        return _as_image(ctx.plain(x)), True, flat
    return ctx.nhwc(x), False, node


@handles("MaxPool")
def _max_pool(ctx, node, x):
    if len(node.outputs) > 1 and node.outputs[1]:
        raise node.refuse("the indices output of max pooling", "export max pooling without return_indices")
    t, one_d, node = _pool_input(ctx, node, x)
    kernel, stride, pads, hw, _ = _pool_geometry(ctx, node, t)
    t, tfl = _spatial(ctx, t, pads, hw, kernel, stride, (1, 1), pad_value=-_PAD_BIG)
    y = ops.max_pool_2d(t, kernel, stride, tfl)
    return _from_image(y) if one_d else V(y, True)


def _pool1d_attrs(node):
    out = {}
    for key, default in (("kernel_shape", None), ("strides", 1), ("dilations", 1)):
        v = node.attr(key, default)
        if v is not None:
            out[key] = [1, int(np.ravel(v)[0])]
    if node.attr("pads") is not None:
        lo, hi = node.attr("pads")
        out["pads"] = [0, lo, 0, hi]
    return out


@handles("AveragePool")
def _avg_pool(ctx, node, x):
    t, one_d, node = _pool_input(ctx, node, x)
    kernel, stride, pads, hw, ceil = _pool_geometry(ctx, node, t)
    include = bool(node.attr("count_include_pad", 0))
    if not any(any(p) for p in pads):
        y = ops.average_pool_2d(t, kernel, stride, "VALID")
    elif not include and None not in hw and \
            tuple(same_pads(s, k, st, 1) for s, k, st in zip(hw, kernel, stride)) == tuple(pads):
        y = ops.average_pool_2d(t, kernel, stride, "SAME")  # (TFLite's SAME averages the real pixels only)
    else:
        if None in hw:
            raise node.refuse("average pooling with padding of a map whose size is unknown")
        if include and ceil:
            raise node.refuse("average pooling with ceil_mode=1 and count_include_pad=1 that changes the output "
                              "size", "use ceil_mode=0 or count_include_pad=0")
        (pt, pb), (pl, pr) = pads
        y = ops.average_pool_2d(ops.pad(t, [[0, 0], [pt, pb], [pl, pr], [0, 0]]), kernel, stride, "VALID")
        if not include:  # the zero padding is not counted
            y = ops.mul(y, ctx.fb.const(_window_scale(hw, kernel, stride, pads)))
    return _from_image(y) if one_d else V(y, True)


def _window_scale(hw, kernel, stride, pads):
    """kh * kw / (the number of real pixels in each window), as [1, oh, ow, 1]."""
    (pt, pb), (pl, pr) = pads
    h, w = hw
    valid = np.zeros((h + pt + pb, w + pl + pr), np.float64)
    valid[pt:pt + h, pl:pl + w] = 1
    kh, kw = kernel
    oh = (valid.shape[0] - kh) // stride[0] + 1
    ow = (valid.shape[1] - kw) // stride[1] + 1
    counts = np.array([[valid[i * stride[0]:i * stride[0] + kh, j * stride[1]:j * stride[1] + kw].sum()
                        for j in range(ow)] for i in range(oh)])
    return (kh * kw / counts).astype(np.float32).reshape(1, oh, ow, 1)


@handles("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(ctx, node, x):
    fn = ops.reduce_mean if node.op == "GlobalAveragePool" else ops.reduce_max
    rank = len(onnx_shape(ctx, x))
    if rank == 4:
        return V(fn(ctx.nhwc(x), [1, 2], keepdims=True), True)
    t = ctx.plain(x)
    return V(fn(t, list(range(2, rank)), keepdims=True))


# resizing: RESIZE_NEAREST_NEIGHBOR and RESIZE_BILINEAR where ONNX's sampling positions are TFLite's
_RESIZE_MODES = {("nearest", "asymmetric", "floor"): ("nearest", False, False),
                 ("nearest", "half_pixel", "round_prefer_ceil"): ("nearest", False, True),
                 ("nearest", "tf_half_pixel_for_nn", "floor"): ("nearest", False, True),
                 ("nearest", "align_corners", "round_prefer_ceil"): ("nearest", True, False),
                 ("linear", "asymmetric", None): ("linear", False, False),
                 ("linear", "half_pixel", None): ("linear", False, True),
                 ("linear", "pytorch_half_pixel", None): ("linear", False, True),
                 ("linear", "align_corners", None): ("linear", True, False)}


@handles("Resize")
def _resize(ctx, node, x, roi=None, scales=None, sizes=None):
    mode = node.attr("mode", "nearest")
    coords = node.attr("coordinate_transformation_mode", "half_pixel")
    nearest = node.attr("nearest_mode", "round_prefer_floor") if mode == "nearest" else None
    key = (mode, coords, nearest)
    if key not in _RESIZE_MODES or node.attr("antialias", 0) or len(onnx_shape(ctx, x)) != 4:
        raise node.refuse(f"resizing a {len(onnx_shape(ctx, x))}-D tensor with mode={mode!r}, "
                          f"coordinate_transformation_mode={coords!r}, nearest_mode={nearest!r}",
                          "supported: nearest (asymmetric + floor, as torch's 'nearest'; half_pixel + "
                          "round_prefer_ceil) and linear (half_pixel, pytorch_half_pixel, align_corners, "
                          "asymmetric) on NCHW images")
    t = ctx.nhwc(x)
    h, w = t.shape[1], t.shape[2]
    if h is None or w is None:
        raise node.refuse("resizing a map whose size is unknown")
    size = ctx.const(sizes) if sizes is not None else None
    if size is not None and np.size(size):
        out = [int(v) for v in np.ravel(size)[-2:]]
    else:
        sc = ctx.const(scales)
        if sc is None or np.size(sc) < 2 or tuple(np.ravel(sc)[:2]) != (1.0, 1.0) and np.size(sc) == 4:
            raise node.refuse("scales or sizes computed at run time, or scaling the batch or channels")
        sc = np.ravel(sc)[-2:]
        out = [int(np.floor(d * float(s))) for d, s in zip((h, w), sc)]
        if coords != "align_corners" and any(not np.isclose(d / o, 1.0 / float(s), rtol=0, atol=1e-9)
                                             for d, o, s in zip((h, w), out, sc)):
            raise node.refuse(f"scales {list(sc)} of a {h}x{w} map: ONNX samples at 1/scale steps, TFLite at "
                              "in/out ones", "export with output sizes instead of scale factors")
    kind, align, half = _RESIZE_MODES[key]
    fn = ops.resize_nearest_neighbor if kind == "nearest" else ops.resize_bilinear
    return V(fn(t, out, align_corners=align, half_pixel_centers=half), True)
