"""`litetrain make-trainable IN OUT`: turn an inference .tflite file into a trainable one."""
from __future__ import annotations

import argparse
import sys

from ..importers.tflite import LOSSES, MakeTrainableError, find_layers, make_trainable
from ..tflite import InvalidModelError, read_model


def add_command(commands) -> None:
    p = commands.add_parser("make-trainable", help="turn an inference .tflite file into a trainable one",
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                            description="Read an inference .tflite file, make the chosen weights trainable, add a "
                                        "loss on an output and an optimizer, and write a .tflite file with train, "
                                        "infer, save and restore signatures.")
    p.add_argument("input", help="the inference .tflite file")
    p.add_argument("output", help="where to write the trainable .tflite file")
    p.add_argument("--trainable", default="last:1",
                   help="all | biases | last:N | comma-separated layer or weight names or globs")
    p.add_argument("--output-name", default=None, help="the serving output the loss is computed on")
    p.add_argument("--loss", default="sparse_categorical_crossentropy", choices=LOSSES,
                   help="the loss on that output (labels: class indices for sparse_categorical_crossentropy)")
    p.add_argument("--from-logits", choices=("auto", "yes", "no"), default="auto",
                   help="whether the output is logits (auto: unless it comes from SOFTMAX or LOGISTIC)")
    p.add_argument("--optimizer", default="sgd", choices=("sgd", "adam", "adamw", "rmsprop", "adagrad"),
                   help="the optimizer of the train signature")
    p.add_argument("--learning-rate", type=float, default=0.01, help="its learning rate")
    p.add_argument("--signature", default=None, help="the signature to train (when the file has several)")
    p.add_argument("--portable-checkpoints", action="store_true",
                   help="save/restore pass tensors, so the file has builtin ops only (stock LiteRT runs it)")
    p.add_argument("--list-layers", action="store_true", help="print the layers and their weights, then stop")


def run_command(args) -> int:
    try:
        with open(args.input, "rb") as f:
            data = f.read()
        if args.list_layers:
            for layer in find_layers(read_model(data), args.signature):
                shapes = ", ".join(f"{w.role} {list(w.value.shape)}" for w in layer.weights)
                print(f"{layer.name}  ({layer.op}: {shapes})")
            return 0
        trainable = args.trainable
        if trainable not in ("all", "biases") and not trainable.startswith("last:"):
            trainable = [p.strip() for p in trainable.split(",") if p.strip()]
        content = make_trainable(data, trainable, output=args.output_name, loss=args.loss,
                                 from_logits={"auto": None, "yes": True, "no": False}[args.from_logits],
                                 optimizer=args.optimizer, learning_rate=args.learning_rate,
                                 signature=args.signature, portable_checkpoints=args.portable_checkpoints)
    except OSError as e:
        print(f"litetrain make-trainable: {e.filename}: {e.strerror or e}", file=sys.stderr)
        return 2
    except (MakeTrainableError, InvalidModelError) as e:
        print(f"litetrain make-trainable: {str(e).replace('output=', '--output-name')}", file=sys.stderr)
        return 2
    try:
        with open(args.output, "wb") as f:
            f.write(content)
    except OSError as e:
        print(f"litetrain make-trainable: cannot write {args.output}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(f"wrote {args.output} ({len(content)} bytes): signatures train, infer, save, restore")
    return 0
