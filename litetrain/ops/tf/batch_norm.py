"""TensorFlow's fused batch norm and its gradient (FusedBatchNormV3, FusedBatchNormGradV3), as
Keras's BatchNormalization leaves them in a training file.

Written from TensorFlow's op definitions (nn_ops.cc) and CPU kernels (fused_batch_norm_op.cc), in
the same float32 steps: statistics over every dim but the channels' (4-D or 5-D input, channels last
or second), the variance biased for normalising and Bessel-corrected for the running average,
y = (x - mean) * (rsqrt(var + epsilon) * scale) + offset.
- training (is_training): outputs y, the new running mean and variance (the batch's, or mixed
  into the inputs' with exponential_avg_factor), the batch mean and biased variance (what the
  gradient reads back: reserve_space_1/2) and reserve_space_3 (a scalar TensorFlow's CPU kernel
  leaves unused);
- inference: normalises with the given mean and variance and passes them through.
The gradient is the batch-statistics one when is_training, else the one with the statistics held
fixed ("freeze" gradient). T may be float16 (computed in float32, as U), U must be float32.
"""
from __future__ import annotations

import numpy as np

from .common import check_t, tf_op

FORMATS = ("NHWC", "NCHW", "NDHWC", "NCDHW")
BN_ATTRS = {"T": "float32", "U": "float32", "epsilon": 1e-4, "exponential_avg_factor": 1.0, "data_format": "NHWC",
            "is_training": True}
BN_GRAD_ATTRS = {"T": "float32", "U": "float32", "epsilon": 1e-4, "data_format": "NHWC", "is_training": True}
F32 = np.float32


def _layout(op, data_format, rank):
    if data_format not in FORMATS:
        raise ValueError(f"{op}: data_format {data_format!r} is not supported (it takes {', '.join(FORMATS)})")
    if rank not in (4, 5) or (rank == 5) != (len(data_format) == 5):
        raise ValueError(f"{op}: x must be {len(data_format)}-D for data_format {data_format}, got rank {rank}")
    return data_format.endswith("C")


def _check_types(op, T, U):
    if T not in ("float32", "float16") or U != "float32":
        raise ValueError(f"{op}: T={T}, U={U} is not supported (T float32 or float16, U float32)")


def _rows(x, last):
    """x as [rest, channels] in float32 (channels last), and how to put a result back."""
    moved = x if last else np.moveaxis(x, 1, -1)
    shape = moved.shape
    back = (lambda r: r.reshape(shape)) if last else (lambda r: np.moveaxis(r.reshape(shape), -1, 1))
    return moved.reshape(-1, shape[-1]).astype(F32, copy=False), back


def _vector(v, channels, what, op, allow_empty=False):
    v = np.asarray(v)
    if v.ndim != 1 or (v.shape[0] != channels and not (allow_empty and v.shape[0] == 0)):
        raise ValueError(f"{op}: {what} must be [{channels}] (the channels of x), got {list(v.shape)}")
    if v.dtype != F32:
        raise ValueError(f"{op}: {what} must be float32 (U), got {v.dtype}")
    return v


def _batch_norm(x, scale, offset, mean, variance, T="float32", U="float32", epsilon=1e-4,
                exponential_avg_factor=1.0, data_format="NHWC", is_training=True):
    op = "FusedBatchNormV3"
    _check_types(op, T, U)
    last = _layout(op, data_format, x.ndim)
    flat, back = _rows(x, last)
    rest, c = flat.shape
    scale, offset = _vector(scale, c, "scale", op), _vector(offset, c, "offset", op)
    factor, eps = F32(exponential_avg_factor), F32(epsilon)
    mixed = not is_training or factor != 1
    mean = _vector(mean, c, "mean", op, allow_empty=not mixed)
    variance = _vector(variance, c, "variance", op, allow_empty=not mixed)
    if not is_training:
        y = (flat - mean) * ((F32(1) / np.sqrt(variance + eps)) * scale) + offset
        return back(y).astype(x.dtype), mean.copy(), variance.copy(), mean.copy(), variance.copy(), F32(0)
    if rest == 0:
        nan = np.full(c, np.nan, F32)
        return x.copy(), nan, nan.copy(), nan.copy(), nan.copy(), F32(0)
    batch_mean = flat.sum(axis=0, dtype=F32) * (F32(1) / F32(rest))
    centered = flat - batch_mean
    batch_var = np.square(centered).sum(axis=0, dtype=F32) * (F32(1) / F32(rest))
    y = centered * ((F32(1) / np.sqrt(batch_var + eps)) * scale) + offset
    adjust = F32(rest) / F32(max(rest - 1, 1))  # Bessel's correction for the running variance
    if factor == 1:
        new_mean, new_var = batch_mean.copy(), batch_var * adjust
    else:
        new_mean = (F32(1) - factor) * mean + factor * batch_mean
        new_var = (F32(1) - factor) * variance + (factor * adjust) * batch_var
    return back(y).astype(x.dtype), new_mean, new_var, batch_mean, batch_var, F32(0)


def _batch_norm_infer(attrs, inputs):
    x = inputs[0]
    _check_types("FusedBatchNormV3", attrs["T"], attrs["U"])
    check_t(attrs, x)
    if len(x.shape) not in (4, 5):
        raise ValueError(f"x must be 4-D or 5-D, got {list(x.shape)}")
    last = _layout("FusedBatchNormV3", attrs["data_format"], len(x.shape))
    c = x.shape[-1] if last else x.shape[1]
    for what, t in zip(("scale", "offset", "mean", "variance"), inputs[1:]):
        if len(t.shape) != 1 or t.dtype != "float32":
            raise ValueError(f"{what} must be a float32 vector, got {t.dtype}{list(t.shape)}")
    if c is None:
        c = inputs[1].shape[0]
    return [(x.dtype, x.shape)] + [("float32", (c,))] * 4 + [("float32", ())]


def _batch_norm_grad(dy, x, scale, saved_mean, saved_var, reserve_space_3, T="float32", U="float32", epsilon=1e-4,
                     data_format="NHWC", is_training=True):
    """FusedBatchNormGradV3: (x_backprop, scale_backprop, offset_backprop, two empty placeholders).
    is_training: saved_mean/var are the batch's (the forward's reserve_space_1/2); else the
    population statistics the forward normalised with."""
    op = "FusedBatchNormGradV3"
    _check_types(op, T, U)
    last = _layout(op, data_format, x.ndim)
    if dy.shape != x.shape:
        raise ValueError(f"{op}: y_backprop {list(dy.shape)} and x {list(x.shape)} must have one shape")
    g, back = _rows(dy, last)
    flat, _ = _rows(x, last)
    rest, c = flat.shape
    scale = _vector(scale, c, "scale", op)
    mean, var = _vector(saved_mean, c, "reserve_space_1", op), _vector(saved_var, c, "reserve_space_2", op)
    empty = np.zeros(0, F32)
    if rest == 0:
        return x.copy(), np.zeros(c, F32), np.zeros(c, F32), empty, empty.copy()
    centered = flat - mean
    coef0 = F32(1) / np.sqrt(var + F32(epsilon))
    offset_bp = g.sum(axis=0, dtype=F32)
    if not is_training:
        scale_bp = (g * centered).sum(axis=0, dtype=F32) * coef0
        dx = g * (coef0 * scale)
        return back(dx).astype(x.dtype), scale_bp, offset_bp, empty, empty.copy()
    scale_bp = (g * (centered * coef0)).sum(axis=0, dtype=F32)
    g_centered = g - offset_bp * (F32(1) / F32(rest))
    g_x_mean = (g * centered).sum(axis=0, dtype=F32) / F32(rest)
    dx = (scale * coef0) * (g_centered - centered * (np.square(coef0) * g_x_mean))
    return back(dx).astype(x.dtype), scale_bp, offset_bp, empty, empty.copy()


def _batch_norm_grad_infer(attrs, inputs):
    dy, x = inputs[0], inputs[1]
    _check_types("FusedBatchNormGradV3", attrs["T"], attrs["U"])
    check_t(attrs, x)
    if len(x.shape) not in (4, 5) or len(dy.shape) != len(x.shape):
        raise ValueError(f"y_backprop and x must be 4-D or 5-D of one rank, got {list(dy.shape)} and {list(x.shape)}")
    last = _layout("FusedBatchNormGradV3", attrs["data_format"], len(x.shape))
    c = x.shape[-1] if last else x.shape[1]
    if c is None:
        c = inputs[2].shape[0]
    return [(x.dtype, x.shape), ("float32", (c,)), ("float32", (c,)), ("float32", (0,)), ("float32", (0,))]


tf_op("FusedBatchNormV3", infer=_batch_norm_infer, kernel=_batch_norm, num_inputs=(5, 5), attrs=BN_ATTRS)
tf_op("FusedBatchNormGradV3", infer=_batch_norm_grad_infer, kernel=_batch_norm_grad, num_inputs=(6, 6),
      attrs=BN_GRAD_ATTRS)
