"""Elementwise ops: arithmetic, comparisons, logic, selection and casts (TensorFlow Lite semantics)."""
from __future__ import annotations

import numpy as np

from ..core.ir import DTYPES, FLOAT_DTYPES, numpy_dtype
from ..core.registry import NOT_DIFFERENTIABLE, Builtin, defop
from ._util import (broadcast_infer, broadcast_shapes, compare_infer, fused, no_fused_activation, typed,
                    typed_same, unary, unbroadcast)
from .api import (cast, cos, div, greater, greater_equal, less_equal, log, mul, neg, pow_, reshape, sign, sin,
                  square, sub, where, zeros_like)

ACT = {"fused_activation_function": "NONE"}
ACT_FIELD = {"fused_activation_function": "activation"}


# -- binary arithmetic -------------------------------------------------------------------------
def _binary(name, code, fn, vjp, options, ufunc=None):
    def kernel(a, b, fused_activation_function="NONE", out=None):
        if out is not None:  # the runtime's in-place form (float operands, no fused activation)
            return fused((ufunc or fn)(a, b, out=out), fused_activation_function)
        return fused(np.asarray(fn(a, b), dtype=a.dtype), fused_activation_function)
    defop(name, infer=broadcast_infer, kernel=kernel, vjp=vjp, attrs=ACT, num_inputs=(2, 2), inplace=(0, 1),
          tflite=Builtin(code, options, ACT_FIELD))


def _add_vjp(inputs, outputs, grads, **attrs):
    no_fused_activation(attrs, "add")
    a, b = inputs
    g, = grads
    return [unbroadcast(g, a), unbroadcast(g, b)]


def _sub_vjp(inputs, outputs, grads, **attrs):
    no_fused_activation(attrs, "sub")
    a, b = inputs
    g, = grads
    return [unbroadcast(g, a), unbroadcast(neg(g), b)]


def _mul_vjp(inputs, outputs, grads, **attrs):
    no_fused_activation(attrs, "mul")
    a, b = inputs
    g, = grads
    return [unbroadcast(mul(g, b), a), unbroadcast(mul(g, a), b)]


def _div_vjp(inputs, outputs, grads, **attrs):
    no_fused_activation(attrs, "div")
    a, b = inputs
    g, = grads
    ga = div(g, b)
    return [unbroadcast(ga, a), unbroadcast(neg(mul(ga, outputs[0])), b)]


def _int_safe_div(a, b):
    if np.issubdtype(a.dtype, np.integer):  # TFLite DIV on integers is C++ '/': toward zero
        return np.sign(a) * np.sign(b) * (np.abs(a) // np.abs(b))
    return np.divide(a, b)


_binary("add", "ADD", np.add, _add_vjp, "AddOptions")
_binary("sub", "SUB", np.subtract, _sub_vjp, "SubOptions")
_binary("mul", "MUL", np.multiply, _mul_vjp, "MulOptions")
_binary("div", "DIV", _int_safe_div, _div_vjp, "DivOptions", ufunc=np.divide)


def _minmax_vjp(pick_first):
    def vjp(inputs, outputs, grads, **attrs):
        a, b = inputs
        g, = grads
        mask = pick_first(a, b)
        zero = zeros_like(g)
        return [unbroadcast(where(mask, g, zero), a), unbroadcast(where(mask, zero, g), b)]
    return vjp


defop("maximum", infer=broadcast_infer, kernel=np.maximum, num_inputs=(2, 2), inplace=(0, 1),
      vjp=_minmax_vjp(lambda a, b: greater_equal(a, b)), tflite=Builtin("MAXIMUM"))
defop("minimum", infer=broadcast_infer, kernel=np.minimum, num_inputs=(2, 2), inplace=(0, 1),
      vjp=_minmax_vjp(lambda a, b: less_equal(a, b)), tflite=Builtin("MINIMUM"))


def _pow_vjp(inputs, outputs, grads):
    a, b = inputs
    g, = grads
    ga = mul(g, mul(b, pow_(a, sub(b, 1.0))))
    gb = None
    if b.constant is None:  # d/db a^b = a^b log a, defined for a > 0
        gb = unbroadcast(mul(g, mul(outputs[0], log(where(greater(a, 0.0), a, 1.0)))), b)
    return [unbroadcast(ga, a), gb]


defop("pow", infer=broadcast_infer, kernel=lambda a, b: np.power(a, b).astype(a.dtype),
      vjp=_pow_vjp, num_inputs=(2, 2), tflite=Builtin("POW", "PowOptions"))


def _sqdiff_vjp(inputs, outputs, grads):
    a, b = inputs
    g, = grads
    d = mul(mul(g, sub(a, b)), 2.0)
    return [unbroadcast(d, a), unbroadcast(neg(d), b)]


defop("squared_difference", infer=broadcast_infer, kernel=lambda a, b: np.square(a - b),
      vjp=_sqdiff_vjp, num_inputs=(2, 2), tflite=Builtin("SQUARED_DIFFERENCE", "SquaredDifferenceOptions"))


# -- unary ops ----------------------------------------------------------------------------------
SIGNED = FLOAT_DTYPES + ("int32", "int64")








unary("neg", "NEG", np.negative, lambda i, o, g: [neg(g[0])], dtypes=SIGNED, inplace=True)
unary("exp", "EXP", np.exp, lambda i, o, g: [mul(g[0], o[0])], inplace=True)
unary("log", "LOG", np.log, lambda i, o, g: [div(g[0], i[0])], inplace=True)
unary("sqrt", "SQRT", np.sqrt, lambda i, o, g: [div(mul(g[0], 0.5), o[0])], inplace=True)
unary("rsqrt", "RSQRT", typed(lambda x: 1 / np.sqrt(x)),
      lambda i, o, g: [mul(mul(g[0], -0.5), mul(o[0], square(o[0])))])
unary("square", "SQUARE", np.square, lambda i, o, g: [mul(mul(g[0], i[0]), 2.0)], inplace=True)
unary("abs", "ABS", np.abs, lambda i, o, g: [mul(g[0], sign(i[0]))], dtypes=FLOAT_DTYPES + ("int32",))
unary("sign", "SIGN", typed(np.sign), NOT_DIFFERENTIABLE, dtypes=FLOAT_DTYPES + ("int32",))
unary("floor", "FLOOR", np.floor, NOT_DIFFERENTIABLE)
unary("sin", "SIN", np.sin, lambda i, o, g: [mul(g[0], cos(i[0]))], inplace=True)
unary("cos", "COS", np.cos, lambda i, o, g: [neg(mul(g[0], sin(i[0])))], inplace=True)


# -- comparisons and selection --------------------------------------------------------------------
for _name, _code, _fn in [("less", "LESS", np.less), ("less_equal", "LESS_EQUAL", np.less_equal),
                          ("greater", "GREATER", np.greater),
                          ("greater_equal", "GREATER_EQUAL", np.greater_equal),
                          ("equal", "EQUAL", np.equal), ("not_equal", "NOT_EQUAL", np.not_equal)]:
    defop(_name, infer=compare_infer, kernel=_fn, vjp=NOT_DIFFERENTIABLE, num_inputs=(2, 2),
          tflite=Builtin(_code))


def _logical_infer(attrs, inputs):
    if any(t.dtype != "bool" for t in inputs):
        raise ValueError("logical ops take bool inputs")
    return broadcast_infer(attrs, inputs)


defop("logical_and", infer=_logical_infer, kernel=np.logical_and, vjp=NOT_DIFFERENTIABLE,
      num_inputs=(2, 2), tflite=Builtin("LOGICAL_AND"))
defop("logical_not", infer=_logical_infer, kernel=np.logical_not, vjp=NOT_DIFFERENTIABLE,
      num_inputs=(1, 1), tflite=Builtin("LOGICAL_NOT"))


def _select_infer(attrs, inputs):
    c, a, b = inputs
    if c.dtype != "bool":
        raise ValueError(f"the condition must be bool, got {c.dtype}")
    if a.dtype != b.dtype:
        raise ValueError(f"both branches must have one dtype, got {a.dtype} and {b.dtype}")
    return [(a.dtype, broadcast_shapes(c.shape, a.shape, b.shape))]


def _select_vjp(inputs, outputs, grads):
    c, a, b = inputs
    g, = grads
    zero = zeros_like(g)
    return [None, unbroadcast(where(c, g, zero), a), unbroadcast(where(c, zero, g), b)]


defop("select_v2", infer=_select_infer, kernel=lambda c, a, b: np.where(c, a, b), vjp=_select_vjp,
      num_inputs=(3, 3), tflite=Builtin("SELECT_V2", "SelectV2Options"))


# -- SELECT (TFLite's older select: a rank-1 condition picks rows) -------------------------------------
def _select_v1_infer(attrs, inputs):
    c, a, b = inputs
    if c.dtype != "bool" or a.dtype != b.dtype:
        raise ValueError("select takes a bool condition and two inputs of one dtype")
    shape = broadcast_shapes(a.shape, b.shape)
    if len(c.shape) != 1 or len(shape) <= 1:
        broadcast_shapes(c.shape, shape)
    return [(a.dtype, shape)]


def _select_v1_kernel(c, a, b):
    if c.ndim == 1 and a.ndim > 1:  # row selection
        c = c.reshape((-1,) + (1,) * (a.ndim - 1))
    return np.where(c, a, b)


def _select_v1_vjp(inputs, outputs, grads):
    c, a, b = inputs
    g, = grads
    if len(c.shape) == 1 and len(a.shape) > 1:
        c = reshape(c, [-1] + [1] * (len(a.shape) - 1))
    zero = zeros_like(g)
    return [None, unbroadcast(where(c, g, zero), a), unbroadcast(where(c, zero, g), b)]


defop("select", infer=_select_v1_infer, kernel=_select_v1_kernel, vjp=_select_v1_vjp, num_inputs=(3, 3),
      tflite=Builtin("SELECT", "SelectOptions"))


def _cast_infer(attrs, inputs):
    out = attrs["out_data_type"]
    if out is None:
        raise ValueError("cast needs out_data_type")
    if out not in DTYPES or DTYPES[out][0] is None:
        raise ValueError(f"cannot cast to {out!r}")
    return [(out, inputs[0].shape)]


def _cast_vjp(inputs, outputs, grads, **attrs):
    x, = inputs
    if x.dtype not in ("float16", "float32", "float64") or outputs[0].dtype not in ("float16", "float32", "float64"):
        return [None]
    return [cast(grads[0], x.dtype)]


defop("cast", infer=_cast_infer, num_inputs=(1, 1),
      kernel=lambda x, in_data_type=None, out_data_type=None: x.astype(numpy_dtype(out_data_type)),
      vjp=_cast_vjp, attrs={"in_data_type": None, "out_data_type": None},
      tflite=Builtin("CAST", "CastOptions", {"in_data_type": "dtype", "out_data_type": "dtype"}))
defop("zeros_like", infer=typed_same(SIGNED), kernel=np.zeros_like, vjp=NOT_DIFFERENTIABLE,
      num_inputs=(1, 1), tflite=Builtin("ZEROS_LIKE", "ZerosLikeOptions"))
