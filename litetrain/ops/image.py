"""Image ops: resize_bilinear, resize_nearest_neighbor and depth_to_space (TensorFlow Lite semantics)."""
from __future__ import annotations

import numpy as np

from ..core.ir import FLOAT_DTYPES
from ..core.registry import OPS, Builtin, defop
from ..core.trace import builder_of
from ._util import sized, static_shape
from .api import batch_matmul, reduce_sum, reshape, transpose


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
    n, h, w, c = static_shape(inputs[0], "depth_to_space's input")
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


def _resize_allocates(times):
    """The output `times` over (the kernel's temporaries of its size) and the rows it gathers first."""
    def allocates(x, size, align_corners=False, half_pixel_centers=False):
        hw = [int(v) for v in np.asarray(size).reshape(-1)]
        if x.ndim != 4 or len(hw) != 2:  # the kernel says what is wrong
            return x.dtype, x.shape, 0
        n, _, w, c = x.shape
        rows = sized(x.dtype, [n, hw[0], w, c], "resize")[2]
        return sized(x.dtype, [n, hw[0], hw[1], c], "resize", times=times, extra=rows)
    return allocates


defop("resize_bilinear", infer=_resize_infer, kernel=_resize_kernel, vjp=_resize_vjp, allocates=_resize_allocates(4),
      attrs={"align_corners": False, "half_pixel_centers": False}, num_inputs=(2, 2),
      tflite=Builtin("RESIZE_BILINEAR", "ResizeBilinearOptions",
                     {"align_corners": "bool", "half_pixel_centers": "bool"}))


# -- RESIZE_NEAREST_NEIGHBOR ------------------------------------------------------------------------------------
def _nearest_infer(attrs, inputs):
    x, size = inputs
    if len(x.shape) != 4 or x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"resize_nearest_neighbor takes a 4-D float input, got {x.dtype}{list(x.shape)}")
    if size.dtype != "int32" or tuple(size.shape) not in ((2,), (None,)):
        raise ValueError(f"size must be int32[2] (height, width), got {size.dtype}{list(size.shape)}")
    hw = [int(v) for v in size.data] if size.data is not None else [None, None]
    if any(v is not None and v < 1 for v in hw):
        raise ValueError(f"size must be positive, got {hw}")
    return [(x.dtype, (x.shape[0], hw[0], hw[1], x.shape[3]))]


def _nearest_index(in_size, out_size, align_corners, half_pixel_centers):
    """The input index each output position copies, as TFLite's reference kernel computes it."""
    scale = np.float32((in_size - 1) / (out_size - 1) if align_corners and out_size > 1 else in_size / out_size)
    pos = np.arange(out_size, dtype=np.float32) + np.float32(0.5 if half_pixel_centers else 0.0)
    src = pos * scale
    idx = np.floor(src + np.float32(0.5)) if align_corners else np.floor(src)  # (round half away from 0; src >= 0)
    return np.clip(idx.astype(np.int64), 0, in_size - 1)


def _nearest_kernel(x, size, align_corners=False, half_pixel_centers=False):
    oh, ow = (int(v) for v in size)
    rows = _nearest_index(x.shape[1], oh, align_corners, half_pixel_centers)
    cols = _nearest_index(x.shape[2], ow, align_corners, half_pixel_centers)
    return np.ascontiguousarray(x[:, rows][:, :, cols])


def _nearest_vjp(inputs, outputs, grads, align_corners=False, half_pixel_centers=False):
    """Each output copies one input pixel, so the input gradient sums the gradients of its copies: for
    an integer upscaling (each pixel an s x t block) a reshape and a SUM, otherwise the same two
    BATCH_MATMULs with constant 0/1 matrices as resize_bilinear's gradient."""
    x = inputs[0]
    n, h, w, c = x.shape
    _, oh, ow, _ = outputs[0].shape
    if None in (h, w, oh, ow, c):
        raise NotImplementedError("the gradient of resize_nearest_neighbor needs static spatial sizes and channels")
    rows = _nearest_index(h, oh, align_corners, half_pixel_centers)
    cols = _nearest_index(w, ow, align_corners, half_pixel_centers)
    g = grads[0]
    if oh % h == 0 and ow % w == 0 and np.array_equal(rows, np.repeat(np.arange(h), oh // h)) \
            and np.array_equal(cols, np.repeat(np.arange(w), ow // w)):
        blocks = reshape(g, [-1, h, oh // h, w, ow // w, c])
        return [reduce_sum(blocks, [2, 4]), None]
    fb = builder_of(x)
    ry = np.zeros((oh, h), np.float64)
    ry[np.arange(oh), rows] = 1.0
    rx = np.zeros((ow, w), np.float64)
    rx[np.arange(ow), cols] = 1.0
    g = transpose(g, [0, 3, 1, 2])  # [n, c, oh, ow]
    g = batch_matmul(batch_matmul(g, fb.const(rx, x.dtype)), fb.const(ry, x.dtype), adj_x=True)  # [n, c, w, h]
    return [transpose(g, [0, 3, 2, 1]), None]


defop("resize_nearest_neighbor", infer=_nearest_infer, kernel=_nearest_kernel, vjp=_nearest_vjp,
      allocates=_resize_allocates(2),
      attrs={"align_corners": False, "half_pixel_centers": False}, num_inputs=(2, 2),
      tflite=Builtin("RESIZE_NEAREST_NEIGHBOR", "ResizeNearestNeighborOptions",
                     {"align_corners": "bool", "half_pixel_centers": "bool"}))
