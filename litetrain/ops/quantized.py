"""Quantized elementwise, pooling, reduction, activation and data-movement ops: TensorFlow Lite's
integer kernels (int8, uint8; int16 where noted), written from its reference kernels' definitions.

- ADD, SUB: both inputs shifted left 20 bits, each scaled by its share of twice the larger input
  scale, summed, scaled to the output (fixed-point multipliers throughout).
- MUL: (a - za) * (b - zb) times one multiplier, float32 s_a * s_b / s_out.
- AVERAGE_POOL_2D: the window's sum over its pixels inside the image, divided rounding half away
  from zero; MAX_POOL_2D: the window's maximum; both clamped to the fused activation's range.
- MEAN: the sum minus the zero points, the multiplier s_in / s_out folded with 1 / count.
- SOFTMAX: gemmlowp's fixed-point exp of the (beta-scaled) differences to the row's maximum, their
  sum's fixed-point reciprocal; output scale 1/256, zero point -128. int16: exp and 1 / (1 + x) from
  513-entry interpolated tables (gen_lut), output Q0.15.
- LOGISTIC, TANH: a 256-entry table of the float function at every input value.
- HARD_SWISH: the 16-bit fixed-point evaluation of x * relu6(x + 3) / 6.
- CONCATENATION, PAD, RESIZE_BILINEAR: values moved (the output's zero point pads; uint8 inputs of
  other scales are rescaled); bilinear weights in 10-bit fixed point.
"""
from __future__ import annotations

import functools

import numpy as np

from . import activation, elementwise, image, pool, reduce, shape  # noqa: F401  (the float ops these mirror)
from .conv import _prepare, _tap
from .quantization import (INT_RANGES, QuantizationError, activation_range, define_quantized, doubling_high_mul,
                           exp_on_negative_values, multiply_by_quantized_multiplier, quantize_multiplier, reciprocal,
                           requantize, round_half_away, rounding_shift_right, scale_of, zero_of)


# -- ADD, SUB, MUL ---------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=256)
def _add_params(s1: float, s2: float, s_out: float, left_shift: int):
    twice_max = np.float64(np.float32(2.0) * max(np.float32(s1), np.float32(s2)))
    m1 = quantize_multiplier(np.float64(np.float32(s1)) / twice_max)
    m2 = quantize_multiplier(np.float64(np.float32(s2)) / twice_max)
    mo = quantize_multiplier(twice_max / np.float64(np.float32(float(1 << left_shift)) * np.float32(s_out)))
    return m1, m2, mo


def _add_like(a, b, quantization, activation_fn, sign):
    q1, q2, q_out = quantization
    if a.dtype == np.int16 and any(zero_of(q, "an operand") for q in quantization):
        raise QuantizationError("int16 ADD/SUB takes zero points of 0")
    left_shift = 15 if a.dtype == np.int16 else 20
    (m1, s1), (m2, s2), (mo, so) = _add_params(float(scale_of(q1, "input 1")), float(scale_of(q2, "input 2")),
                                               float(scale_of(q_out, "the output")), left_shift)
    x1 = multiply_by_quantized_multiplier((a.astype(np.int64) - zero_of(q1, "input 1")) << left_shift, m1, s1)
    x2 = multiply_by_quantized_multiplier((b.astype(np.int64) - zero_of(q2, "input 2")) << left_shift, m2, s2)
    lo, hi = activation_range(activation_fn, q_out, str(a.dtype))
    return requantize(x1 + sign * x2, mo, so, zero_of(q_out, "the output"), lo, hi).astype(a.dtype)


def _add_kernel(a, b, fused_activation_function="NONE", quantization=None):
    return _add_like(a, b, quantization, fused_activation_function, 1)


def _sub_kernel(a, b, fused_activation_function="NONE", quantization=None):
    return _add_like(a, b, quantization, fused_activation_function, -1)


def _mul_kernel(a, b, fused_activation_function="NONE", quantization=None):
    q1, q2, q_out = quantization
    real = np.float32(scale_of(q1, "input 1") * scale_of(q2, "input 2")) / scale_of(q_out, "the output")
    multiplier, shift = quantize_multiplier(np.float64(np.float32(real)))
    product = (a.astype(np.int64) - zero_of(q1, "input 1")) * (b.astype(np.int64) - zero_of(q2, "input 2"))
    lo, hi = activation_range(fused_activation_function, q_out, str(a.dtype))
    return requantize(product, multiplier, shift, zero_of(q_out, "the output"), lo, hi).astype(a.dtype)


def _same_dtypes(attrs, inputs):
    if len({t.dtype for t in inputs if t is not None}) != 1:
        raise ValueError("the operands must have one dtype")


for _op, _kernel in (("add", _add_kernel), ("sub", _sub_kernel), ("mul", _mul_kernel)):
    define_quantized(_op, _kernel, data_inputs="all", check=_same_dtypes)


# -- AVERAGE_POOL_2D, MAX_POOL_2D -----------------------------------------------------------------------------
def _windows(x, padding, sh, sw, kh, kw, value):
    xp, ho, wo = _prepare(x, kh, kw, sh, sw, 1, 1, padding, value=value)
    return [_tap(xp, i, j, sh, sw, 1, 1, ho, wo) for i in range(kh) for j in range(kw)]


def _average_pool_kernel(x, padding="SAME", stride_w=1, stride_h=1, filter_width=1, filter_height=1,
                         fused_activation_function="NONE", quantization=None):
    taps = _windows(x.astype(np.int64), padding, stride_h, stride_w, filter_height, filter_width, 0)
    ones = _windows(np.ones((1, *x.shape[1:3], 1), np.int64), padding, stride_h, stride_w, filter_height,
                    filter_width, 0)
    total, count = sum(taps), sum(ones)
    half = count // 2
    mean = np.where(total > 0, (total + half) // count, -((-(total - half)) // count))  # toward zero, as C++
    lo, hi = activation_range(fused_activation_function, quantization[1], str(x.dtype))
    return np.clip(mean, lo, hi).astype(x.dtype)


def _max_pool_kernel(x, padding="SAME", stride_w=1, stride_h=1, filter_width=1, filter_height=1,
                     fused_activation_function="NONE", quantization=None):
    low = INT_RANGES[str(x.dtype)][0]
    taps = _windows(x, padding, stride_h, stride_w, filter_height, filter_width, low)
    y = functools.reduce(np.maximum, taps)
    lo, hi = activation_range(fused_activation_function, quantization[1], str(x.dtype))
    return np.clip(y, lo, hi).astype(x.dtype)


define_quantized("average_pool_2d", _average_pool_kernel)
define_quantized("max_pool_2d", _max_pool_kernel)


# -- MEAN ------------------------------------------------------------------------------------------------
def _mean_kernel(x, axis, keep_dims=False, quantization=None):
    q_in, _, q_out = quantization
    axes = tuple(sorted({int(a) % x.ndim for a in np.asarray(axis).reshape(-1)}))
    count = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
    total = x.astype(np.int64).sum(axis=axes, keepdims=bool(keep_dims))
    multiplier, shift = quantize_multiplier(np.float64(scale_of(q_in, "the input"))
                                            / np.float64(scale_of(q_out, "the output")))
    multiplier, shift = int(multiplier), int(shift)
    bits = min(count.bit_length() - 1, 32, 31 + shift)  # the 1 / count folded into the multiplier
    multiplier, shift = (multiplier << bits) // count, shift - bits
    lo, hi = INT_RANGES[str(x.dtype)]
    return requantize(total - zero_of(q_in, "the input") * count, multiplier, shift,
                      zero_of(q_out, "the output"), lo, hi).astype(x.dtype)


define_quantized("mean", _mean_kernel)


# -- SOFTMAX ------------------------------------------------------------------------------------------------
def _softmax_kernel(x, beta=1.0, quantization=None):
    if x.dtype == np.int16:
        return _softmax16(x, beta, quantization)
    q_in, q_out = quantization
    real = min(float(np.float32(beta)) * float(scale_of(q_in, "the input")) * float(1 << 26), float((1 << 31) - 1))
    multiplier, left_shift = (int(v) for v in quantize_multiplier(real))
    radius = int(np.floor(((1 << 5) - 1) * float(1 << 26) / float(1 << left_shift)))
    diff = x.astype(np.int64) - x.max(axis=-1, keepdims=True).astype(np.int64)
    inside = diff >= -radius
    scaled = multiply_by_quantized_multiplier(np.where(inside, diff, 0), multiplier, left_shift)
    exps = exp_on_negative_values(scaled, 5)
    total = np.where(inside, rounding_shift_right(exps, 12), 0).sum(axis=-1, keepdims=True)
    scale, bits = reciprocal(total, 12)
    low, high = INT_RANGES[str(x.dtype)]
    out = rounding_shift_right(doubling_high_mul(scale, exps), bits + 31 - 8) + low
    return np.where(inside, np.clip(out, low, high), low).astype(x.dtype)


@functools.lru_cache(maxsize=4)
def _int16_lut(fn: str) -> np.ndarray:
    """gen_lut: 512 samples of fn over its input range (plus the end point) in Q0.15, each biased by
    half the error of linear interpolation at its interval's midpoint (all in double)."""
    f, lo, hi = {"exp": (np.exp, -10.0, 0.0), "reciprocal": (lambda v: 1.0 / (1.0 + v), 0.0, 1.0)}[fn]
    step = (hi - lo) / 512
    scale = 65536.0 / 2.0  # 16-bit outputs over [-1, 1]
    i = np.arange(512, dtype=np.float64)
    value, middle, following = f(lo + i * step), f(lo + i * step + step / 2), f(lo + (i + 1) * step)
    sample = round_half_away(value * scale)
    interpolated = round_half_away((following * scale + round_half_away(value * scale)) / 2)
    bias = round_half_away((interpolated - round_half_away(middle * scale)) / 2)
    table = np.append(sample - bias, round_half_away(f(hi) * scale))
    return np.clip(table, -32768, 32767).astype(np.int64)


def _lookup16(value, table):
    """generic_int16_table_lookup: the table's entry for the top 9 bits, interpolated by the low 7."""
    index = 256 + (value >> 7)
    base = table[index]
    return base + (((table[index + 1] - base) * (value & 0x7F) + 64) >> 7)


def _softmax16(x, beta, quantization):
    """SoftmaxInt16: exp and 1 / (1 + x) from 513-entry tables; output Q0.15 in [0, 32767]."""
    q_in = quantization[0]
    real = np.float64(scale_of(q_in, "the input")) * np.float64(np.float32(beta)) / (10.0 / 65535.0)
    multiplier, shift = (int(v) for v in quantize_multiplier(real))
    diff = x.astype(np.int64) - x.max(axis=-1, keepdims=True).astype(np.int64)
    scaled = multiply_by_quantized_multiplier(diff, multiplier, shift) + 32767
    exps = _lookup16(np.clip(scaled, -32768, 32767), _int16_lut("exp"))
    total = exps.sum(axis=-1, keepdims=True)
    headroom = 32 - np.frexp(total.astype(np.float64))[1].astype(np.int64)  # leading zeros of a uint32
    shifted = ((total << (headroom - 1)) + (1 << 13)) >> 14
    reciprocal_q15 = _lookup16(np.clip(shifted - ((1 << 15) + (1 << 16)), -32768, 32767), _int16_lut("reciprocal"))
    right = 31 - headroom
    out = (exps * reciprocal_q15 + (np.int64(1) << (right - 1))) >> right
    return np.clip(out, 0, 32767).astype(np.int16)


define_quantized("softmax", _softmax_kernel)


# -- LOGISTIC, TANH: 256-entry tables ----------------------------------------------------------------------
@functools.lru_cache(maxsize=256)
def _table(fn: str, dtype: str, s_in: float, z_in: int, s_out: float, z_out: int) -> np.ndarray:
    lo, hi = INT_RANGES[dtype]
    values = np.arange(lo, hi + 1, dtype=np.int64)
    real = np.float32(s_in) * (values - z_in).astype(np.float32)
    with np.errstate(over="ignore"):
        y = (np.float32(1) / (np.float32(1) + np.exp(-real))) if fn == "logistic" else np.tanh(real)
    q = round_half_away(y.astype(np.float32) * (np.float32(1) / np.float32(s_out))).astype(np.int64) + z_out
    return np.clip(q, lo, hi).astype(dtype)


def _table_kernel(fn):
    def kernel(x, quantization=None):
        if x.dtype == np.int16:
            raise QuantizationError(f"int16 {fn.upper()} is not supported")
        q_in, q_out = quantization
        table = _table(fn, str(x.dtype), float(scale_of(q_in, "the input")), zero_of(q_in, "the input"),
                       float(scale_of(q_out, "the output")), zero_of(q_out, "the output"))
        return table[x.astype(np.int64) - INT_RANGES[str(x.dtype)][0]]
    return kernel


define_quantized("logistic", _table_kernel("logistic"), dtypes=("int8", "uint8"))
define_quantized("tanh", _table_kernel("tanh"), dtypes=("int8", "uint8"))


# -- HARD_SWISH ----------------------------------------------------------------------------------------------
def _int16_multiplier(real: np.float32):
    multiplier, exponent = (int(v) for v in quantize_multiplier(np.float64(real)))
    short = 32767 if multiplier >= (1 << 31) - 1 - (1 << 15) else (multiplier + (1 << 15)) >> 16
    return short, exponent


def _saturate16(v):
    return np.clip(v, -32768, 32767)


def _hard_swish_kernel(x, quantization=None):
    q_in, q_out = quantization
    hires_scale = np.float32(1.0 / 128.0) * scale_of(q_in, "the input")
    out_mult, out_exp = _int16_multiplier(np.float32(hires_scale / scale_of(q_out, "the output")))
    relu_mult, relu_exp = _int16_multiplier(np.float32(hires_scale / np.float32(3.0 / 32768.0)))
    if out_exp > 0:
        raise QuantizationError("HARD_SWISH needs an output scale at least the input scale / 128")

    def mul16(a, b):  # the 16-bit rounding doubling high multiply
        ab = a * b
        t = ab + np.where(ab >= 0, 1 << 14, 1 - (1 << 14))
        return np.where(t >= 0, t >> 15, -((-t) >> 15))
    hires = (x.astype(np.int64) - zero_of(q_in, "the input")) * 128
    preshift = mul16(hires, out_mult)
    reluish = _saturate16(hires << (relu_exp - 1)) if relu_exp > 0 else hires
    reluish = mul16(reluish, relu_mult)
    if relu_exp > 0:
        reluish = _saturate16(reluish << 1)
    elif relu_exp < 0:
        reluish = rounding_shift_right(reluish, -relu_exp)
    reluish = (reluish + (1 << 15)) >> 1
    product = reluish * preshift
    product = np.where(product >= 0, product >> 15, -((-product) >> 15))  # truncating doubling high multiply
    out = rounding_shift_right(product, -out_exp) + zero_of(q_out, "the output")
    lo, hi = INT_RANGES[str(x.dtype)]
    return np.clip(out, lo, hi).astype(x.dtype)


define_quantized("hard_swish", _hard_swish_kernel, dtypes=("int8", "uint8"))


# -- CONCATENATION, PAD, RESIZE_BILINEAR ------------------------------------------------------------------------
def _concat_kernel(*xs, axis=0, fused_activation_function="NONE", quantization=None):
    q_out = quantization[-1]
    parts = []
    for k, (x, q) in enumerate(zip(xs, quantization[:-1])):
        if q is None or tuple(q[:2]) == tuple(q_out[:2]):
            parts.append(x)
        elif x.dtype != np.uint8:
            raise QuantizationError(f"input {k} of a {x.dtype} CONCATENATION has other quantization parameters than "
                                    "its output (TensorFlow Lite requires them equal)")
        else:  # ConcatenationWithScaling, in float32
            scale = scale_of(q, f"input {k}") * (np.float32(1) / scale_of(q_out, "the output"))
            bias = -np.float32(zero_of(q, f"input {k}")) * scale
            value = round_half_away(x.astype(np.float32) * scale + bias).astype(np.int64) + zero_of(q_out, "output")
            parts.append(np.clip(value, 0, 255).astype(np.uint8))
    return np.concatenate(parts, axis=axis)


def _pad_kernel(x, paddings, quantization=None):
    p = np.asarray(paddings, np.int64).reshape(-1, 2)
    return np.pad(x, p.tolist(), constant_values=zero_of(quantization[-1], "the output"))


def _div1024(v):
    return np.where(v >= 0, v >> 10, -((-v) >> 10))  # C++ division: toward zero


def _resize_axis(in_size, out_size, align_corners, half_pixel_centers):
    """The 10-bit fixed-point source position of each output index, and its two neighbours."""
    scale = ((1 << 10) * in_size + out_size // 2) // out_size
    if align_corners and out_size > 1:
        scale = ((1 << 10) * (in_size - 1) + (out_size - 1) // 2) // (out_size - 1)
    pos = np.arange(out_size, dtype=np.int64) * scale
    if half_pixel_centers:
        pos = pos + scale // 2 - (1 << 9)
    low = np.maximum(_div1024(pos), 0)
    high = np.minimum(_div1024(pos + 1023), in_size - 1)
    return pos - (low << 10), low, high


def _resize_kernel(x, size, align_corners=False, half_pixel_centers=False, quantization=None):
    out_h, out_w = (int(v) for v in np.asarray(size).reshape(-1))
    fy, y0, y1 = _resize_axis(x.shape[1], out_h, align_corners, half_pixel_centers)
    fx, x0, x1 = _resize_axis(x.shape[2], out_w, align_corners, half_pixel_centers)
    v = x.astype(np.int64)
    wy, wx = fy[None, :, None, None], fx[None, None, :, None]
    rows0, rows1 = v[:, y0], v[:, y1]
    total = (rows0[:, :, x0] * (1024 - wy) * (1024 - wx) + rows1[:, :, x0] * wy * (1024 - wx)
             + rows0[:, :, x1] * (1024 - wy) * wx + rows1[:, :, x1] * wy * wx)
    shifted = total + np.where(total > 0, 1 << 19, -(1 << 19))
    return np.where(shifted >= 0, shifted >> 20, -((-shifted) >> 20)).astype(x.dtype)


define_quantized("concatenation", _concat_kernel, data_inputs="all", check=_same_dtypes)
define_quantized("pad", _pad_kernel, dtypes=("int8", "uint8", "int16"))
define_quantized("resize_bilinear", _resize_kernel, dtypes=("int8", "int16"))
