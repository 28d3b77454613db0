"""The file a continual learner trains: a classifier whose head grows class by class, with EWC and
L2-SP penalties generated in its `train` graph (their strengths run-time inputs) and the Fisher
diagonal computed on the device.

Signatures (`SIGNATURES`):

    train(x, labels, ewc=0, l2sp=0, ...)   -> loss, accuracy   one step on the classes in use
    infer(x)                               -> logits, probabilities (classes in use only)
    grow(classes=2)                        -> active_classes   the head takes `classes` more
    accumulate_fisher(x, labels)           -> loss             fisher_sum += (d loss / d w)^2
    consolidate(decay=1)                   -> batches          fisher := decay * fisher +
                                                               fisher_sum / batches; the EWC
                                                               anchor := the current weights
    evaluate, get_weights, set_weights, save, restore (portable: builtin ops only)

The loss minimised is cross-entropy over the classes in use + ewc / 2 * sum F (w - w_task)^2 +
l2sp / 2 * sum (w - w_start)^2, w_start the converted weights (the starting point of L2-SP). The
head has `max_classes` rows; rows not yet in use get logits of -1e9 (probability exactly 0, no
gradient), so a class-incremental learner adds classes without re-converting.
"""
from __future__ import annotations

import numpy as np

from ... import ops
from ...core.autodiff import gradients
from ...frontend import losses, nn, optim
from ...frontend.convert import convert
from ...frontend.module import Buffer, Module, TensorSpec, signature
from ...frontend.regularizers import Anchors, Importances, penalty, weighted_squared_distance

SIGNATURES = ["train", "infer", "grow", "accumulate_fisher", "consolidate", "evaluate", "get_weights",
              "set_weights", "save", "restore"]
MASKED = -1e9


class _Sums(Importances):
    """fisher_sum: the squared gradients of the batches since the last consolidation, and how many
    batches (`batches`)."""

    def __init__(self):
        self.batches = Buffer(np.float32(0.0))


def active_logits(logits, active):
    """Logits with the columns from `active` on set to -1e9 (SELECT_V2)."""
    fb = logits.fb
    columns = fb.const(np.arange(int(logits.shape[-1]), dtype=np.int32))
    return ops.where(ops.less(columns, active), logits, MASKED)


def continual_module(net: Module, optimizer, input_shape=(28, 28), max_classes=10, active_classes=0) -> Module:
    """The Module with the signatures above around `net` (x [batch, *input_shape] -> logits
    [batch, max_classes]); labels are int32 class indices."""
    x_spec, labels_spec = TensorSpec([None, *input_shape], "float32"), TensorSpec([None], "int32")
    zero = TensorSpec([], "float32", default=0.0)

    class ContinualModel(Module):
        def __init__(self):
            self.net = net
            self.loss = losses.SparseCategoricalCrossentropy(from_logits=True)
            self.optimizer = optimizer
            self.active_classes = Buffer(np.int32(active_classes))
            self.fisher = Importances()
            self.fisher_sum = _Sums()
            self.ewc_anchor = Anchors()
            self.start = Anchors()

        def _logits(self, x):
            return active_logits(self.net(x), x.fb.read(self.active_classes))

        @signature(x=x_spec, labels=labels_spec, ewc=zero, l2sp=zero)
        def train(self, x, labels, ewc, l2sp):
            params = self.net.trainable_variables
            logits = self._logits(x)
            data_loss = self.loss(labels, logits)
            ewc_term = penalty(ewc, weighted_squared_distance(params, self.ewc_anchor, x, self.fisher))
            l2sp_term = penalty(l2sp, weighted_squared_distance(params, self.start, x))
            self.optimizer.minimize(ops.add(data_loss, ops.add(ewc_term, l2sp_term)), params)
            hits = ops.equal(ops.argmax(logits, -1), labels)
            return {"loss": data_loss, "accuracy": ops.reduce_mean(ops.cast(hits, "float32"))}

        @signature(x=x_spec)
        def infer(self, x):
            logits = self._logits(x)
            return {"logits": logits, "probabilities": ops.softmax(logits)}

        @signature(classes=TensorSpec([], "int32", default=2))
        def grow(self, classes):
            fb = classes.fb
            active = ops.minimum(ops.add(fb.read(self.active_classes), classes), max_classes)
            fb.assign(self.active_classes, active)
            return {"active_classes": active}

        @signature(x=x_spec, labels=labels_spec)
        def accumulate_fisher(self, x, labels):
            params = self.net.trainable_variables
            loss = self.loss(labels, self._logits(x))
            fb = x.fb
            for p, g in zip(params, gradients(loss, params)):
                slot = self.fisher_sum.of(p)
                fb.assign(slot, ops.add(fb.read(slot), ops.square(g)))
            fb.assign(self.fisher_sum.batches, ops.add(fb.read(self.fisher_sum.batches), 1.0))
            return {"loss": loss}

        @signature(decay=TensorSpec([], "float32", default=1.0))
        def consolidate(self, decay):
            fb = decay.fb
            params = self.net.trainable_variables
            batches = fb.read(self.fisher_sum.batches)
            scale = ops.div(1.0, ops.maximum(batches, 1.0))
            for p in params:
                total, new = fb.read(self.fisher.of(p)), fb.read(self.fisher_sum.of(p))
                fb.assign(self.fisher.of(p), ops.add(ops.mul(total, decay), ops.mul(new, scale)))
                fb.assign(self.fisher_sum.of(p), ops.zeros_like(new))
                fb.assign(self.ewc_anchor.of(p), fb.read(p))
            fb.assign(self.fisher_sum.batches, ops.mul(batches, 0.0))
            return {"batches": batches}

    ContinualModel.__name__ = ContinualModel.__qualname__ = "ContinualModel"
    return ContinualModel()


def mlp(hidden=128, input_shape=(28, 28), max_classes=10) -> nn.Sequential:
    return nn.Sequential([nn.Flatten(), nn.Dense(hidden, activation="relu", input_dim=int(np.prod(input_shape))),
                          nn.Dense(max_classes, input_dim=hidden)])


def continual_file(net=None, learning_rate=0.05, max_classes=10) -> bytes:
    """The bytes of the continual learner's file: `net` (default `mlp()`) trained with plain SGD,
    portable, hyperparameters as run-time inputs; no class in use until `grow`."""
    module = continual_module(net if net is not None else mlp(max_classes=max_classes),
                              optim.SGD(learning_rate), max_classes=max_classes)
    return convert(module, signatures=SIGNATURES, portable_checkpoints=True, runtime_hyperparameters=True)
