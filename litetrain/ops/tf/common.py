"""What TensorFlow's ops share here: registering one, data formats, sliding-window geometry, and
resource handles.

An op is registered as "tf.<Name>" with the NodeDef attributes TensorFlow's op definition gives it
(with TensorFlow's defaults), so a file's attributes are checked against the definition and written
back unchanged. They are what a file already contains, never emitted by litetrain's own gradient
rules, so they are NOT_DIFFERENTIABLE.
"""
from __future__ import annotations

import numpy as np

from ...core.ir import numpy_dtype
from ...core.registry import NOT_DIFFERENTIABLE, defop
from .._util import sized
from .flex import flex_op


def tf_op(name, *, infer, kernel, attrs=None, stateful=False, num_inputs=(0, None), allocates=None):
    """Register TensorFlow op `name` as "tf.<name>" (a Flex op in files). `allocates`: for an op whose
    output size comes from tensor values, what its kernel would allocate (core/registry.py)."""
    return defop(f"tf.{name}", infer=infer, kernel=kernel, vjp=NOT_DIFFERENTIABLE, tflite=flex_op(name),
                 attrs=attrs, stateful=stateful, num_inputs=num_inputs, allocates=allocates)


def sized_by(size_input, like_input, times=2):
    """An `allocates` rule for an op whose output is shaped by the int vector input `size_input`
    and typed like input `like_input`: `times` the output's bytes (the output and a padded working
    copy). An input the kernel will refuse costs nothing here: the kernel says what is wrong."""
    def allocates(*args, **attrs):
        like = np.asarray(args[like_input])
        try:
            dims = [int(d) for d in np.asarray(args[size_input]).reshape(-1)]
        except (TypeError, ValueError):
            return like.dtype, like.shape, 0
        return sized(like.dtype, dims, "the op's output", times)
    return allocates


# -- data formats --------------------------------------------------------------------------------------
def channels_last(data_format: str, op: str, allowed=("NHWC", "NCHW")) -> bool:
    """Whether `data_format` keeps channels last; refuses a format the op does not take."""
    if data_format not in allowed:
        raise ValueError(f"{op}: data_format {data_format!r} is not supported (it takes {', '.join(allowed)})")
    return data_format.endswith("C")


def to_last(x: np.ndarray, last: bool) -> np.ndarray:
    """A channels-first array with its channels moved last (as is if already last)."""
    return x if last else np.moveaxis(x, 1, -1)


def from_last(x: np.ndarray, last: bool) -> np.ndarray:
    return x if last else np.moveaxis(x, -1, 1)


def nhwc_dims(dims, last: bool):
    """A 4-D shape or attribute (sizes, strides, ksize, dilations) in NHWC order."""
    dims = tuple(dims)
    return dims if last else (dims[0], dims[2], dims[3], dims[1])


def window_attrs(op, data_format, strides, dilations=(1, 1, 1, 1), ksize=None):
    """(channels last?, strides, dilations, ksize) in NHWC order, checked: 4 entries each, 1 on the
    batch and channel dims (TensorFlow refuses the others)."""
    last = channels_last(data_format, op)
    named = {"strides": strides, "dilations": dilations, **({"ksize": ksize} if ksize is not None else {})}
    out = {}
    for what, v in named.items():
        if len(v) != 4:
            raise ValueError(f"{op}: {what} must have 4 entries, got {list(v)}")
        v = nhwc_dims(v, last)
        if v[0] != 1 or v[3] != 1:
            raise ValueError(f"{op}: {what} {list(v)} (NHWC order) must be 1 on the batch and channel dims")
        if min(v) < 1:
            raise ValueError(f"{op}: {what} must be positive, got {list(v)}")
        out[what] = v
    return last, out["strides"], out["dilations"], out.get("ksize")


# -- geometry (TensorFlow's GetWindowedOutputSizeVerbose) -------------------------------------------------
def pads(size, k, stride, dilation, padding, explicit=(0, 0)):
    """(output size, pad before, pad after) along one axis, as TensorFlow computes them."""
    ek = (k - 1) * dilation + 1
    if padding == "SAME":
        out = -(-size // stride)
        total = max((out - 1) * stride + ek - size, 0)
        return out, total // 2, total - total // 2
    if padding not in ("VALID", "EXPLICIT"):
        raise ValueError(f"padding must be SAME, VALID or EXPLICIT, got {padding!r}")
    before, after = explicit if padding == "EXPLICIT" else (0, 0)
    if before < 0 or after < 0:
        raise ValueError(f"explicit paddings must be non-negative, got {list(explicit)}")
    n = size + before + after - ek + stride
    out = n // stride if n >= 0 else -(-n // stride)  # C++'s division, as TensorFlow's
    if out < 0:
        raise ValueError(f"a window of {ek} on {size} values (padded by {before}, {after}) gives a negative "
                         "output size")
    return out, before, after


def geometry(h, w, kh, kw, strides, dilations, padding, explicit_paddings, last=True):
    """(out h, out w, (pad top, bottom), (pad left, right)) for NHWC strides/dilations; explicit
    paddings are 8 numbers in the data format's order."""
    ex = tuple(explicit_paddings)
    if padding == "EXPLICIT" and len(ex) != 8:
        raise ValueError(f"padding EXPLICIT needs 8 explicit_paddings, got {list(ex)}")
    if padding != "EXPLICIT" and ex:
        raise ValueError(f"explicit_paddings {list(ex)} are given, but padding is {padding}")
    ex = ex or (0,) * 8
    hw = (ex[2:4], ex[4:6]) if last else (ex[4:6], ex[6:8])
    oh, pt, pb = pads(h, kh, strides[1], dilations[1], padding, hw[0])
    ow, pl, pr = pads(w, kw, strides[2], dilations[2], padding, hw[1])
    return oh, ow, (pt, pb), (pl, pr)


def taps(kh, kw, sh, sw, dh, dw, oh, ow):
    """For each filter tap (i, j): the slices of the padded input it meets."""
    for i in range(kh):
        for j in range(kw):
            yield i, j, slice(i * dh, i * dh + (oh - 1) * sh + 1, sh), slice(j * dw, j * dw + (ow - 1) * sw + 1, sw)


# -- shape rules ------------------------------------------------------------------------------------------
def same_as(index, rank=None):
    """Output: input `index`'s dtype and shape (all inputs of one shape; `rank`: that rank only)."""
    def infer(attrs, inputs):
        shapes = [t.shape for t in inputs if rank is None or t is inputs[index]]
        if any(len(s) != len(shapes[0]) or any(a is not None and b is not None and a != b
                                                for a, b in zip(s, shapes[0])) for s in shapes):
            raise ValueError(f"inputs must have one shape, got {[list(s) for s in shapes]}")
        if rank is not None and len(inputs[index].shape) != rank:
            raise ValueError(f"input must be {rank}-D, got {list(inputs[index].shape)}")
        check_t(attrs, inputs[index])
        return [(inputs[index].dtype, inputs[index].shape)]
    return infer


def check_t(attrs, info, attr="T"):
    """The op's type attribute agrees with the tensor it types (a file that says otherwise is refused)."""
    want = attrs.get(attr)
    if want is not None and info is not None and info.dtype != want:
        raise ValueError(f"attribute {attr}={want} but the input is {info.dtype}")


def sizes_infer(size_input, like_input, n=4):
    """Output: input `like_input`'s dtype, shaped by the int32[n] input `size_input` (known when constant)."""
    def infer(attrs, inputs):
        info = inputs[size_input]
        if info.shape not in ((n,), (None,)) or info.dtype != "int32":
            raise ValueError(f"the sizes input must be int32[{n}], got {info.dtype}{list(info.shape)}")
        check_t(attrs, inputs[like_input])
        if info.data is not None:
            return [(inputs[like_input].dtype, tuple(int(d) for d in info.data))]
        return [(inputs[like_input].dtype, (None,) * n)]
    return infer


def no_outputs(attrs, inputs):
    return []


def int_sizes(sizes, what, n=4):
    dims = [int(d) for d in np.asarray(sizes).reshape(-1)]
    if len(dims) != n or min(dims) < 0:
        raise ValueError(f"{what} must be {n} non-negative sizes, got {dims}")
    return dims


# -- resource handles (litetrain's variable handles: the variable's name) -----------------------------------
def handle(h) -> str:
    return h if isinstance(h, str) else str(np.asarray(h).reshape(()))


def update(ctx, h, value):
    """Assign `value` to the variable of handle `h`, keeping its shape and dtype."""
    name = handle(h)
    old = ctx.variables.read(name)
    if old.shape != value.shape:
        raise ValueError(f"variable {name!r} is {list(old.shape)}; the update is {list(value.shape)}")
    ctx.variables.assign(name, value.astype(old.dtype, copy=False))


def as_dtype(value, dtype: str) -> np.ndarray:
    return np.asarray(value, numpy_dtype(dtype))
