"""The ONNX importer's recurrent ops: LSTM, GRU and RNN (forward, reverse or bidirectional, either layout)
as the frontend's loops over time (litetrain/frontend/nn/recurrent.py): the same WHILE loop, tensor lists and
gate arithmetic, so the gradient is backpropagation through time in builtin ops.

ONNX's layouts fit the frontend's: W [directions, gates * hidden, inputs] and R [.., gates * hidden, hidden]
per direction are FULLY_CONNECTED's [units, inputs]. LSTM's gates (i, o, f, c) are reordered to the
frontend's (i, f, g, o) in the graph (so the runtime's fused LSTM step applies) and its two biases added;
GRU's (z, r, h) are the frontend's order, with its two biases apart (linear_before_reset=1, as PyTorch
exports). sequence_lens becomes the layers' mask (outputs past a sequence's end are zeros, Y_h its last
real step). The sequence length may be unknown when lt.convert(..., max_sequence_length=) gives the capacity.
"""
from __future__ import annotations

import numpy as np

from ... import ops
from ...frontend.nn.recurrent import GRU, LSTM, SimpleRNN
from ...ops.tensor_list import list_stack
from .graph import V, handles

_DEFAULT_ACTIVATIONS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}
_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
_LSTM_ORDER = (0, 2, 3, 1)  # ONNX's (i, o, f, c) blocks in the frontend's order (i, f, g, o)


def _direction(t, d, dirs):
    """Direction d of a [directions, ...] tensor."""
    if dirs == 1:
        return ops.squeeze(t, [0])
    begin = [d] + [0] * (t.ndim - 1)
    return ops.squeeze(ops.slice_(t, begin, [1] + [-1] * (t.ndim - 1)), [0])


def _blocks(t, order, units, axis=0):
    """The gate blocks of t (each `units` long along `axis`) in `order`."""
    parts = []
    for k in order:
        begin = [0] * t.ndim
        size = [-1] * t.ndim
        begin[axis], size[axis] = k * units, units
        parts.append(ops.slice_(t, begin, size))
    return ops.concat(parts, axis)


def _check(ctx, node, p, hidden):
    kind = node.op
    acts = node.attr("activations")
    allowed = [_DEFAULT_ACTIVATIONS[kind]] + ([["Relu"]] if kind == "RNN" else [])
    dirs = 2 if node.attr("direction", "forward") == "bidirectional" else 1
    if acts is not None and list(acts) not in [a * dirs for a in allowed]:
        raise node.refuse(f"activations {list(acts)}", f"only the default ones {_DEFAULT_ACTIVATIONS[kind]} "
                          f"(and Relu for RNN) are supported")
    if node.attr("clip") is not None:
        raise node.refuse("cell clipping (clip=)", "export the layer without clipping")
    if node.attr("input_forget", 0):
        raise node.refuse("input_forget=1 (coupled input and forget gates)")
    if kind == "GRU" and not node.attr("linear_before_reset", 0):
        raise node.refuse("linear_before_reset=0 (the reset gate before the recurrent matmul)",
                          "only linear_before_reset=1, as torch.nn.GRU exports, is supported")
    if p is not None and (ctx.const(p) is None or np.any(ctx.const(p))):
        raise node.refuse("LSTM peepholes (input P)", "export an LSTM without peepholes")
    if hidden is None:
        raise node.refuse("no hidden_size attribute")
    return acts, dirs


def _initial(ctx, h, d, dirs, layout):
    """Direction d of an initial state, [batch, hidden]; None for zeros."""
    if h is None:
        return None
    c = ctx.const(h)
    if c is not None and not np.any(c):
        return None
    t = ctx.plain(h)
    if layout:  # [batch, directions, hidden]
        t = ops.transpose(t, [1, 0, 2])
    return _direction(t, d, dirs)


def _cell(kind, units, reverse, capacity, acts, w, r, b):
    """A frontend layer running on ONNX's weights of one direction (tensors)."""
    if kind == "LSTM":
        layer = LSTM(units, return_sequences=True, go_backwards=reverse, max_sequence_length=capacity)
        w, r = _blocks(w, _LSTM_ORDER, units), _blocks(r, _LSTM_ORDER, units)
    elif kind == "GRU":
        layer = GRU(units, return_sequences=True, go_backwards=reverse, max_sequence_length=capacity)
    else:
        activation = "relu" if acts and acts[0] == "Relu" else "tanh"
        layer = SimpleRNN(units, activation=activation, return_sequences=True, go_backwards=reverse,
                          max_sequence_length=capacity)
    g = _GATES[kind] * units
    object.__setattr__(layer, "input_dim", w.shape[1])
    object.__setattr__(layer, "kernel", w)
    object.__setattr__(layer, "recurrent_kernel", r)
    if b is None:
        object.__setattr__(layer, "bias", None)
        if kind == "GRU":
            object.__setattr__(layer, "recurrent_bias", None)
        return layer
    wb, rb = ops.slice_(b, [0], [g]), ops.slice_(b, [g], [g])
    if kind == "GRU":
        object.__setattr__(layer, "bias", wb)
        object.__setattr__(layer, "recurrent_bias", rb)
    else:
        bias = ops.add(wb, rb)
        object.__setattr__(layer, "bias", _blocks(bias, _LSTM_ORDER, units) if kind == "LSTM" else bias)
    return layer


def _mask(ctx, seq, lens):
    """[batch, time] true for the real steps of each sequence, or None when every step is real."""
    if lens is None:
        return None
    c = ctx.const(lens)
    if c is not None and seq.shape[1] is not None and np.all(c == seq.shape[1]):
        return None
    steps = ops.gather(ops.shape_of(seq), ctx.fb.const(np.int32(1)))
    t = ops.arange(ctx.fb.const(np.int32(0)), steps, ctx.fb.const(np.int32(1)))
    return ops.less(ops.expand_dims(t, 0), ops.expand_dims(ops.cast(ctx.plain(lens), "int32"), 1))


@handles("LSTM", "GRU", "RNN")
def _recurrent(ctx, node, x, w, r, b=None, lens=None, h0=None, c0=None, p=None):
    kind = node.op
    units = node.attr("hidden_size")
    acts, dirs = _check(ctx, node, p, units)
    layout = int(node.attr("layout", 0))
    seq = ctx.plain(x)
    if seq.ndim != 3:
        raise node.refuse(f"a rank-{seq.ndim} input", "the input must be [time, batch, features] (or batch first)")
    if not layout:
        seq = ops.transpose(seq, [1, 0, 2])  # [batch, time, features]
    mask = _mask(ctx, seq, lens)
    wt, rt = ctx.plain(w), ctx.plain(r)
    bt = None if b is None else ctx.plain(b)
    capacity = seq.shape[1]
    outs, finals = [], [[], []]
    for d in range(dirs):
        reverse = d == 1 or node.attr("direction", "forward") == "reverse"
        layer = _cell(kind, units, reverse, capacity, acts, _direction(wt, d, dirs), _direction(rt, d, dirs),
                      None if bt is None else _direction(bt, d, dirs))
        init = [_initial(ctx, s, d, dirs, layout) for s in ((h0, c0) if kind == "LSTM" else (h0,))]
        given = next((i for i in init if i is not None), None)
        init = None if given is None else [ops.zeros_like(given) if i is None else i for i in init]
        final, steps = layer.run(seq, mask, initial_state=init)
        stacked = list_stack(final[-1], steps)              # [time, batch, hidden]
        stacked.info.shape = (seq.shape[1], seq.shape[0], units)
        outs.append(stacked)
        finals[0].append(final[1])
        if kind == "LSTM":
            finals[1].append(final[2])
    y = ops.concat([ops.expand_dims(o, 1) for o in outs], 1)   # [time, directions, batch, hidden]
    states = [ops.concat([ops.expand_dims(s, 0) for s in f], 0) for f in finals if f]  # [directions, batch, hidden]
    if layout:
        y = ops.transpose(y, [2, 0, 1, 3])
        states = [ops.transpose(s, [1, 0, 2]) for s in states]
    return [V(y)] + [V(s) for s in states]
