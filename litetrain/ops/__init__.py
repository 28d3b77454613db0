"""The primitive ops (TensorFlow Lite builtins with TFLite semantics) and their frontend functions.

Importing this package registers every op family. The functions below build ops on symbolic
tensors while a model is traced; they are also what gradient rules are written with.
"""
from . import elementwise, matmul, reduce, shape, state  # noqa: F401  (registers the ops)
from .elementwise import (abs_, add, cast, cos, div, equal, exp, floor, gelu, greater, greater_equal,
                          less, less_equal, log, logical_and, logical_not, maximum, minimum, mul, neg,
                          not_equal, ones_like, pow_, relu, relu6, rsqrt, sigmoid, sign, sin, sqrt, square,
                          squared_difference, sub, tanh, where, zeros_like)
from .matmul import batch_matmul, fully_connected, matmul
from .reduce import (argmax, log_softmax, reduce_max, reduce_mean, reduce_min, reduce_prod, reduce_sum,
                     softmax)
from .shape import (broadcast_to, concat, expand_dims, fill, gather, one_hot, pad, reshape, shape_of,
                    slice_, squeeze, transpose)
from . import conv, pool, random  # noqa: F401,E402  (convolution, pooling and random families)
from .conv import conv_2d, depthwise_conv_2d, transpose_conv
from .pool import average_pool_2d, hard_swish, leaky_relu, max_pool_2d
from .random import random_uniform, random_uniform_like
from . import control, sequence  # noqa: F401,E402  (while/if, tensor-list and embedding ops)
from .sequence import arange, dynamic_update_slice, gather_nd, scatter_nd
from . import interop, tf_ops  # noqa: F401,E402  (builtins real files use; TensorFlow's Flex ops)
from .interop import strided_slice, tile
from ..trace import Tensor

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
Tensor.reshape = lambda self, *shape: reshape(self, list(shape[0]) if len(shape) == 1 and isinstance(
    shape[0], (list, tuple)) else list(shape))

from ..loops import (cond, list_from_tensor, list_read, list_reserve, list_stack, list_write,  # noqa: E402
                     while_loop)
