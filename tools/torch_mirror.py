"""The same network in PyTorch, from the same weights: the reference for parity tests, the CNN
example and the benchmarks. torch is imported when a function here runs, never by litetrain itself.

`to_torch(net)` walks a litetrain network (Sequential, Conv2D, DepthwiseConv2D, SeparableConv2D,
BatchNormalization, pools, Dense, ..., the models' blocks) and builds torch modules that compute
the same function with torch's own kernels and autograd: NCHW inside (the input is NHWC and is
permuted once), filters copied from TFLite's layouts (OHWI -> OIHW; depthwise [1, kh, kw, C*M]
-> [C*M, 1, kh, kw] with groups=C), TFLite's SAME padding written out with F.pad (the odd pixel at
the end), Flatten in NHWC order, BatchNorm with torch momentum = 1 - litetrain's momentum.
`weights(mirror)` reads the torch state back by litetrain variable path, in litetrain's layouts,
so weights and moving averages compare directly.
"""
from __future__ import annotations

import numpy as np

from litetrain.frontend import nn as lnn
from litetrain.models.mobilenet_v2 import ConvBN, InvertedResidual, MobileNetV2


def _same_pads(size, k, stride, dilation):
    effective = (k - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _tf_pad(x, padding, kernel, strides, dilations, value=0.0):
    """F.pad of an NCHW tensor by TFLite's rule (`padding` "SAME"/"VALID") or explicit pads."""
    import torch.nn.functional as F
    if padding == "VALID":
        return x
    t, b = _same_pads(x.shape[2], kernel[0], strides[0], dilations[0])
    l, r = _same_pads(x.shape[3], kernel[1], strides[1], dilations[1])
    return F.pad(x, (l, r, t, b), value=value) if (t or b or l or r) else x


def _activation(name):
    import torch.nn.functional as F
    table = {None: lambda t: t, "linear": lambda t: t, "relu": F.relu, "relu6": F.relu6, "tanh": F.tanh,
             "sigmoid": F.sigmoid, "softmax": lambda t: t.softmax(-1), "gelu": F.gelu}
    if name not in table:
        raise NotImplementedError(f"no PyTorch mirror for activation {name!r}")
    return table[name]


def _to_tensor(value):
    import torch
    return torch.from_numpy(np.ascontiguousarray(np.asarray(value, np.float32)))


def to_torch(net):
    """A torch.nn.Module computing `net`'s function on NHWC float32 input, from its current
    weights (the litetrain layers' values, i.e. the file's initial values after conversion)."""
    import torch

    class Mirror(torch.nn.Module):
        def __init__(self, body):
            super().__init__()
            self.body = body

        def forward(self, x):
            return self.body(x.permute(0, 3, 1, 2) if x.dim() == 4 else x)

    return Mirror(_mirror(net))


def _mirror(layer):
    """The torch twin of one litetrain layer, built by the `_TWINS` entry of its type."""
    for kind, twin in _TWINS.items():
        if isinstance(layer, kind):
            return twin(layer)
    raise NotImplementedError(f"no PyTorch mirror for {type(layer).__name__} ({layer.path})")


def _seq(parts):
    """A torch module applying `parts` in order (kept in `.parts`, which `weights` walks)."""
    import torch
    nn = torch.nn

    class Seq(nn.Module):
        def __init__(self, parts):
            super().__init__()
            self.parts = nn.ModuleList(parts)

        def forward(self, x):
            for p in self.parts:
                x = p(x)
            return x

    return Seq(parts)


def _lambda(fn):
    """A torch module without parameters applying `fn`."""
    import torch

    class Lambda(torch.nn.Module):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        def forward(self, x):
            return self.fn(x)

    return Lambda(fn)


def _conv_twin(src, depthwise=False):
    """A Conv2d twin of a Conv2D (a grouped one of a DepthwiseConv2D), padding by TFLite's rule."""
    import torch
    import torch.nn.functional as F
    nn = torch.nn

    class Conv(nn.Module):
        def __init__(self, src, depthwise=False):
            super().__init__()
            w = np.asarray(src.kernel.value)
            if depthwise:
                c = w.shape[3] // src.depth_multiplier
                self.conv = nn.Conv2d(c, w.shape[3], src.kernel_size, src.strides, 0, src.dilation_rate, groups=c,
                                      bias=src.use_bias)
                weight = w[0].transpose(2, 0, 1)[:, None]
            else:
                self.conv = nn.Conv2d(w.shape[3], w.shape[0], src.kernel_size, src.strides, 0, src.dilation_rate,
                                      bias=src.use_bias)
                weight = w.transpose(0, 3, 1, 2)
            with torch.no_grad():
                self.conv.weight.copy_(_to_tensor(weight))
                if src.use_bias:
                    self.conv.bias.copy_(_to_tensor(src.bias.value))
            self.src, self.depthwise, self.act = src, depthwise, _activation(src.activation)

        def forward(self, x):
            s = self.src
            if s._pads is not None:
                (t, b), (l, r) = s._pads
                x = F.pad(x, (l, r, t, b))
            x = _tf_pad(x, s._tfl_padding, s.kernel_size, s.strides, s.dilation_rate)
            if self.depthwise and x.dtype == torch.float64:
                return self.act(self._depthwise_taps(x))
            return self.act(self.conv(x))

        def _depthwise_taps(self, x):
            """torch's float64 grouped convolution runs one group at a time (~100x slower than
            float32): the same sum over the kernel's taps, written with slices."""
            c = self.conv
            (kh, kw), (sh, sw), (dh, dw) = c.kernel_size, c.stride, c.dilation
            ho, wo = (x.shape[2] - (kh - 1) * dh - 1) // sh + 1, (x.shape[3] - (kw - 1) * dw - 1) // sw + 1
            x = x.repeat_interleave(c.out_channels // c.in_channels, dim=1)
            y = 0
            for i in range(kh):
                for j in range(kw):
                    tap = x[:, :, i * dh:i * dh + (ho - 1) * sh + 1:sh, j * dw:j * dw + (wo - 1) * sw + 1:sw]
                    y = y + tap * c.weight[:, 0, i, j][None, :, None, None]
            return y + c.bias[None, :, None, None] if c.bias is not None else y

    return Conv(src, depthwise)


def _depthwise_conv_twin(src):
    """The grouped Conv2d twin of a DepthwiseConv2D."""
    return _conv_twin(src, depthwise=True)


def _batch_norm_twin(src):
    """A BatchNorm2d twin (torch momentum = 1 - litetrain's), with the layer's statistics."""
    import torch
    nn = torch.nn

    class BN(nn.Module):
        def __init__(self, src):
            super().__init__()
            if not src.unbiased_moving_variance:
                raise NotImplementedError(f"{src.path}: torch's running_var takes the unbiased batch variance; "
                                          "mirror a BatchNormalization with unbiased_moving_variance=True")
            c = src.moving_mean.value.shape[0]
            self.bn = nn.BatchNorm2d(c, eps=src.epsilon, momentum=1.0 - src.momentum, affine=True)
            with torch.no_grad():
                self.bn.weight.copy_(_to_tensor(src.gamma.value if src.scale else np.ones(c)))
                self.bn.bias.copy_(_to_tensor(src.beta.value if src.center else np.zeros(c)))
                self.bn.running_mean.copy_(_to_tensor(src.moving_mean.value))
                self.bn.running_var.copy_(_to_tensor(src.moving_variance.value))
            self.bn.weight.requires_grad_(src.scale)
            self.bn.bias.requires_grad_(src.center)

        def forward(self, x):
            return self.bn(x)

    return BN(src)


def _dense_twin(src):
    """A Linear twin of a Dense layer, followed by its activation."""
    import torch
    nn = torch.nn

    class Linear(nn.Module):
        def __init__(self, src):
            super().__init__()
            w = np.asarray(src.kernel.value)
            self.fc = nn.Linear(w.shape[1], w.shape[0], bias=src.use_bias)
            with torch.no_grad():
                self.fc.weight.copy_(_to_tensor(w))
                if src.use_bias:
                    self.fc.bias.copy_(_to_tensor(src.bias.value))
            self.act = _activation(src.activation)

        def forward(self, x):
            return self.act(self.fc(x))

    return Linear(src)


def _inverted_residual_twin(src):
    """The twin of a MobileNetV2 block: expand, depthwise, project (with their batch norms), residual."""
    import torch
    import torch.nn.functional as F

    class Block(torch.nn.Module):
        def __init__(self, src):
            super().__init__()
            self.expand = (_seq([_mirror(src.expand), _mirror(src.expand_bn), _lambda(F.relu6)])
                           if src.expansion != 1 else _lambda(lambda t: t))
            self.depthwise = _seq([_mirror(src.depthwise), _mirror(src.depthwise_bn), _lambda(F.relu6)])
            self.project = _seq([_mirror(src.project), _mirror(src.project_bn)])
            self.residual = src.residual

        def forward(self, x):
            h = self.project(self.depthwise(self.expand(x)))
            return x + h if self.residual else h

    return Block(src)


def _mobilenet_twin(src):
    """The twin of a MobileNetV2: its stages (the frozen ones without gradients, always in inference
    mode), global average pooling, dropout and the classifier."""
    import torch
    nn = torch.nn

    class MobileNet(nn.Module):
        def __init__(self, src):
            super().__init__()
            self.stages = nn.ModuleList([_mirror(s) for s in src.stages])
            self.trainable_from = src.trainable_from
            self.dropout = nn.Dropout(src.dropout.rate) if "dropout" in src.__dict__ else _lambda(lambda t: t)
            self.classifier = _mirror(src.classifier) if src.num_classes is not None else _lambda(lambda t: t)
            for stage in self.stages[:self.trainable_from]:
                stage.requires_grad_(False)

        def train(self, mode=True):  # frozen stages stay in inference mode, as in litetrain
            super().train(mode)
            for stage in self.stages[:self.trainable_from]:
                stage.train(False)
            return self

        def forward(self, x):
            for stage in self.stages:
                x = stage(x)
            return self.classifier(self.dropout(x.mean((2, 3))))

    return MobileNet(src)


def _sequential_twin(layer):
    """Its layers' twins in order."""
    return _seq([_mirror(p) for p in layer.layers])


def _separable_conv_twin(layer):
    """The depthwise convolution's twin, then the pointwise one's."""
    return _seq([_mirror(layer.depthwise), _mirror(layer.pointwise)])


def _conv_bn_twin(layer):
    """Convolution, batch norm, relu6."""
    import torch.nn.functional as F
    return _seq([_mirror(layer.conv), _mirror(layer.bn), _lambda(F.relu6)])


def _flatten_twin(layer):
    """Flatten in NHWC order, as litetrain does."""
    return _lambda(lambda t: (t.permute(0, 2, 3, 1) if t.dim() == 4 else t).flatten(1))


def _activation_twin(layer):
    """The layer's activation function."""
    return _lambda(_activation_of(layer))


def _max_pool_twin(layer):
    """max_pool2d after padding with -inf by TFLite's rule."""
    import torch.nn.functional as F
    return _lambda(lambda t: F.max_pool2d(_tf_pad(t, layer.padding, layer.pool_size, layer.strides, (1, 1),
                                                  value=-float("inf")), layer.pool_size, layer.strides))


def _average_pool_twin(layer):
    """The mean over each window's pixels inside the input (TFLite's SAME padding is not counted)."""
    import torch
    import torch.nn.functional as F

    def avg(t):
        def window_sum(u):
            u = _tf_pad(u, layer.padding, layer.pool_size, layer.strides, (1, 1))
            return F.avg_pool2d(u, layer.pool_size, layer.strides, divisor_override=1)
        return window_sum(t) / window_sum(torch.ones_like(t[:1, :1]))
    return _lambda(avg)


def _global_average_pool_twin(layer):
    """The mean over height and width."""
    return _lambda(lambda t: t.mean((2, 3), keepdim=True) if layer.keepdims else t.mean((2, 3)))


def _zero_padding_twin(layer):
    """F.pad by the layer's (top, bottom), (left, right) pads."""
    import torch.nn.functional as F
    (t_, b_), (l_, r_) = layer.padding
    return _lambda(lambda t: F.pad(t, (l_, r_, t_, b_)))


def _dropout_twin(layer):
    """torch's Dropout at the same rate."""
    import torch
    return torch.nn.Dropout(layer.rate)


_TWINS = {  # litetrain layer type -> the function building its torch twin; the first isinstance match wins
    lnn.Sequential: _sequential_twin,
    lnn.SeparableConv2D: _separable_conv_twin,
    lnn.DepthwiseConv2D: _depthwise_conv_twin,
    lnn.Conv2D: _conv_twin,
    lnn.BatchNormalization: _batch_norm_twin,
    lnn.Dense: _dense_twin,
    lnn.Flatten: _flatten_twin,
    lnn.Activation: _activation_twin,
    lnn.MaxPool2D: _max_pool_twin,
    lnn.AveragePool2D: _average_pool_twin,
    lnn.GlobalAveragePooling2D: _global_average_pool_twin,
    lnn.ZeroPadding2D: _zero_padding_twin,
    lnn.Dropout: _dropout_twin,
    ConvBN: _conv_bn_twin,
    InvertedResidual: _inverted_residual_twin,
    MobileNetV2: _mobilenet_twin,
}


def _activation_of(layer):
    for name, fn in lnn.ACTIVATIONS.items():
        if fn is layer._fn and name is not None:
            return _activation(name)
    raise NotImplementedError(f"no PyTorch mirror for the activation of {layer.path}")


def weights(net, mirror) -> dict:
    """The mirror's parameters and batch-norm statistics by litetrain variable path, in litetrain's
    layouts (to compare with `Interpreter.get_variables()` or the layers' values)."""
    out = {}
    _collect(net, mirror.body, out)
    return out


def _collect(layer, m, out):
    def put(state, tensor, transform=lambda a: a):
        out[state.path] = transform(tensor.detach().numpy().copy())

    if isinstance(layer, lnn.Sequential):
        for child, mc in zip(layer.layers, m.parts):
            _collect(child, mc, out)
    elif isinstance(layer, lnn.SeparableConv2D):
        _collect(layer.depthwise, m.parts[0], out)
        _collect(layer.pointwise, m.parts[1], out)
    elif isinstance(layer, (lnn.Conv2D, lnn.DepthwiseConv2D)):
        if isinstance(layer, lnn.DepthwiseConv2D):
            put(layer.kernel, m.conv.weight, lambda a: a[:, 0].transpose(1, 2, 0)[None])
        else:
            put(layer.kernel, m.conv.weight, lambda a: a.transpose(0, 2, 3, 1))
        if layer.use_bias:
            put(layer.bias, m.conv.bias)
    elif isinstance(layer, lnn.BatchNormalization):
        if layer.scale:
            put(layer.gamma, m.bn.weight)
        if layer.center:
            put(layer.beta, m.bn.bias)
        put(layer.moving_mean, m.bn.running_mean)
        put(layer.moving_variance, m.bn.running_var)
    elif isinstance(layer, lnn.Dense):
        put(layer.kernel, m.fc.weight)
        if layer.use_bias:
            put(layer.bias, m.fc.bias)
    elif isinstance(layer, ConvBN):
        _collect(layer.conv, m.parts[0], out)
        _collect(layer.bn, m.parts[1], out)
    elif isinstance(layer, InvertedResidual):
        if layer.expansion != 1:
            _collect(layer.expand, m.expand.parts[0], out)
            _collect(layer.expand_bn, m.expand.parts[1], out)
        _collect(layer.depthwise, m.depthwise.parts[0], out)
        _collect(layer.depthwise_bn, m.depthwise.parts[1], out)
        _collect(layer.project, m.project.parts[0], out)
        _collect(layer.project_bn, m.project.parts[1], out)
    elif isinstance(layer, MobileNetV2):
        for stage, ms in zip(layer.stages, m.stages):
            _collect(stage, ms, out)
        if layer.num_classes is not None:
            _collect(layer.classifier, m.classifier, out)
