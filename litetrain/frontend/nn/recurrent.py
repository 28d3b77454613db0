"""Recurrent layers, trainable on the device: Embedding, SimpleRNN, LSTM, GRU, Bidirectional.

A recurrent layer is a while_loop over time (a WHILE node), so the sequence length may change
from call to call; the converter generates backpropagation through time as builtin ops
(litetrain/ops/control.py). The input projection of every step is one FULLY_CONNECTED before the loop;
the loop does the recurrent matmul and the gates. Inputs are batch-major [batch, time, features].

Padding: `mask` ([batch, time], true for real steps) carries the state over padded steps and
zeroes their outputs, as PyTorch's packed sequences do; with `go_backwards` each sequence is read
from its last real step, so Bidirectional works on padded batches.

Capacity: the loop keeps each step's state for the backward pass in tensor lists of
`max_sequence_length` steps (the layer's own, else lt.convert's, else the input's static time
dim). A longer sequence fails the call with an error naming the capacity, before any variable
changes.

Weights use TensorFlow Lite's FULLY_CONNECTED layout [gates * units, inputs] and are initialised
as PyTorch does (uniform in +-1/sqrt(units)). Gate order: LSTM (i, f, g, o), as PyTorch and Keras;
GRU (z, r, n), as Keras, with the reset gate applied after the recurrent matmul (PyTorch's GRU,
Keras reset_after=True). `torch_state_dict` / `load_torch_state_dict` convert from and to
PyTorch's parameter layout (gate order, and LSTM's and SimpleRNN's one bias against PyTorch's two:
loading adds them up; a PyTorch twin that trains like the layer keeps bias_hh frozen at zero,
since an optimizer moves a sum of two trained biases differently from one).
"""
from __future__ import annotations

import numpy as np

from ... import ops
from ...core.trace import TraceError, builder_of
from ...ops.control import while_loop
from ...ops.tensor_list import check_at_most, list_from_tensor, list_read, list_reserve, list_stack, list_write
from ..module import Param
from .core import Layer, get_activation


class Embedding(Layer):
    """Rows of a [input_dim, output_dim] table by integer id: GATHER_ND, whose gradient is a
    scatter-add (SCATTER_ND: repeated ids add up). Initialised N(0, 1), as PyTorch does."""

    def __init__(self, input_dim, output_dim, dtype="float32", name=None):
        super().__init__(name)
        self.input_dim, self.output_dim = int(input_dim), int(output_dim)
        rng = self.seed_for("embeddings")
        self.embeddings = Param(rng.standard_normal((self.input_dim, self.output_dim)), dtype=dtype)

    def __call__(self, ids, training=False):
        return ops.gather_nd(self.embeddings, ops.expand_dims(ops.cast(ids, "int32"), -1))


class Recurrent(Layer):
    """Base of SimpleRNN, LSTM and GRU: the loop over time; subclasses give the cell."""
    gates = 1
    state_size = 1  # 2 for LSTM: (h, c)

    def __init__(self, units, return_sequences=False, go_backwards=False, max_sequence_length=None,
                 input_dim=None, dtype="float32", name=None):
        super().__init__(name)
        self.units = int(units)
        self.return_sequences = bool(return_sequences)
        self.go_backwards = bool(go_backwards)
        self.max_sequence_length = None if max_sequence_length is None else int(max_sequence_length)
        self.dtype = dtype
        if input_dim is not None:
            self.build(int(input_dim))

    def config(self) -> dict:
        return {"units": self.units, "return_sequences": self.return_sequences, "go_backwards": self.go_backwards,
                "max_sequence_length": self.max_sequence_length, "dtype": self.dtype,
                "input_dim": self.__dict__.get("input_dim")}

    def _uniform(self, name, shape):
        bound = 1.0 / np.sqrt(self.units)
        return Param(self.seed_for(name).uniform(-bound, bound, shape), dtype=self.dtype)

    def build(self, input_dim):
        g = self.gates * self.units
        self.input_dim = int(input_dim)
        self.kernel = self._uniform("kernel", (g, input_dim))
        self.recurrent_kernel = self._uniform("recurrent_kernel", (g, self.units))
        self.bias = self._uniform("bias", (g,))

    def cell(self, xw, h, c):
        """One step from the input projection xw [batch, gates*units] and the state; returns (h, c)."""
        raise NotImplementedError

    def _capacity(self, fb, x):
        cap = self.max_sequence_length or fb.pb.options.max_sequence_length or x.shape[1]
        if cap is None:
            raise TraceError(f"{self.path or type(self).__name__}: the time dim is unknown; give the layer "
                             "max_sequence_length= or lt.convert(..., max_sequence_length=)")
        return int(cap)

    def __call__(self, x, mask=None, training=False):
        final, steps = self.run(x, mask)
        if self.return_sequences:
            return ops.transpose(list_stack(final[-1], steps), [1, 0, 2])
        return final[1]

    def run(self, x, mask=None, initial_state=None):
        """The loop over time: (the while loop's final values [t, h, (c,) (outputs list)], the number of
        steps). `initial_state`: [h] or [h, c] ([batch, units] each) instead of zeros."""
        if x.ndim != 3:
            raise TraceError(f"{self.path}: input must be [batch, time, features], got {x.shape}")
        if "kernel" not in self.__dict__:
            if x.shape[-1] is None:
                raise TraceError(f"{self.path}: the input's feature dim must be known to build the layer")
            self.build(x.shape[-1])
        fb = builder_of(x)
        cap = self._capacity(fb, x)
        name = self.path or type(self).__name__
        shape = ops.shape_of(x)
        steps = check_at_most(ops.gather(shape, fb.const(np.int32(1))), cap,
                              f"{name}: the sequence is longer than max_sequence_length={cap} set at conversion")
        # every step's input projection at once, time-major, in a tensor list read inside the loop
        xw = ops.transpose(ops.fully_connected(x, self.kernel, self.bias, keep_num_dims=True), [1, 0, 2])
        inputs = list_from_tensor(xw, cap, length=steps)
        masks = None
        if mask is not None:
            m = mask if mask.dtype == "bool" else ops.not_equal(mask, fb.const(0, mask.dtype))
            masks = list_from_tensor(ops.expand_dims(ops.transpose(m, [1, 0]), -1), cap, length=steps)
        batch = ops.gather(shape, fb.const(np.int32(0)))
        zeros = ops.fill(ops.concat([ops.reshape(batch, [1]), fb.const(np.int32([self.units]))], 0), 0.0, self.dtype)
        zeros.info.shape = (x.shape[0], self.units)
        state = list(initial_state) if initial_state is not None else [zeros] * self.state_size
        out = [list_reserve(zeros, cap)] if self.return_sequences else []

        def body(t, *vars_):
            idx = ops.sub(ops.sub(steps, 1), t) if self.go_backwards else t
            h, c = vars_[0], vars_[1] if self.state_size == 2 else None
            new_h, new_c = self.cell(list_read(inputs, idx), h, c)
            if masks is not None:
                keep = list_read(masks, idx)
                new_h = ops.where(keep, new_h, h)
                new_c = ops.where(keep, new_c, c) if c is not None else None
                emitted = ops.where(keep, new_h, ops.zeros_like(new_h))
            else:
                emitted = new_h
            result = [ops.add(t, 1), new_h] + ([new_c] if c is not None else [])
            if self.return_sequences:
                result.append(list_write(vars_[-1], idx, emitted))
            return result

        final = while_loop(lambda t, *_: ops.less(t, steps), body, [fb.const(np.int32(0))] + state + out,
                           maximum_iterations=cap, name=type(self).__name__.lower())
        return final, steps


class SimpleRNN(Recurrent):
    """h' = activation(x W^T + h U^T + b), as torch.nn.RNN (whose two biases add up to b)."""

    def __init__(self, units, activation="tanh", **kw):
        super().__init__(units, **kw)
        self.activation = activation
        self._act = get_activation(activation)

    def config(self):
        return {**super().config(), "activation": self.activation}

    def cell(self, xw, h, c):
        return self._act(ops.add(xw, ops.fully_connected(h, self.recurrent_kernel))), None


def _gate(z, k, units):
    return ops.slice_(z, [0, k * units], [-1, units])


class LSTM(Recurrent):
    """Gates (i, f, g, o) = (sigmoid, sigmoid, tanh, sigmoid)(x W^T + h U^T + b);
    c' = f c + i g; h' = o tanh(c'). As torch.nn.LSTM (whose two biases add up to b)."""
    gates, state_size = 4, 2

    def cell(self, xw, h, c):
        z = ops.add(xw, ops.fully_connected(h, self.recurrent_kernel))
        i, f, g, o = (_gate(z, k, self.units) for k in range(4))
        new_c = ops.add(ops.mul(ops.sigmoid(f), c), ops.mul(ops.sigmoid(i), ops.tanh(g)))
        return ops.mul(ops.sigmoid(o), ops.tanh(new_c)), new_c


class GRU(Recurrent):
    """Gates (z, r) = sigmoid(x W^T + b + h U^T + b_r); n = tanh(x W_n^T + b_n + r (h U_n^T + b_rn));
    h' = (1 - z) n + z h. As torch.nn.GRU, with Keras's gate order (z, r, n); `gate_blocks` says which
    block of the weights holds z, r and n (PyTorch's own order, (r, z, n), is (1, 0, 2))."""
    gates = 3
    gate_blocks = (0, 1, 2)

    def build(self, input_dim):
        super().build(input_dim)
        self.recurrent_bias = self._uniform("recurrent_bias", (self.gates * self.units,))

    def cell(self, xw, h, c):
        hw = ops.fully_connected(h, self.recurrent_kernel, self.recurrent_bias)
        u = self.units
        iz, ir, in_ = self.gate_blocks
        z = ops.sigmoid(ops.add(_gate(xw, iz, u), _gate(hw, iz, u)))
        r = ops.sigmoid(ops.add(_gate(xw, ir, u), _gate(hw, ir, u)))
        n = ops.tanh(ops.add(_gate(xw, in_, u), ops.mul(r, _gate(hw, in_, u))))
        return ops.add(n, ops.mul(z, ops.sub(h, n))), None


class Bidirectional(Layer):
    """Runs `layer` forwards and a copy of it backwards over time and merges the two:
    "concat" (on the last axis, forward first), "sum", "mul" or "ave". With return_sequences the
    backward outputs are aligned with the input steps, as in PyTorch's bidirectional layers."""

    MERGES = {"concat": lambda a, b: ops.concat([a, b], -1), "sum": ops.add, "mul": ops.mul,
              "ave": lambda a, b: ops.mul(ops.add(a, b), 0.5)}

    def __init__(self, layer: Recurrent, merge_mode="concat", name=None):
        super().__init__(name)
        if merge_mode not in self.MERGES:
            raise ValueError(f"unknown merge_mode {merge_mode!r}; known: {sorted(self.MERGES)}")
        self.merge_mode = merge_mode
        config = {**layer.config(), "go_backwards": not layer.go_backwards}
        self.forward_layer = layer
        self.backward_layer = type(layer)(**config)

    def __call__(self, x, mask=None, training=False):
        return self.MERGES[self.merge_mode](self.forward_layer(x, mask=mask), self.backward_layer(x, mask=mask))


# -- PyTorch's parameter layout ------------------------------------------------------------------------
_TORCH_ORDER = {"GRU": [1, 0, 2]}  # our gate blocks, in PyTorch's order (its GRU is r, z, n)


def _reorder(layer, w):
    order = _TORCH_ORDER.get(type(layer).__name__)
    if order is None:
        return np.array(w)
    blocks = np.split(np.asarray(w), layer.gates, axis=0)
    return np.concatenate([blocks[k] for k in order], axis=0)  # a swap: its own inverse


def torch_state_dict(layer, suffix="_l0") -> dict:
    """The layer's weights under torch.nn.RNN/LSTM/GRU parameter names (NumPy arrays)."""
    if isinstance(layer, Bidirectional):
        return {**torch_state_dict(layer.forward_layer, suffix),
                **torch_state_dict(layer.backward_layer, suffix + "_reverse")}
    out = {f"weight_ih{suffix}": _reorder(layer, layer.kernel.value),
           f"weight_hh{suffix}": _reorder(layer, layer.recurrent_kernel.value),
           f"bias_ih{suffix}": _reorder(layer, layer.bias.value)}
    rb = layer.recurrent_bias.value if isinstance(layer, GRU) else np.zeros_like(layer.bias.value)
    out[f"bias_hh{suffix}"] = _reorder(layer, rb)
    return out


def load_torch_state_dict(layer, state: dict, suffix="_l0") -> None:
    """Set the layer's weights from torch.nn.RNN/LSTM/GRU parameters (NumPy arrays or tensors)."""
    if isinstance(layer, Bidirectional):
        load_torch_state_dict(layer.forward_layer, state, suffix)
        load_torch_state_dict(layer.backward_layer, state, suffix + "_reverse")
        return

    def get(name):
        v = state[name + suffix]
        return _reorder(layer, v.detach().cpu().numpy() if hasattr(v, "detach") else v)
    layer.kernel.assign(get("weight_ih"))
    layer.recurrent_kernel.assign(get("weight_hh"))
    if isinstance(layer, GRU):
        layer.bias.assign(get("bias_ih"))
        layer.recurrent_bias.assign(get("bias_hh"))
    else:
        layer.bias.assign(get("bias_ih") + get("bias_hh"))
