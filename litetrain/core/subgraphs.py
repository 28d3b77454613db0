"""Functions inside functions: recording a loop body or a branch, and copying a function's nodes.

A loop body, a loop condition and a branch are Functions of the Program, recorded by a
`BodyBuilder`: a FunctionBuilder nested in the one that records the enclosing function, sharing
its ProgramBuilder. A value of an enclosing function used inside (a tensor, or a variable, which
is read outside) is *captured*: it becomes an extra input that the WHILE/IF node passes in. So the
file's subgraphs never reach into each other, and gradients reach the variables through the
node's inputs.

`copy_into` appends a function's nodes to another traced function (a gradient recomputes a loop
body inside its own function; an importer replays a file's function); loops and branches inside
are copied with their functions, so that differentiating a copy never changes the original.
"""
from __future__ import annotations

import numpy as np

from .ir import Function, Node
from .passes import eliminate_dead_code
from .trace import FunctionBuilder, Tensor, TraceError


class BodyBuilder(FunctionBuilder):
    """Records a loop body or condition, or a branch: a function nested in `parent`'s."""

    def __init__(self, parent: FunctionBuilder, name: str, fn: Function | None = None):
        super().__init__(parent.pb, name)
        if fn is not None:  # append to a function recorded (or read from a file) before
            self.fn = fn
            self._counter = len(fn.tensors)
        self.parent = parent
        self.depth = parent.depth + 1
        self.captures: dict[int, Tensor] = {}  # parent tensor index -> the input standing for it here
        self.captured: list[Tensor] = []       # the parent's tensors, in capture order

    def to_tensor(self, value, like=None):
        if isinstance(value, Tensor) and value.fb is not self:
            return self.capture(value)
        if hasattr(value, "_litetrain_state"):
            return self.read(value)
        return super().to_tensor(value, like)

    def capture(self, t: Tensor) -> Tensor:
        """The input of this function that stands for `t`, a tensor of an enclosing function."""
        if t.fb is not self.parent:
            t = self.parent.to_tensor(t)  # from further out: the parent captures it first
        if t.constant is not None:
            return self.const(t.constant, t.dtype)  # constants are copied, not passed in
        if t.index not in self.captures:
            self.captures[t.index] = self.input(f"capture_{len(self.captured)}", t.dtype, t.shape)
            self.captured.append(t)
        return self.captures[t.index]

    def read(self, state) -> Tensor:
        return self.capture(self.parent.read(state))

    def assign(self, state, value) -> None:
        raise TraceError(f"cannot assign variable {getattr(state, 'path', state)!r} inside a loop body or a "
                         "branch: return the new value and assign it after the loop or the cond")


def unfolded(fb: FunctionBuilder, op, inputs, attrs, dtype, shape, where="") -> Tensor:
    """A node added as is: never folded into a constant (a tensor list of zeros would be one)."""
    out = fb.fn.add_tensor(fb._name(op), dtype, tuple(shape))
    fb.fn.nodes.append(Node(op, [t.index for t in inputs], [out], dict(attrs), where))
    return Tensor(fb, out)


def identity(fb: FunctionBuilder, t: Tensor) -> Tensor:
    """A copy of `t` in a tensor of its own (RESHAPE to its own shape, never folded)."""
    shape = fb.emit("shape", [t], {"out_type": "int32"}) if None in t.shape else fb.const(np.asarray(t.shape, np.int32))
    return unfolded(fb, "reshape", [t, shape], {}, t.dtype, t.shape)


def own_outputs(fb: FunctionBuilder, tensors, passthrough=()) -> list[int]:
    """Indices for a function's outputs: each its own tensor (not a constant, not repeated, not
    an input unless it is the input at the same position: a loop invariant)."""
    out, seen = [], set()
    inputs = set(fb.fn.inputs)
    for pos, t in enumerate(tensors):
        keep = pos < len(passthrough) and t.index == passthrough[pos]
        if not keep and (t.constant is not None or t.index in seen or t.index in inputs):
            t = identity(fb, t)
        seen.add(t.index)
        out.append(t.index)
    return out


def unique_name(pb, name: str) -> str:
    """`name`, or `name_1`, `name_2`, ... : a function name the program does not have yet."""
    taken = {f.name for f in pb.program.functions}
    stem, n = name, 0
    while name in taken:
        n += 1
        name = f"{stem}_{n}"
    return name


def node_of(fb: FunctionBuilder, outputs) -> Node:
    """The node of `fb`'s function whose first output is `outputs[0]`."""
    first = outputs[0].index
    for node in fb.fn.nodes:
        if node.outputs and node.outputs[0] == first:
            return node
    raise TraceError("internal error: the node being differentiated is not in its function")


def before(fb: FunctionBuilder, node: Node, make):
    """Run `make()` (which emits nodes into fb) and move what it emitted to just before `node`."""
    start = len(fb.fn.nodes)
    result = make()
    new = fb.fn.nodes[start:]
    del fb.fn.nodes[start:]
    at = next(i for i, n in enumerate(fb.fn.nodes) if n is node)
    fb.fn.nodes[at:at] = new
    return result


def prune(fn: Function) -> None:
    """Drop the nodes whose outputs nothing uses (a gradient body keeps what its outputs need)."""
    eliminate_dead_code(fn)


def copy_into(dst: FunctionBuilder, src: Function, env: dict, on_node=None, functions=None) -> dict:
    """Append `src`'s nodes to `dst`, with src tensor index -> dst Tensor for src's inputs in `env`.
    Returns the mapping for every src tensor. `functions`: the functions that src's WHILE/IF nodes
    name by index (default: dst's program's; another program's when src was read from a file).
    `on_node(k, node, inputs)`, when given, may emit a node itself and return its outputs (a tuple
    of Tensors), or None to have it copied as is."""
    functions = dst.pb.program.functions if functions is None else functions
    mapped = dict(env)

    def m(i):
        if i < 0:
            return -1
        if i not in mapped:
            info = src.tensors[i]
            if info.data is None:
                raise TraceError(f"{src.name} uses tensor {info.name!r} before computing it")
            mapped[i] = dst.const(info.data, info.dtype)
        return mapped[i].index

    for k, node in enumerate(src.nodes):
        if node.op == "call_once":  # the function copied into runs its own initialisation
            continue
        ins = [m(i) for i in node.inputs]
        made = on_node(k, node, ins) if on_node is not None else None
        if made is not None:
            for o, t in zip(node.outputs, made):
                mapped[o] = t
            continue
        for o, t in zip(node.outputs, copy_node(dst, node, [Tensor(dst, i) if i >= 0 else None for i in ins],
                                                [src.tensors[o] for o in node.outputs], functions)):
            mapped[o] = t
    for i in list(src.inputs) + list(src.outputs):
        m(i)
    return mapped


def copy_node(dst: FunctionBuilder, node: Node, inputs, output_infos, functions) -> tuple:
    """Append a copy of `node` to dst with the given input Tensors (None: absent) and outputs named
    and typed as `output_infos` (names carry meaning: tensor_list's capacity checks); the functions
    a WHILE or an IF runs (`functions[index]`) are copied too. Returns the output Tensors."""
    outs = [dst.fn.add_tensor(info.name, info.dtype, info.shape) for info in output_infos]
    attrs = dict(node.attrs)
    for key, value in node.attrs.items():
        if key.endswith("subgraph_index"):
            if not 0 <= value < len(functions):
                raise TraceError(f"{node.op} names function {value}; there are {len(functions)}")
            attrs[key] = _clone(dst, functions[value], functions)
    dst.fn.nodes.append(Node(node.op, [-1 if t is None else t.index for t in inputs], outs, attrs, node.where))
    return tuple(Tensor(dst, o) for o in outs)


def _clone(parent: FunctionBuilder, src: Function, functions) -> int:
    """A copy of function `src` added to parent's program; returns its index."""
    pb = parent.pb
    clone = BodyBuilder(parent, unique_name(pb, f"{src.name}_copy"))
    env = {}
    for i in src.inputs:  # inputs keep their names (control.py finds the lists a gradient added by name)
        env[i] = Tensor(clone, clone.fn.add_tensor(src.tensors[i].name, src.tensors[i].dtype, src.tensors[i].shape))
        clone.fn.inputs.append(env[i].index)
    mapped = copy_into(clone, src, env, functions=functions)
    clone.fn.outputs = own_outputs(clone, [mapped[i] for i in src.outputs],
                                   passthrough=[env[i].index for i in src.inputs])
    return pb.add_function(clone)
