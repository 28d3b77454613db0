"""The PyTorch importer's handlers for normalisation without statistics (layer and group norm),
attention (F.scaled_dot_product_attention; nn.MultiheadAttention and nn.TransformerEncoderLayer export to
it and to linear/view/transpose ops) and embeddings (see aten.py). The arithmetic is the frontend's:
litetrain/frontend/nn/norm.py and attention.py."""
from __future__ import annotations

import numpy as np

from ... import ops
from ...frontend.nn.attention import scaled_dot_product_attention
from ...frontend.nn.norm import normalize
from .aten import _P, TorchImportError, _V, _where, dropout, handles


def _affine(ctx, y, weight, bias):
    if weight is not None:
        y = ops.mul(y, ctx.torch(weight))
    return ops.add(y, ctx.torch(bias)) if bias is not None else y


@handles("layer_norm", "native_layer_norm")
def _layer_norm(ctx, node, x, normalized_shape, weight=None, bias=None, eps=1e-5, *rest):
    t = ctx.torch(x)
    k = len(normalized_shape)
    y = _V(_affine(ctx, normalize(t, list(range(t.ndim - k, t.ndim)), eps), weight, bias))
    return (y, None, None) if "native" in str(node.target) else y


@handles("group_norm", "native_group_norm")
def _group_norm(ctx, node, x, *args):
    """Channels are torch's dim 1; normalised channels-last: [N, ..., G, C/G] over all but N and G."""
    if "native" in str(node.target):  # (x, weight, bias, N, C, HxW, groups, eps)
        weight, bias, groups, eps = args[0], args[1], args[5], args[6]
    else:  # (x, groups, weight, bias, eps, cudnn)
        groups, weight, bias, eps = args[0], args[1] if len(args) > 1 else None, \
            args[2] if len(args) > 2 else None, args[3] if len(args) > 3 else 1e-5
    rank = x.t.ndim if isinstance(x, _V) else len(x.state.shape)
    if rank == 4:  # images: NHWC, as convolutions hold them
        t = ctx.nhwc(x)
    else:  # [N, C, ...] -> channels last
        t = ctx.torch(x)
        t = ops.transpose(t, [0] + list(range(2, rank)) + [1])
    c = t.shape[-1]
    middle = list(t.shape[1:-1])
    if None in middle or c is None:
        raise TorchImportError(f"group norm in {_where(node)} needs every dim but the batch known, got {t.shape}")
    grouped = ops.reshape(t, [-1, *middle, int(groups), c // int(groups)])
    axes = list(range(1, grouped.ndim - 2)) + [grouped.ndim - 1]
    y = _affine(ctx, ops.reshape(normalize(grouped, axes, eps), [-1, *middle, c]), weight, bias)
    if t.ndim == 4:
        out = _V(y, True)
    else:
        out = _V(ops.transpose(y, [0, y.ndim - 1] + list(range(1, y.ndim - 1))))
    return (out, None, None) if "native" in str(node.target) else out


@handles("scaled_dot_product_attention")
def _sdpa(ctx, node, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, *, scale=None, enable_gqa=False):
    q, k, v = ctx.torch(q), ctx.torch(k), ctx.torch(v)
    if enable_gqa and q.shape[-3] != k.shape[-3]:
        raise TorchImportError(f"grouped-query attention (enable_gqa) in {_where(node)} is not supported; repeat "
                               "the keys and values per head (repeat_interleave) before attention")
    mask = None if attn_mask is None else ctx.torch(attn_mask)
    drop = None
    if dropout_p:
        def drop(w, training=False):
            return dropout(ctx, node, _V(w), float(dropout_p)).t
    return _V(scaled_dot_product_attention(q, k, v, mask, bool(is_causal), scale, dropout=drop))


@handles("baddbmm")
def _baddbmm(ctx, node, bias, a, b, beta=1, alpha=1):
    y = ops.matmul(ctx.torch(a), ctx.torch(b))
    if alpha != 1:
        y = ops.mul(y, float(alpha))
    c = ctx.torch(bias)
    return _V(ops.add(y, ops.mul(c, float(beta)) if beta != 1 else c))


@handles("embedding")
def _embedding(ctx, node, weight, ids, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    """Rows by id: GATHER_ND, whose gradient is a scatter-add. torch gives the padding row no gradient:
    its positions take the row's value at conversion (a constant), so none flows back to it; the row
    stays as it was, as it does in torch unless an optimizer decays it (AdamW, weight_decay)."""
    if scale_grad_by_freq or sparse:
        raise TorchImportError(f"nn.Embedding with scale_grad_by_freq or sparse gradients in {_where(node)} is not "
                               "supported; create it without them")
    table = ctx.torch(weight)
    idx = ops.cast(ctx.torch(ids), "int32")
    rows = ops.gather_nd(table, ops.expand_dims(idx, -1))
    if padding_idx is not None and padding_idx >= 0:
        pad_row = weight.state.value[padding_idx] if isinstance(weight, _P) else None
        if pad_row is None:
            raise TorchImportError(f"an embedding with padding_idx in {_where(node)} must read a parameter")
        is_pad = ops.expand_dims(ops.equal(idx, ctx.fb.const(np.int32(padding_idx))), -1)
        rows = ops.where(is_pad, ctx.fb.const(np.asarray(pad_row, np.float32)), rows)
    return _V(rows)


@handles("_native_multi_head_attention", "_transformer_encoder_layer_fwd")
def _fused_fast_path(ctx, node, *args, **kw):
    raise TorchImportError(f"{node.target} in {_where(node)} is PyTorch's fused inference kernel (taken under "
                           "torch.no_grad() or inference_mode); export the model with gradients enabled, outside "
                           "no_grad, so attention is exported as its parts")
