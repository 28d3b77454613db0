"""Op table rows for the op added with the layers of litetrain/frontend/nn: nearest-neighbour resizing
(UpSampling2D, PyTorch's Upsample). References are PyTorch's ops, or NumPy written from
TensorFlow Lite's definition where PyTorch has no mode for it (align_corners)."""
from __future__ import annotations

import numpy as np
import torch.nn.functional as F

from op_cases import Bad, Case, NumPy, Torch, const, x


def _torch_nearest(t, size, align_corners=False, half_pixel_centers=False):
    mode = "nearest-exact" if half_pixel_centers else "nearest"
    y = F.interpolate(t.permute(0, 3, 1, 2), size=[int(v) for v in size], mode=mode)
    return y.permute(0, 2, 3, 1)


def _align_corners_nearest(a, size, align_corners=True, half_pixel_centers=False):
    """Each output pixel copies the input pixel nearest to out * (in - 1) / (out - 1), halves rounded up."""
    out = a
    for axis, n in ((1, int(size[0])), (2, int(size[1]))):
        m = out.shape[axis]
        src = [int(np.floor(i * (m - 1) / (n - 1) + 0.5)) if n > 1 else 0 for i in range(n)]
        out = np.take(out, src, axis=axis)
    return out


NEAREST = Torch(_torch_nearest)

CASES = [
    Case("resize_nearest_neighbor", "upsample-2x", (x(2, 3, 4, 3, traced=(None, 3, 4, 3)), const([6, 8])), NEAREST),
    Case("resize_nearest_neighbor", "upsample-3x2", (x(1, 2, 3, 2), const([6, 6])), NEAREST),
    Case("resize_nearest_neighbor", "fractional", (x(2, 4, 5, 2), const([6, 7])), NEAREST),
    Case("resize_nearest_neighbor", "downsample", (x(1, 6, 5, 2), const([4, 2])), NEAREST),
    Case("resize_nearest_neighbor", "half-pixel", (x(1, 4, 5, 2), const([7, 9])), NEAREST,
         {"half_pixel_centers": True}),
    Case("resize_nearest_neighbor", "align-corners", (x(1, 3, 4, 2), const([5, 7])), NumPy(_align_corners_nearest),
         {"align_corners": True}),
]

BAD = [
    Bad("resize_nearest_neighbor", "rank-3", (x(3, 4, 2), const([5, 7])), "4-D"),
    Bad("resize_nearest_neighbor", "size-length", (x(1, 3, 4, 2), const([5, 7, 1])), "int32\\[2\\]"),
    Bad("resize_nearest_neighbor", "zero-size", (x(1, 3, 4, 2), const([0, 7])), "positive"),
]
