"""The PyTorch importer's recurrent layers: aten.lstm / aten.gru / aten.rnn_tanh / aten.rnn_relu (nn.LSTM,
nn.GRU, nn.RNN: stacked, bidirectional, batch_first either way) as the frontend's loops over time.

Each layer and direction is litetrain/frontend/nn/recurrent.py's LSTM, GRU or SimpleRNN, run on the torch
parameters read as tensors: the same WHILE loop, tensor lists and gate arithmetic, so the gradient is
backpropagation through time in builtin ops. torch's layouts fit as they are: [gates * hidden, inputs]
weights, LSTM gates (i, f, g, o) and its two biases added, GRU gates (r, z, n) read in that order with
its two biases apart. The sequence length may be unknown when the capacity is given
(`lt.convert(..., max_sequence_length=)`); otherwise it is the input's.
"""
from __future__ import annotations

from ... import ops
from ...frontend.nn.recurrent import GRU, LSTM, SimpleRNN
from ...ops.tensor_list import list_stack
from .aten import TorchImportError, _V, _where, dropout, handles


class _TorchGRU(GRU):
    gate_blocks = (1, 0, 2)  # torch stores (r, z, n)


_CELLS = {"lstm": (LSTM, 4), "gru": (_TorchGRU, 3), "rnn_tanh": (SimpleRNN, 1), "rnn_relu": (SimpleRNN, 1)}


def _cell(kind, units, reverse, weights, has_biases, capacity):
    cls, _ = _CELLS[kind]
    extra = {"activation": "relu"} if kind == "rnn_relu" else {}
    layer = cls(units, return_sequences=True, go_backwards=reverse, max_sequence_length=capacity, **extra)
    w_ih, w_hh = weights[0], weights[1]
    b_ih, b_hh = (weights[2], weights[3]) if has_biases else (None, None)
    object.__setattr__(layer, "input_dim", w_ih.shape[1])
    object.__setattr__(layer, "kernel", w_ih)
    object.__setattr__(layer, "recurrent_kernel", w_hh)
    if kind == "gru":
        object.__setattr__(layer, "bias", b_ih)
        object.__setattr__(layer, "recurrent_bias", b_hh)
    else:
        object.__setattr__(layer, "bias", None if b_ih is None else ops.add(b_ih, b_hh))
    return layer


def _initial(state, index):
    """Layer-direction `index` of an initial state [layers * directions, batch, hidden]; None for zeros."""
    if state is None:
        return None
    if state.constant is not None and not state.constant.any():
        return None
    return ops.squeeze(ops.slice_(state, [index, 0, 0], [1, -1, -1]), [0])


def _rnn(kind, ctx, node, x, hx, params, has_biases, num_layers, dropout_p, train, bidirectional, batch_first):
    dirs = 2 if bidirectional else 1
    per = 4 if has_biases else 2
    if len(params) != num_layers * dirs * per:
        raise TorchImportError(f"{node.target} in {_where(node)} has {len(params)} weights, not the "
                               f"{num_layers * dirs * per} of its layers and directions: LSTM projections "
                               "(proj_size) are not supported; project the outputs with an nn.Linear")
    weights = [ctx.torch(p) for p in params]
    seq = ctx.torch(x)
    if seq.ndim != 3:
        raise TorchImportError(f"{node.target} in {_where(node)}: only batched [batch, time, features] (or "
                               f"[time, batch, features]) inputs are supported, got rank {seq.ndim}")
    if not batch_first:
        seq = ops.transpose(seq, [1, 0, 2])
    states = [None if getattr(h, "zeros", False) else ctx.torch(h)
              for h in (hx if isinstance(hx, (list, tuple)) else [hx])]
    units = weights[1].shape[1]
    capacity = seq.shape[1]  # (None: lt.convert's max_sequence_length; the later layers' inputs keep it)
    finals = [[] for _ in states]
    for layer in range(num_layers):
        outs = []
        for d in range(dirs):
            k = layer * dirs + d
            cell = _cell(kind, units, d == 1, weights[k * per:(k + 1) * per], has_biases, capacity)
            init = [_initial(s, k) for s in states]
            given = next((i for i in init if i is not None), None)
            init = None if given is None else [ops.zeros_like(given) if i is None else i for i in init]
            final, steps = cell.run(seq, initial_state=init)
            # a known number of steps stacks to a known time dim (later selects from its end work)
            stacked = list_stack(final[-1], steps if capacity is None else capacity)
            outs.append(ops.transpose(stacked, [1, 0, 2]))
            for j in range(len(states)):
                finals[j].append(final[1 + j])
        seq = outs[0] if dirs == 1 else ops.concat(outs, -1)
        if dropout_p and layer < num_layers - 1:
            seq = dropout(ctx, node, _V(seq), float(dropout_p)).t
    out = seq if batch_first else ops.transpose(seq, [1, 0, 2])
    return (_V(out), *[_V(ops.concat([ops.expand_dims(h, 0) for h in f], 0)) for f in finals])


@handles("lstm")
def _lstm(ctx, node, x, hx, params, *rest):
    return _rnn("lstm", ctx, node, x, hx, params, *rest)


@handles("gru")
def _gru(ctx, node, x, hx, params, *rest):
    return _rnn("gru", ctx, node, x, hx, params, *rest)


@handles("rnn_tanh")
def _rnn_tanh(ctx, node, x, hx, params, *rest):
    return _rnn("rnn_tanh", ctx, node, x, hx, params, *rest)


@handles("rnn_relu")
def _rnn_relu(ctx, node, x, hx, params, *rest):
    return _rnn("rnn_relu", ctx, node, x, hx, params, *rest)
