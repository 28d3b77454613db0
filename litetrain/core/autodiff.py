"""Ahead-of-time reverse-mode differentiation: gradient ops are added to the traced function.

`gradients(y, xs)` walks the nodes recorded so far backwards from `y` and, for each node on a
path from some x to y, calls its op's gradient rule. Rules emit ordinary registered ops, so the
backward pass is part of the same function and is written to the file like the forward pass.
The few ops autodiff adds itself (summing gradients, zeros for an input without one) it emits by
name, so this module needs no op family: the rules come from the registry.
"""
from __future__ import annotations

import numpy as np

from .ir import numpy_dtype
from .registry import NOT_DIFFERENTIABLE, get_op
from .remat import rematerialize
from .trace import Tensor, TraceError


def gradients(y: Tensor, xs, grad_y=None):
    """d(y)/d(x) for each x in `xs` (Tensors of y's function, or Params/Buffers, whose reads
    in this function are the x). A scalar `y` is seeded with 1; otherwise pass `grad_y`.
    Returns a list of Tensors; an x that y does not depend on gets zeros.
    `y` may also be a list of tensors with `grad_y` the list of their cotangents (a loop body's
    outputs): the result is the sum of their vector-Jacobian products."""
    ys, grad_ys = (list(y), list(grad_y or ())) if isinstance(y, (list, tuple)) else ([y], None)
    if not ys or any(not isinstance(t, Tensor) for t in ys) or (grad_ys is not None and len(grad_ys) != len(ys)):
        raise TraceError(f"gradients needs a traced tensor (or a list of them with one cotangent each), "
                         f"got {type(y).__name__}")
    y = ys[0]
    fb = y.fb
    fn = fb.fn
    targets = []
    for x in xs:
        if isinstance(x, Tensor):
            targets.append([fb.to_tensor(x).index])
        elif hasattr(x, "_litetrain_state"):
            var = fb.pb.variable(x)
            if var.name not in fb.reads:
                fb.read(x)
            targets.append(list(fb.reads.get(var.name, [])))
        else:
            raise TraceError(f"cannot differentiate with respect to {type(x).__name__}")
    if grad_ys is None:
        if grad_y is None:
            if y.shape not in ((), (1,)):
                raise TraceError(f"gradients of a non-scalar {y!r} need grad_y")
            grad_y = fb.const(np.ones(y.shape, numpy_dtype(y.dtype)), y.dtype)
        grad_ys = [grad_y]
    nodes = list(fn.nodes)  # the forward graph as it is now; rules append after it
    depends = {i for t in targets for i in t}
    for node in nodes:
        if any(i in depends for i in node.inputs if i >= 0):
            depends.update(node.outputs)
    if not any(t.index in depends for t in ys):
        return [_zeros_for(fb, x, t) for x, t in zip(xs, targets)]
    backward_from = len(fn.nodes)
    grads: dict[int, Tensor] = {}
    for t, g in zip(ys, grad_ys):
        g = fb.to_tensor(g)
        grads[t.index] = g if t.index not in grads else fb.emit("add", [grads[t.index], g])
    for node in reversed(nodes):
        if not any(o in grads for o in node.outputs):
            continue
        if not any(i in depends for i in node.inputs if i >= 0):
            continue
        opdef = get_op(node.op)
        if opdef.vjp == NOT_DIFFERENTIABLE:
            continue
        ins = [None if i < 0 else Tensor(fb, i) for i in node.inputs]
        outs = [Tensor(fb, o) for o in node.outputs]
        g_out = [grads[o] if o in grads else fb.emit("zeros_like", [Tensor(fb, o)])
                 if fn.tensors[o].dtype in _ZEROABLE else None for o in node.outputs]
        # a rule that asks (vjp.wants_needs) is told which inputs need a gradient (a loop's does)
        needs = {"needs": [i >= 0 and i in depends for i in node.inputs]} if getattr(
            opdef.vjp, "wants_needs", False) else {}
        try:
            g_in = opdef.vjp(ins, outs, g_out, **node.attrs, **needs)
        except NotImplementedError as e:
            raise TraceError(f"cannot differentiate {node.op} traced at {node.where or '?'}: {e}") from None
        for i, g in zip(node.inputs, g_in):
            if g is None or i < 0 or i not in depends:
                continue
            grads[i] = g if i not in grads else fb.emit("add", [grads[i], g])
    out = []
    for x, idxs in zip(xs, targets):
        found = [grads[i] for i in idxs if i in grads]
        if not found:
            out.append(_zeros_for(fb, x, idxs))
            continue
        total = found[0]
        for g in found[1:]:
            total = fb.emit("add", [total, g])
        out.append(total)
    if fb.recompute_regions:  # blocks whose activations the backward pass recomputes
        rematerialize(fb, backward_from)
    return out


_ZEROABLE = ("float16", "float32", "float64", "int32", "int64")  # an output of another dtype (a bool
# loop variable) that gets no gradient is passed to the rule as None


def _zeros_for(fb, x, idxs):
    return fb.emit("zeros_like", [Tensor(fb, idxs[0]) if idxs else fb.to_tensor(x)])
