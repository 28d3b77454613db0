"""What the PyTorch and ONNX importers build alike: a convolution of any grouping in TFLite's ops."""
from __future__ import annotations

from .. import ops


def conv_op(x, kernel, b, stride, tfl, dilation, groups, depthwise, cin, cout):
    """An NHWC convolution of `x` with an OHWI `kernel` (a depthwise one: 1HWC), `groups` groups of
    `cin // groups` input channels each: DEPTHWISE_CONV_2D, CONV_2D, or one CONV_2D per group
    concatenated (TFLite's CONV_2D has no groups)."""
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
