"""Attention: scaled dot-product attention and the MultiHeadAttention layer, as BATCH_MATMUL + SOFTMAX.

    scores = q k^T * scale (scale 1 / sqrt(depth) by default); masked scores are pushed to -1e30;
    weights = softmax(scores) (over the keys); out = weights v

A boolean mask is true where a query may attend to a key (PyTorch's `attn_mask` of bools, Keras's
`attention_mask`); a float mask is added to the scores (PyTorch's float `attn_mask`, -inf for "never").
`causal=True` lets query i attend to keys 0..i only (PyTorch's `is_causal`: the top-left triangle).
MultiHeadAttention's `padding_mask` ([batch, keys], true for real tokens, as the recurrent layers'
`mask`) hides padded keys. Everything is builtin ops: the gradient is BATCH_MATMULs and SOFTMAX's rule.
"""
from __future__ import annotations

import math

import numpy as np

from ... import ops
from ...core.trace import builder_of
from .core import Dense, Layer
from .norm import Dropout

MASKED = -1e30  # the score of a masked key: exp underflows to 0 after softmax subtracts the row's max


def causal_mask(q, k):
    """[L, S] bool, true where key j <= query i (constant when both lengths are known)."""
    fb = builder_of(q)
    lq, lk = q.shape[-2], k.shape[-2]
    if lq is not None and lk is not None:
        return fb.const(np.tril(np.ones((lq, lk), bool)))
    rows = ops.arange(fb.const(np.int32(0)), _dim(q, -2))
    cols = ops.arange(fb.const(np.int32(0)), _dim(k, -2))
    return ops.greater_equal(ops.expand_dims(rows, 1), ops.expand_dims(cols, 0))


def _dim(t, axis):
    return ops.gather(ops.shape_of(t), builder_of(t).const(np.int32(axis % t.ndim)))


def scaled_dot_product_attention(q, k, v, mask=None, causal=False, scale=None, dropout=None, training=False,
                                 return_weights=False):
    """softmax(q k^T * scale + mask) v for q [..., L, E], k [..., S, E], v [..., S, Ev] (leading dims
    broadcast); `mask` bool or float, broadcastable to [..., L, S]; `dropout` a Dropout layer applied to
    the weights when training."""
    if q.shape[-1] is None and scale is None:
        raise ValueError("scaled_dot_product_attention needs the query's last dim to scale the scores (or scale=)")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    scores = ops.mul(ops.batch_matmul(q, k, adj_y=True), scale)
    if causal:
        scores = ops.where(causal_mask(q, k), scores, MASKED)
    if mask is not None:
        if mask.dtype == "bool":
            scores = ops.where(mask, scores, MASKED)
        else:
            scores = ops.add(scores, ops.cast(mask, scores.dtype))
    weights = ops.softmax(scores)
    if dropout is not None:
        weights = dropout(weights, training=training)
    out = ops.batch_matmul(weights, v)
    return (out, weights) if return_weights else out


class MultiHeadAttention(Layer):
    """Keras's MultiHeadAttention: query, key and value projected to `num_heads` heads of `key_dim`
    (values: `value_dim`, default key_dim), scaled dot-product attention per head, heads concatenated
    and projected to `output_dim` (default: the query's features). Called as
    `mha(query, value=None, key=None, attention_mask=None, padding_mask=None, causal=False)`: value
    defaults to query (self-attention), key to value. Inputs are [batch, time, features]."""

    def __init__(self, num_heads, key_dim, value_dim=None, output_dim=None, use_bias=True, dropout=0.0, name=None):
        super().__init__(name or "multi_head_attention")
        self.num_heads, self.key_dim = int(num_heads), int(key_dim)
        self.value_dim = int(value_dim or key_dim)
        self.output_dim = output_dim
        self.use_bias = use_bias
        self.query = Dense(self.num_heads * self.key_dim, use_bias=use_bias)
        self.key = Dense(self.num_heads * self.key_dim, use_bias=use_bias)
        self.value = Dense(self.num_heads * self.value_dim, use_bias=use_bias)
        self.dropout = Dropout(dropout) if dropout else None

    def _heads(self, x, depth):
        """[B, T, H * depth] -> [B, H, T, depth]."""
        if x.shape[1] is not None:
            split = ops.reshape(x, [-1, x.shape[1], self.num_heads, depth])
        else:
            lead = ops.slice_(ops.shape_of(x), [0], [2])
            shape = ops.concat([lead, builder_of(x).const(np.int32([self.num_heads, depth]))], 0)
            split = ops.reshape(x, shape, known_shape=[x.shape[0], None, self.num_heads, depth])
        return ops.transpose(split, [0, 2, 1, 3])

    def __call__(self, query, value=None, key=None, attention_mask=None, padding_mask=None, causal=False,
                 training=False, return_weights=False):
        value = query if value is None else value
        key = value if key is None else key
        for what, t in (("query", query), ("key", key), ("value", value)):
            if t.ndim != 3 or t.shape[-1] is None:
                raise ValueError(f"{self.path or 'MultiHeadAttention'}: {what} must be [batch, time, features] with "
                                 f"known features, got {list(t.shape)}")
        if "output" not in self.__dict__:
            self.output = Dense(int(self.output_dim or query.shape[-1]), use_bias=self.use_bias)
        q = self._heads(self.query(query), self.key_dim)
        k = self._heads(self.key(key), self.key_dim)
        v = self._heads(self.value(value), self.value_dim)
        mask = None
        if attention_mask is not None:  # [T, S] or [B, T, S]: one for every head
            mask = _as_bool(attention_mask)
            mask = ops.expand_dims(mask, 1) if mask.ndim == 3 else mask
        if padding_mask is not None:  # [B, S] -> [B, 1, 1, S]
            keys = ops.expand_dims(ops.expand_dims(_as_bool(padding_mask), 1), 1)
            mask = keys if mask is None else ops.logical_and(mask, keys)
        out, weights = scaled_dot_product_attention(q, k, v, mask, causal, dropout=self.dropout, training=training,
                                                    return_weights=True)
        out = ops.transpose(out, [0, 2, 1, 3])  # [B, T, H, Dv]
        t = out.shape[1]
        if t is not None:
            merged = ops.reshape(out, [-1, t, self.num_heads * self.value_dim])
        else:
            lead = ops.slice_(ops.shape_of(out), [0], [2])
            shape = ops.concat([lead, builder_of(out).const(np.int32([self.num_heads * self.value_dim]))], 0)
            merged = ops.reshape(out, shape, known_shape=[out.shape[0], None, self.num_heads * self.value_dim])
        y = self.output(merged)
        return (y, weights) if return_weights else y


def _as_bool(mask):
    return mask if mask.dtype == "bool" else ops.not_equal(mask, builder_of(mask).const(0, mask.dtype))
