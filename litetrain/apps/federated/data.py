"""Federated data: non-IID partitions of a labelled set over clients (Dirichlet over each class's
share), and each client's batch order for a round (seeded by client and round, so a simulation
and a reference twin see the same batches)."""
from __future__ import annotations

import numpy as np


class PartitionError(ValueError):
    """A partition that cannot be made as asked (says what to change)."""


def dirichlet_partition(labels, num_clients: int, alpha: float, seed: int = 0, min_size: int = 2,
                        max_tries: int = 100) -> list:
    """Indices into `labels` for each client: every class's examples are shared among the clients
    in proportions drawn from Dirichlet(alpha, ..., alpha) (small alpha: each client sees few
    classes; large alpha: close to IID). Draws again until every client has at least `min_size`
    examples. Each client's indices are sorted."""
    labels = np.asarray(labels)
    if num_clients < 1 or alpha <= 0:
        raise PartitionError(f"need at least one client and alpha > 0, got {num_clients} clients and alpha={alpha}")
    if num_clients * min_size > len(labels):
        raise PartitionError(f"{len(labels)} examples cannot give {num_clients} clients {min_size} each; "
                             "use fewer clients")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    for _ in range(max_tries):
        parts = [[] for _ in range(num_clients)]
        for c in classes:
            members = rng.permutation(np.flatnonzero(labels == c))
            shares = rng.dirichlet(np.full(num_clients, float(alpha)))
            cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
            for part, chunk in zip(parts, np.split(members, cuts)):
                part.extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.asarray(p, np.int64)) for p in parts]
    raise PartitionError(f"no Dirichlet(alpha={alpha}) draw in {max_tries} gave each of {num_clients} clients "
                         f"{min_size} examples; raise alpha or use fewer clients")


def client_batches(n: int, epochs: int, batch_size: int, seed: int, client: int, server_round: int) -> list:
    """Index arrays into a client's `n` examples: `epochs` shuffles (seeded by seed, client and round),
    each cut into batches (the last may be short)."""
    if n < 1 or epochs < 1 or batch_size < 1:
        raise ValueError(f"need examples, epochs and batch size >= 1, got {n}, {epochs}, {batch_size}")
    rng = np.random.default_rng([int(seed), int(client), int(server_round)])
    out = []
    for _ in range(epochs):
        order = rng.permutation(n)
        out.extend(order[i:i + batch_size] for i in range(0, n, batch_size))
    return out


def label_histogram(labels, parts, num_classes: int) -> np.ndarray:
    """[clients, classes] example counts: how non-IID a partition is."""
    labels = np.asarray(labels)
    return np.stack([np.bincount(labels[p], minlength=num_classes) for p in parts])
