"""The PyTorch twin of the continual learner (benchmark.LitetrainLearner): the same MLP from the same
initial weights, torch.optim.SGD, the head's classes in use as a slice of the logits, EWC and L2-SP
written out with autograd. Imports torch when made."""
from __future__ import annotations

import numpy as np

WEIGHTS = ("net/dense/kernel", "net/dense/bias", "net/dense_1/kernel", "net/dense_1/bias")


class TorchLearner:
    name = "PyTorch"

    def __init__(self, weights: dict, learning_rate: float):
        import torch
        self.torch = torch
        hidden, classes = weights["net/dense/bias"].shape[0], weights["net/dense_1/bias"].shape[0]
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(weights["net/dense/kernel"].shape[1], hidden),
                                       torch.nn.ReLU(), torch.nn.Linear(hidden, classes))
        with torch.no_grad():
            for p, name in zip(self.net.parameters(), WEIGHTS):
                p.copy_(torch.from_numpy(np.array(weights[name])))
        self.params = list(self.net.parameters())
        self.opt = torch.optim.SGD(self.params, lr=learning_rate)
        self.start = [p.detach().clone() for p in self.params]
        self.anchor = [p.detach().clone() for p in self.params]
        self.fisher = [torch.zeros_like(p) for p in self.params]
        self.fisher_sum = [torch.zeros_like(p) for p in self.params]
        self.batches = 0
        self.active = 0

    def grow(self, classes: int) -> None:
        self.active = min(self.active + classes, self.params[-1].shape[0])

    def _loss(self, x, labels):
        logits = self.net(self.torch.from_numpy(x))[:, :self.active]
        return self.torch.nn.functional.cross_entropy(logits, self.torch.from_numpy(labels.astype(np.int64)))

    def step(self, x, labels, ewc=0.0, l2sp=0.0) -> float:
        loss = self._loss(x, labels)
        total = loss
        if ewc:
            total = total + ewc / 2 * sum((f * (p - a) ** 2).sum() for f, p, a in zip(self.fisher, self.params, self.anchor))
        if l2sp:
            total = total + l2sp / 2 * sum(((p - s) ** 2).sum() for p, s in zip(self.params, self.start))
        self.opt.zero_grad()
        total.backward()
        self.opt.step()
        return loss.item()

    def add_fisher(self, x, labels) -> None:
        self.net.zero_grad()
        self._loss(x, labels).backward()
        for s, p in zip(self.fisher_sum, self.params):
            s += p.grad ** 2
        self.batches += 1

    def consolidate(self) -> None:
        self.fisher = [f + s / max(self.batches, 1) for f, s in zip(self.fisher, self.fisher_sum)]
        self.fisher_sum = [self.torch.zeros_like(p) for p in self.params]
        self.anchor = [p.detach().clone() for p in self.params]
        self.batches = 0

    def logits(self, x) -> np.ndarray:
        with self.torch.no_grad():
            out = self.net(self.torch.from_numpy(x)).numpy().copy()
        out[:, self.active:] = -1e9  # the classes not in use, as the file masks them
        return out
