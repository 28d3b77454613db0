"""Elementwise ops: arithmetic, activations, comparisons, selection and casts (TFLite semantics)."""
from __future__ import annotations

import math

import numpy as np

from ..ir import DTYPES, FLOAT_DTYPES, numpy_dtype
from ..registry import NOT_DIFFERENTIABLE, Builtin, defop
from ..trace import builder_of
from ._util import broadcast_infer, compare_infer, fused, no_fused_activation, unbroadcast

ACT = {"fused_activation_function": "NONE"}
ACT_FIELD = {"fused_activation_function": "activation"}


def _emit(op, *inputs, **attrs):
    fb = builder_of(*inputs)
    like = next(t for t in inputs if hasattr(t, "fb"))
    return fb.emit(op, [fb.to_tensor(t, like) for t in inputs], attrs)


# -- binary arithmetic -------------------------------------------------------------------------
def _binary(name, code, fn, vjp, options):
    def kernel(a, b, fused_activation_function="NONE"):
        return fused(np.asarray(fn(a, b), dtype=a.dtype), fused_activation_function)
    defop(name, infer=broadcast_infer, kernel=kernel, vjp=vjp, attrs=ACT, num_inputs=(2, 2),
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
_binary("div", "DIV", _int_safe_div, _div_vjp, "DivOptions")


def _minmax_vjp(pick_first):
    def vjp(inputs, outputs, grads, **attrs):
        a, b = inputs
        g, = grads
        mask = pick_first(a, b)
        zero = zeros_like(g)
        return [unbroadcast(where(mask, g, zero), a), unbroadcast(where(mask, zero, g), b)]
    return vjp


defop("maximum", infer=broadcast_infer, kernel=np.maximum, num_inputs=(2, 2),
      vjp=_minmax_vjp(lambda a, b: greater_equal(a, b)), tflite=Builtin("MAXIMUM"))
defop("minimum", infer=broadcast_infer, kernel=np.minimum, num_inputs=(2, 2),
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


def typed_same(dtypes):
    """Output like the input, for inputs of `dtypes` (those TFLite's kernel accepts)."""
    def infer(attrs, inputs):
        x, = inputs
        if x.dtype not in dtypes:
            raise ValueError(f"takes {'/'.join(dtypes)} input, got {x.dtype}")
        return [(x.dtype, x.shape)]
    return infer


def _unary(name, code, fn, vjp, options=None, fields=None, attrs=None, dtypes=FLOAT_DTYPES):
    defop(name, infer=typed_same(dtypes), kernel=fn, vjp=vjp, attrs=attrs, num_inputs=(1, 1),
          tflite=Builtin(code, options, fields or {}))


def _erf(x):
    return np.vectorize(math.erf, otypes=[x.dtype])(x) if x.size else x.copy()


def _gelu_kernel(x, approximate=False):
    if approximate:
        c = np.asarray(math.sqrt(2 / math.pi), x.dtype)
        return (0.5 * x * (1 + np.tanh(c * (x + np.asarray(0.044715, x.dtype) * x ** 3)))).astype(x.dtype)
    return (0.5 * x * (1 + _erf(x / np.asarray(math.sqrt(2), x.dtype)))).astype(x.dtype)


def _gelu_vjp(inputs, outputs, grads, approximate=False):
    x, = inputs
    y, = outputs
    g, = grads
    if approximate:
        c, k = math.sqrt(2 / math.pi), 0.044715
        t = tanh(mul(add(x, mul(pow_(x, 3.0), k)), c))
        inner = mul(add(mul(square(x), 3 * k), 1.0), c)
        d = add(mul(add(t, 1.0), 0.5), mul(mul(mul(x, 0.5), sub(1.0, square(t))), inner))
        return [mul(g, d)]
    # gelu'(x) = Phi(x) + x phi(x), with Phi(x) = gelu(x) / x (and 1/2 at x = 0)
    is_zero = equal(x, 0.0)
    safe_x = where(is_zero, 1.0, x)
    phi_cdf = where(is_zero, 0.5, div(y, safe_x))
    pdf = mul(exp(mul(square(x), -0.5)), 1.0 / math.sqrt(2 * math.pi))
    return [mul(g, add(phi_cdf, mul(x, pdf)))]


def _typed(fn):
    return lambda x: np.asarray(fn(x), dtype=x.dtype)


_unary("neg", "NEG", np.negative, lambda i, o, g: [neg(g[0])], dtypes=SIGNED)
_unary("exp", "EXP", np.exp, lambda i, o, g: [mul(g[0], o[0])])
_unary("log", "LOG", np.log, lambda i, o, g: [div(g[0], i[0])])
_unary("sqrt", "SQRT", np.sqrt, lambda i, o, g: [div(mul(g[0], 0.5), o[0])])
_unary("rsqrt", "RSQRT", _typed(lambda x: 1 / np.sqrt(x)),
       lambda i, o, g: [mul(mul(g[0], -0.5), mul(o[0], square(o[0])))])
_unary("square", "SQUARE", np.square, lambda i, o, g: [mul(mul(g[0], i[0]), 2.0)])
_unary("abs", "ABS", np.abs, lambda i, o, g: [mul(g[0], sign(i[0]))], dtypes=FLOAT_DTYPES + ("int32",))
_unary("sign", "SIGN", _typed(np.sign), NOT_DIFFERENTIABLE, dtypes=FLOAT_DTYPES + ("int32",))
_unary("floor", "FLOOR", np.floor, NOT_DIFFERENTIABLE)
_unary("sin", "SIN", np.sin, lambda i, o, g: [mul(g[0], cos(i[0]))])
_unary("cos", "COS", np.cos, lambda i, o, g: [neg(mul(g[0], sin(i[0])))])
_unary("tanh", "TANH", np.tanh, lambda i, o, g: [mul(g[0], sub(1.0, square(o[0])))])
_unary("logistic", "LOGISTIC", _typed(lambda x: 0.5 * (1 + np.tanh(0.5 * x))),
       lambda i, o, g: [mul(g[0], mul(o[0], sub(1.0, o[0])))])
_unary("relu", "RELU", _typed(lambda x: np.maximum(x, 0)),
       lambda i, o, g: [where(greater(i[0], 0.0), g[0], zeros_like(g[0]))])
_unary("relu6", "RELU6", _typed(lambda x: np.clip(x, 0, 6)),
       lambda i, o, g: [where(logical_and(greater(i[0], 0.0), less(i[0], 6.0)), g[0], zeros_like(g[0]))])
_unary("gelu", "GELU", _gelu_kernel, _gelu_vjp, "GeluOptions", {"approximate": "bool"},
       {"approximate": False})


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
    from ._util import broadcast_shapes
    return [(a.dtype, broadcast_shapes(c.shape, a.shape, b.shape))]


def _select_vjp(inputs, outputs, grads):
    c, a, b = inputs
    g, = grads
    zero = zeros_like(g)
    return [None, unbroadcast(where(c, g, zero), a), unbroadcast(where(c, zero, g), b)]


defop("select_v2", infer=_select_infer, kernel=lambda c, a, b: np.where(c, a, b), vjp=_select_vjp,
      num_inputs=(3, 3), tflite=Builtin("SELECT_V2", "SelectV2Options"))


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


# -- the frontend functions ------------------------------------------------------------------------
def add(a, b): return _emit("add", a, b)
def sub(a, b): return _emit("sub", a, b)
def mul(a, b): return _emit("mul", a, b)
def div(a, b): return _emit("div", a, b)
def maximum(a, b): return _emit("maximum", a, b)
def minimum(a, b): return _emit("minimum", a, b)
def pow_(a, b): return _emit("pow", a, b)
def squared_difference(a, b): return _emit("squared_difference", a, b)
def neg(x): return _emit("neg", x)
def exp(x): return _emit("exp", x)
def log(x): return _emit("log", x)
def sqrt(x): return _emit("sqrt", x)
def rsqrt(x): return _emit("rsqrt", x)
def square(x): return _emit("square", x)
def abs_(x): return _emit("abs", x)
def sign(x): return _emit("sign", x)
def floor(x): return _emit("floor", x)
def sin(x): return _emit("sin", x)
def cos(x): return _emit("cos", x)
def tanh(x): return _emit("tanh", x)
def sigmoid(x): return _emit("logistic", x)
def relu(x): return _emit("relu", x)
def relu6(x): return _emit("relu6", x)
def gelu(x, approximate=False): return _emit("gelu", x, approximate=bool(approximate))
def less(a, b): return _emit("less", a, b)
def less_equal(a, b): return _emit("less_equal", a, b)
def greater(a, b): return _emit("greater", a, b)
def greater_equal(a, b): return _emit("greater_equal", a, b)
def equal(a, b): return _emit("equal", a, b)
def not_equal(a, b): return _emit("not_equal", a, b)
def logical_and(a, b): return _emit("logical_and", a, b)
def logical_not(x): return _emit("logical_not", x)
def zeros_like(x): return _emit("zeros_like", x)


def ones_like(x):
    """Ones shaped like `x`. TensorFlow Lite has no ONES_LIKE builtin, so this is FILL: of a
    constant shape (folded to a constant when small) or, with unknown dims, of SHAPE(x)."""
    from .shape import fill, shape_of
    fb = builder_of(x)
    dims = fb.const(np.asarray(x.shape, np.int32)) if None not in x.shape else shape_of(x)
    y = fill(dims, 1, x.dtype)
    if y.constant is None:
        y.info.shape = tuple(x.shape)
    return y


def where(cond, a, b):
    """Elementwise select: `a` where `cond`, else `b` (SELECT_V2, broadcasting)."""
    fb = builder_of(cond, a, b)
    like = a if hasattr(a, "fb") else b if hasattr(b, "fb") else None
    return fb.emit("select_v2", [fb.to_tensor(cond), fb.to_tensor(a, like), fb.to_tensor(b, like)])


def cast(x, dtype):
    from ..ir import dtype_name
    dtype = dtype_name(dtype)
    if x.dtype == dtype:
        return x
    return builder_of(x).emit("cast", [x], {"in_data_type": x.dtype, "out_data_type": dtype})
