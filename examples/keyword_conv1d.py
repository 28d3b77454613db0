"""Recognise who speaks a short utterance with a keyword-spotting style 1-D convolutional network written in
PyTorch, imported into one .tflite file and trained on the device, beside the same model trained in PyTorch.

The data are the UCI Japanese Vowels recordings (9 male speakers saying the vowels /ae/; each utterance a
sequence of 7 to 29 frames of 12 LPC cepstrum coefficients; 270 utterances to train, 370 to test), as
the sktime package ships them: its data files are read directly (`pip install --no-deps sktime==1.2.0`
is enough; nothing of sktime is imported). Utterances are zero-padded to 29 frames, and a mask of the
real frames is the model's second input.

The model is a keyword-spotting network: Conv1d + BatchNorm1d + ReLU blocks (the second dilated), a
masked mean over the real frames, and a linear classifier over the speakers. `lt.importers.from_torch`
imports it with its two inputs; the converted file's `train` signature runs Adam on the device (batch
norm in training mode, its running statistics updated) and `infer` uses the running statistics. The
PyTorch model trains from the same initial weights on the same batches in the same order.

    python examples/keyword_conv1d.py [--epochs 40]
"""
from __future__ import annotations

import argparse
import importlib.util
import pathlib
import time

import numpy as np

import litetrain as lt

FRAMES, COEFFICIENTS, SPEAKERS = 29, 12, 9
INSTALL_HINT = "pip install --no-deps sktime==1.2.0 (only its data files are read)"


def data_dir() -> pathlib.Path:
    spec = importlib.util.find_spec("sktime")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the Japanese Vowels data come with the sktime package: {INSTALL_HINT}")
    return pathlib.Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "JapaneseVowels"


def load(split):
    """(x [n, 12, 29] float32 zero-padded, mask [n, 29] float32 (1 for real frames), speaker [n] int64)
    from the .ts file of `split` ("TRAIN" or "TEST"): one utterance a line, its 12 coefficient series
    separated by ':', the speaker (1-9) last."""
    lines = (data_dir() / f"JapaneseVowels_{split}.ts").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().lower() == "@data") + 1
    rows = [line.split(":") for line in lines[start:] if line.strip()]
    x = np.zeros((len(rows), COEFFICIENTS, FRAMES), np.float32)
    mask = np.zeros((len(rows), FRAMES), np.float32)
    speaker = np.zeros(len(rows), np.int64)
    for i, fields in enumerate(rows):
        series = np.array([[float(v) for v in f.split(",")] for f in fields[:-1]], np.float32)
        x[i, :, :series.shape[1]] = series
        mask[i, :series.shape[1]] = 1.0
        speaker[i] = int(fields[-1]) - 1
    return x, mask, speaker


def torch_model(seed=0, width=32):
    import torch
    nn = torch.nn

    class KeywordNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv1d(COEFFICIENTS, width, 3, padding=1, bias=False), nn.BatchNorm1d(width), nn.ReLU(),
                nn.Conv1d(width, width, 3, padding=2, dilation=2, bias=False), nn.BatchNorm1d(width), nn.ReLU(),
                nn.Conv1d(width, width, 3, padding=1, bias=False), nn.BatchNorm1d(width), nn.ReLU())
            self.head = nn.Linear(width, SPEAKERS)

        def forward(self, x, mask):
            h = self.features(x) * mask.unsqueeze(1)  # padded frames out of the mean
            return self.head(h.sum(-1) / mask.sum(-1, keepdim=True))

    torch.manual_seed(seed)
    return KeywordNet()


def device_file(model, x, mask, learning_rate):
    """The imported model in one file: train(x, mask, labels) -> loss (Adam), infer(x, mask) -> logits."""
    import torch
    net = lt.importers.from_torch(model, (torch.from_numpy(x[:2]), torch.from_numpy(mask[:2])), trainable="all")

    class OnDevice(lt.Module):
        def __init__(self):
            self.net = net
            self.loss = lt.losses.SparseCategoricalCrossentropy(from_logits=True)
            self.optimizer = lt.optim.Adam(learning_rate)

        @lt.signature(x=lt.TensorSpec([None, COEFFICIENTS, FRAMES]), mask=lt.TensorSpec([None, FRAMES]),
                      labels=lt.TensorSpec([None], "int32"))
        def train(self, x, mask, labels):
            loss = self.loss(labels, self.net(x, mask, training=True))
            self.optimizer.minimize(loss, self.net.trainable_variables)
            return {"loss": loss}

        @lt.signature(x=lt.TensorSpec([None, COEFFICIENTS, FRAMES]), mask=lt.TensorSpec([None, FRAMES]))
        def infer(self, x, mask):
            return {"logits": self.net(x, mask)}

    return lt.convert(OnDevice(), signatures=["train", "infer"])


def run(epochs=40, batch_size=32, learning_rate=3e-3, seed=0, verbose=True):
    """Train on the device and in PyTorch; a dict of losses, accuracies and times."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: threads only contend (timings are per step, like ours)
    try:
        return _run(torch, epochs, batch_size, learning_rate, seed, verbose)
    finally:
        torch.set_num_threads(threads)


def _run(torch, epochs, batch_size, learning_rate, seed, verbose):
    (x, mask, y), (tx, tmask, ty) = load("TRAIN"), load("TEST")
    mean = (x.sum((0, 2)) / mask.sum())[None, :, None]  # per-coefficient standardisation, from training data
    std = np.sqrt((((x - mean) * mask[:, None]) ** 2).sum((0, 2)) / mask.sum())[None, :, None]
    x = ((x - mean) / std * mask[:, None]).astype(np.float32)
    tx = ((tx - mean) / std * tmask[:, None]).astype(np.float32)
    model = torch_model(seed)
    content = device_file(model, x, mask, learning_rate)
    interpreter = lt.Interpreter(model_content=content)
    train, infer = interpreter.get_signature_runner("train"), interpreter.get_signature_runner("infer")
    rng = np.random.default_rng(seed)
    steps = [order[s:s + batch_size] for order in (rng.permutation(len(x)) for _ in range(epochs))
             for s in range(0, len(x), batch_size)]
    opt = torch.optim.Adam(model.parameters(), lr=learning_rate)
    model.train()
    ours, theirs, t_ours, t_theirs = [], [], 0.0, 0.0
    for idx in steps:
        start = time.perf_counter()
        ours.append(float(train(x=x[idx], mask=mask[idx], labels=y[idx].astype(np.int32))["loss"]))
        t_ours += time.perf_counter() - start
        start = time.perf_counter()
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x[idx]), torch.from_numpy(mask[idx])),
                                                 torch.from_numpy(y[idx]))
        loss.backward()
        opt.step()
        t_theirs += time.perf_counter() - start
        theirs.append(loss.item())
    model.eval()
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(tx), torch.from_numpy(tmask)).numpy()
    logits = infer(x=tx, mask=tmask)["logits"]
    result = {"train": len(x), "test": len(tx), "steps": len(steps), "losses": np.array(ours),
              "torch_losses": np.array(theirs), "accuracy": float(np.mean(logits.argmax(-1) == ty)),
              "torch_accuracy": float(np.mean(torch_logits.argmax(-1) == ty)),
              "agreement": float(np.mean(logits.argmax(-1) == torch_logits.argmax(-1))),
              "seconds": t_ours, "torch_seconds": t_theirs, "file_bytes": len(content)}
    if verbose:
        print(f"Japanese Vowels: {len(x)} utterances to train, {len(tx)} to test, {SPEAKERS} speakers; "
              f"{len(steps)} Adam steps of {batch_size}; file {len(content) / 1024:.0f} KiB")
        print(f"{'':10}{'final loss':>12}{'test accuracy':>15}{'train time':>12}")
        print(f"{'litetrain':10}{np.mean(ours[-9:]):12.4f}{result['accuracy']:15.3f}{t_ours:11.1f}s")
        print(f"{'PyTorch':10}{np.mean(theirs[-9:]):12.4f}{result['torch_accuracy']:15.3f}{t_theirs:11.1f}s")
        print(f"predictions agree on {100 * result['agreement']:.1f}% of the test utterances")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    args = parser.parse_args()
    run(args.epochs, args.batch_size, args.learning_rate)
