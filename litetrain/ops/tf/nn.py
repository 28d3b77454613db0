"""TensorFlow's gradient kernels for activations, convolutions and pooling (Flex ops in training files).

Each is written from TensorFlow's op definition (nn_ops.cc) and CPU kernel: the gradient of the
forward op with TensorFlow's padding (GetWindowedOutputSizeVerbose), in NHWC or NCHW (TensorFlow's
CPU kernels take NHWC; NCHW is the same arithmetic on transposed arrays). Window positions are the
filter taps: each tap (i, j) meets a strided slice of the padded input, so a kernel is a loop over
the kh * kw taps with one NumPy product each.
"""
from __future__ import annotations

import numpy as np

from .common import (channels_last, check_t, from_last, geometry, int_sizes, nhwc_dims, same_as, sized_by,
                     sizes_infer, taps, tf_op, to_last, window_attrs)

CONV_ATTRS = {"T": "float32", "strides": (1, 1, 1, 1), "padding": "VALID", "explicit_paddings": (),
              "data_format": "NHWC", "dilations": (1, 1, 1, 1), "use_cudnn_on_gpu": True}
DEPTHWISE_ATTRS = {"T": "float32", "strides": (1, 1, 1, 1), "padding": "VALID", "explicit_paddings": (),
                   "data_format": "NHWC", "dilations": (1, 1, 1, 1)}
POOL_ATTRS = {"T": "float32", "ksize": (1, 1, 1, 1), "strides": (1, 1, 1, 1), "padding": "VALID",
              "explicit_paddings": (), "data_format": "NHWC"}
AVG_POOL_ATTRS = {"T": "float32", "ksize": (1, 1, 1, 1), "strides": (1, 1, 1, 1), "padding": "VALID",
                  "data_format": "NHWC"}

# -- activations ------------------------------------------------------------------------------------
tf_op("ReluGrad", infer=same_as(0), num_inputs=(2, 2), attrs={"T": "float32"},
      kernel=lambda g, f, T="float32": np.where(f > 0, g, np.zeros_like(g)))
tf_op("Relu6Grad", infer=same_as(0), num_inputs=(2, 2), attrs={"T": "float32"},
      kernel=lambda g, f, T="float32": np.where((f > 0) & (f < 6), g, np.zeros_like(g)))


def _bias_add_grad_infer(attrs, inputs):
    g = inputs[0]
    last = channels_last(attrs["data_format"], "BiasAddGrad")
    if len(g.shape) < (1 if last else 3):
        raise ValueError(f"out_backprop must have rank >= {1 if last else 3} for {attrs['data_format']}, "
                         f"got {list(g.shape)}")
    check_t(attrs, g)
    return [(g.dtype, (g.shape[-1] if last or len(g.shape) < 3 else g.shape[1],))]


def _bias_add_grad(g, T="float32", data_format="NHWC"):
    """The sum over every dim but the channels' (last; the second for NCHW and rank >= 3)."""
    axis = g.ndim - 1 if channels_last(data_format, "BiasAddGrad") or g.ndim < 3 else 1
    return g.sum(axis=tuple(a for a in range(g.ndim) if a != axis), dtype=g.dtype)


tf_op("BiasAddGrad", infer=_bias_add_grad_infer, kernel=_bias_add_grad, num_inputs=(1, 1),
      attrs={"T": "float32", "data_format": "NHWC"})


# -- convolutions -------------------------------------------------------------------------------------
def _conv_setup(op, x_shape, f_shape, dy, strides, padding, explicit_paddings, data_format, dilations,
                depthwise=False):
    """(channels last?, NHWC strides, dilations, out h, out w, pads) with every shape checked."""
    last, strides, dilations, _ = window_attrs(op, data_format, strides, dilations)
    if depthwise and tuple(dilations) != (1, 1, 1, 1):
        raise ValueError(f"{op}: dilations {list(dilations)} are not supported (TensorFlow's depthwise gradients "
                         "take none; its converter writes a dilated depthwise convolution with SpaceToBatchND)")
    n, h, w, c = x_shape
    kh, kw, cin, cout = f_shape
    oh, ow, ph, pw = geometry(h, w, kh, kw, strides, dilations, padding, explicit_paddings, last)
    want = (n, oh, ow, cin * cout if depthwise else cout)
    if c != cin or dy.ndim != 4 or tuple(nhwc_dims(dy.shape, last)) != want:
        raise ValueError(f"{op}: input {list(x_shape)}, filter {list(f_shape)} and out_backprop "
                         f"{list(nhwc_dims(dy.shape, last)) if dy.ndim == 4 else list(dy.shape)} (NHWC order) do not fit "
                         f"(expected out_backprop {list(want)})")
    return last, strides, dilations, oh, ow, ph, pw


def _filter_grad(x, filter_sizes, dy, T="float32", strides=(1, 1, 1, 1), padding="VALID", explicit_paddings=(),
                 data_format="NHWC", dilations=(1, 1, 1, 1), use_cudnn_on_gpu=True):
    """Conv2DBackpropFilter: dW[i, j, c, o] = sum over n, y, x of input(tap i, j)[c] * dy[o]."""
    kh, kw, cin, cout = int_sizes(filter_sizes, "Conv2DBackpropFilter: filter_sizes")
    last = channels_last(data_format, "Conv2DBackpropFilter")
    x_shape = nhwc_dims(x.shape, last) if x.ndim == 4 else x.shape
    if x.ndim != 4:
        raise ValueError(f"Conv2DBackpropFilter: input must be 4-D, got {list(x.shape)}")
    last, st, dl, oh, ow, ph, pw = _conv_setup("Conv2DBackpropFilter", x_shape, (kh, kw, cin, cout), dy, strides,
                                               padding, explicit_paddings, data_format, dilations)
    xp = np.pad(to_last(x, last), ((0, 0), ph, pw, (0, 0)))
    flat = to_last(dy, last).reshape(-1, cout)
    dw = np.zeros((kh, kw, cin, cout), x.dtype)
    for i, j, rows, cols in taps(kh, kw, st[1], st[2], dl[1], dl[2], oh, ow):
        dw[i, j] = xp[:, rows, cols, :].reshape(-1, cin).T @ flat
    return dw


def _input_grad(input_sizes, wt, dy, T="float32", strides=(1, 1, 1, 1), padding="VALID", explicit_paddings=(),
                data_format="NHWC", dilations=(1, 1, 1, 1), use_cudnn_on_gpu=True):
    """Conv2DBackpropInput: each tap scatters dy @ W[i, j]^T back to the input pixels it read."""
    last = channels_last(data_format, "Conv2DBackpropInput")
    n, h, w, cin = nhwc_dims(int_sizes(input_sizes, "Conv2DBackpropInput: input_sizes"), last)
    if wt.ndim != 4:
        raise ValueError(f"Conv2DBackpropInput: filter must be 4-D, got {list(wt.shape)}")
    last, st, dl, oh, ow, ph, pw = _conv_setup("Conv2DBackpropInput", (n, h, w, cin), wt.shape, dy, strides,
                                               padding, explicit_paddings, data_format, dilations)
    g = to_last(dy, last)
    dxp = np.zeros((n, h + sum(ph), w + sum(pw), cin), dy.dtype)
    for i, j, rows, cols in taps(wt.shape[0], wt.shape[1], st[1], st[2], dl[1], dl[2], oh, ow):
        dxp[:, rows, cols, :] += g @ wt[i, j].T
    return from_last(dxp[:, ph[0]:ph[0] + h, pw[0]:pw[0] + w, :], last)


tf_op("Conv2DBackpropFilter", infer=sizes_infer(1, 0), kernel=_filter_grad, num_inputs=(3, 3), attrs=CONV_ATTRS,
      allocates=sized_by(1, 0, times=1))
tf_op("Conv2DBackpropInput", infer=sizes_infer(0, 1), kernel=_input_grad, num_inputs=(3, 3), attrs=CONV_ATTRS,
      allocates=sized_by(0, 1))


def _depthwise_filter_grad(x, filter_sizes, dy, T="float32", strides=(1, 1, 1, 1), padding="VALID",
                           explicit_paddings=(), data_format="NHWC", dilations=(1, 1, 1, 1)):
    """DepthwiseConv2dNativeBackpropFilter: filter [kh, kw, C, M], output channel c * M + m;
    dW[i, j, c, m] = sum over n, y, x of input(tap i, j)[c] * dy[c * M + m]."""
    op = "DepthwiseConv2dNativeBackpropFilter"
    kh, kw, c, m = int_sizes(filter_sizes, f"{op}: filter_sizes")
    if x.ndim != 4:
        raise ValueError(f"{op}: input must be 4-D, got {list(x.shape)}")
    last = channels_last(data_format, op)
    last, st, _, oh, ow, ph, pw = _conv_setup(op, nhwc_dims(x.shape, last), (kh, kw, c, m), dy, strides, padding,
                                              explicit_paddings, data_format, dilations, depthwise=True)
    xp = np.pad(to_last(x, last), ((0, 0), ph, pw, (0, 0)))
    g = to_last(dy, last).reshape(dy.shape[0], oh, ow, c, m)
    dw = np.zeros((kh, kw, c, m), x.dtype)
    for i, j, rows, cols in taps(kh, kw, st[1], st[2], 1, 1, oh, ow):
        dw[i, j] = np.einsum("nyxc,nyxcm->cm", xp[:, rows, cols, :], g)
    return dw


def _depthwise_input_grad(input_sizes, wt, dy, T="float32", strides=(1, 1, 1, 1), padding="VALID",
                          explicit_paddings=(), data_format="NHWC", dilations=(1, 1, 1, 1)):
    """DepthwiseConv2dNativeBackpropInput: each tap sends sum over m of dy[c * M + m] * W[i, j, c, m]
    back to the input pixels it read."""
    op = "DepthwiseConv2dNativeBackpropInput"
    last = channels_last(data_format, op)
    n, h, w, c = nhwc_dims(int_sizes(input_sizes, f"{op}: input_sizes"), last)
    if wt.ndim != 4:
        raise ValueError(f"{op}: filter must be 4-D, got {list(wt.shape)}")
    last, st, _, oh, ow, ph, pw = _conv_setup(op, (n, h, w, c), wt.shape, dy, strides, padding, explicit_paddings,
                                              data_format, dilations, depthwise=True)
    g = to_last(dy, last).reshape(n, oh, ow, c, wt.shape[3])
    dxp = np.zeros((n, h + sum(ph), w + sum(pw), c), dy.dtype)
    for i, j, rows, cols in taps(wt.shape[0], wt.shape[1], st[1], st[2], 1, 1, oh, ow):
        dxp[:, rows, cols, :] += np.einsum("nyxcm,cm->nyxc", g, wt[i, j])
    return from_last(dxp[:, ph[0]:ph[0] + h, pw[0]:pw[0] + w, :], last)


tf_op("DepthwiseConv2dNativeBackpropFilter", infer=sizes_infer(1, 0), kernel=_depthwise_filter_grad,
      num_inputs=(3, 3), attrs=DEPTHWISE_ATTRS, allocates=sized_by(1, 0, times=1))
tf_op("DepthwiseConv2dNativeBackpropInput", infer=sizes_infer(0, 1), kernel=_depthwise_input_grad,
      num_inputs=(3, 3), attrs=DEPTHWISE_ATTRS, allocates=sized_by(0, 1))


# -- pooling --------------------------------------------------------------------------------------------
def _pool_setup(op, in_shape, dy, ksize, strides, padding, explicit_paddings, data_format):
    last, st, _, ks = window_attrs(op, data_format, strides, ksize=ksize)
    n, h, w, c = nhwc_dims(in_shape, last)
    oh, ow, ph, pw = geometry(h, w, ks[1], ks[2], st, (1, 1, 1, 1), padding, explicit_paddings, last)
    if dy.ndim != 4 or tuple(nhwc_dims(dy.shape, last)) != (n, oh, ow, c):
        raise ValueError(f"{op}: grad {list(dy.shape)} does not fit input {list(in_shape)} "
                         f"(expected {list(from_last_dims((n, oh, ow, c), last))})")
    return last, st, ks, (n, h, w, c), oh, ow, ph, pw


def from_last_dims(dims, last):
    return dims if last else (dims[0], dims[3], dims[1], dims[2])


def _max_pool_grad(x, y, dy, T="float32", ksize=(1, 1, 1, 1), strides=(1, 1, 1, 1), padding="VALID",
                   explicit_paddings=(), data_format="NHWC"):
    """MaxPoolGrad: each window's gradient goes to its first maximum in row-major order (as
    TensorFlow's CPU kernel picks it); overlapping windows add up."""
    if x.ndim != 4:
        raise ValueError(f"MaxPoolGrad: input must be 4-D, got {list(x.shape)}")
    last, st, ks, (n, h, w, c), oh, ow, ph, pw = _pool_setup("MaxPoolGrad", x.shape, dy, ksize, strides, padding,
                                                             explicit_paddings, data_format)
    kw = ks[2]
    xp = np.pad(to_last(x, last), ((0, 0), ph, pw, (0, 0)), constant_values=-np.inf)
    best = np.full((n, oh, ow, c), -np.inf, x.dtype)
    arg = np.zeros((n, oh, ow, c), np.int64)
    for k, (i, j, rows, cols) in enumerate(taps(ks[1], kw, st[1], st[2], 1, 1, oh, ow)):
        tap = xp[:, rows, cols, :]
        better = tap > best
        best = np.where(better, tap, best)
        arg = np.where(better, k, arg)
    dxp = np.zeros(xp.shape, dy.dtype)
    nn, yy, xx, cc = np.indices((n, oh, ow, c))
    np.add.at(dxp, (nn, yy * st[1] + arg // kw, xx * st[2] + arg % kw, cc), to_last(dy, last))
    return from_last(dxp[:, ph[0]:ph[0] + h, pw[0]:pw[0] + w, :], last)


tf_op("MaxPoolGrad", infer=same_as(0, rank=4), kernel=_max_pool_grad, num_inputs=(3, 3), attrs=POOL_ATTRS)


def _window_counts(size, k, stride, pad, out):
    """How many of each window's positions along one axis fall inside the input (TensorFlow's
    average excludes the padding)."""
    start = np.arange(out) * stride - pad
    return np.minimum(start + k, size) - np.maximum(start, 0)


def _avg_pool_grad(orig_input_shape, grad, T="float32", ksize=(1, 1, 1, 1), strides=(1, 1, 1, 1),
                   padding="VALID", data_format="NHWC"):
    """AvgPoolGrad: each window's gradient, divided by the number of input values the window
    covered (padding excluded; the factor 1 / count is rounded to T first, as TensorFlow's
    kernel does), goes to every one of them; overlapping windows add up."""
    op = "AvgPoolGrad"
    dims = int_sizes(orig_input_shape, f"{op}: orig_input_shape")
    if padding not in ("SAME", "VALID"):
        raise ValueError(f"{op}: padding must be SAME or VALID, got {padding!r}")
    last, st, ks, (n, h, w, c), oh, ow, ph, pw = _pool_setup(op, dims, grad, ksize, strides, padding, (),
                                                             data_format)
    rows = _window_counts(h, ks[1], st[1], ph[0], oh)
    cols = _window_counts(w, ks[2], st[2], pw[0], ow)
    coef = (1.0 / (rows[:, None] * cols[None, :])).astype(grad.dtype)[None, :, :, None]
    share = to_last(grad, last) * coef
    dxp = np.zeros((n, h + sum(ph), w + sum(pw), c), grad.dtype)
    for _, _, r, cc in taps(ks[1], ks[2], st[1], st[2], 1, 1, oh, ow):
        dxp[:, r, cc, :] += share
    return from_last(dxp[:, ph[0]:ph[0] + h, pw[0]:pw[0] + w, :], last)


tf_op("AvgPoolGrad", infer=sizes_infer(0, 1), kernel=_avg_pool_grad, num_inputs=(2, 2), attrs=AVG_POOL_ATTRS,
      allocates=sized_by(0, 1))
