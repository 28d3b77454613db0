"""The ONNX importer's control flow: If. A condition known at import runs the branch it picks in line;
one computed at run time becomes litetrain's cond (an IF node whose branches are traced functions, values of
the enclosing graph captured), whose gradient flows through the branch taken."""
from __future__ import annotations

import numpy as np

from ... import ops
from .graph import OnnxImportError, V, handles


def _branch(ctx, proto):
    """The outputs of a branch graph, traced with ctx's builder (values in ONNX's order)."""
    ctx.run_nodes(ctx.m._graph.subgraph(proto))
    missing = [o.name for o in proto.output if o.name not in ctx.env]
    if missing:
        raise OnnxImportError(f"ONNX If branch {proto.name!r}: its outputs {missing} are computed nowhere")
    return [ctx.plain(ctx.env[o.name]) for o in proto.output]


@handles("If")
def _if(ctx, node, cond):
    then_g, else_g = node.attr("then_branch"), node.attr("else_branch")
    c = ctx.const(cond)
    if c is not None:
        proto = then_g if bool(np.ravel(c)[0]) else else_g
        ctx.run_nodes(ctx.m._graph.subgraph(proto))
        return [ctx.env[o.name] for o in proto.output]
    pred = ctx.plain(cond)
    if pred.dtype != "bool":
        pred = ops.not_equal(pred, ctx.fb.const(0, pred.dtype))
    pred = ops.reshape(pred, [])
    outer = ctx.fb

    def traced(proto):
        def fn(anchor):
            ctx.fb = anchor.fb
            try:
                return _branch(ctx, proto)
            finally:
                ctx.fb = outer
        return fn

    outs = ops.cond(pred, traced(then_g), traced(else_g), operands=[pred], name="onnx_if")
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    return [V(o) for o in outs]
