"""The personalization Module: a base and a classifier head with the signatures of the file
(load, infer, infer_bottlenecks, train, train_finetune, add_class, remove_class)."""
from __future__ import annotations

import numpy as np

from ... import ops
from ...frontend.module import Module, Slot, TensorSpec, signature
from ...frontend.optim import Optimizer
from ...ops.tensor_list import check_at_most
from .base import BaseModel, PersonalizeError
from .heads import (ClassifierHead, MLPHead, SoftmaxClassifier, active_logits, checked_class, masked_logits, moved_up,
                    without_row)


# -- the converted module ------------------------------------------------------------------------
def make_head(head, num_features, num_classes, max_classes=None) -> ClassifierHead:
    """A head from a spec: "softmax", "mlp" / "mlp:HIDDEN", a ClassifierHead, or a callable
    (num_features, num_classes) -> ClassifierHead. max_classes: a fixed-capacity head (a given
    head must have been made with the same max_classes)."""
    if isinstance(head, ClassifierHead):
        if head.num_features != num_features:
            raise PersonalizeError(f"the head takes {head.num_features} features but the base gives {num_features}")
        if max_classes is not None and head.max_classes != max_classes:
            raise PersonalizeError(f"max_classes={max_classes} but the given head was made with "
                                   f"max_classes={head.max_classes}")
        return head
    if callable(head):
        return make_head(head(num_features, num_classes), num_features, num_classes, max_classes)
    if head in ("softmax", "linear"):
        return SoftmaxClassifier(num_features, num_classes, max_classes=max_classes)
    if isinstance(head, str) and (head == "mlp" or head.startswith("mlp:")):
        hidden = int(head.split(":", 1)[1]) if ":" in head else 128
        return MLPHead(num_features, hidden, num_classes, max_classes=max_classes)
    raise PersonalizeError(f"unknown head {head!r}; use 'softmax', 'mlp', 'mlp:HIDDEN' or a ClassifierHead")


def _resizable(module):
    return [s for s in module.states() if getattr(s, "shape_signature", None) is not None]


def _class_rows(module, head):
    """A fixed-capacity head's class variables: its kernel and bias and the optimizer's slots for
    them (a slot of variable V is named "<slot>/<path of V>")."""
    own = {head.kernel.path, head.bias.path}
    slots = [s for s in module.states() if isinstance(s, Slot) and s._name.partition("/")[2] in own]
    return [head.kernel, head.bias] + slots


def sparse_cross_entropy(logits, labels, active=None):
    """Mean cross-entropy of logits [batch, classes] with integer labels [batch], for a class count
    known only at run time (labels are checked against it in the graph). `active`: the number of
    classes in use of a fixed-capacity head (logits [batch, capacity]); the other columns are
    masked out (probability exactly 0, no gradient)."""
    if active is None:
        n = ops.gather(ops.shape_of(logits), 1)
        classes = ops.arange(0, n, 1)
    else:
        n, classes = active, logits.fb.const(np.arange(int(logits.shape[-1]), dtype=np.int32))
        logits = masked_logits(logits, n)
    labels = checked_class(labels, n)
    onehot = ops.cast(ops.equal(ops.expand_dims(labels, -1), classes), logits.dtype)
    return ops.reduce_mean(ops.neg(ops.reduce_sum(ops.mul(onehot, ops.log_softmax(logits)), [-1])))


class Personalization(Module):
    """The base, the head and the optimizer, with what the signatures do; `personalization_module`
    makes the subclass whose @signature methods (their input specs depend on the base and the
    head) call these."""

    def __init__(self, base: BaseModel, head: ClassifierHead, optimizer: Optimizer, finetune_params):
        self.base = base.module
        self.head = head
        self.optimizer = optimizer
        self._base_model = base
        self._finetune_params = list(finetune_params)
        self._capacity = head.max_classes
        self._row = head.kernel.value.shape[1]

    def _probabilities(self, logits):
        if self._capacity is not None:  # [batch, n]: the classes in use, as a resizable head gives
            logits = active_logits(logits, logits.fb.read(self.head.active_classes))
        return {"probabilities": ops.softmax(logits), "logits": logits}

    def _loss(self, logits, labels):
        active = None if self._capacity is None else logits.fb.read(self.head.active_classes)
        return sparse_cross_entropy(logits, labels, active)

    def _load(self, images):
        return {"bottleneck": self._base_model.features(images)}

    def _infer(self, images):
        return self._probabilities(self.head(self._base_model.features(images)))

    def _infer_bottlenecks(self, bottlenecks):
        return self._probabilities(self.head(bottlenecks))

    def _train(self, bottlenecks, labels, learning_rate):
        loss = self._loss(self.head(bottlenecks, training=True), labels)
        self.optimizer.minimize(loss, self.head.trainable_variables, learning_rate=learning_rate)
        return {"loss": loss}

    def _train_finetune(self, images, labels, learning_rate):
        loss = self._loss(self.head(self._base_model.features(images), training=True), labels)
        self.optimizer.minimize(loss, self.head.trainable_variables + self._finetune_params,
                                learning_rate=learning_rate)
        return {"loss": loss}

    def _new_row(self, fb, kernel, bias_now, kernel_row, bias, mean_weight):
        """The new class's kernel row [1, row] and bias [1]: mean_weight * (the mean of the rows in
        use) + kernel_row / bias."""
        return (ops.add(ops.mul(ops.reduce_mean(kernel, [0], keepdims=True), mean_weight),
                        ops.reshape(kernel_row, [1, self._row])),
                ops.add(ops.mul(ops.reduce_mean(bias_now, [0], keepdims=True), mean_weight),
                        ops.reshape(bias, [1])))

    def _add_class(self, kernel_row, bias, mean_weight):
        fb = kernel_row.fb
        if self._capacity is not None:
            return self._activate_row(fb, kernel_row, bias, mean_weight)
        kernel_new, bias_new = self._new_row(fb, fb.read(self.head.kernel), fb.read(self.head.bias),
                                             kernel_row, bias, mean_weight)
        new = {self.head.kernel: kernel_new, self.head.bias: bias_new}
        for state in _resizable(self):  # the head's rows and the optimizer's slots for them
            value = fb.read(state)
            extra = new.get(state)
            if extra is None:
                extra = fb.const(np.zeros((1, *state.value.shape[1:]), state.value.dtype))
            fb.assign(state, ops.concat([value, extra], 0))
        return {"num_classes": ops.gather(ops.shape_of(fb.read(self.head.bias)), 0)}

    def _activate_row(self, fb, kernel_row, bias, mean_weight):
        """Capacity mode: row n becomes the new class (its slots zero), n + 1 classes in use."""
        capacity = self._capacity
        n = check_at_most(fb.read(self.head.active_classes), capacity - 1,
                          f"add_class: the head is full (all max_classes={capacity} classes are in use; "
                          "remove a class first)")
        grown = ops.add(n, 1)  # made first: the output must be the node common-subexpression elimination keeps
        used = ops.arange(0, n, 1)
        kernel_new, bias_new = self._new_row(fb, ops.gather(fb.read(self.head.kernel), used),
                                             ops.gather(fb.read(self.head.bias), used),
                                             kernel_row, bias, mean_weight)
        new = {self.head.kernel: kernel_new, self.head.bias: bias_new}
        for state in _class_rows(self, self.head):
            extra = new.get(state)
            if extra is None:
                extra = fb.const(np.zeros((1, *state.value.shape[1:]), state.value.dtype))
            start = ops.concat([ops.reshape(n, [1])] + ([fb.const(np.zeros(state.value.ndim - 1, np.int32))]
                                                        if state.value.ndim > 1 else []), 0)
            fb.assign(state, ops.dynamic_update_slice(fb.read(state), extra, start))
        fb.assign(self.head.active_classes, grown)
        return {"num_classes": grown}

    def _remove_class(self, index):
        fb = index.fb
        if self._capacity is not None:
            n = fb.read(self.head.active_classes)
        else:
            n = ops.gather(ops.shape_of(fb.read(self.head.bias)), 0)
        # index in [0, n) and n >= 2 (GATHER from [1, n) fails for the last class), checked in the graph
        index = ops.add(checked_class(index, n), ops.mul(ops.gather(ops.arange(1, n, 1), 0), 0))
        if self._capacity is not None:
            left = ops.sub(n, 1)  # made first (see _activate_row)
            for state in _class_rows(self, self.head):
                fb.assign(state, moved_up(fb.read(state), index, n))
            fb.assign(self.head.active_classes, left)
            return {"num_classes": left}
        for state in _resizable(self):
            fb.assign(state, without_row(fb.read(state), index, n))
        return {"num_classes": ops.gather(ops.shape_of(fb.read(self.head.bias)), 0)}


def personalization_module(base: BaseModel, head: ClassifierHead, optimizer: Optimizer, finetune_params,
                           learning_rate: float) -> Personalization:
    """The Module a personalization file is converted from (signatures in the package doc)."""
    image = TensorSpec([None, *base.preprocessing.image_shape])
    bottleneck = TensorSpec([None, head.num_features])
    labels = TensorSpec([None], "int32")
    lr = TensorSpec([], "float32", default=learning_rate)
    row = head.kernel.value.shape[1]

    class Signatures(Personalization):
        @signature(images=image)
        def load(self, images):
            return self._load(images)

        @signature(images=image)
        def infer(self, images):
            return self._infer(images)

        @signature(bottlenecks=bottleneck)
        def infer_bottlenecks(self, bottlenecks):
            return self._infer_bottlenecks(bottlenecks)

        @signature(bottlenecks=bottleneck, labels=labels, learning_rate=lr)
        def train(self, bottlenecks, labels, learning_rate):
            return self._train(bottlenecks, labels, learning_rate)

        @signature(images=image, labels=labels, learning_rate=lr)
        def train_finetune(self, images, labels, learning_rate):
            return self._train_finetune(images, labels, learning_rate)

        @signature(kernel_row=TensorSpec([row], default=np.zeros(row, np.float32)),
                   bias=TensorSpec([], default=0.0), mean_weight=TensorSpec([], default=1.0))
        def add_class(self, kernel_row, bias, mean_weight):
            return self._add_class(kernel_row, bias, mean_weight)

        @signature(index=TensorSpec([], "int32"))
        def remove_class(self, index):
            return self._remove_class(index)

    Signatures.__name__ = Signatures.__qualname__ = "Personalization"
    return Signatures(base, head, optimizer, finetune_params)
