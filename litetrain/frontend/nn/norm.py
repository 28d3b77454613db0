"""Normalisation layers (BatchNormalization, LayerNorm, GroupNorm) and Dropout.

LayerNorm and GroupNorm are decompositions (MEAN, SUB, SQUARE, RSQRT, MUL, ADD; GroupNorm also
RESHAPE), normalising each example with its own biased variance as torch.nn.LayerNorm / GroupNorm do;
they behave the same when training. Their defaults are PyTorch's: epsilon 1e-5, a learned scale
`gamma` (ones) and shift `beta` (zeros). GroupNorm takes channels-last inputs ([N, ..., C]: NHWC images,
[N, L, C] sequences); channel c belongs to group c // (C / groups), as in PyTorch.

BatchNormalization normalises over every axis but the last (channels). While training it uses the
batch's mean and (biased) variance and updates its moving averages, which are Buffers (variables
of the file, saved in checkpoints, never trained):

    moving = momentum * moving + (1 - momentum) * batch statistic

Keras's defaults are momentum=0.99, epsilon=1e-3 and the biased batch variance in the moving
variance. PyTorch's BatchNorm2d is momentum=0.9 here (torch's `momentum=0.1` weights the batch),
epsilon=1e-5 and the unbiased variance (n / (n - 1) times the biased one) in running_var: pass
`unbiased_moving_variance=True`, or use `BatchNormalization.like_torch()`. When not training, the
moving averages normalise.

Dropout zeroes each element with probability `rate` while training and scales the others by
1 / (1 - rate), as torch and Keras do; when not training it is the identity, so inference is
deterministic. Its random numbers come from RANDOM_UNIFORM, seeded from the layer's path (or
`seed`), a new draw on every call of the signature.
"""
from __future__ import annotations

import zlib

import numpy as np

from ... import ops
from ...core.trace import builder_of
from ...ops._util import num_elements
from ..module import Buffer, Param
from .core import Layer


class BatchNormalization(Layer):
    def __init__(self, momentum=0.99, epsilon=1e-3, center=True, scale=True, unbiased_moving_variance=False,
                 input_channels=None, name=None):
        super().__init__(name or "batch_normalization")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum is the moving averages' decay, in [0, 1]; got {momentum}")
        self.momentum, self.epsilon = float(momentum), float(epsilon)
        self.center, self.scale = center, scale
        self.unbiased_moving_variance = unbiased_moving_variance
        if input_channels is not None:
            self.build(input_channels)

    @classmethod
    def like_torch(cls, momentum=0.1, eps=1e-5, **kw):
        """torch.nn.BatchNorm2d's conventions: `momentum` weights the batch statistic, the moving
        variance takes the unbiased batch variance."""
        return cls(momentum=1.0 - momentum, epsilon=eps, unbiased_moving_variance=True, **kw)

    def build(self, channels):
        if self.scale:
            self.gamma = Param(np.ones(channels, np.float32))
        if self.center:
            self.beta = Param(np.zeros(channels, np.float32))
        self.moving_mean = Buffer(np.zeros(channels, np.float32))
        self.moving_variance = Buffer(np.ones(channels, np.float32))

    def __call__(self, x, training=False):
        if "moving_mean" not in self.__dict__:
            if x.shape[-1] is None:
                raise ValueError(f"{self.path}: the input's last dim must be known to build BatchNormalization")
            self.build(x.shape[-1])
        fb = builder_of(x)
        axes = list(range(x.ndim - 1))
        if training:
            mean = ops.reduce_mean(x, axes)
            centered = ops.sub(x, mean)
            variance = ops.reduce_mean(ops.square(centered), axes)
            self._update(fb, mean, variance, x, axes)
        else:
            mean, variance = fb.read(self.moving_mean), fb.read(self.moving_variance)
            centered = ops.sub(x, mean)
        inv = ops.rsqrt(ops.add(variance, self.epsilon))
        if self.scale:
            inv = ops.mul(inv, self.gamma)
        y = ops.mul(centered, inv)
        return ops.add(y, self.beta) if self.center else y

    def _update(self, fb, mean, variance, x, axes):
        m = self.momentum
        if self.unbiased_moving_variance:
            n = num_elements(x, axes)
            variance = ops.mul(variance, ops.div(n, ops.sub(n, 1.0)))
        for buffer, value in ((self.moving_mean, mean), (self.moving_variance, variance)):
            fb.assign(buffer, ops.add(ops.mul(fb.read(buffer), m), ops.mul(value, 1.0 - m)))


def normalize(x, axes, epsilon):
    """(x - mean) / sqrt(var + epsilon), the mean and biased variance taken over `axes` of each example."""
    centered = ops.sub(x, ops.reduce_mean(x, axes, keepdims=True))
    variance = ops.reduce_mean(ops.square(centered), axes, keepdims=True)
    return ops.mul(centered, ops.rsqrt(ops.add(variance, float(epsilon))))


def _scale_shift(layer, y):
    if layer.scale:
        y = ops.mul(y, layer.gamma)
    return ops.add(y, layer.beta) if layer.center else y


class LayerNorm(Layer):
    """Normalises over the last `len(normalized_shape)` axes (default: the last axis, its size taken from
    the first input), then y * gamma + beta with gamma and beta shaped like those axes."""

    def __init__(self, normalized_shape=None, epsilon=1e-5, center=True, scale=True, name=None):
        super().__init__(name or "layer_norm")
        self.epsilon, self.center, self.scale = float(epsilon), center, scale
        if normalized_shape is not None:
            self.build(normalized_shape)

    def build(self, normalized_shape):
        shape = (int(normalized_shape),) if np.ndim(normalized_shape) == 0 else tuple(int(d) for d in normalized_shape)
        self.normalized_shape = shape
        if self.scale:
            self.gamma = Param(np.ones(shape, np.float32))
        if self.center:
            self.beta = Param(np.zeros(shape, np.float32))

    def __call__(self, x, training=False):
        if "normalized_shape" not in self.__dict__:
            if x.shape[-1] is None:
                raise ValueError(f"{self.path or 'LayerNorm'}: the input's last dim must be known to build LayerNorm")
            self.build(x.shape[-1])
        k = len(self.normalized_shape)
        if tuple(x.shape[x.ndim - k:]) != self.normalized_shape:
            raise ValueError(f"{self.path or 'LayerNorm'}: normalises trailing dims {list(self.normalized_shape)}, "
                             f"got an input of shape {list(x.shape)}")
        return _scale_shift(self, normalize(x, list(range(x.ndim - k, x.ndim)), self.epsilon))


LayerNormalization = LayerNorm


class GroupNorm(Layer):
    """Splits the channels (last axis) into `groups` and normalises each group of each example over its
    channels and every other non-batch axis; then y * gamma + beta per channel."""

    def __init__(self, groups, epsilon=1e-5, center=True, scale=True, input_channels=None, name=None):
        super().__init__(name or "group_norm")
        self.groups, self.epsilon, self.center, self.scale = int(groups), float(epsilon), center, scale
        if input_channels is not None:
            self.build(input_channels)

    def build(self, channels):
        if channels % self.groups:
            raise ValueError(f"{self.path or 'GroupNorm'}: {channels} channels do not split into {self.groups} groups")
        self.channels = int(channels)
        if self.scale:
            self.gamma = Param(np.ones(channels, np.float32))
        if self.center:
            self.beta = Param(np.zeros(channels, np.float32))

    def __call__(self, x, training=False):
        if "channels" not in self.__dict__:
            if x.shape[-1] is None or x.ndim < 2:
                raise ValueError(f"{self.path or 'GroupNorm'}: expected [batch, ..., channels] with known channels, "
                                 f"got {list(x.shape)}")
            self.build(x.shape[-1])
        g, c = self.groups, self.channels
        middle = list(x.shape[1:-1])
        if None in middle:  # unknown lengths: the grouped shape from SHAPE at run time
            lead = ops.slice_(ops.shape_of(x), [0], [x.ndim - 1])
            shape = ops.concat([lead, builder_of(x).const(np.int32([g, c // g]))], 0)
            grouped = ops.reshape(x, shape, known_shape=[x.shape[0], *middle, g, c // g])
        else:
            grouped = ops.reshape(x, [-1, *middle, g, c // g])
        axes = list(range(1, grouped.ndim - 2)) + [grouped.ndim - 1]
        y = normalize(grouped, axes, self.epsilon)
        y = ops.reshape(y, ops.shape_of(x), known_shape=x.shape) if None in middle else ops.reshape(y, [-1, *middle, c])
        return _scale_shift(self, y)


class Dropout(Layer):
    def __init__(self, rate, seed=None, name=None):
        super().__init__(name or "dropout")
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"the dropout rate must be in [0, 1), got {rate}")
        self.rate = float(rate)
        self.seed = seed

    def __call__(self, x, training=False):
        if not training or self.rate == 0.0:
            return x
        seed = self.seed if self.seed is not None else zlib.crc32((self.path or "dropout").encode()) & 0x7FFFFFFF
        keep = ops.greater_equal(ops.random_uniform_like(x, seed=int(seed), seed2=0x5EED), self.rate)
        return ops.mul(x, ops.mul(ops.cast(keep, x.dtype), 1.0 / (1.0 - self.rate)))
