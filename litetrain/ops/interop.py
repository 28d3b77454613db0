"""Builtins that real TensorFlow Lite files use beyond litetrain's own op set (interop family).

Found in TensorFlow-converted training files (PACK, TILE, STRIDED_SLICE, SELECT) and in the float
models MediaPipe ships (PRELU, RESIZE_BILINEAR, DEPTH_TO_SPACE, DEQUANTIZE of float16 weights,
DENSIFY of sparse weights). Semantics follow TensorFlow Lite's reference kernels; gradient rules
emit builtins, or refuse (NotImplementedError -> a TraceError naming the op) where none is written.
"""
from __future__ import annotations

import numpy as np

from ..ir import FLOAT_DTYPES
from ..registry import NOT_DIFFERENTIABLE, OPS, Builtin, defop
from ..trace import builder_of
from ._util import broadcast_shapes, const_value, unbroadcast


def _emit(op, inputs, attrs=None):
    fb = builder_of(*inputs)
    return fb.emit(op, [fb.to_tensor(t) for t in inputs], attrs or {})


def _static(t, what):
    if None in t.shape:
        raise NotImplementedError(f"the gradient needs the static shape of {what}, got {t.shape}")
    return tuple(t.shape)


# -- PACK -------------------------------------------------------------------------------------------------
def _pack_infer(attrs, inputs):
    first = inputs[0]
    if any(t.dtype != first.dtype or len(t.shape) != len(first.shape) for t in inputs):
        raise ValueError("pack inputs must share dtype and rank")
    shape = tuple(next((d for d in dims if d is not None), None) for dims in zip(*[t.shape for t in inputs]))
    for t in inputs:
        if any(a is not None and b is not None and a != b for a, b in zip(t.shape, shape)):
            raise ValueError(f"pack inputs must have one shape, got {[list(t.shape) for t in inputs]}")
    rank = len(shape) + 1
    axis = attrs["axis"]
    if not -rank <= axis < rank:
        raise ValueError(f"axis {axis} is out of range for rank {rank}")
    if attrs["values_count"] not in (0, len(inputs)):
        raise ValueError(f"values_count {attrs['values_count']} but {len(inputs)} inputs")
    axis %= rank
    return [(first.dtype, shape[:axis] + (len(inputs),) + shape[axis:])]


def _pack_vjp(inputs, outputs, grads, axis=0, values_count=0):
    from . import reshape, slice_
    g, = grads
    shape = _static(outputs[0], "pack's output")
    axis %= len(shape)
    out = []
    for i, x in enumerate(inputs):
        begin = [0] * len(shape)
        begin[axis] = i
        size = list(shape)
        size[axis] = 1
        out.append(reshape(slice_(g, begin, size), list(_static(x, "a pack input"))))
    return out


defop("pack", infer=_pack_infer, kernel=lambda *xs, axis=0, values_count=0: np.stack(xs, axis=axis),
      vjp=_pack_vjp, attrs={"axis": 0, "values_count": 0}, num_inputs=(1, None),
      tflite=Builtin("PACK", "PackOptions", {"axis": "int", "values_count": "int"}))


# -- TILE -------------------------------------------------------------------------------------------------
def _tile_infer(attrs, inputs):
    x, m = inputs
    if m.dtype not in ("int32", "int64") or len(m.shape) != 1 or m.shape[0] not in (None, len(x.shape)):
        raise ValueError(f"multiples must be an int vector of length {len(x.shape)}")
    if m.data is None:
        return [(x.dtype, (None,) * len(x.shape))]
    reps = [int(v) for v in m.data]
    if any(r < 0 for r in reps):
        raise ValueError(f"negative multiples {reps}")
    return [(x.dtype, tuple(None if d is None else d * r for d, r in zip(x.shape, reps)))]


def _tile_vjp(inputs, outputs, grads):
    from . import reduce_sum, reshape
    x, m = inputs
    shape = _static(x, "tile's input")
    reps = [int(v) for v in const_value(m.info, "multiples")]
    split = [d for r, s in zip(reps, shape) for d in (r, s)]
    g = reshape(grads[0], split)
    return [reshape(reduce_sum(g, list(range(0, 2 * len(shape), 2))), list(shape)), None]


defop("tile", infer=_tile_infer, kernel=lambda x, m: np.tile(x, [int(v) for v in m]), vjp=_tile_vjp,
      num_inputs=(2, 2), tflite=Builtin("TILE", "TileOptions"))


# -- SELECT (TFLite's older select: a rank-1 condition picks rows) -------------------------------------
def _select_infer(attrs, inputs):
    c, a, b = inputs
    if c.dtype != "bool" or a.dtype != b.dtype:
        raise ValueError("select takes a bool condition and two inputs of one dtype")
    shape = broadcast_shapes(a.shape, b.shape)
    if len(c.shape) != 1 or len(shape) <= 1:
        broadcast_shapes(c.shape, shape)
    return [(a.dtype, shape)]


def _select_kernel(c, a, b):
    if c.ndim == 1 and a.ndim > 1:  # row selection
        c = c.reshape((-1,) + (1,) * (a.ndim - 1))
    return np.where(c, a, b)


def _select_vjp(inputs, outputs, grads):
    from . import reshape, where, zeros_like
    c, a, b = inputs
    g, = grads
    if len(c.shape) == 1 and len(a.shape) > 1:
        c = reshape(c, [-1] + [1] * (len(a.shape) - 1))
    zero = zeros_like(g)
    return [None, unbroadcast(where(c, g, zero), a), unbroadcast(where(c, zero, g), b)]


defop("select", infer=_select_infer, kernel=_select_kernel, vjp=_select_vjp, num_inputs=(3, 3),
      tflite=Builtin("SELECT", "SelectOptions"))


# -- STRIDED_SLICE ----------------------------------------------------------------------------------------
SS_ATTRS = {"begin_mask": 0, "end_mask": 0, "ellipsis_mask": 0, "new_axis_mask": 0, "shrink_axis_mask": 0,
            "offset": False}


def _ss_index(shape, begin, end, strides, begin_mask=0, end_mask=0, ellipsis_mask=0, new_axis_mask=0,
              shrink_axis_mask=0, offset=False):
    """The NumPy index (a tuple of slices / ints) of a strided slice; dims may be None."""
    if ellipsis_mask or new_axis_mask:
        raise ValueError("strided_slice with ellipsis_mask or new_axis_mask is not supported")
    n = len(begin)
    if not (len(end) == len(strides) == n) or n > len(shape):
        raise ValueError(f"begin/end/strides lengths {len(begin)}/{len(end)}/{len(strides)} do not fit rank {len(shape)}")
    index = []
    for i in range(n):
        b, e, s = int(begin[i]), int(end[i]), int(strides[i])
        if s == 0:
            raise ValueError("strided_slice stride 0")
        if offset:
            e = b + e
        if shrink_axis_mask >> i & 1:
            index.append(b)
            continue
        index.append(slice(None if begin_mask >> i & 1 else b, None if end_mask >> i & 1 else e, s))
    return tuple(index)


def _ss_infer(attrs, inputs):
    x, begin, end, strides = inputs
    b, e, s = (const_value(t, name) for t, name in ((begin, "begin"), (end, "end"), (strides, "strides")))
    index = _ss_index(x.shape, b, e, s, **attrs)
    out = []
    for i, d in enumerate(x.shape):
        if i >= len(index):
            out.append(d)
        elif isinstance(index[i], int):
            if d is not None and not -d <= index[i] < d:
                raise ValueError(f"shrink index {index[i]} is out of range for dim {d}")
        else:
            out.append(None if d is None else len(range(*index[i].indices(d))))
    return [(x.dtype, tuple(out))]


def _ss_kernel(x, begin, end, strides, **attrs):
    return np.array(x[_ss_index(x.shape, begin, end, strides, **attrs)])


def _ss_vjp(inputs, outputs, grads, **attrs):
    """Scatter the gradient back to the sliced positions (their flat indices are constants)."""
    from . import reshape, scatter_nd
    x, begin, end, strides = inputs
    shape = _static(x, "strided_slice's input")
    flat = np.arange(int(np.prod(shape)), dtype=np.int32).reshape(shape)
    b, e, s = (const_value(t.info, n) for t, n in ((begin, "begin"), (end, "end"), (strides, "strides")))
    picked = np.asarray(flat[_ss_index(shape, b, e, s, **attrs)]).reshape(-1, 1)
    fb = builder_of(grads[0])
    g = scatter_nd(fb.const(picked), reshape(grads[0], [-1]), [int(np.prod(shape))])
    return [reshape(g, list(shape)), None, None, None]


defop("strided_slice", infer=_ss_infer, kernel=_ss_kernel, vjp=_ss_vjp, attrs=SS_ATTRS, num_inputs=(4, 4),
      tflite=Builtin("STRIDED_SLICE", "StridedSliceOptions",
                     {"begin_mask": "int", "end_mask": "int", "ellipsis_mask": "int", "new_axis_mask": "int",
                      "shrink_axis_mask": "int", "offset": "bool"}))


# -- PRELU ------------------------------------------------------------------------------------------------
def _prelu_infer(attrs, inputs):
    x, alpha = inputs
    if x.dtype not in FLOAT_DTYPES or alpha.dtype != x.dtype:
        raise ValueError("prelu takes float input and alpha of one dtype")
    return [(x.dtype, broadcast_shapes(x.shape, alpha.shape))]


def _prelu_vjp(inputs, outputs, grads):
    from . import greater, minimum, mul, where
    x, alpha = inputs
    g, = grads
    positive = greater(x, builder_of(x).const(0.0, x.dtype))
    return [unbroadcast(where(positive, g, mul(g, alpha)), x),
            unbroadcast(mul(g, minimum(x, builder_of(x).const(0.0, x.dtype))), alpha)]


defop("prelu", infer=_prelu_infer, kernel=lambda x, a: np.where(x >= 0, x, x * a).astype(x.dtype),
      vjp=_prelu_vjp, num_inputs=(2, 2), tflite=Builtin("PRELU"))


# -- DEQUANTIZE (float16 weights) and DENSIFY (sparse weights, expanded when the file is read) ----------------
def _dequantize_infer(attrs, inputs):
    x, = inputs
    if x.dtype != "float16":
        raise ValueError(f"dequantize of {x.dtype} needs quantization parameters; only float16 is supported")
    return [("float32", x.shape)]


# Not differentiable: what it dequantizes is a file's constant weights (make_trainable turns such a
# weight into a float32 variable and drops the DEQUANTIZE).
defop("dequantize", infer=_dequantize_infer, kernel=lambda x: x.astype(np.float32), vjp=NOT_DIFFERENTIABLE,
      num_inputs=(1, 1), tflite=Builtin("DEQUANTIZE"))
def _densify_infer(attrs, inputs):
    if inputs[0].dtype not in FLOAT_DTYPES + ("int8", "int32"):
        raise ValueError(f"densify expands numeric weights, got {inputs[0].dtype}")
    return [(inputs[0].dtype, inputs[0].shape)]


defop("densify", infer=_densify_infer, kernel=lambda x: np.array(x),
      vjp=NOT_DIFFERENTIABLE, num_inputs=(1, 1), tflite=Builtin("DENSIFY"))


# -- DEPTH_TO_SPACE (registered here unless the conv family already has it) ------------------------------------
def _d2s_infer(attrs, inputs):
    x, = inputs
    b = attrs["block_size"]
    if len(x.shape) != 4 or b < 1:
        raise ValueError(f"depth_to_space takes a 4-D input and block_size >= 1, got {list(x.shape)}, {b}")
    n, h, w, c = x.shape
    if c is not None and c % (b * b):
        raise ValueError(f"channels {c} are not a multiple of block_size^2 = {b * b}")
    return [(x.dtype, (n, None if h is None else h * b, None if w is None else w * b, None if c is None else c // (b * b)))]


def _d2s_kernel(x, block_size=1):
    n, h, w, c = x.shape
    b = block_size
    return x.reshape(n, h, w, b, b, c // (b * b)).transpose(0, 1, 3, 2, 4, 5).reshape(n, h * b, w * b, c // (b * b))


def _d2s_vjp(inputs, outputs, grads, block_size=1):
    from . import reshape, transpose
    n, h, w, c = _static(inputs[0], "depth_to_space's input")
    b = block_size
    g = reshape(grads[0], [n, h, b, w, b, c // (b * b)])
    return [reshape(transpose(g, [0, 1, 3, 2, 4, 5]), [n, h, w, c])]


if "depth_to_space" not in OPS:
    defop("depth_to_space", infer=_d2s_infer, kernel=_d2s_kernel, vjp=_d2s_vjp, attrs={"block_size": 1},
          num_inputs=(1, 1), tflite=Builtin("DEPTH_TO_SPACE", "DepthToSpaceOptions", {"block_size": "int"}))


# -- RESIZE_BILINEAR --------------------------------------------------------------------------------------------
def _resize_infer(attrs, inputs):
    x, size = inputs
    if len(x.shape) != 4 or x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"resize_bilinear takes a 4-D float input, got {x.dtype}{list(x.shape)}")
    if attrs["align_corners"] and attrs["half_pixel_centers"]:
        raise ValueError("align_corners and half_pixel_centers cannot both be set")
    hw = [int(v) for v in size.data] if size.data is not None else [None, None]
    return [(x.dtype, (x.shape[0], hw[0], hw[1], x.shape[3]))]


def _resize_axis(in_size, out_size, align_corners, half_pixel_centers):
    """(lower index, upper index, fraction) per output position, as TFLite's reference kernel."""
    scale = (in_size - 1) / (out_size - 1) if align_corners and out_size > 1 else in_size / out_size
    pos = np.arange(out_size, dtype=np.float32)
    src = ((pos + 0.5) * np.float32(scale) - 0.5) if half_pixel_centers else pos * np.float32(scale)
    src = src.astype(np.float32)
    lo = np.floor(src).astype(np.int64)
    frac = src - lo
    lower = np.maximum(lo, 0)
    upper = np.minimum(np.ceil(src).astype(np.int64), in_size - 1)
    return lower, upper, frac.astype(np.float32)


def _resize_kernel(x, size, align_corners=False, half_pixel_centers=False):
    oh, ow = (int(v) for v in size)
    yl, yu, fy = _resize_axis(x.shape[1], oh, align_corners, half_pixel_centers)
    xl, xu, fx = _resize_axis(x.shape[2], ow, align_corners, half_pixel_centers)
    fy, fx = fy[None, :, None, None], fx[None, None, :, None]
    top = x[:, yl][:, :, xl] * (1 - fx) + x[:, yl][:, :, xu] * fx
    bottom = x[:, yu][:, :, xl] * (1 - fx) + x[:, yu][:, :, xu] * fx
    return (top * (1 - fy) + bottom * fy).astype(x.dtype)


def _interpolation_matrix(in_size, out_size, align_corners, half_pixel_centers):
    """[out, in]: the weights with which each output row mixes the input rows."""
    lower, upper, frac = _resize_axis(in_size, out_size, align_corners, half_pixel_centers)
    m = np.zeros((out_size, in_size), np.float64)
    np.add.at(m, (np.arange(out_size), lower), 1 - frac.astype(np.float64))
    np.add.at(m, (np.arange(out_size), upper), frac.astype(np.float64))
    return m


def _resize_vjp(inputs, outputs, grads, align_corners=False, half_pixel_centers=False):
    """Bilinear resizing is linear and separable: y = Ry x Rx^T per image and channel, so the input
    gradient is Ry^T g Rx, two BATCH_MATMULs with constant matrices."""
    from . import batch_matmul, transpose
    x = inputs[0]
    n, h, w, c = x.shape
    _, oh, ow, _ = outputs[0].shape
    if None in (h, w, oh, ow):
        raise NotImplementedError("the gradient of resize_bilinear needs static spatial sizes")
    fb = builder_of(x)
    ry = fb.const(_interpolation_matrix(h, oh, align_corners, half_pixel_centers), x.dtype)  # [oh, h]
    rx = fb.const(_interpolation_matrix(w, ow, align_corners, half_pixel_centers), x.dtype)  # [ow, w]
    g = transpose(grads[0], [0, 3, 1, 2])  # [n, c, oh, ow]
    g = batch_matmul(batch_matmul(g, rx), ry, adj_x=True)  # (g Rx)^T Ry: [n, c, w, h]
    return [transpose(g, [0, 3, 2, 1]), None]


defop("resize_bilinear", infer=_resize_infer, kernel=_resize_kernel, vjp=_resize_vjp,
      attrs={"align_corners": False, "half_pixel_centers": False}, num_inputs=(2, 2),
      tflite=Builtin("RESIZE_BILINEAR", "ResizeBilinearOptions",
                     {"align_corners": "bool", "half_pixel_centers": "bool"}))


# -- frontend functions ---------------------------------------------------------------------------------------
def tile(x, multiples):
    fb = builder_of(x)
    return fb.emit("tile", [x, fb.const(np.asarray(multiples, np.int32))])


def strided_slice(x, begin, end, strides=None, **masks):
    fb = builder_of(x)
    strides = [1] * len(begin) if strides is None else strides
    return fb.emit("strided_slice", [x] + [fb.const(np.asarray(v, np.int32)) for v in (begin, end, strides)], masks)


# -- MediaPipe's Convolution2DTransposeBias (a custom op in MediaPipe's segmentation models) ----------------------
# TRANSPOSE_CONV with a bias and its output size implied by the padding, as MediaPipe's
# transpose_conv_bias.cc defines it; options are the raw TfLiteTransposeConvParams struct
# (int32 padding: 1 SAME, 2 VALID; int32 stride_width; int32 stride_height).
_MP_PADDING = {1: "SAME", 2: "VALID"}


def _mp_decode(raw: bytes) -> dict:
    if len(raw) < 12:
        raise ValueError(f"options hold {len(raw)} bytes; TfLiteTransposeConvParams needs 12")
    padding, stride_w, stride_h = np.frombuffer(raw[:12], "<i4").tolist()
    if padding not in _MP_PADDING or stride_w < 1 or stride_h < 1:
        raise ValueError(f"padding {padding} / strides {stride_w}x{stride_h} are not valid")
    return {"padding": _MP_PADDING[padding], "stride_w": stride_w, "stride_h": stride_h}


def _mp_encode(attrs: dict) -> bytes:
    code = {v: k for k, v in _MP_PADDING.items()}[attrs.get("padding", "SAME")]
    return np.asarray([code, attrs.get("stride_w", 1), attrs.get("stride_h", 1)], "<i4").tobytes()


def _mp_out(size, k, stride, padding):
    return None if size is None else size * stride if padding == "SAME" else (size - 1) * stride + k


def _mp_out_shape(x_shape, w_shape, attrs):
    return (x_shape[0], _mp_out(x_shape[1], w_shape[1], attrs["stride_h"], attrs["padding"]),
            _mp_out(x_shape[2], w_shape[2], attrs["stride_w"], attrs["padding"]), w_shape[0])


def _mp_infer(attrs, inputs):
    x, w, b = inputs
    if len(x.shape) != 4 or len(w.shape) != 4 or w.shape[1] is None or w.shape[2] is None:
        raise ValueError("Convolution2DTransposeBias takes a 4-D input and a 4-D filter [out, kh, kw, in]")
    if x.shape[3] is not None and w.shape[3] is not None and x.shape[3] != w.shape[3]:
        raise ValueError(f"the input has {x.shape[3]} channels, the filter takes {w.shape[3]}")
    return [(x.dtype, _mp_out_shape(x.shape, w.shape, attrs))]


def _mp_kernel(x, w, b, padding="SAME", stride_w=1, stride_h=1):
    shape = np.asarray(_mp_out_shape(x.shape, w.shape, {"padding": padding, "stride_w": stride_w,
                                                          "stride_h": stride_h}), np.int32)
    return OPS["transpose_conv"].kernel(shape, w, x, b, padding=padding, stride_w=stride_w, stride_h=stride_h)


def _mp_vjp(inputs, outputs, grads, **attrs):
    x, w, b = inputs
    shape = _static(outputs[0], "Convolution2DTransposeBias's output")
    fb = builder_of(x)
    _, dw, dx, db = OPS["transpose_conv"].vjp([fb.const(np.asarray(shape, np.int32)), w, x, b], outputs, grads,
                                               fused_activation_function="NONE", **attrs)
    return [dx, dw, db]


def _mp_custom():
    from ..registry import Custom
    return Custom("Convolution2DTransposeBias", decode=_mp_decode, encode=_mp_encode)


defop("mediapipe.convolution_2d_transpose_bias", infer=_mp_infer, kernel=_mp_kernel, vjp=_mp_vjp,
      attrs={"padding": "SAME", "stride_w": 1, "stride_h": 1}, num_inputs=(3, 3), tflite=_mp_custom())
