"""A small CNN for 28x28 images (MNIST-like): two conv blocks, then a dense classifier."""
from __future__ import annotations

from ..frontend.nn import Activation, BatchNormalization, Conv2D, Dense, Dropout, Flatten, MaxPool2D, Sequential


class SmallCNN(Sequential):
    """[Conv2D(f, 3x3, same) -> BatchNormalization -> ReLU -> MaxPool2D(2)] for each f in `filters`,
    then Flatten -> Dense(hidden, relu) -> Dropout(dropout) -> Dense(num_classes) (logits).

    Input NHWC `input_shape` (default 28x28x1). With batch_norm the convolutions have no bias and
    batch normalisation follows PyTorch's BatchNorm2d conventions (momentum 0.9 as decay, eps 1e-5,
    unbiased moving variance), so `tools.torch_mirror.to_torch` mirrors it exactly.
    Every layer is built at construction (seeded by its path in the model), so the weights exist
    before conversion."""

    def __init__(self, num_classes=10, input_shape=(28, 28, 1), filters=(32, 64), hidden=128, batch_norm=True,
                 dropout=0.0, name=None):
        layers = []
        for i, f in enumerate(filters, 1):
            layers.append(Conv2D(f, 3, padding="same", use_bias=not batch_norm, name=f"conv{i}"))
            if batch_norm:
                layers.append(BatchNormalization.like_torch(name=f"bn{i}"))
            layers += [Activation("relu", name=f"relu{i}"), MaxPool2D(2, name=f"pool{i}")]
        layers += [Flatten(), Dense(hidden, activation="relu", name="fc")]
        if dropout:
            layers.append(Dropout(dropout, name="dropout"))
        layers.append(Dense(num_classes, name="logits"))
        super().__init__(layers, name=name)
        self.num_classes = num_classes
        self.input_shape = tuple(input_shape)
        # built once the layers have their paths, so each draws its own initial values
        h, w, c = input_shape
        for layer in self.layers:
            if isinstance(layer, Conv2D):
                layer.build(c)
                c = layer.filters
            elif isinstance(layer, BatchNormalization):
                layer.build(c)
            elif isinstance(layer, MaxPool2D):
                h, w = h // 2, w // 2
            elif isinstance(layer, Dense):
                layer.build(h * w * c)
                h = w = 1
                c = layer.units
