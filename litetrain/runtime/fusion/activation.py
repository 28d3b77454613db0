"""The gradients of ReLU and ReLU6 as one step each.

ops/activation.py writes them as SELECT_V2(GREATER(x, 0), g, ZEROS_LIKE(g)) and
SELECT_V2(LOGICAL_AND(GREATER(x, 0), LESS(x, 6)), g, ZEROS_LIKE(g)): three or five steps, a mask
or three and a tensor of zeros allocated each time. Fused: one mask, and g's bits kept where it is
on, written into g's own buffer when nothing else holds it (exactly SELECT_V2's values: g or +0).
"""
from __future__ import annotations

import numpy as np

from .graph import Fused


def _scalar(graph, tensor, value) -> bool:
    data = graph.constant(tensor)
    return data is not None and np.size(data) == 1 and float(np.asarray(data).reshape(())) == value


def _bound(graph, k, op, limit):
    """(x) when node k is `op`(x, constant `limit`) on a float x, else None."""
    if graph.op(k) != op:
        return None
    x, c = graph.node(k).inputs
    return x if _scalar(graph, c, limit) and graph.dtype(x).startswith("float") else None


def _mask(graph, k):
    """(x, the nodes, kind) when node k is GREATER(x, 0) or LOGICAL_AND(GREATER(x, 0), LESS(x, 6))."""
    x = _bound(graph, k, "greater", 0.0)
    if x is not None:
        return x, [k], "relu"
    if graph.op(k) != "logical_and":
        return None
    a, b = (graph.made_by(t) for t in graph.node(k).inputs)
    lo, hi = _bound(graph, a, "greater", 0.0), _bound(graph, b, "less", 6.0)
    if lo is None or lo != hi:
        return None
    return lo, [a, b, k], "relu6"


def match(graph, k):
    if graph.op(k) != "select_v2":
        return None
    cond, g, zeros = graph.node(k).inputs
    z = graph.made_by(zeros, "zeros_like")
    m = graph.made_by(cond)
    if z is None or graph.node(z).inputs != [g] or m is None:
        return None
    found = _mask(graph, m)
    if found is None:
        return None
    x, nodes, kind = found
    shape = graph.shape(g)
    if None in shape or tuple(graph.shape(x)) != tuple(shape) or graph.dtype(x) != graph.dtype(g):
        return None
    nodes = sorted(nodes + [z, k])
    out = graph.node(k).outputs[0]
    if not graph.fusable(nodes, [out]):
        return None
    kernel = relu_grad if kind == "relu" else relu6_grad
    return Fused(f"{kind} gradient", kernel, nodes, [x, g], [out], inplace=(1,))


_BITS = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def _masked(g, on, out):
    """g where `on`, +0 elsewhere (into `out`, or a new array): g's bits and-ed with all ones or all
    zeros, exactly SELECT_V2's values (NaN and -0 included) without a data-dependent branch."""
    bits = _BITS[g.dtype.itemsize]
    mask = on.view(np.uint8).astype(bits)
    np.negative(mask, out=mask)  # 1 -> all ones, 0 -> 0
    result = np.empty_like(g) if out is None else out
    np.bitwise_and(g.view(bits), mask, out=result.view(bits))
    return result


def relu_grad(x, g, out=None):
    """SELECT_V2(x > 0, g, 0)."""
    return _masked(g, np.greater(x, 0), out)


def relu6_grad(x, g, out=None):
    """SELECT_V2(0 < x < 6, g, 0)."""
    on = np.greater(x, 0)
    np.logical_and(on, np.less(x, 6), out=on)
    return _masked(g, on, out)
