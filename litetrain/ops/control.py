"""Control flow: WHILE and IF, the functions that trace them, and their gradients.

A `while` node's inputs are the loop variables and its outputs their final values; its
condition function maps the loop variables to one bool, its body function maps them to their
next values. An `if` node's first input is a bool, the rest go to the branch it picks, whose
outputs are the node's. The function indices are attributes, as TensorFlow Lite's WhileOptions
and IfOptions hold them. Both kernels are stateful: they run functions through the runtime
context. `while_loop` and `cond` trace Python functions into those functions
(core/subgraphs.py's BodyBuilder); the first loop variable of a traced loop is its iteration
counter, starting at 0.

Gradients are generated ahead of time, as builtin ops, from the program alone (a loop read from a
file is differentiated like a traced one):
- `if`: an IF of two gradient branches; each recomputes its branch and applies the chain rule.
- `while` (backpropagation through time): the forward loop is given tensor lists (tensor_list.py)
  that keep each iteration's loop values that the backward pass needs; a backward WHILE runs the
  counter down and reads them back, its body being the vector-Jacobian product of the forward body.
  Values the backward body needs are recomputed from the kept ones inside the iteration; loop
  variables it does not need (an output sequence, say) are not kept. Gradients of loop invariants
  (weights, an input sequence) are summed over the iterations. The lists' capacity is the loop's
  `maximum_iterations` (found in its body as the capacity check), else the conversion's
  `max_sequence_length`; the body refuses to run past it.
"""
from __future__ import annotations

import re

import numpy as np

from ..core.autodiff import gradients
from ..core.ir import FLOAT_DTYPES, Function, Node, format_shape, numpy_dtype
from ..core.registry import Builtin, defop, get_op
from ..core.subgraphs import BodyBuilder, before, copy_into, node_of, own_outputs, prune, unique_name
from ..core.trace import Tensor, TraceError, _user_location, builder_of
from .api import add, gather_nd, greater, reshape, sub, zeros_like
from .tensor_list import CAPACITY_CHECK, check_at_most, list_read, list_reserve, list_write

KEPT = "kept_for_gradient_"  # the name of a forward body's input that keeps loop variable k in a tensor list


def _truth(value, what):
    arr = np.asarray(value)
    if arr.dtype != np.bool_ or arr.size != 1:
        raise ValueError(f"{what} must give one bool, got {arr.dtype}{list(arr.shape)}")
    return bool(arr.reshape(()))


def _function(ctx, index, num_inputs, num_outputs, what):
    """Function `index`, checked to take and give the number of values the node passes."""
    functions = ctx.executor.program.functions
    if not 0 <= index < len(functions):
        raise ValueError(f"{what} subgraph index {index} is out of range (the model has {len(functions)})")
    fn = functions[index]
    if len(fn.inputs) != num_inputs or (num_outputs is not None and len(fn.outputs) != num_outputs):
        raise ValueError(f"{what} subgraph {index} ({fn.name}) takes {len(fn.inputs)} inputs and gives "
                         f"{len(fn.outputs)} outputs; the node passes {num_inputs}"
                         + (f" and expects {num_outputs}" if num_outputs is not None else ""))
    return fn


def _check_dtypes(fn, values, what):
    for i, v in zip(fn.inputs, values):
        want = fn.tensors[i].dtype
        if want not in ("resource", "variant", "string") and np.asarray(v).dtype != numpy_dtype(want):
            raise TypeError(f"{what} ({fn.name}) input {fn.tensors[i].name!r} is {want}, got {np.asarray(v).dtype}")


# -- while --------------------------------------------------------------------------------------
def _while_infer(attrs, inputs):
    return [(t.dtype, t.shape) for t in inputs]


def _while_kernel(ctx, *loop_vars, cond_subgraph_index=0, body_subgraph_index=0):
    n = len(loop_vars)
    cond = _function(ctx, cond_subgraph_index, n, 1, "while condition")
    body = _function(ctx, body_subgraph_index, n, n, "while body")
    run = ctx.run  # the call's functions share its limits (runtime/executor.py Limits)
    cond_where, body_where = f"{ctx.where} -> while condition {cond.name!r}", f"{ctx.where} -> while body {body.name!r}"
    values = list(loop_vars)
    _check_dtypes(body, values, "while body")
    # a condition that is one comparison of loop values and constants (a loop's t < n) runs that op's
    # kernel on them directly; where the kernel fails, the condition's function runs and names it
    node = cond.nodes[0] if len(cond.nodes) == 1 else None
    spots = {t: k for k, t in enumerate(cond.inputs)}
    direct = node is not None and node.op in ("less", "less_equal", "greater", "greater_equal", "equal",
                                              "not_equal") and list(node.outputs) == list(cond.outputs) and all(
        i in spots or (i >= 0 and cond.tensors[i].data is not None) for i in node.inputs)
    if direct:
        compare, attrs = get_op(node.op).kernel, dict(node.attrs)
        operands = [(spots.get(i), None if i in spots else np.asarray(cond.tensors[i].data)) for i in node.inputs]
    # a file's condition may never turn false: the call bounds the iterations of all its loops together
    count = ctx.limits.loop_iteration
    while True:
        c = None
        if direct:
            try:
                c = compare(*[data if k is None else values[k] for k, data in operands], **attrs)
            except Exception:  # noqa: BLE001  (the condition's own call below reports it)
                c = None
        if c is None:
            c, = run(cond_subgraph_index, values, where=cond_where)
        if c.__class__ is not np.bool_:  # a comparison of scalars gives a NumPy bool
            c = _truth(c, f"while condition {cond.name!r}")
        if not c:
            return tuple(values)
        count(ctx.where, body.name)  # LoopLimitError past the call's max_loop_iterations
        values = run(body_subgraph_index, values, where=body_where, donate=True)  # the body may update in place


def _while_vjp(inputs, outputs, grads, needs, **attrs):
    return while_vjp(inputs, outputs, grads, needs, **attrs)


_while_vjp.wants_needs = True  # autodiff passes which inputs need a gradient

defop("while", infer=_while_infer, kernel=_while_kernel, vjp=_while_vjp, stateful=True, num_inputs=(1, None),
      attrs={"cond_subgraph_index": 0, "body_subgraph_index": 0},
      tflite=Builtin("WHILE", "WhileOptions", {"cond_subgraph_index": "int", "body_subgraph_index": "int"}))


# -- if -------------------------------------------------------------------------------------------
def _if_infer(attrs, inputs):
    raise ValueError("an if node takes its outputs' types from its branch functions: build it with "
                     "lt.ops.cond(pred, true_fn, false_fn, operands)")


def _if_kernel(ctx, pred, *args, then_subgraph_index=0, else_subgraph_index=0):
    taken = _truth(pred, "the if condition")
    index = then_subgraph_index if taken else else_subgraph_index
    fn = _function(ctx, index, len(args), None, "then branch" if taken else "else branch")
    _check_dtypes(fn, args, "if branch")
    return tuple(ctx.run(index, list(args), where=f"{ctx.where} -> if branch {fn.name!r}"))


def _if_vjp(inputs, outputs, grads, needs, **attrs):
    return if_vjp(inputs, outputs, grads, needs, **attrs)


_if_vjp.wants_needs = True

defop("if", infer=_if_infer, kernel=_if_kernel, vjp=_if_vjp, stateful=True, num_inputs=(1, None),
      attrs={"then_subgraph_index": 0, "else_subgraph_index": 0},
      tflite=Builtin("IF", "IfOptions", {"then_subgraph_index": "int", "else_subgraph_index": "int"}))


# -- while_loop ------------------------------------------------------------------------------------
def _join(a, b, k):
    (da, sa), (db, sb) = a, b
    if da != db:
        raise TraceError(f"loop variable {k} is {da} before the body and {db} after it")
    if len(sa) != len(sb):
        raise TraceError(f"loop variable {k} changes rank in the body: {format_shape(sa)} -> {format_shape(sb)}")
    return da, tuple(x if x == y else None for x, y in zip(sa, sb))


def _trace_body(fb, name, body_fn, specs):
    body = BodyBuilder(fb, unique_name(fb.pb, f"{fb.fn.name}/{name}_body"))
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
    cond = BodyBuilder(fb, unique_name(fb.pb, f"{fb.fn.name}/{name}_cond"))
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
    step = add(counter, 1)
    if capacity is not None:
        step = check_at_most(step, capacity, f"the while_loop traced at {where or '?'} ran more than "
                                             f"maximum_iterations={capacity} iterations")
    body.fn.outputs = own_outputs(body, [step] + outs + [Tensor(body, i) for i in body_caps],
                                   passthrough=body.fn.inputs)
    cond.fn.outputs = own_outputs(cond, [c])
    pb = fb.pb
    body_index, cond_index = pb.add_function(body), pb.add_function(cond)
    outputs = fb.emit("while", [fb.const(np.int32(0))] + init + caps,
                      {"cond_subgraph_index": cond_index, "body_subgraph_index": body_index}, where=where)
    for t, (_, shape) in zip(outputs[1:], specs):
        t.info.shape = shape
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
        b = BodyBuilder(fb, unique_name(fb.pb, f"{fb.fn.name}/{name}_{label}"))
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
        b.fn.outputs = own_outputs(b, outs)
        indices.append(fb.pb.add_function(b))
    result = _if_node(fb, pred, operands + caps, [(a.dtype, s) for a, s in zip(touts, shapes)], indices, where)
    return result[0] if tsingle else result


def _if_node(fb, pred, inputs, specs, branches, where):
    outs = [fb.fn.add_tensor(fb._name("if"), d, s) for d, s in specs]
    fb.fn.nodes.append(Node("if", [pred.index] + [t.index for t in inputs], outs,
                            {"then_subgraph_index": branches[0], "else_subgraph_index": branches[1]}, where))
    return [Tensor(fb, o) for o in outs]


def _is_zeros(fb, t: Tensor) -> bool:
    """Whether `t` is zeros (a zeros_like autodiff made for an output without a gradient)."""
    if t.constant is not None:
        return not np.asarray(t.constant).any()
    producer = next((n for n in reversed(fb.fn.nodes) if t.index in n.outputs), None)
    return producer is not None and producer.op == "zeros_like"


# -- the gradient of a while loop -----------------------------------------------------------------
class _Loop:
    """What the gradient needs to know of one WHILE node, read from the program: its body and
    condition, which body inputs are the tensor lists an earlier gradient added (by name), the
    capacity its body checks (if any), and which loop variables change shape between iterations."""

    def __init__(self, fb, node: Node):
        functions = fb.pb.program.functions
        self.node, self.where = node, node.where
        self.body_index = node.attrs["body_subgraph_index"]
        self.body: Function = functions[self.body_index]
        self.cond: Function = functions[node.attrs["cond_subgraph_index"]]
        B = self.body
        self.lists = {}  # loop variable k -> position of the list keeping it
        for pos, i in enumerate(B.inputs):
            found = re.search(rf"{KEPT}(\d+):0$", B.tensors[i].name)
            if found:
                self.lists[int(found.group(1))] = pos
        self.core = [k for k in range(1, len(B.inputs)) if k not in self.lists.values()]
        self.capacity = _checked_capacity(B)
        init_shapes = [fb.fn.tensors[i].shape for i in node.inputs]
        self.relaxed = {k for k in self.core if any(
            a is not None and b is None for a, b in zip(init_shapes[k], B.tensors[B.inputs[k]].shape))}

    def check_counter(self, fb):
        """The gradient indexes its lists by loop variable 0: it must count iterations from 0."""
        B, node = self.body, self.node
        counter = B.tensors[B.inputs[0]]
        init = fb.fn.tensors[node.inputs[0]]
        if counter.dtype != "int32" or tuple(counter.shape) != () or init.data is None or int(init.data) != 0:
            raise NotImplementedError(f"the while loop at {self.where or '?'} does not start with an iteration counter "
                                      "(an int32 loop variable starting at 0), which its gradient indexes by")


def _checked_capacity(B: Function) -> int | None:
    """The capacity that the body's check on its counter allows (tensor_list.check_at_most), if any."""
    made_by = {o: n for n in B.nodes for o in n.outputs}
    node = made_by.get(B.outputs[0]) if B.outputs else None
    if node is None or node.op != "add":
        return None
    for i in node.inputs:
        gather = made_by.get(i)
        if gather is not None and gather.op == "gather" and B.tensors[i].name.startswith(CAPACITY_CHECK):
            table = B.tensors[gather.inputs[0]].data
            if table is not None:
                return int(np.asarray(table).size) - 1
    return None


def _keep_in_list(fb, loop: _Loop, k: int, capacity: int) -> Tensor:
    """The forward loop keeps loop variable k of every iteration in a tensor list; returns the
    list as the forward node's output."""
    node = loop.node
    if k in loop.lists:
        return Tensor(fb, node.outputs[loop.lists[k]])
    body = BodyBuilder(fb, loop.body.name, fn=loop.body)
    B = loop.body
    info = B.tensors[B.inputs[k]]
    shape = (capacity,) + tuple(info.shape)
    lst_in = body.input(f"{KEPT}{k}", info.dtype, shape)
    written = list_write(lst_in, Tensor(body, B.inputs[0]), Tensor(body, B.inputs[k]))
    B.outputs.append(written.index)
    BodyBuilder(fb, loop.cond.name, fn=loop.cond).input(f"{KEPT}{k}", info.dtype, shape)
    if loop.capacity is None:
        step = check_at_most(Tensor(body, B.outputs[0]), capacity,
                             f"the while_loop traced at {loop.where or '?'} ran more iterations than the "
                             f"capacity {capacity} of its tensor lists (maximum_iterations / max_sequence_length)")
        B.outputs[0] = step.index
        loop.capacity = capacity
    init = Tensor(fb, node.inputs[k])
    allocated = before(fb, node, lambda: list_reserve(init, capacity))
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
        slot = add(gather_nd(total, index), update)
        return list_write(total, reshape(index, []), slot)
    return add(total, g)


def _backward_body(fb, loop: _Loop, capacity, carried, summed, varying, invariant):
    """The backward loop's body: one forward iteration, recomputed from the kept values, then its
    vector-Jacobian product. Returns the builder and the forward loop variables it reads back from
    lists (`kept`) or takes as they are (`passed`)."""
    B = loop.body
    G = BodyBuilder(fb, unique_name(fb.pb, f"{B.name}_grad"))
    remaining = G.input("remaining", "int32", ())
    spec = {k: (B.tensors[B.inputs[k]].dtype, tuple(B.tensors[B.inputs[k]].shape)) for k in loop.core}
    g_in = {k: G.input(f"grad_{k}", *spec[k]) for k in carried}
    acc_in = {k: G.input(f"sum_{k}", *spec[k]) for k in summed}
    lists_in = {k: G.input(f"list_{k}", spec[k][0], (capacity,) + spec[k][1]) for k in varying}
    values_in = {k: G.input(f"value_{k}", *spec[k]) for k in invariant}
    j = sub(remaining, 1)
    env = {B.inputs[0]: j}
    for k in varying:
        env[B.inputs[k]] = list_read(lists_in[k], j)
    for k in invariant:
        env[B.inputs[k]] = values_in[k]
    for k, pos in loop.lists.items():  # lists an earlier gradient added: not read by this one
        env[B.inputs[pos]] = G.const(np.zeros((0,) * len(B.tensors[B.inputs[pos]].shape), numpy_dtype(spec[k][0])))
    mapped = copy_into(G, B, env)
    wrt = [env[B.inputs[k]] for k in carried] + [values_in[k] for k in summed]
    d = gradients([mapped[B.outputs[k]] for k in carried], wrt, [g_in[k] for k in carried])
    new_g = d[:len(carried)]
    new_acc = [_accumulate(G, acc_in[k], g) for k, g in zip(summed, d[len(carried):])]
    G.fn.outputs = [t.index for t in [j] + new_g + new_acc]
    prune(G.fn)
    used = {i for n in G.fn.nodes for i in n.inputs} | set(G.fn.outputs)
    kept = [k for k in varying if lists_in[k].index in used]
    passed = [k for k in invariant if values_in[k].index in used]
    G.fn.inputs = ([remaining.index] + [g_in[k].index for k in carried] + [acc_in[k].index for k in summed]
                   + [lists_in[k].index for k in kept] + [values_in[k].index for k in passed])
    G.fn.outputs = own_outputs(G, [j] + new_g + new_acc + [lists_in[k] for k in kept] + [values_in[k] for k in passed],
                               passthrough=G.fn.inputs)
    return G, kept, passed


def while_vjp(inputs, outputs, grads, needs, cond_subgraph_index=0, body_subgraph_index=0):
    fb = outputs[0].fb
    pb = fb.pb
    loop = _Loop(fb, node_of(fb, outputs))
    capacity = loop.capacity if loop.capacity is not None else pb.options.max_sequence_length
    if capacity is None:
        raise NotImplementedError(f"the while_loop traced at {loop.where or '?'} needs a capacity to be "
                                  "differentiated: give it maximum_iterations=, or lt.convert max_sequence_length=")
    B = loop.body
    varying = [k for k in loop.core if B.outputs[k] != B.inputs[k]]
    invariant = [k for k in loop.core if B.outputs[k] == B.inputs[k]]
    is_float = {k: B.tensors[B.inputs[k]].dtype in FLOAT_DTYPES for k in loop.core}
    carried = [k for k in varying if is_float[k]]
    summed = [k for k in invariant if is_float[k] and needs[k]]
    if not carried or not (summed or any(needs[k] for k in carried)):
        return [None] * len(inputs)
    loop.check_counter(fb)
    for k in varying:
        if k in loop.relaxed:
            raise NotImplementedError(f"loop variable {k - 1} of the while_loop traced at {loop.where or '?'} "
                                      "changes shape between iterations; its values cannot be kept in a tensor list")
    G, kept, passed = _backward_body(fb, loop, capacity, carried, summed, varying, invariant)
    # the forward loop keeps what the backward body reads
    lists = [_keep_in_list(fb, loop, k, capacity) for k in kept]
    # the backward loop runs the counter down from the forward trip count
    C = BodyBuilder(fb, unique_name(pb, f"{B.name}_grad_cond"))
    c_in = [C.input(f"v{n}", G.fn.tensors[i].dtype, G.fn.tensors[i].shape) for n, i in enumerate(G.fn.inputs)]
    C.fn.outputs = [greater(c_in[0], 0).index]
    body_index, cond_index = pb.add_function(G), pb.add_function(C)
    node = loop.node
    start = [Tensor(fb, node.outputs[0])] + [grads[k] for k in carried] + [zeros_like(inputs[k]) for k in summed]
    back = fb.emit("while", start + lists + [inputs[k] for k in passed],
                   {"cond_subgraph_index": cond_index, "body_subgraph_index": body_index},
                   where=f"gradient of the while_loop traced at {loop.where or '?'}")
    result = [None] * len(inputs)
    for n, k in enumerate(carried):
        if needs[k]:
            result[k] = back[1 + n]
    for n, k in enumerate(summed):
        total = back[1 + len(carried) + n]
        result[k] = total if _is_zeros(fb, grads[k]) else add(total, grads[k])
    return result


# -- the gradient of an if ---------------------------------------------------------------------------
def if_vjp(inputs, outputs, grads, needs, then_subgraph_index=0, else_subgraph_index=0):
    """An IF of the two branches' gradient functions, each recomputing its branch."""
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
        G = BodyBuilder(fb, unique_name(pb, f"{src.name}_grad"))
        xs = [G.input(f"x{k}", t.dtype, t.shape) for k, t in enumerate(operands)]
        gs = [G.input(f"g{o}", outputs[o].dtype, outputs[o].shape) for o in outs]
        mapped = copy_into(G, src, {i: x for i, x in zip(src.inputs, xs)})
        d = gradients([mapped[src.outputs[o]] for o in outs], [xs[k] for k in wrt], gs)
        G.fn.outputs = own_outputs(G, d)
        prune(G.fn)
        indices.append(pb.add_function(G))
    pred = inputs[0]
    back = _if_node(fb, pred, list(operands) + [grads[o] for o in outs],
                    [(operands[k].dtype, operands[k].shape) for k in wrt], indices,
                    f"gradient of the cond at {node_of(fb, outputs).where or '?'}")
    result = [None] * len(inputs)
    for n, k in enumerate(wrt):
        result[k + 1] = back[n]
    return result
