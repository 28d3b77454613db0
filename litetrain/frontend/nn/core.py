"""Core layers: Dense, Flatten, Activation, Sequential, written with the primitive ops.

Every layer is called as `layer(x, training=False)`; layers that behave differently while
training (dropout, batch normalisation) look at `training`, the others ignore it.
"""
from __future__ import annotations

import numpy as np

from ... import ops
from ..module import Module, Param, default_name
from .activations import elu, hard_sigmoid, mish, silu, softplus

ACTIVATIONS = {
    None: lambda x: x, "linear": lambda x: x, "relu": ops.relu, "relu6": ops.relu6, "tanh": ops.tanh,
    "sigmoid": ops.sigmoid, "softmax": ops.softmax, "gelu": ops.gelu,
    "gelu_tanh": lambda x: ops.gelu(x, approximate=True),
    "silu": silu, "swish": silu, "elu": elu, "softplus": softplus, "mish": mish,
    "leaky_relu": ops.leaky_relu,  # negative slope 0.2 (Keras's); ops.leaky_relu(x, alpha) for another
    "hard_swish": ops.hard_swish, "hard_sigmoid": hard_sigmoid,
}


def get_activation(name):
    if callable(name):
        return name
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {[k for k in ACTIVATIONS if k]}") from None


def glorot_uniform(rng, fan_in, fan_out, shape):
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape).astype(np.float32)


class Layer(Module):
    """A module called on a tensor: `layer(x, training=False)`."""

    def __init__(self, name=None):
        self.name = name

    def __call__(self, x, training=False):
        raise NotImplementedError


class Dense(Layer):
    """y = activation(x W^T + b), W shaped [units, input_dim] as TFLite's FULLY_CONNECTED wants.
    The input dim is taken from the first input unless given."""

    def __init__(self, units, activation=None, use_bias=True, input_dim=None, name=None):
        super().__init__(name)
        self.units = int(units)
        self.activation = activation
        self._act = get_activation(activation)
        self.use_bias = use_bias
        if input_dim is not None:
            self.build(input_dim)

    def build(self, input_dim):
        rng = self.seed_for("kernel")
        self.kernel = Param(glorot_uniform(rng, input_dim, self.units, (self.units, input_dim)))
        if self.use_bias:
            self.bias = Param(np.zeros(self.units, np.float32))

    def __call__(self, x, training=False):
        if "kernel" not in self.__dict__:
            if x.shape[-1] is None:
                raise ValueError(f"{self.path}: the input's last dim must be known to build Dense")
            self.build(x.shape[-1])
        y = ops.fully_connected(x, self.kernel, self.bias if self.use_bias else None,
                                keep_num_dims=x.ndim > 2)
        return self._act(y)


class Flatten(Layer):
    def __call__(self, x, training=False):
        rest = x.shape[1:]
        if None in rest:
            raise ValueError(f"{self.path}: Flatten needs known non-batch dims, got {x.shape}")
        return ops.reshape(x, [-1, int(np.prod(rest))])


class Activation(Layer):
    def __init__(self, fn, name=None):
        super().__init__(name)
        self._fn = get_activation(fn)

    def __call__(self, x, training=False):
        return self._fn(x)


class Sequential(Layer):
    """Layers applied in order; unnamed layers are named as Keras does (dense, dense_1, ...)."""

    def __init__(self, layers, name=None):
        super().__init__(name)
        object.__setattr__(self, "layers", list(layers))
        taken = {}
        for layer in self.layers:
            self._adopt(default_name(layer, taken), layer)

    def __call__(self, x, training=False):
        for layer in self.layers:
            x = layer(x, training=training)
        return x
