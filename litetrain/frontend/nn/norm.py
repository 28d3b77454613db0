"""BatchNormalization and Dropout: layers that behave differently when `training`.

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
