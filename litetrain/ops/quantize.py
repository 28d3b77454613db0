"""Weights stored in other formats: DEQUANTIZE (float16 weights) and DENSIFY (sparse weights)."""
from __future__ import annotations

import numpy as np

from ..core.ir import FLOAT_DTYPES
from ..core.registry import NOT_DIFFERENTIABLE, Builtin, defop


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
