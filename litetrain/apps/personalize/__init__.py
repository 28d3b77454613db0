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

Where things live: base.py holds what the base model declares (`Preprocessing`, `BaseModel`,
`base_from_name`); model.py the converted Module (its signatures, the head, the loss); file.py
the file format (`trace_personalization`, `convert_personalization`, `read_metadata`);
personalizer.py the `Personalizer`; images.py image reading and resizing; the `litetrain
personalize` command is litetrain/cli/personalize.py.
"""
from .base import PRETRAINED_BASES, BaseModel, PersonalizeError, Preprocessing, base_from_name
from .file import FORMAT, METADATA_KEY, convert_personalization, read_metadata, trace_personalization
from .model import make_head, sparse_cross_entropy
from .personalizer import Personalizer

__all__ = ["PRETRAINED_BASES", "BaseModel", "PersonalizeError", "Preprocessing", "base_from_name", "FORMAT",
           "METADATA_KEY", "convert_personalization", "read_metadata", "trace_personalization", "make_head",
           "sparse_cross_entropy", "Personalizer"]
