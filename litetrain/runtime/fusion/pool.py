"""The gradients of MAX_POOL_2D and AVERAGE_POOL_2D as one step each.

ops/pool.py routes max pool's gradient to each window's first maximum. When the windows tile the
image it gathers their pixels (RESHAPE/TRANSPOSE), picks the first maximum (ARG_MAX, ONE_HOT) and
multiplies the gradient in (MUL); fused, each tap compares its pixels with the window's maximum,
the first tap that holds it takes g (one times g, as the one-hot product gives), and NaN windows go
to their first NaN (as ARG_MAX). For overlapping or padded windows the rule keeps a running maximum
and its tap (STRIDED_SLICE, GREATER, SELECT_V2 per tap: the first tap inside the image is taken,
then a later one only when strictly greater) and then spreads each tap's share (EQUAL, SELECT_V2,
PAD, ADD); fused, the same running comparison over the pixels each tap meets, then each tap's share
added into place in the same order. Average pool's gradient is the depthwise input gradient of an
all-ones filter applied to g divided by the window counts: the depthwise input gradient's kernel on
the same quotient. The subgraphs are found as depthwise.py finds a rule's (traced at plan time).
"""
from __future__ import annotations

import numpy as np

from ...ops.conv import geometry
from .depthwise import InputGradient, RuleMatches, Taps
from .graph import Fused


def _pool_taps(shape, attrs):
    """The Taps of a pool's window over an input of `shape`."""
    return Taps(shape[1], shape[2], attrs["filter_height"], attrs["filter_width"], attrs["stride_h"],
                attrs["stride_w"], 1, 1, attrs["padding"])


class _Buffers:
    """Scratch arrays kept between calls (never handed out)."""

    def __init__(self):
        self.kept = {}

    def get(self, name, shape, dtype):
        """The buffer `name`, made anew when its shape or dtype changes."""
        if name not in self.kept or self.kept[name].shape != shape or self.kept[name].dtype != dtype:
            self.kept[name] = np.empty(shape, dtype)
        return self.kept[name]


class MaxPoolTiles:
    """d input of a max pool whose windows tile the image, from (x, g): each window's first maximum
    (a NaN window's first NaN) gets g, multiplied by one as ONE_HOT * g is; the others 0 * g."""

    def __init__(self, x_shape, attrs):
        self.taps = _pool_taps(x_shape, attrs)
        self.k = (attrs["filter_height"], attrs["filter_width"])
        self.buffers = _Buffers()

    def _split(self, t):
        """The tiled part of a [N, H, W, C] tensor as [N, Ho, kh, Wo, kw, C] (a view)."""
        (ho, wo), (kh, kw) = self.taps.out, self.k
        return t[:, :ho * kh, :wo * kw].reshape(t.shape[0], ho, kh, wo, kw, t.shape[3])

    def __call__(self, x, g):
        (ho, wo), (kh, kw) = self.taps.out, self.k
        tiled = (ho * kh, wo * kw) == x.shape[1:3]
        dx = np.empty(x.shape, np.result_type(x, g)) if tiled else np.zeros(x.shape, np.result_type(x, g))
        xs, dxs = self._split(x), self._split(dx)
        taps = [(i, j) for i in range(kh) for j in range(kw)]
        top = self.buffers.get("top", g.shape, x.dtype)
        hit, taken = self.buffers.get("hit", g.shape, bool), self.buffers.get("taken", g.shape, bool)
        np.copyto(top, xs[:, :, 0, :, 0])
        for i, j in taps[1:]:
            np.maximum(top, xs[:, :, i, :, j], out=top)
        for t, (i, j) in enumerate(taps):
            np.equal(xs[:, :, i, :, j], top, out=hit if t else taken)
            if t:
                np.greater(hit, taken, out=hit)  # equal to the maximum, and no earlier tap was
                np.logical_or(taken, hit, out=taken)
            np.multiply(g, hit if t else taken, out=dxs[:, :, i, :, j])
        if not taken.all():  # windows holding NaN: ARG_MAX picks their first NaN
            self._first_nan(xs, dxs, g, taps, np.logical_not(taken))
        return dx

    @staticmethod
    def _first_nan(xs, dxs, g, taps, left):
        """g written at the first NaN of each window `left` without a maximum (all taps' 0 * g are in)."""
        for i, j in taps:
            hit = np.isnan(xs[:, :, i, :, j]) & left
            left &= ~hit
            np.copyto(dxs[:, :, i, :, j], g, where=hit)


class MaxPoolTaps:
    """d input of a max pool with overlapping or padded windows, from (x, g): the running maximum of
    the taps inside the image (the first taken, later ones when strictly greater), then g added at
    each window's chosen tap, tap by tap."""

    def __init__(self, x_shape, attrs):
        self.taps = _pool_taps(x_shape, attrs)
        self.kw = attrs["filter_width"]
        self.buffers = _Buffers()

    def __call__(self, x, g):
        taps, kw = self.taps, self.kw
        best = self.buffers.get("best", g.shape, x.dtype)
        chosen = self.buffers.get("chosen", g.shape, np.int32)
        take = self.buffers.get("take", g.shape, bool)
        chosen.fill(-1)
        for i, j, rows, cols in taps.taps:
            seen, b, c = taps.inputs(x, rows, cols), taps.outputs(best, rows, cols), taps.outputs(chosen, rows, cols)
            t = taps.outputs(take, (0, rows[1] - rows[0]), (0, cols[1] - cols[0]))
            np.greater(seen, b, out=t)
            np.logical_or(t, c < 0, out=t)  # the window's first tap inside the image
            np.copyto(b, seen, where=t)
            np.copyto(c, i * kw + j, where=t)
        dx = np.zeros(x.shape, np.result_type(x, g))
        for i, j, rows, cols in taps.taps:
            t = taps.outputs(take, (0, rows[1] - rows[0]), (0, cols[1] - cols[0]))
            np.equal(taps.outputs(chosen, rows, cols), i * kw + j, out=t)
            into = taps.inputs(dx, rows, cols)
            np.add(into, taps.outputs(g, rows, cols), out=into, where=t)
        return dx


class AveragePool:
    """d input of an average pool from g: g divided by each window's pixel count, spread over the
    window by the depthwise input gradient's kernel with an all-ones filter."""

    def __init__(self, x_shape, attrs, counts):
        c = x_shape[3]
        self.counts = counts
        self.ones = np.ones((1, attrs["filter_height"], attrs["filter_width"], c), counts.dtype)
        self.spread = InputGradient(x_shape, self.ones.shape, {
            "stride_h": attrs["stride_h"], "stride_w": attrs["stride_w"], "dilation_h_factor": 1,
            "dilation_w_factor": 1, "padding": attrs["padding"]})

    def __call__(self, g):
        return self.spread(np.divide(g, self.counts), self.ones)


# -- the patterns ------------------------------------------------------------------------------------------
def _max_pool(graph, k, found):
    """The fused gradient of max pool node k (tiles or taps, as the rule chose), reading x and g."""
    x, g = found.bound.get(("input", 0)), found.bound.get(("grad", 0))
    if x is None or g is None or set(found.bound) - {("input", 0), ("grad", 0)}:
        return None
    attrs, shape = graph.node(k).attrs, tuple(graph.shape(x))
    tiles = (attrs["filter_height"], attrs["filter_width"]) == (attrs["stride_h"], attrs["stride_w"]) and not any(
        geometry(size, f, s, 1, attrs["padding"])[1:] != (0, 0)
        for size, f, s in ((shape[1], attrs["filter_height"], attrs["stride_h"]),
                           (shape[2], attrs["filter_width"], attrs["stride_w"])))  # as the rule decides
    kernel = MaxPoolTiles(shape, attrs) if tiles else MaxPoolTaps(shape, attrs)
    return Fused("max pool gradient", kernel, found.nodes, [x, g], [found.output])


def _average_pool(graph, k, found):
    """The fused gradient of average pool node k, reading g (its window counts from the graph)."""
    g = found.bound.get(("grad", 0))
    if g is None or set(found.bound) - {("grad", 0)}:
        return None
    divisors = [graph.node(n).inputs[1] for n in found.nodes if graph.op(n) == "div" and graph.node(n).inputs[0] == g]
    if len(divisors) != 1 or graph.constant(divisors[0]) is None:  # g / the window counts, a constant
        return None
    x_shape = tuple(graph.shape(graph.node(k).inputs[0]))
    return Fused("average pool gradient", AveragePool(x_shape, graph.node(k).attrs, graph.constant(divisors[0])), found.nodes, [g],
                 [found.output])


GRADIENTS = RuleMatches({"max_pool_2d": [(0, _max_pool)], "average_pool_2d": [(0, _average_pool)]})


def match(graph, k):
    """A pool gradient whose first node is k, or None."""
    return GRADIENTS.match(graph, k)
