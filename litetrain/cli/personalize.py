"""The `litetrain personalize create|add|train|predict|remove` command: a `Personalizer` driven
from the shell, its state (weights, class names, cached bottlenecks) kept in a directory."""
from __future__ import annotations

import os
import sys

import numpy as np

from ..apps.personalize import base as personalize_base
from ..apps.personalize import PersonalizeError, Personalizer
from ..apps.plot import PlotError, save_curves
from ..frontend.optim import Adam
from ..ops import checkpoint
from ..tflite import InvalidModelError


def add_command(commands) -> None:
    p = commands.add_parser("personalize", help="transfer learning on the device: create, add, train, predict",
                            description="Create a personalization .tflite file (a base model and a classifier "
                                        "head), add labelled images, train, and predict. The state (weights, "
                                        "class names, cached bottlenecks) lives in a directory (--state).")
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    c = sub.add_parser("create", help="write a personalization .tflite file")
    c.add_argument("--base", default="mobilenet_v2",
                   help="mobilenet_v2 (the default) | efficientnet_lite0: pretrained on ImageNet, need torch and the "
                        "weights' pip package | mobilenet_v2-ALPHA: litetrain's untrained net, for tests (its random "
                        "features teach a head little)")
    c.add_argument("--size", type=int, default=None,
                   help="input pixels, square (default 224 for the pretrained bases, 96 otherwise)")
    c.add_argument("--head", default="softmax", help="softmax | mlp | mlp:HIDDEN (default softmax)")
    c.add_argument("--finetune", default=None,
                   help="also train the base: N (last N stages) | bias | trainable | comma-separated module "
                        "path prefixes (e.g. features.17,features.18 for the pretrained mobilenet_v2)")
    c.add_argument("--learning-rate", type=float, default=0.001, help="Adam's default learning rate")
    c.add_argument("--max-classes", type=int, default=None,
                   help="a fixed-capacity head of K rows (up to K classes; every variable has a static shape, "
                        "so LiteRT's default XNNPACK delegate runs the file); default: a resizable head")
    c.add_argument("--out", required=True, help="where to write the .tflite file")
    for name, text in (("add", "add images of one class"), ("train", "train for some epochs"),
                       ("predict", "print the most probable class of images"), ("remove", "remove a class")):
        a = sub.add_parser(name, help=text)
        a.add_argument("--model", required=True, help="the personalization .tflite file")
        a.add_argument("--state", required=True, help="the state directory (created by the first `add`)")
        if name in ("add", "remove"):
            a.add_argument("--label", required=True, help="the class name")
        if name in ("add", "predict"):
            a.add_argument("images", nargs="+", help="image files")
        if name == "train":
            a.add_argument("--epochs", type=int, default=10)
            a.add_argument("--batch-size", type=int, default=16)
            a.add_argument("--learning-rate", type=float, default=None)
            a.add_argument("--finetune", action="store_true", help="also train the base's chosen weights")
            a.add_argument("--quiet", action="store_true")
            a.add_argument("--plot", metavar="PNG", help="also draw the loss per epoch into PNG")


def run_command(args) -> int:
    try:
        if args.action == "create":
            finetune = args.finetune
            if finetune is not None and finetune.isdigit():
                finetune = int(finetune)
            elif finetune is not None and finetune not in ("bias", "biases", "trainable"):
                finetune = [p for p in finetune.split(",") if p]
            if args.base not in personalize_base.PRETRAINED_BASES:
                print(f"litetrain personalize: warning: the base {args.base!r} is untrained: its features are random, "
                      "so a head trained on them learns little; --base mobilenet_v2 is pretrained", file=sys.stderr)
            base = personalize_base.base_from_name(args.base, args.size)
            p = Personalizer.create(base, head=args.head, finetune=finetune,
                                    optimizer=Adam(args.learning_rate), path=args.out,
                                    max_classes=args.max_classes)
            print(f"wrote {args.out}: signatures {', '.join(p._interpreter.get_signature_list())}")
            return 0
        p = Personalizer(args.model)
        if os.path.isfile(os.path.join(args.state, "weights.safetensors")):
            p.resume(args.state)
        elif args.action != "add":
            raise PersonalizeError(f"no state in {args.state!r}: add samples first")
        if args.action == "add":
            n = p.add_samples(args.images, args.label)
            p.save(args.state)
            print(f"class {args.label!r}: {n} samples; classes: {[c for c in p.classes if c is not None]}")
        elif args.action == "remove":
            p.remove_class(args.label)
            p.save(args.state)
            print(f"removed {args.label!r}; classes: {[c for c in p.classes if c is not None]}")
        elif args.action == "train":
            report = None if args.quiet else (lambda e, n, loss: print(f"epoch {e}/{n}: loss {loss:.4f}"))
            history = p.train(args.epochs, args.batch_size, args.learning_rate, finetune=args.finetune, progress=report)
            p.save(args.state)
            if args.plot:
                save_curves(args.plot, {"loss": history}, title="personalization: training loss")
                print(f"loss plot: {args.plot}")
        elif args.action == "predict":
            probs = p.predict_proba(args.images)
            for path, row in zip(args.images, probs):
                k = int(np.argmax(row))
                print(f"{path}: {p.classes[k] if p.classes[k] is not None else k} ({row[k]:.3f})")
        return 0
    except OSError as e:
        print(f"litetrain personalize: {e.filename}: {e.strerror or e}", file=sys.stderr)
    except (PersonalizeError, InvalidModelError, checkpoint.CheckpointError, PlotError) as e:
        print(f"litetrain personalize: {e}", file=sys.stderr)
    return 2
