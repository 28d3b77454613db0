"""The personalization file: tracing and converting the personalization Module with its frozen
base as constants, and the metadata that makes the file alone enough for a Personalizer."""
from __future__ import annotations

import json

from ...frontend.convert import trace_program
from ...frontend.optim import Adam, Optimizer
from ...tflite import read_model, write_model
from .base import BaseModel, PersonalizeError
from .model import personalization_module, make_head

METADATA_KEY = "litetrain_personalize"
FORMAT = 1


def trace_personalization(base, head="softmax", num_classes=2, optimizer=None, finetune=None,
                          portable_checkpoints=True, class_names=None, max_classes=None):
    """The Program of a personalization file (see `convert_personalization`)."""
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
    module = personalization_module(base, head, optimizer, chosen, float(optimizer.learning_rate))
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
    return write_model(trace_personalization(base, head, num_classes, optimizer, finetune,
                                             portable_checkpoints, class_names, max_classes))


def read_metadata(model) -> dict:
    """The personalization metadata of a file's bytes or of a read Program (PersonalizeError when it
    has none)."""
    program = model if hasattr(model, "metadata") else read_model(bytes(model))
    raw = program.metadata.get(METADATA_KEY)
    if raw is None:
        raise PersonalizeError(f"this .tflite file has no {METADATA_KEY!r} metadata: it was not made by "
                               "litetrain.convert_personalization")
    try:
        meta = json.loads(bytes(raw).decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PersonalizeError(f"the {METADATA_KEY!r} metadata is not JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise PersonalizeError(f"the {METADATA_KEY!r} metadata has an unknown format")
    return meta
