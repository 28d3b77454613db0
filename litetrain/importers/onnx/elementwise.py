"""The ONNX importer's elementwise, activation, reduction, softmax, normalisation and matrix-product
handlers (see graph.py for what a handler gets and returns). Arithmetic on values known at import
(shapes, axes, constants) is done with NumPy there and then."""
from __future__ import annotations

import zlib

import numpy as np

from ... import ops
from ...frontend.nn.activations import elu, mish, softplus
from ...frontend.nn.norm import normalize
from .graph import HANDLERS, Dims, P, V, axis_of, float_tensor, handles

_NUMPY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Pow": np.power, "Max": np.maximum,
          "Min": np.minimum, "Equal": np.equal, "Less": np.less, "LessOrEqual": np.less_equal,
          "Greater": np.greater, "GreaterOrEqual": np.greater_equal, "And": np.logical_and,
          "Or": np.logical_or, "Xor": np.logical_xor, "Mod": np.mod}


def _np_div(a, b):
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":
        return (np.trunc(a / b)).astype(np.result_type(a, b))  # ONNX's integer division truncates
    return np.divide(a, b)


_NUMPY["Div"] = _np_div


def _mod(a, b):
    """A floor modulo (the divisor's sign; ONNX's Mod with fmod=0) of float tensors."""
    if a.dtype not in ("float32", "float64"):
        raise ValueError("Mod of integer tensors computed at run time is not supported (only of sizes and "
                         "constants); compute it in floats")
    return ops.sub(a, ops.mul(ops.floor(ops.div(a, b)), b))


def _as_array(ctx, v):
    c = ctx.const(v)
    return None if c is None else np.asarray(c)


def _bool(t):
    return t if t.dtype == "bool" else ops.not_equal(t, t.fb.const(0, t.dtype))


def _or(a, b):
    """a or b = not (not a and not b): LOGICAL_OR is not in litetrain's op set."""
    return ops.logical_not(ops.logical_and(ops.logical_not(a), ops.logical_not(b)))


_TRACED = {"Add": ops.add, "Sub": ops.sub, "Mul": ops.mul, "Div": ops.div, "Pow": None, "Max": ops.maximum,
           "Min": ops.minimum, "Equal": ops.equal, "Less": ops.less, "LessOrEqual": ops.less_equal,
           "Greater": ops.greater, "GreaterOrEqual": ops.greater_equal,
           "And": lambda a, b: ops.logical_and(_bool(a), _bool(b)), "Or": lambda a, b: _or(_bool(a), _bool(b)),
           "Xor": lambda a, b: ops.not_equal(_bool(a), _bool(b)), "Mod": _mod}


def _pow(a, b):
    """a ** b, with the usual exponents as cheaper ops (their gradients too)."""
    c = b.constant
    if c is not None and np.size(c) == 1:
        e = float(np.asarray(c).reshape(()))
        if e == 1.0:
            return a
        if e == 2.0:
            return ops.square(a)
        if e == 0.5:
            return ops.sqrt(a)
        if e == 3.0:
            return ops.mul(ops.square(a), a)
    return ops.pow_(a, b)


_TRACED["Pow"] = _pow


def _dims_binary(ctx, op, a, b):
    """Arithmetic on sizes (a Dims and an int array or another Dims), entry by entry."""
    fns = {"Add": lambda x, y: x + y, "Sub": lambda x, y: x - y, "Mul": lambda x, y: x * y,
           "Div": lambda x, y: int(x / y) if y else 0, "Mod": lambda x, y: x % y if y else 0}
    if op not in fns:
        return None
    if any(isinstance(v, np.ndarray) and v.dtype.kind not in "iu" for v in (a, b)):
        return None
    ea = a.entries if isinstance(a, Dims) else [int(v) for v in np.ravel(a)]
    eb = b.entries if isinstance(b, Dims) else [int(v) for v in np.ravel(b)]
    n = max(len(ea), len(eb))
    if len(ea) not in (1, n) or len(eb) not in (1, n):
        return None
    ea, eb = ea * (n // len(ea)), eb * (n // len(eb))
    out = []
    for x, y in zip(ea, eb):
        if isinstance(x, (int, np.integer)) and isinstance(y, (int, np.integer)):
            out.append(fns[op](int(x), int(y)))
        else:
            tx, ty = (v if hasattr(v, "fb") else ctx.fb.const(np.int32(v)) for v in (x, y))
            out.append(_TRACED[op](tx, ty))
    scalar = all(d.scalar if isinstance(d, Dims) else np.ndim(d) == 0 for d in (a, b))
    return Dims(out, scalar)


def _binary(op):
    def handler(ctx, node, a, b):
        ca, cb = _as_array(ctx, a), _as_array(ctx, b)
        if ca is not None and cb is not None:
            return _NUMPY[op](ca, cb)
        if all(isinstance(v, (Dims, np.ndarray)) for v in (a, b)):
            out = _dims_binary(ctx, op, a, b)
            if out is not None:
                return out
        (ta, tb), nhwc = ctx.same_layout(a, b)
        if ta.dtype != tb.dtype:  # (int64 became int32, float64 constants float32: a constant follows)
            if isinstance(b, np.ndarray):
                tb = ops.cast(tb, ta.dtype)
            else:
                ta = ops.cast(ta, tb.dtype)
        return V(_TRACED[op](ta, tb), nhwc)
    return handler


for _op in _NUMPY:
    HANDLERS[_op] = _binary(_op)


@handles("Mod")
def _mod_handler(ctx, node, a, b, _floor_mod=HANDLERS["Mod"]):
    if not node.attr("fmod", 0):
        return _floor_mod(ctx, node, a, b)
    ca, cb = _as_array(ctx, a), _as_array(ctx, b)  # fmod: the dividend's sign, a - trunc(a / b) * b
    if ca is not None and cb is not None:
        return np.fmod(ca, cb)
    (ta, tb), nhwc = ctx.same_layout(a, b)
    q = ops.div(ta, tb)
    return V(ops.sub(ta, ops.mul(ops.mul(ops.sign(q), ops.floor(ops.abs_(q))), tb)), nhwc)


@handles("Sum", "Mean")
def _sum(ctx, node, *xs):
    out = xs[0]
    for x in xs[1:]:
        out = HANDLERS["Add"](ctx, node, out, x)
    if node.op == "Mean" and len(xs) > 1:
        out = HANDLERS["Mul"](ctx, node, out, np.asarray(1.0 / len(xs), np.float32))
    return out


HANDLERS["Max"] = lambda ctx, node, *xs, _f=HANDLERS["Max"]: _fold(ctx, node, _f, xs)
HANDLERS["Min"] = lambda ctx, node, *xs, _f=HANDLERS["Min"]: _fold(ctx, node, _f, xs)


def _fold(ctx, node, fn, xs):
    out = xs[0]
    for x in xs[1:]:
        out = fn(ctx, node, out, x)
    return out


@handles("Not")
def _not(ctx, node, x):
    c = _as_array(ctx, x)
    if c is not None:
        return np.logical_not(c)
    return V(ops.logical_not(_bool(x.t)), x.nhwc)


@handles("Where")
def _where(ctx, node, cond, a, b):
    cc, ca, cb = (_as_array(ctx, v) for v in (cond, a, b))
    if cc is not None and ca is not None and cb is not None:
        return np.where(cc, ca, cb)
    (c, ta, tb), nhwc = ctx.same_layout(cond, a, b)
    return V(ops.where(_bool(c), ta, tb), nhwc)


# unary ops and activations -------------------------------------------------------------------------------------
def _unary(fn):
    def handler(ctx, node, x, *rest):
        if isinstance(x, V):
            return V(fn(node, x.t), x.nhwc)
        return V(fn(node, ctx.plain(x)))
    return handler


def _erf(z):
    """erf(z) written with builtin ops: Abramowitz and Stegun 7.1.26 (absolute error below 1.5e-7, float32's
    resolution near 1), its gradient that of the formula."""
    a = ops.abs_(z)
    t = ops.div(1.0, ops.add(ops.mul(a, 0.3275911), 1.0))
    poly = ops.add(ops.mul(t, 1.061405429), -1.453152027)
    for c in (1.421413741, -0.284496736, 0.254829592):
        poly = ops.add(ops.mul(t, poly), c)
    y = ops.sub(1.0, ops.mul(ops.mul(t, poly), ops.exp(ops.neg(ops.square(z)))))
    return ops.mul(ops.sign(z), y)


def _clip_bounds(lo, hi):
    def fn(node, t):
        if lo == 0.0 and hi == 6.0:
            return ops.relu6(t)
        if lo == 0.0 and hi is None:
            return ops.relu(t)
        y = t if lo is None else ops.maximum(t, float(lo))
        return y if hi is None else ops.minimum(y, float(hi))
    return fn


def _hard_sigmoid(node, t):
    alpha, beta = float(node.attr("alpha", 0.2)), float(node.attr("beta", 0.5))
    if np.isclose(alpha, 1.0 / 6.0) and beta == 0.5:  # torch's Hardsigmoid: relu6(x + 3) / 6
        return ops.mul(ops.relu6(ops.add(t, 3.0)), 1.0 / 6.0)
    return ops.maximum(ops.minimum(ops.add(ops.mul(t, alpha), beta), 1.0), 0.0)


def _gelu(node, t):
    approximate = node.attr("approximate", "none")
    return ops.gelu(t, approximate=approximate == "tanh")


for _name, _fn in {
    "Relu": lambda n, t: ops.relu(t), "Sigmoid": lambda n, t: ops.sigmoid(t), "Tanh": lambda n, t: ops.tanh(t),
    "Exp": lambda n, t: ops.exp(t), "Log": lambda n, t: ops.log(t), "Sqrt": lambda n, t: ops.sqrt(t),
    "Neg": lambda n, t: ops.neg(t), "Abs": lambda n, t: ops.abs_(t), "Sin": lambda n, t: ops.sin(t),
    "Cos": lambda n, t: ops.cos(t), "Floor": lambda n, t: ops.floor(t), "Sign": lambda n, t: ops.sign(t),
    "Reciprocal": lambda n, t: ops.div(t.fb.const(1.0, t.dtype), t), "HardSwish": lambda n, t: ops.hard_swish(t),
    "HardSigmoid": _hard_sigmoid, "Gelu": _gelu, "Erf": lambda n, t: _erf(t),
    "LeakyRelu": lambda n, t: ops.leaky_relu(t, float(n.attr("alpha", 0.01))),
    "Elu": lambda n, t: elu(t, float(n.attr("alpha", 1.0))), "Softplus": lambda n, t: softplus(t),
    "Softsign": lambda n, t: ops.div(t, ops.add(ops.abs_(t), 1.0)), "Mish": lambda n, t: mish(t),
}.items():
    HANDLERS[_name] = _unary(_fn)


@handles("Identity")
def _identity(ctx, node, x):
    return x


@handles("Clip")
def _clip(ctx, node, x, lo=None, hi=None):
    bounds = []
    for b in (lo, hi):
        c = None if b is None else _as_array(ctx, b)
        if b is not None and c is None:  # a bound computed at run time
            return _clip_traced(ctx, x, lo, hi)
        bounds.append(None if c is None else float(c))
    return _unary(_clip_bounds(*bounds))(ctx, node, x)


def _clip_traced(ctx, x, lo, hi):
    (t, *bs), nhwc = ctx.same_layout(x, *[b for b in (lo, hi) if b is not None])
    k = 0
    if lo is not None:
        t, k = ops.maximum(t, bs[0]), 1
    if hi is not None:
        t = ops.minimum(t, bs[k])
    return V(t, nhwc)


@handles("PRelu")
def _prelu(ctx, node, x, slope):
    (t, s), nhwc = ctx.same_layout(x, slope)
    return V(ops.add(ops.relu(t), ops.mul(s, ops.minimum(t, 0.0))), nhwc)


_ONNX_TYPES = {1: "float32", 6: "int32", 7: "int32", 9: "bool", 11: "float32", 10: "float32"}
_NUMPY_TYPES = {1: np.float32, 6: np.int32, 7: np.int64, 9: np.bool_, 11: np.float64, 10: np.float16}


@handles("Cast")
def _cast(ctx, node, x):
    to = int(node.attr("to"))
    if to not in _ONNX_TYPES:
        raise node.refuse(f"a cast to ONNX type {to}", "keep the model in float32, int64, int32 and bool")
    if isinstance(x, Dims) and _ONNX_TYPES[to] == "int32":
        return x
    c = ctx.const(x) if not isinstance(x, V) else None
    if c is not None:
        return np.asarray(c).astype(_NUMPY_TYPES[to])
    t = x.t if isinstance(x, V) else ctx.plain(x)
    want = _ONNX_TYPES[to]
    if want == "bool":
        y = _bool(t)
    else:
        y = ops.cast(t, want)
    return V(y, isinstance(x, V) and x.nhwc)


@handles("CastLike")
def _cast_like(ctx, node, x, like):
    t = like.t if isinstance(like, V) else ctx.plain(like)
    node.attrs["to"] = {"float32": 1, "int32": 7, "bool": 9}[t.dtype]
    return _cast(ctx, node, x)


@handles("Dropout")
def _dropout(ctx, node, x, ratio=None, training_mode=None):
    p = 0.5 if ratio is None else float(ctx.const(ratio))
    if not ctx.trains() or p == 0.0:
        return x, None
    if p >= 1.0:
        raise node.refuse(f"dropout with ratio {p}")
    seed = zlib.crc32(node.name.encode()) & 0x7FFFFFFF
    keep = ops.greater_equal(ops.random_uniform_like(x.t, seed=seed, seed2=0x5EED), p)
    return V(ops.mul(x.t, ops.mul(ops.cast(keep, x.t.dtype), 1.0 / (1.0 - p))), x.nhwc), None


# reductions ----------------------------------------------------------------------------------------------------
def _reduce_axes(ctx, node, x, axes, rank):
    if axes is None:
        axes = node.attr("axes")
    else:
        axes = ctx.const(axes)
        if axes is None:
            raise node.refuse("axes computed at run time", "give the axes as a constant")
    if axes is None or len(np.atleast_1d(axes)) == 0:
        if node.attr("noop_with_empty_axes", 0):
            return None
        return list(range(rank))
    return sorted({int(a) % rank for a in np.atleast_1d(axes)})


_REDUCE = {"ReduceMean": ops.reduce_mean, "ReduceSum": ops.reduce_sum, "ReduceMax": ops.reduce_max,
           "ReduceMin": ops.reduce_min, "ReduceProd": ops.reduce_prod,
           "ReduceSumSquare": lambda t, a, keepdims: ops.reduce_sum(ops.square(t), a, keepdims=keepdims),
           "ReduceL2": lambda t, a, keepdims: ops.sqrt(ops.reduce_sum(ops.square(t), a, keepdims=keepdims))}
_REDUCE_NP = {"ReduceMean": np.mean, "ReduceSum": np.sum, "ReduceMax": np.max, "ReduceMin": np.min,
              "ReduceProd": np.prod,
              "ReduceSumSquare": lambda a, axis, keepdims: np.sum(a * a, axis, keepdims=keepdims),
              "ReduceL2": lambda a, axis, keepdims: np.sqrt(np.sum(a * a, axis, keepdims=keepdims))}


@handles(*_REDUCE)
def _reduce(ctx, node, x, axes=None):
    keep = bool(node.attr("keepdims", 1))
    c = ctx.const(x)
    if c is not None:
        dims = _reduce_axes(ctx, node, x, axes, c.ndim)
        return c if dims is None else np.asarray(_REDUCE_NP[node.op](c, tuple(dims), keepdims=keep)).astype(c.dtype)
    if isinstance(x, Dims) and node.op == "ReduceProd":
        return _dims_product(ctx, x, keep)
    if isinstance(x, P):
        x = V(ctx.plain(x))
    if isinstance(x, Dims):
        x = V(x.tensor(ctx.fb))
    rank = x.t.ndim
    dims = _reduce_axes(ctx, node, x, axes, rank)
    if dims is None:
        return x
    fn = _REDUCE[node.op]
    if not x.nhwc:
        return V(fn(x.t, dims, keepdims=keep))
    nhwc_axes = sorted(axis_of(x, d, 4) for d in dims)
    y = fn(x.t, nhwc_axes, keepdims=keep)
    if keep:
        return V(y, True)
    kept = [a for a in range(4) if a not in nhwc_axes]    # NHWC axes left, in NHWC order
    onnx_order = sorted(kept, key=lambda a: (0, 3, 1, 2).index(a))
    perm = [kept.index(a) for a in onnx_order]
    return V(ops.transpose(y, perm) if perm != sorted(perm) else y)


def _dims_product(ctx, x, keep):
    out = 1
    for e in x.entries:
        out = out * e if isinstance(out, int) and isinstance(e, int) else ops.mul(
            *(v if hasattr(v, "fb") else ctx.fb.const(np.int32(v)) for v in (out, e)))
    return Dims([out], scalar=not keep)


@handles("ArgMax")
def _argmax(ctx, node, x):
    if node.attr("select_last_index", 0):
        raise node.refuse("select_last_index=1", "export argmax without it")
    t = ctx.plain(x)
    axis = int(node.attr("axis", 0)) % t.ndim
    y = ops.argmax(t, axis, output_type="int32")
    return V(ops.expand_dims(y, axis) if node.attr("keepdims", 1) else y)


@handles("Softmax", "LogSoftmax")
def _softmax(ctx, node, x):
    fn = ops.log_softmax if node.op == "LogSoftmax" else ops.softmax
    if isinstance(x, P):
        x = V(ctx.plain(x))
    rank = x.t.ndim
    axis = axis_of(x, node.attr("axis", -1), rank)
    if axis == rank - 1:
        return V(fn(x.t), x.nhwc)
    perm = list(range(rank))
    perm[axis], perm[-1] = perm[-1], perm[axis]
    return V(ops.transpose(fn(ops.transpose(x.t, perm)), perm), x.nhwc)


@handles("LayerNormalization")
def _layer_norm(ctx, node, x, scale, bias=None):
    t = ctx.plain(x)
    axis = int(node.attr("axis", -1)) % t.ndim
    y = normalize(t, list(range(axis, t.ndim)), float(node.attr("epsilon", 1e-5)))
    y = ops.mul(y, ctx.plain(scale))
    if bias is not None:
        y = ops.add(y, ctx.plain(bias))
    return V(y), None, None


# matrix products -----------------------------------------------------------------------------------------------
@handles("MatMul")
def _matmul(ctx, node, a, b):
    ta, tb = float_tensor(ctx.plain(a)), float_tensor(ctx.plain(b))
    if ta.ndim == 1 and tb.ndim == 1:
        return V(ops.reduce_sum(ops.mul(ta, tb), [0]))
    if ta.ndim == 1:
        return V(ops.squeeze(ops.matmul(ops.expand_dims(ta, 0), tb), [-2]))
    if tb.ndim == 1:
        return V(ops.squeeze(ops.matmul(ta, ops.expand_dims(tb, 1)), [-1]))
    return V(ops.matmul(ta, tb))


@handles("Gemm")
def _gemm(ctx, node, a, b, c=None):
    alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
    ta = ctx.plain(a)
    if node.attr("transA", 0):
        ta = ops.transpose(ta, [1, 0])
    tb = ctx.plain(b)
    bias = None if c is None else ctx.plain(c)
    if node.attr("transB", 0) and alpha == 1.0 and (bias is None or (beta == 1.0 and bias.ndim == 1)):
        if bias is not None and bias.shape[0] != tb.shape[0]:  # a bias broadcast from one value
            bias = ops.broadcast_to(bias, [tb.shape[0]])
        return V(ops.fully_connected(ta, tb, bias))
    if node.attr("transB", 0):
        tb = ops.transpose(tb, [1, 0])
    y = ops.matmul(ta, tb)
    if alpha != 1.0:
        y = ops.mul(y, alpha)
    if bias is not None:
        y = ops.add(y, bias if beta == 1.0 else ops.mul(bias, beta))
    return V(y)


