"""Benchmark: one LSTM training step (backpropagation through time) in litetrain, LiteRT and PyTorch.

    python benchmarks/bench_rnn.py [--batch-size 32] [--length 20] [--units 32] [--steps 50] [--cell LSTM]

The model: LSTM(units) over [batch, length, 8] inputs (a padding mask with varied lengths) ->
Dense(1), mean squared error, Adam; converted with max_sequence_length = 2 * length and
portable_checkpoints=True, so the file holds builtin ops only:

- litetrain: `lt.Interpreter` on the file;
- LiteRT: `ai_edge_litert.interpreter.Interpreter` on the same file (WHILE, DYNAMIC_UPDATE_SLICE,
  GATHER_ND, ... from its builtin op resolver);
- PyTorch eager: torch.nn.LSTM (packed sequences) + Linear from the same initial weights, one
  thread (more only contend at these sizes).

Latency: median of `--steps` calls after 5 untimed ones, in this one process (run it on an
otherwise idle machine). Ratios are engine / litetrain: below 1 the engine is faster. The last
line is each engine's loss on the first step: they must agree. Speed is never asserted by tests.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import median_ms  # noqa: E402

FEATURES = 8
LR = 0.001


def build_model(cell="LSTM", units=32, length=20):
    """The litetrain model: `cell`(units) over [batch, time, FEATURES] with a padding mask -> Dense(1),
    mean squared error, Adam; its tensor lists hold up to 2 * length steps."""
    import litetrain as lt

    class Model(lt.Module):
        def __init__(self):
            self.rnn = getattr(lt.nn, cell)(units, input_dim=FEATURES, max_sequence_length=2 * length)
            self.head = lt.nn.Dense(1, input_dim=units)
            self.optimizer = lt.optim.Adam(LR)

        @lt.signature(x=lt.TensorSpec([None, None, FEATURES]), mask=lt.TensorSpec([None, None], "bool"),
                      y=lt.TensorSpec([None, 1]))
        def train(self, x, mask, y):
            loss = lt.losses.MeanSquaredError()(y, self.head(self.rnn(x, mask=mask)))
            self.optimizer.minimize(loss, self.trainable_variables)
            return {"loss": loss}
    return Model()


def inputs(batch=32, length=20, seed=0):
    """A fixed batch: x [batch, length, FEATURES], lengths from length // 2 to length (the first one
    full), the mask they give, targets y [batch, 1]."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, length, FEATURES)).astype(np.float32)
    lengths = rng.integers(length // 2, length + 1, batch)
    lengths[0] = length
    mask = np.arange(length)[None] < lengths[:, None]
    y = rng.standard_normal((batch, 1)).astype(np.float32)
    return x, mask, y, lengths


def torch_weights(model):
    """The model's weights under PyTorch's names: the recurrent layer's (torch_state_dict) and the
    head's as `head.weight`, `head.bias`."""
    from litetrain.frontend.nn.recurrent import torch_state_dict
    return {**torch_state_dict(model.rnn), "head.weight": model.head.kernel.value, "head.bias": model.head.bias.value}


def torch_step(cell, units, weights, x, lengths, y):
    """PyTorch eager's train step from `weights` (as torch_weights gives them): torch.nn.RNN/LSTM/GRU on
    packed sequences and a Linear head, zero_grad, forward, mse_loss, backward, Adam step; returns the
    loss."""
    import torch
    net = getattr(torch.nn, {"SimpleRNN": "RNN"}.get(cell, cell))(FEATURES, units, batch_first=True)
    head = torch.nn.Linear(units, 1)
    with torch.no_grad():
        for k, v in weights.items():
            target = getattr(head, k.split(".", 1)[1]) if k.startswith("head.") else getattr(net, k)
            target.copy_(torch.from_numpy(np.asarray(v)))
    if cell != "GRU":
        net.bias_hh_l0.requires_grad_(False)  # litetrain's one bias is PyTorch's two summed
    opt = torch.optim.Adam([p for p in [*net.parameters(), *head.parameters()] if p.requires_grad], lr=LR)
    tx, ty, tl = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(lengths)

    def step():
        opt.zero_grad()
        packed = torch.nn.utils.rnn.pack_padded_sequence(tx, tl, batch_first=True, enforce_sorted=False)
        _, h = net(packed)
        loss = torch.nn.functional.mse_loss(head((h[0] if isinstance(h, tuple) else h)[-1]), ty)
        loss.backward()
        opt.step()
        return loss.item()
    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--length", type=int, default=20)
    parser.add_argument("--units", type=int, default=32)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--cell", default="LSTM", choices=["SimpleRNN", "LSTM", "GRU"])
    args = parser.parse_args()

    import torch

    import litetrain as lt

    features = FEATURES
    b, t = args.batch_size, args.length
    x, mask, y, lengths = inputs(b, t)
    model = build_model(args.cell, args.units, t)
    torch.set_num_threads(1)
    torch_train = torch_step(args.cell, args.units, torch_weights(model), x, lengths, y)
    data = lt.convert(model, ["train"], portable_checkpoints=True)

    engines = {"litetrain": lt.Interpreter(model_content=data).get_signature_runner("train")}
    try:
        from ai_edge_litert import interpreter as litert
        engines["LiteRT"] = litert.Interpreter(model_content=data).get_signature_runner("train")
    except ImportError as e:
        print(f"LiteRT skipped: {e}")
    first = {name: float(np.asarray(run(x=x, mask=mask, y=y)["loss"]).reshape(())) for name, run in engines.items()}
    first["PyTorch"] = torch_train()
    times = {name: median_ms(lambda run=run: run(x=x, mask=mask, y=y), args.steps) for name, run in engines.items()}
    times["PyTorch"] = median_ms(torch_train, args.steps)

    print(f"{args.cell}({args.units}) train step, batch {b}, length {t} (masked, lengths {lengths.min()}-{t}), "
          f"{features} features, Adam; median of {args.steps} steps; {platform.machine()}, Python "
          f"{platform.python_version()}, NumPy {np.__version__}, torch {torch.__version__}")
    print(f"One .tflite file for litetrain and LiteRT ({len(data) / 1024:.1f} KiB, builtin ops only)\n")
    print(f"{'engine':10} | {'train step ms':>13} | {'vs litetrain':>12}")
    print(f"{'-' * 10}-+-{'-' * 13}-+-{'-' * 12}")
    for name, ms in times.items():
        print(f"{name:10} | {ms:13.2f} | {ms / times['litetrain']:11.2f}x")
    print("\nfirst-step loss: " + ", ".join(f"{k} {v:.6f}" for k, v in first.items()))


if __name__ == "__main__":
    main()
