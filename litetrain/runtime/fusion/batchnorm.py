"""Batch normalisation in training mode (frontend/nn/norm.py, the PyTorch importer's batch norm) as
three fused steps: the batch statistics, the normalisation, and the gradient autodiff emits.

Traced, a layer normalising x of shape [..., C] over every axis but the last is
    mean = MEAN(x, rows); c = SUB(x, mean); var = MEAN(SQUARE(c), rows)
    r = RSQRT(ADD(var, eps)); s = MUL(r, gamma); y = ADD(MUL(c, s), beta)
(gamma and beta optional), and its gradient, from the ops' own rules, about twenty nodes:
SUM(g), SUM(g * c), MUL(dS, gamma), MUL(dS, r), the rsqrt rule, the mean rules' DIV, RESHAPE and
BROADCAST_TO, SQUARE's rule, SUB's NEG and SUM, and two ADDs accumulating the gradient of c and x.
Each op there is cheap, but NumPy reduces over the leading axes and broadcasts a short
per-channel vector slowly. Fused, the sums over rows are BLAS products with vectors of ones, and
per-channel arithmetic runs on a wide view [R / k, k * C] against the vector repeated k times.
The kernels compute the graph's own expressions in the graph's order on the same operands; what
differs is float rounding: a sum over rows is all but correctly rounded (`Rows`), where op by op it
is one long float32 accumulation, and the sum of the gradient of c is taken in closed form
(s sum(g) + 2 dvn sum(c)). The moving-average updates read
the batch statistics, which are outputs of the statistics step: the three steps are separate so
that every value is made before its first user.
"""
from __future__ import annotations

import math

import numpy as np

from .graph import Fused

DTYPES = ("float32", "float64")
WIDE = 16384  # the longest row of the wide view; NumPy's broadcasting is fast from ~8K elements on
PART = 128  # rows summed in float32 before the partial sums are added in float64


# -- matching helpers --------------------------------------------------------------------------------
def _static(graph, tensor):
    """The shape of a float32/float64 tensor whose dims are all known, else None."""
    if tensor is None or tensor < 0 or graph.dtype(tensor) not in DTYPES:
        return None
    shape = tuple(graph.shape(tensor))
    return shape if None not in shape else None


def _scalar(graph, tensor, value=None):
    """Whether `tensor` is a constant with one element (equal to `value`, when given)."""
    data = graph.constant(tensor) if tensor is not None and tensor >= 0 else None
    if data is None or isinstance(data, str) or np.size(data) != 1:
        return False
    return value is None or float(np.asarray(data).reshape(())) == value


def _made(graph, tensor, op):
    """The node making `tensor` with op `op`, or None."""
    return graph.made_by(tensor, op) if tensor is not None and tensor >= 0 else None


def _operands(graph, k, op):
    """The two inputs of node k when it is the binary `op` without a fused activation, else None."""
    if k is None or graph.op(k) != op:
        return None
    node = graph.node(k)
    if len(node.inputs) != 2 or node.attrs.get("fused_activation_function", "NONE") != "NONE":
        return None
    return list(node.inputs)


def _split(pair, first):
    """(the operand `first`, the other one) when `first` is one of the two, else None."""
    if pair is None or first not in pair:
        return None
    return first, pair[1] if pair[0] == first else pair[0]


def _out(graph, k):
    """The (first) output of node k."""
    return graph.node(k).outputs[0]


def _rows_reduction(graph, k, op, x):
    """Whether node k is `op`(x, every axis but the last) with keep_dims False."""
    if k is None or graph.op(k) != op:
        return False
    node = graph.node(k)
    shape = _static(graph, x)
    if node.inputs[0] != x or shape is None or len(shape) < 2 or node.attrs.get("keep_dims", False):
        return False
    axes = graph.constant(node.inputs[1])
    if axes is None or isinstance(axes, str):
        return False
    axes = sorted({int(a) % len(shape) for a in np.asarray(axes).reshape(-1)})
    return axes == list(range(len(shape) - 1)) and tuple(graph.shape(_out(graph, k))) == shape[-1:] and \
        min(shape) > 0


def _user(graph, tensor, test):
    """The first node using `tensor` for which test(node index) holds, or None."""
    return next((u for u in graph.consumers.get(tensor, []) if test(u)), None)


def _used_outside(graph, tensor, nodes) -> bool:
    """Whether a node other than `nodes`, or the function's caller, needs `tensor`."""
    return tensor in graph.function_outputs or bool(set(graph.consumers.get(tensor, [])) - set(nodes))


def _channel_vector(graph, tensor, channels) -> bool:
    """Whether `tensor` is a float vector of `channels` elements."""
    return _static(graph, tensor) == (channels,)


# -- the wide view and scratch memory ----------------------------------------------------------------
class Scratch:
    """One work buffer per dtype shared by the fused batch-norm steps of a plan: they run one at a
    time and never hand it out. Grown to the largest size asked for."""

    def __init__(self):
        self.buffers = {}

    def get(self, size, dtype):
        """`size` elements of the buffer of `dtype`."""
        buffer = self.buffers.get(dtype)
        if buffer is None or buffer.size < size:
            buffer = self.buffers[dtype] = np.empty(size, dtype)
        return buffer[:size]


def _scratch_of(graph) -> Scratch:
    """The scratch memory of the plan being built (made with its first batch-norm step)."""
    scratch = getattr(graph, "batchnorm_scratch", None)
    if scratch is None:
        scratch = graph.batchnorm_scratch = Scratch()
    return scratch


def _repeat(rows, channels):
    """The largest divisor k of `rows` with k * channels <= WIDE (at least 1)."""
    best = 1
    for d in range(1, math.isqrt(rows) + 1):
        if rows % d == 0:
            for k in (d, rows // d):
                if best < k and k * channels <= WIDE:
                    best = k
    return best


class Rows:
    """A [..., C] shape seen as R rows of C channels: sums over rows, and per-channel arithmetic on
    the wide view [R / k, k * C].

    A sum over rows adds runs of PART rows with BLAS (one batched product with ones), then those
    partial sums in float64: the result is all but correctly rounded, where one long float32
    accumulation (NumPy's, BLAS's) is off by ~1e-6 of the mean. Batch norm divides by the standard
    deviation, which turns an error in the mean into an error |mean| / std times larger."""

    def __init__(self, shape, dtype, scratch):
        self.shape, self.dtype, self.scratch = tuple(shape), np.dtype(dtype), scratch
        self.channels = shape[-1]
        self.rows = int(np.prod(shape[:-1], dtype=np.int64))
        self.repeat = _repeat(self.rows, self.channels)
        self.wide_shape = (self.rows // self.repeat, self.repeat * self.channels)
        self.count = np.asarray(self.rows, self.dtype)
        part = min(PART, self.rows)
        self.parts, self.full = self.rows // part, self.rows // part * part
        self.ones = np.ones(part, self.dtype)
        self.part_ones = np.ones(self.parts, np.float64)

    def wide(self, a):
        """`a` (of the shape) seen as the wide view."""
        return a.reshape(self.wide_shape)

    def tiled(self, vector):
        """A per-channel vector repeated along a row of the wide view."""
        return np.tile(vector, self.repeat) if self.repeat > 1 else vector

    def sum(self, a):
        """The sum over rows (a vector of C)."""
        rows = a.reshape(self.rows, self.channels)
        partial = np.matmul(self.ones, rows[:self.full].reshape(self.parts, -1, self.channels))
        total = np.dot(self.part_ones, partial)
        if self.full < self.rows:
            total += np.dot(self.ones[:self.rows - self.full], rows[self.full:])
        return total.astype(self.dtype)

    def work(self):
        """A scratch array of the full shape, seen wide (never handed out)."""
        return self.scratch.get(self.rows * self.channels, self.dtype).reshape(self.wide_shape)

    def new(self):
        """A new array of the shape (an output)."""
        return np.empty(self.shape, self.dtype)


def _pick(values: dict, names):
    """The values named, one array or a tuple (a step's outputs)."""
    if len(names) == 1:
        return values[names[0]]
    return tuple(values[n] for n in names)


def match(graph, k):
    """A batch-norm step anchored at node k (statistics at the first MEAN, normalisation at the
    MUL(c, s), gradient at the ADD making the gradient of x), or None."""
    op = graph.op(k)
    if op == "mean":
        return _match_statistics(graph, k)
    if op == "mul":
        return _match_normalisation(graph, k)
    if op == "add":
        return _match_gradient(graph, k)
    return None


# -- statistics ----------------------------------------------------------------------------------------
def _statistics_nodes(graph, k):
    """(nodes, x, mean, c, var) when node k is the MEAN of MEAN(x), SUB(x, mean), SQUARE, MEAN."""
    if k is None or graph.op(k) != "mean":
        return None
    x = graph.node(k).inputs[0]
    if not _rows_reduction(graph, k, "mean", x):
        return None
    mean = _out(graph, k)
    ks = _user(graph, mean, lambda u: _operands(graph, u, "sub") == [x, mean])
    if ks is None:
        return None
    c = _out(graph, ks)
    kq = _user(graph, c, lambda u: graph.op(u) == "square" and graph.node(u).inputs == [c])
    if kq is None:
        return None
    sq = _out(graph, kq)
    kv = _user(graph, sq, lambda u: _rows_reduction(graph, u, "mean", sq))
    if kv is None:
        return None
    return [k, ks, kq, kv], x, mean, c, _out(graph, kv)


def _match_statistics(graph, k):
    """The statistics step at the MEAN of x, or None."""
    found = _statistics_nodes(graph, k)
    if found is None:
        return None
    nodes, x, mean, c, var = found
    names = [n for n, t in (("mean", mean), ("centered", c), ("variance", var)) if _used_outside(graph, t, nodes)]
    outputs = [{"mean": mean, "centered": c, "variance": var}[n] for n in names]
    if not outputs or not graph.fusable(nodes, outputs):
        return None
    rows = Rows(graph.shape(x), graph.dtype(x), _scratch_of(graph))
    return Fused("batch norm statistics", BatchStatistics(rows, names), sorted(nodes), [x], outputs)


class BatchStatistics:
    """x -> the batch mean over rows, x - mean, and the mean of its squares (the outputs named)."""

    def __init__(self, rows: Rows, names):
        self.rows, self.names = rows, names

    def __call__(self, x):
        rows = self.rows
        mean = np.divide(rows.sum(x), rows.count)
        centered = rows.new()
        wide = np.subtract(rows.wide(x), rows.tiled(mean), out=rows.wide(centered))
        variance = np.divide(rows.sum(np.multiply(wide, wide, out=rows.work())), rows.count)
        return _pick({"mean": mean, "centered": centered, "variance": variance}, self.names)


# -- normalisation -------------------------------------------------------------------------------------
def _inverse_std(graph, r, var):
    """(nodes, eps tensor) when r = RSQRT(ADD(var, eps)) with eps a constant scalar, else None."""
    kr = _made(graph, r, "rsqrt")
    if kr is None:
        return None
    ve = graph.node(kr).inputs[0]
    ka = _made(graph, ve, "add")
    pair = _split(_operands(graph, ka, "add"), var)
    if pair is None or not _scalar(graph, pair[1]) or graph.dtype(pair[1]) != graph.dtype(var):
        return None
    return [ka, kr], pair[1]


def _scale(graph, s, channels):
    """(r, gamma or None, nodes) for s = MUL(r, gamma) with r made by RSQRT, or s = r itself."""
    if _made(graph, s, "rsqrt") is not None:
        return s, None, []
    km = _made(graph, s, "mul")
    pair = _operands(graph, km, "mul")
    if pair is None:
        return None
    for r, gamma in (pair, pair[::-1]):
        if _made(graph, r, "rsqrt") is not None and _channel_vector(graph, gamma, channels):
            return r, gamma, [km]
    return None


def _match_normalisation(graph, k):
    """The normalisation step at MUL(c, s) (with the scale, the shift and the inverse deviation), or None."""
    pair = _operands(graph, k, "mul")
    if pair is None:
        return None
    for c, s in (pair, pair[::-1]):
        shape = _static(graph, c)
        ks = _made(graph, c, "sub")
        if shape is not None and len(shape) >= 2 and ks is not None and _channel_vector(graph, s, shape[-1]):
            break
    else:
        return None
    stats = _statistics_nodes(graph, _made(graph, graph.node(ks).inputs[1], "mean"))
    scaled = _scale(graph, s, shape[-1])
    if stats is None or stats[3] != c or scaled is None:
        return None
    r, gamma, scale_nodes = scaled
    inverse = _inverse_std(graph, r, stats[4])
    if inverse is None:
        return None
    y0 = _out(graph, k)
    users = graph.consumers.get(y0, [])
    kb, beta = None, None
    if len(users) == 1 and y0 not in graph.function_outputs:
        shifted = _split(_operands(graph, users[0], "add"), y0)
        if shifted is not None and _channel_vector(graph, shifted[1], shape[-1]):
            kb, beta = users[0], shifted[1]
    nodes = inverse[0] + scale_nodes + [k] + ([kb] if kb is not None else [])
    named = {"shifted": graph.node(inverse[0][0]).outputs[0], "inverse": r, "scale": s,
             "normalised": _out(graph, kb if kb is not None else k)}
    names = [n for n, t in named.items() if _used_outside(graph, t, nodes) and (n != "scale" or gamma is not None)]
    outputs = [named[n] for n in names]
    if not outputs or not graph.fusable(nodes, outputs):
        return None
    rows = Rows(shape, graph.dtype(c), _scratch_of(graph))
    kernel = Normalise(rows, graph.constant(inverse[1]), gamma is not None, beta is not None, names)
    inputs = [stats[4], c] + [t for t in (gamma, beta) if t is not None]
    return Fused("batch norm normalisation", kernel, sorted(nodes), inputs, outputs)


class Normalise:
    """(var, c, gamma?, beta?) -> rsqrt(var + eps), times gamma: s; c * s + beta (outputs named)."""

    def __init__(self, rows: Rows, epsilon, scaled, shifted, names):
        self.rows, self.epsilon, self.scaled, self.shifted, self.names = rows, epsilon, scaled, shifted, names

    def __call__(self, variance, centered, *params):
        rows = self.rows
        shifted = np.add(variance, self.epsilon)
        inverse = np.asarray(1 / np.sqrt(shifted), dtype=shifted.dtype)
        scale = np.multiply(inverse, params[0]) if self.scaled else inverse
        normalised = rows.new()
        wide = np.multiply(rows.wide(centered), rows.tiled(scale), out=rows.wide(normalised))
        if self.shifted:
            np.add(wide, rows.tiled(params[-1]), out=wide)
        values = {"shifted": shifted, "inverse": inverse, "scale": scale, "normalised": normalised}
        return _pick(values, self.names)


# -- gradient ------------------------------------------------------------------------------------------
def _spread(graph, t, shape):
    """(v, nodes) when t = BROADCAST_TO(RESHAPE(v, [1, ..., 1, C]), shape) for a vector v of C."""
    kb = _made(graph, t, "broadcast_to")
    if kb is None or _static(graph, t) != shape:
        return None
    kept = graph.node(kb).inputs[0]
    kr = _made(graph, kept, "reshape")
    if kr is None or _static(graph, kept) != (1,) * (len(shape) - 1) + shape[-1:]:
        return None
    v = graph.node(kr).inputs[0]
    return (v, [kr, kb]) if _channel_vector(graph, v, shape[-1]) else None


def _divided(graph, t):
    """(numerator, divisor, node) when t = DIV(numerator, a constant scalar), else None."""
    kd = _made(graph, t, "div")
    pair = _operands(graph, kd, "div")
    if pair is None or not _scalar(graph, pair[1]) or graph.dtype(pair[1]) != graph.dtype(t):
        return None
    return pair[0], pair[1], kd


def _by_constant(graph, t, value):
    """(the other operand, node) when t = MUL(other, constant `value`) in either order."""
    k = _made(graph, t, "mul")
    pair = _operands(graph, k, "mul")
    if pair is None:
        return None
    for other, c in (pair, pair[::-1]):
        if _scalar(graph, c, value) and graph.dtype(c) == graph.dtype(t) and not _scalar(graph, other):
            return other, k, c
    return None


def _mean_gradient(graph, dx_pair, shape):
    """(dc, nodes, divisor) when the gradient of x is ADD(dc, spread(DIV(SUM(NEG(dc)), n)))."""
    for dc, spread in (dx_pair, dx_pair[::-1]):
        found = _spread(graph, spread, shape)
        divided = found and _divided(graph, found[0])
        if not divided:
            continue
        ks = graph.made_by(divided[0])
        negated = graph.node(ks).inputs[0] if graph.op(ks) == "sum" else None
        kn = _made(graph, negated, "neg")
        if kn is not None and graph.node(kn).inputs == [dc] and _rows_reduction(graph, ks, "sum", negated):
            return dc, found[1] + [divided[2], ks, kn], divided[1]
    return None


def _centered_gradient(graph, dc, shape):
    """(g, s, c, dvn, nodes, two) when dc = ADD(MUL(g, s), MUL(MUL(spread(dvn), c), 2))."""
    pair = _operands(graph, graph.made_by(dc), "add")
    if pair is None:
        return None
    for gs, m2 in (pair, pair[::-1]):
        doubled = _by_constant(graph, m2, 2.0)
        product = doubled and _operands(graph, graph.made_by(doubled[0]), "mul")
        direct = _operands(graph, graph.made_by(gs), "mul")
        if not product or direct is None:
            continue
        for spread, c in (product, product[::-1]):
            found = _spread(graph, spread, shape)
            for g, s in (direct, direct[::-1]):
                if found and _static(graph, c) == shape and _static(graph, g) == shape and \
                        _channel_vector(graph, s, shape[-1]):
                    nodes = [graph.made_by(dc), doubled[1], graph.made_by(doubled[0]), graph.made_by(gs)]
                    return g, s, c, found[0], nodes + found[1], doubled[2]
    return None


def _cubed(graph, t):
    """(r, nodes) when t = MUL(r, SQUARE(r)) in either order."""
    k = _made(graph, t, "mul")
    pair = _operands(graph, k, "mul")
    if pair is None:
        return None
    for r, sq in (pair, pair[::-1]):
        kq = _made(graph, sq, "square")
        if kq is not None and graph.node(kq).inputs == [r]:
            return r, [k, kq]
    return None


def _variance_gradient(graph, dvn, g, c, s):
    """(r, gamma or None, dS, nodes, divisor, half) when dvn = DIV(MUL(MUL(dr, -0.5), MUL(r, SQUARE(r))), n)
    with dr = MUL(dS, gamma) (s = MUL(r, gamma)) or dr = dS (s = r), and dS = SUM(MUL(g, c))."""
    divided = _divided(graph, dvn)
    pair = divided and _operands(graph, graph.made_by(divided[0]), "mul")
    if not pair:
        return None
    for t, r3 in (pair, pair[::-1]):
        halved, cubed = _by_constant(graph, t, -0.5), _cubed(graph, r3)
        if not halved or not cubed:
            continue
        r, dr = cubed[0], halved[0]
        scaled = _dscale(graph, dr, r, s)
        if scaled is None:
            continue
        gamma, ds, scale_nodes = scaled
        product = graph.node(ds).inputs[0]
        kp = graph.made_by(product)
        if _operands(graph, kp, "mul") not in ([g, c], [c, g]) or not _rows_reduction(graph, ds, "sum", product):
            continue
        nodes = [divided[2], graph.made_by(divided[0]), halved[1]] + cubed[1] + scale_nodes + [ds, kp]
        return r, gamma, _out(graph, ds), nodes, divided[1], halved[2]
    return None


def _dscale(graph, dr, r, s):
    """(gamma, node making dS, nodes) for dr = MUL(dS, gamma) with s = MUL(r, gamma), or
    (None, node making dS, []) for dr = dS with s = r."""
    if s == r:
        ds = graph.made_by(dr)
        return (None, ds, []) if graph.op(ds) == "sum" else None
    made = _operands(graph, graph.made_by(s), "mul")
    gamma = _split(made, r)
    pair = _operands(graph, graph.made_by(dr), "mul")
    if gamma is None or pair is None:
        return None
    for ds_out, other in (pair, pair[::-1]):
        ds = graph.made_by(ds_out)
        if other == gamma[1] and graph.op(ds) == "sum":
            return gamma[1], ds, [graph.made_by(dr)]
    return None


def _match_gradient(graph, k):
    """The gradient step at the ADD making the gradient of x, or None."""
    pair = _operands(graph, k, "add")
    shape = _static(graph, _out(graph, k)) if pair is not None else None
    if shape is None or len(shape) < 2:
        return None
    mean_part = _mean_gradient(graph, pair, shape)
    centered = mean_part and _centered_gradient(graph, mean_part[0], shape)
    if not centered:
        return None
    g, s, c, dvn, centered_nodes, two = centered
    variance = _variance_gradient(graph, dvn, g, c, s)
    if variance is None:
        return None
    r, gamma, ds, variance_nodes, var_count, half = variance
    nodes = [k] + mean_part[1] + centered_nodes + variance_nodes
    named = {"x": _out(graph, k)}
    kg = None if gamma is None else _user(graph, ds, lambda u: _operands(graph, u, "mul") in ([ds, r], [r, ds]))
    if kg is not None:
        nodes.append(kg)
        named["gamma"] = _out(graph, kg)
    kb = _user(graph, g, lambda u: _rows_reduction(graph, u, "sum", g))
    if kb is not None:
        nodes.append(kb)
        named["beta"] = _out(graph, kb)
    if len(set(nodes)) != len(nodes):
        return None
    names = [n for n in ("beta", "gamma", "x") if n in named]
    outputs = [named[n] for n in names]
    if not graph.fusable(nodes, outputs):
        return None
    constants = [graph.constant(t) for t in (half, var_count, two, mean_part[2])]
    kernel = NormalisationGradient(Rows(shape, graph.dtype(g), _scratch_of(graph)), constants, names)
    inputs = [g, c, s, r] + ([gamma] if gamma is not None else [])
    return Fused("batch norm gradient", kernel, sorted(nodes), inputs, outputs)


class NormalisationGradient:
    """(g, c, s, r, gamma?) -> the gradients of beta, gamma and x (the outputs named), by the graph's
    expressions: dS = sum(g c); dvn = (dS gamma -0.5) (r r^2) / n; dc = g s + c (2 dvn);
    dx = dc - sum(dc) / n, with sum(dc) in closed form, s sum(g) + 2 dvn sum(c)."""

    def __init__(self, rows: Rows, constants, names):
        self.rows, self.names = rows, names
        self.half, self.variance_count, self.two, self.mean_count = constants

    def sums(self, g, centered):
        """sum(g), sum(g c) and sum(c) over rows."""
        rows = self.rows
        product = np.multiply(rows.wide(g), rows.wide(centered), out=rows.work())
        return rows.sum(g), rows.sum(product), rows.sum(centered)

    def __call__(self, g, centered, scale, inverse, *gamma):
        db, ds, c_sum = self.sums(g, centered)
        values = {"beta": db}
        if gamma:
            values["gamma"] = np.multiply(ds, inverse)
            ds = np.multiply(ds, gamma[0])
        dv = np.multiply(np.multiply(ds, self.half), np.multiply(inverse, np.square(inverse)))
        twice = np.multiply(np.divide(dv, self.variance_count), self.two)
        total = np.add(np.multiply(scale, db), np.multiply(twice, c_sum))
        shift = np.divide(np.negative(total), self.mean_count)
        values["x"] = self.assemble(g, centered, scale, twice, shift)
        return _pick(values, self.names)

    def assemble(self, g, centered, scale, twice, shift):
        """dx = (g s + c twice) + shift."""
        rows = self.rows
        dx = rows.new()
        wide = np.multiply(rows.wide(g), rows.tiled(scale), out=rows.wide(dx))
        np.add(wide, np.multiply(rows.wide(centered), rows.tiled(twice), out=rows.work()), out=wide)
        np.add(wide, rows.tiled(shift), out=wide)
        return dx
