"""Values and weights stored in other formats: QUANTIZE (float -> int8/uint8/int16, or integers
requantized), DEQUANTIZE (quantized integers, float16 weights), DENSIFY (sparse weights).

A quantized tensor stands for real = scale * (q - zero_point), per tensor or per channel; the
quantized variants of the float ops ("quantized_conv_2d", ...) are in ops/quantized.py and
ops/quantized_conv.py, and ops/quantization.py says how they carry their tensors' parameters.
"""
from __future__ import annotations

import numpy as np

from ..core.ir import FLOAT_DTYPES
from ..core.registry import NOT_DIFFERENTIABLE, Builtin, defop
from .quantization import (INT_RANGES, QUANT_DTYPES, check_entries, dequantized, multiply_by_quantized_multiplier,
                           per_axis, quantize_multiplier, round_half_away, scale_of, zero_of)

# -- QUANTIZE: float -> integer, or integer -> integer (requantize) ----------------------------------------------
def _quantize_infer(attrs, inputs):
    x, = inputs
    out = attrs.get("out_dtype")
    q = check_entries(attrs, 2, "quantize")
    if out not in QUANT_DTYPES + ("int32",):
        raise ValueError(f"out_dtype must be one of {', '.join(QUANT_DTYPES)}, got {out!r}")
    if q[1] is None:
        raise ValueError("the output has no quantization parameters")
    if x.dtype not in FLOAT_DTYPES and (x.dtype not in QUANT_DTYPES + ("int32",) or q[0] is None):
        raise ValueError(f"quantizes float input or requantizes quantized integers, got {x.dtype}"
                         + (" without quantization parameters" if x.dtype in QUANT_DTYPES else ""))
    return [(out, x.shape)]


def _quantize_kernel(x, quantization=None, out_dtype=None):
    q_in, q_out = quantization
    lo, hi = INT_RANGES[out_dtype]
    if x.dtype.kind == "f":  # AffineQuantize: round(x / scale) in float32, per tensor or per channel
        scales, zeros = per_axis(q_out, x, "the output")
        q = round_half_away(x.astype(np.float32) / scales).astype(np.int64) + zeros
    else:  # Requantize: the scale ratio as a fixed-point multiplier
        real = np.float64(scale_of(q_in, "the input")) / np.float64(scale_of(q_out, "the output"))
        multiplier, shift = quantize_multiplier(real)
        q = multiply_by_quantized_multiplier(x.astype(np.int64) - zero_of(q_in, "the input"), multiplier, shift)
        q = q + zero_of(q_out, "the output")
    return np.clip(q, lo, hi).astype(out_dtype)


defop("quantize", infer=_quantize_infer, kernel=_quantize_kernel, vjp=NOT_DIFFERENTIABLE, num_inputs=(1, 1),
      attrs={"quantization": None, "out_dtype": None}, tflite=Builtin("QUANTIZE"))


# -- DEQUANTIZE (quantized integers; float16 weights) and DENSIFY (sparse weights) ----------------------------------
def _dequantize_infer(attrs, inputs):
    x, = inputs
    q = attrs.get("quantization")
    if x.dtype == "float16":
        return [("float32", x.shape)]
    if x.dtype not in QUANT_DTYPES + ("int32",) or q is None or q[0] is None:
        raise ValueError(f"dequantize of {x.dtype} needs quantization parameters (float16, or int8/uint8/int16 "
                         "with a scale and zero point)")
    return [("float32", x.shape)]


def _dequantize_kernel(x, quantization=None):
    if x.dtype == np.float16:
        return x.astype(np.float32)
    return dequantized(x, quantization[0])


# Not differentiable: what it dequantizes is a file's constant weights or a quantized model's values
# (make_trainable turns a trained weight into a float32 variable and drops the DEQUANTIZE).
defop("dequantize", infer=_dequantize_infer, kernel=_dequantize_kernel, vjp=NOT_DIFFERENTIABLE,
      attrs={"quantization": None}, num_inputs=(1, 1), tflite=Builtin("DEQUANTIZE"))


def _densify_infer(attrs, inputs):
    if inputs[0].dtype not in FLOAT_DTYPES + ("int8", "int32"):
        raise ValueError(f"densify expands numeric weights, got {inputs[0].dtype}")
    return [(inputs[0].dtype, inputs[0].shape)]


defop("densify", infer=_densify_infer, kernel=lambda x: np.array(x),
      vjp=NOT_DIFFERENTIABLE, num_inputs=(1, 1), tflite=Builtin("DENSIFY"))

from . import quantized, quantized_conv  # noqa: E402,F401  (the quantized variants of the float ops)
