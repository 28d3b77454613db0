"""What a personalization file's base model declares: its preprocessing, the module that gives
features, which of its weights fine-tuning may train; and the named pretrained bases."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ... import ops
from ...core.trace import ProgramBuilder
from ...frontend.module import Module, Param
from ...models import MobileNetV2


class PersonalizeError(ValueError):
    """Bad input to the personalization pipeline: names what was wrong and what was expected."""


# -- what the base model declares ----------------------------------------------------------------
@dataclass
class Preprocessing:
    """How images reach the base model. The file's image inputs are NHWC float32 pixels in
    [0, scale] of `size` (height, width) and `channels`; the graph computes
    (x / scale - mean) / std per channel and transposes to NCHW when `layout` is "NCHW"."""
    size: tuple
    channels: int = 3
    mean: tuple = (0.0, 0.0, 0.0)
    std: tuple = (1.0, 1.0, 1.0)
    scale: float = 255.0
    layout: str = "NHWC"

    def __post_init__(self):
        self.size = tuple(int(s) for s in self.size)
        self.channels = int(self.channels)
        if len(self.size) != 2 or min(self.size) < 1 or self.channels < 1:
            raise PersonalizeError(f"preprocessing needs size (height, width) and channels >= 1, got "
                                   f"size={self.size}, channels={self.channels}")
        self.mean = _per_channel(self.mean, self.channels, "mean")
        self.std = _per_channel(self.std, self.channels, "std")
        if any(s == 0 for s in self.std):
            raise PersonalizeError(f"std must not be zero, got {self.std}")
        self.scale = float(self.scale)
        if not self.scale > 0:
            raise PersonalizeError(f"scale must be positive, got {self.scale}")
        if self.layout not in ("NHWC", "NCHW"):
            raise PersonalizeError(f"layout must be 'NHWC' or 'NCHW', got {self.layout!r}")

    @property
    def image_shape(self):
        return (*self.size, self.channels)

    def to_json(self) -> dict:
        return {"size": list(self.size), "channels": self.channels, "mean": list(self.mean),
                "std": list(self.std), "scale": self.scale, "layout": self.layout}

    @classmethod
    def from_any(cls, value) -> "Preprocessing":
        if isinstance(value, Preprocessing):
            return value
        if isinstance(value, dict):
            known = {"size", "channels", "mean", "std", "scale", "layout"}
            extra = sorted(set(value) - known)
            if extra:
                raise PersonalizeError(f"unknown preprocessing keys {extra}; known: {sorted(known)}")
            return cls(**value)
        raise PersonalizeError(f"preprocessing must be a Preprocessing or a dict, got {type(value).__name__}")

    def normalize(self, x):
        """Graph code: pixels in [0, scale] -> what the base model takes."""
        mean = np.asarray(self.mean, np.float32) * np.float32(self.scale)
        inv = np.float32(1.0) / (np.asarray(self.std, np.float32) * np.float32(self.scale))
        if not (np.all(mean == 0) and np.all(inv == 1)):
            x = ops.mul(ops.sub(x, mean), inv)
        return ops.transpose(x, [0, 3, 1, 2]) if self.layout == "NCHW" else x


def _per_channel(values, channels, what):
    v = np.atleast_1d(np.asarray(values, np.float64)).reshape(-1)
    if v.size == 1:
        v = np.repeat(v, channels)
    if v.size != channels or not np.all(np.isfinite(v)):
        raise PersonalizeError(f"{what} needs 1 or {channels} finite values, got {list(np.atleast_1d(values))}")
    return tuple(float(a) for a in v)


class BaseModel:
    """A base model for transfer learning: a litetrain Module called as `module(x, training=False)`
    on what `preprocessing` produces, giving features; a 4-D output is averaged over its spatial
    dims (per `preprocessing.layout`), any other output of rank > 2 is flattened."""

    def __init__(self, module: Module, preprocessing, name: str = "base", stages=None):
        if not isinstance(module, Module) or not callable(module):
            raise PersonalizeError(f"a base model must be a callable litetrain Module, got {type(module).__name__}")
        self.module = module
        self.preprocessing = Preprocessing.from_any(preprocessing)
        self.name = name
        self.stages = stages  # the blocks `finetune=N` counts from the end: lists of Params (default module.stages)

    @classmethod
    def from_torch_zoo(cls, name: str, trainable=None, size=None) -> "BaseModel":
        """A pretrained PyTorch backbone of `litetrain.importers.torch.zoo` ("mobilenet_v2" or
        "efficientnet_lite0", ImageNet weights from their pip packages) imported by `from_torch`
        without its classifier: images -> the pooled 1280-d bottleneck, with the preprocessing the
        weights expect. `trainable` is from_torch's (None, "all" or torch module path prefixes: what
        finetune="trainable" picks); finetune=N trains the last N of `torch_zoo.STAGES[name]`;
        finetune may also be a list of torch module path prefixes ("features.17"). `size`: square
        input pixels (default the weights' 224)."""
        import importlib.util
        from ...importers.torch import zoo as torch_zoo
        if name not in torch_zoo.STAGES:
            raise PersonalizeError(f"unknown pretrained base {name!r}; known: {sorted(torch_zoo.STAGES)}")
        if importlib.util.find_spec("torch") is None:
            raise PersonalizeError(f"the pretrained base {name!r} is imported from PyTorch: pip install torch")
        try:
            model = torch_zoo.feature_extractor(name)
        except (ModuleNotFoundError, FileNotFoundError) as e:
            raise PersonalizeError(str(e)) from None
        import torch
        from ...importers import from_torch
        pre = torch_zoo.PREPROCESSING[name]
        size = int(size or pre["input_size"])
        net = from_torch(model, torch.zeros(1, 3, size, size), trainable=trainable, channels_last=True, name=name)
        params = {net.torch_name(s.path): s for s in net.states() if isinstance(s, Param)}
        stages = [[p for t, p in params.items() if any(t.startswith(f + ".") for f in prefixes)]
                  for prefixes in torch_zoo.STAGES[name]]
        return cls(net, Preprocessing((size, size), 3, [m / 255 for m in pre["mean"]],
                                      [s / 255 for s in pre["std"]], 255.0, "NHWC"), name=name, stages=stages)

    @classmethod
    def from_tflite(cls, model, preprocessing, output="bottleneck", trainable=None, signature=None,
                    name="base") -> "BaseModel":
        """An inference .tflite file (a path or bytes; NHWC images in, as TFLite files take them) as
        the base: its serving function replayed up to `output` ("bottleneck": the input of its last
        FULLY_CONNECTED, i.e. the classifier's features; or a serving output's or any tensor's name).
        `preprocessing` is what the file's input expects (a file does not say it). Its weights stay
        constants of the new file unless `trainable` picks some ("last:N", "biases", layer names or
        patterns; see `make_trainable.select_weights`): those become Params that
        finetune="trainable" or finetune=N (the last N layers among them) trains."""
        from ...importers.tflite import MakeTrainableError, TFLiteModule
        pre = Preprocessing.from_any(preprocessing)
        if pre.layout != "NHWC":
            raise PersonalizeError(f"a .tflite base takes NHWC images; the preprocessing says {pre.layout}")
        try:
            net = TFLiteModule(model, output=output, trainable=trainable, signature=signature, name=name)
        except (MakeTrainableError, OSError) as e:
            raise PersonalizeError(f"cannot use the .tflite file as a base: {e}") from None
        want = (*pre.size, pre.channels)
        got = tuple(net.input_shape[1:])
        if len(net.input_shape) != 4 or any(g is not None and g != w for g, w in zip(got, want)):
            raise PersonalizeError(f"the file takes input {list(net.input_shape)}; the preprocessing gives "
                                   f"[batch, {want[0]}, {want[1]}, {want[2]}]")
        return cls(net, pre, name=name, stages=net.stages)

    def features(self, images, training=False):
        """Graph code: NHWC pixels -> [batch, num_features]."""
        y = self.module(self.preprocessing.normalize(images), training=training)
        if y.ndim == 4:
            y = ops.reduce_mean(y, [1, 2] if self.preprocessing.layout == "NHWC" else [2, 3])
        elif y.ndim > 2:
            rest = y.shape[1:]
            if None in rest:
                raise PersonalizeError(f"the base's output {list(y.shape)} has unknown feature dims")
            y = ops.reshape(y, [-1, int(np.prod(rest))])
        elif y.ndim != 2:
            raise PersonalizeError(f"the base must give [batch, features] or feature maps, got rank {y.ndim}")
        return y

    @property
    def num_features(self) -> int:
        """Found by tracing the base once into a scratch program (nothing global is touched)."""
        fb = ProgramBuilder().function("probe")
        y = self.features(fb.input("images", "float32", (None, *self.preprocessing.image_shape)))
        if y.shape[-1] is None:
            raise PersonalizeError("the base's feature dim is unknown after tracing")
        return int(y.shape[-1])

    def finetune_params(self, finetune) -> list:
        """The base Params that `train_finetune` updates for a `finetune` choice (see the module doc)."""
        params = [s for s in self.module.states() if isinstance(s, Param)]
        if isinstance(finetune, bool) or finetune is None:
            raise PersonalizeError("finetune must be an int N (last N stages), 'bias', 'trainable' or a "
                                   f"list of Params, got {finetune!r}")
        if isinstance(finetune, int):
            stages = self.stages if self.stages is not None else getattr(self.module, "stages", None)
            if stages is None:
                raise PersonalizeError(f"finetune={finetune} needs a base with a `stages` list (e.g. MobileNetV2); "
                                       f"{type(self.module).__name__} has none: use 'bias', 'trainable' or Params")
            stages = list(stages)
            if not 1 <= finetune <= len(stages):
                raise PersonalizeError(f"finetune must be in [1, {len(stages)}] stages, got {finetune}")
            chosen = [s for stage in stages[-finetune:] for s in (stage if isinstance(stage, (list, tuple))
                                                                  else stage.states()) if isinstance(s, Param)]
        elif finetune in ("bias", "biases"):
            chosen = [p for p in params if p._name.rsplit("/", 1)[-1] in ("bias", "beta")]
        elif finetune == "trainable":
            chosen = [p for p in params if p.trainable]
        elif isinstance(finetune, (list, tuple)) and finetune and all(isinstance(p, str) for p in finetune):
            chosen = self._params_under(params, finetune)
        elif isinstance(finetune, (list, tuple)):
            ids = {id(p) for p in params}
            bad = [p for p in finetune if id(p) not in ids]
            if bad:
                raise PersonalizeError(f"finetune Params {bad} are not Params of the base")
            chosen = list(finetune)
        else:
            raise PersonalizeError(f"unknown finetune choice {finetune!r}")
        if not chosen:
            raise PersonalizeError(f"finetune={finetune!r} chooses no weight of the base")
        return chosen


    def _params_under(self, params, prefixes) -> list:
        """The Params under module path prefixes: torch names ("features.17") for an imported base,
        else variable paths below the base ("stages/3")."""
        named = getattr(self.module, "torch_name", None)
        own = self.module.path
        def name(p):
            if named is not None:
                return named(p.path)
            return p.path[len(own) + 1:] if own and p.path.startswith(own + "/") else p.path
        chosen = []
        for prefix in prefixes:
            prefix = prefix.rstrip("./")
            found = [p for p in params if name(p) == prefix or name(p)[len(prefix):len(prefix) + 1] in (".", "/")
                     and name(p).startswith(prefix)]
            if not found:
                tops = sorted({name(p).replace("/", ".").split(".")[0] for p in params})
                raise PersonalizeError(f"finetune prefix {prefix!r} matches no Param of the base; its top-level "
                                       f"names are {tops}")
            chosen += [p for p in found if all(p is not q for q in chosen)]
        return chosen


# -- base models by name ----------------------------------------------------------------------------
PRETRAINED_BASES = ("mobilenet_v2", "efficientnet_lite0")


def base_from_name(name: str, size=None) -> BaseModel:
    """A base model by name: "mobilenet_v2" or "efficientnet_lite0" (pretrained on ImageNet, imported
    from PyTorch by `BaseModel.from_torch_zoo`; `size` default 224), or "mobilenet_v2-ALPHA"
    (litetrain's own MobileNetV2, untrained: its initial weights, ImageNet normalisation; `size`
    pixels square, default 96)."""
    if name in PRETRAINED_BASES:
        return BaseModel.from_torch_zoo(name, size=size)
    if name.startswith("mobilenet_v2"):
        rest = name[len("mobilenet_v2"):].lstrip("-_") or "1.0"
        try:
            alpha = float(rest)
        except ValueError:
            raise PersonalizeError(f"bad width multiplier in base {name!r}; e.g. mobilenet_v2-0.35") from None
        size = int(size or 96)
        net = MobileNetV2(alpha=alpha, input_shape=(size, size, 3), num_classes=None)
        return BaseModel(net, Preprocessing((size, size), 3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
                         name=f"mobilenet_v2-{alpha}")
    raise PersonalizeError(f"unknown base {name!r}; known: {', '.join(PRETRAINED_BASES)} (pretrained), "
                           "mobilenet_v2-ALPHA (litetrain's untrained net, e.g. mobilenet_v2-0.35)")
