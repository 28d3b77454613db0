"""Classifier heads for transfer learning whose number of classes can change on the device.

A head maps a bottleneck (the base model's features, [batch, num_features]) to class logits
([batch, num_classes]). The last layer's kernel ([num_classes, inputs], as TFLite's
FULLY_CONNECTED wants) and bias ([num_classes]) are `ClassParam`s: their class dimension is
declared unknown (`shape_signature` [None, inputs]), so the converted file lets a signature
assign them a value with more or fewer rows (TFLite resource variables take the shape of what
is assigned to them). `grow(kernel, bias)` / `shrink(...)` are the graph code of adding and
removing a class; `litetrain.personalize` wraps them in the `add_class` / `remove_class`
signatures and applies the same resizing to the optimizer's slots.

- `SoftmaxClassifier(num_features, num_classes)`: one dense layer; softmax gives probabilities.
- `MLPHead(num_features, hidden, num_classes)`: dense + ReLU, then the resizable dense layer.
"""
from __future__ import annotations

import numpy as np

from . import ops
from .module import Param
from .nn.core import Dense, Layer, glorot_uniform


class ClassParam(Param):
    """A trainable variable whose first dimension counts classes and may change at run time."""

    @property
    def shape_signature(self):
        return (None,) + tuple(self.value.shape[1:])


class ClassifierHead(Layer):
    """Base class: `self.output` is the resizable last layer; subclasses give `hidden(x)`."""

    def __init__(self, num_features, num_classes, inputs, name=None):
        super().__init__(name)
        num_features, num_classes = int(num_features), int(num_classes)
        if num_features < 1:
            raise ValueError(f"num_features must be positive, got {num_features}")
        if num_classes < 1:
            raise ValueError(f"a head needs at least one class, got num_classes={num_classes}")
        self.num_features, self.num_classes = num_features, num_classes
        rng = self.seed_for("kernel")
        self.kernel = ClassParam(glorot_uniform(rng, inputs, num_classes, (num_classes, inputs)))
        self.bias = ClassParam(np.zeros(num_classes, np.float32))

    @property
    def class_params(self):
        """The head's variables whose first dimension is the class: (kernel, bias)."""
        return [self.kernel, self.bias]

    def hidden(self, x, training=False):
        return x

    def __call__(self, x, training=False):
        return ops.fully_connected(self.hidden(x, training), self.kernel, self.bias)

    def config(self) -> dict:
        return {"type": type(self).__name__, "num_features": self.num_features, "num_classes": self.num_classes}


class SoftmaxClassifier(ClassifierHead):
    """logits = x W^T + b with W [num_classes, num_features]; probabilities = softmax(logits)."""

    def __init__(self, num_features, num_classes, name=None):
        super().__init__(num_features, num_classes, int(num_features), name)


class MLPHead(ClassifierHead):
    """logits = relu(x W1^T + b1) W^T + b: one hidden layer of `hidden` units (not resizable)."""

    def __init__(self, num_features, hidden, num_classes, name=None):
        hidden = int(hidden)
        if hidden < 1:
            raise ValueError(f"hidden must be positive, got {hidden}")
        super().__init__(num_features, num_classes, hidden, name)
        self.hidden_units = hidden
        self.dense = Dense(hidden, activation="relu", input_dim=int(num_features))

    def hidden(self, x, training=False):
        return self.dense(x, training)

    def config(self) -> dict:
        return {**super().config(), "hidden": self.hidden_units}


def checked_class(index, num_classes):
    """`index` (int32, any shape) unchanged, but an entry outside [0, num_classes) makes the call fail
    in the kernel (a GATHER out of bounds: litetrain's interpreter and LiteRT both refuse it)
    before any variable is assigned."""
    return ops.gather(ops.arange(0, num_classes, 1), index)


def without_row(value, index, num_classes):
    """`value` ([num_classes, ...]) without row `index` (already checked)."""
    keep = ops.arange(0, ops.sub(num_classes, 1), 1)                        # [0, n-1)
    keep = ops.add(keep, ops.cast(ops.greater_equal(keep, index), "int32"))  # skip `index`
    return ops.gather(value, keep)
