"""Activations written as decompositions of builtin ops: silu/swish, softplus, mish, elu, hard_sigmoid.

TensorFlow Lite has no SOFTPLUS, SILU or MISH builtin, and LiteRT's reference kernels lack ELU, so
each is a few elementwise ops whose gradients autodiff composes (LOGISTIC, EXP, LOG, TANH, SELECT_V2,
...): a file that uses them still runs on stock LiteRT. Each follows PyTorch's definition, and is
compared with torch.nn.functional's value and autograd gradient in tests/test_layers_model_reach.py.
"""
from __future__ import annotations

from ... import ops


def silu(x):
    """x * sigmoid(x) (also called swish)."""
    return ops.mul(x, ops.sigmoid(x))


def softplus(x, beta=1.0, threshold=20.0):
    """log(1 + exp(beta x)) / beta, and x itself where beta x > threshold, as torch.nn.Softplus. Written
    with exp of min(beta x, threshold), so neither the value nor the gradient (sigmoid(beta x)) overflows."""
    beta, threshold = float(beta), float(threshold)
    bx = x if beta == 1.0 else ops.mul(x, beta)
    soft = ops.log(ops.add(ops.exp(ops.minimum(bx, threshold)), 1.0))
    if beta != 1.0:
        soft = ops.mul(soft, 1.0 / beta)
    return ops.where(ops.greater(bx, threshold), x, soft)


def mish(x):
    """x * tanh(softplus(x))."""
    return ops.mul(x, ops.tanh(softplus(x)))


def elu(x, alpha=1.0):
    """x where x > 0, else alpha * (exp(x) - 1) (exp of min(x, 0), so large inputs never overflow)."""
    neg = ops.sub(ops.exp(ops.minimum(x, 0.0)), 1.0)
    if float(alpha) != 1.0:
        neg = ops.mul(neg, float(alpha))
    return ops.where(ops.greater(x, 0.0), x, neg)


def hard_sigmoid(x):
    """relu6(x + 3) / 6, as torch.nn.Hardsigmoid."""
    return ops.mul(ops.relu6(ops.add(x, 3.0)), 1.0 / 6.0)
