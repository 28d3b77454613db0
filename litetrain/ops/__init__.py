"""The primitive ops (TensorFlow Lite builtins with TFLite semantics) and the functions that build them.

Importing this package registers every op family (one file each: shape rule, kernel, gradient
rule and file mapping per op). The functions re-exported here (api.py, control.py, tensor_list.py)
add ops to the function being traced; models, layers and gradient rules are written with them.
"""
from . import (activation, conv, elementwise, gather_scatter, image, matmul, pool, quantize,  # noqa: F401
               random, reduce, shape, split, state)  # (registers the op families; TensorFlow's Flex ops, ops/tf,
# are registered when a file that has them is read: tflite/reader.py)
from ..core.trace import Tensor, TraceError
from .api import (abs_, add, arange, argmax, average_pool_2d, batch_matmul, broadcast_to, cast, concat,  # noqa: F401,F811
                  conv_2d, cos, depthwise_conv_2d, div, dynamic_update_slice, equal, exp, expand_dims, fill,
                  floor, fully_connected, gather, gather_nd, gelu, greater, greater_equal, hard_swish,
                  leaky_relu, less, less_equal, log, log_softmax, logical_and, logical_not, matmul, max_pool_2d,
                  maximum, minimum, mul, neg, not_equal, one_hot, ones_like, pad, pow_, random_uniform,
                  random_uniform_like, reduce_max, reduce_mean, reduce_min, reduce_prod, reduce_sum, relu, relu6,
                  reshape, resize_bilinear, resize_nearest_neighbor, rsqrt, scatter_nd, shape_of, sigmoid, sign, sin,
                  slice_, softmax, sqrt, square, squared_difference, squeeze, strided_slice, sub, tanh, tile, transpose, transpose_conv, where,
                  zeros_like)
from .control import cond, while_loop  # noqa: F401
from .tensor_list import (check_at_most, list_from_tensor, list_read, list_reserve, list_stack,  # noqa: F401
                          list_write)

abs = abs_  # noqa: A001
pow = pow_  # noqa: A001

_OPERATORS = {
    "__add__": add, "__sub__": sub, "__mul__": mul, "__truediv__": div, "__pow__": pow_,
    "__matmul__": matmul, "__lt__": less, "__le__": less_equal, "__gt__": greater, "__ge__": greater_equal,
    "__radd__": lambda a, b: add(b, a), "__rsub__": lambda a, b: sub(b, a),
    "__rmul__": lambda a, b: mul(b, a), "__rtruediv__": lambda a, b: div(b, a),
    "__rmatmul__": lambda a, b: matmul(b, a),
}
for _name, _fn in _OPERATORS.items():
    setattr(Tensor, _name, _fn)
Tensor.__neg__ = neg
Tensor.T = property(lambda self: transpose(self, list(range(self.ndim))[::-1]))
Tensor.reshape = lambda self, *dims: reshape(self, list(dims[0]) if len(dims) == 1 and isinstance(
    dims[0], (list, tuple)) else list(dims))

# NumPy on a traced tensor: its ufuncs become the matching ops (np.tanh(t) is ops.tanh(t), and
# `array + t` works as `t + array` does); anything else says to use lt.ops.
_UFUNCS = {
    "add": add, "subtract": sub, "multiply": mul, "divide": div, "true_divide": div, "power": pow_,
    "maximum": maximum, "minimum": minimum, "matmul": matmul, "negative": neg, "exp": exp, "log": log,
    "sqrt": sqrt, "square": square, "tanh": tanh, "sin": sin, "cos": cos, "absolute": abs_, "sign": sign,
    "floor": floor, "less": less, "less_equal": less_equal, "greater": greater, "greater_equal": greater_equal,
    "equal": equal, "not_equal": not_equal, "logical_and": logical_and, "logical_not": logical_not,
}


def _array_ufunc(self, ufunc, method, *inputs, **kwargs):
    fn = _UFUNCS.get(ufunc.__name__)
    if fn is None or method != "__call__" or kwargs:
        raise TraceError(f"NumPy's {ufunc.__name__}{'' if method == '__call__' else '.' + method} cannot run on "
                         "a traced tensor (it has no value until the model runs): use the functions of lt.ops")
    return fn(*inputs)


def _array_function(self, func, types, args, kwargs):
    raise TraceError(f"NumPy's {func.__name__} cannot run on a traced tensor (it has no value until the model "
                     "runs): use the functions of lt.ops (lt.ops.reduce_sum, lt.ops.reshape, ...)")


def _no_array(self, *args, **kwargs):
    raise TraceError("a traced tensor has no value until the model runs, so it cannot become a NumPy array: "
                     "use the functions of lt.ops on it")


Tensor.__array_ufunc__ = _array_ufunc
Tensor.__array_function__ = _array_function
Tensor.__array__ = _no_array
