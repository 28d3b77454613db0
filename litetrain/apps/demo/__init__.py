"""The demo: train an MLP on Animal MNIST on the device, from one .tflite file, beside PyTorch.

The flow of the guide, on real data: author `DemoModel` once (train, infer, plus the ready-made
save and restore), convert it to one file, open that file with litetrain's interpreter, train
for some epochs, save a checkpoint, open a fresh interpreter from the same file, restore,
and evaluate on the test split. The PyTorch reference trains the same network from the same
initial weights (read from the file) on the same batches in the same order with the same
optimizer, so the two accuracies should agree closely.
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace

import numpy as np

from ... import ops
from ...frontend import losses, nn, optim
from ...frontend.convert import convert
from ...frontend.module import Module, TensorSpec, signature
from ...runtime.interpreter import Interpreter

NUM_CLASSES = 10
SIGNATURES = ["train", "infer", "save", "restore"]


class DemoModel(Module):
    """Flatten -> Dense(128, relu) -> Dense(10), cross-entropy on logits with one-hot labels."""

    def __init__(self, optimizer=None, hidden=128):
        self.net = nn.Sequential([nn.Flatten(), nn.Dense(hidden, activation="relu", input_dim=784),
                                     nn.Dense(NUM_CLASSES, input_dim=hidden)])
        self.loss = losses.CategoricalCrossentropy(from_logits=True)
        self.optimizer = optimizer if optimizer is not None else Protocol().litetrain_optimizer()

    @signature(x=TensorSpec([None, 28, 28], "float32"), y=TensorSpec([None, NUM_CLASSES], "float32"))
    def train(self, x, y):
        loss = self.loss(y, self.net(x))
        self.optimizer.minimize(loss, self.net.trainable_variables)
        return {"loss": loss}

    @signature(x=TensorSpec([None, 28, 28], "float32"))
    def infer(self, x):
        logits = self.net(x)
        return {"output": ops.softmax(logits), "logits": logits}


@dataclass(frozen=True)
class Protocol:
    """How both litetrain and the PyTorch reference train: the batches (a seeded shuffle per
    epoch; the last batch of an epoch may be short) and the optimizer.

    The defaults: SGD with momentum 0.9, lr 0.02, batch 32, 10 epochs (about 88% test accuracy
    in ~1 s of training on 2 cores). Adam (lr 1e-3) reaches the same accuracy, but its
    division by sqrt(v) amplifies float32 rounding differences, so it drifts from PyTorch's
    trajectory sooner: over three shuffle seeds at 10 epochs, litetrain and PyTorch test
    accuracies differed by at most 0.1 points with this SGD and up to 0.7 points with Adam.
    Longer runs overfit (train loss -> 0) and drift further apart for either optimizer."""
    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "sgd"
    learning_rate: float = 0.02
    momentum: float = 0.9  # for "sgd"
    shuffle_seed: int = 0

    def batches(self, n: int) -> list:
        """Index arrays into the training set, every epoch's batches in order."""
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch size must be positive, got {self.epochs} and {self.batch_size}")
        rng = np.random.default_rng(self.shuffle_seed)
        out = []
        for _ in range(self.epochs):
            order = rng.permutation(n)
            out.extend(order[i:i + self.batch_size] for i in range(0, n, self.batch_size))
        return out

    def litetrain_optimizer(self):
        if self.optimizer == "adam":
            return optim.Adam(self.learning_rate)
        if self.optimizer == "sgd":
            return optim.SGD(self.learning_rate, momentum=self.momentum)
        raise ValueError(f"unknown optimizer {self.optimizer!r}; the demo knows 'adam' and 'sgd'")


def preprocess(images) -> np.ndarray:
    """uint8 images -> float32 in [0, 1] (x / 255), the same for litetrain and PyTorch."""
    return np.asarray(images).astype(np.float32) / np.float32(255)


def one_hot(labels, classes=NUM_CLASSES) -> np.ndarray:
    return np.eye(classes, dtype=np.float32)[np.asarray(labels)]


def predict(infer, x, batch_size=500) -> np.ndarray:
    """Class predictions from an `infer` signature runner."""
    return np.concatenate([infer(x=x[i:i + batch_size])["logits"].argmax(-1)
                           for i in range(0, len(x), batch_size)])


class Progress:
    """One stderr line, rewritten in place on a terminal; a line per epoch otherwise."""

    def __init__(self, total, epochs, stream=None, enabled=True):
        self.total, self.epochs, self.stream, self.enabled = total, epochs, stream or sys.stderr, enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = self.last = time.perf_counter()

    def due(self) -> bool:
        """Whether a mid-epoch update would be drawn now."""
        return self.tty and time.perf_counter() - self.last >= 0.1

    def update(self, step, epoch, loss, end_of_epoch=False):
        """`loss`: the epoch's mean loss so far."""
        if not self.enabled or not (end_of_epoch or self.due()):
            return
        now = self.last = time.perf_counter()
        width = 30
        filled = width * step // self.total
        line = (f"epoch {epoch}/{self.epochs}: [{'#' * filled}{'.' * (width - filled)}] {step}/{self.total} steps, "
                f"mean loss {loss:.4f}, {now - self.start:.1f}s")
        if self.tty:
            self.stream.write("\r" + line + "\033[K" + ("\n" if step == self.total else ""))
            self.stream.flush()
        elif end_of_epoch:
            print(line, file=self.stream, flush=True)


def run_demo(epochs=None, batch_size=None, out_dir="demo_out", reference=True, progress=True,
             protocol: Protocol | None = None, train_limit=None) -> dict:
    """Run the whole flow and return its results (see `format_results`). `train_limit` trains on
    the first N examples of the training split only (for quick tests)."""
    from .data import load_animal_mnist

    began = time.perf_counter()
    protocol = protocol or Protocol()
    if epochs is not None:
        protocol = replace(protocol, epochs=epochs)
    if batch_size is not None:
        protocol = replace(protocol, batch_size=batch_size)

    train_images, train_labels, test_images, test_labels = load_animal_mnist()
    if train_limit is not None:
        train_images, train_labels = train_images[:train_limit], train_labels[:train_limit]
    train_x, train_y = preprocess(train_images), one_hot(train_labels)
    test_x = preprocess(test_images)
    batches = protocol.batches(len(train_x))
    per_epoch = -(-len(train_x) // protocol.batch_size)

    model_path, checkpoint_path = _write_model(out_dir, protocol)
    interpreter = Interpreter(model_path=model_path)
    initial = interpreter.get_variables()  # the file's initial values: the reference starts here
    train = interpreter.get_signature_runner("train")
    bar = Progress(len(batches), protocol.epochs, enabled=progress)
    losses, step_times = _train(train, train_x, train_y, batches, per_epoch, bar)
    restored_matches, predictions = _save_restore_predict(interpreter, model_path, checkpoint_path, test_x)

    results = {
        "test_accuracy": float(np.mean(predictions == test_labels)),
        "reference_accuracy": None, "reference_note": None, "reference_final_loss": None,
        "final_loss": float(np.mean(losses[-per_epoch:])),
        "median_step_ms": 1e3 * statistics.median(step_times),
        "steps": len(batches), "train_examples": len(train_x), "test_examples": len(test_x),
        "file_size_bytes": os.path.getsize(model_path), "checkpoint_size_bytes": os.path.getsize(checkpoint_path),
        "model_path": model_path, "checkpoint_path": checkpoint_path,
        "restored_matches_trained": bool(restored_matches), "protocol": asdict(protocol),
        "losses": np.asarray(losses, np.float32), "reference_losses": None,
    }
    if not reference:
        results["reference_note"] = "skipped (--no-reference)"
    else:
        results.update(_reference_results(initial, train_x, train_y, test_x, test_labels, batches, protocol,
                                          per_epoch, predictions))
    results["elapsed_s"] = time.perf_counter() - began
    return results


def _write_model(out_dir, protocol: Protocol) -> tuple[str, str]:
    """Author once, convert to one file in `out_dir`: (the model's path, its checkpoint's path)."""
    os.makedirs(out_dir, exist_ok=True)
    model_path = os.path.join(out_dir, "animal_mlp.tflite")
    checkpoint_path = os.path.join(out_dir, "animal_mlp.ckpt")
    content = convert(DemoModel(protocol.litetrain_optimizer()), signatures=SIGNATURES)
    with open(model_path, "wb") as f:
        f.write(content)
    return model_path, checkpoint_path


def _train(train, train_x, train_y, batches, per_epoch: int, bar: Progress) -> tuple[list, list]:
    """Train on the device through the `train` signature runner: (each step's loss, each step's seconds)."""
    step_times, losses = [], []
    for step, idx in enumerate(batches, 1):
        x, y = train_x[idx], train_y[idx]
        t0 = time.perf_counter()
        loss = float(train(x=x, y=y)["loss"])
        step_times.append(time.perf_counter() - t0)
        losses.append(loss)
        epoch_start = (step - 1) // per_epoch * per_epoch
        end_of_epoch = step % per_epoch == 0 or step == len(batches)
        if end_of_epoch or bar.due():
            bar.update(step, epoch_start // per_epoch + 1, float(np.mean(losses[epoch_start:])), end_of_epoch)
    return losses, step_times


def _save_restore_predict(interpreter, model_path, checkpoint_path, test_x) -> tuple[bool, np.ndarray]:
    """Save a checkpoint, restore it into a fresh interpreter from the same file: (whether the restored
    variables equal the trained ones, the fresh interpreter's predictions on `test_x`)."""
    interpreter.get_signature_runner("save")(checkpoint_path=checkpoint_path)
    fresh = Interpreter(model_path=model_path)
    fresh.get_signature_runner("restore")(checkpoint_path=checkpoint_path)
    trained, restored = interpreter.get_variables(), fresh.get_variables()
    restored_matches = trained.keys() == restored.keys() and all(
        np.array_equal(trained[k], restored[k]) for k in trained)
    return restored_matches, predict(fresh.get_signature_runner("infer"), test_x)


def _reference_results(initial, train_x, train_y, test_x, test_labels, batches, protocol: Protocol,
                       per_epoch: int, predictions) -> dict:
    """The PyTorch reference's entries of the results: trained from the file's `initial` weights on
    the same batches, or a note saying why it was skipped."""
    from . import reference as reference_torch
    if not reference_torch.torch_available():
        return {"reference_note": "skipped: PyTorch is not installed "
                                  "(pip install torch==2.13.0, or pip install '.[torch]')"}
    weights = {k: v for k, v in initial.items() if k in reference_torch.WEIGHT_MAP}
    net, ref_losses = reference_torch.train_reference(
        weights, train_x, train_y, batches, protocol.optimizer, protocol.learning_rate, protocol.momentum)
    ref_pred = reference_torch.predict(net, test_x)
    return {
        "reference_accuracy": float(np.mean(ref_pred == test_labels)),
        "reference_final_loss": float(np.mean(ref_losses[-per_epoch:])),
        "reference_losses": ref_losses,
        "prediction_agreement": float(np.mean(ref_pred == predictions)),
    }


def format_results(r: dict) -> str:
    p = r["protocol"]
    lines = [
        f"Animal MNIST MLP (784-128-10), {p['optimizer']} lr={p['learning_rate']:g}, "
        f"{p['epochs']} epochs x {r['steps'] // p['epochs']} steps of batch {p['batch_size']} "
        f"on {r['train_examples']} images; test split {r['test_examples']} images",
        f"  litetrain test accuracy : {100 * r['test_accuracy']:.2f}%  (fresh interpreter, restored "
        f"from checkpoint{'' if r['restored_matches_trained'] else ' -- WARNING: differs from the trained state'})",
    ]
    if r["reference_accuracy"] is not None:
        diff = 100 * (r["test_accuracy"] - r["reference_accuracy"])
        lines.append(f"  PyTorch reference       : {100 * r['reference_accuracy']:.2f}%  (same initial weights, "
                     f"batches and optimizer; difference {diff:+.2f} points; predictions agree on "
                     f"{100 * r['prediction_agreement']:.1f}%)")
        lines.append(f"  last-epoch mean loss    : litetrain {r['final_loss']:.4f}, "
                     f"PyTorch {r['reference_final_loss']:.4f}")
    else:
        lines.append(f"  PyTorch reference       : {r['reference_note']}")
        lines.append(f"  last-epoch mean loss    : {r['final_loss']:.4f}")
    lines += [
        f"  median train step       : {r['median_step_ms']:.2f} ms (litetrain interpreter, batch {p['batch_size']})",
        f"  model file              : {r['model_path']} ({r['file_size_bytes'] / 1024:.1f} KiB; "
        f"checkpoint {r['checkpoint_size_bytes'] / 1024:.1f} KiB)",
        f"  total time              : {r['elapsed_s']:.1f} s",
    ]
    return "\n".join(lines)
