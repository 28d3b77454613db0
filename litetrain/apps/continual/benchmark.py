"""Split Animal-MNIST: five tasks of two classes each, learned one after the other by a classifier
whose head grows by two classes per task, with plain fine-tuning, replay (a reservoir buffer), EWC
or L2-SP. The same loop drives the litetrain file (`LitetrainLearner`) and its PyTorch twin
(`reference.TorchLearner`): same initial weights, batches, replay draws and Fisher examples.

Reported, from R[t][j] (accuracy on task j's test images after learning task t):
  average accuracy = mean over tasks j of R[last][j];
  forgetting       = mean over tasks j before the last of max over t < last of R[t][j] - R[last][j];
both class-incremental (the task is not given: argmax over every class learned so far) and
task-aware (argmax over the task's own two classes)."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ...runtime.interpreter import Interpreter
from .replay import ReplayBuffer

TASKS = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))
METHODS = ("finetune", "replay", "ewc", "l2sp")


@dataclass(frozen=True)
class Protocol:
    """How every method trains: plain SGD, `epochs` passes per task in batches; replay adds a batch
    of `batch_size` stored examples to every step (reservoir buffer of `replay_capacity`, filled
    during each task's first epoch); EWC estimates the Fisher diagonal after each task from
    `fisher_examples` single-example gradients and trains with strength `ewc`; L2-SP with `l2sp`."""
    epochs: int = 2
    batch_size: int = 32
    learning_rate: float = 0.05
    hidden: int = 128
    replay_capacity: int = 200
    fisher_examples: int = 200
    ewc: float = 50.0
    l2sp: float = 0.01
    seed: int = 0


class LitetrainLearner:
    """The continual learner's .tflite file (model.continual_file) behind the benchmark's calls."""
    name = "litetrain"

    def __init__(self, content: bytes):
        self.interpreter = Interpreter(model_content=content)
        self._runners = {}

    def _run(self, name, **inputs):
        if name not in self._runners:
            self._runners[name] = self.interpreter.get_signature_runner(name)
        return self._runners[name](**inputs)

    def weights(self) -> dict:
        return self._run("get_weights")

    def grow(self, classes: int) -> None:
        self._run("grow", classes=np.int32(classes))

    def step(self, x, labels, ewc=0.0, l2sp=0.0) -> float:
        return float(self._run("train", x=x, labels=labels.astype(np.int32), ewc=np.float32(ewc),
                               l2sp=np.float32(l2sp))["loss"])

    def add_fisher(self, x, labels) -> None:
        self._run("accumulate_fisher", x=x, labels=labels.astype(np.int32))

    def consolidate(self) -> None:
        self._run("consolidate")

    def logits(self, x) -> np.ndarray:
        return np.concatenate([self._run("infer", x=x[i:i + 500])["logits"] for i in range(0, len(x), 500)])


def split_data(train_x, train_y, test_x, test_y):
    """Per task: (train indices, test indices)."""
    return [(np.flatnonzero(np.isin(train_y, c)), np.flatnonzero(np.isin(test_y, c))) for c in TASKS]


def run_method(method: str, learner, data, protocol: Protocol = Protocol()) -> dict:
    """Learn the five tasks in order with `method`; the accuracy matrices and the two scores."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    train_x, train_y, test_x, test_y = data
    tasks = split_data(train_x, train_y, test_x, test_y)
    rng = np.random.default_rng(protocol.seed)
    buffer = ReplayBuffer(protocol.replay_capacity, train_x.shape[1:], seed=protocol.seed) if method == "replay" else None
    ewc = protocol.ewc if method == "ewc" else 0.0
    l2sp = protocol.l2sp if method == "l2sp" else 0.0
    class_il, task_aware = np.zeros((len(TASKS), len(TASKS))), np.zeros((len(TASKS), len(TASKS)))
    began = time.perf_counter()
    for t, (train_idx, _) in enumerate(tasks):
        learner.grow(len(TASKS[t]))
        for epoch in range(protocol.epochs):
            order = rng.permutation(train_idx)
            for i in range(0, len(order), protocol.batch_size):
                b = order[i:i + protocol.batch_size]
                x, y = train_x[b], train_y[b]
                if buffer is not None and len(buffer):
                    rx, ry = buffer.sample(protocol.batch_size)
                    x, y = np.concatenate([x, rx]), np.concatenate([y, ry])
                learner.step(x, y, ewc=ewc, l2sp=l2sp)
                if buffer is not None and epoch == 0:
                    buffer.add(train_x[b], train_y[b])
        if method == "ewc":
            for k in rng.choice(train_idx, size=min(protocol.fisher_examples, len(train_idx)), replace=False):
                learner.add_fisher(train_x[k:k + 1], train_y[k:k + 1])
            learner.consolidate()
        active = 2 * (t + 1)
        for j in range(t + 1):
            idx = tasks[j][1]
            logits = learner.logits(test_x[idx])
            class_il[t, j] = np.mean(logits[:, :active].argmax(-1) == test_y[idx])
            own = np.asarray(TASKS[j])
            task_aware[t, j] = np.mean(own[logits[:, own].argmax(-1)] == test_y[idx])
    return {"method": method, "framework": learner.name, "class_il": class_il, "task_aware": task_aware,
            **scores(class_il, "class_il"), **scores(task_aware, "task_aware"),
            "seconds": time.perf_counter() - began, "replay_bytes": None if buffer is None else buffer.nbytes}


def scores(matrix, prefix) -> dict:
    last = len(matrix) - 1
    average = float(np.mean(matrix[last, :last + 1]))
    forgetting = float(np.mean([matrix[:last, j].max() - matrix[last, j] for j in range(last)]))
    return {f"{prefix}_accuracy": average, f"{prefix}_forgetting": forgetting}


def load_split_data():
    """Animal MNIST (x / 255, int32 labels): train_x, train_y, test_x, test_y."""
    from ..demo import preprocess
    from ..demo.data import load_animal_mnist
    train_x, train_y, test_x, test_y = load_animal_mnist()
    return preprocess(train_x), train_y.astype(np.int32), preprocess(test_x), test_y.astype(np.int32)


def format_table(results) -> str:
    """One row per (method, framework): class-incremental and task-aware accuracy and forgetting."""
    lines = [f"{'method':<9} {'framework':<10} {'class-IL acc':>12} {'forgetting':>10} {'task-aware acc':>14} "
             f"{'forgetting':>10} {'seconds':>8}"]
    for r in results:
        lines.append(f"{r['method']:<9} {r['framework']:<10} {100 * r['class_il_accuracy']:11.2f}% "
                     f"{100 * r['class_il_forgetting']:9.2f}% {100 * r['task_aware_accuracy']:13.2f}% "
                     f"{100 * r['task_aware_forgetting']:9.2f}% {r['seconds']:8.1f}")
    return "\n".join(lines)
