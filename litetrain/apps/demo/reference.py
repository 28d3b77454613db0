"""The demo's PyTorch reference: the same MLP, the same initial weights, the same protocol.

`train_reference` trains torch's Flatten -> Linear(784, 128) -> ReLU -> Linear(128, 10) from the
initial weights of litetrain's converted file (a Dense kernel is [units, input_dim], the layout
of torch's Linear.weight, so weights are copied as they are), on the same float32 inputs, in the
same batches and order, with the same optimizer and hyperparameters and cross-entropy with mean
reduction; then it reports test accuracy. torch is imported inside the functions, so litetrain
itself never needs it.
"""
from __future__ import annotations

import contextlib

import numpy as np

# litetrain variable path -> (torch layer index in the Sequential, parameter name)
WEIGHT_MAP = {
    "net/dense/kernel": (1, "weight"), "net/dense/bias": (1, "bias"),
    "net/dense_1/kernel": (3, "weight"), "net/dense_1/bias": (3, "bias"),
}


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def build_mlp(hidden=128, inputs=784, classes=10):
    import torch
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(inputs, hidden), torch.nn.ReLU(),
                               torch.nn.Linear(hidden, classes))


def copy_weights(net, weights: dict) -> None:
    """Set `net`'s parameters from litetrain's weights by path; every one must be present with
    the parameter's exact shape."""
    import torch
    missing = sorted(set(WEIGHT_MAP) - set(weights))
    if missing:
        raise KeyError(f"weights lack {missing}; got {sorted(weights)}")
    with torch.no_grad():
        for path, (layer, name) in WEIGHT_MAP.items():
            param = getattr(net[layer], name)
            value = np.asarray(weights[path], dtype=np.float32)
            if tuple(value.shape) != tuple(param.shape):
                raise ValueError(f"{path}: litetrain shape {list(value.shape)}, torch {list(param.shape)}")
            param.copy_(torch.from_numpy(np.ascontiguousarray(value)))


def make_optimizer(params, optimizer: str, learning_rate: float, momentum: float = 0.0):
    import torch
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=learning_rate)
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=learning_rate, momentum=momentum)
    raise ValueError(f"unknown optimizer {optimizer!r}; the demo knows 'adam' and 'sgd'")


@contextlib.contextmanager
def _torch_threads(n):
    """torch's intra-op threads set to `n` inside the block (0: leave as is)."""
    import torch
    previous = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield torch
    finally:
        torch.set_num_threads(previous)


def train_reference(weights, train_x, train_y, batches, optimizer, learning_rate, momentum=0.0, threads=1):
    """Train the torch MLP from `weights` on float32 `train_x` and one-hot `train_y` over
    `batches` (index arrays, in order); returns (net, per-step losses).

    `threads`: torch's intra-op threads while training (restored after; 0 leaves torch's
    default). One by default: for batches this small a second thread saves nothing on an idle
    2-core machine, and when other processes share the cores torch's threads wait on each other
    (an epoch measured 0.15 s with one thread, up to 2.2 s with two, in the same minute)."""
    with _torch_threads(threads) as torch:
        net = build_mlp(hidden=np.asarray(weights["net/dense/kernel"]).shape[0])
        copy_weights(net, weights)
        opt = make_optimizer(net.parameters(), optimizer, learning_rate, momentum)
        x_all, y_all = torch.from_numpy(train_x), torch.from_numpy(train_y)
        losses = np.empty(len(batches), np.float32)
        for step, idx in enumerate(batches):
            idx = torch.from_numpy(np.asarray(idx, np.int64))
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(x_all[idx]), y_all[idx], reduction="mean")
            loss.backward()
            opt.step()
            losses[step] = loss.item()
    return net, losses


def predict(net, x, batch_size=500, threads=1) -> np.ndarray:
    """Class predictions for float32 `x`."""
    with _torch_threads(threads) as torch, torch.no_grad():
        return np.concatenate([net(torch.from_numpy(x[i:i + batch_size])).argmax(-1).numpy()
                               for i in range(0, len(x), batch_size)])
