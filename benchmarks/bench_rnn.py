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
    from litetrain.nn.recurrent import torch_state_dict

    features = 8

    class Model(lt.Module):
        def __init__(self):
            self.rnn = getattr(lt.nn, args.cell)(args.units, input_dim=features, max_sequence_length=2 * args.length)
            self.head = lt.nn.Dense(1, input_dim=args.units)
            self.optimizer = lt.optim.Adam(0.001)

        @lt.signature(x=lt.TensorSpec([None, None, features]), mask=lt.TensorSpec([None, None], "bool"),
                      y=lt.TensorSpec([None, 1]))
        def train(self, x, mask, y):
            loss = lt.losses.MeanSquaredError()(y, self.head(self.rnn(x, mask=mask)))
            self.optimizer.minimize(loss, self.trainable_variables)
            return {"loss": loss}

    rng = np.random.default_rng(0)
    b, t = args.batch_size, args.length
    x = rng.standard_normal((b, t, features)).astype(np.float32)
    lengths = rng.integers(t // 2, t + 1, b)
    lengths[0] = t
    mask = np.arange(t)[None] < lengths[:, None]
    y = rng.standard_normal((b, 1)).astype(np.float32)

    model = Model()
    torch.set_num_threads(1)
    net = getattr(torch.nn, {"SimpleRNN": "RNN"}.get(args.cell, args.cell))(features, args.units, batch_first=True)
    head = torch.nn.Linear(args.units, 1)
    with torch.no_grad():
        for k, v in torch_state_dict(model.rnn).items():
            getattr(net, k).copy_(torch.from_numpy(v))
        head.weight.copy_(torch.from_numpy(model.head.kernel.value))
        head.bias.copy_(torch.from_numpy(model.head.bias.value))
    if args.cell != "GRU":
        net.bias_hh_l0.requires_grad_(False)  # litetrain's one bias is PyTorch's two summed
    data = lt.convert(model, ["train"], portable_checkpoints=True)
    opt = torch.optim.Adam([p for p in [*net.parameters(), *head.parameters()] if p.requires_grad], lr=0.001)
    tx, ty, tl = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(lengths)

    def torch_step():
        opt.zero_grad()
        packed = torch.nn.utils.rnn.pack_padded_sequence(tx, tl, batch_first=True, enforce_sorted=False)
        _, h = net(packed)
        loss = torch.nn.functional.mse_loss(head((h[0] if isinstance(h, tuple) else h)[-1]), ty)
        loss.backward()
        opt.step()
        return loss.item()

    engines = {"litetrain": lt.Interpreter(model_content=data).get_signature_runner("train")}
    try:
        from ai_edge_litert import interpreter as litert
        engines["LiteRT"] = litert.Interpreter(model_content=data).get_signature_runner("train")
    except ImportError as e:
        print(f"LiteRT skipped: {e}")
    first = {name: float(np.asarray(run(x=x, mask=mask, y=y)["loss"]).reshape(())) for name, run in engines.items()}
    first["PyTorch"] = torch_step()
    times = {name: median_ms(lambda run=run: run(x=x, mask=mask, y=y), args.steps) for name, run in engines.items()}
    times["PyTorch"] = median_ms(torch_step, args.steps)

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
