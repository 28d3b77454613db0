"""Reference models (a small CNN for 28x28 images, MobileNetV2) and a trainable wrapper for them.

`image_classifier(net, input_shape, num_classes, optimizer)` gives a Module with two signatures:
`train(x, y)` (NHWC float32 images, one-hot labels; cross-entropy on logits, one optimizer step on
the net's trainable variables; returns the loss) and `infer(x)` (softmax `output` and `logits`),
ready for `lt.convert`. `tools.torch_mirror.to_torch(net)` (in the repository) builds the same network in PyTorch from
the same weights, for comparisons.
"""
from __future__ import annotations

from .. import ops
from ..frontend.losses import CategoricalCrossentropy
from ..frontend.module import Module, TensorSpec, signature
from .mobilenet_v2 import InvertedResidual, MobileNetV2, make_divisible
from .small_cnn import SmallCNN

__all__ = ["InvertedResidual", "MobileNetV2", "SmallCNN", "image_classifier", "make_divisible"]


class _Classifier(Module):
    def __init__(self, net, optimizer):
        self.net = net
        self.optimizer = optimizer
        self.loss = CategoricalCrossentropy(from_logits=True)

    def _train(self, x, y):
        loss = self.loss(y, self.net(x, training=True))
        self.optimizer.minimize(loss, self.net.trainable_variables)
        return {"loss": loss}

    def _infer(self, x):
        logits = self.net(x, training=False)
        return {"output": ops.softmax(logits), "logits": logits}


def image_classifier(net, input_shape, num_classes, optimizer) -> Module:
    """A Module with `train(x, y) -> {loss}` and `infer(x) -> {output, logits}` for `net` on
    [batch, *input_shape] images (the signatures' shapes are fixed here, so the class is made per
    call)."""
    x_spec = TensorSpec([None, *input_shape], "float32")
    y_spec = TensorSpec([None, num_classes], "float32")

    class ImageClassifier(_Classifier):
        @signature(x=x_spec, y=y_spec)
        def train(self, x, y):
            return self._train(x, y)

        @signature(x=x_spec)
        def infer(self, x):
            return self._infer(x)

    return ImageClassifier(net, optimizer)
