"""The models the reliability checks run: a small MLP classifier converted in every form the fuzz
starts from, deterministic batches, and the float .tflite files MediaPipe ships, when installed.

Everything here is deterministic: the same call gives the same bytes and the same batches, so
a run in one process and a run in another can be compared bit for bit.
"""
from __future__ import annotations

import glob
import importlib.util
import os

import numpy as np

from litetrain import convert, losses, nn, ops, optim
from litetrain.frontend.module import Module, TensorSpec, signature

FEATURES, CLASSES = 4, 3

OPTIMIZERS = {
    "sgd": lambda **kw: optim.SGD(0.05, **kw),
    "sgd_momentum": lambda **kw: optim.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=1e-3, **kw),
    "adam": lambda **kw: optim.Adam(0.01, **kw),
    "adamw": lambda **kw: optim.AdamW(0.01, clip_global_norm=1.0, **kw),
    "rmsprop": lambda **kw: optim.RMSProp(0.01, momentum=0.5, **kw),
    "adagrad": lambda **kw: optim.Adagrad(0.1, initial_accumulator_value=0.1, **kw),
}


class MLP(Module):
    """A classifier with train and infer signatures, trained by the chosen optimizer."""

    def __init__(self, optimizer="adam", units=8, features=FEATURES, classes=CLASSES, **optimizer_options):
        self.net = nn.Sequential([nn.Dense(units, activation="tanh"), nn.Dense(units, activation="relu"),
                                  nn.Dense(classes)])
        self.loss = losses.SparseCategoricalCrossentropy(from_logits=True)
        self.optimizer = OPTIMIZERS[optimizer](**optimizer_options)
        self._features = features

    @signature(x=TensorSpec([None, FEATURES]), y=TensorSpec([None], "int32"))
    def train(self, x, y):
        loss = self.loss(y, self.net(x, training=True))
        self.optimizer.minimize(loss, self.net.trainable_variables)
        return {"loss": loss}

    @signature(x=TensorSpec([None, FEATURES]))
    def infer(self, x):
        return {"probabilities": ops.softmax(self.net(x))}


class WideMLP(MLP):
    """The same classifier with 64 inputs and wider layers: its checkpoints are large enough
    (about 1 MB with Adam) that a kill often lands while one is being written."""

    @signature(x=TensorSpec([None, 64]), y=TensorSpec([None], "int32"))
    def train(self, x, y):
        loss = self.loss(y, self.net(x, training=True))
        self.optimizer.minimize(loss, self.net.trainable_variables)
        return {"loss": loss}

    @signature(x=TensorSpec([None, 64]))
    def infer(self, x):
        return {"probabilities": ops.softmax(self.net(x))}


def mlp_file(optimizer="adam", portable=False, guard=False, extra=(), units=8) -> bytes:
    """The MLP as one .tflite file with train/infer/save/restore (plus `extra` signatures)."""
    module = MLP(optimizer, units=units)
    return convert(module, signatures=["train", "infer", "save", "restore", *extra],
                   portable_checkpoints=portable, nonfinite_guard=guard)


def wide_mlp_file(optimizer="adam", units=256) -> bytes:
    return convert(WideMLP(optimizer, units=units), signatures=["train", "infer", "save", "restore"])


def batch(step: int, size: int = 16, features: int = FEATURES, classes: int = CLASSES):
    """The batch for training step `step` (the same on every run and in every process)."""
    rng = np.random.default_rng([1234, step])
    x = rng.standard_normal((size, features)).astype(np.float32)
    y = (np.abs(x[:, :classes]).argmax(axis=1)).astype(np.int32)
    return x, y


def seed_files() -> dict[str, bytes]:
    """The litetrain-made files the fuzz mutates, by name."""
    return {
        "mlp_adam_checkpoint_ops": mlp_file("adam"),
        "mlp_adam_portable": mlp_file("adam", portable=True, extra=("get_weights", "set_weights")),
        "mlp_sgd_momentum_guarded": mlp_file("sgd_momentum", guard=True),
    }


def mediapipe_files() -> dict[str, bytes]:
    """The .tflite files inside an installed `mediapipe` wheel (found without importing it),
    by file name; empty when it is not installed (`pip install --no-deps mediapipe==0.10.21`)."""
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        return {}
    found = {}
    for base in spec.submodule_search_locations:
        for path in sorted(glob.glob(os.path.join(base, "**", "*.tflite"), recursive=True)):
            with open(path, "rb") as f:
                found["mediapipe/" + os.path.basename(path)] = f.read()
    return found


def variables_digest(values: dict) -> str:
    """A hash of every variable's name, dtype, shape and bytes (to compare runs bit for bit)."""
    import hashlib
    h = hashlib.sha256()
    for name in sorted(values):
        arr = np.ascontiguousarray(values[name])
        h.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(arr.tobytes())
    return h.hexdigest()
