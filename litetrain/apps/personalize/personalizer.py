"""The `Personalizer`: personalise a classifier on the device from one personalization .tflite file
(its format and signatures: the doc of litetrain.apps.personalize): add samples, train, predict, save
and resume, on litetrain's interpreter or LiteRT's."""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field

import numpy as np

from ...ops import checkpoint
from ...runtime.interpreter import Interpreter
from ..continual.replay import reservoir_slots
from .base import PersonalizeError, Preprocessing
from .file import FORMAT, convert_personalization, read_metadata
from .images import prepare_images


@dataclass
class _Samples:
    bottlenecks: list = field(default_factory=list)  # [num_features] float32 each
    labels: list = field(default_factory=list)       # class index each
    images: list = field(default_factory=list)       # prepared images, kept when fine-tuning is possible


class Personalizer:
    """Personalise a classifier on the device from one personalization .tflite file.

        p = Personalizer.create(BaseModel(net, preprocessing), head="softmax", path="model.tflite")
        p.add_samples(cat_images, "cat"); p.add_samples(dog_images, "dog")
        p.train(epochs=10, progress=print)
        p.predict(images)          # class names
        p.save("state/")           # weights, optimizer state, class names, cached samples
        Personalizer("model.tflite").resume("state/")

    backend: "litetrain" (NumPy only) or "litert" (ai_edge_litert's Interpreter; needs a portable
    file): with its default XNNPACK delegate for a fixed-capacity file (`max_classes`), with the
    builtin kernels only for a resizable one (see the doc of litetrain.apps.personalize). Each class is a row of the
    head; `classes` holds their names (None for a row no name has claimed yet: a new label takes
    such a row before the head grows). `max_classes`: the file's capacity (None: resizable)."""

    def __init__(self, model, backend: str = "litetrain"):
        if isinstance(model, (str, os.PathLike)):
            with open(model, "rb") as f:
                model = f.read()
        self.model = bytes(model)
        if backend == "litetrain":
            self._interpreter = _make_interpreter(self.model, backend)
            self.meta = read_metadata(self._interpreter._program)  # litetrain's has read the file already
        else:
            self.meta = read_metadata(self.model)
            self._interpreter = _make_interpreter(self.model, backend, self.meta.get("max_classes"))
        self.max_classes = self.meta.get("max_classes")
        self.preprocessing = Preprocessing.from_any(self.meta["preprocessing"])
        self.num_features = int(self.meta["num_features"])
        self.learning_rate = float(self.meta["learning_rate"])
        self.backend = backend
        sigs = self._interpreter.get_signature_list()
        self.can_finetune = "train_finetune" in sigs
        self.portable = "checkpoint_path" not in sigs["save"]["inputs"]
        if backend == "litert" and not self.portable:
            raise PersonalizeError("LiteRT cannot run a file with checkpoint-file save/restore (custom ops); "
                                   "convert with portable_checkpoints=True")
        self._runners = {}
        names = list(self.meta.get("class_names") or [])
        self.classes = names + [None] * (int(self.meta["num_classes"]) - len(names))
        self._samples = _Samples()
        self._stale = False  # bottlenecks computed before the base changed
        self._reservoir = None  # (capacity, rng, samples seen) once bound_samples was called

    @classmethod
    def create(cls, base, head="softmax", num_classes=1, optimizer=None, finetune=None, path=None,
               backend="litetrain", class_names=None, max_classes=None) -> "Personalizer":
        """Convert `base` + `head` (see `convert_personalization`), write the file to `path` if given."""
        data = convert_personalization(base, head, num_classes, optimizer, finetune, True, class_names, max_classes)
        if path is not None:
            _atomic_write(path, data)
        return cls(data, backend=backend)

    # -- signatures ------------------------------------------------------------------------------
    def _run(self, name, **inputs):
        runner = self._runners.get(name)
        if runner is None:
            runner = self._runners[name] = self._interpreter.get_signature_runner(name)
        return runner(**inputs)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    # -- classes ---------------------------------------------------------------------------------
    def class_index(self, label) -> int:
        """The index of a class given by name or index (PersonalizeError if unknown)."""
        if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
            if not 0 <= label < len(self.classes):
                raise PersonalizeError(f"class index {label} is out of range: the head has {len(self.classes)} classes")
            return int(label)
        if label in self.classes and label is not None:
            return self.classes.index(label)
        known = [c for c in self.classes if c is not None]
        raise PersonalizeError(f"unknown class {label!r}; known classes: {known}")

    def add_class(self, name) -> int:
        """A new class: takes an unnamed row of the head, else grows the head by one (`add_class`
        signature; the existing classes keep their weights; a fixed-capacity head must have a row
        free). Returns its index."""
        if not isinstance(name, str) or not name:
            raise PersonalizeError(f"a class name must be a non-empty string, got {name!r}")
        if name in self.classes:
            raise PersonalizeError(f"class {name!r} already exists")
        if None in self.classes:
            index = self.classes.index(None)
            self.classes[index] = name
            return index
        if self.max_classes is not None and len(self.classes) >= self.max_classes:
            raise PersonalizeError(f"cannot add class {name!r}: the head is full (all max_classes="
                                   f"{self.max_classes} classes are in use); remove a class or convert "
                                   "with a larger max_classes")
        row = self._head_row_size()
        out = self._run("add_class", kernel_row=np.zeros(row, np.float32), bias=np.float32(0),
                        mean_weight=np.float32(1))
        self.classes.append(name)
        assert int(out["num_classes"]) == len(self.classes)
        return len(self.classes) - 1

    def remove_class(self, label) -> None:
        """Remove a class (by name or index) from the head, with its samples; later classes move
        down one index. The last class cannot be removed."""
        index = self.class_index(label)
        if len(self.classes) == 1:
            raise PersonalizeError("cannot remove the only class of the head")
        self._run("remove_class", index=np.int32(index))
        del self.classes[index]
        s = self._samples
        keep = [k for k, y in enumerate(s.labels) if y != index]
        s.bottlenecks = [s.bottlenecks[k] for k in keep]
        s.images = [s.images[k] for k in keep] if s.images else []
        s.labels = [y - (y > index) for y in (s.labels[k] for k in keep)]

    def _head_row_size(self) -> int:
        head = self.meta["head"]
        return int(head.get("hidden", head["num_features"]))

    # -- samples ---------------------------------------------------------------------------------
    def bottlenecks(self, images, batch_size=32) -> np.ndarray:
        """The base's features of `images` (arrays or files), via the `load` signature."""
        x = prepare_images(images, self.preprocessing)
        return self._load(x, batch_size)

    def _load(self, x, batch_size=32):
        return np.concatenate([self._run("load", images=x[i:i + batch_size])["bottleneck"]
                               for i in range(0, len(x), batch_size)])

    def add_samples(self, images, label, batch_size=32) -> int:
        """Add images of class `label` (a name, new or known, or an index); computes and caches their
        bottlenecks. Returns how many samples the class has now."""
        x = prepare_images(images, self.preprocessing)
        if isinstance(label, str) and label not in self.classes:
            feats = self._load(x, batch_size)  # before the class exists: a bad image adds no class
            index = self.add_class(label)
        else:
            index = self.class_index(label)
            feats = self._load(x, batch_size)
        self._keep(list(feats.astype(np.float32)), [index] * len(x), list(x) if self.can_finetune else None)
        return sum(1 for y in self._samples.labels if y == index)

    def bound_samples(self, capacity: int, seed=0) -> "Personalizer":
        """Keep at most `capacity` samples, in the manner of a replay buffer: from now on the samples
        kept are a reservoir sample of every sample added (each kept with the same chance,
        litetrain.apps.continual.replay), so memory stays fixed however many are added. Samples
        already held beyond the capacity are thinned the same way. (Not saved with `save`.)"""
        if int(capacity) < 1:
            raise PersonalizeError(f"capacity must be at least 1, got {capacity}")
        s, self._samples = self._samples, _Samples()
        self._reservoir = [int(capacity), np.random.default_rng(seed), 0]
        self._keep(s.bottlenecks, s.labels, s.images if self.can_finetune else None)
        return self

    def _keep(self, bottlenecks, labels, images):
        s = self._samples
        if self._reservoir is None:
            s.bottlenecks.extend(bottlenecks)
            s.labels.extend(labels)
            s.images.extend(images or [])
            return
        capacity, rng, seen = self._reservoir
        for k, slot in enumerate(reservoir_slots(seen, len(labels), capacity, rng)):
            if slot < 0:
                continue
            if slot == len(s.labels):
                s.bottlenecks.append(bottlenecks[k])
                s.labels.append(labels[k])
                if images is not None:
                    s.images.append(images[k])
            else:
                s.bottlenecks[slot], s.labels[slot] = bottlenecks[k], labels[k]
                if images is not None:
                    s.images[slot] = images[k]
        self._reservoir[2] = seen + len(labels)

    @property
    def num_samples(self) -> int:
        return len(self._samples.labels)

    def _refresh(self, batch_size=32):
        if self._stale and self._samples.images:
            self._samples.bottlenecks = list(self._load(np.stack(self._samples.images), batch_size))
        self._stale = False

    # -- training and prediction -----------------------------------------------------------------
    def train(self, epochs=1, batch_size=16, learning_rate=None, finetune=False, shuffle=True, seed=None,
              progress=None) -> list:
        """Train for `epochs` passes over the samples (head only on cached bottlenecks, or with
        `finetune` the base's chosen weights too, on images). progress(epoch, epochs, loss) is called
        after each epoch. Returns each epoch's mean loss."""
        if int(epochs) < 1 or int(batch_size) < 1:
            raise PersonalizeError(f"epochs and batch_size must be positive, got {epochs} and {batch_size}")
        if finetune and not self.can_finetune:
            raise PersonalizeError("this file has no train_finetune signature: convert with finetune=...")
        if not self._samples.labels:
            raise PersonalizeError("no samples: call add_samples first")
        lr = np.float32(self.learning_rate if learning_rate is None else learning_rate)
        if not np.isfinite(lr) or lr < 0:
            raise PersonalizeError(f"learning_rate must be finite and >= 0, got {learning_rate}")
        if not finetune:
            self._refresh()
        labels = np.asarray(self._samples.labels, np.int32)
        data = np.stack(self._samples.images if finetune else self._samples.bottlenecks).astype(np.float32)
        rng = np.random.default_rng(seed)
        history = []
        for epoch in range(int(epochs)):
            order = rng.permutation(len(labels)) if shuffle else np.arange(len(labels))
            total = 0.0
            for i in range(0, len(order), int(batch_size)):
                idx = order[i:i + int(batch_size)]
                if finetune:
                    out = self._run("train_finetune", images=data[idx], labels=labels[idx], learning_rate=lr)
                    self._stale = True
                else:
                    out = self._run("train", bottlenecks=data[idx], labels=labels[idx], learning_rate=lr)
                total += float(out["loss"]) * len(idx)
            history.append(total / len(labels))
            if progress is not None:
                progress(epoch + 1, int(epochs), history[-1])
        return history

    def predict_proba(self, images, batch_size=32) -> np.ndarray:
        """Probabilities [N, num_classes] (columns in the order of `classes`)."""
        x = prepare_images(images, self.preprocessing)
        return np.concatenate([self._run("infer", images=x[i:i + batch_size])["probabilities"]
                               for i in range(0, len(x), batch_size)])

    def predict(self, images, batch_size=32) -> list:
        """The most probable class of each image: its name (its index for an unnamed row)."""
        best = np.argmax(self.predict_proba(images, batch_size), axis=-1)
        return [self.classes[k] if self.classes[k] is not None else int(k) for k in best]

    # -- state -----------------------------------------------------------------------------------
    def variables(self) -> dict:
        """Every variable of the file (weights and optimizer state) by path."""
        if not self.portable:
            return {k: v for k, v in self._interpreter.get_variables().items()}
        return {k: np.array(v) for k, v in self._run("save").items()}

    def save(self, directory) -> None:
        """Write the state to `directory`: weights.safetensors (every variable, the class names in
        its metadata), samples.npz (cached bottlenecks, labels and images). Each file is replaced
        atomically."""
        os.makedirs(directory, exist_ok=True)
        meta = {"format": str(FORMAT), "classes": json.dumps(self.classes), "num_features": str(self.num_features)}
        weights = os.path.join(directory, "weights.safetensors")
        if self.portable:
            checkpoint.save(weights, self.variables(), meta)
        else:
            self._run("save", checkpoint_path=np.array(weights, dtype=object))
            found = checkpoint.load(weights)
            checkpoint.save(weights, found, meta)
        s = self._samples
        arrays = {"bottlenecks": np.asarray(s.bottlenecks, np.float32).reshape(-1, self.num_features),
                  "labels": np.asarray(s.labels, np.int32),
                  "images": np.asarray(s.images, np.float32).reshape(-1, *self.preprocessing.image_shape),
                  "stale": np.asarray(self._stale)}
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".npz.tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, os.path.join(directory, "samples.npz"))

    def resume(self, directory) -> "Personalizer":
        """Load a state written by `save` (into this file's interpreter: the head takes the saved
        number of classes). A state that does not fit leaves this Personalizer as it was."""
        weights = os.path.join(directory, "weights.safetensors")
        if not os.path.isfile(weights):
            raise PersonalizeError(f"{directory!r} holds no weights.safetensors: not a saved Personalizer state")
        found, meta = checkpoint.load_with_metadata(weights)
        try:
            classes = json.loads(meta["classes"])
            if int(meta["num_features"]) != self.num_features:
                raise PersonalizeError(f"the state is for {meta['num_features']} features; this model has "
                                       f"{self.num_features}")
        except (KeyError, ValueError, TypeError) as e:
            raise PersonalizeError(f"{weights!r} is not a Personalizer state: {e}") from None
        kernel = found.get(self.meta["head_kernel"])
        if self.max_classes is None:
            rows, fits = None if kernel is None or kernel.ndim != 2 else kernel.shape[0], True
        else:  # the kernel has max_classes rows; the count in use is a variable
            active = found.get(self.meta["head_active_classes"])
            rows = None if active is None or active.shape != () else int(active)
            fits = kernel is not None and kernel.shape[:1] == (self.max_classes,)
        if rows != len(classes) or not fits:
            raise PersonalizeError(f"{weights!r}: the head's kernel does not match its {len(classes)} class names"
                                   + ("" if self.max_classes is None else f" and max_classes={self.max_classes}"))
        with np.load(os.path.join(directory, "samples.npz")) as z:  # object (pickled) arrays are refused
            labels = z["labels"].astype(np.int64)
            bottlenecks, images, stale = z["bottlenecks"], z["images"], bool(z["stale"])
        if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
            raise PersonalizeError(f"{directory!r}: sample labels do not fit the {len(classes)} classes")
        if self.portable:
            self._run("restore", **found)
        else:
            self._run("restore", checkpoint_path=np.array(weights, dtype=object))
        self.classes = list(classes)
        self._samples = _Samples(list(bottlenecks), [int(y) for y in labels],
                                 list(images) if self.can_finetune else [])
        self._stale = stale
        return self


def _make_interpreter(model: bytes, backend: str, max_classes=None):
    if backend == "litetrain":
        return Interpreter(model_content=model)
    if backend == "litert":
        try:
            from ai_edge_litert.interpreter import Interpreter as LiteRTInterpreter
            from ai_edge_litert.interpreter import OpResolverType
        except ImportError:
            raise PersonalizeError("backend='litert' needs the ai-edge-litert package") from None
        if max_classes is not None:  # every variable has a static shape: the default (XNNPACK) is right
            return LiteRTInterpreter(model_content=model)
        # a resizable head: builtin kernels without the XNNPACK delegate, which keeps a resource
        # variable at its first shape (see litetrain.apps.personalize's doc)
        return LiteRTInterpreter(model_content=model,
                                 experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    raise PersonalizeError(f"unknown backend {backend!r}; use 'litetrain' or 'litert'")


def _atomic_write(path, data: bytes):
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
