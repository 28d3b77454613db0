"""The file a federated client trains: a classifier with FedProx's proximal term in its `train`
signature (mu a run-time input, 0 by default: plain FedAvg local training), and the signatures a
client needs to take weights in and out.

Signatures (`SIGNATURES`):

    train(x, labels, mu=0, learning_rate=..., ...) -> loss, accuracy   one local step
    infer(x)                                   -> logits, probabilities
    evaluate(x, labels, mu=0)                  -> loss, accuracy   nothing changes (ready-made)
    get_weights() / set_weights(...)           the model's weights by path (anchors and optimizer
                                               state excluded)
    set_anchor(keep=0)                         anchors := keep * anchors + (1 - keep) * weights:
                                               FedProx's w_global, copied from the weights just set
    get_gradients / apply_gradients            gradients out, one optimizer step from gradients in
    save() / restore(...)                      every variable out / in (the file is portable:
                                               builtin ops only, so LiteRT runs it too)

The loss minimised is cross-entropy + mu / 2 * ||w - w_anchor||^2 over the trainable weights; the
`loss` output is the cross-entropy alone (what the data says), as in the FedProx paper's plots.
"""
from __future__ import annotations

import numpy as np

from ... import ops
from ...frontend import losses, nn, optim
from ...frontend.convert import convert
from ...frontend.module import Module, TensorSpec, signature
from ...frontend.regularizers import Anchors, penalty, weighted_squared_distance

SIGNATURES = ["train", "infer", "evaluate", "get_weights", "set_weights", "set_anchor", "get_gradients",
              "apply_gradients", "save", "restore"]
INPUT_SHAPE = (28, 28)
NUM_CLASSES = 10


def accuracy(logits, labels):
    """The fraction of rows whose largest logit is at the label (float32 scalar)."""
    hits = ops.equal(ops.argmax(logits, -1), ops.cast(labels, "int32"))
    return ops.reduce_mean(ops.cast(hits, "float32"))


def federated_module(net: Module, optimizer, input_shape=INPUT_SHAPE, num_classes=NUM_CLASSES) -> Module:
    """A Module with the signatures above around `net` (x [batch, *input_shape] -> logits
    [batch, num_classes]); labels are int32 class indices."""
    x_spec = TensorSpec([None, *input_shape], "float32")
    labels_spec = TensorSpec([None], "int32")
    mu_spec = TensorSpec([], "float32", default=0.0)
    keep_spec = TensorSpec([], "float32", default=0.0)

    class FederatedModel(Module):
        def __init__(self):
            self.net = net
            self.loss = losses.SparseCategoricalCrossentropy(from_logits=True)
            self.optimizer = optimizer
            self.anchors = Anchors()

        @signature(x=x_spec, labels=labels_spec, mu=mu_spec)
        def train(self, x, labels, mu):
            params = self.net.trainable_variables
            logits = self.net(x, training=True)
            data_loss = self.loss(labels, logits)
            proximal = penalty(mu, weighted_squared_distance(params, self.anchors, x))
            self.optimizer.minimize(ops.add(data_loss, proximal), params)
            return {"loss": data_loss, "accuracy": accuracy(logits, labels)}

        @signature(x=x_spec)
        def infer(self, x):
            logits = self.net(x)
            return {"logits": logits, "probabilities": ops.softmax(logits)}

        @signature(keep=keep_spec)
        def set_anchor(self, keep):
            params = self.net.trainable_variables
            current = [keep.fb.read(p) for p in params]
            old = self.anchors.values(params, keep)
            rest = ops.add(ops.neg(keep), 1.0)  # 1 - keep (an ADD: see regularizers.weighted_squared_distance)
            self.anchors.assign(params, [ops.add(ops.mul(a, keep), ops.mul(w, rest)) for a, w in zip(old, current)])
            return {}

    FederatedModel.__name__ = FederatedModel.__qualname__ = "FederatedModel"
    del num_classes  # (the net decides it; kept in the signature for readers)
    return FederatedModel()


def mlp(hidden=128, input_shape=INPUT_SHAPE, num_classes=NUM_CLASSES) -> nn.Sequential:
    """Flatten -> Dense(hidden, relu) -> Dense(num_classes): the demo's network."""
    return nn.Sequential([nn.Flatten(), nn.Dense(hidden, activation="relu", input_dim=int(np.prod(input_shape))),
                          nn.Dense(num_classes, input_dim=hidden)])


def federated_file(net=None, optimizer=None, learning_rate=0.05) -> bytes:
    """The bytes of the client file: `net` (default `mlp()`) with `optimizer` (default plain SGD at
    `learning_rate`, the optimizer of FedAvg's local training), portable, hyperparameters as
    run-time inputs."""
    module = federated_module(net if net is not None else mlp(),
                              optimizer if optimizer is not None else optim.SGD(learning_rate))
    return convert(module, signatures=SIGNATURES, portable_checkpoints=True, runtime_hyperparameters=True)
