"""Convolutional layers on NHWC images: Conv2D, DepthwiseConv2D, SeparableConv2D, Conv2DTranspose,
UpSampling2D, pooling, padding; and Conv1D on [batch, length, channels] sequences.

Unnamed layers in a Sequential get Keras's names (conv2d, conv2d_1, depthwise_conv2d, max_pooling2d,
...). Kernels are stored in TensorFlow Lite's layouts, so they go into the file as they are: Conv2D's
kernel is [filters, kh, kw, in] (OHWI), DepthwiseConv2D's [1, kh, kw, in * depth_multiplier].

`padding` is "same" (TFLite's SAME: output = ceil(input / stride), the odd padding pixel at the end,
i.e. bottom/right), "valid", or explicit zeros: an int p, a pair (ph, pw) or ((top, bottom), (left,
right)), written as a PAD op before a VALID convolution. PyTorch's `padding=p` is the explicit form;
it equals "same" for stride 1 and odd kernels, but not for stride 2 on even inputs, where SAME pads
(0, 1) and torch pads (1, 1).
"""
from __future__ import annotations

import numpy as np

from ... import ops
from ...core.trace import builder_of
from ..module import Param
from .core import Layer, get_activation, glorot_uniform


def _pair(v, what):
    pair = (int(v), int(v)) if np.ndim(v) == 0 else tuple(int(a) for a in v)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"{what} must be a positive int or a pair of them, got {v!r}")
    return pair


def explicit_padding(padding):
    """((top, bottom), (left, right)) from an int, a pair or a pair of pairs."""
    if np.ndim(padding) == 0:
        p = int(padding)
        return ((p, p), (p, p))
    a, b = padding
    pads = tuple((int(x), int(x)) if np.ndim(x) == 0 else (int(x[0]), int(x[1])) for x in (a, b))
    if min(min(p) for p in pads) < 0:
        raise ValueError(f"padding must not be negative, got {padding!r}")
    return pads


def _padding(padding):
    """(TFLite padding, explicit pads or None) for a layer's `padding` argument."""
    if isinstance(padding, str):
        if padding.lower() not in ("same", "valid"):
            raise ValueError(f"padding must be 'same', 'valid' or explicit sizes, got {padding!r}")
        return padding.upper(), None
    pads = explicit_padding(padding)
    return "VALID", (pads if any(any(p) for p in pads) else None)


def _pad(x, pads):
    if pads is None:
        return x
    (t, b), (l, r) = pads
    return ops.pad(x, [[0, 0], [t, b], [l, r], [0, 0]])


def _channels(layer, x):
    c = x.shape[-1]
    if x.ndim != 4 or c is None:
        raise ValueError(f"{layer.path or type(layer).__name__}: expected NHWC input with known channels, "
                         f"got shape {list(x.shape)}")
    return c


class _Convolution(Layer):
    """What Conv2D and DepthwiseConv2D share: window, stride, dilation, padding, activation, bias."""

    def _configure(self, kernel_size, strides, padding, dilation_rate, activation, use_bias, input_channels):
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.dilation_rate = _pair(dilation_rate, "dilation_rate")
        self.padding = padding
        self._tfl_padding, self._pads = _padding(padding)
        self.activation = activation
        self._act = get_activation(activation)
        self.use_bias = use_bias
        if input_channels is not None:
            self.build(input_channels)


class Conv2D(_Convolution):
    """activation(conv_2d(x, kernel) + bias); kernel [filters, kh, kw, in], Glorot-uniform."""

    def __init__(self, filters, kernel_size, strides=1, padding="valid", dilation_rate=1, activation=None,
                 use_bias=True, input_channels=None, name=None):
        super().__init__(name or "conv2d")
        self.filters = int(filters)
        self._configure(kernel_size, strides, padding, dilation_rate, activation, use_bias, input_channels)

    def build(self, channels):
        kh, kw = self.kernel_size
        rng = self.seed_for("kernel")
        self.kernel = Param(glorot_uniform(rng, kh * kw * channels, kh * kw * self.filters,
                                           (self.filters, kh, kw, channels)))
        if self.use_bias:
            self.bias = Param(np.zeros(self.filters, np.float32))

    def __call__(self, x, training=False):
        if "kernel" not in self.__dict__:
            self.build(_channels(self, x))
        y = ops.conv_2d(_pad(x, self._pads), self.kernel, self.bias if self.use_bias else None,
                        strides=self.strides, padding=self._tfl_padding, dilations=self.dilation_rate)
        return self._act(y)


class DepthwiseConv2D(_Convolution):
    """Each input channel convolved with its own depth_multiplier filters; kernel [1, kh, kw, in * M]
    (output channel c*M + m comes from input channel c)."""

    def __init__(self, kernel_size, strides=1, padding="valid", depth_multiplier=1, dilation_rate=1,
                 activation=None, use_bias=True, input_channels=None, name=None):
        super().__init__(name or "depthwise_conv2d")
        self.depth_multiplier = int(depth_multiplier)
        self._configure(kernel_size, strides, padding, dilation_rate, activation, use_bias, input_channels)

    def build(self, channels):
        kh, kw = self.kernel_size
        m = self.depth_multiplier
        self.kernel = Param(glorot_uniform(self.seed_for("kernel"), kh * kw, kh * kw * m, (1, kh, kw, channels * m)))
        if self.use_bias:
            self.bias = Param(np.zeros(channels * m, np.float32))

    def __call__(self, x, training=False):
        if "kernel" not in self.__dict__:
            self.build(_channels(self, x))
        y = ops.depthwise_conv_2d(_pad(x, self._pads), self.kernel, self.bias if self.use_bias else None,
                                  strides=self.strides, padding=self._tfl_padding, dilations=self.dilation_rate,
                                  depth_multiplier=self.depth_multiplier)
        return self._act(y)


class SeparableConv2D(Layer):
    """A depthwise convolution (no bias) followed by a 1x1 convolution to `filters` (with bias)."""

    def __init__(self, filters, kernel_size, strides=1, padding="valid", depth_multiplier=1, dilation_rate=1,
                 activation=None, use_bias=True, input_channels=None, name=None):
        super().__init__(name or "separable_conv2d")
        self.depthwise = DepthwiseConv2D(kernel_size, strides, padding, depth_multiplier, dilation_rate,
                                         use_bias=False, input_channels=input_channels)
        self.pointwise = Conv2D(filters, 1, activation=activation, use_bias=use_bias,
                                input_channels=None if input_channels is None else input_channels * depth_multiplier)

    def __call__(self, x, training=False):
        return self.pointwise(self.depthwise(x, training), training)


class _Pool(Layer):
    op = None
    keras_name = None

    def __init__(self, pool_size=2, strides=None, padding="valid", name=None):
        super().__init__(name or self.keras_name)
        self.pool_size = _pair(pool_size, "pool_size")
        self.strides = self.pool_size if strides is None else _pair(strides, "strides")
        if padding.lower() not in ("same", "valid"):
            raise ValueError(f"pooling padding must be 'same' or 'valid', got {padding!r}")
        self.padding = padding.upper()

    def __call__(self, x, training=False):
        return type(self).op(x, self.pool_size, self.strides, self.padding)


class MaxPool2D(_Pool):
    """The maximum of each pool_size window (TFLite MAX_POOL_2D; SAME windows ignore the padding)."""
    op = staticmethod(ops.max_pool_2d)
    keras_name = "max_pooling2d"


class AveragePool2D(_Pool):
    """The mean of each window over its input pixels (TFLite AVERAGE_POOL_2D: padding not counted)."""
    op = staticmethod(ops.average_pool_2d)
    keras_name = "average_pooling2d"


AvgPool2D = AveragePool2D


class GlobalAveragePooling2D(Layer):
    """The mean over height and width: [N, H, W, C] -> [N, C] (or [N, 1, 1, C] with keepdims)."""

    def __init__(self, keepdims=False, name=None):
        super().__init__(name or "global_average_pooling2d")
        self.keepdims = keepdims

    def __call__(self, x, training=False):
        return ops.reduce_mean(x, [1, 2], keepdims=self.keepdims)


class ZeroPadding2D(Layer):
    """Zeros around the image: an int, (ph, pw) or ((top, bottom), (left, right))."""

    def __init__(self, padding=1, name=None):
        super().__init__(name or "zero_padding2d")
        self.padding = explicit_padding(padding)

    def __call__(self, x, training=False):
        return _pad(x, self.padding)


class Conv1D(Layer):
    """activation(conv1d(x, kernel) + bias) on [batch, length, channels]; kernel [filters, kernel_size, in].
    Written as CONV_2D on the input seen as a 1-pixel-high image ([batch, 1, length, channels]).
    `padding`: "valid", "same" (TFLite's SAME), "causal" (kernel_size - 1 zeros before, scaled by the
    dilation: output t sees inputs up to t) or an int p (p zeros on each side, PyTorch's `padding=p`)."""

    def __init__(self, filters, kernel_size, strides=1, padding="valid", dilation_rate=1, activation=None,
                 use_bias=True, input_channels=None, name=None):
        super().__init__(name or "conv1d")
        self.filters, self.kernel_size = int(filters), int(kernel_size)
        self.strides, self.dilation_rate = int(strides), int(dilation_rate)
        if min(self.kernel_size, self.strides, self.dilation_rate) < 1:
            raise ValueError("kernel_size, strides and dilation_rate must be positive")
        if isinstance(padding, str) and padding.lower() not in ("same", "valid", "causal"):
            raise ValueError(f"padding must be 'same', 'valid', 'causal' or an int, got {padding!r}")
        self.padding = padding.lower() if isinstance(padding, str) else int(padding)
        self.activation = activation
        self._act = get_activation(activation)
        self.use_bias = use_bias
        if input_channels is not None:
            self.build(input_channels)

    def build(self, channels):
        k = self.kernel_size
        self.kernel = Param(glorot_uniform(self.seed_for("kernel"), k * channels, k * self.filters,
                                           (self.filters, k, channels)))
        if self.use_bias:
            self.bias = Param(np.zeros(self.filters, np.float32))

    def __call__(self, x, training=False):
        if x.ndim != 3 or x.shape[-1] is None:
            raise ValueError(f"{self.path or 'Conv1D'}: expected [batch, length, channels] with known channels, "
                             f"got {list(x.shape)}")
        if "kernel" not in self.__dict__:
            self.build(x.shape[-1])
        image = ops.expand_dims(x, 1)
        if self.padding == "causal" or not isinstance(self.padding, str):
            before = (self.kernel_size - 1) * self.dilation_rate if self.padding == "causal" else self.padding
            after = 0 if self.padding == "causal" else self.padding
            if before or after:
                image = ops.pad(image, [[0, 0], [0, 0], [before, after], [0, 0]])
            padding = "VALID"
        else:
            padding = self.padding.upper()
        kernel = builder_of(x).to_tensor(self.kernel)
        kernel = ops.reshape(kernel, [self.filters, 1, self.kernel_size, kernel.shape[-1]])
        y = ops.conv_2d(image, kernel, self.bias if self.use_bias else None, strides=(1, self.strides),
                        padding=padding, dilations=(1, self.dilation_rate))
        return self._act(ops.squeeze(y, [1]))


class Conv2DTranspose(Layer):
    """The transpose of a strided Conv2D (TRANSPOSE_CONV), upsampling NHWC images; kernel [filters, kh,
    kw, in]. "valid": output (in - 1) * stride + kernel; "same": in * stride."""

    def __init__(self, filters, kernel_size, strides=1, padding="valid", activation=None, use_bias=True,
                 input_channels=None, name=None):
        super().__init__(name or "conv2d_transpose")
        self.filters = int(filters)
        self.kernel_size, self.strides = _pair(kernel_size, "kernel_size"), _pair(strides, "strides")
        if padding.lower() not in ("same", "valid"):
            raise ValueError(f"Conv2DTranspose padding must be 'same' or 'valid', got {padding!r}")
        self.padding = padding.upper()
        self.activation = activation
        self._act = get_activation(activation)
        self.use_bias = use_bias
        if input_channels is not None:
            self.build(input_channels)

    def build(self, channels):
        kh, kw = self.kernel_size
        self.kernel = Param(glorot_uniform(self.seed_for("kernel"), kh * kw * channels, kh * kw * self.filters,
                                           (self.filters, kh, kw, channels)))
        if self.use_bias:
            self.bias = Param(np.zeros(self.filters, np.float32))

    def output_size(self, h, w):
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        if self.padding == "SAME":
            return h * sh, w * sw
        return (h - 1) * sh + kh, (w - 1) * sw + kw

    def __call__(self, x, training=False):
        c = _channels(self, x)
        if x.shape[1] is None or x.shape[2] is None:
            raise ValueError(f"{self.path or 'Conv2DTranspose'}: the input's height and width must be known, "
                             f"got {list(x.shape)}")
        if "kernel" not in self.__dict__:
            self.build(c)
        oh, ow = self.output_size(x.shape[1], x.shape[2])
        batch = ops.slice_(ops.shape_of(x), [0], [1])
        shape = ops.concat([batch, builder_of(x).const(np.int32([oh, ow, self.filters]))], 0)
        y = ops.transpose_conv(shape, self.kernel, x, self.bias if self.use_bias else None, strides=self.strides,
                               padding=self.padding, known_shape=[x.shape[0], oh, ow, self.filters])
        return self._act(y)


class UpSampling2D(Layer):
    """Repeats each pixel `size` times along height and width ("nearest": RESIZE_NEAREST_NEIGHBOR) or
    interpolates ("bilinear": RESIZE_BILINEAR with half-pixel centres, as Keras and PyTorch's
    `Upsample(mode="bilinear")`). NHWC images with known height and width."""

    def __init__(self, size=2, interpolation="nearest", name=None):
        super().__init__(name or "up_sampling2d")
        self.size = _pair(size, "size")
        if interpolation not in ("nearest", "bilinear"):
            raise ValueError(f"interpolation must be 'nearest' or 'bilinear', got {interpolation!r}")
        self.interpolation = interpolation

    def __call__(self, x, training=False):
        _channels(self, x)
        if x.shape[1] is None or x.shape[2] is None:
            raise ValueError(f"{self.path or 'UpSampling2D'}: the input's height and width must be known, "
                             f"got {list(x.shape)}")
        size = [x.shape[1] * self.size[0], x.shape[2] * self.size[1]]
        if self.interpolation == "nearest":
            return ops.resize_nearest_neighbor(x, size)
        return ops.resize_bilinear(x, size, half_pixel_centers=True)
