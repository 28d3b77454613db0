"""Helpers shared by the op families: shape inference rules, definition helpers and gradient plumbing."""
from __future__ import annotations

import numpy as np

from ..core.ir import FLOAT_DTYPES
from ..core.registry import Builtin, defop
from ..core.trace import Tensor, builder_of
from .api import cast, gather, reduce_prod, reduce_sum, reshape, shape_of


def broadcast_shapes(*shapes):
    """NumPy broadcasting on shapes whose dims may be None (unknown)."""
    rank = max(len(s) for s in shapes)
    out = []
    for dims in zip(*[(1,) * (rank - len(s)) + tuple(s) for s in shapes]):
        known = {d for d in dims if d is not None and d != 1}
        if len(known) > 1:
            raise ValueError(f"shapes {' and '.join(map(str, shapes))} do not broadcast")
        if known:
            out.append(known.pop())
        elif any(d is None for d in dims):
            out.append(None)
        else:
            out.append(1)
    return tuple(out)


def same(attrs, inputs):
    """Output like the first input."""
    return [(inputs[0].dtype, inputs[0].shape)]


def broadcast_infer(attrs, inputs):
    dtypes = {t.dtype for t in inputs}
    if len(dtypes) != 1:
        raise ValueError(f"inputs must have one dtype, got {sorted(dtypes)}")
    return [(inputs[0].dtype, broadcast_shapes(*[t.shape for t in inputs]))]


def compare_infer(attrs, inputs):
    (dtype, shape), = broadcast_infer(attrs, inputs)
    return [("bool", shape)]


MAX_ELEMENTS = 1 << 28  # the most elements a kernel allocates from a shape held in a tensor's values


def checked_dims(dims, op: str) -> list[int]:
    """A shape read from a tensor's values (FILL's dims, BROADCAST_TO's shape, ...), refused before
    anything is allocated when a dim is negative or the total passes MAX_ELEMENTS: such values can
    come from a hostile model file."""
    dims = [int(d) for d in np.asarray(dims).reshape(-1)]
    total = 1
    for d in dims:
        if d < 0:
            raise ValueError(f"{op}: negative dim in shape {dims}")
        total *= d
    if total > MAX_ELEMENTS:
        raise ValueError(f"{op}: shape {dims} has {total} elements, more than the {MAX_ELEMENTS} allowed")
    return dims


def sized(dtype, dims, op: str, times: int = 1, extra: int = 0):
    """An `allocates` rule's answer (dtype, shape, bytes) for an output of `dtype` and `dims` read
    from tensor values: `times` the output's bytes plus `extra` working bytes, counted with Python
    ints (no overflow); a negative dim is refused before anything is allocated."""
    dims = tuple(int(d) for d in dims)
    if any(d < 0 for d in dims):
        raise ValueError(f"{op}: negative dim in shape {list(dims)}")
    n = np.dtype(dtype).itemsize
    for d in dims:
        n *= d
    return np.dtype(dtype), dims, n * times + extra


def const_value(info, what="input"):
    """The constant data of a TensorInfo, or an error saying it must be known at conversion."""
    if info is None or info.data is None:
        raise ValueError(f"{what} must be a constant known at conversion time")
    return info.data


def normalize_axes(axes, rank):
    """Axes (an int, a list, an array) as a sorted tuple of distinct axes in [0, rank)."""
    key = (tuple(np.asarray(axes).reshape(-1).tolist()), rank)
    found = _AXES.get(key)
    if found is None:
        out = []
        for a in key[0]:
            a = int(a)
            if not -rank <= a < rank:
                raise ValueError(f"axis {a} is out of range for rank {rank}")
            out.append(a % rank)
        found = tuple(sorted(set(out)))
        if len(_AXES) < 4096:  # the axes a model uses are few; a hostile file's many are not kept
            _AXES[key] = found
    return found


_AXES: dict = {}


ACTIVATIONS = {
    "NONE": lambda x: x,
    "RELU": lambda x: np.maximum(x, 0).astype(x.dtype, copy=False),
    "RELU_N1_TO_1": lambda x: np.clip(x, -1, 1).astype(x.dtype, copy=False),
    "RELU6": lambda x: np.clip(x, 0, 6).astype(x.dtype, copy=False),
    "TANH": lambda x: np.tanh(x),
    "SIGN_BIT": lambda x: np.signbit(x).astype(x.dtype),
}


def fused(x, activation):
    try:
        return ACTIVATIONS[activation](x)
    except KeyError:
        raise ValueError(f"unknown fused activation {activation!r}") from None


def no_fused_activation(attrs, op):
    act = attrs.get("fused_activation_function", "NONE")
    if act != "NONE":
        raise NotImplementedError(f"the gradient of {op} with fused activation {act} is taken after "
                                  "splitting the activation into its own op")


def unbroadcast(g: Tensor, x: Tensor) -> Tensor:
    """Sum `g` (shaped like a broadcast result) down to the shape of `x`."""
    gs, xs = g.shape, x.shape
    lead = len(gs) - len(xs)
    axes = list(range(lead))
    for i, d in enumerate(xs):
        gd = gs[lead + i]
        if d == 1 and gd != 1:
            axes.append(lead + i)
    if axes:
        g = reduce_sum(g, axes, keepdims=False)
    if tuple(g.shape) == tuple(xs):
        return g
    if sum(d is None for d in xs) <= 1:
        return reshape(g, [-1 if d is None else d for d in xs])
    return reshape(g, shape_of(x), known_shape=xs)


def num_elements(x: Tensor, axes=None, dtype=None) -> Tensor:
    """The number of elements of `x` (over `axes`), as a scalar tensor of x's dtype."""
    fb = builder_of(x)
    dims = [x.shape[a] for a in (range(x.ndim) if axes is None else axes)]
    dtype = dtype or x.dtype
    if None not in dims:
        return fb.const(float(np.prod(dims, dtype=np.float64)), dtype)
    shp = shape_of(x)
    if axes is not None:
        shp = gather(shp, fb.const(np.asarray(list(axes), np.int32)))
    return cast(reduce_prod(shp, [0]), dtype)


def static_shape(t, what):
    """The static shape of `t`, which a gradient rule needs (NotImplementedError otherwise)."""
    if None in t.shape:
        raise NotImplementedError(f"the gradient needs the static shape of {what}, got {t.shape}")
    return tuple(t.shape)


# -- definition helpers ---------------------------------------------------------------------------
def typed_same(dtypes):
    """Output like the input, for inputs of `dtypes` (those TFLite's kernel accepts)."""
    def infer(attrs, inputs):
        x, = inputs
        if x.dtype not in dtypes:
            raise ValueError(f"takes {'/'.join(dtypes)} input, got {x.dtype}")
        return [(x.dtype, x.shape)]
    return infer


def unary(name, code, fn, vjp, options=None, fields=None, attrs=None, dtypes=FLOAT_DTYPES, inplace=None):
    """Register a one-input op whose output is like its input. `inplace`: True when `fn` is a ufunc
    (it then also writes into `out=`), or a function (x, out) computing the same into `out`."""
    kernel = fn
    if inplace is not None:
        into = fn if inplace is True else inplace

        def kernel(x, out=None):
            return fn(x) if out is None else into(x, out=out)
    defop(name, infer=typed_same(dtypes), kernel=kernel, vjp=vjp, attrs=attrs, num_inputs=(1, 1),
          inplace=(0,) if inplace is not None else (), tflite=Builtin(code, options, fields or {}))


def typed(fn):
    """A kernel that casts `fn`'s result back to its input's dtype."""
    return lambda x: np.asarray(fn(x), dtype=x.dtype)
