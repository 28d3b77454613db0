"""Recomputing a block's activations in the backward pass instead of keeping them (memory-lean
training): `y = recompute(block, x, training=True)` calls the block and marks what it adds, and
`gradients` then recomputes those values where the backward pass needs them (core/remat.py).
The file stays builtin operators only; the interpreter frees the forward values after their last
forward use, so at most one recomputed block's activations are alive at a time."""
from __future__ import annotations

from ...core.trace import builder_of


def recompute(layer, x, *args, **kwargs):
    """layer(x, *args, **kwargs), with the nodes it adds recomputed by the backward pass."""
    fb = builder_of(x)
    start = len(fb.fn.nodes)
    y = layer(x, *args, **kwargs)
    fb.recompute_regions.append(fb.fn.nodes[start:])
    return y
