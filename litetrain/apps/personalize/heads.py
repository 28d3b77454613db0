"""Classifier heads for transfer learning whose number of classes can change on the device.

A head maps a bottleneck (the base model's features, [batch, num_features]) to class logits.
The last layer's kernel ([classes, inputs], as TFLite's FULLY_CONNECTED wants) and bias
([classes]) hold one row per class, in one of two modes:

- resizable (the default): they are `ClassParam`s, whose class dimension is declared unknown
  (`shape_signature` [None, inputs]), so a signature may assign them a value with more or fewer
  rows (TFLite resource variables take the shape of what is assigned to them); the logits are
  [batch, num_classes].
- fixed capacity (`max_classes=K`): they are ordinary Params of K rows and the int32 Buffer
  `active_classes` holds how many rows n are in use (rows n.. are zero and inactive). Every
  variable keeps its shape, so the file runs where resource variables cannot be resized (LiteRT's
  XNNPACK delegate). The head's call gives [batch, K] logits; `active_logits` keeps the first n
  columns, `masked_logits` pushes the others to -1e30 (their softmax is exactly 0, the active
  classes' the same as an n-class head's, and they get no gradient).

`checked_class`, `without_row` (resizable) and `active_mask`, `moved_up` (capacity) are the
graph code of adding and removing a class; model.py wraps them in the
`add_class` / `remove_class` signatures and applies them to the optimizer's slots too.

- `SoftmaxClassifier(num_features, num_classes)`: one dense layer; softmax gives probabilities.
- `MLPHead(num_features, hidden, num_classes)`: dense + ReLU, then the class layer.
"""
from __future__ import annotations

import numpy as np

from ... import ops
from ...frontend.module import Buffer, Param
from ...frontend.nn.core import Dense, Layer, glorot_uniform


class ClassParam(Param):
    """A trainable variable whose first dimension counts classes and may change at run time."""

    @property
    def shape_signature(self):
        return (None,) + tuple(self.value.shape[1:])


class ClassifierHead(Layer):
    """Base class: `kernel` / `bias` are the last layer, one row per class (resizable, or
    `max_classes` rows of which `active_classes` are in use); subclasses give `hidden(x)`. The
    first `num_classes` rows start the same in both modes (Glorot-uniform over num_classes)."""

    def __init__(self, num_features, num_classes, inputs, name=None, max_classes=None):
        super().__init__(name)
        num_features, num_classes = int(num_features), int(num_classes)
        if num_features < 1:
            raise ValueError(f"num_features must be positive, got {num_features}")
        if num_classes < 1:
            raise ValueError(f"a head needs at least one class, got num_classes={num_classes}")
        self.num_features, self.num_classes = num_features, num_classes
        self.max_classes = None if max_classes is None else int(max_classes)
        rng = self.seed_for("kernel")
        kernel = glorot_uniform(rng, inputs, num_classes, (num_classes, inputs))
        bias = np.zeros(num_classes, np.float32)
        if self.max_classes is None:
            self.kernel, self.bias = ClassParam(kernel), ClassParam(bias)
            return
        if self.max_classes < num_classes:
            raise ValueError(f"max_classes={self.max_classes} is less than num_classes={num_classes}")
        spare = self.max_classes - num_classes
        self.kernel = Param(np.concatenate([kernel, np.zeros((spare, inputs), kernel.dtype)]))
        self.bias = Param(np.concatenate([bias, np.zeros(spare, np.float32)]))
        self.active_classes = Buffer(np.int32(num_classes))

    def hidden(self, x, training=False):
        return x

    def __call__(self, x, training=False):
        """Logits [batch, rows]: every row of the last layer (in capacity mode, inactive ones too)."""
        return ops.fully_connected(self.hidden(x, training), self.kernel, self.bias)

    def config(self) -> dict:
        config = {"type": type(self).__name__, "num_features": self.num_features, "num_classes": self.num_classes}
        return config if self.max_classes is None else {**config, "max_classes": self.max_classes}


class SoftmaxClassifier(ClassifierHead):
    """logits = x W^T + b with W [num_classes, num_features]; probabilities = softmax(logits)."""

    def __init__(self, num_features, num_classes, name=None, max_classes=None):
        super().__init__(num_features, num_classes, int(num_features), name, max_classes)


class MLPHead(ClassifierHead):
    """logits = relu(x W1^T + b1) W^T + b: one hidden layer of `hidden` units (not resizable)."""

    def __init__(self, num_features, hidden, num_classes, name=None, max_classes=None):
        hidden = int(hidden)
        if hidden < 1:
            raise ValueError(f"hidden must be positive, got {hidden}")
        super().__init__(num_features, num_classes, hidden, name, max_classes)
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


# -- fixed capacity ----------------------------------------------------------------------------------
MASKED_LOGIT = -1e30  # exp(MASKED_LOGIT - max) is exactly 0, and MASKED_LOGIT - max stays finite


def active_mask(n, capacity: int, rank: int = 1):
    """bool [capacity, 1, ...] (`rank` dims): True for the rows [0, n) in use."""
    fb = n.fb
    mask = ops.less(fb.const(np.arange(capacity, dtype=np.int32)), n)
    return mask if rank == 1 else ops.reshape(mask, [capacity] + [1] * (rank - 1))


def masked_logits(logits, n):
    """Logits [batch, capacity] with the columns from n on set to MASKED_LOGIT: their softmax is
    exactly 0, the active columns' the same as over n columns, and no gradient reaches the
    inactive rows (SELECT_V2 passes none to the branch it does not take)."""
    mask = active_mask(n, int(logits.shape[-1]))
    return ops.where(mask, logits, MASKED_LOGIT)


def active_logits(logits, n):
    """The first n columns of logits [batch, capacity]: [batch, n] (a GATHER at run time)."""
    return ops.gather(logits, ops.arange(0, n, 1), axis=1)


def moved_up(value, index, n):
    """`value` ([capacity, ...]) without row `index` (already checked to be in [0, n)): the later
    rows move up one (a GATHER with a permutation) and the rows from n - 1 on are zero."""
    fb = index.fb
    capacity = int(value.shape[0])
    keep = fb.const(np.arange(capacity - 1, dtype=np.int32))
    keep = ops.add(keep, ops.cast(ops.greater_equal(keep, index), "int32"))   # skip `index`
    moved = ops.gather(value, ops.concat([keep, ops.reshape(index, [1])], 0))  # it goes last
    return ops.where(active_mask(ops.sub(n, 1), capacity, value.ndim), moved, 0)
