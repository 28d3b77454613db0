"""What a fusion pattern sees of a function: its specialised nodes, who makes and who uses each
tensor, and the checks that make a fused step safe to put in place of the nodes it stands for."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Fused:
    """A fused step: `kernel(*inputs) -> outputs` (a tuple when there are several) stands for the
    nodes `nodes` (indices in the specialised node list). `name` says which pattern made it.
    `inplace`: inputs whose buffer `kernel(*inputs, out=buffer)` may write its one output into."""
    name: str
    kernel: object
    nodes: list
    inputs: list
    outputs: list
    inplace: tuple = ()

    @property
    def op(self):  # as a node's, for error messages and tools that list a plan's steps
        return f"fused {self.name}"

    where = ""


class Graph:
    """The specialised nodes of one function and the maps a pattern needs."""

    def __init__(self, nodes, fn, infos, program=None):
        self.nodes, self.fn, self.infos, self.program = nodes, fn, infos, program  # (the program: branches)
        self.producer, self.consumers = {}, {}
        for k, n in enumerate(nodes):
            for o in n.node.outputs:
                self.producer[o] = k
            for i in n.node.inputs:
                if i >= 0:
                    self.consumers.setdefault(i, []).append(k)
        self.function_outputs = set(fn.outputs)
        self.taken: set = set()  # nodes already standing in a fused step (fusion.apply keeps it)

    def op(self, k):
        return self.nodes[k].node.op if k is not None and 0 <= k < len(self.nodes) else None

    def node(self, k):
        return self.nodes[k].node

    def made_by(self, tensor, op=None):
        """The index of the node that makes `tensor` (of op `op`, when given), or None."""
        k = self.producer.get(tensor)
        if k is None or (op is not None and self.nodes[k].node.op != op):
            return None
        return k

    def constant(self, tensor):
        return self.infos[tensor].data if tensor >= 0 else None

    def shape(self, tensor):
        return self.infos[tensor].shape

    def dtype(self, tensor):
        return self.infos[tensor].dtype

    def only_used_by(self, tensor, k) -> bool:
        """Whether node k is the only user of `tensor` (and it is not a function output)."""
        return tensor not in self.function_outputs and self.consumers.get(tensor, []) == [k] or (
            tensor not in self.function_outputs and set(self.consumers.get(tensor, [])) == {k})

    def fusable(self, nodes, outputs) -> bool:
        """Whether the nodes can become one step placed at the last of them: every value they make
        other than `outputs` is used only among them, and every user of `outputs` outside them
        comes after the last of them."""
        members, last = set(nodes), max(nodes)
        for k in nodes:
            for o in self.nodes[k].node.outputs:
                users = set(self.consumers.get(o, []))
                if o in outputs:
                    if any(u <= last for u in users - members):
                        return False
                elif users - members or o in self.function_outputs:
                    return False
        return True
