"""An IF whose branches only hand inputs on, as one step that picks them.

The non-finite guard of a training step (frontend/optim.py) ends in an IF whose then-branch gives
back the new values and whose else-branch the old ones: each branch output is a RESHAPE of one of
its inputs to that input's own shape (how a subgraph gives back an input: core/subgraphs.py
`identity`). Run as an IF, that is a call of a whole function per step; here it is a step that
checks the condition as the IF kernel does and gives views of the chosen inputs, the values the
branch's RESHAPEs would give. Any other node in a branch, or a reshape to another shape, and the
IF runs as it is.
"""
from __future__ import annotations

import numpy as np

from ...ops.control import _truth
from .graph import Fused


def _forwarded(fn):
    """For each output of branch `fn`, the position of the input it hands on; None when the branch
    does anything else."""
    inputs = {t: pos for pos, t in enumerate(fn.inputs)}
    shape_of, source = {}, {}
    for n in fn.nodes:
        if n.op == "shape" and len(n.inputs) == 1 and n.inputs[0] in inputs:
            shape_of[n.outputs[0]] = n.inputs[0]
        elif n.op == "reshape" and len(n.inputs) == 2 and n.inputs[0] in inputs:
            x, s = n.inputs
            static = fn.tensors[x].shape
            data = fn.tensors[s].data if s >= 0 else None
            same = shape_of.get(s) == x or (data is not None and None not in static
                                            and np.array_equal(np.asarray(data).ravel(), static))
            if not same:
                return None
            source[n.outputs[0]] = inputs[x]
        else:
            return None
    if any(o not in source for o in fn.outputs):
        return None
    return [source[o] for o in fn.outputs]


def match(graph, k):
    node = graph.node(k)
    if node.op != "if" or graph.program is None:
        return None
    functions = graph.program.functions
    picks = []
    for key in ("then_subgraph_index", "else_subgraph_index"):
        index = node.attrs.get(key, -1)
        if not 0 <= index < len(functions):
            return None
        fn = functions[index]
        args = node.inputs[1:]
        if len(fn.inputs) != len(args) or len(fn.outputs) != len(node.outputs) or any(
                graph.dtype(a) != fn.tensors[t].dtype for a, t in zip(args, fn.inputs)):
            return None
        chosen = _forwarded(fn)
        if chosen is None:
            return None
        picks.append(tuple(chosen))
    return Fused("if handing inputs on", _Pick(*picks), [k], list(node.inputs), list(node.outputs))


class _Pick:
    """(pred, *args) -> views of the args the branch `pred` chooses hands on."""

    def __init__(self, then, otherwise):
        self.then, self.otherwise = then, otherwise

    def __call__(self, pred, *args):
        chosen = self.then if _truth(pred, "the if condition") else self.otherwise
        return tuple(args[i].view() for i in chosen)
