"""Matrix products: fully_connected (TFLite's dense layer) and batch_matmul."""
from __future__ import annotations

import numpy as np

from ..core.registry import Builtin, defop
from ._util import broadcast_shapes, fused, no_fused_activation, unbroadcast
from .api import batch_matmul, reduce_sum, reshape, shape_of


def _fc_infer(attrs, inputs):
    x, w = inputs[0], inputs[1]
    b = inputs[2] if len(inputs) > 2 else None
    if len(w.shape) != 2:
        raise ValueError(f"weights must be [units, input_dim], got rank {len(w.shape)}")
    units, depth = w.shape
    if x.dtype != w.dtype or (b is not None and b.dtype != x.dtype):
        raise ValueError("input, weights and bias must have one dtype")
    if x.shape and x.shape[-1] is not None and depth is not None and x.shape[-1] != depth:
        raise ValueError(f"input depth {x.shape[-1]} does not match weights' input dim {depth}")
    if b is not None and tuple(b.shape) not in ((units,), (None,)):
        raise ValueError(f"bias must be [{units}], got {list(b.shape)}")
    if attrs["keep_num_dims"]:
        return [(x.dtype, tuple(x.shape[:-1]) + (units,))]
    batch = None
    if None not in x.shape and depth:
        batch = int(np.prod(x.shape)) // depth
    return [(x.dtype, (batch, units))]


def _fc_kernel(x, w, b=None, fused_activation_function="NONE", keep_num_dims=False,
               weights_format="DEFAULT", asymmetric_quantize_inputs=False):
    depth = w.shape[1]
    y = np.dot(x.reshape(-1, depth), w.T)  # BLAS on the transposed view, no copy
    if b is not None:
        y += b
    if keep_num_dims:
        y = y.reshape(x.shape[:-1] + (w.shape[0],))
    return fused(y.astype(x.dtype, copy=False), fused_activation_function)


def _fc_vjp(inputs, outputs, grads, **attrs):
    no_fused_activation(attrs, "fully_connected")
    x, w = inputs[0], inputs[1]
    g, = grads
    units, depth = w.shape
    g2 = reshape(g, [-1, units]) if attrs["keep_num_dims"] and g.ndim != 2 else g
    x2 = reshape(x, [-1, depth]) if x.ndim != 2 else x
    dx = batch_matmul(g2, w)
    if tuple(dx.shape) != tuple(x.shape):
        dx = reshape(dx, [-1 if d is None else d for d in x.shape]) if sum(
            d is None for d in x.shape) <= 1 else reshape(dx, _shape(x), known_shape=x.shape)
    dw = batch_matmul(g2, x2, adj_x=True)
    result = [dx, dw]
    if len(inputs) > 2:
        result.append(None if inputs[2] is None else reduce_sum(g2, [0]))
    return result


def _shape(x):
    return shape_of(x)


defop("fully_connected", infer=_fc_infer, kernel=_fc_kernel, vjp=_fc_vjp, num_inputs=(2, 3),
      attrs={"fused_activation_function": "NONE", "keep_num_dims": False,
             "weights_format": "DEFAULT", "asymmetric_quantize_inputs": False},
      tflite=Builtin("FULLY_CONNECTED", "FullyConnectedOptions",
                     {"fused_activation_function": "activation", "keep_num_dims": "bool",
                      "weights_format": "weights_format", "asymmetric_quantize_inputs": "bool"}))


def _bmm_infer(attrs, inputs):
    a, b = inputs
    if a.dtype != b.dtype:
        raise ValueError(f"operands must have one dtype, got {a.dtype} and {b.dtype}")
    if len(a.shape) < 2 or len(b.shape) < 2:
        raise ValueError("operands must have rank >= 2")
    m, k1 = a.shape[-2:][::-1] if attrs["adj_x"] else a.shape[-2:]
    k2, n = b.shape[-2:][::-1] if attrs["adj_y"] else b.shape[-2:]
    if k1 is not None and k2 is not None and k1 != k2:
        raise ValueError(f"contraction dims differ: {k1} and {k2}")
    batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
    return [(a.dtype, batch + (m, n))]


def _bmm_kernel(a, b, adj_x=False, adj_y=False, asymmetric_quantize_inputs=False):
    if adj_x:
        a = np.swapaxes(a, -1, -2)
    if adj_y:
        b = np.swapaxes(b, -1, -2)
    if a.ndim == 2 and b.ndim == 2:
        return np.dot(a, b)  # BLAS reads transposed views as they are; matmul may copy or loop
    return np.matmul(a, b)


def _bmm_vjp(inputs, outputs, grads, adj_x=False, adj_y=False, asymmetric_quantize_inputs=False):
    a, b = inputs
    g, = grads
    # y = A B with A = a or a^T, B = b or b^T;  dA = g B^T, dB = A^T g
    if not adj_x:
        da = batch_matmul(g, b, adj_y=not adj_y)
    else:  # a = A^T: da = B g^T
        da = batch_matmul(b, g, adj_x=adj_y, adj_y=True)
    if not adj_y:
        db = batch_matmul(a, g, adj_x=not adj_x)
    else:  # b = B^T: db = g^T A
        db = batch_matmul(g, a, adj_x=True, adj_y=adj_x)
    return [unbroadcast(da, a), unbroadcast(db, b)]


defop("batch_matmul", infer=_bmm_infer, kernel=_bmm_kernel, vjp=_bmm_vjp, num_inputs=(2, 2),
      attrs={"adj_x": False, "adj_y": False, "asymmetric_quantize_inputs": False},
      tflite=Builtin("BATCH_MATMUL", "BatchMatMulOptions",
                     {"adj_x": "bool", "adj_y": "bool", "asymmetric_quantize_inputs": "bool"}))
