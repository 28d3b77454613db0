"""The aten ops the PyTorch importer translates (see litetrain/importers/torch/__init__.py), one handler each.

A handler gets the trace context, the fx node, and the node's arguments with graph values resolved:
`_V` activations (a traced tensor, and whether it holds a 4-D NCHW tensor as NHWC), `_P` parameters
(a State and the layout it is stored in) and plain Python values. It returns a `_V` (or a tuple for
multi-output ops). `ctx.torch(v)` / `ctx.nhwc(v)` give a value's tensor in torch's dim order or as NHWC.
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
_PAD_BIG = 3.0e38  # max pooling's padding value (stands for -inf)


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
    operator.getitem."""
    name = str(target)
    if name.startswith("aten."):
        base = name.split(".")[1]
        return base[:-1] if base.endswith("_") and not base.startswith("_") else base
    return getattr(target, "__name__", name)


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


def _unary(fn):
    def handler(ctx, node, x, *rest, **kw):
        if isinstance(x, _P):
            x = _V(ctx.torch(x))
        return _V(fn(x.t, *rest, **kw), x.nhwc)
    return handler


for _name, _fn in {
    "relu": ops.relu, "sigmoid": ops.sigmoid, "tanh": ops.tanh, "exp": ops.exp, "log": ops.log,
    "sqrt": ops.sqrt, "rsqrt": ops.rsqrt, "neg": ops.neg, "abs": ops.abs_, "hardswish": ops.hard_swish,
    "relu6": ops.relu6,
    "silu": lambda t: ops.mul(t, ops.sigmoid(t)),
    "hardsigmoid": lambda t: ops.mul(ops.relu6(ops.add(t, 3.0)), 1.0 / 6.0),
    "gelu": lambda t, approximate="none": ops.gelu(t, approximate=approximate == "tanh"),
    "leaky_relu": lambda t, negative_slope=0.01: ops.leaky_relu(t, negative_slope),
    "clone": lambda t, **kw: t, "contiguous": lambda t, **kw: t, "alias": lambda t: t, "detach": lambda t: t,
    "lift_fresh_copy": lambda t: t,
}.items():
    HANDLERS[_name] = _unary(_fn)


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


def _binary(fn):
    def handler(ctx, node, a, b, alpha=1, **kw):
        (a, b), nhwc = _same_layout(ctx, a, b)
        if alpha != 1:
            b = ops.mul(b, float(alpha))
        if not hasattr(a, "fb") and not hasattr(b, "fb"):
            return fn(a, b)
        return _V(fn(a, b) if hasattr(a, "fb") else fn(ctx.fb.const(np.float32(a)), b), nhwc)
    return handler


for _name, _fn in {"add": ops.add, "sub": ops.sub, "mul": ops.mul, "div": ops.div, "maximum": ops.maximum,
                   "minimum": ops.minimum, "pow": ops.pow_}.items():
    HANDLERS[_name] = _binary(_fn)
HANDLERS["rsub"] = _binary(lambda a, b: ops.sub(b, a))


@handles("getitem")
def _getitem(ctx, node, value, index):
    return value[index]


@handles("dropout", "feature_dropout")
def _dropout(ctx, node, x, p=0.5, train=False):
    if not ctx.trains(node) or p == 0.0:
        return x
    if p >= 1.0:
        raise TorchImportError(f"dropout with p={p} in {_where(node)}")
    path = _module_of(node)[0] or node.name
    seed = zlib.crc32(path.encode()) & 0x7FFFFFFF
    keep = ops.greater_equal(ops.random_uniform_like(x.t, seed=seed, seed2=0x5EED), float(p))
    return _V(ops.mul(x.t, ops.mul(ops.cast(keep, x.t.dtype), 1.0 / (1.0 - p))), x.nhwc)


# convolution
def _conv_pads(node, padding, hw, kernel, stride, dilation):
    """((top, bottom), (left, right)) that torch pads for `padding` (ints or 'same'/'valid')."""
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0), (0, 0))
        pads = []
        for k, d in zip(kernel, dilation):
            total = d * (k - 1)
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    ph, pw = _pair(padding)
    return ((ph, ph), (pw, pw))


def _spatial(ctx, x, pads, hw, kernel, stride, dilation, pad_value=None):
    """(x, TFLite padding): SAME when torch's pads are SAME's, else x padded explicitly and VALID."""
    if not any(any(p) for p in pads):
        return x, "VALID"
    same = tuple(_same_pads(s, k, st, d) for s, k, st, d in zip(hw, kernel, stride, dilation))
    if same == tuple(pads) and pad_value is None:
        return x, "SAME"
    (t, b), (l, r) = pads
    y = ops.pad(x, [[0, 0], [t, b], [l, r], [0, 0]])
    if pad_value is not None:  # max pooling: the padding must never win
        h, w = hw
        mask = np.full((1, h + t + b, w + l + r, 1), pad_value, np.float32)
        mask[:, t:t + h, l:l + w] = 0.0
        y = ops.add(y, ctx.fb.const(mask))
    return y, "VALID"


@handles("conv2d", "convolution")
def _conv(ctx, node, x, w, bias=None, stride=1, padding=0, dilation=1, *rest, groups=1, **kw):
    if _aten_name(node.target) == "convolution":
        transposed, _, groups = rest
        if transposed:
            raise TorchImportError(f"transposed convolution in {_where(node)} is not supported")
    elif rest:
        groups = rest[0]
    wshape = _shape(node.args[1])
    if wshape is None or len(wshape) != 4:
        raise TorchImportError(f"{node.target} in {_where(node)}: only 2-D convolutions are supported "
                               f"(weight shape {wshape})")
    x = ctx.nhwc(x)
    cout, cin_g, kh, kw_ = wshape
    cin = x.shape[3]
    stride, dilation = _pair(stride), _pair(dilation)
    hw = (x.shape[1], x.shape[2])
    pads = _conv_pads(node, padding, hw, (kh, kw_), stride, dilation)
    x, tfl = _spatial(ctx, x, pads, hw, (kh, kw_), stride, dilation)
    depthwise = groups > 1 and groups == cin and cin_g == 1
    layout = "dw" if depthwise else "ohwi"
    kernel = ctx.weight(w, layout)
    b = None if bias is None else ctx.torch(bias)
    bn = ctx.m._folds.get(node)
    if bn is not None:
        bn_args = (None,) + ctx.resolve(tuple(bn.args[1:]))  # (its input is this convolution)
        gamma, beta, mean, var = bn_args[1:5]
        eps = bn_args[7] if _aten_name(bn.target) == "batch_norm" else bn_args[6]
        if not ctx.trains(bn, (gamma, beta)) and not (_aten_name(bn.target) == "batch_norm" and mean is None):
            scale = ops.rsqrt(ops.add(ctx.torch(var), float(eps)))
            if gamma is not None:
                scale = ops.mul(scale, ctx.torch(gamma))
            kernel = ops.mul(kernel, scale if depthwise else ops.reshape(scale, [cout, 1, 1, 1]))
            shift = ops.neg(ops.mul(ctx.torch(mean), scale))
            if b is not None:
                shift = ops.add(shift, ops.mul(b, scale))
            b = ops.add(shift, ctx.torch(beta)) if beta is not None else shift
            ctx.done.add(bn)
            y = _conv_op(x, kernel, b, stride, tfl, dilation, groups, depthwise, cin, cout)
            ctx.env[bn] = _V(y, True) if _aten_name(bn.target) == "batch_norm" else (_V(y, True), None, None)
            return _V(y, True)
    return _V(_conv_op(x, kernel, b, stride, tfl, dilation, groups, depthwise, cin, cout), True)


def _conv_op(x, kernel, b, stride, tfl, dilation, groups, depthwise, cin, cout):
    if depthwise:
        return ops.depthwise_conv_2d(x, kernel, b, strides=stride, padding=tfl, dilations=dilation,
                                     depth_multiplier=cout // cin)
    if groups == 1:
        return ops.conv_2d(x, kernel, b, strides=stride, padding=tfl, dilations=dilation)
    cg, og = cin // groups, cout // groups
    outs = []
    for g in range(groups):
        xs = ops.slice_(x, [0, 0, 0, g * cg], [-1, -1, -1, cg])
        ks = ops.slice_(kernel, [g * og, 0, 0, 0], [og, -1, -1, -1])
        bs = None if b is None else ops.slice_(b, [g * og], [og])
        outs.append(ops.conv_2d(xs, ks, bs, strides=stride, padding=tfl, dilations=dilation))
    return ops.concat(outs, 3)


# batch normalisation
def _batch_norm(ctx, node, x, gamma, beta, mean, var, momentum, eps):
    rank = x.t.ndim if isinstance(x, _V) else None
    if rank not in (2, 4):
        raise TorchImportError(f"batch norm of a rank-{rank} tensor in {_where(node)}: only BatchNorm2d "
                               f"(NCHW) and BatchNorm1d on [N, C] are supported")
    t = ctx.nhwc(x) if rank == 4 else ctx.torch(x)
    axes = list(range(t.ndim - 1))
    training = ctx.trains(node, (gamma, beta)) or mean is None
    if training:
        batch_mean = ops.reduce_mean(t, axes)
        centered = ops.sub(t, batch_mean)
        batch_var = ops.reduce_mean(ops.square(centered), axes)
        if mean is not None and ctx.training:
            if momentum is None:
                raise TorchImportError(f"batch norm with momentum=None (a cumulative average) in {_where(node)}")
            m = float(momentum)
            n = num_elements(t, axes)
            unbiased = ops.mul(batch_var, ops.div(n, ops.sub(n, 1.0)))
            for p, value in ((mean, batch_mean), (var, unbiased)):
                ctx.fb.assign(p.state, ops.add(ops.mul(ctx.read(p), 1.0 - m), ops.mul(value, m)))
        inv = ops.rsqrt(ops.add(batch_var, float(eps)))
    else:
        centered = ops.sub(t, ctx.torch(mean))
        inv = ops.rsqrt(ops.add(ctx.torch(var), float(eps)))
    if gamma is not None:
        inv = ops.mul(inv, ctx.torch(gamma))
    y = ops.mul(centered, inv)
    if beta is not None:
        y = ops.add(y, ctx.torch(beta))
    return _V(y, rank == 4)


@handles("batch_norm")
def _bn(ctx, node, x, gamma, beta, mean, var, training=False, momentum=0.1, eps=1e-5, *rest):
    return _batch_norm(ctx, node, x, gamma, beta, mean, var, momentum, eps)


@handles("_native_batch_norm_legit_no_training")
def _bn_eval(ctx, node, x, gamma, beta, mean, var, momentum=0.1, eps=1e-5):
    return (_batch_norm(ctx, node, x, gamma, beta, mean, var, momentum, eps), None, None)


# pooling and reductions
@handles("adaptive_avg_pool2d", "_adaptive_avg_pool2d")
def _adaptive_avg(ctx, node, x, output_size):
    t = ctx.nhwc(x)
    (oh, ow), (h, w) = _pair(output_size), (t.shape[1], t.shape[2])
    if (oh, ow) == (1, 1):
        return _V(ops.reduce_mean(t, [1, 2], keepdims=True), True)
    if h % oh or w % ow:
        raise TorchImportError(f"adaptive average pooling of {h}x{w} to {oh}x{ow} in {_where(node)}: "
                               f"only sizes that divide the input are supported")
    if (oh, ow) == (h, w):
        return _V(t, True)
    return _V(ops.average_pool_2d(t, (h // oh, w // ow), (h // oh, w // ow), "VALID"), True)


def _pool_geometry(node, t, kernel, stride, padding, ceil_mode, dilation=1):
    kernel = _pair(kernel)
    stride = _pair(stride) if stride not in (None, [], ()) else kernel
    if _pair(dilation) != (1, 1):
        raise TorchImportError(f"dilated pooling in {_where(node)} is not supported")
    ph, pw = _pair(padding)
    hw = (t.shape[1], t.shape[2])
    if ceil_mode:
        for s, k, st, p in zip(hw, kernel, stride, (ph, pw)):
            if (s + 2 * p - k) % st and ((s + 2 * p - k) // st + 1) * st < s + p:
                raise TorchImportError(f"pooling with ceil_mode=True in {_where(node)} changes the output "
                                       f"size; only ceil_mode=False is supported")
    return kernel, stride, ((ph, ph), (pw, pw)), hw


@handles("max_pool2d", "max_pool2d_with_indices")
def _max_pool(ctx, node, x, kernel, stride=None, padding=0, dilation=1, ceil_mode=False):
    t = ctx.nhwc(x)
    kernel, stride, pads, hw = _pool_geometry(node, t, kernel, stride, padding, ceil_mode, dilation)
    t, tfl = _spatial(ctx, t, pads, hw, kernel, stride, (1, 1), pad_value=-_PAD_BIG)
    y = _V(ops.max_pool_2d(t, kernel, stride, tfl), True)
    return (y, None) if _aten_name(node.target) == "max_pool2d_with_indices" else y


@handles("avg_pool2d")
def _avg_pool(ctx, node, x, kernel, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
              divisor_override=None):
    t = ctx.nhwc(x)
    kernel, stride, pads, hw = _pool_geometry(node, t, kernel, stride, padding, ceil_mode)
    if divisor_override is not None or (any(any(p) for p in pads) and not count_include_pad):
        raise TorchImportError(f"average pooling with divisor_override or count_include_pad=False and padding "
                               f"in {_where(node)} is not supported")
    if any(any(p) for p in pads):  # torch counts the zero padding: pad explicitly, then VALID
        (pt, pb), (pl, pr) = pads
        t = ops.pad(t, [[0, 0], [pt, pb], [pl, pr], [0, 0]])
    return _V(ops.average_pool_2d(t, kernel, stride, "VALID"), True)


def _reduce(fn):
    def handler(ctx, node, x, dims=None, keepdim=False, dtype=None):
        if isinstance(x, _P):
            x = _V(ctx.torch(x))
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


# shape ops (on torch's order unless noted)
@handles("cat", "concat")
def _cat(ctx, node, tensors, dim=0):
    ts, nhwc = _same_layout(ctx, *tensors)
    rank = ts[0].ndim
    return _V(ops.concat(ts, _TO_NHWC[dim % rank] if nhwc else dim % rank), nhwc)


@handles("pad", "constant_pad_nd")
def _pad(ctx, node, x, pad, mode="constant", value=None):
    if mode != "constant" or (value not in (None, 0, 0.0)):
        raise TorchImportError(f"padding with mode={mode!r} value={value!r} in {_where(node)}: only zero "
                               f"padding is supported")
    rank = x.t.ndim
    pads = [[0, 0] for _ in range(rank)]
    for i in range(len(pad) // 2):  # torch lists the last dim first
        pads[rank - 1 - i] = [int(pad[2 * i]), int(pad[2 * i + 1])]
    if min(min(p) for p in pads) < 0:
        raise TorchImportError(f"negative padding (cropping) in {_where(node)} is not supported")
    if x.nhwc:
        pads = [pads[d] for d in (0, 2, 3, 1)]
    return _V(ops.pad(x.t, pads), x.nhwc)


def _target_shape(ctx, node, t, shape):
    """`shape` (torch's ints, one may be -1) for t, following t's batch when it is unknown."""
    shape = [int(d) for d in shape]
    if t.shape and t.shape[0] is None:
        if not shape or shape[0] != ctx.batch:
            raise TorchImportError(f"a view to {shape} in {_where(node)} mixes the batch with other dims; "
                                   f"it needs a fixed batch (convert with a known batch size)")
        rest = shape[1:]
        if -1 in rest:
            known = int(np.prod([d for d in t.shape[1:]]))
            other = int(np.prod([d for d in rest if d != -1]))
            rest = [known // other if d == -1 else d for d in rest]
        return [-1] + rest
    return shape


@handles("view", "reshape", "_unsafe_view")
def _view(ctx, node, x, shape):
    t = ctx.torch(x)
    return _V(ops.reshape(t, _target_shape(ctx, node, t, shape)))


@handles("flatten")
def _flatten(ctx, node, x, start_dim=0, end_dim=-1):
    t = ctx.torch(x)
    rank = t.ndim
    s, e = start_dim % rank, end_dim % rank
    dims = [-1 if d is None else d for d in t.shape]
    out = dims[:s] + [int(np.prod(dims[s:e + 1])) if -1 not in dims[s:e + 1] else -1] + dims[e + 1:]
    if t.shape[0] is None:
        out = [ctx.batch if i == 0 else d for i, d in enumerate(out)] if s > 0 else out
        if s == 0:
            return _V(ops.reshape(t, [-1]))
    return _V(ops.reshape(t, _target_shape(ctx, node, t, out)))


@handles("permute")
def _permute(ctx, node, x, dims):
    t = ctx.torch(x)
    return _V(ops.transpose(t, [d % t.ndim for d in dims]))


@handles("transpose")
def _transpose(ctx, node, x, a, b):
    t = ctx.torch(x)
    perm = list(range(t.ndim))
    perm[a % t.ndim], perm[b % t.ndim] = perm[b % t.ndim], perm[a % t.ndim]
    return _V(ops.transpose(t, perm))


@handles("t")
def _t(ctx, node, x):
    t = ctx.torch(x)
    return _V(ops.transpose(t, [1, 0]) if t.ndim == 2 else t)


@handles("unsqueeze")
def _unsqueeze(ctx, node, x, dim):
    t = ctx.torch(x)
    return _V(ops.expand_dims(t, dim % (t.ndim + 1)))


@handles("squeeze")
def _squeeze(ctx, node, x, dims=None):
    t = ctx.torch(x)
    if dims is None:
        dims = [i for i, d in enumerate(t.shape) if d == 1]
    dims = [d % t.ndim for d in (dims if isinstance(dims, (list, tuple)) else [dims]) if t.shape[d % t.ndim] == 1]
    return _V(ops.squeeze(t, dims) if dims else t)


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
