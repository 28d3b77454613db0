"""Activations: relu, relu6, logistic, tanh, gelu, hard_swish, leaky_relu and prelu (TensorFlow Lite semantics).

Activations without a builtin that every LiteRT kernel set has (silu/swish, softplus, mish, and elu:
LiteRT's reference kernels lack ELU) are decompositions of these and the elementwise ops, in
litetrain/frontend/nn/activations.py."""
from __future__ import annotations

import math

import numpy as np

from ..core.ir import FLOAT_DTYPES
from ..core.registry import Builtin, defop
from ..core.trace import builder_of
from ._util import broadcast_shapes, typed, unary, unbroadcast
from .api import (add, div, equal, exp, greater, less, logical_and, minimum, mul, pow_, square, sub, tanh, where,
                  zeros_like)


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


unary("tanh", "TANH", np.tanh, lambda i, o, g: [mul(g[0], sub(1.0, square(o[0])))], inplace=True)
unary("logistic", "LOGISTIC", typed(lambda x: 0.5 * (1 + np.tanh(0.5 * x))),
      lambda i, o, g: [mul(g[0], mul(o[0], sub(1.0, o[0])))])
unary("relu", "RELU", typed(lambda x: np.maximum(x, 0)),
      lambda i, o, g: [where(greater(i[0], 0.0), g[0], zeros_like(g[0]))],
      inplace=lambda x, out: np.maximum(x, 0, out=out))
unary("relu6", "RELU6", typed(lambda x: np.clip(x, 0, 6)),
      lambda i, o, g: [where(logical_and(greater(i[0], 0.0), less(i[0], 6.0)), g[0], zeros_like(g[0]))],
      inplace=lambda x, out: np.clip(x, 0, 6, out=out))
unary("gelu", "GELU", _gelu_kernel, _gelu_vjp, "GeluOptions", {"approximate": "bool"},
       {"approximate": False})


# -- activations of mobile CNNs -------------------------------------------------------------------------
def _float_same(attrs, inputs):
    x, = inputs
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"takes float input, got {x.dtype}")
    return [(x.dtype, x.shape)]


def _hard_swish_kernel(x):
    return (x * np.clip(x + 3, 0, 6) / 6).astype(x.dtype, copy=False)


def _hard_swish_vjp(inputs, outputs, grads):
    x, = inputs
    g, = grads
    slope = where(less(x, -3.0), zeros_like(x), where(greater(x, 3.0), 1.0, add(mul(x, 1.0 / 3.0), 0.5)))
    return [mul(g, slope)]


def _leaky_relu_vjp(inputs, outputs, grads, alpha=0.2):
    x, = inputs
    g, = grads
    return [where(greater(x, 0.0), g, mul(g, float(alpha)))]


defop("hard_swish", infer=_float_same, kernel=_hard_swish_kernel, vjp=_hard_swish_vjp, num_inputs=(1, 1),
      tflite=Builtin("HARD_SWISH", "HardSwishOptions"))
defop("leaky_relu", infer=_float_same, vjp=_leaky_relu_vjp, num_inputs=(1, 1), attrs={"alpha": 0.2},
      kernel=lambda x, alpha=0.2: np.where(x > 0, x, x * np.asarray(alpha, x.dtype)).astype(x.dtype, copy=False),
      tflite=Builtin("LEAKY_RELU", "LeakyReluOptions", {"alpha": "float"}))



# -- PRELU ------------------------------------------------------------------------------------------------
def _prelu_infer(attrs, inputs):
    x, alpha = inputs
    if x.dtype not in FLOAT_DTYPES or alpha.dtype != x.dtype:
        raise ValueError("prelu takes float input and alpha of one dtype")
    return [(x.dtype, broadcast_shapes(x.shape, alpha.shape))]


def _prelu_vjp(inputs, outputs, grads):
    x, alpha = inputs
    g, = grads
    positive = greater(x, builder_of(x).const(0.0, x.dtype))
    return [unbroadcast(where(positive, g, mul(g, alpha)), x),
            unbroadcast(mul(g, minimum(x, builder_of(x).const(0.0, x.dtype))), alpha)]


defop("prelu", infer=_prelu_infer, kernel=lambda x, a: np.where(x >= 0, x, x * a).astype(x.dtype),
      vjp=_prelu_vjp, num_inputs=(2, 2), tflite=Builtin("PRELU"))
