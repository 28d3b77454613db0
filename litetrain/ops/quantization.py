"""Quantized ops: how they carry their tensors' parameters, how each is defined from its float op,
and the integer arithmetic of TensorFlow Lite's quantized kernels, vectorised in NumPy.

A file's quantized tensor stands for real numbers, real = scale * (q - zero_point), per tensor or per
channel (core/ir.py `Quantization`). An op whose tensors are quantized runs as the float op's
quantized variant ("quantized_conv_2d", ...: ops/quantized.py, ops/quantized_conv.py), which the
reader picks when a node's tensors carry quantization parameters: the same builtin operator in the
file, plus a `quantization` attribute that holds its tensors' parameters (inputs, then outputs), as
the kernels need them. The writer stores that attribute on the tensors, never in the options table.

TensorFlow Lite's reference kernels define what a quantized model computes: int32 accumulators,
real multipliers turned into a 31-bit fixed-point multiplier and a shift (`quantize_multiplier`),
and the two roundings of MultiplyByQuantizedMultiplier (a doubling high multiply that rounds half
away from zero, then a rounding right shift). Everything here works on int64 arrays holding int32
values, so no intermediate wraps; each function says which of TensorFlow Lite's it stands for.
The fixed-point exp and reciprocal at the end are gemmlowp's, which the reference softmax uses.

The attribute holds one entry per input and output (inputs first): None for a tensor without
quantization, else (scales, zero points, axis) as plain tuples.
"""
from __future__ import annotations

import functools

import numpy as np

from ..core.ir import FLOAT_DTYPES, TensorInfo
from ..core.registry import NOT_DIFFERENTIABLE, OPS, Builtin, defop

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
INT_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767), "int32": (INT32_MIN, INT32_MAX)}


class QuantizationError(ValueError):
    """A quantized op's tensors do not have the parameters its kernel needs."""


# -- the parameters of a quantized tensor ---------------------------------------------------------------
def scale_of(entry, what: str) -> np.float32:
    """The one float32 scale of a per-tensor quantized operand."""
    if entry is None:
        raise QuantizationError(f"{what} has no quantization parameters")
    if len(entry[0]) != 1:
        raise QuantizationError(f"{what} must be quantized per tensor, not per channel ({len(entry[0])} scales)")
    return np.float32(entry[0][0])


def zero_of(entry, what: str) -> int:
    if entry is None:
        raise QuantizationError(f"{what} has no quantization parameters")
    return int(entry[1][0])


def round_half_away(x):
    """std::round (TfLiteRound): halves away from zero, exactly, in x's own float type."""
    x = np.asarray(x)
    whole = np.trunc(x)
    return whole + np.where(np.abs(x - whole) >= 0.5, np.sign(x), 0).astype(x.dtype)


def quantize_multiplier(real) -> tuple[np.ndarray, np.ndarray]:
    """QuantizeMultiplier: real ~ multiplier * 2^(shift - 31), multiplier in [2^30, 2^31)."""
    real = np.asarray(real, np.float64)
    q, shift = np.frexp(real)
    fixed = round_half_away(q * float(1 << 31)).astype(np.int64)
    shift = shift.astype(np.int64)
    over = fixed == (1 << 31)
    fixed = np.where(over, fixed // 2, fixed)
    shift = np.where(over, shift + 1, shift)
    tiny = shift < -31
    return np.where(tiny, 0, fixed), np.where(tiny, 0, shift)


def doubling_high_mul(a, b):
    """gemmlowp's SaturatingRoundingDoublingHighMul: (a * b * 2) >> 32, rounding half away from zero."""
    b = np.asarray(b, np.int64)
    t = np.asarray(a, np.int64) * b
    sign = t >> 63  # 0, or -1 for a negative product
    t += (1 << 30) + (sign & (1 - (1 << 31)))  # the nudge: 2^30, or 1 - 2^30 below zero
    t += (t >> 63) & ((1 << 31) - 1)  # so that the shift divides toward zero, as C++ does
    t >>= 31
    if np.any(b == INT32_MIN):  # the one product that overflows: saturate
        t = np.where(np.asarray(a) == INT32_MIN, np.where(b == INT32_MIN, INT32_MAX, t), t)
    return t


def rounding_shift_right(x, exponent):
    """gemmlowp's RoundingDivideByPOT: x / 2^exponent, rounding half away from zero."""
    x = np.asarray(x, np.int64)
    exponent = np.asarray(exponent, np.int64)
    mask = (np.int64(1) << exponent) - 1
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + ((x & mask) > threshold)


def multiply_by_quantized_multiplier(x, multiplier, shift):
    """MultiplyByQuantizedMultiplier of an int32 x (TensorFlow Lite's default double rounding)."""
    shift = np.asarray(shift, np.int64)
    left = np.maximum(shift, 0)
    return rounding_shift_right(doubling_high_mul(np.asarray(x, np.int64) << left, multiplier), np.maximum(-shift, 0))


def multiply_by_quantized_multiplier_wide(x, multiplier, shift):
    """MultiplyByQuantizedMultiplier of an int64 x (16-bit activations): a 16-bit multiplier, one rounding."""
    multiplier = np.asarray(multiplier, np.int64)
    reduced = np.where(multiplier < 0x7FFF0000, (multiplier + (1 << 15)) >> 16, 0x7FFF)
    total = 15 - np.asarray(shift, np.int64)
    return (np.asarray(x, np.int64) * reduced + (np.int64(1) << (total - 1))) >> total


def requantize(acc, multiplier, shift, zero_point, lo, hi, wide=False):
    """An accumulator scaled to the output, offset by its zero point and clamped."""
    scale = multiply_by_quantized_multiplier_wide if wide else multiply_by_quantized_multiplier
    return np.clip(scale(acc, multiplier, shift) + zero_point, lo, hi)


def activation_range(activation: str, entry, dtype: str, what="the output") -> tuple[int, int]:
    """CalculateActivationRangeQuantized: the fused activation as a clamp on the quantized output."""
    lo, hi = INT_RANGES[dtype]
    if activation in ("NONE", None):
        return lo, hi
    scale, zero = scale_of(entry, what), zero_of(entry, what)

    def q(v):
        return zero + int(round_half_away(np.float32(v) / scale))
    if activation == "RELU":
        return max(lo, q(0.0)), hi
    if activation == "RELU6":
        return max(lo, q(0.0)), min(hi, q(6.0))
    if activation == "RELU_N1_TO_1":
        return max(lo, q(-1.0)), min(hi, q(1.0))
    raise QuantizationError(f"fused activation {activation} has no quantized form")


@functools.lru_cache(maxsize=1024)
def output_multipliers(in_scale: float, weight_scales: tuple, out_scale: float, float32_product=False):
    """Per output channel (or one): input scale x weight scale / output scale as multiplier and shift.
    `float32_product`: the two scales multiplied in float32 first (GetQuantizedConvolutionMultipler,
    which FULLY_CONNECTED uses for per-tensor weights); else all in double (per-channel parameters)."""
    weights = np.asarray(weight_scales, np.float32)
    if float32_product:
        product = (np.float32(in_scale) * weights).astype(np.float64)
    else:
        product = np.float64(np.float32(in_scale)) * weights.astype(np.float64)
    return quantize_multiplier(product / np.float64(np.float32(out_scale)))


# -- gemmlowp's fixed-point exp and reciprocal (the reference softmax) -----------------------------------
def _fx_mul(a, b):
    return doubling_high_mul(a, b)


def _fx_rescale(x, src_bits: int, dst_bits: int):
    """Rescale: a fixed-point value with src_bits integer bits to dst_bits (saturating, rounding)."""
    exponent = src_bits - dst_bits
    if exponent == 0:
        return x
    if exponent < 0:
        return rounding_shift_right(x, -exponent)
    threshold = (1 << (31 - exponent)) - 1
    return np.where(x > threshold, INT32_MAX, np.where(x < -threshold, INT32_MIN, x << exponent))


def _wrap32(x):
    return ((np.asarray(x, np.int64) + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def _exp_quarter_interval(a):
    """exp(a) for a in [-1/4, 0): Q0.31 in and out (a Taylor expansion around -1/8)."""
    x = _wrap32(a + (1 << 28))
    x2 = _fx_mul(x, x)
    x3 = _fx_mul(x2, x)
    x4 = _fx_mul(x2, x2)
    x4_over_4 = rounding_shift_right(x4, 2)
    poly = rounding_shift_right(_wrap32(_fx_mul(_wrap32(x4_over_4 + x3), 715827883) + x2), 1)
    return _wrap32(1895147668 + _fx_mul(1895147668, _wrap32(x + poly)))


_EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308), (2, 39332535),
               (3, 720401), (4, 242))


def exp_on_negative_values(a, integer_bits: int):
    """exp(a) for a <= 0 held with `integer_bits` integer bits; the result in Q0.31."""
    fractional = 31 - integer_bits
    quarter = 1 << (fractional - 2)
    mod = _wrap32((a & (quarter - 1)) - quarter)
    result = _exp_quarter_interval(_fx_rescale(mod, integer_bits, 0))
    remainder = _wrap32(mod - a)
    for exponent, multiplier in _EXP_BARREL:
        if integer_bits > exponent:
            bit = (remainder & (np.int64(1) << (fractional + exponent))) != 0
            result = np.where(bit, _fx_mul(result, multiplier), result)
    if integer_bits > 5:
        result = np.where(a < -(1 << (36 - integer_bits)), 0, result)
    return np.where(a == 0, INT32_MAX, result)


def one_over_one_plus_x(a):
    """1 / (1 + a) for a in [0, 1): Q0.31 in and out (three Newton-Raphson steps, in Q2.29)."""
    total = np.asarray(a, np.int64) + INT32_MAX  # RoundingHalfSum(a, 1): (sum + sign) / 2, toward zero
    total = total + np.where(total >= 0, 1, -1)
    half_denominator = np.where(total >= 0, total >> 1, -((-total) >> 1))
    x = _wrap32(1515870810 + _fx_mul(half_denominator, -1010580540))
    one = 1 << 29
    for _ in range(3):
        product = _fx_mul(half_denominator, x)
        x = _wrap32(x + _fx_rescale(_fx_mul(x, _wrap32(one - product)), 4, 2))
    return _fx_rescale(x, 1, 0)


def reciprocal(x, integer_bits: int):
    """GetReciprocal of a positive fixed-point x with `integer_bits` integer bits: (the Q0.31 value
    1 / (1 + f), the number of bits b) where x = (1 + f) * 2^b."""
    x = np.asarray(x, np.int64)
    leading = 32 - np.frexp(x.astype(np.float64))[1].astype(np.int64)  # count of leading zeros of a uint32
    bits_over_unit = integer_bits - leading
    shifted_minus_one = _wrap32(((x << leading) & 0xFFFFFFFF) - (1 << 31))
    return one_over_one_plus_x(shifted_minus_one), bits_over_unit


# -- the quantized op family -------------------------------------------------------------------------------
QUANT_DTYPES = ("int8", "uint8", "int16")  # activations TensorFlow Lite quantizes
TENSOR_ATTRS = ("quantization", "out_dtype")  # attributes the file keeps on tensors, not in options
QUANTIZED: dict[str, str] = {}  # float op -> its quantized variant
# ops whose kernels only move values: they run on quantized integers unchanged
TRANSPARENT = {"reshape", "squeeze", "expand_dims", "transpose", "gather", "gather_nd", "strided_slice", "slice",
               "split", "split_v", "pack", "unpack", "tile", "broadcast_to", "read_variable", "assign_variable",
               "shape", "depth_to_space", "space_to_depth", "reverse_v2", "batch_to_space_nd", "space_to_batch_nd"}


# -- entries of the `quantization` attribute ----------------------------------------------------------------
def per_axis(entry, x: np.ndarray, what: str):
    """(scales, zero points) shaped to broadcast against x along the entry's axis."""
    if entry is None:
        raise QuantizationError(f"{what} has no quantization parameters")
    scales = np.asarray(entry[0], np.float32)
    zeros = np.asarray(entry[1], np.int64)
    if scales.size == 1:
        return scales.reshape(()), zeros.reshape(-1)[0]
    axis = int(entry[2]) % max(x.ndim, 1)
    if x.ndim == 0 or x.shape[axis] != scales.size or zeros.size not in (1, scales.size):
        raise QuantizationError(f"{what}: {scales.size} per-channel scales along dim {axis} of shape {list(x.shape)}")
    shape = [1] * x.ndim
    shape[axis] = -1
    return scales.reshape(shape), (zeros.reshape(shape) if zeros.size > 1 else zeros[0])


def dequantized(x: np.ndarray, entry, what="the input") -> np.ndarray:
    """float32(scale * (q - zero_point)), per tensor or per channel (TensorFlow Lite's Dequantize)."""
    scales, zeros = per_axis(entry, x, what)
    return (scales.astype(np.float64) * (x.astype(np.int64) - zeros)).astype(np.float32)


def check_entries(attrs, n: int, op: str):
    q = attrs.get("quantization")
    if q is None or len(q) != n:
        raise ValueError(f"the quantized {op} needs a quantization attribute with {n} entries "
                         f"(its inputs' and outputs' scale and zero point), got {q!r}")
    return q


# -- how a quantized variant of a float op is defined ------------------------------------------------------
def define_quantized(float_op: str, kernel, data_inputs=(0,), dtypes=QUANT_DTYPES, check=None):
    """Register quantized_<float_op>: the float op's attributes and file mapping plus `quantization`;
    shapes from the float op's rule (quantized operands standing in as float32); the output has the
    first input's dtype. `data_inputs`: the positions of quantized operands ("all" for every input);
    `check(attrs, inputs)` refuses what the kernel does not support. Not differentiable: make_trainable
    turns the layers it trains back into float ops."""
    base = OPS[float_op]
    name = f"quantized_{float_op}"

    def infer(attrs, inputs):
        x = inputs[0]
        if x is None or x.dtype not in dtypes:
            got = "none" if x is None else x.dtype
            raise ValueError(f"takes {' or '.join(dtypes)} input, got {got}" + (
                " (float activations with integer weights: dynamic-range quantization is not supported)"
                if x is not None and x.dtype in FLOAT_DTYPES else ""))
        check_entries(attrs, len(inputs) + 1, float_op)
        positions = range(len(inputs)) if data_inputs == "all" else data_inputs
        stand = [None if t is None else TensorInfo(t.name, "float32", t.shape) if k in positions else t
                 for k, t in enumerate(inputs)]
        plain = {k: v for k, v in attrs.items() if k not in TENSOR_ATTRS}
        if check is not None:
            check(attrs, inputs)
        return [(x.dtype, shape) for _, shape in base.infer(plain, stand)]

    spec = base.tflite
    defop(name, infer=infer, kernel=kernel, vjp=NOT_DIFFERENTIABLE, attrs={**base.attrs, "quantization": None},
          num_inputs=base.num_inputs, tflite=Builtin(spec.code, spec.options, spec.fields, spec.version))
    QUANTIZED[float_op] = name
    return name
