"""The aten ops the PyTorch importer translates (see litetrain/importers/torch/__init__.py), one handler each.

A handler gets the trace context, the fx node, and the node's arguments with graph values resolved:
`_V` activations (a traced tensor, and whether it holds a 4-D NCHW tensor as NHWC), `_P` parameters
(a State and the layout it is stored in), symbolic sizes of a graph exported with a dynamic batch (an
int32 scalar tensor, or a Python int when the size is known) and plain Python values. It returns a `_V`
(or a tuple for multi-output ops). `ctx.torch(v)` / `ctx.nhwc(v)` give a value's tensor in torch's dim
order or as NHWC. Integer tensors are int32 (torch's int64 ids and sizes fit), booleans bool.

This file holds the elementwise, reduction and matrix-product handlers; aten_shape.py the shape ops,
aten_conv.py convolutions, pooling and resizing, aten_nn.py normalisation, attention and embeddings,
aten_rnn.py the recurrent layers.
"""
from __future__ import annotations

import zlib

import numpy as np

from ... import ops
from ...ops._util import num_elements


class TorchImportError(Exception):
    """A torch model (or a node of its exported graph) that the importer cannot translate."""


# torch dim -> NHWC axis, for a 4-D NCHW tensor held as NHWC
_TO_NHWC = (0, 3, 1, 2)


class _P:
    """A parameter or buffer placeholder: its State and the layout its value is stored in."""

    def __init__(self, state, layout):
        self.state, self.layout = state, layout


class _V:
    """An activation: a traced tensor and whether it holds a 4-D NCHW tensor as NHWC."""

    def __init__(self, t, nhwc=False):
        self.t, self.nhwc = t, nhwc


def _module_of(node):
    """(torch module path, class name) of the module that called `node`, or ("", "")."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return "", ""
    path, cls = list(stack.values())[-1]
    return str(path), str(cls).rsplit(".", 1)[-1]


def _where(node):
    path, cls = _module_of(node)
    return f"{path or '<top level>'} ({cls})" if cls else path or "<top level>"


def _aten_name(target):
    """'conv2d' for aten.conv2d.default, 'hardtanh' for aten.hardtanh_.default, 'getitem' for
    operator.getitem, 'operator.mul' for Python's arithmetic on symbolic sizes."""
    name = str(target)
    if name.startswith("aten."):
        base = name.split(".")[1]
        return base[:-1] if base.endswith("_") and not base.startswith("_") else base
    short = getattr(target, "__name__", name)
    if getattr(target, "__module__", None) in ("_operator", "operator") and short != "getitem":
        return f"operator.{short}"
    return short


def _inplace(target):
    base = str(target).split(".")[1] if str(target).startswith("aten.") else ""
    return base.endswith("_") and not base.startswith("_")


def _shape(node):
    val = node.meta.get("val")
    return tuple(int(d) for d in val.shape) if val is not None and hasattr(val, "shape") else None


def _pair(v):
    v = list(v) if isinstance(v, (list, tuple)) else [v]
    return (int(v[0]), int(v[0])) if len(v) == 1 else (int(v[0]), int(v[1]))


def _same_pads(size, k, stride, dilation):
    """TFLite SAME's (before, after) padding of one spatial dim."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (k - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


# -- op handlers: (ctx, node, *args, **kwargs) -> _V (or a tuple of them) ------------------------------------
HANDLERS: dict = {}


def handles(*names):
    def register(fn):
        for n in names:
            HANDLERS[n] = fn
        return fn
    return register


def _same_layout(ctx, *values):
    """The tensors of `values` in one layout (NHWC when any is an NHWC activation) and that flag."""
    nhwc = any(isinstance(v, _V) and v.nhwc for v in values)
    conv = ctx.nhwc if nhwc else ctx.torch
    return [conv(v) for v in values], nhwc


def _is_tensor(v):
    return hasattr(v, "fb")


def _float(t):
    """A float32 tensor for an int or bool one (torch's promotion when floats meet)."""
    return t if t.dtype in ("float32", "float64") else ops.cast(t, "float32")


def _promote(a, b, true_divide=False):
    """Two operands of one dtype, as torch's type promotion gives: a float wins over ints and bools, an
    int over bools; a Python number takes the tensor's dtype unless it is a float meeting an int."""
    ta, tb = _is_tensor(a), _is_tensor(b)
    if ta and tb and a.dtype != b.dtype:
        if "float32" in (a.dtype, b.dtype) or "float64" in (a.dtype, b.dtype):
            a, b = _float(a), _float(b)
        else:
            a, b = ops.cast(a, "int32"), ops.cast(b, "int32")
    elif ta != tb:
        t, n = (a, b) if ta else (b, a)
        if isinstance(n, float) and t.dtype not in ("float32", "float64"):
            t = _float(t)
        elif isinstance(n, (bool, np.bool_)) and t.dtype == "bool":
            n = bool(n)
        elif t.dtype == "bool":
            t = ops.cast(t, "int32")
        n = t.fb.const(n, t.dtype)
        a, b = (t, n) if ta else (n, t)
    if true_divide and a.dtype not in ("float32", "float64"):
        a, b = _float(a), _float(b)
    return a, b


def _unary(fn):
    def handler(ctx, node, x, *rest, **kw):
        if isinstance(x, _P):
            x = _V(ctx.torch(x))
        return _V(fn(x.t, *rest, **kw), x.nhwc)
    return handler


def _activations():
    from ...frontend.nn.activations import elu, hard_sigmoid, mish, silu, softplus
    return {"silu": silu, "hardsigmoid": hard_sigmoid, "mish": mish,
            "softplus": lambda t, beta=1.0, threshold=20.0: softplus(t, beta, threshold),
            "elu": lambda t, alpha=1.0, scale=1.0, input_scale=1.0: _elu(t, alpha, scale, input_scale, elu)}


def _elu(t, alpha, scale, input_scale, elu):
    if float(scale) != 1.0 or float(input_scale) != 1.0:
        raise ValueError("elu with scale or input_scale (selu, celu) is not supported")
    return elu(t, alpha)


for _name, _fn in {
    "relu": ops.relu, "sigmoid": ops.sigmoid, "tanh": ops.tanh, "exp": ops.exp, "log": ops.log,
    "sqrt": ops.sqrt, "rsqrt": ops.rsqrt, "neg": ops.neg, "abs": ops.abs_, "hardswish": ops.hard_swish,
    "relu6": ops.relu6, "square": ops.square, "sin": ops.sin, "cos": ops.cos,
    "reciprocal": lambda t: ops.div(t.fb.const(1.0, t.dtype), t),
    "gelu": lambda t, approximate="none": ops.gelu(t, approximate=approximate == "tanh"),
    "leaky_relu": lambda t, negative_slope=0.01: ops.leaky_relu(t, negative_slope),
    "clone": lambda t, **kw: t, "contiguous": lambda t, **kw: t, "alias": lambda t: t, "detach": lambda t: t,
    "lift_fresh_copy": lambda t: t, "logical_not": lambda t: ops.logical_not(_bool(t)),
    "bitwise_not": lambda t: ops.logical_not(_bool(t)),
    **_activations(),
}.items():
    HANDLERS[_name] = _unary(_fn)


def _bool(t):
    return t if t.dtype == "bool" else ops.not_equal(t, t.fb.const(0, t.dtype))


def _clamp(t, lo, hi):
    if lo == 0.0 and hi == 6.0:
        return ops.relu6(t)
    if lo == 0.0 and hi is None:
        return ops.relu(t)
    if lo is not None:
        t = ops.maximum(t, float(lo))
    return ops.minimum(t, float(hi)) if hi is not None else t


HANDLERS["hardtanh"] = _unary(lambda t, min_val=-1.0, max_val=1.0: _clamp(t, float(min_val), float(max_val)))
HANDLERS["clamp"] = _unary(lambda t, min=None, max=None: _clamp(t, min, max))  # noqa: A002

_PYTHON = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
           "div": lambda a, b: a / b, "maximum": max, "minimum": min, "pow": lambda a, b: a ** b,
           "rsub": lambda a, b: b - a}


def _binary(name, fn, true_divide=False):
    def handler(ctx, node, a, b, alpha=1, rounding_mode=None, **kw):
        (a, b), nhwc = _same_layout(ctx, a, b)
        if not _is_tensor(a) and not _is_tensor(b):
            return _PYTHON[name](a, b)
        if rounding_mode is not None:
            raise TorchImportError(f"{node.target} with rounding_mode={rounding_mode!r} in {_where(node)} is not "
                                   "supported; divide and use torch.floor on floats instead")
        a, b = _promote(a, b, true_divide)
        if alpha != 1:
            b = ops.mul(b, b.fb.const(alpha, b.dtype))
        return _V(fn(a, b), nhwc)
    return handler


for _name, _fn in {"add": ops.add, "sub": ops.sub, "mul": ops.mul, "maximum": ops.maximum,
                   "minimum": ops.minimum, "pow": ops.pow_, "rsub": lambda a, b: ops.sub(b, a)}.items():
    HANDLERS[_name] = _binary(_name, _fn)
HANDLERS["div"] = _binary("div", ops.div, true_divide=True)


def _compare(fn):
    def handler(ctx, node, a, b):
        (a, b), nhwc = _same_layout(ctx, a, b)
        a, b = _promote(a, b)
        return _V(fn(a, b), nhwc)
    return handler


for _name, _fn in {"eq": ops.equal, "ne": ops.not_equal, "lt": ops.less, "le": ops.less_equal,
                   "gt": ops.greater, "ge": ops.greater_equal,
                   "logical_and": lambda a, b: ops.logical_and(_bool(a), _bool(b)),
                   "bitwise_and": lambda a, b: ops.logical_and(_bool(a), _bool(b)),
                   "logical_or": lambda a, b: _or(a, b), "bitwise_or": lambda a, b: _or(a, b)}.items():
    HANDLERS[_name] = _compare(_fn)


def _or(a, b):
    """a or b = not (not a and not b): TFLite's LOGICAL_OR is not in litetrain's op set."""
    return ops.logical_not(ops.logical_and(ops.logical_not(_bool(a)), ops.logical_not(_bool(b))))


@handles("where")
def _where_op(ctx, node, cond, a=None, b=None):
    if a is None:
        raise TorchImportError(f"torch.where(condition) with one argument (the indices) in {_where(node)} is not "
                               "supported: its size depends on the data; use torch.where(condition, a, b)")
    (c, a, b), nhwc = _same_layout(ctx, cond, a, b)
    a, b = _promote(a, b)
    return _V(ops.where(_bool(c), a, b), nhwc)


@handles("masked_fill")
def _masked_fill(ctx, node, x, mask, value):
    (t, m, v), nhwc = _same_layout(ctx, x, mask, value)
    v = v if _is_tensor(v) else t.fb.const(float(v) if t.dtype.startswith("float") else v, t.dtype)
    return _V(ops.where(_bool(m), ops.cast(v, t.dtype), t), nhwc)


_DTYPES = {"torch.float32": "float32", "torch.float": "float32", "torch.int64": "int32", "torch.long": "int32",
           "torch.int32": "int32", "torch.int": "int32", "torch.bool": "bool"}


def _dtype(node, dtype):
    if dtype is None:
        return None
    try:
        return _DTYPES[str(dtype)]
    except KeyError:
        raise TorchImportError(f"{node.target} to {dtype} in {_where(node)}: the importer runs float32, int64 "
                               "(as int32) and bool tensors; keep the model in float32") from None


@handles("to", "_to_copy", "type_as")
def _to(ctx, node, x, *args, **kw):
    """A dtype conversion (the output's dtype in the exported graph); device and layout moves are nothing."""
    val = node.meta.get("val")
    want = _dtype(node, getattr(val, "dtype", None))
    if want is None or not isinstance(x, _V) or x.t.dtype == want:
        return x
    return _V(ops.cast(x.t, want), x.nhwc)


@handles("getitem")
def _getitem(ctx, node, value, index):
    return value[index]


@handles("_assert_tensor_metadata", "_assert_scalar", "_assert_async", "sym_constrain_range_for_size",
         "sym_constrain_range")
def _check_only(ctx, node, *args, **kw):
    """torch.export's checks of dtypes and sizes: they compute nothing."""
    return None


@handles("dropout", "feature_dropout")
def _dropout(ctx, node, x, p=0.5, train=False):
    return dropout(ctx, node, x, p)


def dropout(ctx, node, x, p):
    """torch's dropout when the module around `node` trains (RANDOM_UNIFORM seeded by its module path)."""
    if not ctx.trains(node) or p == 0.0:
        return x
    if p >= 1.0:
        raise TorchImportError(f"dropout with p={p} in {_where(node)}")
    path = _module_of(node)[0] or node.name
    seed = zlib.crc32(path.encode()) & 0x7FFFFFFF
    keep = ops.greater_equal(ops.random_uniform_like(x.t, seed=seed, seed2=0x5EED), float(p))
    return _V(ops.mul(x.t, ops.mul(ops.cast(keep, x.t.dtype), 1.0 / (1.0 - p))), x.nhwc)


def _reduce(fn):
    def handler(ctx, node, x, dims=None, keepdim=False, dtype=None):
        if isinstance(x, _P):
            x = _V(ctx.torch(x))
        if x.t.dtype == "bool":  # torch sums booleans as integers
            x = _V(ops.cast(x.t, "int32"), x.nhwc)
        rank = x.t.ndim
        dims = list(range(rank)) if dims in (None, [], ()) else [d % rank for d in
                                                                (dims if isinstance(dims, (list, tuple)) else [dims])]
        if not x.nhwc:
            return _V(fn(x.t, dims, keepdims=bool(keepdim)))
        axes = sorted(_TO_NHWC[d] for d in dims)
        y = fn(x.t, axes, keepdims=bool(keepdim))
        if keepdim:
            return _V(y, True)
        kept = [a for a in range(4) if a not in axes]         # NHWC axes left, in NHWC order
        torch_order = sorted(kept, key=lambda a: _TO_NHWC.index(a))
        perm = [kept.index(a) for a in torch_order]
        return _V(ops.transpose(y, perm) if perm != sorted(perm) else y)
    return handler


HANDLERS["mean"] = _reduce(ops.reduce_mean)
HANDLERS["sum"] = _reduce(ops.reduce_sum)
HANDLERS["amax"] = _reduce(ops.reduce_max)
HANDLERS["amin"] = _reduce(ops.reduce_min)


@handles("var", "std")
def _var(ctx, node, x, dims=None, *args, correction=None, keepdim=False, unbiased=None):
    """The mean of squared deviations over `dims`, divided by n - correction (unbiased: correction 1)."""
    if args:  # var.dim(x, dims, unbiased, keepdim)
        unbiased = args[0]
        keepdim = args[1] if len(args) > 1 else keepdim
    if correction is None:
        correction = 1 if unbiased is None or unbiased else 0
    t = ctx.torch(x)
    axes = list(range(t.ndim)) if dims in (None, [], ()) else [d % t.ndim for d in
                                                             (dims if isinstance(dims, (list, tuple)) else [dims])]
    centered = ops.sub(t, ops.reduce_mean(t, axes, keepdims=True))
    n = num_elements(t, axes)
    var = ops.div(ops.reduce_sum(ops.square(centered), axes, keepdims=bool(keepdim)),
                  ops.sub(n, float(correction)))
    return _V(ops.sqrt(var) if _aten_name(node.target) == "std" else var)


@handles("softmax", "_softmax", "log_softmax", "_log_softmax")
def _softmax(ctx, node, x, dim, *rest, **kw):
    fn = ops.log_softmax if "log" in _aten_name(node.target) else ops.softmax
    rank = x.t.ndim
    axis = _TO_NHWC[dim % rank] if x.nhwc else dim % rank
    t = x.t
    if axis == rank - 1:
        return _V(fn(t), x.nhwc)
    perm = list(range(rank))
    perm[axis], perm[-1] = perm[-1], perm[axis]
    return _V(ops.transpose(fn(ops.transpose(t, perm)), perm), x.nhwc)


# matrix products
@handles("linear")
def _linear(ctx, node, x, w, b=None):
    t = ctx.torch(x)
    wt = ctx.torch(w)
    return _V(ops.fully_connected(t, wt, None if b is None else ctx.torch(b), keep_num_dims=t.ndim > 2))


@handles("addmm")
def _addmm(ctx, node, bias, a, b, beta=1, alpha=1):
    y = ops.matmul(ctx.torch(a), ctx.torch(b))
    if alpha != 1:
        y = ops.mul(y, float(alpha))
    c = ctx.torch(bias)
    return _V(ops.add(y, ops.mul(c, float(beta)) if beta != 1 else c))


@handles("mm", "matmul", "bmm")
def _matmul(ctx, node, a, b):
    return _V(ops.matmul(ctx.torch(a), ctx.torch(b)))
