"""Layers, each a Module called as `layer(x, training=False)`."""
from .core import ACTIVATIONS, Activation, Dense, Flatten, Layer, Sequential, get_activation, glorot_uniform

__all__ = ["ACTIVATIONS", "Activation", "Dense", "Flatten", "Layer", "Sequential", "get_activation",
           "glorot_uniform"]
