"""Loops and branches while tracing: while_loop, cond, tensor lists, and their gradients.

A loop body, a loop condition and a branch are Functions of the Program, recorded by a
`BodyBuilder`: a FunctionBuilder nested in the one that records the enclosing function, sharing
its ProgramBuilder. A value of an enclosing function used inside (a tensor, or a variable, which
is read outside) is *captured*: it becomes an extra input that the WHILE/IF node passes in, a
loop invariant. So the file's subgraphs never reach into each other, and gradients reach the
variables through the node's inputs.

Gradients are generated ahead of time, as builtin ops:
- `if`: an IF of two gradient branches; each recomputes its branch and applies the chain rule.
- `while` (backpropagation through time): the forward loop is given tensor lists (stacked
  tensors [capacity, ...] written with DYNAMIC_UPDATE_SLICE at the iteration counter) that keep
  each iteration's loop values that the backward pass needs; a backward WHILE runs the counter
  down and reads them back with GATHER, its body being the vector-Jacobian product of the forward
  body. Values the backward body needs are recomputed from the kept ones inside the iteration;
  loop variables it does not need (an output sequence, say) are not kept. Gradients of loop
  invariants (weights, an input sequence) are summed over the iterations.
The capacity (`maximum_iterations`, or `max_sequence_length` given to lt.convert) is fixed at
conversion. A run that needs more iterations fails with an error naming the capacity, before any
variable is assigned: TensorFlow Lite has no assert op, so the check is a GATHER from a table of
`capacity` entries at the counter, which litetrain's interpreter and LiteRT both refuse when out
of range.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from . import ops
from .ir import FLOAT_DTYPES, Node, format_shape
from .trace import FunctionBuilder, Tensor, TraceError, _user_location, builder_of


class BodyBuilder(FunctionBuilder):
    """Records a loop body or condition, or a branch: a function nested in `parent`'s."""

    def __init__(self, parent: FunctionBuilder, name: str):
        super().__init__(parent.pb, name)
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


@dataclasses.dataclass
class Loop:
    """What while_loop recorded about one loop (pb.control[body index]); the gradient needs it."""
    body: BodyBuilder
    cond: BodyBuilder
    num_core: int          # loop variables as traced: the iteration counter, the user's, the captures
    capacity: int | None   # maximum_iterations
    where: str
    relaxed: frozenset     # loop variables whose shape changes between iterations
    checked: bool = False  # the body refuses to run past the capacity
    lists: dict = dataclasses.field(default_factory=dict)  # loop variable -> position of its tensor list


# -- tensor lists ----------------------------------------------------------------------------------
def _unfolded(fb, op, inputs, attrs, dtype, shape, where=""):
    """A node added as is: never folded into a constant (a tensor list of zeros would be one)."""
    out = fb.fn.add_tensor(fb._name(op), dtype, tuple(shape))
    fb.fn.nodes.append(Node(op, [t.index for t in inputs], [out], dict(attrs), where))
    return Tensor(fb, out)


def list_reserve(element: Tensor, capacity: int) -> Tensor:
    """A tensor list: `capacity` slots of zeros shaped like `element` at run time ([capacity, ...])."""
    fb = builder_of(element)
    tail = ops.shape_of(element) if None in element.shape else None
    return _reserve(fb, tail, element.dtype, tuple(element.shape), capacity)


def _reserve(fb, tail, dtype, shape, capacity):
    """FILL of zeros [capacity, *shape]; `tail` is the run-time shape when `shape` has unknown dims."""
    if tail is not None:
        dims = ops.concat([fb.const(np.int32([capacity])), tail], 0)
    else:
        dims = fb.const(np.asarray((capacity,) + shape, np.int32))
    return _unfolded(fb, "fill", [dims, fb.const(0, dtype)], {}, dtype, (capacity,) + shape)


def _start(index: Tensor, rank: int) -> Tensor:
    fb = builder_of(index)
    index = ops.reshape(ops.cast(index, "int32"), [1])
    return ops.concat([index, fb.const(np.zeros(rank - 1, np.int32))], 0) if rank > 1 else index


def list_write(lst: Tensor, index, value: Tensor) -> Tensor:
    """The list with slot `index` set to `value` (DYNAMIC_UPDATE_SLICE)."""
    fb = builder_of(lst, index, value)
    index, value = fb.to_tensor(index), fb.to_tensor(value)
    return ops.dynamic_update_slice(lst, ops.expand_dims(value, 0), _start(index, lst.ndim))


def list_read(lst: Tensor, index) -> Tensor:
    """Slot `index` of the list (GATHER_ND: its gradient is a SCATTER_ND into that one slot)."""
    fb = builder_of(lst, index)
    return ops.gather_nd(lst, ops.reshape(ops.cast(fb.to_tensor(index), "int32"), [1]))


def list_from_tensor(x: Tensor, capacity: int, length=None, what="the sequence") -> Tensor:
    """A list of `capacity` slots holding x[0], x[1], ... (x's first dim may be unknown); a call
    with a longer x fails with an error naming the capacity. `length`: x's first dim, already
    checked with check_at_most (otherwise it is taken and checked here)."""
    fb = builder_of(x)
    n = length if length is not None else check_at_most(
        ops.gather(ops.shape_of(x), fb.const(np.int32(0))), capacity,
        f"{what} is longer than the capacity {capacity} set at conversion (max_sequence_length / maximum_iterations)")
    tail = None
    if None in x.shape[1:]:
        tail = ops.slice_(ops.shape_of(x), [1], [x.ndim - 1])
    lst = _reserve(fb, tail, x.dtype, tuple(x.shape[1:]), capacity)
    # the start is n * 0: the write depends on the check, so it cannot run before it
    return ops.dynamic_update_slice(lst, x, _start(ops.mul(n, 0), x.ndim))


def list_stack(lst: Tensor, length) -> Tensor:
    """The first `length` slots of the list as one tensor [length, ...] (GATHER_ND of a RANGE:
    its gradient, a SCATTER_ND, allows unknown dims)."""
    fb = builder_of(lst, length)
    steps = ops.arange(fb.const(np.int32(0)), fb.to_tensor(length), fb.const(np.int32(1)))
    return ops.gather_nd(lst, ops.expand_dims(steps, -1))


def check_at_most(n, limit: int, message: str) -> Tensor:
    """`n` (an int32 scalar), after a run-time check that 0 <= n <= limit; a call where it is not
    fails with `message`. (GATHER from a table of limit + 1 zeros at n: see the module doc.)"""
    fb = builder_of(n)
    n = fb.to_tensor(n)
    if n.constant is not None:
        value = int(np.asarray(n.constant).reshape(()))
        if not 0 <= value <= limit:
            raise TraceError(f"{message} (it is {value})")
        return n
    zero = fb.emit("gather", [fb.const(np.zeros(limit + 1, np.int32)), ops.cast(n, "int32")], {"axis": 0})
    zero.info.name = f"capacity check: {message}"  # kept in the file, where `where` is not
    return ops.add(n, zero)


# -- while_loop ------------------------------------------------------------------------------------
def _join(a, b, k):
    (da, sa), (db, sb) = a, b
    if da != db:
        raise TraceError(f"loop variable {k} is {da} before the body and {db} after it")
    if len(sa) != len(sb):
        raise TraceError(f"loop variable {k} changes rank in the body: {format_shape(sa)} -> {format_shape(sb)}")
    return da, tuple(x if x == y else None for x, y in zip(sa, sb))


def _identity(fb, t: Tensor) -> Tensor:
    """A copy of `t` in a tensor of its own (RESHAPE to its own shape, never folded)."""
    shape = ops.shape_of(t) if None in t.shape else fb.const(np.asarray(t.shape, np.int32))
    return _unfolded(fb, "reshape", [t, shape], {}, t.dtype, t.shape)


def _own_outputs(fb, tensors, passthrough=()):
    """Indices for a function's outputs: each its own tensor (not a constant, not repeated, not
    an input unless it is the input at the same position: a loop invariant)."""
    out, seen = [], set()
    inputs = set(fb.fn.inputs)
    for pos, t in enumerate(tensors):
        keep = pos < len(passthrough) and t.index == passthrough[pos]
        if not keep and (t.constant is not None or t.index in seen or t.index in inputs):
            t = _identity(fb, t)
        seen.add(t.index)
        out.append(t.index)
    return out


def _trace_body(fb, name, body_fn, specs):
    body = BodyBuilder(fb, _unique_name(fb.pb, f"{fb.fn.name}/{name}_body"))
    counter = body.input("iteration", "int32", ())
    args = [body.input(f"var_{k}", d, s) for k, (d, s) in enumerate(specs)]
    result = body_fn(*args)
    result = list(result) if isinstance(result, (list, tuple)) else [result]
    if len(result) != len(args):
        raise TraceError(f"the loop body returned {len(result)} values for {len(args)} loop variables")
    outs = [body.to_tensor(r, like=a) for r, a in zip(result, args)]
    return body, counter, args, outs


def while_loop(cond_fn, body_fn, loop_vars, maximum_iterations=None, name="while"):
    """Repeat `loop_vars = body_fn(*loop_vars)` while `cond_fn(*loop_vars)` is true (a WHILE node).

    The trip count may be known only at run time. `maximum_iterations` bounds it: a run that needs
    more iterations fails (it is the capacity of the tensor lists a gradient through the loop
    keeps; without it, lt.convert's max_sequence_length is used when the loop is differentiated).
    Tensors and variables of the enclosing function may be used inside. Returns the final loop
    variables (a list, or one tensor when `loop_vars` is one tensor)."""
    single = not isinstance(loop_vars, (list, tuple))
    loop_vars = [loop_vars] if single else list(loop_vars)
    if not loop_vars:
        raise TraceError("while_loop needs at least one loop variable")
    fb = builder_of(loop_vars)
    where = _user_location()
    init = [fb.to_tensor(v) for v in loop_vars]
    capacity = None if maximum_iterations is None else int(maximum_iterations)
    if capacity is not None and capacity < 0:
        raise TraceError(f"maximum_iterations must be >= 0, got {capacity}")
    specs = [(t.dtype, tuple(t.shape)) for t in init]
    for _ in range(3):  # shapes that change in the body are relaxed to unknown dims, then traced again
        body, counter, args, outs = _trace_body(fb, name, body_fn, specs)
        joined = [_join(s, (o.dtype, tuple(o.shape)), k) for k, (s, o) in enumerate(zip(specs, outs))]
        if joined == specs:
            break
        specs = joined
    relaxed = frozenset(k + 1 for k, (t, s) in enumerate(zip(init, specs)) if tuple(t.shape) != s[1])
    cond = BodyBuilder(fb, _unique_name(fb.pb, f"{fb.fn.name}/{name}_cond"))
    c_counter = cond.input("iteration", "int32", ())
    c_args = [cond.input(f"var_{k}", d, s) for k, (d, s) in enumerate(specs)]
    c = cond.to_tensor(cond_fn(*c_args))
    if c.dtype != "bool" or tuple(c.shape) not in ((), (1,)):
        raise TraceError(f"the loop condition must give one bool, got {c.dtype}{format_shape(c.shape)}")
    # one list of captures for both functions and the node
    caps = list(body.captured) + [t for t in cond.captured if t.index not in body.captures]
    for t in caps:
        body.capture(t)
        cond.capture(t)
    body_caps = [body.captures[t.index].index for t in caps]
    body.fn.inputs = [counter.index] + [a.index for a in args] + body_caps
    cond.fn.inputs = [c_counter.index] + [a.index for a in c_args] + [cond.captures[t.index].index for t in caps]
    step = ops.add(counter, 1)
    checked = capacity is not None
    if checked:
        step = check_at_most(step, capacity, f"the while_loop traced at {where or '?'} ran more than "
                                             f"maximum_iterations={capacity} iterations")
    body.fn.outputs = _own_outputs(body, [step] + outs + [Tensor(body, i) for i in body_caps],
                                   passthrough=body.fn.inputs)
    cond.fn.outputs = _own_outputs(cond, [c])
    pb = fb.pb
    body_index, cond_index = pb.add_function(body), pb.add_function(cond)
    outputs = fb.emit("while", [fb.const(np.int32(0))] + init + caps,
                      {"cond_subgraph_index": cond_index, "body_subgraph_index": body_index}, where=where)
    for t, (_, shape) in zip(outputs[1:], specs):
        t.info.shape = shape
    pb.control[body_index] = Loop(body, cond, len(body.fn.inputs), capacity, where, relaxed, checked)
    result = list(outputs[1:1 + len(init)])
    return result[0] if single else result


# -- cond ------------------------------------------------------------------------------------------
def cond(pred, true_fn, false_fn, operands=(), name="cond"):
    """`true_fn(*operands)` if `pred` else `false_fn(*operands)`, as an IF node: only the branch
    taken runs. Both must return the same number of tensors with the same dtypes. Tensors and
    variables of the enclosing function may be used inside. Returns what the branch returns."""
    single_operand = not isinstance(operands, (list, tuple))
    operands = [operands] if single_operand else list(operands)
    fb = builder_of(pred, operands)
    where = _user_location()
    pred = fb.to_tensor(pred)
    if pred.dtype != "bool" or tuple(pred.shape) not in ((), (1,)):
        raise TraceError(f"the cond predicate must be one bool, got {pred.dtype}{format_shape(pred.shape)}")
    operands = [fb.to_tensor(o) for o in operands]
    traced = []
    for branch_fn, label in ((true_fn, "then"), (false_fn, "else")):
        b = BodyBuilder(fb, _unique_name(fb.pb, f"{fb.fn.name}/{name}_{label}"))
        args = [b.input(f"x{k}", t.dtype, t.shape) for k, t in enumerate(operands)]
        result = branch_fn(*args)
        single = not isinstance(result, (list, tuple))
        outs = [b.to_tensor(r) for r in ([result] if single else result)]
        traced.append((b, args, outs, single))
    (tb, targs, touts, tsingle), (eb, eargs, eouts, esingle) = traced
    if len(touts) != len(eouts) or tsingle != esingle:
        raise TraceError(f"the branches of cond return {len(touts)} and {len(eouts)} values")
    shapes = []
    for k, (a, b) in enumerate(zip(touts, eouts)):
        if a.dtype != b.dtype or len(a.shape) != len(b.shape):
            raise TraceError(f"output {k} of cond is {a.dtype}{format_shape(a.shape)} in the true branch and "
                             f"{b.dtype}{format_shape(b.shape)} in the false branch")
        shapes.append(tuple(x if x == y else None for x, y in zip(a.shape, b.shape)))
    caps = list(tb.captured) + [t for t in eb.captured if t.index not in tb.captures]
    indices = []
    for b, args, outs in ((tb, targs, touts), (eb, eargs, eouts)):
        for t in caps:
            b.capture(t)
        b.fn.inputs = [a.index for a in args] + [b.captures[t.index].index for t in caps]
        b.fn.outputs = _own_outputs(b, outs)
        indices.append(fb.pb.add_function(b))
    result = _if_node(fb, pred, operands + caps, [(a.dtype, s) for a, s in zip(touts, shapes)], indices, where)
    return result[0] if tsingle else result


def _if_node(fb, pred, inputs, specs, branches, where):
    outs = [fb.fn.add_tensor(fb._name("if"), d, s) for d, s in specs]
    fb.fn.nodes.append(Node("if", [pred.index] + [t.index for t in inputs], outs,
                            {"then_subgraph_index": branches[0], "else_subgraph_index": branches[1]}, where))
    return [Tensor(fb, o) for o in outs]


# -- copying functions (a gradient recomputes a body inside its own function) ------------------------
def _copy_into(dst: FunctionBuilder, src, env: dict) -> dict:
    """Append `src`'s nodes to `dst`, with src tensor index -> dst Tensor for src's inputs in `env`.
    Returns the mapping for every src tensor. Loops and branches inside are copied with their
    functions, so that differentiating the copy never changes the original."""
    mapped = dict(env)

    def m(i):
        if i < 0:
            return -1
        if i not in mapped:
            info = src.tensors[i]
            if info.data is None:
                raise TraceError(f"internal error: {src.name} uses tensor {info.name} before computing it")
            mapped[i] = dst.const(info.data, info.dtype)
        return mapped[i].index

    for node in src.nodes:
        ins = [m(i) for i in node.inputs]
        outs = []
        for o in node.outputs:
            info = src.tensors[o]
            mapped[o] = Tensor(dst, dst.fn.add_tensor(dst._name(node.op), info.dtype, info.shape))
            outs.append(mapped[o].index)
        attrs = _copy_subfunctions(dst, node) if any(k.endswith("subgraph_index") for k in node.attrs) else dict(node.attrs)
        dst.fn.nodes.append(Node(node.op, ins, outs, attrs, node.where))
    for i in list(src.inputs) + list(src.outputs):
        m(i)
    return mapped


def _clone(parent, index: int) -> tuple[BodyBuilder, int]:
    pb = parent.pb
    src = pb.program.functions[index]
    clone = BodyBuilder(parent, _unique_name(pb, f"{src.name}_copy"))
    env = {i: clone.input(f"in_{n}", src.tensors[i].dtype, src.tensors[i].shape) for n, i in enumerate(src.inputs)}
    mapped = _copy_into(clone, src, env)
    clone.fn.outputs = _own_outputs(clone, [mapped[i] for i in src.outputs],
                                    passthrough=[env[i].index for i in src.inputs])
    return clone, pb.add_function(clone)


def _copy_subfunctions(dst, node) -> dict:
    attrs = dict(node.attrs)
    pb = dst.pb
    if node.op == "while":
        loop = pb.control.get(attrs["body_subgraph_index"])
        body, attrs["body_subgraph_index"] = _clone(dst, attrs["body_subgraph_index"])
        cond, attrs["cond_subgraph_index"] = _clone(dst, attrs["cond_subgraph_index"])
        if isinstance(loop, Loop):
            pb.control[attrs["body_subgraph_index"]] = dataclasses.replace(loop, body=body, cond=cond,
                                                                           lists=dict(loop.lists))
        return attrs
    for key, value in node.attrs.items():
        if key.endswith("subgraph_index"):
            attrs[key] = _clone(dst, value)[1]
    return attrs


def _node_of(fb, outputs) -> Node:
    first = outputs[0].index
    for node in fb.fn.nodes:
        if node.outputs and node.outputs[0] == first:
            return node
    raise TraceError("internal error: the node being differentiated is not in its function")


def _before(fb, node, make):
    """Run `make()` (which emits nodes into fb) and move what it emitted to just before `node`."""
    start = len(fb.fn.nodes)
    result = make()
    new = fb.fn.nodes[start:]
    del fb.fn.nodes[start:]
    at = next(i for i, n in enumerate(fb.fn.nodes) if n is node)
    fb.fn.nodes[at:at] = new
    return result


def _is_zeros(fb, t: Tensor) -> bool:
    """Whether `t` is zeros (a zeros_like autodiff made for an output without a gradient)."""
    if t.constant is not None:
        return not np.asarray(t.constant).any()
    producer = next((n for n in reversed(fb.fn.nodes) if t.index in n.outputs), None)
    return producer is not None and producer.op == "zeros_like"


def _unique_name(pb, name: str) -> str:
    taken = {f.name for f in pb.program.functions}
    stem, n = name, 0
    while name in taken:
        n += 1
        name = f"{stem}_{n}"
    return name


def _dce(fn):
    from .passes import eliminate_dead_code
    eliminate_dead_code(fn)


# -- the gradient of a while loop -----------------------------------------------------------------
def _keep_in_list(fb, node, loop: Loop, k: int, capacity: int) -> Tensor:
    """The forward loop keeps loop variable k of every iteration in a tensor list; returns the
    list as the forward node's output."""
    if k in loop.lists:
        return Tensor(fb, node.outputs[loop.lists[k]])
    body, B = loop.body, loop.body.fn
    info = B.tensors[B.inputs[k]]
    shape = (capacity,) + tuple(info.shape)
    lst_in = body.input(f"list_{k}", info.dtype, shape)
    written = list_write(lst_in, Tensor(body, B.inputs[0]), Tensor(body, B.inputs[k]))
    B.outputs.append(written.index)
    loop.cond.input(f"list_{k}", info.dtype, shape)
    if not loop.checked:
        step = check_at_most(Tensor(body, B.outputs[0]), capacity,
                             f"the while_loop traced at {loop.where or '?'} ran more iterations than the "
                             f"capacity {capacity} of its tensor lists (maximum_iterations / max_sequence_length)")
        B.outputs[0] = step.index
        loop.checked = True
    init = Tensor(fb, node.inputs[k])
    allocated = _before(fb, node, lambda: list_reserve(init, capacity))
    node.inputs.append(allocated.index)
    node.outputs.append(fb.fn.add_tensor(fb._name("while_list"), info.dtype, shape))
    loop.lists[k] = len(node.outputs) - 1
    return Tensor(fb, node.outputs[-1])


def _accumulate(G, total: Tensor, g: Tensor) -> Tensor:
    """total + g. When g is one slot of a tensor list scattered into zeros (the gradient of
    list_read: SCATTER_ND at one index), add into that slot only: GATHER_ND, ADD and
    DYNAMIC_UPDATE_SLICE instead of a dense tensor of zeros and a dense add every iteration."""
    node = next((n for n in G.fn.nodes if g.index in n.outputs), None)
    if node is not None and node.op == "scatter_nd" and tuple(G.fn.tensors[node.inputs[0]].shape) == (1,):
        index, update = Tensor(G, node.inputs[0]), Tensor(G, node.inputs[1])
        slot = ops.add(ops.gather_nd(total, index), update)
        return list_write(total, ops.reshape(index, []), slot)
    return ops.add(total, g)


def while_vjp(inputs, outputs, grads, needs, cond_subgraph_index=0, body_subgraph_index=0):
    from .autodiff import gradients
    fb = outputs[0].fb
    pb = fb.pb
    loop = pb.control.get(body_subgraph_index)
    if not isinstance(loop, Loop):
        raise NotImplementedError("only loops built by lt.ops.while_loop are differentiable (this one was "
                                  "built by a gradient, or read from a file)")
    capacity = loop.capacity if loop.capacity is not None else pb.options.get("max_sequence_length")
    if capacity is None:
        raise NotImplementedError(f"the while_loop traced at {loop.where or '?'} needs a capacity to be "
                                  "differentiated: give it maximum_iterations=, or lt.convert max_sequence_length=")
    node = _node_of(fb, outputs)
    B = loop.body.fn
    core = range(1, loop.num_core)
    varying = [k for k in core if B.outputs[k] != B.inputs[k]]
    invariant = [k for k in core if B.outputs[k] == B.inputs[k]]
    is_float = {k: B.tensors[B.inputs[k]].dtype in FLOAT_DTYPES for k in core}
    carried = [k for k in varying if is_float[k]]
    summed = [k for k in invariant if is_float[k] and needs[k]]
    if not carried or not (summed or any(needs[k] for k in carried)):
        return [None] * len(inputs)
    for k in varying:
        if k in loop.relaxed:
            raise NotImplementedError(f"loop variable {k - 1} of the while_loop traced at {loop.where or '?'} "
                                      "changes shape between iterations; its values cannot be kept in a tensor list")

    # the backward body: one iteration of the forward body, recomputed from kept values, then its VJP
    G = BodyBuilder(fb, _unique_name(pb, f"{B.name}_grad"))
    remaining = G.input("remaining", "int32", ())
    spec = {k: (B.tensors[B.inputs[k]].dtype, tuple(B.tensors[B.inputs[k]].shape)) for k in core}
    g_in = {k: G.input(f"grad_{k}", *spec[k]) for k in carried}
    acc_in = {k: G.input(f"sum_{k}", *spec[k]) for k in summed}
    lists_in = {k: G.input(f"list_{k}", spec[k][0], (capacity,) + spec[k][1]) for k in varying}
    values_in = {k: G.input(f"value_{k}", *spec[k]) for k in invariant}
    j = ops.sub(remaining, 1)
    env = {B.inputs[0]: j}
    for k in varying:
        env[B.inputs[k]] = list_read(lists_in[k], j)
    for k in invariant:
        env[B.inputs[k]] = values_in[k]
    mapped = _copy_into(G, B, env)
    wrt = [env[B.inputs[k]] for k in carried] + [values_in[k] for k in summed]
    d = gradients([mapped[B.outputs[k]] for k in carried], wrt, [g_in[k] for k in carried])
    new_g = d[:len(carried)]
    new_acc = [_accumulate(G, acc_in[k], g) for k, g in zip(summed, d[len(carried):])]
    G.fn.outputs = [t.index for t in [j] + new_g + new_acc]
    _dce(G.fn)
    used = {i for n in G.fn.nodes for i in n.inputs} | set(G.fn.outputs)
    kept = [k for k in varying if lists_in[k].index in used]
    passed = [k for k in invariant if values_in[k].index in used]
    G.fn.inputs = ([remaining.index] + [g_in[k].index for k in carried] + [acc_in[k].index for k in summed]
                   + [lists_in[k].index for k in kept] + [values_in[k].index for k in passed])
    G.fn.outputs = _own_outputs(G, [j] + new_g + new_acc + [lists_in[k] for k in kept] + [values_in[k] for k in passed],
                                passthrough=G.fn.inputs)
    # the forward loop keeps what the backward body reads
    lists = [_keep_in_list(fb, node, loop, k, capacity) for k in kept]
    # the backward loop runs the counter down from the forward trip count
    C = BodyBuilder(fb, _unique_name(pb, f"{B.name}_grad_cond"))
    c_in = [C.input(f"v{n}", G.fn.tensors[i].dtype, G.fn.tensors[i].shape) for n, i in enumerate(G.fn.inputs)]
    C.fn.outputs = [ops.greater(c_in[0], 0).index]
    body_index, cond_index = pb.add_function(G), pb.add_function(C)
    start = [Tensor(fb, node.outputs[0])] + [grads[k] for k in carried] + [ops.zeros_like(inputs[k]) for k in summed]
    back = fb.emit("while", start + lists + [inputs[k] for k in passed],
                   {"cond_subgraph_index": cond_index, "body_subgraph_index": body_index},
                   where=f"gradient of the while_loop traced at {loop.where or '?'}")
    result = [None] * len(inputs)
    for n, k in enumerate(carried):
        if needs[k]:
            result[k] = back[1 + n]
    for n, k in enumerate(summed):
        total = back[1 + len(carried) + n]
        result[k] = total if _is_zeros(fb, grads[k]) else ops.add(total, grads[k])
    return result


# -- the gradient of an if ---------------------------------------------------------------------------
def if_vjp(inputs, outputs, grads, needs, then_subgraph_index=0, else_subgraph_index=0):
    """An IF of the two branches' gradient functions, each recomputing its branch."""
    from .autodiff import gradients
    if not outputs:
        return [None] * len(inputs)
    fb = outputs[0].fb
    pb = fb.pb
    operands = inputs[1:]
    wrt = [k for k, t in enumerate(operands) if t.dtype in FLOAT_DTYPES and needs[k + 1]]
    outs = [o for o, t in enumerate(outputs) if t.dtype in FLOAT_DTYPES]
    if not wrt or not outs:
        return [None] * len(inputs)
    indices = []
    for index in (then_subgraph_index, else_subgraph_index):
        src = pb.program.functions[index]
        G = BodyBuilder(fb, _unique_name(pb, f"{src.name}_grad"))
        xs = [G.input(f"x{k}", t.dtype, t.shape) for k, t in enumerate(operands)]
        gs = [G.input(f"g{o}", outputs[o].dtype, outputs[o].shape) for o in outs]
        mapped = _copy_into(G, src, {i: x for i, x in zip(src.inputs, xs)})
        d = gradients([mapped[src.outputs[o]] for o in outs], [xs[k] for k in wrt], gs)
        G.fn.outputs = _own_outputs(G, d)
        _dce(G.fn)
        indices.append(pb.add_function(G))
    pred = inputs[0]
    back = _if_node(fb, pred, list(operands) + [grads[o] for o in outs],
                    [(operands[k].dtype, operands[k].shape) for k in wrt], indices,
                    f"gradient of the cond at {_node_of(fb, outputs).where or '?'}")
    result = [None] * len(inputs)
    for n, k in enumerate(wrt):
        result[k + 1] = back[n]
    return result
