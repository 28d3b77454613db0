"""Classify surnames by language with a character-level GRU trained on the device, beside the same
model in PyTorch.

The names are the real surnames in the faker package's person providers (en_US, de_DE, fr_FR,
...), one language per locale; a name that appears under two languages is dropped. Characters
become ids (0 pads), the model is Embedding -> GRU (masked: padded steps carry the state) ->
Dense, trained with Adam on cross-entropy. Batches are padded to their own longest name, so the
`train` signature of the one .tflite file runs loops of a different length on almost every call.

The PyTorch twin starts from the same weights (the GRU's gates reordered to PyTorch's layout),
sees the same batches in the same order, and packs its padded sequences. Both are scored on the
same held-out names. Without torch installed, the twin is skipped with a note.

    python examples/surnames.py [--epochs 12] [--cell GRU]
"""
from __future__ import annotations

import argparse
import importlib
import time

import numpy as np

import litetrain as lt
from litetrain.frontend.nn.recurrent import torch_state_dict

LANGUAGES = {"English": "en_US", "German": "de_DE", "French": "fr_FR", "Italian": "it_IT", "Spanish": "es_ES",
             "Dutch": "nl_NL", "Finnish": "fi_FI", "Czech": "cs_CZ"}


def load_surnames(languages=LANGUAGES):
    """(names, labels, language names): every surname of the providers, lower-cased, sorted."""
    seen: dict[str, set] = {}
    for label, locale in enumerate(languages.values()):
        provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        for name in provider.last_names:  # a tuple, or a dict of name -> frequency
            seen.setdefault(name.strip().lower(), set()).add(label)
    names = sorted(n for n, labels in seen.items() if len(labels) == 1 and n)
    return names, np.array([next(iter(seen[n])) for n in names], np.int32), list(languages)


def split(names, labels, test_fraction=0.2, seed=0):
    order = np.random.default_rng(seed).permutation(len(names))
    cut = int(len(names) * (1 - test_fraction))
    pick = lambda idx: ([names[i] for i in idx], labels[idx])  # noqa: E731
    return pick(order[:cut]), pick(order[cut:])


def vocabulary(names):
    return {c: i + 1 for i, c in enumerate(sorted({c for n in names for c in n}))}  # 0 pads


def encode(names, vocab):
    """ids [n, longest] (0 pads; characters not in vocab are dropped) and lengths [n]."""
    rows = [[vocab[c] for c in n if c in vocab] or [0] for n in names]
    ids = np.zeros((len(rows), max(map(len, rows))), np.int32)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
    return ids, np.array([len(r) for r in rows], np.int64)


def batches(names, labels, vocab, batch_size, epochs, seed=0):
    """Shuffled batches, each padded to its own longest name."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(epochs):
        order = rng.permutation(len(names))
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            ids, lengths = encode([names[i] for i in idx], vocab)
            out.append((ids, lengths, labels[idx]))
    return out


class SurnameClassifier(lt.Module):
    def __init__(self, vocab_size, classes, embed=32, hidden=64, cell="GRU", max_length=48, learning_rate=0.005):
        self.embed = lt.nn.Embedding(vocab_size, embed)
        self.rnn = getattr(lt.nn, cell)(hidden, max_sequence_length=max_length, input_dim=embed)
        self.head = lt.nn.Dense(classes, input_dim=hidden)
        self.loss = lt.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.optimizer = lt.optim.Adam(learning_rate)

    def logits(self, ids):
        return self.head(self.rnn(self.embed(ids), mask=lt.ops.not_equal(ids, 0)))

    @lt.signature(ids=lt.TensorSpec([None, None], "int32"), labels=lt.TensorSpec([None], "int32"))
    def train(self, ids, labels):
        loss = self.loss(labels, self.logits(ids))
        self.optimizer.minimize(loss, self.trainable_variables)
        return {"loss": loss}

    @lt.signature(ids=lt.TensorSpec([None, None], "int32"))
    def infer(self, ids):
        return {"logits": self.logits(ids)}


def torch_twin(model: SurnameClassifier):
    """The same network in PyTorch, from the litetrain model's initial weights."""
    import torch

    class Twin(torch.nn.Module):
        def __init__(self):
            super().__init__()
            rnn = model.rnn
            self.embed = torch.nn.Embedding(*model.embed.embeddings.value.shape)
            self.rnn = getattr(torch.nn, type(rnn).__name__)(rnn.input_dim, rnn.units, batch_first=True)
            self.head = torch.nn.Linear(rnn.units, model.head.units)
            with torch.no_grad():
                self.embed.weight.copy_(torch.from_numpy(model.embed.embeddings.value))
                for k, v in torch_state_dict(rnn).items():
                    getattr(self.rnn, k).copy_(torch.from_numpy(v))
                self.head.weight.copy_(torch.from_numpy(model.head.kernel.value))
                self.head.bias.copy_(torch.from_numpy(model.head.bias.value))

        def forward(self, ids, lengths):
            packed = torch.nn.utils.rnn.pack_padded_sequence(self.embed(ids), lengths, batch_first=True,
                                                             enforce_sorted=False)
            _, h = self.rnn(packed)
            return self.head((h[0] if isinstance(h, tuple) else h)[-1])

    return Twin()


def accuracy(logits, labels):
    return float(np.mean(np.argmax(logits, -1) == labels))


def torch_or_none():
    """torch, or None when it is not installed (the PyTorch twin is then skipped, as `litetrain demo`
    skips its reference)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


NO_TORCH = "skipped: PyTorch is not installed (pip install torch==2.13.0, or pip install '.[torch]')"


def run(epochs=12, cell="GRU", batch_size=64, seed=0, verbose=True):
    """Train on the device and in PyTorch; returns a dict of losses, accuracies and times (the
    PyTorch entries None, and `torch_note` saying why, when torch is not installed)."""
    torch = torch_or_none()
    if torch is None:
        return _run(None, epochs, cell, batch_size, seed, verbose)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: threads only contend (timings are per step, like ours)
    try:
        return _run(torch, epochs, cell, batch_size, seed, verbose)
    finally:
        torch.set_num_threads(threads)


def _run(torch, epochs, cell, batch_size, seed, verbose):
    names, labels, languages = load_surnames()
    (train_names, train_labels), (test_names, test_labels) = split(names, labels, seed=seed)
    vocab = vocabulary(train_names)
    model = SurnameClassifier(len(vocab) + 1, len(languages), cell=cell)
    twin = torch_twin(model) if torch is not None else None  # before conversion: the model's weights are the initial ones
    data = lt.convert(model, signatures=["train", "infer"])
    interpreter = lt.Interpreter(model_content=data)
    train, infer = interpreter.get_signature_runner("train"), interpreter.get_signature_runner("infer")
    steps = batches(train_names, train_labels, vocab, batch_size, epochs, seed=seed)
    opt = torch.optim.Adam(twin.parameters(), lr=model.optimizer.learning_rate) if torch is not None else None
    ours, theirs, t_ours, t_theirs = [], [], 0.0, 0.0
    for ids, lengths, y in steps:
        start = time.perf_counter()
        ours.append(float(train(ids=ids, labels=y)["loss"]))
        t_ours += time.perf_counter() - start
        if torch is None:
            continue
        start = time.perf_counter()
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(twin(torch.from_numpy(ids).long(), torch.from_numpy(lengths)),
                                                 torch.from_numpy(y).long())
        loss.backward()
        opt.step()
        t_theirs += time.perf_counter() - start
        theirs.append(loss.item())
    test_ids, test_lengths = encode(test_names, vocab)
    result = {"languages": languages, "train_names": len(train_names), "test_names": len(test_names),
              "steps": len(steps), "losses": np.array(ours), "torch_losses": None,
              "accuracy": accuracy(infer(ids=test_ids)["logits"], test_labels), "torch_accuracy": None,
              "chance": float(np.max(np.bincount(test_labels)) / len(test_labels)),
              "seconds": t_ours, "torch_seconds": None, "file_bytes": len(data), "torch_note": NO_TORCH}
    if torch is not None:
        with torch.no_grad():
            torch_logits = twin(torch.from_numpy(test_ids).long(), torch.from_numpy(test_lengths)).numpy()
        result.update(torch_losses=np.array(theirs), torch_accuracy=accuracy(torch_logits, test_labels),
                      torch_seconds=t_theirs, torch_note=None)
    if verbose:
        _report(result, len(names), batch_size)
    return result


def _report(result, total_names, batch_size):
    ours, theirs = result["losses"], result["torch_losses"]
    print(f"{total_names} surnames in {len(result['languages'])} languages ({', '.join(result['languages'])}); "
          f"{result['train_names']} to train, {result['test_names']} to test; {result['steps']} steps of {batch_size}")
    print(f"{'':10}{'final loss':>12}{'test accuracy':>15}{'train time':>12}")
    print(f"{'litetrain':10}{np.mean(ours[-20:]):12.4f}{result['accuracy']:15.3f}{result['seconds']:11.1f}s")
    if theirs is None:
        print(f"{'PyTorch':10}{result['torch_note']}")
    else:
        print(f"{'PyTorch':10}{np.mean(theirs[-20:]):12.4f}{result['torch_accuracy']:15.3f}"
              f"{result['torch_seconds']:11.1f}s")
    print(f"(always guessing the largest class: {result['chance']:.3f})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--cell", default="GRU", choices=["SimpleRNN", "LSTM", "GRU"])
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    run(args.epochs, args.cell, args.batch_size)
