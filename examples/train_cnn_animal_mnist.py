"""Train a small CNN on Animal MNIST on the device, from one .tflite file, beside PyTorch.

    python examples/train_cnn_animal_mnist.py [--epochs 3] [--batch-size 32] [--out DIR] [--no-reference]

The model is litetrain.models.SmallCNN: two [3x3 conv -> batch norm -> ReLU -> 2x2 max pool] blocks
(32 and 64 filters), Dense(128, relu), Dense(10). It is converted once to a .tflite file with
train/infer/save/restore signatures whose gradients (convolutions' as TRANSPOSE_CONV and CONV_2D,
max pooling's as ARG_MAX/ONE_HOT, batch norm's as plain arithmetic) are TFLite builtins; litetrain's
interpreter trains it with NumPy only, saves a checkpoint, and a fresh interpreter restored from it
reports the test accuracy (batch norm then uses its moving averages).

The PyTorch reference is the same network built by tools.torch_mirror.to_torch from
the same initial weights, trained on the same float32 batches (x / 255) in the same order with the
same optimizer (SGD with momentum 0.9, the learning rate decayed from 0.01 to 0 on a cosine over
the run), cross-entropy with mean reduction, and evaluated in eval mode. The decay matters for the
comparison: at a constant rate two runs that differ only in float32 rounding (torch's float32 and
float64) end a few tenths of a point apart, and with a larger rate over a point. tests/test_cnn.py (test_cnn_example_accuracy_is_within_one_point_of_pytorch, slow) runs this example and requires the two test accuracies to agree
within one percentage point. Without torch installed, the reference is skipped with a note (as
`litetrain demo` skips its own).
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

import numpy as np

import litetrain as lt
from litetrain.apps.demo import Protocol, one_hot, predict, preprocess
from litetrain.apps.demo.reference import torch_available
from litetrain.models import SmallCNN, image_classifier

SIGNATURES = ["train", "infer", "save", "restore"]
PROTOCOL = Protocol(epochs=3, batch_size=32, optimizer="sgd", learning_rate=0.01, momentum=0.9, shuffle_seed=0)
NO_TORCH = "skipped: PyTorch is not installed (pip install torch==2.13.0, or pip install '.[torch]')"


def cosine(step, total):
    """The learning rate's factor at `step` (counted from 0) of `total`."""
    return 0.5 * (1 + math.cos(math.pi * min(step, total) / total))


def litetrain_optimizer(protocol, total):
    return lt.optim.SGD(lt.optim.CosineDecay(protocol.learning_rate, decay_steps=total), momentum=protocol.momentum)


def images(x):
    """uint8 [N, 28, 28] -> float32 NHWC [N, 28, 28, 1] in [0, 1]."""
    return preprocess(x)[..., None]


def run(protocol: Protocol = PROTOCOL, out_dir="cnn_out", reference=True, progress=True) -> dict:
    from litetrain.apps.demo.data import load_animal_mnist
    began = time.perf_counter()
    train_images, train_labels, test_images, test_labels = load_animal_mnist()
    train_x, train_y, test_x = images(train_images), one_hot(train_labels), images(test_images)
    batches = protocol.batches(len(train_x))

    net = SmallCNN(num_classes=10, input_shape=(28, 28, 1))
    note = None
    if reference and not torch_available():
        reference, note = False, NO_TORCH
    if reference:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))  # tools/
        from tools.torch_mirror import to_torch
        twin = to_torch(net)  # the same initial weights, before any training
    os.makedirs(out_dir, exist_ok=True)
    model_path, checkpoint_path = os.path.join(out_dir, "animal_cnn.tflite"), os.path.join(out_dir, "animal_cnn.ckpt")
    with open(model_path, "wb") as f:
        f.write(lt.convert(image_classifier(net, (28, 28, 1), 10, litetrain_optimizer(protocol, len(batches))),
                           SIGNATURES))

    interpreter = lt.Interpreter(model_path=model_path)
    train = interpreter.get_signature_runner("train")
    losses, step_times = [], []
    per_epoch = -(-len(train_x) // protocol.batch_size)
    for step, idx in enumerate(batches, 1):
        t0 = time.perf_counter()
        losses.append(float(train(x=train_x[idx], y=train_y[idx])["loss"]))
        step_times.append(time.perf_counter() - t0)
        if progress and step % per_epoch == 0:
            print(f"epoch {step // per_epoch}/{protocol.epochs}: mean loss {np.mean(losses[-per_epoch:]):.4f}, "
                  f"{time.perf_counter() - began:.0f}s", file=sys.stderr, flush=True)
    interpreter.get_signature_runner("save")(checkpoint_path=checkpoint_path)
    fresh = lt.Interpreter(model_path=model_path)
    fresh.get_signature_runner("restore")(checkpoint_path=checkpoint_path)
    predictions = predict(fresh.get_signature_runner("infer"), test_x)
    results = {"test_accuracy": float(np.mean(predictions == test_labels)),
               "final_loss": float(np.mean(losses[-per_epoch:])), "losses": np.asarray(losses),
               "median_step_ms": 1e3 * statistics.median(step_times), "steps": len(batches),
               "file_size_bytes": os.path.getsize(model_path), "reference_accuracy": None, "reference_note": note}
    if reference:
        results.update(_reference(twin, protocol, train_x, train_y, test_x, test_labels, batches, predictions))
    results["elapsed_s"] = time.perf_counter() - began
    return results


def _reference(twin, protocol, train_x, train_y, test_x, test_labels, batches, predictions):
    import torch
    twin.train()
    opt = torch.optim.SGD(twin.parameters(), lr=protocol.learning_rate, momentum=protocol.momentum)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: cosine(step, len(batches)))
    x_all, y_all = torch.from_numpy(train_x), torch.from_numpy(train_y)
    losses, step_times = [], []
    for idx in batches:
        idx = torch.from_numpy(np.asarray(idx, np.int64))
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(twin(x_all[idx]), y_all[idx])
        loss.backward()
        opt.step()
        schedule.step()
        step_times.append(time.perf_counter() - t0)
        losses.append(loss.item())
    twin.eval()
    with torch.no_grad():
        ref = np.concatenate([twin(torch.from_numpy(test_x[i:i + 500])).argmax(-1).numpy()
                              for i in range(0, len(test_x), 500)])
    per_epoch = -(-len(train_x) // protocol.batch_size)
    return {"reference_accuracy": float(np.mean(ref == test_labels)), "reference_final_loss": float(np.mean(losses[-per_epoch:])),
            "prediction_agreement": float(np.mean(ref == predictions)),
            "reference_median_step_ms": 1e3 * statistics.median(step_times)}


def format_results(r: dict, protocol: Protocol = PROTOCOL) -> str:
    lines = [f"Animal MNIST small CNN (conv32-bn-pool, conv64-bn-pool, dense128, dense10), sgd lr={protocol.learning_rate:g} "
             f"(cosine decay) momentum {protocol.momentum:g}, {protocol.epochs} epochs x {r['steps'] // protocol.epochs} steps of batch "
             f"{protocol.batch_size}",
             f"  litetrain test accuracy : {100 * r['test_accuracy']:.2f}%  (fresh interpreter restored from the checkpoint)"]
    if r["reference_accuracy"] is not None:
        lines += [f"  PyTorch reference       : {100 * r['reference_accuracy']:.2f}%  (difference "
                  f"{100 * (r['test_accuracy'] - r['reference_accuracy']):+.2f} points; predictions agree on "
                  f"{100 * r['prediction_agreement']:.1f}%)",
                  f"  last-epoch mean loss    : litetrain {r['final_loss']:.4f}, PyTorch {r['reference_final_loss']:.4f}",
                  f"  median train step       : litetrain {r['median_step_ms']:.1f} ms, PyTorch eager "
                  f"{r['reference_median_step_ms']:.1f} ms"]
    else:
        if r.get("reference_note"):
            lines.append(f"  PyTorch reference       : {r['reference_note']}")
        lines.append(f"  median train step       : {r['median_step_ms']:.1f} ms")
    lines.append(f"  model file              : {r['file_size_bytes'] / 1024:.0f} KiB; total time {r['elapsed_s']:.0f} s")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=PROTOCOL.epochs)
    parser.add_argument("--batch-size", type=int, default=PROTOCOL.batch_size)
    parser.add_argument("--out", default="cnn_out", help="where the .tflite file and checkpoint go")
    parser.add_argument("--no-reference", action="store_true", help="skip the PyTorch reference")
    args = parser.parse_args(argv)
    from dataclasses import replace
    protocol = replace(PROTOCOL, epochs=args.epochs, batch_size=args.batch_size)
    print(format_results(run(protocol, args.out, reference=not args.no_reference), protocol))
    return 0


if __name__ == "__main__":
    sys.exit(main())
