"""A bounded replay buffer: reservoir sampling over a stream of examples into fixed, preallocated
memory, so every example seen so far is kept with the same probability capacity / seen."""
from __future__ import annotations

import numpy as np


def reservoir_slots(seen: int, count: int, capacity: int, rng: np.random.Generator) -> np.ndarray:
    """Where each of `count` new stream items goes when `seen` came before: a slot in [0, capacity)
    or -1 (not kept). Algorithm R: item number i (from 0) fills slot i while i < capacity, then
    replaces slot j for j drawn uniformly from [0, i] when j < capacity."""
    slots = np.full(count, -1, np.int64)
    for k in range(count):
        i = seen + k
        if i < capacity:
            slots[k] = i
        else:
            j = int(rng.integers(0, i + 1))
            if j < capacity:
                slots[k] = j
    return slots


class ReplayBuffer:
    """At most `capacity` (example, label) pairs of a fixed shape and dtype, in arrays allocated once
    (`nbytes` is the whole memory it ever takes). `add` streams a batch in by reservoir sampling;
    `sample(n)` draws n stored pairs without replacement (all of them when fewer are stored)."""

    def __init__(self, capacity: int, example_shape, dtype="float32", label_dtype="int32", seed=0):
        if int(capacity) < 1:
            raise ValueError(f"a replay buffer needs a capacity of at least 1, got {capacity}")
        self.capacity = int(capacity)
        self.examples = np.zeros((self.capacity, *example_shape), dtype)
        self.labels = np.zeros(self.capacity, label_dtype)
        self.seen = 0
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return min(self.seen, self.capacity)

    @property
    def nbytes(self) -> int:
        return self.examples.nbytes + self.labels.nbytes

    def add(self, examples, labels) -> None:
        examples, labels = np.asarray(examples), np.asarray(labels)
        if examples.shape[1:] != self.examples.shape[1:] or len(examples) != len(labels):
            raise ValueError(f"the buffer holds examples of shape {list(self.examples.shape[1:])} with one label "
                             f"each; got {list(examples.shape)} and {len(labels)} labels")
        slots = reservoir_slots(self.seen, len(examples), self.capacity, self.rng)
        kept = slots >= 0
        self.examples[slots[kept]] = examples[kept]
        self.labels[slots[kept]] = labels[kept]
        self.seen += len(examples)

    def sample(self, n: int):
        """(examples, labels) of min(n, len(self)) stored pairs, drawn without replacement."""
        pick = self.rng.choice(len(self), size=min(int(n), len(self)), replace=False)
        return self.examples[pick], self.labels[pick]
