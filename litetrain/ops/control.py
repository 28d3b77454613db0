"""Control ops: WHILE and IF, which run other functions (subgraphs) of the program.

A `while` node's inputs are the loop variables and its outputs their final values; its
condition function maps the loop variables to one bool, its body function maps them to their
next values. An `if` node's first input is a bool, the rest go to the branch it picks, whose
outputs are the node's. The function indices are attributes, as TensorFlow Lite's WhileOptions
and IfOptions hold them. Both kernels are stateful: they run functions through the runtime
context. Their gradient rules (backpropagation through time with tensor lists, and through
branches) are in litetrain/loops.py, next to the frontend that records the functions.
"""
from __future__ import annotations

import numpy as np

from ..ir import numpy_dtype
from ..registry import Builtin, defop


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
    run = ctx.executor.run_function
    cond_where, body_where = f"{ctx.where} -> while condition {cond.name!r}", f"{ctx.where} -> while body {body.name!r}"
    values = list(loop_vars)
    _check_dtypes(body, values, "while body")
    # a file's condition may never turn false: the executor bounds the iterations of one loop run
    limit = getattr(ctx.executor, "max_loop_iterations", None)
    iterations = 0
    while True:
        c, = run(cond_subgraph_index, values, where=cond_where)
        if not _truth(c, f"while condition {cond.name!r}"):
            return tuple(values)
        if limit is not None and iterations >= limit:
            raise RuntimeError(f"{ctx.where}: the while loop (body {body.name!r}) ran {limit:,} iterations and its "
                               f"condition is still true; pass max_loop_iterations= to the Interpreter to allow more")
        values = run(body_subgraph_index, values, where=body_where)
        iterations += 1


def _while_vjp(inputs, outputs, grads, needs, **attrs):
    from ..loops import while_vjp
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
    return tuple(ctx.executor.run_function(index, list(args), where=f"{ctx.where} -> if branch {fn.name!r}"))


def _if_vjp(inputs, outputs, grads, needs, **attrs):
    from ..loops import if_vjp
    return if_vjp(inputs, outputs, grads, needs, **attrs)


_if_vjp.wants_needs = True

defop("if", infer=_if_infer, kernel=_if_kernel, vjp=_if_vjp, stateful=True, num_inputs=(1, None),
      attrs={"then_subgraph_index": 0, "else_subgraph_index": 0},
      tflite=Builtin("IF", "IfOptions", {"then_subgraph_index": "int", "else_subgraph_index": "int"}))
