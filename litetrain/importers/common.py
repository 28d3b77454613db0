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


def conv1d_op(image, kernel, b, stride, tfl, dilation, groups, cin, cout):
    """A 1-D convolution on a sequence seen as a 1-pixel-high NHWC image: `kernel` is [O, C/g, k]
    (PyTorch's and ONNX's layout), made the 1xk filter conv_op takes."""
    k, cin_g = kernel.shape[2], cin // groups
    depthwise = groups > 1 and groups == cin and cin_g == 1
    if depthwise:  # [1, 1, k, C * M]
        kernel = ops.reshape(ops.transpose(kernel, [1, 2, 0]), [1, 1, k, cout])
    else:  # [O, 1, k, C/g]
        kernel = ops.reshape(ops.transpose(kernel, [0, 2, 1]), [cout, 1, k, cin_g])
    return conv_op(image, kernel, b, (1, stride), tfl, (1, dilation), groups, depthwise, cin, cout)
