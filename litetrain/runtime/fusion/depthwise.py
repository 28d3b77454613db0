"""DEPTHWISE_CONV_2D and its gradients as one step each, and how a gradient rule's subgraph is found.

ops/conv.py writes the input gradient of a depthwise convolution as DEPTHWISE_CONV_2D of the output
gradient with zeros interleaved for the strides (RESHAPE/PAD), padded so that every tap lands, with
the filter turned by 180 degrees (GATHER), then summed over the multiplier (RESHAPE/SUM); and its
filter gradient as, per kernel tap, the STRIDED_SLICE of the padded input that the tap reads times
the output gradient (MUL), summed over batch and pixels (SUM), RESHAPEd, the taps CONCATENATEd.
Fused: the input gradient, per phase of the strides, sums shifted products of the output gradient
padded once (no interleaved zeros), each pixel's taps in the op-by-op order, so its values are the
op-by-op values; the filter gradient sums each tap's products over the pixels the tap meets (einsum,
the same sequential float sums as SUM's but for a single channel, where SUM adds pairwise). The
convolution itself runs the op's own kernel with its buffers kept by the plan.

Finding a rule's subgraph (`RuleMatches`): the op's own gradient rule is traced at plan time on
placeholders with the forward node's declared shapes and attributes; the nodes of the graph that
compute the same subgraph (same ops, attributes, constants and wiring, back to the forward node's
operands and one free output gradient; every intermediate used only inside) become one step. A
pattern matches exactly what the rule emits for that node, and nothing else.
"""
from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass

import numpy as np

from ...core.ir import FLOAT_DTYPES, Function
from ...core.passes import eliminate_common_subexpressions
from ...core.registry import get_op
from ...core.trace import ProgramBuilder
from ...ops.conv import geometry
from .graph import Fused


# -- a gradient rule's subgraph ----------------------------------------------------------------------
@dataclass
class RuleGraph:
    """A gradient rule traced on placeholders: its function, each placeholder's role (("input" |
    "output" | "grad", position)), the tensor of each input's gradient (None when the rule gives
    none, or no node of its own) and the node (and output position) making each tensor."""
    fn: Function
    roles: dict
    results: list
    made_by: dict


def _frozen(value):
    """A hashable, comparable copy of an attribute value."""
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, np.generic):
        return value.item()
    return value


@functools.lru_cache(maxsize=256)
def traced_rule(op, attrs, inputs, outputs):
    """The RuleGraph of op's gradient rule for frozen attrs and (dtype, shape) specs of the inputs
    (None for an absent one) and outputs, or None when the rule refuses them."""
    fb = ProgramBuilder().function("rule")
    roles = {}

    def place(kind, specs):
        """Placeholders for the specs (None where absent), their roles noted."""
        tensors = []
        for pos, spec in enumerate(specs):
            tensors.append(None if spec is None else fb.input(f"{kind}{pos}", *spec))
            if spec is not None:
                roles[tensors[-1].index] = (kind, pos)
        return tensors

    ins, outs, grads = place("input", inputs), place("output", outputs), place("grad", outputs)
    try:
        result = get_op(op).vjp(ins, outs, grads, **dict(attrs))
    except Exception:  # noqa: BLE001  (a rule that refuses these shapes: nothing to find)
        return None
    fn = fb.fn
    fn.outputs = [r.index for r in result if r is not None]
    rename = eliminate_common_subexpressions(fn)
    made_by = {o: (node, pos) for node in fn.nodes for pos, o in enumerate(node.outputs)}
    results = [None if r is None else rename.get(r.index, r.index) for r in result]
    return RuleGraph(fn, roles, [r if r in made_by else None for r in results], made_by)


@dataclass
class Found:
    """A rule's subgraph in a graph: its nodes, the tensor it computes, and the graph tensor bound
    to each placeholder the subgraph reads ((kind, position) -> tensor)."""
    nodes: list
    output: int
    bound: dict


def _same_constant(data, expected) -> bool:
    """Whether a graph constant (None when the tensor is not one) equals the rule's constant."""
    return (data is not None and data.dtype == expected.dtype and data.shape == expected.shape
            and np.array_equal(data, expected))


def _same_node(graph, k, node, pos, g) -> bool:
    """Whether graph node k is rule node `node` making g as its output `pos`."""
    mine = graph.node(k)
    if mine.op != node.op or len(mine.inputs) != len(node.inputs) or mine.outputs[pos:pos + 1] != [g]:
        return False
    return all(_frozen(mine.attrs[a]) == _frozen(node.attrs[a]) for a in mine.attrs.keys() & node.attrs.keys())


def _unify(graph, rule, target, out, bound):
    """Found when graph tensor `out` is computed as rule tensor `target` is, with the placeholders
    in `bound` (rule tensor -> graph tensor) standing for those graph tensors; else None."""
    binding, nodes, todo, used = dict(bound), set(), [(target, out)], {}
    while todo:
        t, g = todo.pop()
        if t in rule.roles:
            used[rule.roles[t]] = g
        if t in binding:
            if binding[t] != g:
                return None
            continue
        binding[t] = g
        if t in rule.roles:  # the free placeholder: the output gradient
            if graph.dtype(g) != rule.fn.tensors[t].dtype:
                return None
            continue
        expected = rule.fn.tensors[t].data
        if expected is not None:
            if not _same_constant(graph.constant(g), np.asarray(expected)):
                return None
            continue
        node, pos = rule.made_by[t]
        k = graph.producer.get(g)
        if k is None or not _same_node(graph, k, node, pos, g):
            return None
        nodes.add(k)
        for ti, gi in zip(node.inputs, graph.node(k).inputs):
            if (ti < 0) != (gi < 0):
                return None
            if ti >= 0:
                todo.append((ti, gi))
    if any(graph.producer.get(g) in nodes for g in used.values()):
        return None
    return Found(sorted(nodes), out, used)


def _declared(graph, tensor):
    """(dtype, shape) of a tensor as the file declares it (the shapes the rule was traced with)."""
    if tensor < 0:
        return None
    info = graph.fn.tensors[tensor]
    return info.dtype, tuple(info.shape)


def _window_taps(graph, node) -> int:
    """The taps of a pool's or depthwise convolution's window: its gradient rule makes a node or more
    for each (a file's window may be any size: one a fused step could stand for is no larger than
    the function)."""
    if "filter_height" in node.attrs:
        return int(node.attrs["filter_height"]) * int(node.attrs["filter_width"])
    spec = _declared(graph, node.inputs[1]) if len(node.inputs) > 1 else None
    dims = spec[1] if spec is not None else ()
    return int(dims[1] or 0) * int(dims[2] or 0) if len(dims) == 4 else 0


def find(graph, k, which):
    """The subgraph computing the gradient of forward node k's input `which` with its own rule, or None."""
    node = graph.node(k)
    if _window_taps(graph, node) > len(graph.nodes):  # no subgraph of the function can be the rule's: not traced
        return None
    rule = traced_rule(node.op, _frozen(node.attrs), tuple(_declared(graph, i) for i in node.inputs),
                       tuple(_declared(graph, o) for o in node.outputs))
    if rule is None or rule.results[which] is None:
        return None
    target = rule.results[which]
    last, pos = rule.made_by[target]
    bound = {t: (node.inputs if kind == "input" else node.outputs)[p]
             for t, (kind, p) in rule.roles.items() if kind != "grad"}
    declared = rule.fn.tensors[target]
    for candidate in _nodes_of(graph).get(last.op, ()):
        outs = graph.node(candidate).outputs
        if candidate > k and pos < len(outs) and _declared(graph, outs[pos]) == (declared.dtype, declared.shape):
            found = _unify(graph, rule, target, outs[pos], bound)
            if found is not None and graph.fusable(found.nodes, [found.output]):
                return found
    return None


_BY_OP = weakref.WeakKeyDictionary()


def _nodes_of(graph):
    """{op: indices of the graph's nodes of that op}, made once per graph."""
    if graph not in _BY_OP:
        index = {}
        for k, n in enumerate(graph.nodes):
            index.setdefault(n.node.op, []).append(k)
        _BY_OP[graph] = index
    return _BY_OP[graph]


class RuleMatches:
    """The fused steps a pattern module makes of rule subgraphs, found once per graph and handed out
    at their first node. `makers`: {forward op: [(input position, maker(graph, k, found) -> Fused or None)]}."""

    def __init__(self, makers):
        self.makers = makers
        self._found = weakref.WeakKeyDictionary()

    def match(self, graph, k):
        """The fused step whose first node is k, or None."""
        if graph not in self._found:
            self._found[graph] = self._all(graph)
        return self._found[graph].get(k)

    def claims(self, graph, k) -> bool:
        """Whether node k belongs to one of the fused steps found in the graph."""
        self.match(graph, k)
        return any(k in f.nodes for f in self._found[graph].values())

    def _all(self, graph):
        """{first node: fused step} for every rule subgraph a maker accepts, none overlapping."""
        steps = {}
        for op, makers in self.makers.items():
            for k in _nodes_of(graph).get(op, ()):
                if not _plain(graph, k):
                    continue
                for which, maker in makers:
                    found = find(graph, k, which)
                    fused = None if found is None else maker(graph, k, found)
                    if fused is not None and not any(set(fused.nodes) & set(f.nodes) for f in steps.values()):
                        steps[min(fused.nodes)] = fused
        return steps


def _plain(graph, k) -> bool:
    """A forward node with no fused clamp, float operands and every shape known for this call."""
    node = graph.node(k)
    if node.attrs.get("fused_activation_function", "NONE") != "NONE":
        return False
    operands = [i for i in node.inputs[:2] if i >= 0] + list(node.outputs)
    return all(graph.dtype(i) in FLOAT_DTYPES and None not in graph.shape(i) for i in operands)


# -- kernels ------------------------------------------------------------------------------------------
def span(size, out, stride, offset):
    """(first, last, input position of first): the output positions [first, last) whose input position
    p * stride + offset lies inside [0, size)."""
    first = max(0, -(offset // stride))
    last = max(first, min(out, (size - 1 - offset) // stride + 1))
    return first, last, first * stride + offset


class Taps:
    """A window's kernel taps over a known input: for each tap (i, j) that meets the input, the output
    rows and columns it meets and the input pixels it reads there."""

    def __init__(self, h, w, kh, kw, sh, sw, dh, dw, padding):
        ho, pt, _ = geometry(h, kh, sh, dh, padding)
        wo, pl, _ = geometry(w, kw, sw, dw, padding)
        self.out, self.strides = (ho, wo), (sh, sw)
        self.taps = []
        for i in range(kh):
            for j in range(kw):
                rows, cols = span(h, ho, sh, i * dh - pt), span(w, wo, sw, j * dw - pl)
                if rows[0] < rows[1] and cols[0] < cols[1]:
                    self.taps.append((i, j, rows, cols))

    def outputs(self, t, rows, cols):
        """The output pixels (rows, cols) of a tap in a [N, Ho, Wo, C] tensor t (a view)."""
        return t[:, rows[0]:rows[1], cols[0]:cols[1]]

    def inputs(self, t, rows, cols):
        """The input pixels a tap reads at those output pixels, in a [N, H, W, C] tensor t (a view)."""
        (p0, p1, r), (q0, q1, s), (sh, sw) = rows, cols, self.strides
        return t[:, r:r + (p1 - p0 - 1) * sh + 1:sh, s:s + (q1 - q0 - 1) * sw + 1:sw]


def _window(graph, k):
    """The Taps of depthwise node k and its (x shape, filter shape)."""
    node = graph.node(k)
    x_shape, w_shape = graph.shape(node.inputs[0]), graph.shape(node.inputs[1])
    a = node.attrs
    taps = Taps(x_shape[1], x_shape[2], w_shape[1], w_shape[2], a["stride_h"], a["stride_w"],
                a["dilation_h_factor"], a["dilation_w_factor"], a["padding"])
    return taps, tuple(x_shape), tuple(w_shape)


def _kernel():
    """DEPTHWISE_CONV_2D's kernel (ops/conv.py), as registered."""
    return get_op("depthwise_conv_2d").kernel


class Convolution:
    """DEPTHWISE_CONV_2D's own kernel, with buffers kept between calls (its padded input, its sums)."""

    def __init__(self, attrs):
        self.attrs, self.scratch = attrs, {}

    def __call__(self, x, w, b=None):
        return _kernel()(x, w, b, **self.attrs, scratch=self.scratch)


def shift_sum(flat, shifts, weights, y, term):
    """y ([rows, period]) = the sum over k of flat[shifts[k]:][:rows * period] * weights[k] (rows of
    `period` values), added in the order of k, a block of rows (term's) at a time: each product
    one pass over long contiguous rows, the block's sums in cache."""
    rows, period = y.shape
    for a in range(0, rows, term.shape[0]):
        e = min(rows, a + term.shape[0])
        into, part = y[a:e], term[:e - a]
        for k, (shift, weight) in enumerate(zip(shifts, weights)):
            seen = flat[shift + a * period:shift + e * period].reshape(e - a, period)
            np.multiply(seen, weight, out=part if k else into)
            if k:
                np.add(into, part, out=into)


def _phase(size, k, stride, dilation, before, first):
    """Along one axis, the input positions first, first + stride, ... of a strided convolution's input
    gradient: (how many, the taps that land there in the turned filter's order, the output gradient
    position each reads at the first of them, relative to position 0 of the phase)."""
    taps = [i for i in range(k - 1, -1, -1) if (first + before - i * dilation) % stride == 0]
    return len(range(first, size, stride)), taps, [(first + before - i * dilation) // stride for i in taps]


class InputGradient:
    """d input of a depthwise convolution from (g, w). Per phase of the strides (the input pixels
    (r, s) + strides * (u, v)), the taps that land there read g at fixed shifts: with g padded once
    into a flat buffer, each phase is a sum of shifted products (shift_sum), never touching
    interleaved zeros. Each pixel's sum takes its taps in the op-by-op order (the turned filter's)."""

    def __init__(self, x_shape, w_shape, attrs):
        (n, h, wd, c), (_, kh, kw, cm) = x_shape, w_shape
        sh, sw, dh, dw, padding = (attrs["stride_h"], attrs["stride_w"], attrs["dilation_h_factor"],
                                   attrs["dilation_w_factor"], attrs["padding"])
        (ho, pt, _), (wo, pl, _) = geometry(h, kh, sh, dh, padding), geometry(wd, kw, sw, dw, padding)
        rows = [_phase(h, kh, sh, dh, pt, r) for r in range(sh)]
        cols = [_phase(wd, kw, sw, dw, pl, s) for s in range(sw)]
        low = (min([0] + [u for p in rows for u in p[2]]), min([0] + [v for p in cols for v in p[2]]))
        self.hw = (max(p[0] + max(p[2], default=0) for p in rows) - low[0],
                   max(p[0] + max(p[2], default=0) for p in cols) - low[1])  # g padded: every phase's reads
        self.low, self.g_hw, self.strides, self.shape, self.m = low, (ho, wo), (sh, sw), (n, h, wd, cm), cm // c
        self.phases = [(r, s, pr, pc) for r, pr in enumerate(rows) for s, pc in enumerate(cols)]
        self.period = cm * max(1, 4096 // cm)
        self.size = n * self.hw[0] * self.hw[1] * cm
        self.rows = -(-self.size // self.period)
        self.kept = {}
        self.taps = None  # small images, where the padded g would be mostly padding: tap by tap
        if 2 * self.hw[0] * self.hw[1] * sh * sw > 3 * h * wd:
            self.taps = Taps(h, wd, kh, kw, sh, sw, dh, dw, padding)

    def _tap_by_tap(self, g, w, dtype):
        """dx with each tap's products g * w added into the pixels the tap reads, taps in the same order."""
        dx = np.zeros(self.shape, dtype)
        for i, j, rows, cols in reversed(self.taps.taps):
            into = self.taps.inputs(dx, rows, cols)
            np.add(into, np.multiply(self.taps.outputs(g, rows, cols), w[0, i, j], dtype=dtype), out=into)
        return dx

    def _buffers(self, dtype):
        """The padded g (its zeros kept), the sums and a block of products, made once per dtype."""
        if not self.kept or self.kept["dtype"] != dtype:  # (np.dtype(None) is float64: never compare to None)
            tail = self.rows * self.period + (self.hw[0] * self.hw[1] + self.hw[1]) * self.shape[3]
            self.kept = {"dtype": dtype, "g": np.zeros(self.size + tail, dtype),
                         "y": np.empty((self.rows, self.period), dtype),
                         "term": np.empty((min(self.rows, max(1, (1 << 16) // self.period)), self.period), dtype)}
        return self.kept["g"], self.kept["y"], self.kept["term"]

    def __call__(self, g, w):
        n, h, wd, cm = self.shape
        dtype = np.result_type(g, w)
        dx = self._tap_by_tap(g, w, dtype) if self.taps is not None else self._shifted_sums(g, w, dtype)
        if self.m > 1:
            dx = dx.reshape(n, h, wd, cm // self.m, self.m).sum(axis=4)
        return dx.astype(g.dtype, copy=False)

    def _shifted_sums(self, g, w, dtype):
        """dx phase by phase, each phase's sums of shifted products on the padded g."""
        n, _, _, cm = self.shape
        (hh, ww), (ho, wo), (a, b) = self.hw, self.g_hw, self.low
        flat, y, term = self._buffers(dtype)
        padded = flat[:self.size].reshape(n, hh, ww, cm)
        padded[:, -a:min(hh, ho - a), -b:min(ww, wo - b)] = g[:, :min(ho, hh + a), :min(wo, ww + b)]
        dx = np.empty(self.shape, dtype)
        wide = np.tile(w[0].astype(dtype, copy=False), (1, 1, self.period // cm))
        for r, s, (count_h, taps_h, shifts_h), (count_w, taps_w, shifts_w) in self.phases:
            into = dx[:, r::self.strides[0], s::self.strides[1]]
            if not taps_h or not taps_w:
                into[...] = 0
                continue
            shifts = [((u - a) * ww + (v - b)) * cm for u in shifts_h for v in shifts_w]
            shift_sum(flat, shifts, [wide[i, j] for i in taps_h for j in taps_w], y, term)
            into[...] = y.reshape(-1)[:self.size].reshape(n, hh, ww, cm)[:, :count_h, :count_w]
        return dx


class FilterGradient:
    """d filter of a depthwise convolution from (x, g): per tap, the products of the input pixels
    the tap reads and the output gradient, summed over batch and pixels."""

    def __init__(self, taps: Taps, x_shape, w_shape):
        self.taps, self.w_shape = taps, w_shape
        self.c, self.m = x_shape[3], w_shape[3] // x_shape[3]

    def __call__(self, x, g):
        _, kh, kw, cm = self.w_shape
        dw = np.zeros((kh, kw, cm), np.result_type(x, g))
        for i, j, rows, cols in self.taps.taps:
            seen, grad = self.taps.inputs(x, rows, cols), self.taps.outputs(g, rows, cols)
            if self.m == 1:
                np.einsum("nhwc,nhwc->c", seen, grad, out=dw[i, j])
            else:
                np.einsum("nhwc,nhwcm->cm", seen, grad.reshape(grad.shape[:3] + (self.c, self.m)),
                          out=dw[i, j].reshape(self.c, self.m))
        return dw.reshape(1, kh, kw, cm)


# -- the patterns ----------------------------------------------------------------------------------------
def _input_gradient(graph, k, found):
    """The fused input gradient of depthwise node k, when the subgraph reads only g and the filter."""
    g, w = found.bound.get(("grad", 0)), found.bound.get(("input", 1))
    if g is None or w is None or set(found.bound) - {("grad", 0), ("input", 1)}:
        return None
    node = graph.node(k)
    kernel = InputGradient(tuple(graph.shape(node.inputs[0])), tuple(graph.shape(w)), node.attrs)
    return Fused("depthwise input gradient", kernel, found.nodes, [g, w], [found.output])


def _filter_gradient(graph, k, found):
    """The fused filter gradient of depthwise node k, when the subgraph reads only x and g."""
    x, g = found.bound.get(("input", 0)), found.bound.get(("grad", 0))
    if g is None or x is None or set(found.bound) - {("grad", 0), ("input", 0)}:
        return None
    taps, x_shape, w_shape = _window(graph, k)
    return Fused("depthwise filter gradient", FilterGradient(taps, x_shape, w_shape), found.nodes, [x, g],
                 [found.output])


GRADIENTS = RuleMatches({"depthwise_conv_2d": [(0, _input_gradient), (1, _filter_gradient)]})


def match(graph, k):
    """A depthwise gradient whose first node is k, or depthwise node k itself (its buffers kept)."""
    found = GRADIENTS.match(graph, k)
    if found is not None or graph.op(k) != "depthwise_conv_2d" or GRADIENTS.claims(graph, k):
        return found
    node = graph.node(k)
    if not all(None not in graph.shape(i) for i in node.inputs[:2] if i >= 0):
        return None
    inputs = [i for i in node.inputs if i >= 0]
    return Fused("depthwise convolution", Convolution(node.attrs), [k], inputs, list(node.outputs))
