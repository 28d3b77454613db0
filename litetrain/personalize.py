"""Transfer learning on the device: a base model and a classifier head in ONE .tflite file, and the
`Personalizer` that adds samples, trains, predicts, saves and resumes with it.

The file (`convert_personalization(base, head, ...)`) has these signatures:

    load(images)                                -> bottleneck      the base's features
    infer(images)                               -> probabilities, logits
    infer_bottlenecks(bottlenecks)              -> probabilities, logits
    train(bottlenecks, labels, learning_rate)   -> loss            one step of the head only
    train_finetune(images, labels, learning_rate) -> loss          head + chosen base weights
                                                                   (only with `finetune=`)
    add_class(kernel_row, bias, mean_weight)    -> num_classes     the head grows by one class
    remove_class(index)                         -> num_classes     (the classes in use, n)
    save() / restore(...)                       every variable out / in (portable form), or a
                                                checkpoint file (`portable_checkpoints=False`)

Images enter as float32 NHWC pixels in [0, scale] at the declared size; the normalisation
((x / scale - mean) / std, and a transpose for an NCHW base) is part of the graph, so every
runtime sees the same model. The declared preprocessing (size, channels, mean, std, scale,
layout), the head's configuration and the default learning rate are stored in the file's
metadata entry "litetrain_personalize": the file alone is enough for a `Personalizer`.

What changes on the device without re-conversion, and how:
- Classes. The head's last layer (kernel [classes, k], bias [classes]) and its optimizer slots
  have one row per class, in one of two modes (stored in the metadata as "max_classes"):
  resizable (the default, `max_classes=None`): the class dimension is declared unknown;
  `add_class` assigns the variables one more row, `remove_class` one fewer (TFLite resource
  variables take the shape of what is assigned; litetrain's interpreter and LiteRT's builtin
  kernels both do). Fixed capacity (`max_classes=K`): the variables have K rows and static
  shapes, and the int32 Buffer `head/active_classes` holds how many rows n are in use (rows n..
  are zero, slots included). `add_class` writes row n (DYNAMIC_UPDATE_SLICE) and refuses in the
  graph, changing nothing, when n == K ("the head is full"); `remove_class` moves the later rows
  up (GATHER with a permutation) and zeroes the row that falls out of use. Training masks the
  logits of rows >= n to -1e30 (softmax exactly 0, no gradient, so those rows and their slots
  stay zero); `infer` and `infer_bottlenecks` output [batch, n], the first n columns (GATHER at
  run time), exactly as a resizable head of n classes does.
  In both modes existing classes keep their rows exactly. By default a new class starts at the
  mean of the rows in use (`mean_weight=1`, `kernel_row=0`, `bias=0`): its logit is the mean of
  the others' logits, so it is never the top prediction before it is trained, and the old
  classes' logits are bit-for-bit what they were. Its optimizer slots start at zero. Labels are
  integer class indices; an index outside [0, n) makes the call fail inside the graph (a GATHER
  out of bounds) before any variable changes.
- Learning rate: an input of `train` / `train_finetune` (default: the optimizer's).
- Epochs: the training loop is driven from outside (`Personalizer.train`).
- Freezing / unfreezing the fine-tuned base weights: choose the signature. `train` updates the
  head only, from cached bottlenecks (cheap); `train_finetune` runs the base on images and also
  updates the weights chosen at conversion by `finetune=`: the last N stages of a base with a
  `stages` list (e.g. MobileNetV2, or `BaseModel.from_torch_zoo`'s), a list of module path prefixes
  (torch names such as "features.17" for an imported base), "bias" (TinyTL-style: only biases and batch-norm offsets),
  "trainable" (the base's own trainable Params) or a list of Params. The base runs in
  inference mode in every signature (batch normalisation uses and keeps its moving
  statistics, as Keras advises for fine-tuning with small batches). After `train_finetune` the
  bottlenecks change, so the Personalizer recomputes its cache before head-only training.

LiteRT: a read of a resizable variable is written with no dims (only a shape_signature), the form
in which LiteRT's READ_VARIABLE resizes its output. LiteRT's builtin kernels then give the same
results as litetrain's interpreter, before and after classes are added or removed; its default
XNNPACK delegate does not (after `add_class` or `restore` of a grown head the variable keeps its
first shape, as measured with ai-edge-litert 2.3.0), so run a resizable file with
`experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES`. A fixed-capacity
file (`max_classes=K`) has no resized variable and runs in LiteRT's default configuration
(XNNPACK delegate, as on Android) with the same results. `Personalizer(..., backend="litert")`
picks the right configuration from the file's metadata.

Frozen weights: the base's weights that no signature changes (all but those `finetune=` picks, and
its batch-norm statistics, since the base runs in inference mode) are constants of the file, not
variables: frozen batch norms fold into their convolutions at conversion, and `save`, `restore`
and a Personalizer's state hold only the head, the optimizer's state and the fine-tuned weights.

Where things live: this module holds the file format (`Preprocessing`, `BaseModel`,
`trace_personalization`, `convert_personalization`, `read_metadata`) and `base_from_name`;
`Personalizer` is in litetrain.personalizer, image reading and resizing in litetrain.images, and the
`litetrain personalize` command in litetrain.personalize_cli (`lt.Personalizer` is the same class).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from . import ops
from .heads import (ClassifierHead, MLPHead, SoftmaxClassifier, active_logits, checked_class, masked_logits,
                    moved_up, without_row)
from .loops import check_at_most
from .module import Module, Param, Slot, TensorSpec, signature
from .optim import Adam, Optimizer

METADATA_KEY = "litetrain_personalize"
FORMAT = 1


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
        """A pretrained PyTorch backbone of `litetrain.models.torch_zoo` ("mobilenet_v2" or
        "efficientnet_lite0", ImageNet weights from their pip packages) imported by `from_torch`
        without its classifier: images -> the pooled 1280-d bottleneck, with the preprocessing the
        weights expect. `trainable` is from_torch's (None, "all" or torch module path prefixes: what
        finetune="trainable" picks); finetune=N trains the last N of `torch_zoo.STAGES[name]`;
        finetune may also be a list of torch module path prefixes ("features.17"). `size`: square
        input pixels (default the weights' 224)."""
        import importlib.util
        from .models import torch_zoo
        if name not in torch_zoo.STAGES:
            raise PersonalizeError(f"unknown pretrained base {name!r}; known: {sorted(torch_zoo.STAGES)}")
        if importlib.util.find_spec("torch") is None:
            raise PersonalizeError(f"the pretrained base {name!r} is imported from PyTorch: pip install torch")
        try:
            model = torch_zoo.feature_extractor(name)
        except (ModuleNotFoundError, FileNotFoundError) as e:
            raise PersonalizeError(str(e)) from None
        import torch
        from .importers import from_torch
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
        from .make_trainable import MakeTrainableError, TFLiteModule
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
        from .trace import ProgramBuilder
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


# -- the converted module ------------------------------------------------------------------------
def make_head(head, num_features, num_classes, max_classes=None) -> ClassifierHead:
    """A head from a spec: "softmax", "mlp" / "mlp:HIDDEN", a ClassifierHead, or a callable
    (num_features, num_classes) -> ClassifierHead. max_classes: a fixed-capacity head (a given
    head must have been made with the same max_classes)."""
    if isinstance(head, ClassifierHead):
        if head.num_features != num_features:
            raise PersonalizeError(f"the head takes {head.num_features} features but the base gives {num_features}")
        if max_classes is not None and head.max_classes != max_classes:
            raise PersonalizeError(f"max_classes={max_classes} but the given head was made with "
                                   f"max_classes={head.max_classes}")
        return head
    if callable(head):
        return make_head(head(num_features, num_classes), num_features, num_classes, max_classes)
    if head in ("softmax", "linear"):
        return SoftmaxClassifier(num_features, num_classes, max_classes=max_classes)
    if isinstance(head, str) and (head == "mlp" or head.startswith("mlp:")):
        hidden = int(head.split(":", 1)[1]) if ":" in head else 128
        return MLPHead(num_features, hidden, num_classes, max_classes=max_classes)
    raise PersonalizeError(f"unknown head {head!r}; use 'softmax', 'mlp', 'mlp:HIDDEN' or a ClassifierHead")


def _resizable(module):
    return [s for s in module.states() if getattr(s, "shape_signature", None) is not None]


def _class_rows(module, head):
    """A fixed-capacity head's class variables: its kernel and bias and the optimizer's slots for
    them (a slot of variable V is named "<slot>/<path of V>")."""
    own = {head.kernel.path, head.bias.path}
    slots = [s for s in module.states() if isinstance(s, Slot) and s._name.partition("/")[2] in own]
    return [head.kernel, head.bias] + slots


def sparse_cross_entropy(logits, labels, active=None):
    """Mean cross-entropy of logits [batch, classes] with integer labels [batch], for a class count
    known only at run time (labels are checked against it in the graph). `active`: the number of
    classes in use of a fixed-capacity head (logits [batch, capacity]); the other columns are
    masked out (probability exactly 0, no gradient)."""
    if active is None:
        n = ops.gather(ops.shape_of(logits), 1)
        classes = ops.arange(0, n, 1)
    else:
        n, classes = active, logits.fb.const(np.arange(int(logits.shape[-1]), dtype=np.int32))
        logits = masked_logits(logits, n)
    labels = checked_class(labels, n)
    onehot = ops.cast(ops.equal(ops.expand_dims(labels, -1), classes), logits.dtype)
    return ops.reduce_mean(ops.neg(ops.reduce_sum(ops.mul(onehot, ops.log_softmax(logits)), [-1])))


def _personalization_module(base: BaseModel, head: ClassifierHead, optimizer: Optimizer, finetune_params,
                            learning_rate: float):
    image = TensorSpec([None, *base.preprocessing.image_shape])
    bottleneck = TensorSpec([None, head.num_features])
    labels = TensorSpec([None], "int32")
    lr = TensorSpec([], "float32", default=learning_rate)
    row = head.kernel.value.shape[1]
    capacity = head.max_classes

    class Personalization(Module):
        def __init__(self):
            self.base = base.module
            self.head = head
            self.optimizer = optimizer

        def _probabilities(self, logits):
            if capacity is not None:  # [batch, n]: the classes in use, as a resizable head gives
                logits = active_logits(logits, logits.fb.read(self.head.active_classes))
            return {"probabilities": ops.softmax(logits), "logits": logits}

        def _loss(self, logits, labels):
            active = None if capacity is None else logits.fb.read(self.head.active_classes)
            return sparse_cross_entropy(logits, labels, active)

        @signature(images=image)
        def load(self, images):
            return {"bottleneck": base.features(images)}

        @signature(images=image)
        def infer(self, images):
            return self._probabilities(self.head(base.features(images)))

        @signature(bottlenecks=bottleneck)
        def infer_bottlenecks(self, bottlenecks):
            return self._probabilities(self.head(bottlenecks))

        @signature(bottlenecks=bottleneck, labels=labels, learning_rate=lr)
        def train(self, bottlenecks, labels, learning_rate):
            loss = self._loss(self.head(bottlenecks, training=True), labels)
            self.optimizer.minimize(loss, self.head.trainable_variables, learning_rate=learning_rate)
            return {"loss": loss}

        @signature(images=image, labels=labels, learning_rate=lr)
        def train_finetune(self, images, labels, learning_rate):
            loss = self._loss(self.head(base.features(images), training=True), labels)
            self.optimizer.minimize(loss, self.head.trainable_variables + list(finetune_params),
                                    learning_rate=learning_rate)
            return {"loss": loss}

        def _new_row(self, fb, kernel, bias_now, kernel_row, bias, mean_weight):
            """The new class's kernel row [1, row] and bias [1]: mean_weight * (the mean of the rows in
            use) + kernel_row / bias."""
            return (ops.add(ops.mul(ops.reduce_mean(kernel, [0], keepdims=True), mean_weight),
                            ops.reshape(kernel_row, [1, row])),
                    ops.add(ops.mul(ops.reduce_mean(bias_now, [0], keepdims=True), mean_weight),
                            ops.reshape(bias, [1])))

        @signature(kernel_row=TensorSpec([row], default=np.zeros(row, np.float32)),
                   bias=TensorSpec([], default=0.0), mean_weight=TensorSpec([], default=1.0))
        def add_class(self, kernel_row, bias, mean_weight):
            fb = kernel_row.fb
            if capacity is not None:
                return self._activate_row(fb, kernel_row, bias, mean_weight)
            kernel_new, bias_new = self._new_row(fb, fb.read(self.head.kernel), fb.read(self.head.bias),
                                                 kernel_row, bias, mean_weight)
            new = {self.head.kernel: kernel_new, self.head.bias: bias_new}
            for state in _resizable(self):  # the head's rows and the optimizer's slots for them
                value = fb.read(state)
                extra = new.get(state)
                if extra is None:
                    extra = fb.const(np.zeros((1, *state.value.shape[1:]), state.value.dtype))
                fb.assign(state, ops.concat([value, extra], 0))
            return {"num_classes": ops.gather(ops.shape_of(fb.read(self.head.bias)), 0)}

        def _activate_row(self, fb, kernel_row, bias, mean_weight):
            """Capacity mode: row n becomes the new class (its slots zero), n + 1 classes in use."""
            n = check_at_most(fb.read(self.head.active_classes), capacity - 1,
                              f"add_class: the head is full (all max_classes={capacity} classes are in use; "
                              "remove a class first)")
            grown = ops.add(n, 1)  # made first: the output must be the node common-subexpression elimination keeps
            used = ops.arange(0, n, 1)
            kernel_new, bias_new = self._new_row(fb, ops.gather(fb.read(self.head.kernel), used),
                                                 ops.gather(fb.read(self.head.bias), used),
                                                 kernel_row, bias, mean_weight)
            new = {self.head.kernel: kernel_new, self.head.bias: bias_new}
            for state in _class_rows(self, self.head):
                extra = new.get(state)
                if extra is None:
                    extra = fb.const(np.zeros((1, *state.value.shape[1:]), state.value.dtype))
                start = ops.concat([ops.reshape(n, [1])] + ([fb.const(np.zeros(state.value.ndim - 1, np.int32))]
                                                            if state.value.ndim > 1 else []), 0)
                fb.assign(state, ops.dynamic_update_slice(fb.read(state), extra, start))
            fb.assign(self.head.active_classes, grown)
            return {"num_classes": grown}

        @signature(index=TensorSpec([], "int32"))
        def remove_class(self, index):
            fb = index.fb
            if capacity is not None:
                n = fb.read(self.head.active_classes)
            else:
                n = ops.gather(ops.shape_of(fb.read(self.head.bias)), 0)
            # index in [0, n) and n >= 2 (GATHER from [1, n) fails for the last class), checked in the graph
            index = ops.add(checked_class(index, n), ops.mul(ops.gather(ops.arange(1, n, 1), 0), 0))
            if capacity is not None:
                left = ops.sub(n, 1)  # made first (see _activate_row)
                for state in _class_rows(self, self.head):
                    fb.assign(state, moved_up(fb.read(state), index, n))
                fb.assign(self.head.active_classes, left)
                return {"num_classes": left}
            for state in _resizable(self):
                fb.assign(state, without_row(fb.read(state), index, n))
            return {"num_classes": ops.gather(ops.shape_of(fb.read(self.head.bias)), 0)}

    return Personalization()


def trace_personalization(base, head="softmax", num_classes=2, optimizer=None, finetune=None,
                          portable_checkpoints=True, class_names=None, max_classes=None):
    """The Program of a personalization file (see `convert_personalization`)."""
    from .convert import trace_program
    if not isinstance(base, BaseModel):
        raise PersonalizeError(f"base must be a BaseModel (a Module with its preprocessing), got {type(base).__name__}")
    num_classes = int(num_classes)
    if num_classes < 1:
        raise PersonalizeError(f"num_classes must be at least 1, got {num_classes}")
    if max_classes is not None:
        max_classes = int(max_classes)
        if max_classes < num_classes:
            raise PersonalizeError(f"max_classes must be at least num_classes={num_classes}, got {max_classes}")
    names = list(class_names or [])
    if len(names) > num_classes or len(set(names)) != len(names):
        raise PersonalizeError(f"class_names {names} must be distinct and at most num_classes={num_classes}")
    head = make_head(head, base.num_features, num_classes, max_classes)
    if head.max_classes is not None and head.num_classes != num_classes:
        raise PersonalizeError(f"num_classes={num_classes} but the given fixed-capacity head has "
                               f"{head.num_classes} classes in use")
    optimizer = optimizer if optimizer is not None else Adam(0.001)
    if not isinstance(optimizer, Optimizer) or not isinstance(optimizer.learning_rate, (int, float)):
        raise PersonalizeError("optimizer must be a litetrain Optimizer with a float learning rate "
                               "(the learning rate is an input of the train signatures)")
    chosen = base.finetune_params(finetune) if finetune is not None else []
    owner = base.module.__dict__.get("_parent"), base.module.__dict__.get("_name")
    module = _personalization_module(base, head, optimizer, chosen, float(optimizer.learning_rate))
    sigs = ["load", "infer", "infer_bottlenecks", "train"] + (["train_finetune"] if chosen else []) + [
        "add_class", "remove_class", "save", "restore"]
    # The base's weights that no signature changes (all but the fine-tuned ones; the base runs in
    # inference mode, so its batch-norm statistics too) become constants of the file, not variables:
    # frozen batch norms fold into their convolutions at conversion, and save/restore, get_weights
    # and the Personalizer's states hold only what training changes.
    fine_tuned = {id(p) for p in chosen}
    frozen = [s for s in base.module.states() if id(s) not in fine_tuned]
    for state in frozen:
        state._as_constant = True
    try:
        program = trace_program(module, sigs, portable_checkpoints=portable_checkpoints)
    finally:
        for state in frozen:
            del state._as_constant
        # the base goes back to where it was, so that it can be converted again (other options)
        object.__setattr__(base.module, "_parent", owner[0])
        object.__setattr__(base.module, "_name", owner[1])
    program.metadata[METADATA_KEY] = json.dumps({
        "format": FORMAT, "base": base.name, "preprocessing": base.preprocessing.to_json(),
        "head": head.config(), "num_features": head.num_features, "num_classes": num_classes,
        "class_names": names, "learning_rate": float(optimizer.learning_rate),
        "optimizer": type(optimizer).__name__, "finetune": _describe_finetune(finetune, chosen),
        "head_kernel": head.kernel.path, "head_bias": head.bias.path, "max_classes": head.max_classes,
        "head_active_classes": None if head.max_classes is None else head.active_classes.path}).encode()
    return program


def _describe_finetune(finetune, chosen):
    if finetune is None:
        return None
    label = finetune if isinstance(finetune, (int, str)) else "params"
    return {"choice": label, "variables": [p.path for p in chosen]}


def convert_personalization(base, head="softmax", num_classes=2, optimizer=None, finetune=None,
                            portable_checkpoints=True, class_names=None, max_classes=None) -> bytes:
    """One .tflite file for transfer learning (signatures in the module doc).

    base: a BaseModel. head: "softmax", "mlp", "mlp:HIDDEN", a ClassifierHead or a callable
    (num_features, num_classes) -> head. num_classes: the head's classes at first (it grows and
    shrinks on the device). optimizer: a litetrain Optimizer with a float learning rate (default
    Adam(0.001)); the rate is the default of the train signatures' `learning_rate` input.
    finetune: None (head only), an int N (the base's last N stages), "bias" or "trainable" or a
    list of the base's Params: adds `train_finetune`. portable_checkpoints: save/restore pass
    tensors (stock LiteRT runs every signature). class_names: names of the first classes, stored
    in the metadata. max_classes: None (the head is resized on the device: any number of classes,
    but LiteRT needs its delegates off) or K (a fixed-capacity head of K rows, up to K classes in
    use: every variable has a static shape, so LiteRT's default XNNPACK delegate runs it too)."""
    from .tflite import write_model
    return write_model(trace_personalization(base, head, num_classes, optimizer, finetune,
                                             portable_checkpoints, class_names, max_classes))


def read_metadata(model) -> dict:
    """The personalization metadata of a file's bytes or of a read Program (PersonalizeError when it
    has none)."""
    from .tflite import read_model
    program = model if hasattr(model, "metadata") else read_model(bytes(model))
    raw = program.metadata.get(METADATA_KEY)
    if raw is None:
        raise PersonalizeError(f"this .tflite file has no {METADATA_KEY!r} metadata: it was not made by "
                               "litetrain.personalize.convert_personalization")
    try:
        meta = json.loads(bytes(raw).decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PersonalizeError(f"the {METADATA_KEY!r} metadata is not JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise PersonalizeError(f"the {METADATA_KEY!r} metadata has an unknown format")
    return meta


# -- base models by name ----------------------------------------------------------------------------
PRETRAINED_BASES = ("mobilenet_v2", "efficientnet_lite0")


def base_from_name(name: str, size=None) -> BaseModel:
    """A base model by name: "mobilenet_v2" or "efficientnet_lite0" (pretrained on ImageNet, imported
    from PyTorch by `BaseModel.from_torch_zoo`; `size` default 224), or "mobilenet_v2-ALPHA"
    (litetrain's own MobileNetV2, untrained: its initial weights, ImageNet normalisation; `size`
    pixels square, default 96)."""
    from .models import MobileNetV2
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
