"""Classify surnames by language with a small transformer written in PyTorch, imported into one .tflite
file and trained on the device, beside the same model trained in PyTorch.

The names are the faker package's real surnames (examples/surnames.py reads them: en_US, de_DE, fr_FR,
it_IT, es_ES, nl_NL, fi_FI, cs_CZ; a name under two languages is dropped). Characters become token
ids (0 pads; names are cut at 16 characters). The model is PyTorch's own: nn.Embedding (padding_idx 0)
plus learned positions, two pre-norm nn.TransformerEncoderLayers (multi-head self-attention with the
padding mask computed from the ids inside the model, GELU feed-forward, LayerNorm), a masked mean over
the characters, LayerNorm and a linear classifier.

`lt.importers.from_torch` exports it (dynamic batch, int64 ids) and the converted file's `train`
signature runs Adam on the device; the PyTorch model trains from the same initial weights on the same
batches in the same order. Both are scored on the same held-out names.

    python examples/transformer_surnames.py [--epochs 8]
"""
from __future__ import annotations

import argparse
import importlib.util
import pathlib
import time

import numpy as np

import litetrain as lt

LENGTH = 16


def _surnames():
    """examples/surnames.py, for its data loading (load_surnames, split, vocabulary)."""
    path = pathlib.Path(__file__).resolve().with_name("surnames.py")
    spec = importlib.util.spec_from_file_location("surnames_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def encode(names, vocab, length=LENGTH):
    """ids [n, length] int64 (0 pads; characters outside vocab dropped; longer names cut)."""
    ids = np.zeros((len(names), length), np.int64)
    for i, name in enumerate(names):
        row = [vocab[c] for c in name if c in vocab][:length]
        ids[i, :len(row)] = row
    return ids


def torch_model(vocab_size, classes, d=32, heads=4, layers=2, ff=64, seed=0):
    import torch
    nn = torch.nn

    class SurnameTransformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab_size, d, padding_idx=0)
            self.position = nn.Parameter(torch.randn(1, LENGTH, d) * 0.1)
            layer = nn.TransformerEncoderLayer(d, heads, ff, dropout=0.0, batch_first=True, norm_first=True,
                                               activation="gelu")
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(d)
            self.head = nn.Linear(d, classes)

        def forward(self, ids):
            pad = ids == 0
            h = self.encoder(self.embed(ids) + self.position, src_key_padding_mask=pad)
            keep = (~pad).unsqueeze(-1).float()
            return self.head(self.norm((h * keep).sum(1) / keep.sum(1).clamp(min=1.0)))

    torch.manual_seed(seed)
    return SurnameTransformer()


def device_file(model, learning_rate):
    """The imported model in one file: train(ids, labels) -> loss (Adam), infer(ids) -> logits."""
    import torch
    net = lt.importers.from_torch(model, torch.ones(2, LENGTH, dtype=torch.int64), trainable="all")

    class OnDevice(lt.Module):
        def __init__(self):
            self.net = net
            self.loss = lt.losses.SparseCategoricalCrossentropy(from_logits=True)
            self.optimizer = lt.optim.Adam(learning_rate)

        @lt.signature(ids=lt.TensorSpec([None, LENGTH], "int32"), labels=lt.TensorSpec([None], "int32"))
        def train(self, ids, labels):
            loss = self.loss(labels, self.net(ids, training=True))
            self.optimizer.minimize(loss, self.net.trainable_variables)
            return {"loss": loss}

        @lt.signature(ids=lt.TensorSpec([None, LENGTH], "int32"))
        def infer(self, ids):
            return {"logits": self.net(ids)}

    return lt.convert(OnDevice(), signatures=["train", "infer"])


def run(epochs=8, batch_size=64, learning_rate=3e-3, limit=None, seed=0, verbose=True):
    """Train on the device and in PyTorch; a dict of losses, accuracies and times. `limit` keeps only
    the first names of the training split (a quick run)."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: threads only contend (timings are per step, like ours)
    try:
        return _run(torch, epochs, batch_size, learning_rate, limit, seed, verbose)
    finally:
        torch.set_num_threads(threads)


def _run(torch, epochs, batch_size, learning_rate, limit, seed, verbose):
    data = _surnames()
    names, labels, languages = data.load_surnames()
    (train_names, train_labels), (test_names, test_labels) = data.split(names, labels, seed=seed)
    if limit:
        train_names, train_labels = train_names[:limit], train_labels[:limit]
    vocab = data.vocabulary(train_names)
    model = torch_model(len(vocab) + 1, len(languages), seed=seed)
    content = device_file(model, learning_rate)  # the imported weights are the model's initial ones
    interpreter = lt.Interpreter(model_content=content)
    train, infer = interpreter.get_signature_runner("train"), interpreter.get_signature_runner("infer")
    x, rng = encode(train_names, vocab), np.random.default_rng(seed)
    steps = [order[s:s + batch_size] for order in (rng.permutation(len(x)) for _ in range(epochs))
             for s in range(0, len(x), batch_size)]
    opt = torch.optim.Adam(model.parameters(), lr=learning_rate)
    model.train()
    ours, theirs, t_ours, t_theirs = [], [], 0.0, 0.0
    for idx in steps:
        ids, y = x[idx], train_labels[idx]
        start = time.perf_counter()
        ours.append(float(train(ids=ids.astype(np.int32), labels=y)["loss"]))
        t_ours += time.perf_counter() - start
        start = time.perf_counter()
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(ids)), torch.from_numpy(y).long())
        loss.backward()
        opt.step()
        t_theirs += time.perf_counter() - start
        theirs.append(loss.item())
    test_ids = encode(test_names, vocab)
    model.eval()
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(test_ids)).numpy()
    logits = infer(ids=test_ids.astype(np.int32))["logits"]
    result = {"languages": languages, "train_names": len(train_names), "test_names": len(test_names),
              "steps": len(steps), "losses": np.array(ours), "torch_losses": np.array(theirs),
              "accuracy": float(np.mean(logits.argmax(-1) == test_labels)),
              "torch_accuracy": float(np.mean(torch_logits.argmax(-1) == test_labels)),
              "agreement": float(np.mean(logits.argmax(-1) == torch_logits.argmax(-1))),
              "chance": float(np.max(np.bincount(test_labels)) / len(test_labels)),
              "seconds": t_ours, "torch_seconds": t_theirs, "file_bytes": len(content)}
    if verbose:
        _report(result, batch_size)
    return result


def _report(r, batch_size):
    print(f"{r['train_names'] + r['test_names']} surnames in {len(r['languages'])} languages; {r['train_names']} to "
          f"train, {r['test_names']} to test; {r['steps']} Adam steps of {batch_size}; "
          f"file {r['file_bytes'] / 1024:.0f} KiB")
    print(f"{'':10}{'final loss':>12}{'test accuracy':>15}{'train time':>12}")
    print(f"{'litetrain':10}{np.mean(r['losses'][-20:]):12.4f}{r['accuracy']:15.3f}{r['seconds']:11.1f}s")
    print(f"{'PyTorch':10}{np.mean(r['torch_losses'][-20:]):12.4f}{r['torch_accuracy']:15.3f}{r['torch_seconds']:11.1f}s")
    print(f"predictions agree on {100 * r['agreement']:.1f}% of the test names; largest class alone: {r['chance']:.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    args = parser.parse_args()
    run(args.epochs, args.batch_size, args.learning_rate)
