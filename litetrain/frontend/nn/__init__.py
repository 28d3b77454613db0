"""Layers, each a Module called as `layer(x, training=False)`."""
from .core import ACTIVATIONS, Activation, Dense, Flatten, Layer, Sequential, get_activation, glorot_uniform
from .conv import (AveragePool2D, AvgPool2D, Conv2D, DepthwiseConv2D, GlobalAveragePooling2D, MaxPool2D, SeparableConv2D,
                   ZeroPadding2D)
from .norm import BatchNormalization, Dropout
from .recompute import recompute
from .recurrent import GRU, LSTM, Bidirectional, Embedding, SimpleRNN

__all__ = ["ACTIVATIONS", "Activation", "Dense", "Flatten", "Layer", "Sequential", "get_activation",
           "glorot_uniform", "AveragePool2D", "AvgPool2D", "BatchNormalization", "Conv2D", "DepthwiseConv2D",
           "Dropout", "GlobalAveragePooling2D", "MaxPool2D", "SeparableConv2D", "ZeroPadding2D",
           "Bidirectional", "Embedding", "GRU", "LSTM", "SimpleRNN", "recompute"]
