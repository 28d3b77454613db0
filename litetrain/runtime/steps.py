"""Steps: what a plan runs, one per node or per fused subgraph, as tuples the executor unpacks
(callable, kind, input slots, output slots, slots to free after it, node) — an INPLACE step also
carries the position of the input whose buffer it may write into."""
from __future__ import annotations

import functools
from dataclasses import dataclass

from ..core.registry import get_op

# step kinds: what the executor does with a step's callable
PURE, STATEFUL, READ, ASSIGN, INPLACE, FUSED = range(6)


@dataclass
class Node:
    """A node of the specialised function: the IR node, and its inputs' and outputs' TensorInfos
    with the shapes known for this call (constants carry their data)."""
    node: object
    inputs: list
    outputs: list


def step_of_node(n: Node, infos) -> tuple:
    """The step of one node: its kernel bound to its attributes."""
    node = n.node
    opdef = get_op(node.op)
    kernel = functools.partial(opdef.kernel, **node.attrs) if node.attrs else opdef.kernel
    ins, outs = tuple(node.inputs), tuple(node.outputs)
    if node.op == "read_variable" and ins and infos[ins[0]].data is not None:
        return (infos[ins[0]].data, READ, (), outs, (), node)
    if node.op == "assign_variable" and ins and infos[ins[0]].data is not None:
        return (infos[ins[0]].data, ASSIGN, ins[1:], outs, (), node)
    return (kernel, STATEFUL if opdef.stateful else PURE, ins, outs, (), node)
