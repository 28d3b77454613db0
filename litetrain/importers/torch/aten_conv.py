"""The PyTorch importer's convolution, normalisation-with-statistics, pooling and resizing handlers
(see aten.py for what a handler gets and returns)."""
from __future__ import annotations

import numpy as np

from ... import ops
from ...ops._util import num_elements
from ..common import conv1d_op, conv_op
from .aten import TorchImportError, _aten_name, _pair, _same_pads, _shape, _V, _where, handles

_PAD_BIG = 3.0e38  # max pooling's padding value (stands for -inf)


# convolution
def _conv_pads(node, padding, hw, kernel, stride, dilation):
    """((top, bottom), (left, right)) that torch pads for `padding` (ints or 'same'/'valid')."""
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0), (0, 0))
        pads = []
        for k, d in zip(kernel, dilation):
            total = d * (k - 1)
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    ph, pw = _pair(padding)
    return ((ph, ph), (pw, pw))


def _spatial(ctx, x, pads, hw, kernel, stride, dilation, pad_value=None):
    """(x, TFLite padding): SAME when torch's pads are SAME's, else x padded explicitly and VALID."""
    if not any(any(p) for p in pads):
        return x, "VALID"
    same = tuple(_same_pads(s, k, st, d) for s, k, st, d in zip(hw, kernel, stride, dilation))
    if same == tuple(pads) and pad_value is None:
        return x, "SAME"
    (t, b), (l, r) = pads
    y = ops.pad(x, [[0, 0], [t, b], [l, r], [0, 0]])
    if pad_value is not None:  # max pooling: the padding must never win
        h, w = hw
        mask = np.full((1, h + t + b, w + l + r, 1), pad_value, np.float32)
        mask[:, t:t + h, l:l + w] = 0.0
        y = ops.add(y, ctx.fb.const(mask))
    return y, "VALID"


@handles("conv2d", "convolution")
def _conv(ctx, node, x, w, bias=None, stride=1, padding=0, dilation=1, *rest, groups=1, **kw):
    if _aten_name(node.target) == "convolution":
        transposed, output_padding, groups = rest
        if transposed:
            return _conv_transpose(ctx, node, x, w, bias, stride, padding, output_padding, groups, dilation)
    elif rest:
        groups = rest[0]
    wshape = _shape(node.args[1])
    if wshape is not None and len(wshape) == 3:
        return _conv1d(ctx, node, x, w, bias, stride, padding, dilation, groups)
    if wshape is None or len(wshape) != 4:
        raise TorchImportError(f"{node.target} in {_where(node)}: only 1-D and 2-D convolutions are supported "
                               f"(weight shape {wshape}); write a 3-D convolution as 2-D ones")
    x = ctx.nhwc(x)
    cout, cin_g, kh, kw_ = wshape
    cin = x.shape[3]
    stride, dilation = _pair(stride), _pair(dilation)
    hw = (x.shape[1], x.shape[2])
    pads = _conv_pads(node, padding, hw, (kh, kw_), stride, dilation)
    x, tfl = _spatial(ctx, x, pads, hw, (kh, kw_), stride, dilation)
    depthwise = groups > 1 and groups == cin and cin_g == 1
    layout = "dw" if depthwise else "ohwi"
    kernel = ctx.weight(w, layout)
    b = None if bias is None else ctx.torch(bias)
    bn = ctx.m._folds.get(node)
    if bn is not None:
        bn_args = (None,) + ctx.resolve(tuple(bn.args[1:]))  # (its input is this convolution)
        gamma, beta, mean, var = bn_args[1:5]
        eps = bn_args[7] if _aten_name(bn.target) == "batch_norm" else bn_args[6]
        if not ctx.trains(bn, (gamma, beta)) and not (_aten_name(bn.target) == "batch_norm" and mean is None):
            scale = ops.rsqrt(ops.add(ctx.torch(var), float(eps)))
            if gamma is not None:
                scale = ops.mul(scale, ctx.torch(gamma))
            kernel = ops.mul(kernel, scale if depthwise else ops.reshape(scale, [cout, 1, 1, 1]))
            shift = ops.neg(ops.mul(ctx.torch(mean), scale))
            if b is not None:
                shift = ops.add(shift, ops.mul(b, scale))
            b = ops.add(shift, ctx.torch(beta)) if beta is not None else shift
            ctx.done.add(bn)
            y = conv_op(x, kernel, b, stride, tfl, dilation, groups, depthwise, cin, cout)
            ctx.env[bn] = _V(y, True) if _aten_name(bn.target) == "batch_norm" else (_V(y, True), None, None)
            return _V(y, True)
    return _V(conv_op(x, kernel, b, stride, tfl, dilation, groups, depthwise, cin, cout), True)


# batch normalisation
def _batch_norm(ctx, node, x, gamma, beta, mean, var, momentum, eps):
    rank = x.t.ndim if isinstance(x, _V) else None
    if rank not in (2, 3, 4):
        raise TorchImportError(f"batch norm of a rank-{rank} tensor in {_where(node)}: only BatchNorm2d "
                               f"(NCHW) and BatchNorm1d on [N, C] or [N, C, L] are supported")
    t = ctx.nhwc(x) if rank == 4 else ctx.torch(x)
    if rank == 3:  # [N, C, L]: channels last for the statistics, back at the end
        t = ops.transpose(t, [0, 2, 1])
    axes = list(range(t.ndim - 1))
    training = ctx.trains(node, (gamma, beta)) or mean is None
    if training:
        batch_mean = ops.reduce_mean(t, axes)
        centered = ops.sub(t, batch_mean)
        batch_var = ops.reduce_mean(ops.square(centered), axes)
        if mean is not None and ctx.training:
            if momentum is None:
                raise TorchImportError(f"batch norm with momentum=None (a cumulative average) in {_where(node)}")
            m = float(momentum)
            n = num_elements(t, axes)
            unbiased = ops.mul(batch_var, ops.div(n, ops.sub(n, 1.0)))
            for p, value in ((mean, batch_mean), (var, unbiased)):
                ctx.fb.assign(p.state, ops.add(ops.mul(ctx.read(p), 1.0 - m), ops.mul(value, m)))
        inv = ops.rsqrt(ops.add(batch_var, float(eps)))
    else:
        centered = ops.sub(t, ctx.torch(mean))
        inv = ops.rsqrt(ops.add(ctx.torch(var), float(eps)))
    if gamma is not None:
        inv = ops.mul(inv, ctx.torch(gamma))
    y = ops.mul(centered, inv)
    if beta is not None:
        y = ops.add(y, ctx.torch(beta))
    return _V(ops.transpose(y, [0, 2, 1]) if rank == 3 else y, rank == 4)


@handles("batch_norm")
def _bn(ctx, node, x, gamma, beta, mean, var, training=False, momentum=0.1, eps=1e-5, *rest):
    return _batch_norm(ctx, node, x, gamma, beta, mean, var, momentum, eps)


@handles("_native_batch_norm_legit_no_training")
def _bn_eval(ctx, node, x, gamma, beta, mean, var, momentum=0.1, eps=1e-5):
    return (_batch_norm(ctx, node, x, gamma, beta, mean, var, momentum, eps), None, None)


# pooling and reductions
@handles("adaptive_avg_pool2d", "_adaptive_avg_pool2d")
def _adaptive_avg(ctx, node, x, output_size):
    t = ctx.nhwc(x)
    (oh, ow), (h, w) = _pair(output_size), (t.shape[1], t.shape[2])
    if (oh, ow) == (1, 1):
        return _V(ops.reduce_mean(t, [1, 2], keepdims=True), True)
    if h % oh or w % ow:
        raise TorchImportError(f"adaptive average pooling of {h}x{w} to {oh}x{ow} in {_where(node)}: "
                               f"only sizes that divide the input are supported")
    if (oh, ow) == (h, w):
        return _V(t, True)
    return _V(ops.average_pool_2d(t, (h // oh, w // ow), (h // oh, w // ow), "VALID"), True)


def _pool_geometry(node, t, kernel, stride, padding, ceil_mode, dilation=1):
    kernel = _pair(kernel)
    stride = _pair(stride) if stride not in (None, [], ()) else kernel
    if _pair(dilation) != (1, 1):
        raise TorchImportError(f"dilated pooling in {_where(node)} is not supported")
    ph, pw = _pair(padding)
    hw = (t.shape[1], t.shape[2])
    if ceil_mode:
        for s, k, st, p in zip(hw, kernel, stride, (ph, pw)):
            if (s + 2 * p - k) % st and ((s + 2 * p - k) // st + 1) * st < s + p:
                raise TorchImportError(f"pooling with ceil_mode=True in {_where(node)} changes the output "
                                       f"size; only ceil_mode=False is supported")
    return kernel, stride, ((ph, ph), (pw, pw)), hw


@handles("max_pool2d", "max_pool2d_with_indices")
def _max_pool(ctx, node, x, kernel, stride=None, padding=0, dilation=1, ceil_mode=False):
    t = ctx.nhwc(x)
    kernel, stride, pads, hw = _pool_geometry(node, t, kernel, stride, padding, ceil_mode, dilation)
    t, tfl = _spatial(ctx, t, pads, hw, kernel, stride, (1, 1), pad_value=-_PAD_BIG)
    y = _V(ops.max_pool_2d(t, kernel, stride, tfl), True)
    return (y, None) if _aten_name(node.target) == "max_pool2d_with_indices" else y


@handles("avg_pool2d")
def _avg_pool(ctx, node, x, kernel, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
              divisor_override=None):
    t = ctx.nhwc(x)
    kernel, stride, pads, hw = _pool_geometry(node, t, kernel, stride, padding, ceil_mode)
    if divisor_override is not None or (any(any(p) for p in pads) and not count_include_pad):
        raise TorchImportError(f"average pooling with divisor_override or count_include_pad=False and padding "
                               f"in {_where(node)} is not supported")
    if any(any(p) for p in pads):  # torch counts the zero padding: pad explicitly, then VALID
        (pt, pb), (pl, pr) = pads
        t = ops.pad(t, [[0, 0], [pt, pb], [pl, pr], [0, 0]])
    return _V(ops.average_pool_2d(t, kernel, stride, "VALID"), True)



# 1-D convolution: CONV_2D on the sequence seen as a 1-pixel-high NHWC image
@handles("conv1d")
def _conv1d(ctx, node, x, w, bias=None, stride=1, padding=0, dilation=1, groups=1):
    t = ctx.torch(x)  # [N, C, L]
    cout, cin_g, k = _shape(node.args[1])
    cin, length = t.shape[1], t.shape[2]
    stride, dilation = int(_pair(stride)[0]), int(_pair(dilation)[0])
    image = ops.expand_dims(ops.transpose(t, [0, 2, 1]), 1)  # [N, 1, L, C]
    if isinstance(padding, str):
        pads = _conv_pads(node, padding, None, (1, k), (1, stride), (1, dilation))
    else:
        p = int(_pair(padding)[0])
        pads = ((0, 0), (p, p))
    if length is None and any(pads[1]):
        image, tfl = ops.pad(image, [[0, 0], [0, 0], list(pads[1]), [0, 0]]), "VALID"
    else:
        image, tfl = _spatial(ctx, image, pads, (1, length), (1, k), (1, stride), (1, dilation))
    kernel = ctx.torch(w)  # [O, C/g, k]
    b = None if bias is None else ctx.torch(bias)
    y = conv1d_op(image, kernel, b, stride, tfl, dilation, groups, cin, cout)
    return _V(ops.transpose(ops.squeeze(y, [1]), [0, 2, 1]))


# transposed convolution: TRANSPOSE_CONV (VALID), then torch's padding cropped away
@handles("conv_transpose2d")
def _conv_transpose(ctx, node, x, w, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    wshape = _shape(node.args[1])
    if wshape is None or len(wshape) != 4 or groups != 1 or _pair(dilation) != (1, 1):
        raise TorchImportError(f"{node.target} in {_where(node)}: only 2-D transposed convolutions without groups "
                               f"or dilation are supported (weight {wshape}, groups {groups}, dilation {dilation})")
    t = ctx.nhwc(x)
    n, h, w_, cin = t.shape
    if h is None or w_ is None:
        raise TorchImportError(f"{node.target} in {_where(node)} needs the input's height and width known")
    _, cout, kh, kw = wshape
    (sh, sw), (ph, pw), (oph, opw) = _pair(stride), _pair(padding), _pair(output_padding)
    full = ((h - 1) * sh + kh, (w_ - 1) * sw + kw)
    out = (full[0] - 2 * ph + oph, full[1] - 2 * pw + opw)
    made = (full[0] + max(0, oph - ph), full[1] + max(0, opw - pw))  # rows past the full output: bias only
    kernel = ops.transpose(ctx.torch(w), [1, 2, 3, 0])  # [in, out, kh, kw] -> [out, kh, kw, in]
    batch = ops.slice_(ops.shape_of(t), [0], [1])
    shape = ops.concat([batch, ctx.fb.const(np.int32([made[0], made[1], cout]))], 0)
    y = ops.transpose_conv(shape, kernel, t, None if bias is None else ctx.torch(bias), strides=(sh, sw),
                           padding="VALID", known_shape=[n, made[0], made[1], cout])
    if (ph, pw) != (0, 0) or made != out:
        y = ops.slice_(y, [0, ph, pw, 0], [-1, out[0], out[1], -1])
    return _V(y, True)


# resizing: RESIZE_NEAREST_NEIGHBOR and RESIZE_BILINEAR, when torch's source positions are TFLite's
def _resize_size(node, t, output_size, scale_factors):
    """The output (height, width): torch's output_size, or its scale factors when torch then samples the
    input at the same positions as TFLite does (in / out steps)."""
    h, w = t.shape[1], t.shape[2]
    if h is None or w is None:
        raise TorchImportError(f"{node.target} in {_where(node)} needs the input's height and width known")
    if output_size is not None:
        return [int(v) for v in output_size]
    sizes = [int(np.floor(d * float(s))) for d, s in zip((h, w), _pair_f(scale_factors))]
    for d, o, s in zip((h, w), sizes, _pair_f(scale_factors)):
        if not np.isclose(d / o, 1.0 / float(s), rtol=0, atol=1e-12):
            raise TorchImportError(f"{node.target} in {_where(node)} scales {d} by {s}: torch then samples at "
                                   f"1/{s} steps, TFLite at {d}/{o}; give the output size (size=) instead")
    return sizes


def _pair_f(v):
    v = list(v) if isinstance(v, (list, tuple)) else [v]
    return (v[0], v[0]) if len(v) == 1 else (v[0], v[1])


@handles("upsample_nearest2d", "_upsample_nearest_exact2d")
def _upsample_nearest(ctx, node, x, output_size=None, scale_factors=None, *rest):
    t = ctx.nhwc(x)
    size = _resize_size(node, t, output_size, scale_factors)
    exact = _aten_name(node.target) == "_upsample_nearest_exact2d"
    return _V(ops.resize_nearest_neighbor(t, size, half_pixel_centers=exact), True)


@handles("upsample_bilinear2d")
def _upsample_bilinear(ctx, node, x, output_size=None, align_corners=False, scale_factors=None, *rest):
    t = ctx.nhwc(x)
    size = _resize_size(node, t, output_size, scale_factors)
    if align_corners:
        return _V(ops.resize_bilinear(t, size, align_corners=True), True)
    return _V(ops.resize_bilinear(t, size, half_pixel_centers=True), True)


# 1-D pooling: the 2-D ops on the sequence seen as a 1-pixel-high NHWC image
def _as_image(ctx, x):
    return ops.expand_dims(ops.transpose(ctx.torch(x), [0, 2, 1]), 1)  # [N, C, L] -> [N, 1, L, C]


def _from_image(y):
    return _V(ops.transpose(ops.squeeze(y, [1]), [0, 2, 1]))


def _one(v):
    return int(v[0]) if isinstance(v, (list, tuple)) else int(v)


@handles("max_pool1d", "max_pool1d_with_indices")
def _max_pool1d(ctx, node, x, kernel, stride=None, padding=0, dilation=1, ceil_mode=False):
    t = _as_image(ctx, x)
    k = _one(kernel)
    s = k if stride in (None, [], ()) else _one(stride)
    _, stride2, pads, hw = _pool_geometry(node, t, (1, k), (1, s), (0, _one(padding)), ceil_mode, (1, _one(dilation)))
    t, tfl = _spatial(ctx, t, pads, hw, (1, k), stride2, (1, 1), pad_value=-_PAD_BIG)
    y = _from_image(ops.max_pool_2d(t, (1, k), stride2, tfl))
    return (y, None) if _aten_name(node.target) == "max_pool1d_with_indices" else y


@handles("avg_pool1d")
def _avg_pool1d(ctx, node, x, kernel, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    t = _as_image(ctx, x)
    k = _one(kernel)
    s = k if stride in (None, [], ()) else _one(stride)
    p = _one(padding)
    _, stride2, _, _ = _pool_geometry(node, t, (1, k), (1, s), (0, p), ceil_mode)
    if p and not count_include_pad:
        raise TorchImportError(f"avg_pool1d with count_include_pad=False and padding in {_where(node)} is not "
                               "supported")
    if p:
        t = ops.pad(t, [[0, 0], [0, 0], [p, p], [0, 0]])
    return _from_image(ops.average_pool_2d(t, (1, k), stride2, "VALID"))


@handles("adaptive_avg_pool1d")
def _adaptive_avg1d(ctx, node, x, output_size):
    t = ctx.torch(x)
    n, length = _one(output_size), t.shape[2]
    if n == 1:
        return _V(ops.reduce_mean(t, [2], keepdims=True))
    if length is None or length % n:
        raise TorchImportError(f"adaptive average pooling of length {length} to {n} in {_where(node)}: only sizes "
                               "that divide the input are supported")
    return _from_image(ops.average_pool_2d(_as_image(ctx, x), (1, length // n), (1, length // n), "VALID"))
