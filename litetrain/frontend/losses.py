"""Losses, averaged over the batch as Keras does: cross-entropies and mean squared error."""
from __future__ import annotations

from .. import ops

EPSILON = 1e-7


class Loss:
    def __call__(self, y_true, y_pred):
        per_example = self.per_example(y_true, y_pred)
        return ops.reduce_mean(per_example)


class CategoricalCrossentropy(Loss):
    """-sum(y_true * log p) per example; `from_logits` applies log-softmax to y_pred."""

    def __init__(self, from_logits=False):
        self.from_logits = from_logits

    def per_example(self, y_true, y_pred):
        return ops.neg(ops.reduce_sum(ops.mul(y_true, _log_probs(y_pred, self.from_logits)), [-1]))


class SparseCategoricalCrossentropy(CategoricalCrossentropy):
    """Like CategoricalCrossentropy (probabilities normalised to sum to one), with integer labels."""

    def per_example(self, y_true, y_pred):
        if y_true.ndim == y_pred.ndim:
            y_true = ops.squeeze(y_true, [-1])
        onehot = ops.one_hot(ops.cast(y_true, "int32"), y_pred.shape[-1], dtype=y_pred.dtype)
        return super().per_example(onehot, y_pred)


class BinaryCrossentropy(Loss):
    def __init__(self, from_logits=False):
        self.from_logits = from_logits

    def per_example(self, y_true, y_pred):
        if self.from_logits:  # max(x, 0) - x y + log(1 + exp(-|x|))
            x = y_pred
            value = ops.add(ops.sub(ops.relu(x), ops.mul(x, y_true)),
                            ops.log(ops.add(ops.exp(ops.neg(ops.abs(x))), 1.0)))
        else:
            p = _clip(y_pred)
            value = ops.neg(ops.add(ops.mul(y_true, ops.log(p)),
                                    ops.mul(ops.sub(1.0, y_true), ops.log(ops.sub(1.0, p)))))
        return ops.reduce_mean(value, [-1]) if value.ndim > 1 else value


class MeanSquaredError(Loss):
    def per_example(self, y_true, y_pred):
        d = ops.squared_difference(y_pred, y_true)
        return ops.reduce_mean(d, [-1]) if d.ndim > 1 else d


def _clip(p):
    return ops.minimum(ops.maximum(p, EPSILON), 1.0 - EPSILON)


def _log_probs(y_pred, from_logits):
    if from_logits:
        return ops.log_softmax(y_pred)
    p = ops.div(y_pred, ops.reduce_sum(y_pred, [-1], keepdims=True))
    return ops.log(_clip(p))
