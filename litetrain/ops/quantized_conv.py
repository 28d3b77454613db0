"""Quantized CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED: TensorFlow Lite's integer kernels.

Each output is sum(w * (x - input_zero)) + bias in an integer accumulator, scaled to the output by
the per-channel (or per-tensor) fixed-point multiplier of input_scale * weight_scale / output_scale,
offset by the output's zero point and clamped to the fused activation's range. Padding adds
nothing (the input's zero point stands for 0). The sums are computed by the float convolutions'
own kernels in float32 when every partial sum is an integer below 2^24 (bounded from the largest
input and the weights' absolute sums), else in float64 (below 2^53): exact either way. int16
activations (16x8 quantization) take int64 accumulators; CONV_2D and DEPTHWISE_CONV_2D scale them
with the 16-bit multiplier and one rounding, FULLY_CONNECTED with the usual two roundings.
"""
from __future__ import annotations

import numpy as np

from ..core.registry import OPS
from . import conv, matmul  # noqa: F401  (the float ops whose attributes and shape rules these share)
from .quantization import (QuantizationError, activation_range, define_quantized, output_multipliers, requantize,
                           scale_of, zero_of)


def _weights_and_multipliers(w, quantization, channel_axis, what, float32_product=False):
    q_in, q_w, _, q_out = quantization
    if q_w is None:
        raise QuantizationError(f"the {what} has no quantization parameters")
    scales = tuple(q_w[0])
    channels = w.shape[channel_axis]
    if len(scales) not in (1, channels):
        raise QuantizationError(f"the {what} has {len(scales)} scales for {channels} output channels")
    zeros = np.asarray(q_w[1], np.int64)
    wf = w.astype(np.float64)
    if np.any(zeros):  # per-tensor asymmetric weights (uint8 models)
        wf = wf - (zeros.reshape([-1 if a == channel_axis else 1 for a in range(w.ndim)]) if zeros.size > 1
                   else zeros[0])
    multiplier, shift = output_multipliers(float(scale_of(q_in, "the input")), scales,
                                           float(scale_of(q_out, "the output")), float32_product)
    return wf, multiplier, shift


def _finish(acc, b, quantization, activation, dtype):
    """Bias, scale to the output, offset, clamp: the last steps every kernel here shares."""
    acc = np.rint(acc).astype(np.int64)  # exact integers held as floats
    if b is not None:
        acc += b.astype(np.int64)
    q_out = quantization[3] if len(quantization) == 4 else quantization[-1]
    lo, hi = activation_range(activation, q_out, str(dtype))
    return acc, zero_of(q_out, "the output"), lo, hi


def _operands(x, wf, quantization, channel_axis):
    """The input minus its zero point and the weights, in float32 when every partial sum of the
    accumulation is an integer below 2^24 (then float32 sums are exact in any order), else float64."""
    xi = x.astype(np.int64) - zero_of(quantization[0], "the input")
    largest = int(np.abs(xi).max()) if xi.size else 0
    per_channel = np.abs(wf).sum(axis=tuple(a for a in range(wf.ndim) if a != channel_axis))
    exact32 = largest * float(per_channel.max(initial=0.0)) < float(1 << 24)
    dtype = np.float32 if exact32 else np.float64
    return xi.astype(dtype), wf.astype(dtype)


# -- CONV_2D ----------------------------------------------------------------------------------------------
def _conv_kernel(x, w, b=None, padding="SAME", stride_w=1, stride_h=1, dilation_w_factor=1, dilation_h_factor=1,
                 fused_activation_function="NONE", quantization=None):
    wf, multiplier, shift = _weights_and_multipliers(w, quantization, 0, "filter")
    xf, wf = _operands(x, wf, quantization, 0)
    acc = OPS["conv_2d"].kernel(xf, wf, None, padding=padding, stride_w=stride_w,
                                stride_h=stride_h, dilation_w_factor=dilation_w_factor,
                                dilation_h_factor=dilation_h_factor)
    acc, zero, lo, hi = _finish(acc, b, quantization, fused_activation_function, x.dtype)
    return requantize(acc, multiplier, shift, zero, lo, hi, wide=x.dtype == np.int16).astype(x.dtype)


def _check_weights(attrs, inputs):
    w = inputs[1]
    if w.dtype not in ("int8", "uint8"):
        raise ValueError(f"the weights must be int8 (or uint8), got {w.dtype}")
    if len(inputs) > 2 and inputs[2] is not None and inputs[2].dtype not in ("int32", "int64"):
        raise ValueError(f"the bias must be int32 (or int64 with int16 activations), got {inputs[2].dtype}")


define_quantized("conv_2d", _conv_kernel, data_inputs=(0, 1, 2), check=_check_weights)


# -- DEPTHWISE_CONV_2D -------------------------------------------------------------------------------------
def _depthwise_kernel(x, w, b=None, padding="SAME", stride_w=1, stride_h=1, depth_multiplier=1,
                      dilation_w_factor=1, dilation_h_factor=1, fused_activation_function="NONE",
                      quantization=None):
    wf, multiplier, shift = _weights_and_multipliers(w, quantization, 3, "filter")
    xf, wf = _operands(x, wf, quantization, 3)
    acc = OPS["depthwise_conv_2d"].kernel(xf, wf, None, padding=padding, stride_w=stride_w,
                                          stride_h=stride_h, depth_multiplier=depth_multiplier,
                                          dilation_w_factor=dilation_w_factor, dilation_h_factor=dilation_h_factor)
    acc, zero, lo, hi = _finish(acc, b, quantization, fused_activation_function, x.dtype)
    return requantize(acc, multiplier, shift, zero, lo, hi, wide=x.dtype == np.int16).astype(x.dtype)


define_quantized("depthwise_conv_2d", _depthwise_kernel, data_inputs=(0, 1, 2), check=_check_weights)


# -- FULLY_CONNECTED ----------------------------------------------------------------------------------------
def _fc_kernel(x, w, b=None, fused_activation_function="NONE", keep_num_dims=False, weights_format="DEFAULT",
               asymmetric_quantize_inputs=False, quantization=None):
    if len(quantization) == 3:  # no bias input
        quantization = (quantization[0], quantization[1], None, quantization[2])
    per_tensor = quantization[1] is not None and len(quantization[1][0]) == 1
    wf, multiplier, shift = _weights_and_multipliers(w, quantization, 0, "weights", float32_product=per_tensor)
    depth = w.shape[1]
    xf, wf = _operands(x, wf, quantization, 0)
    acc = xf.reshape(-1, depth) @ wf.T
    acc, zero, lo, hi = _finish(acc, b, quantization, fused_activation_function, x.dtype)
    # FULLY_CONNECTED's int16 kernel scales its int64 sums with the 32-bit multiplier and double rounding
    y = requantize(acc, multiplier, shift, zero, lo, hi).astype(x.dtype)
    return y.reshape(*x.shape[:-1], w.shape[0]) if keep_num_dims else y


def _check_fc(attrs, inputs):
    _check_weights(attrs, inputs)
    if attrs.get("weights_format", "DEFAULT") != "DEFAULT":
        raise ValueError(f"weights_format {attrs['weights_format']} is not supported for quantized weights")


define_quantized("fully_connected", _fc_kernel, data_inputs=(0, 1, 2), check=_check_fc)

