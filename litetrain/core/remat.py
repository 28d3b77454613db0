"""Rematerialisation: the backward pass recomputes a block's activations instead of keeping them.

A region is the nodes a block added while it was traced (`FunctionBuilder.recompute_regions`,
recorded by `frontend.nn.recompute`). After `gradients` has added the backward nodes, every
backward use of a value the region computed is pointed at a copy of the region's nodes, placed just
before the first such use. The forward values then die after their last forward use, and only the
block's inputs are kept for the backward pass: memory of one block's activations at a time, for
the price of computing the forward pass of those blocks twice. The copy starts from an identity
RESHAPE of each input activation so that common-subexpression elimination never merges it back
into the original. Nodes with effects (variable reads and assignments, random draws) are not
copied: their values are kept, so a copy sees the same weights and the same dropout masks.
"""
from __future__ import annotations

import numpy as np

from .ir import Node
from .registry import get_op
from .trace import FunctionBuilder


def rematerialize(fb: FunctionBuilder, backward_from: int) -> None:
    """Point the backward nodes (fb's nodes from `backward_from` on) at recomputed copies of every
    recorded region."""
    for region in fb.recompute_regions:
        _recompute(fb, region, backward_from)


def _recompute(fb, region, backward_from):
    fn = fb.fn
    forward = {id(n) for n in fn.nodes[:backward_from]}
    copied = [n for n in region if not get_op(n.op).stateful and id(n) in forward]
    made = {o for n in copied for o in n.outputs}
    users = [n for n in fn.nodes[backward_from:] if any(i in made for i in n.inputs)]
    if not users:
        return
    start = len(fn.nodes)
    mapping, kept = {}, {}
    for node in copied:
        ins = [mapping[i] if i in made else _kept_input(fb, i, kept) for i in node.inputs]
        outs = []
        for o in node.outputs:
            info = fn.tensors[o]
            mapping[o] = fn.add_tensor(f"{info.name}/recomputed", info.dtype, info.shape)
            outs.append(mapping[o])
        fn.nodes.append(Node(node.op, ins, outs, dict(node.attrs), node.where))
    clones = fn.nodes[start:]
    del fn.nodes[start:]
    at = next(k for k, n in enumerate(fn.nodes) if n is users[0])
    fn.nodes[at:at] = clones
    for node in users:
        node.inputs = [mapping.get(i, i) for i in node.inputs]


def _kept_input(fb, i, kept):
    """The copy's view of input i from outside the region: an identity RESHAPE of an activation (one
    per input), the input itself for constants and variable reads."""
    if i < 0:
        return i
    if i in kept:
        return kept[i]
    info = fb.fn.tensors[i]
    producer = next((n for n in fb.fn.nodes if i in n.outputs), None)
    if info.data is not None or (producer is not None and producer.op in ("read_variable", "var_handle")):
        return i
    if None in info.shape:
        shape = fb.fn.add_tensor(f"{info.name}/shape", "int32", (len(info.shape),))
        fb.fn.nodes.append(Node("shape", [i], [shape], {"out_type": "int32"}))
    else:
        shape = fb.const(np.asarray(info.shape, np.int32)).index
    kept[i] = fb.fn.add_tensor(f"{info.name}/kept", info.dtype, info.shape)
    fb.fn.nodes.append(Node("reshape", [i, shape], [kept[i]], {}))
    return kept[i]
