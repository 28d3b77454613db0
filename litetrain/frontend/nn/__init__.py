"""Layers, each a Module called as `layer(x, training=False)`."""
from .attention import MultiHeadAttention, scaled_dot_product_attention
from .core import ACTIVATIONS, Activation, Dense, Flatten, Layer, Sequential, get_activation, glorot_uniform
from .conv import (AveragePool2D, AvgPool2D, Conv1D, Conv2D, Conv2DTranspose, DepthwiseConv2D, GlobalAveragePooling2D,
                   MaxPool2D, SeparableConv2D, UpSampling2D, ZeroPadding2D)
from .norm import BatchNormalization, Dropout, GroupNorm, LayerNorm, LayerNormalization
from .recompute import recompute
from .recurrent import GRU, LSTM, Bidirectional, Embedding, SimpleRNN

__all__ = ["ACTIVATIONS", "Activation", "Dense", "Flatten", "Layer", "Sequential", "get_activation",
           "glorot_uniform", "AveragePool2D", "AvgPool2D", "BatchNormalization", "Conv1D", "Conv2D",
           "Conv2DTranspose", "DepthwiseConv2D", "Dropout", "GroupNorm", "LayerNorm", "LayerNormalization",
           "GlobalAveragePooling2D", "MaxPool2D", "SeparableConv2D", "UpSampling2D", "ZeroPadding2D",
           "Bidirectional", "Embedding", "GRU", "LSTM", "SimpleRNN", "recompute", "MultiHeadAttention",
           "scaled_dot_product_attention"]
