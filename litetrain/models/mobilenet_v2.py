"""MobileNetV2 (Sandler et al., 2018): inverted residual blocks of 1x1 expansion, 3x3 depthwise and
1x1 projection convolutions with batch normalisation and ReLU6, as in Keras and torchvision.

The width multiplier `alpha` scales every layer's channels (rounded to multiples of 8, as both
reference implementations do); the last 1x1 convolution keeps 1280 channels unless alpha > 1.
Stride-2 convolutions use TFLite's SAME padding (one pixel after the image on even inputs), as
Keras's MobileNetV2 does with its `correct_pad`; torchvision pads one pixel on each side instead.
Batch normalisation follows PyTorch's defaults (momentum 0.9 as decay, eps 1e-5, unbiased moving
variance), so `tools.torch_mirror.to_torch` builds an exact PyTorch twin.

Transfer learning: `set_trainable_from(k)` freezes the stages before stage k (stage 0 is the
stem, 1..17 the inverted residual blocks, 18 the last 1x1 convolution; the classifier is always
trained). Frozen stages run in inference mode, using and keeping their moving averages, as Keras
does for frozen batch normalisation; their backward pass is never generated.
"""
from __future__ import annotations

from .. import ops
from ..frontend.nn import (BatchNormalization, Conv2D, Dense, DepthwiseConv2D, Dropout, GlobalAveragePooling2D, Layer,
                           recompute)
from ..frontend.module import Param

# (expansion t, output channels c, repeats n, first stride s), from the paper's Table 2
BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def make_divisible(value, divisor=8):
    """The channel rounding of the reference implementations: to the nearest multiple of `divisor`,
    at least `divisor`, and never more than 10% below `value`."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _bn(momentum, epsilon):
    return BatchNormalization(momentum=momentum, epsilon=epsilon, unbiased_moving_variance=True)


class ConvBN(Layer):
    """Conv2D (no bias) -> BatchNormalization -> ReLU6: the stem and the last convolution."""

    def __init__(self, in_channels, out_channels, kernel_size, strides, bn_momentum, bn_epsilon, name=None):
        super().__init__(name)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.conv = Conv2D(out_channels, kernel_size, strides, padding="same", use_bias=False)
        self.bn = _bn(bn_momentum, bn_epsilon)

    def build(self):
        self.conv.build(self.in_channels)
        self.bn.build(self.out_channels)

    def __call__(self, x, training=False):
        return ops.relu6(self.bn(self.conv(x), training))


class InvertedResidual(Layer):
    """[1x1 expand -> BN -> ReLU6] -> 3x3 depthwise (stride) -> BN -> ReLU6 -> 1x1 project -> BN,
    plus the input when the stride is 1 and the channels match."""

    def __init__(self, in_channels, out_channels, stride, expansion, bn_momentum, bn_epsilon, name=None):
        super().__init__(name)
        self.in_channels, self.out_channels, self.hidden = in_channels, out_channels, in_channels * expansion
        self.expansion = expansion
        if expansion != 1:
            self.expand = Conv2D(self.hidden, 1, use_bias=False)
            self.expand_bn = _bn(bn_momentum, bn_epsilon)
        self.depthwise = DepthwiseConv2D(3, stride, padding="same", use_bias=False)
        self.depthwise_bn = _bn(bn_momentum, bn_epsilon)
        self.project = Conv2D(out_channels, 1, use_bias=False)
        self.project_bn = _bn(bn_momentum, bn_epsilon)
        self.residual = stride == 1 and in_channels == out_channels

    def build(self):
        if self.expansion != 1:
            self.expand.build(self.in_channels)
            self.expand_bn.build(self.hidden)
        self.depthwise.build(self.hidden)
        self.depthwise_bn.build(self.hidden)
        self.project.build(self.hidden)
        self.project_bn.build(self.out_channels)

    def __call__(self, x, training=False):
        h = x
        if self.expansion != 1:
            h = ops.relu6(self.expand_bn(self.expand(h), training))
        h = ops.relu6(self.depthwise_bn(self.depthwise(h), training))
        h = self.project_bn(self.project(h), training)
        return ops.add(x, h) if self.residual else h


class MobileNetV2(Layer):
    """MobileNetV2 on NHWC images of `input_shape`, returning logits (or pooled features when
    num_classes is None). `recompute`: the stages (indices into `stages`, or "all") whose activations
    the backward pass recomputes instead of keeping them (memory-lean training; nn.recompute)."""

    def __init__(self, alpha=1.0, input_shape=(224, 224, 3), num_classes=1000, dropout=0.0, bn_momentum=0.9,
                 bn_epsilon=1e-5, trainable_from=0, name=None, recompute=()):
        super().__init__(name)
        self._recompute = recompute
        self.alpha, self.input_shape, self.num_classes = float(alpha), tuple(input_shape), num_classes
        channels = make_divisible(32 * alpha)
        self.stem = ConvBN(input_shape[2], channels, 3, 2, bn_momentum, bn_epsilon)
        blocks = []
        for t, c, n, s in BLOCKS:
            out = make_divisible(c * alpha)
            for i in range(n):
                blocks.append(InvertedResidual(channels, out, s if i == 0 else 1, t, bn_momentum, bn_epsilon))
                channels = out
        self.blocks = blocks
        self.last_channels = make_divisible(1280 * alpha) if alpha > 1.0 else 1280
        self.head = ConvBN(channels, self.last_channels, 1, 1, bn_momentum, bn_epsilon)
        self.pool = GlobalAveragePooling2D()
        if dropout:
            self.dropout = Dropout(dropout)
        if num_classes is not None:
            self.classifier = Dense(num_classes)
        for stage in self.stages:  # built once every layer has its path: each draws its own values
            stage.build()
        if num_classes is not None:
            self.classifier.build(self.last_channels)
        self.trainable_from = 0
        self.set_trainable_from(trainable_from)

    @property
    def stages(self):
        """The stem, the 17 inverted residual blocks and the last convolution, in order."""
        return [self.stem, *self.blocks, self.head]

    def set_trainable_from(self, stage: int):
        """Train stages `stage`.. and the classifier; freeze the ones before (see the module doc)."""
        if not 0 <= stage <= len(self.stages):
            raise ValueError(f"stage must be in [0, {len(self.stages)}], got {stage}")
        self.trainable_from = stage
        for k, layer in enumerate(self.stages):
            for state in layer.states():
                if isinstance(state, Param):
                    state.trainable = k >= stage
        return self

    def __call__(self, x, training=False):
        chosen = range(len(self.stages)) if self._recompute == "all" else set(self._recompute)
        for k, stage in enumerate(self.stages):
            train = training and k >= self.trainable_from
            x = recompute(stage, x, training=train) if k in chosen else stage(x, training=train)
        x = self.pool(x)
        if "dropout" in self.__dict__:
            x = self.dropout(x, training)
        return self.classifier(x) if self.num_classes is not None else x
