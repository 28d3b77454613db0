"""The ONNX importer's shape handlers: Shape and the size arithmetic exporters build on it, Reshape,
Flatten, Transpose, Concat, Split, Slice, Squeeze, Unsqueeze, Gather, Constant, ConstantOfShape, Expand,
Tile, Range and Pad (see graph.py). Values known at import are computed with NumPy; sizes known only at
run time travel as Dims."""
from __future__ import annotations

import numpy as np

from ... import ops
from .graph import TO_NHWC, Dims, P, V, axis_of, handles, size_of

_INT32_MAX = 2 ** 31 - 1


def _held(ctx, x):
    """(the tensor holding x, whether it is NHWC) for a traced value or variable."""
    if isinstance(x, V):
        return x.t, x.nhwc
    return ctx.plain(x), False


def _onnx_dims(t, nhwc):
    """The dims of a held tensor in ONNX's order, each an int or None."""
    return [t.shape[d] for d in TO_NHWC] if nhwc else list(t.shape)


@handles("Constant")
def _constant(ctx, node):
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in node.attrs:
            v = node.attrs[key]
            dtype = np.float32 if "float" in key else np.int64 if "int" in key else None
            return np.asarray(v, dtype) if dtype is not None else np.asarray(v)
    raise node.refuse(f"a constant given as {sorted(node.attrs)}", "give it as a tensor")


@handles("Shape")
def _shape(ctx, node, x):
    c = ctx.const(x)
    if c is not None:
        entries = list(c.shape)
    elif isinstance(x, Dims):
        entries = [] if x.scalar else [len(x.entries)]
    else:
        t, nhwc = _held(ctx, x)
        order = TO_NHWC if nhwc else range(t.ndim)
        entries = [size_of(t, d) for d in order]
    start, end = node.attr("start", 0), node.attr("end", None)
    entries = entries[slice(start, end)]
    dims = Dims(entries)
    return dims.array() if dims.known else dims


@handles("Size")
def _size(ctx, node, x):
    shape = _shape(ctx, node, x)
    if isinstance(shape, np.ndarray):
        return np.asarray(np.prod(shape), np.int64)
    total = None
    for e in shape.entries:
        e = e if hasattr(e, "fb") else ctx.fb.const(np.int32(e))
        total = e if total is None else ops.mul(total, e)
    return Dims([total], scalar=True)


def _entries(ctx, node, v):
    """A 1-D integer value as a list of ints and int32 scalars, or None when computed at run time."""
    if isinstance(v, Dims):
        return list(v.entries)
    c = ctx.const(v)
    if c is not None:
        return [int(e) for e in np.ravel(c)]
    return None


def reshape_to(ctx, node, t, target):
    """t reshaped to `target` (ints, -1, and int32 scalars known at run time)."""
    if ctx.batch is not None and None in t.shape and all(isinstance(d, int) for d in target):
        target = _follow_batch(ctx, node, t, target)
    unknown = [i for i, d in enumerate(target) if not isinstance(d, int) or d == -1]
    if len(unknown) > 1 and ctx.batch is None:  # ONNX's shape inference may know some (no fixed batch in them)
        inferred = ctx.inferred(node.outputs[0])
        if inferred and len(inferred) == len(target):
            target = [inferred[i] if i in unknown and inferred[i] is not None else d for i, d in enumerate(target)]
            unknown = [i for i, d in enumerate(target) if not isinstance(d, int) or d == -1]
    if len(unknown) <= 1:
        return ops.reshape(t, [-1 if i in unknown else int(d) for i, d in enumerate(target)])
    known = [d if isinstance(d, int) and d != -1 else None for d in target]
    return ops.reshape(t, Dims(target).tensor(ctx.fb), known_shape=known)


def _follow_batch(ctx, node, t, target):
    """A model exported with a fixed batch B, traced with an unknown one: t has one unknown dim (the batch),
    and the reshape's size at the same place in the element order (after as many elements) is a multiple of
    B (the batch, or the batch merged with the dims after it): that size follows the run-time batch."""
    b = ctx.batch
    out = list(target)
    inferred = ctx.inferred(node.outputs[0])
    if -1 in out and inferred and len(inferred) == len(out) and None not in inferred:
        out = [int(d) for d in inferred]
    unknown = [i for i, d in enumerate(t.shape) if d is None]
    if len(unknown) == 1 and -1 not in out:
        before = int(np.prod(t.shape[:unknown[0]]))
        for j in range(len(out)):
            if int(np.prod(out[:j])) == before and out[j] > 0 and out[j] % b == 0:
                return out[:j] + [-1] + out[j + 1:]
    if out.count(-1) == 1:
        return out
    raise node.refuse(f"a reshape to {target} mixes the batch (fixed at {b} in the model) with other dims",
                      f"export the model with a dynamic batch (torch.onnx.export(..., dynamic_axes={{input: {{0: "
                      f"'batch'}}}}), or dynamic_shapes with dynamo=True), or convert with the batch size {b}")


@handles("Reshape")
def _reshape(ctx, node, x, shape):
    target = _entries(ctx, node, shape)
    c = ctx.const(x)
    if c is not None and target is not None and all(isinstance(d, int) for d in target):
        return c.reshape([c.shape[i] if d == 0 and not node.attr("allowzero", 0) else d for i, d in enumerate(target)])
    if isinstance(x, Dims) and target in ([-1], [len(x.entries)]):
        return Dims(x.entries)
    t = ctx.plain(x)
    if target is None:  # a shape computed from tensors at run time
        s = ops.cast(ctx.plain(shape), "int32")
        known = ctx.inferred(node.outputs[0]) if ctx.batch is None else None
        return V(ops.reshape(t, s, known_shape=known or [None] * s.shape[0]))
    if not node.attr("allowzero", 0):
        target = [size_of(t, i) if isinstance(d, int) and d == 0 else d for i, d in enumerate(target)]
    return V(reshape_to(ctx, node, t, target))


@handles("Flatten")
def _flatten(ctx, node, x):
    c = ctx.const(x)
    axis = int(node.attr("axis", 1))
    if c is not None:
        axis %= max(c.ndim, 1)
        return c.reshape(int(np.prod(c.shape[:axis])), -1)
    t = ctx.plain(x)
    axis = axis % t.ndim if t.ndim else 0
    lead, rest = t.shape[:axis], t.shape[axis:]
    target = [int(np.prod(lead)) if None not in lead else -1, int(np.prod(rest)) if None not in rest else -1]
    if target.count(-1) > 1:
        lead_size = ops.reduce_prod(ops.slice_(ops.shape_of(t), [0], [axis]), [0], keepdims=True)
        return V(ops.reshape(t, ops.concat([lead_size, ctx.fb.const(np.int32([-1]))], 0), known_shape=[None, None]))
    return V(reshape_to(ctx, node, t, target))


@handles("Transpose")
def _transpose(ctx, node, x):
    c = ctx.const(x)
    perm = node.attr("perm")
    if c is not None:
        return np.transpose(c, perm)
    t, nhwc = _held(ctx, x)
    perm = list(range(t.ndim))[::-1] if perm is None else [int(p) for p in perm]
    if nhwc:  # NCHW = NHWC transposed by (0, 3, 1, 2): one transpose of the held tensor
        perm = [TO_NHWC[p] for p in perm]
    return V(t if perm == list(range(t.ndim)) else ops.transpose(t, perm))


@handles("Concat")
def _concat(ctx, node, *xs):
    axis = int(node.attr("axis"))
    consts = [ctx.const(x) for x in xs]
    if all(c is not None for c in consts):
        return np.concatenate([np.atleast_1d(c) for c in consts], axis)
    if all(isinstance(x, Dims) or c is not None for x, c in zip(xs, consts)) and all(
            isinstance(x, Dims) or c.ndim == 1 for x, c in zip(xs, consts)):
        entries = []
        for x, c in zip(xs, consts):
            entries += list(x.entries) if isinstance(x, Dims) else [int(e) for e in c]
        return Dims(entries)
    ts, nhwc = ctx.same_layout(*xs)
    rank = ts[0].ndim
    return V(ops.concat(ts, TO_NHWC[axis % rank] if nhwc else axis % rank), nhwc)


def _split_sizes(ctx, node, n_dim, split):
    n_out = len(node.outputs)
    sizes = node.attr("split") if split is None else ctx.const(split)
    if sizes is not None and len(np.atleast_1d(sizes)):
        return [int(s) for s in np.atleast_1d(sizes)]
    if n_dim is None:
        raise node.refuse("a split of a dim whose size is unknown", "give the sizes (split=)")
    n = int(node.attr("num_outputs", n_out))
    chunk = -(-n_dim // n)
    return [min(chunk, n_dim - k * chunk) for k in range(n)]


@handles("Split")
def _split(ctx, node, x, split=None):
    c = ctx.const(x)
    axis = int(node.attr("axis", 0))
    if c is not None:
        sizes = _split_sizes(ctx, node, c.shape[axis], split)
        return np.split(c, np.cumsum(sizes)[:-1], axis)
    t, nhwc = _held(ctx, x)
    rank = t.ndim
    held_axis = axis_of(V(t, nhwc), axis, rank)
    sizes = _split_sizes(ctx, node, t.shape[held_axis], split)
    outs, start = [], 0
    for s in sizes:
        begin = [0] * rank
        size = [-1] * rank
        begin[held_axis], size[held_axis] = start, s
        outs.append(V(ops.slice_(t, begin, size), nhwc))
        start += s
    return outs


def _slice_spec(ctx, node, rank, starts, ends, axes, steps):
    starts, ends = _entries(ctx, node, starts), _entries(ctx, node, ends)
    if starts is None or ends is None or any(not isinstance(v, int) for v in starts + ends):
        raise node.refuse("slice bounds computed at run time", "export with static slice bounds")
    axes = list(range(len(starts))) if axes is None else [int(a) % rank for a in ctx.const(axes)]
    steps = [1] * len(starts) if steps is None else [int(s) for s in ctx.const(steps)]
    return list(zip(axes, starts, ends, steps))


@handles("Slice")
def _slice(ctx, node, x, starts, ends, axes=None, steps=None):
    if isinstance(x, Dims):
        (_, b, e, s), = _slice_spec(ctx, node, 1, starts, ends, axes, steps)
        return Dims(x.entries[slice(b, e, s)])
    c = ctx.const(x)
    if c is not None:
        index = [slice(None)] * c.ndim
        for a, b, e, s in _slice_spec(ctx, node, c.ndim, starts, ends, axes, steps):
            index[a] = slice(b, e, s)
        return c[tuple(index)]
    t, nhwc = _held(ctx, x)
    spec = _slice_spec(ctx, node, t.ndim, starts, ends, axes, steps)
    return V(slice_held(t, [(axis_of(V(t, nhwc), a, t.ndim), b, e, s) for a, b, e, s in spec]), nhwc)


def slice_held(t, spec):
    """t[b:e:s] along each (axis, b, e, s): SLICE when every step is 1 and each cut dim's size is known
    (its gradient is a PAD), else STRIDED_SLICE."""
    begin, size = [0] * t.ndim, [-1] * t.ndim
    simple = True
    for a, b, e, s in spec:
        d = t.shape[a]
        if s == 1 and d is not None:
            lo, hi, _ = slice(b, e, 1).indices(d)
            begin[a], size[a] = lo, max(hi - lo, 0)
        elif not (s == 1 and b == 0 and e >= _INT32_MAX):  # (the whole of an unknown dim: nothing to cut)
            simple = False
    if simple:
        return ops.slice_(t, begin, size)
    bs, es, ss = [0] * t.ndim, [0] * t.ndim, [1] * t.ndim
    begin_mask = end_mask = (1 << t.ndim) - 1
    for a, b, e, s in spec:
        bs[a], es[a], ss[a] = (max(min(v, _INT32_MAX), -_INT32_MAX) for v in (b, e, s))
        if abs(b) < _INT32_MAX:
            begin_mask &= ~(1 << a)
        if abs(e) < _INT32_MAX:
            end_mask &= ~(1 << a)
    return ops.strided_slice(t, bs, es, ss, begin_mask=begin_mask, end_mask=end_mask)


def _axes(ctx, node, axes):
    if axes is None:
        axes = node.attr("axes")
    else:
        axes = ctx.const(axes)
    return None if axes is None else [int(a) for a in np.atleast_1d(axes)]


@handles("Squeeze")
def _squeeze(ctx, node, x, axes=None):
    axes = _axes(ctx, node, axes)
    if isinstance(x, Dims) and len(x.entries) == 1:
        return Dims(x.entries, scalar=True)
    c = ctx.const(x)
    if c is not None:
        return np.squeeze(c, None if axes is None else tuple(axes))
    t = ctx.plain(x)
    if axes is None:
        if None in t.shape:
            raise node.refuse("a squeeze of every size-1 dim of a tensor with unknown dims", "give the axes")
        axes = [i for i, d in enumerate(t.shape) if d == 1]
    return V(ops.squeeze(t, [a % t.ndim for a in axes]))


@handles("Unsqueeze")
def _unsqueeze(ctx, node, x, axes=None):
    axes = _axes(ctx, node, axes)
    if isinstance(x, Dims) and x.scalar and axes in ([0], [-1]):
        return Dims(x.entries)
    c = ctx.const(x)
    if c is not None:
        return np.expand_dims(c, tuple(axes))
    t = ctx.plain(x)
    rank = t.ndim + len(axes)
    for a in sorted(a % rank for a in axes):
        t = ops.expand_dims(t, a)
    return V(t)


@handles("Gather")
def _gather(ctx, node, x, indices):
    axis = int(node.attr("axis", 0))
    idx = ctx.const(indices)
    if isinstance(x, Dims) and idx is not None:
        picked = [x.entries[int(i)] for i in np.ravel(idx)]
        return Dims(picked, scalar=idx.ndim == 0)
    c = ctx.const(x)
    if c is not None and idx is not None:
        return np.take(c, idx, axis)
    t, nhwc = _held(ctx, x)
    rank = t.ndim
    a = axis_of(V(t, nhwc), axis, rank)
    if nhwc:  # the result drops or grows dims: back to ONNX's order first
        t, a = ctx.plain(x), axis % rank
    if idx is not None:
        n = t.shape[a]
        if idx.ndim == 0:  # one index: a slice and a squeeze (whose gradient is a pad)
            i = int(idx) % n if n is not None else int(idx)
            piece = slice_held(t, [(a, i, i + 1 if i != -1 else _INT32_MAX, 1)])
            return V(ops.squeeze(piece, [a]))
        if n is not None:
            idx = np.where(idx < 0, idx + n, idx)
        return V(ops.gather(t, ctx.fb.const(idx.astype(np.int32)), axis=a))
    ids = ops.cast(ctx.plain(indices), "int32")
    if a == 0 and isinstance(x, P):  # an embedding table: GATHER_ND, whose gradient is a scatter-add
        return V(ops.gather_nd(t, ops.expand_dims(ids, -1)))
    return V(ops.gather(t, ids, axis=a))


@handles("ConstantOfShape")
def _constant_of_shape(ctx, node, shape, value=None):
    value = node.attr("value") if value is None else value
    value = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)
    dims = _entries(ctx, node, shape)
    if dims is not None and all(isinstance(d, int) for d in dims):
        return np.full(dims, value[0], value.dtype)
    dtype = {"f": "float32", "b": "bool"}.get(value.dtype.kind, "int32")
    s = Dims(dims).tensor(ctx.fb) if dims is not None else ops.cast(ctx.plain(shape), "int32")
    y = ops.fill(s, value[0].item(), dtype)
    y.info.shape = tuple(d if isinstance(d, int) else None for d in (dims or [None] * s.shape[0]))
    return V(y)


@handles("Expand")
def _expand(ctx, node, x, shape):
    dims = _entries(ctx, node, shape)
    c = ctx.const(x)
    if c is not None and dims is not None and all(isinstance(d, int) for d in dims):
        return c * np.ones(dims, c.dtype)
    if dims is None:
        raise node.refuse("an expand to a shape computed from tensors at run time")
    if c is not None and c.size and np.all(c == c.flat[0]) and c.ndim <= len(dims):  # one value: a FILL
        return _constant_of_shape(ctx, node, Dims(dims), value=c.reshape(-1)[:1])
    t = ctx.plain(x)
    rank = max(len(dims), t.ndim)
    xs = [1] * (rank - t.ndim) + list(t.shape)
    ds = [1] * (rank - len(dims)) + dims
    out = [xd if isinstance(dd, int) and dd == 1 else dd for xd, dd in zip(xs, ds)]
    if all(isinstance(d, int) for d in out):
        return V(ops.broadcast_to(t, out))
    entries = [d if d is not None else size_of(t, i - (rank - t.ndim)) for i, d in enumerate(out)]
    known = [d if isinstance(d, int) else None for d in entries]
    return V(ops.broadcast_to(t, Dims(entries).tensor(ctx.fb), known_shape=known))


@handles("Tile")
def _tile(ctx, node, x, repeats):
    reps = ctx.const(repeats)
    c = ctx.const(x)
    if c is not None and reps is not None:
        return np.tile(c, reps)
    if reps is None:
        raise node.refuse("repeats computed at run time")
    return V(ops.tile(ctx.plain(x), [int(r) for r in reps]))


@handles("Range")
def _range(ctx, node, start, limit, delta):
    cs = [ctx.const(v) for v in (start, limit, delta)]
    if all(c is not None for c in cs):
        return np.arange(*[c.item() for c in cs]).astype(cs[0].dtype)
    ts = [ctx.plain(v) for v in (start, limit, delta)]
    return V(ops.arange(*ts))


@handles("Pad")
def _pad(ctx, node, x, pads=None, value=None, axes=None):
    mode = node.attr("mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise node.refuse(f"padding with mode={mode!r}", "supported modes: constant, reflect, edge, wrap")
    t, nhwc = _held(ctx, x)
    rank = t.ndim
    p = [int(v) for v in (ctx.const(pads) if pads is not None else node.attr("pads"))]
    picked = list(range(rank)) if axes is None else [int(a) % rank for a in ctx.const(axes)]
    n = len(picked)
    pairs = [[0, 0] for _ in range(rank)]
    for k, a in enumerate(picked):
        pairs[axis_of(V(t, nhwc), a, rank)] = [p[k], p[k + n]]
    fill = 0.0
    if value is not None:
        v = ctx.const(value)
        if v is None:
            raise node.refuse("a padding value computed at run time")
        fill = float(np.ravel(v)[0]) if np.size(v) else 0.0
    crop = [(a, -lo if lo < 0 else 0, hi) for a, (lo, hi) in enumerate(pairs)]
    if any(lo < 0 or hi < 0 for lo, hi in pairs):  # negative padding crops
        spec = [(a, b, (t.shape[a] + hi) if hi < 0 else _INT32_MAX, 1) for a, b, hi in crop if b or hi < 0]
        t = slice_held(t, spec)
        pairs = [[max(lo, 0), max(hi, 0)] for lo, hi in pairs]
    if mode != "constant":
        return V(_pad_by_gather(node, t, pairs, mode), nhwc)
    if fill != 0.0:  # pad(x - v) + v
        return V(ops.add(ops.pad(ops.sub(t, fill), pairs), fill), nhwc)
    return V(ops.pad(t, pairs), nhwc)


def _pad_by_gather(node, t, pairs, mode):
    """Reflect, edge or wrap padding: a GATHER of each padded axis with NumPy's padded indices."""
    for a, (lo, hi) in enumerate(pairs):
        if not lo and not hi:
            continue
        n = t.shape[a]
        if n is None:
            raise node.refuse(f"{mode} padding of a dim whose size is unknown")
        idx = np.pad(np.arange(n, dtype=np.int32), (lo, hi), mode=mode)
        t = ops.gather(t, t.fb.const(idx), axis=a)
    return t


# sequences (what the dynamo exporter makes of torch.chunk / split without optimisation): Python lists
@handles("SplitToSequence")
def _split_to_sequence(ctx, node, x, split=None):
    axis = int(node.attr("axis", 0))
    sizes = None if split is None else ctx.const(split)
    if split is not None and sizes is None:
        raise node.refuse("split sizes computed at run time")
    if sizes is None or np.ndim(sizes) == 0:  # pieces of one size (1 by default), the last one maybe shorter
        c = ctx.const(x)
        n = c.shape[axis] if c is not None else _onnx_dims(*_held(ctx, x))[axis]
        if n is None:
            raise node.refuse("a split into pieces of a dim whose size is unknown")
        k = 1 if sizes is None else int(sizes)
        sizes = np.asarray([k] * (n // k) + ([n % k] if n % k else []), np.int64)
    parts = _split(ctx, node, x, sizes)
    if split is None and not node.attr("keepdims", 1):
        parts = [_squeeze(ctx, node, p, np.asarray([axis])) for p in parts]
    return [list(parts)]


@handles("SequenceAt")
def _sequence_at(ctx, node, seq, position):
    return seq[int(ctx.const(position))]


@handles("SequenceConstruct")
def _sequence_construct(ctx, node, *xs):
    return [list(xs)]


@handles("SequenceLength")
def _sequence_length(ctx, node, seq):
    return np.asarray(len(seq), np.int64)


@handles("ConcatFromSequence")
def _concat_from_sequence(ctx, node, seq):
    if node.attr("new_axis", 0):
        axis = int(node.attr("axis"))
        seq = [_unsqueeze(ctx, node, x, np.asarray([axis])) for x in seq]
    return _concat(ctx, node, *seq)
