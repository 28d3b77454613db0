"""Losses, averaged over the batch as Keras does: cross-entropies, mean squared and absolute error, Huber and
KL divergence."""
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


# -- regression and distribution losses: Huber, mean absolute error, KL divergence -------------------------------
def _mean_last(value):
    return ops.reduce_mean(value, [-1]) if value.ndim > 1 else value


class Huber(Loss):
    """0.5 d^2 where |d| <= delta, else delta (|d| - 0.5 delta), with d = y_pred - y_true, averaged over
    the last axis (Keras's Huber; torch.nn.HuberLoss(delta) with reduction="mean" for one feature axis)."""

    def __init__(self, delta=1.0):
        if delta <= 0:
            raise ValueError(f"Huber's delta must be positive, got {delta}")
        self.delta = float(delta)

    def per_example(self, y_true, y_pred):
        error = ops.abs_(ops.sub(y_pred, y_true))
        quadratic = ops.minimum(error, self.delta)  # = error inside the band, delta outside
        linear = ops.sub(error, quadratic)
        return _mean_last(ops.add(ops.mul(ops.square(quadratic), 0.5), ops.mul(linear, self.delta)))


class MeanAbsoluteError(Loss):
    """|y_pred - y_true| averaged over the last axis (torch.nn.L1Loss)."""

    def per_example(self, y_true, y_pred):
        return _mean_last(ops.abs_(ops.sub(y_pred, y_true)))


class KLDivergence(Loss):
    """sum(y_true * log(y_true / y_pred)) over the last axis, both clipped to [1e-7, 1] as Keras does
    (torch's kl_div(log(y_pred), y_true, reduction="batchmean") for probabilities away from 0). With
    `from_logits`, y_pred are logits and log-softmax gives log(y_pred), unclipped."""

    def __init__(self, from_logits=False):
        self.from_logits = from_logits

    def per_example(self, y_true, y_pred):
        t = ops.minimum(ops.maximum(y_true, EPSILON), 1.0)
        log_p = ops.log_softmax(y_pred) if self.from_logits else ops.log(ops.minimum(ops.maximum(y_pred, EPSILON), 1.0))
        return ops.reduce_sum(ops.mul(t, ops.sub(ops.log(t), log_p)), [-1])


MAE = MeanAbsoluteError
KLD = KLDivergence
