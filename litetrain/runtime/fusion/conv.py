"""The filter gradient of CONV_2D as one step: one matrix product on the NHWC input.

ops/conv.py's gradient rule writes the filter gradient of a convolution (other than 1x1 stride 1)
as TRANSPOSE(CONV_2D(TRANSPOSE(xf, [3, 1, 2, 0]), TRANSPOSE(g, [3, 1, 2, 0]), VALID, strides = the
convolution's dilations, dilations = its strides), [3, 1, 2, 0]), where xf is the input x padded
(PAD) and/or cut (SLICE) to the rows and columns the windows read: three transposes, a pad and a
convolution whose "filter" is the whole output gradient. Fused: dW = g^T @ im2col(x)
([O, N*Ho*Wo] times [N*Ho*Wo, kh*kw*C]), the padding and the cut folded into im2col; the same
products summed in another order (the op-by-op values up to float rounding).
"""
from __future__ import annotations

import numpy as np

from ...core.ir import FLOAT_DTYPES
from ...ops import conv as conv_ops
from .graph import Fused

TO_CHANNELS_FIRST = [3, 1, 2, 0]  # the rule's transpose, its own inverse


def _transpose_of(graph, k):
    """a when node k is TRANSPOSE(a, [3, 1, 2, 0]), else None."""
    if graph.op(k) != "transpose":
        return None
    a, perm = graph.node(k).inputs
    data = graph.constant(perm)
    if data is None or np.asarray(data).reshape(-1).tolist() != TO_CHANNELS_FIRST:
        return None
    return a


def _ints(graph, tensor, shape):
    """A constant int tensor of `shape` as nested lists, or None."""
    data = graph.constant(tensor)
    if data is None or not np.issubdtype(np.asarray(data).dtype, np.integer) or np.shape(data) != shape:
        return None
    return np.asarray(data).tolist()


def _fitted(graph, t):
    """(nodes, x, top, left): t is x padded (PAD) and/or cut (SLICE) along height and width by those
    nodes, x's first row and column at (top, left) in t (negative: cut); no nodes when t is neither."""
    nodes, top, left = [], 0, 0
    k = graph.made_by(t, "slice")
    if k is not None:
        src, begin, size = graph.node(k).inputs
        begin, size, shape = _ints(graph, begin, (4,)), _ints(graph, size, (4,)), graph.shape(src)
        if begin is None or size is None or begin[0] or begin[3] or size[0] not in (-1, shape[0]) or (
                size[3] not in (-1, shape[3])):
            return [], t, 0, 0
        nodes, top, left, t = [k], -begin[1], -begin[2], src
    k = graph.made_by(t, "pad")
    pads = None if k is None else _ints(graph, graph.node(k).inputs[1], (4, 2))
    if pads is not None and pads[0] == pads[3] == [0, 0] and min(pads[1] + pads[2]) >= 0:
        nodes, top, left, t = nodes + [k], top + pads[1][0], left + pads[2][0], graph.node(k).inputs[0]
    return nodes, t, top, left


def _known(graph, *tensors) -> bool:
    """Whether the tensors are rank-4 floats of one dtype with every dimension known."""
    dtypes = {graph.dtype(t) for t in tensors}
    return len(dtypes) == 1 and dtypes <= set(FLOAT_DTYPES) and all(
        len(graph.shape(t)) == 4 and None not in graph.shape(t) for t in tensors)


def match(graph, k):
    """The filter-gradient subgraph ending at TRANSPOSE node k, as one step, or None."""
    made = _transpose_of(graph, k)
    c = None if made is None else graph.made_by(made, "conv_2d")
    if c is None:
        return None
    conv = graph.node(c)
    a = conv.attrs
    if a["padding"] != "VALID" or a.get("fused_activation_function", "NONE") != "NONE":
        return None
    xt, gt, bias = (conv.inputs + [-1])[:3]
    kx, kg = graph.made_by(xt), graph.made_by(gt)
    xf, g = _transpose_of(graph, kx), _transpose_of(graph, kg)
    out = graph.node(k).outputs[0]
    if xf is None or g is None or kx == kg or not _known(graph, xf, g, out):
        return None
    b = None if bias < 0 else graph.constant(bias)
    inputs = [] if bias < 0 or (b is not None and not np.any(b)) else [bias]
    for fit, x, top, left in (_fitted(graph, xf), ([], xf, 0, 0)):
        nodes = sorted(set(fit + [kx, kg, c, k]))
        if _fits(graph, x, g, out) and graph.fusable(nodes, [out]):
            (_, kh, kw, _), strides = graph.shape(out), (a["dilation_h_factor"], a["dilation_w_factor"])
            kernel = FilterGradient(kh, kw, strides, (a["stride_h"], a["stride_w"]), top, left)
            return Fused("conv filter gradient", kernel, nodes, [x, g] + inputs, [out])
    return None


def _fits(graph, x, g, out) -> bool:
    """Whether x [N, H, W, C], g [N, Ho, Wo, O] and dW [O, kh, kw, C] agree."""
    if not _known(graph, x, g, out):
        return False
    (n, _, _, c), (gn, _, _, o), (out_o, _, _, out_c) = graph.shape(x), graph.shape(g), graph.shape(out)
    return n == gn and c == out_c and o == out_o


class FilterGradient:
    """dW [O, kh, kw, C] = g^T @ im2col(x) for a convolution of `strides` and `dilations` whose
    windows start at (-top, -left) in x; plus the bias of the rule's CONV_2D when it has one."""

    def __init__(self, kh, kw, strides, dilations, top, left):
        self.kh, self.kw, self.strides, self.dilations, self.top, self.left = kh, kw, strides, dilations, top, left

    def __call__(self, x, g, b=None):
        n, ho, wo, o = g.shape
        (sh, sw), (dh, dw), k = self.strides, self.dilations, self.kh * self.kw * x.shape[3]
        step = max(1, conv_ops.CACHED // max(1, ho * wo * k * x.itemsize))  # images per im2col, held in cache
        grad = np.zeros((k, o), np.result_type(x, g))  # [kh*kw*C, O]: both operands read as they lie
        for first in range(0, n, step):
            cols = conv_ops.im2col(x[first:first + step], self.kh, self.kw, sh, sw, dh, dw, self.top, self.left, ho, wo)
            np.add(grad, np.dot(cols.T, g[first:first + step].reshape(-1, o)), out=grad)
        if b is not None and np.any(b):
            np.add(grad, b, out=grad)
        return np.ascontiguousarray(grad.T).reshape(o, self.kh, self.kw, x.shape[3])
