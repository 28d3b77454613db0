"""The PyTorch importer's shape handlers: views, permutations, slicing, joining and splitting, padding,
and the symbolic sizes of a graph exported with a dynamic batch (see aten.py)."""
from __future__ import annotations

import numpy as np

from ... import ops
from .aten import _TO_NHWC, HANDLERS, TorchImportError, _aten_name, _same_layout, _V, _where, handles


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


# -- sizes: Python ints, or int32 scalars computed at run time (a graph exported with a dynamic batch) ---------
def _is_sym(v):
    return hasattr(v, "fb")


def size_of(t, dim):
    """Dim `dim` of tensor t: an int when known at conversion, else an int32 scalar from SHAPE."""
    d = t.shape[dim]
    return int(d) if d is not None else ops.gather(ops.shape_of(t), t.fb.const(np.int32(dim % t.ndim)))


@handles("sym_size")
def _sym_size(ctx, node, x, dim):
    return size_of(ctx.torch(x), dim)


def _symbolic(py, fn):
    def handler(ctx, node, a, b):
        if not _is_sym(a) and not _is_sym(b):
            return py(a, b)
        fb = (a if _is_sym(a) else b).fb
        return fn(*[v if _is_sym(v) else fb.const(np.int32(v)) for v in (a, b)])
    return handler


for _name, _py, _fn in (("add", lambda a, b: a + b, ops.add), ("sub", lambda a, b: a - b, ops.sub),
                        ("mul", lambda a, b: a * b, ops.mul), ("floordiv", lambda a, b: a // b, ops.div)):
    HANDLERS[f"operator.{_name}"] = _symbolic(_py, _fn)  # (int32 DIV truncates: sizes are not negative)


def _compare_sizes(py):
    def handler(ctx, node, a, b):
        if not _is_sym(a) and not _is_sym(b):
            return py(a, b)
        return None  # (only torch.export's run-time checks of sizes compare them)
    return handler


for _name, _py in (("ge", lambda a, b: a >= b), ("gt", lambda a, b: a > b), ("le", lambda a, b: a <= b),
                   ("lt", lambda a, b: a < b), ("eq", lambda a, b: a == b), ("ne", lambda a, b: a != b)):
    HANDLERS[f"operator.{_name}"] = _compare_sizes(_py)


def shape_arg(ctx, node, t, shape):
    """(shape for ops.reshape / broadcast_to, its static form with None for run-time sizes) from torch's
    list of sizes (ints, one may be -1, or run-time sizes)."""
    shape = list(shape)
    if not any(_is_sym(d) for d in shape):
        shape = _target_shape(ctx, node, t, shape)
        return shape, [None if d == -1 else d for d in shape]
    fb = t.fb
    parts = [ops.reshape(d, [1]) if _is_sym(d) else fb.const(np.int32([d])) for d in shape]
    known = [None if _is_sym(d) or d == -1 else int(d) for d in shape]
    return ops.concat(parts, 0), known


def _target_shape(ctx, node, t, shape):
    """`shape` (torch's ints, one may be -1) for t, following t's batch when it is unknown and the graph
    was exported with a fixed one (ctx.batch: the example's batch; None for a dynamic export)."""
    shape = [int(d) for d in shape]
    if ctx.batch is not None and t.shape and t.shape[0] is None:
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


def reshape(ctx, node, t, shape):
    target, known = shape_arg(ctx, node, t, shape)
    if _is_sym(target):
        return ops.reshape(t, target, known_shape=known)
    return ops.reshape(t, target)


@handles("view", "reshape", "_unsafe_view")
def _view(ctx, node, x, shape):
    return _V(reshape(ctx, node, ctx.torch(x), shape))


@handles("flatten")
def _flatten(ctx, node, x, start_dim=0, end_dim=-1):
    t = ctx.torch(x)
    rank = t.ndim
    if rank == 0:
        return _V(ops.reshape(t, [1]))
    s, e = start_dim % rank, end_dim % rank
    merged = t.shape[s:e + 1]
    out = [size_of(t, i) for i in range(s)] + \
        [int(np.prod(merged)) if None not in merged else -1] + [size_of(t, i) for i in range(e + 1, rank)]
    if sum(1 for d in out if _is_sym(d) or d == -1) <= 1:  # one unknown: RESHAPE's -1 finds it
        out = [-1 if _is_sym(d) else d for d in out]
        return _V(ops.reshape(t, out))
    return _V(reshape(ctx, node, t, out))


@handles("unflatten")
def _unflatten(ctx, node, x, dim, sizes):
    t = ctx.torch(x)
    d = dim % t.ndim
    sizes = list(sizes)
    if -1 in sizes and t.shape[d] is not None:
        known = int(np.prod([v for v in sizes if v != -1]))
        sizes = [t.shape[d] // known if v == -1 else v for v in sizes]
    out = [size_of(t, i) for i in range(d)] + sizes + [size_of(t, i) for i in range(d + 1, t.ndim)]
    if sum(1 for v in out if _is_sym(v) or v == -1) <= 1:
        return _V(ops.reshape(t, [-1 if _is_sym(v) else v for v in out]))
    return _V(reshape(ctx, node, t, out))


@handles("expand", "expand_as", "broadcast_to")
def _expand(ctx, node, x, sizes, *rest, **kw):
    t = ctx.torch(x)
    if _aten_name(node.target) == "expand_as":
        sizes = [size_of(ctx.torch(sizes), i) for i in range(ctx.torch(sizes).ndim)]
    lead = len(sizes) - t.ndim
    sizes = [size_of(t, i - lead) if (not _is_sym(d) and d == -1) else d for i, d in enumerate(sizes)]
    if not any(_is_sym(d) for d in sizes):
        if list(t.shape) == list(sizes):
            return _V(t)
        return _V(ops.broadcast_to(t, [int(d) for d in sizes]))
    target, known = shape_arg(ctx, node, t, sizes)
    return _V(ops.broadcast_to(t, target, known_shape=known))


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



# -- slicing, splitting and joining (in torch's dim order) -----------------------------------------------------
_BIG = 2 ** 62  # torch's x[a:] slices to 9223372036854775807


def _bounds(node, n, start, end):
    """[start, end) of a slice of a dim of size n (None when unknown: then start must be 0 and end open)."""
    start = 0 if start is None else start
    end = _BIG if end is None else end
    if any(hasattr(v, "fb") for v in (start, end)):
        raise TorchImportError(f"{node.target} in {_where(node)} slices at a position computed at run time; only "
                               "positions known at conversion are supported")
    if n is None:
        if start != 0 or end < _BIG:
            raise TorchImportError(f"{node.target} in {_where(node)} slices the batch dim (or another dim of "
                                   "unknown size); convert with a fixed size for it")
        return 0, None
    start, end = (v + n if v < 0 else v for v in (start, end))
    return max(0, min(start, n)), max(0, min(end, n))


def slice_dim(t, d, start, stop, step=1):
    """t[..., start:stop:step, ...] along dim d (stop None: to the end)."""
    if step == 1:
        begin, size = [0] * t.ndim, [-1] * t.ndim
        begin[d] = start
        size[d] = -1 if stop is None else stop - start
        if start == 0 and stop is None:
            return t
        return ops.slice_(t, begin, size)
    if t.shape[d] is not None and sum(v is None for v in t.shape) <= 1:
        return _every_nth(t, d, start, t.shape[d] if stop is None else stop, step)
    mask = (1 << t.ndim) - 1 & ~(1 << d)  # every other dim whole
    begin, end, strides = [0] * t.ndim, [0] * t.ndim, [1] * t.ndim
    begin[d], end[d], strides[d] = start, 0 if stop is None else stop, step
    return ops.strided_slice(t, begin, end, strides, begin_mask=mask,
                             end_mask=mask | (1 << d if stop is None else 0))


def _every_nth(t, d, start, stop, step):
    """t[start:stop:step] along d as SLICE (+ PAD) and RESHAPE to [..., count, step, ...], keeping step
    position 0: unlike STRIDED_SLICE's, these gradients need no static batch."""
    count = len(range(start, stop, step))
    if count == 0:
        raise TorchImportError("an empty slice")
    end = min(start + count * step, t.shape[d])
    seg = slice_dim(t, d, start, end)
    short = start + count * step - end
    if short:
        pads = [[0, 0] for _ in range(t.ndim)]
        pads[d] = [0, short]
        seg = ops.pad(seg, pads)
    dims = [-1 if v is None else v for v in t.shape]
    split = ops.reshape(seg, dims[:d] + [count, step] + dims[d + 1:])
    begin, size = [0] * split.ndim, [-1] * split.ndim
    size[d + 1] = 1
    return ops.squeeze(ops.slice_(split, begin, size), [d + 1])


@handles("slice")
def _slice(ctx, node, x, dim=0, start=None, end=None, step=1):
    t = ctx.torch(x)
    d = dim % t.ndim
    lo, hi = _bounds(node, t.shape[d], start, end)
    return _V(slice_dim(t, d, lo, hi if hi is not None and hi < (t.shape[d] or 0) else None, int(step)))


@handles("narrow")
def _narrow(ctx, node, x, dim, start, length):
    t = ctx.torch(x)
    d = dim % t.ndim
    lo, _ = _bounds(node, t.shape[d], start, None)
    return _V(slice_dim(t, d, lo, lo + int(length)))


def _select(node, t, d, index):
    n = t.shape[d]
    if index < 0:
        if n is None:
            raise TorchImportError(f"{node.target} in {_where(node)} picks from the end of a dim of unknown size")
        index += n
    return ops.squeeze(slice_dim(t, d, index, index + 1), [d])


@handles("select")
def _select_op(ctx, node, x, dim, index):
    t = ctx.torch(x)
    return _V(_select(node, t, dim % t.ndim, int(index)))


@handles("unbind")
def _unbind(ctx, node, x, dim=0):
    t = ctx.torch(x)
    d = dim % t.ndim
    if t.shape[d] is None:
        raise TorchImportError(f"unbind of a dim of unknown size in {_where(node)}")
    return [_V(_select(node, t, d, i)) for i in range(t.shape[d])]


def _pieces(node, t, d, sizes):
    out, start = [], 0
    for size in sizes:
        out.append(_V(slice_dim(t, d, start, start + size)))
        start += size
    return out


@handles("split", "split_with_sizes", "chunk", "tensor_split")
def _split(ctx, node, x, sizes, dim=0):
    t = ctx.torch(x)
    d = dim % t.ndim
    n = t.shape[d]
    if n is None:
        raise TorchImportError(f"{node.target} of a dim of unknown size in {_where(node)}; split a known dim")
    name = _aten_name(node.target)
    if name == "chunk":
        step = -(-n // int(sizes))
        sizes = [min(step, n - s) for s in range(0, n, step)]
    elif name == "tensor_split":
        k = int(sizes)
        sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
    elif isinstance(sizes, int):
        sizes = [min(sizes, n - s) for s in range(0, n, sizes)]
    return _pieces(node, t, d, [int(s) for s in sizes])


@handles("stack")
def _stack(ctx, node, tensors, dim=0):
    ts = [ctx.torch(v) for v in tensors]
    d = dim % (ts[0].ndim + 1)
    return _V(ops.concat([ops.expand_dims(t, d) for t in ts], d))


@handles("triu", "tril")
def _triangle(ctx, node, x, diagonal=0):
    """The upper (triu) or lower (tril) triangle of the last two dims, zeros elsewhere (SELECT_V2 with a
    constant mask, so -inf entries stay out of any product)."""
    t = ctx.torch(x)
    rows, cols = t.shape[-2], t.shape[-1]
    if rows is None or cols is None:
        raise TorchImportError(f"{node.target} in {_where(node)} needs the last two dims known")
    keep = np.triu(np.ones((rows, cols), bool), diagonal) if _aten_name(node.target) == "triu" else \
        np.tril(np.ones((rows, cols), bool), diagonal)
    return _V(ops.where(ctx.fb.const(keep), t, ops.zeros_like(t)))


@handles("repeat")
def _repeat(ctx, node, x, repeats):
    t = ctx.torch(x)
    lead = len(repeats) - t.ndim
    if lead:
        t = ops.reshape(t, [1] * lead + [-1 if d is None else d for d in t.shape])
    return _V(ops.tile(t, [int(r) for r in repeats]))


@handles("index_select")
def _index_select(ctx, node, x, dim, index):
    t = ctx.torch(x)
    return _V(ops.gather(t, ops.cast(ctx.torch(index), "int32"), axis=dim % t.ndim))


@handles("index")
def _index(ctx, node, x, indices):
    """x[idx] with one integer index tensor (the other dims taken whole): GATHER."""
    t = ctx.torch(x)
    picked = [(d, i) for d, i in enumerate(indices) if i is not None]
    if len(picked) != 1 or ctx.torch(picked[0][1]).dtype == "bool":
        raise TorchImportError(f"indexing with {len(picked)} index tensors or a boolean mask in {_where(node)} is "
                               "not supported (its size may depend on the data); index one dim with integers, "
                               "or use torch.where")
    d, idx = picked[0]
    return _V(ops.gather(t, ops.cast(ctx.torch(idx), "int32"), axis=d))


# -- new tensors ---------------------------------------------------------------------------------------------------
def _out_dtype(node):
    from .aten import _dtype
    val = node.meta.get("val")
    return _dtype(node, getattr(val, "dtype", None)) or "float32"


def _filled(ctx, node, like, sizes, value):
    dtype = _out_dtype(node)
    value = bool(value) if dtype == "bool" else int(value) if dtype == "int32" else float(value)
    if not any(_is_sym(d) for d in sizes):
        out = _V(ctx.fb.const(np.full([int(d) for d in sizes], value), dtype))
    else:
        target, known = shape_arg(ctx, node, like, sizes)
        y = ops.fill(target, value, dtype)
        y.info.shape = tuple(known)
        out = _V(y)
    out.zeros = value == 0  # (a recurrent layer's initial state of zeros is its default)
    return out


@handles("zeros", "ones", "full", "empty", "new_zeros", "new_ones", "new_full", "new_empty")
def _new(ctx, node, *args, **kw):
    name = _aten_name(node.target)
    if name.startswith("new_"):
        args = args[1:]
    sizes = list(args[0])
    value = {"zeros": 0, "empty": 0, "ones": 1}.get(name.replace("new_", ""), args[1] if len(args) > 1 else 0)
    like = next((v for v in sizes if _is_sym(v)), None)
    return _filled(ctx, node, ctx.fb.const(np.zeros(0, np.int32)) if like is None else like, sizes, value)


@handles("zeros_like", "ones_like", "full_like", "empty_like")
def _like(ctx, node, x, *args, **kw):
    t = ctx.torch(x)
    name = _aten_name(node.target)
    value = {"zeros_like": 0, "empty_like": 0, "ones_like": 1}.get(name, args[0] if args else 0)
    return _filled(ctx, node, t, [size_of(t, i) for i in range(t.ndim)], value)


@handles("scalar_tensor")
def _scalar_tensor(ctx, node, value, **kw):
    return _V(ctx.fb.const(np.asarray(value), _out_dtype(node)))


@handles("arange")
def _arange(ctx, node, *args, **kw):
    nums = [a for a in args if isinstance(a, (int, float)) or _is_sym(a)]
    start, end, step = (0, nums[0], 1) if len(nums) == 1 else (nums[0], nums[1], nums[2] if len(nums) > 2 else 1)
    dtype = _out_dtype(node)
    if any(_is_sym(v) for v in (start, end, step)):
        fb = next(v for v in (start, end, step) if _is_sym(v)).fb
        y = ops.arange(*[v if _is_sym(v) else fb.const(np.int32(v)) for v in (start, end, step)])
        return _V(ops.cast(y, dtype))
    return _V(ctx.fb.const(np.arange(start, end, step), dtype))
