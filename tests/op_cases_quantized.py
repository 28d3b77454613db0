"""Op table rows for quantized values (litetrain/ops/quantize.py, quantization.py, quantized.py,
quantized_conv.py).

QUANTIZE from float has a plain written definition (round half away from zero, add the zero point,
clamp), checked here against NumPy and, through tests/test_ops.py, LiteRT. The quantized variants of
the float ops ("quantized_conv_2d", ...) need quantization parameters on every tensor, which the
generic one-op rows do not give: tests/test_int8_ops.py runs each on one-op quantized files against
LiteRT's reference kernels (bit-identical) and its default kernels, and tests/test_int8_models.py
runs whole quantized models and every intermediate tensor against LiteRT (VALUE_EXEMPT below).
"""
from __future__ import annotations

import numpy as np

from op_cases import Bad, Case, NumPy, uniform, x

NOT_DIFFERENTIABLE = "QUANTIZE has no gradient rule (a quantized model's values are not trained)"
_QUANTIZED_TESTS = ("needs quantization parameters on its tensors; tests/test_int8_ops.py checks it against LiteRT's "
                    "reference kernels on one-op quantized files, tests/test_int8_models.py in whole models")
VALUE_EXEMPT = {f"quantized_{op}": _QUANTIZED_TESTS for op in (
    "add", "sub", "mul", "average_pool_2d", "max_pool_2d", "mean", "softmax", "logistic", "tanh", "hard_swish",
    "concatenation", "pad", "resize_bilinear", "conv_2d", "depthwise_conv_2d", "fully_connected")}


def _entry(scale, zero):
    return ((float(np.float32(scale)),), (int(zero),), 0)


def _affine(out_dtype):
    """The written definition of QUANTIZE from float: round half away from zero, offset, clamp."""
    info = np.iinfo(out_dtype)

    def ref(t, quantization=None, out_dtype=None):
        scale, zero = quantization[1][0][0], quantization[1][1][0]
        v = t.astype(np.float64) / scale
        return np.clip(np.sign(v) * np.floor(np.abs(v) + 0.5) + zero, info.min, info.max).astype(info.dtype)
    return NumPy(ref)


CASES = [
    Case("quantize", "float-int8", (x(3, 40, gen=uniform(-4, 4)),), _affine("int8"),
         {"quantization": (None, _entry(0.0625, 3)), "out_dtype": "int8"}, grad=NOT_DIFFERENTIABLE),
    Case("quantize", "float-uint8-clamps", (x(2, 5, 7, gen=uniform(-3, 9)),), _affine("uint8"),
         {"quantization": (None, _entry(0.03125, 100)), "out_dtype": "uint8"}, grad=NOT_DIFFERENTIABLE),
    Case("quantize", "float-int16", (x(50, gen=uniform(-1, 1)),), _affine("int16"),
         {"quantization": (None, _entry(2.0 ** -14, 0)), "out_dtype": "int16"}, grad=NOT_DIFFERENTIABLE),
]

BAD = [
    Bad("quantize", "no-output-parameters", (x(2, 3),), "no quantization parameters",
        {"quantization": (None, None), "out_dtype": "int8"}),
    Bad("quantize", "bad-out-dtype", (x(2, 3),), "out_dtype", {"quantization": (None, _entry(0.1, 0)),
                                                               "out_dtype": "float32"}),
]
