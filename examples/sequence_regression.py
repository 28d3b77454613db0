"""Forecast the yearly sunspot number with an LSTM trained on the device, beside the same model in
PyTorch.

The series is the yearly mean sunspot number 1700-2008 that statsmodels ships
(statsmodels.datasets.sunspots; read straight from its CSV file). Each training step takes a
batch of windows of one random length between 10 and 30 years (a different length on almost
every call of the file's `train` signature) and predicts the year after each window. The model is
LSTM(32) -> Dense(1) on values scaled by 1/100, trained with Adam on the mean squared error, on the
years before 1920. It is then scored on every year from 1930 on, each predicted from the 30 years
before it, against PyTorch's twin (same initial weights, same batches) and against persistence
(next year = this year). Without torch installed, the twin is skipped with a note.

    python examples/sequence_regression.py [--steps 300]
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import time

import numpy as np

import litetrain as lt
from litetrain.frontend.nn.recurrent import torch_state_dict

SCALE = 100.0
TRAIN_UNTIL, TEST_FROM, WINDOW = 1920, 1930, 30


def load_sunspots():
    """(years, values): the yearly sunspot numbers that statsmodels ships."""
    spec = importlib.util.find_spec("statsmodels")
    if spec is None:
        raise ImportError("the sunspot series comes with statsmodels: pip install statsmodels")
    path = os.path.join(spec.submodule_search_locations[0], "datasets", "sunspots", "sunspots.csv")
    data = np.loadtxt(path, delimiter=",", skiprows=1)
    return data[:, 0].astype(int), data[:, 1].astype(np.float32)


def training_batches(series, steps, batch_size=32, lengths=(10, 30), seed=0):
    """`steps` batches of windows [batch, length, 1] (one random length per batch) and next values."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        length = int(rng.integers(lengths[0], lengths[1] + 1))
        starts = rng.integers(0, len(series) - length, batch_size)
        x = np.stack([series[s:s + length] for s in starts])[..., None]
        y = np.array([series[s + length] for s in starts], np.float32)[:, None]
        out.append((x.astype(np.float32), y))
    return out


def test_windows(years, series, first_year=TEST_FROM, window=WINDOW):
    idx = np.nonzero(years >= first_year)[0]
    x = np.stack([series[i - window:i] for i in idx])[..., None].astype(np.float32)
    return x, series[idx][:, None], series[idx - 1][:, None]


class SunspotForecaster(lt.Module):
    def __init__(self, hidden=32, max_length=40, learning_rate=0.01):
        self.rnn = lt.nn.LSTM(hidden, max_sequence_length=max_length, input_dim=1)
        self.head = lt.nn.Dense(1, input_dim=hidden)
        self.loss = lt.losses.MeanSquaredError()
        self.optimizer = lt.optim.Adam(learning_rate)

    @lt.signature(x=lt.TensorSpec([None, None, 1]), y=lt.TensorSpec([None, 1]))
    def train(self, x, y):
        loss = self.loss(y, self.head(self.rnn(x)))
        self.optimizer.minimize(loss, self.trainable_variables)
        return {"loss": loss}

    @lt.signature(x=lt.TensorSpec([None, None, 1]))
    def infer(self, x):
        return {"y": self.head(self.rnn(x))}


def torch_twin(model: SunspotForecaster):
    import torch

    class Twin(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.LSTM(1, model.rnn.units, batch_first=True)
            self.head = torch.nn.Linear(model.rnn.units, 1)
            with torch.no_grad():
                for k, v in torch_state_dict(model.rnn).items():
                    getattr(self.rnn, k).copy_(torch.from_numpy(v))
                self.head.weight.copy_(torch.from_numpy(model.head.kernel.value))
                self.head.bias.copy_(torch.from_numpy(model.head.bias.value))
            # litetrain's LSTM has one bias, PyTorch's two (bias_ih + bias_hh): the twin keeps bias_hh
            # at zero, so that it is the same model and trains the same way
            self.rnn.bias_hh_l0.requires_grad_(False)

        def forward(self, x):
            _, (h, _) = self.rnn(x)
            return self.head(h[-1])

    return Twin()


def torch_or_none():
    """torch, or None when it is not installed (the PyTorch twin is then skipped, as `litetrain demo`
    skips its reference)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


NO_TORCH = "skipped: PyTorch is not installed (pip install torch==2.13.0, or pip install '.[torch]')"


def run(steps=300, seed=0, verbose=True):
    """Train on the device and in PyTorch; returns a dict of losses, errors and times (the PyTorch
    entries None, and `torch_note` saying why, when torch is not installed)."""
    torch = torch_or_none()
    if torch is None:
        return _run(None, steps, seed, verbose)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: threads only contend
    try:
        return _run(torch, steps, seed, verbose)
    finally:
        torch.set_num_threads(threads)


def _run(torch, steps, seed, verbose):
    years, values = load_sunspots()
    series = values / SCALE
    model = SunspotForecaster()
    twin = torch_twin(model) if torch is not None else None
    data = lt.convert(model, signatures=["train", "infer"])
    interpreter = lt.Interpreter(model_content=data)
    train, infer = interpreter.get_signature_runner("train"), interpreter.get_signature_runner("infer")
    opt = torch.optim.Adam(twin.parameters(), lr=model.optimizer.learning_rate) if torch is not None else None
    batches = training_batches(series[years < TRAIN_UNTIL], steps, seed=seed)
    ours, theirs, t_ours, t_theirs = [], [], 0.0, 0.0
    for x, y in batches:
        start = time.perf_counter()
        ours.append(float(train(x=x, y=y)["loss"]))
        t_ours += time.perf_counter() - start
        if torch is None:
            continue
        start = time.perf_counter()
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(twin(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        opt.step()
        t_theirs += time.perf_counter() - start
        theirs.append(loss.item())
    x, y, last = test_windows(years, series)
    rmse = lambda p: float(np.sqrt(np.mean((p - y) ** 2)) * SCALE)  # noqa: E731  (in sunspot numbers)
    result = {"steps": steps, "lengths": [b[0].shape[1] for b in batches], "losses": np.array(ours),
              "torch_losses": None, "rmse": rmse(infer(x=x)["y"]), "torch_rmse": None,
              "persistence_rmse": rmse(last), "test_years": len(y), "seconds": t_ours, "torch_seconds": None,
              "torch_note": NO_TORCH}
    if torch is not None:
        with torch.no_grad():
            torch_pred = twin(torch.from_numpy(x)).numpy()
        result.update(torch_losses=np.array(theirs), torch_rmse=rmse(torch_pred), torch_seconds=t_theirs,
                      torch_note=None)
    if verbose:
        _report(result, years)
    return result


def _report(result, years):
    ours, theirs = result["losses"], result["torch_losses"]
    print(f"sunspots {years[0]}-{years[-1]}: {result['steps']} steps on years before {TRAIN_UNTIL} (window "
          f"lengths {min(result['lengths'])}-{max(result['lengths'])}); test: {result['test_years']} years "
          f"from {TEST_FROM}")
    print(f"{'':12}{'final loss':>12}{'test RMSE':>12}{'train time':>12}")
    print(f"{'litetrain':12}{np.mean(ours[-20:]):12.5f}{result['rmse']:12.2f}{result['seconds']:11.1f}s")
    if theirs is None:
        print(f"{'PyTorch':12}{result['torch_note']}")
    else:
        print(f"{'PyTorch':12}{np.mean(theirs[-20:]):12.5f}{result['torch_rmse']:12.2f}"
              f"{result['torch_seconds']:11.1f}s")
    print(f"{'persistence':12}{'':12}{result['persistence_rmse']:12.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    run(parser.parse_args().steps)
