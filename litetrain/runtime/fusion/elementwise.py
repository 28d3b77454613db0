"""Chains of elementwise arithmetic as one step: an optimizer's update of a variable, a normalisation,
a gate of a recurrent cell.

A chain is grown backwards from a node whose result something other than elementwise nodes needs
(a variable assignment, a reduction, the signature's output): each producer
of an input that is elementwise arithmetic and whose value is used only inside the chain (or, after
the chain, by nodes that come later) joins it. The fused kernel runs the same NumPy ufuncs in the
same order on the same operands, so its values are the op-by-op values bit for bit; it writes an
intermediate into the buffer of one that is no longer needed, and allocates only the values it
hands out.
"""
from __future__ import annotations

import numpy as np

from ...core.ir import FLOAT_DTYPES
from .graph import Fused

UNARY = {"neg": np.negative, "exp": np.exp, "log": np.log, "sqrt": np.sqrt, "square": np.square,
         "tanh": np.tanh, "abs": np.abs, "sin": np.sin, "cos": np.cos}
BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
          "maximum": np.maximum, "minimum": np.minimum}
MAX_CHAIN = 64


def _elementwise(graph, k) -> bool:
    if k is None:
        return False
    node = graph.node(k)
    if node.op not in UNARY and node.op not in BINARY:
        return False
    if node.attrs.get("fused_activation_function", "NONE") != "NONE" or len(node.outputs) != 1:
        return False
    out = node.outputs[0]
    return graph.dtype(out) in FLOAT_DTYPES and all(i >= 0 and graph.dtype(i) == graph.dtype(out)
                                                    for i in node.inputs)


def match(graph, k):
    if not _elementwise(graph, k):
        return None
    out = graph.node(k).outputs[0]
    users = graph.consumers.get(out, [])
    if out not in graph.function_outputs and users and all(_elementwise(graph, c) for c in users):
        return None  # only later elementwise nodes take this value: a chain grows from there
    members = _grow(graph, k)
    if len(members) < 2:
        return None
    outputs = [graph.node(m).outputs[0] for m in members
               if m == k or graph.node(m).outputs[0] in graph.function_outputs
               or set(graph.consumers.get(graph.node(m).outputs[0], [])) - set(members)]
    if not graph.fusable(members, outputs):
        return None
    return Fused(f"elementwise chain of {len(members)}", Chain(graph, members, outputs), members,
                 Chain.external_inputs(graph, members), outputs)


def _grow(graph, root):
    """The chain's nodes (indices, in order): root and the elementwise producers it can absorb."""
    members, todo = {root}, [root]
    while todo and len(members) < MAX_CHAIN:
        for i in graph.node(todo.pop()).inputs:
            p = graph.made_by(i)
            if p is None or p in members or p in graph.taken or not _elementwise(graph, p):
                continue  # (a producer an earlier step took stays there: its value is an input)
            users = set(graph.consumers.get(i, []))
            outside = users - members
            if outside and (i in graph.function_outputs or min(outside) <= root):
                continue  # its value is needed elsewhere before the chain would have made it
            members.add(p)
            todo.append(p)
    # a member whose value another member needs must come before it: keep producers closed over
    return sorted(members)


class Chain:
    """The fused kernel: the chain's ufuncs in node order over registers (a register per value)."""

    @staticmethod
    def external_inputs(graph, members):
        made = {graph.node(m).outputs[0] for m in members}
        seen = []
        for m in members:
            for i in graph.node(m).inputs:
                if i not in made and i not in seen:
                    seen.append(i)
        return seen

    def __init__(self, graph, members, outputs):
        inputs = self.external_inputs(graph, members)
        register = {t: n for n, t in enumerate(inputs)}
        last_use = {}
        for pos, m in enumerate(members):
            for i in graph.node(m).inputs:
                last_use[i] = pos
        self.program = []   # (ufunc, argument registers, result register, register to write into or None)
        free = []           # registers of intermediates no longer needed: (register, shape)
        kept = set(outputs)
        n_regs = len(inputs)
        for pos, m in enumerate(members):
            node = graph.node(m)
            ufunc = UNARY.get(node.op) or BINARY[node.op]
            args = [register[i] for i in node.inputs]
            out = node.outputs[0]
            shape = tuple(graph.shape(out))
            into = next((r for r, s in free if s == shape and None not in shape), None)
            if into is not None:
                free.remove((into, shape))
            register[out] = n_regs
            self.program.append((ufunc, args, n_regs, into))
            n_regs += 1
            for i in set(node.inputs):  # intermediates that die here lend their buffer to later values
                if i in register and register[i] >= len(inputs) and last_use.get(i) == pos and i not in kept:
                    free.append((register[i], tuple(graph.shape(i))))
        self.n_regs = n_regs
        self.results = [register[o] for o in outputs]

    def __call__(self, *inputs):
        regs = list(inputs) + [None] * (self.n_regs - len(inputs))
        for ufunc, args, result, into in self.program:
            operands = [regs[a] for a in args]
            value = ufunc(*operands) if into is None else ufunc(*operands, out=regs[into])
            regs[result] = value if value.__class__ is np.ndarray else np.asarray(value)  # a 0-d result too
        if len(self.results) == 1:
            return regs[self.results[0]]
        return tuple(regs[r] for r in self.results)
