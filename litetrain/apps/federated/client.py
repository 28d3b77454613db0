"""A federated client's work on the device, with the exact .tflite file and no federated framework:
weights in (set_weights, and FedProx's anchor), local epochs of `train`, weights or deltas out,
metrics. `flower.LitetrainClient` is this behind Flower's NumPyClient API."""
from __future__ import annotations

import numpy as np

from ...runtime.interpreter import Interpreter
from ...tflite.reader import read_model
from .data import client_batches

NEEDED = ("train", "evaluate", "get_weights", "set_weights", "set_anchor", "save", "restore")


class ClientError(ValueError):
    """Weights or settings a client cannot use (names what came and what was expected)."""


class ClientFile:
    """The client .tflite file, opened once: `file(name, **inputs)` runs a signature with every
    input it leaves out set to the file's default (so any interpreter with tf.lite's API works,
    LiteRT included, which knows no defaults). One file serves one client at a time: `LocalTrainer.fit`
    restores the whole initial state first, so a process may share it between its clients."""

    def __init__(self, model_content: bytes, interpreter=None):
        program = read_model(model_content)
        self.defaults = {sig.key: dict(sig.defaults) for sig in program.signatures}
        missing = [n for n in NEEDED if n not in self.defaults]
        if missing:
            raise ClientError(f"the file lacks the signatures {missing} a federated client needs; make it with "
                              "litetrain.apps.federated.model.federated_file (or convert with those signatures)")
        self.names = list(program.signature("get_weights").outputs)  # the weights' order on the wire
        self.interpreter = interpreter if interpreter is not None else Interpreter(model_content=model_content)
        self._runners = {}
        self.initial = {k: np.asarray(v) for k, v in self("save").items()}

    def __call__(self, name, **inputs):
        if name not in self._runners:
            self._runners[name] = self.interpreter.get_signature_runner(name)
        return self._runners[name](**{**self.defaults[name], **inputs})


class LocalTrainer:
    """One client: its examples (float32 x, int labels), its file and its batch order.

    Each `fit` starts from the file's initial optimizer state (a fresh local optimizer each round,
    as federated clients usually do), sets the global weights and the proximal anchor, runs
    `epochs` passes over the client's examples in batches (order seeded by seed, client id and
    round), and returns the new weights (`send="weights"`) or new - global (`send="deltas"`)."""

    def __init__(self, file, x, labels, client_id=0, epochs=1, batch_size=32, seed=0, x_eval=None,
                 labels_eval=None, send="weights"):
        if send not in ("weights", "deltas"):
            raise ClientError(f"send must be 'weights' or 'deltas', got {send!r}")
        if len(x) != len(labels) or len(x) == 0:
            raise ClientError(f"client {client_id}: {len(x)} examples and {len(labels)} labels; need the same "
                              "number, at least one")
        self.file = file if isinstance(file, ClientFile) else ClientFile(file)
        self.names = self.file.names
        self.x, self.labels = np.asarray(x, np.float32), np.asarray(labels, np.int32)
        self.x_eval = self.x if x_eval is None else np.asarray(x_eval, np.float32)
        self.labels_eval = self.labels if labels_eval is None else np.asarray(labels_eval, np.int32)
        self.client_id, self.epochs, self.batch_size, self.seed, self.send = (
            int(client_id), int(epochs), int(batch_size), int(seed), send)

    def get_weights(self) -> list:
        weights = self.file("get_weights")
        return [np.asarray(weights[k]) for k in self.names]

    def set_weights(self, weights) -> None:
        weights = list(weights)
        if len(weights) != len(self.names):
            raise ClientError(f"client {self.client_id}: got {len(weights)} arrays, the file's weights are "
                              f"{len(self.names)}: {self.names}")
        self.file("set_weights", **{k: np.asarray(w, np.float32) for k, w in zip(self.names, weights)})

    def fit(self, weights, server_round=0, mu=0.0, epochs=None, learning_rate=None) -> tuple:
        """(weights or deltas as a list in `names` order, examples seen per epoch, metrics)."""
        self.file("restore", **self.file.initial)
        self.set_weights(weights)
        self.file("set_anchor")
        extra = {} if learning_rate is None else {"learning_rate": np.float32(learning_rate)}
        batches = client_batches(len(self.x), self.epochs if epochs is None else int(epochs), self.batch_size,
                                 self.seed, self.client_id, server_round)
        losses, hits = [], 0.0
        for idx in batches:
            out = self.file("train", x=self.x[idx], labels=self.labels[idx], mu=np.float32(mu), **extra)
            losses.append(float(out["loss"]))
            hits += float(out["accuracy"]) * len(idx)
        new = self.get_weights()
        if self.send == "deltas":
            new = [n - np.asarray(w, np.float32) for n, w in zip(new, weights)]
        seen = sum(len(i) for i in batches)
        return new, len(self.x), {"train_loss": float(np.mean(losses)), "train_accuracy": hits / seen,
                                  "client_id": self.client_id}

    def evaluate(self, weights, batch_size=500) -> tuple:
        """(loss, examples, {"accuracy"}) of `weights` on the client's evaluation examples."""
        self.set_weights(weights)
        return evaluate_file(lambda **kw: self.file("evaluate", **kw), self.x_eval, self.labels_eval, batch_size)


def evaluate_file(evaluate, x, labels, batch_size=500) -> tuple:
    """(mean loss, examples, {"accuracy"}) from an `evaluate` signature runner over batches."""
    total_loss, total_hits = 0.0, 0.0
    for i in range(0, len(x), batch_size):
        out = evaluate(x=np.asarray(x[i:i + batch_size], np.float32),
                       labels=np.asarray(labels[i:i + batch_size], np.int32))
        n = len(x[i:i + batch_size])
        total_loss += float(out["loss"]) * n
        total_hits += float(out["accuracy"]) * n
    return total_loss / len(x), len(x), {"accuracy": total_hits / len(x)}
