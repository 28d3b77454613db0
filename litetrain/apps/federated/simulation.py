"""A federated simulation on Flower's simulation engine (virtual clients on Ray): N litetrain clients
on Dirichlet(alpha) partitions of Animal MNIST's training split, one of Flower's strategies, the
global model evaluated on the test split after every round (by the server, with the same .tflite
file), a progress line per round, and the per-round results as CSV and a PNG plot."""
from __future__ import annotations

import csv
import functools
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from ...runtime.interpreter import Interpreter
from .client import ClientFile, LocalTrainer, evaluate_file
from .data import dirichlet_partition
from .model import federated_file, mlp

INSTALL_HINT = 'pip install "litetrain[federated]"  (Flower with its Ray simulation engine)'
CSV_FIELDS = ("round", "accuracy", "loss", "train_loss", "train_accuracy", "elapsed_s")


class FederatedError(RuntimeError):
    """A simulation that cannot run as asked (says what to install or change)."""


@dataclass(frozen=True)
class FederatedConfig:
    """What a simulation does. learning_rate: the clients' local SGD; mu: FedProx's proximal
    strength; server_learning_rate: FedAdam's eta (default 0.01) or FedAvgM's (default 1.0)."""
    clients: int = 100
    rounds: int = 10
    strategy: str = "fedavg"
    alpha: float = 0.5
    fraction_fit: float = 1.0
    local_epochs: int = 2
    batch_size: int = 32
    learning_rate: float = 0.1
    mu: float = 0.01
    server_learning_rate: float | None = None
    server_momentum: float = 0.9
    hidden: int = 128
    seed: int = 0
    client_cpus: float = 1.0
    ray_address: str | None = None  # an existing Ray cluster ("auto", "HOST:6379"); None: a local one


def _require_flower():
    try:
        import flwr  # noqa: F401
        from flwr.simulation import run_simulation  # noqa: F401
    except ImportError as e:
        raise FederatedError(f"federated simulation needs Flower: {INSTALL_HINT} ({e})") from None


@functools.lru_cache(maxsize=4)
def _client_data(clients: int, alpha: float, seed: int):
    """(x, labels, partitions) of the training split: loaded once per process (each Ray worker)."""
    from ..demo import preprocess
    from ..demo.data import load_animal_mnist
    train_x, train_y, _, _ = load_animal_mnist()
    return preprocess(train_x), train_y.astype(np.int32), dirichlet_partition(train_y, clients, alpha, seed)


@functools.lru_cache(maxsize=2)
def _shared_file(content: bytes) -> ClientFile:
    """The file opened once per process: a Ray worker runs one virtual client at a time, and each
    fit restores the whole initial state first."""
    return ClientFile(content)


def make_trainer(content: bytes, config: FederatedConfig, client_id: int) -> LocalTrainer:
    """The LocalTrainer of client `client_id` (its partition of the training split)."""
    x, labels, parts = _client_data(config.clients, config.alpha, config.seed)
    idx = parts[client_id]
    return LocalTrainer(_shared_file(content), x[idx], labels[idx], client_id=client_id,
                        epochs=config.local_epochs, batch_size=config.batch_size, seed=config.seed)


class _Recorder:
    """The server's per-round evaluation (Flower's evaluate_fn) and the progress line."""

    def __init__(self, content, config, test_x, test_y, stream, progress):
        self.interpreter = Interpreter(model_content=content)
        self.names = list(self.interpreter.get_signature_runner("get_weights")())
        self.config, self.test_x, self.test_y = config, test_x, test_y
        self.stream, self.progress = stream, progress
        self.rows, self.train_metrics, self.weights = [], {}, None
        self.start = time.perf_counter()

    def fit_metrics(self, results):
        from .flower import weighted_metrics
        self.train_metrics = weighted_metrics(results)
        return self.train_metrics

    def evaluate(self, server_round, weights, config):
        self.weights = [np.array(w, np.float32) for w in weights]
        self.interpreter.get_signature_runner("set_weights")(
            **{k: np.asarray(w, np.float32) for k, w in zip(self.names, weights)})
        loss, _, metrics = evaluate_file(self.interpreter.get_signature_runner("evaluate"), self.test_x, self.test_y)
        row = {"round": int(server_round), "accuracy": metrics["accuracy"], "loss": loss,
               "train_loss": self.train_metrics.get("train_loss", float("nan")) if server_round else float("nan"),
               "train_accuracy": self.train_metrics.get("train_accuracy", float("nan")) if server_round else float("nan"),
               "elapsed_s": time.perf_counter() - self.start}
        self.rows.append(row)
        if self.progress:
            print(f"round {server_round:>3}/{self.config.rounds}: test accuracy {100 * row['accuracy']:6.2f}%, "
                  f"test loss {loss:.4f}, train loss {row['train_loss']:.4f}, {row['elapsed_s']:.1f} s",
                  file=self.stream, flush=True)
        return loss, metrics


def run_federated(config: FederatedConfig = FederatedConfig(), out_dir="federated_out", progress=True,
                  plot=True, stream=None) -> dict:
    """Run the simulation on Flower's simulation engine; returns the results (rows per round,
    file paths, times). Writes <out_dir>/federated.tflite, rounds.csv and (with matplotlib)
    accuracy.png."""
    _require_flower()
    from flwr.clientapp import ClientApp
    from flwr.common.logger import FLOWER_LOGGER
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.simulation import run_simulation

    from ..demo import preprocess
    from ..demo.data import load_animal_mnist
    from .flower import LitetrainClient, make_strategy

    stream = stream or sys.stderr
    os.makedirs(out_dir, exist_ok=True)
    content = federated_file(mlp(config.hidden), learning_rate=config.learning_rate)
    model_path = os.path.join(out_dir, "federated.tflite")
    with open(model_path, "wb") as f:
        f.write(content)
    _, _, test_x, test_y = load_animal_mnist()
    _client_data(config.clients, config.alpha, config.seed)  # a bad partition fails here, not in a worker
    recorder = _Recorder(content, config, preprocess(test_x), test_y.astype(np.int32), stream, progress)
    initial = [recorder.interpreter.get_signature_runner("get_weights")()[k] for k in recorder.names]

    def client_fn(context):
        return LitetrainClient(make_trainer(content, config, int(context.node_config["partition-id"]))).to_client()

    def server_fn(context):
        strategy = make_strategy(config.strategy, initial, config.clients, config.fraction_fit, config.mu,
                                 config.local_epochs, config.learning_rate, recorder.evaluate,
                                 config.server_learning_rate, config.server_momentum)
        strategy.fit_metrics_aggregation_fn = recorder.fit_metrics
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=config.rounds))

    level = FLOWER_LOGGER.level
    FLOWER_LOGGER.setLevel(logging.WARNING)  # our progress line per round instead of Flower's log
    began = time.perf_counter()
    try:
        run_simulation(server_app=ServerApp(server_fn=server_fn), client_app=ClientApp(client_fn=client_fn),
                       num_supernodes=config.clients,
                       backend_config=_backend_config(config))
    finally:
        FLOWER_LOGGER.setLevel(level)
    elapsed = time.perf_counter() - began
    if len(recorder.rows) != config.rounds + 1:
        raise FederatedError(f"the simulation ended after {len(recorder.rows) - 1} of {config.rounds} rounds; "
                             "Flower's log above says why")
    results = _finish(recorder.rows, config, out_dir, model_path, elapsed, plot)
    results["final_weights"] = dict(zip(recorder.names, recorder.weights))
    results["weights_path"] = os.path.join(out_dir, "global_weights.npz")
    np.savez(results["weights_path"], **results["final_weights"])  # set_weights(**np.load(...)) takes them
    return results


def _backend_config(config) -> dict:
    init = {"logging_level": logging.WARNING, "log_to_driver": False}
    if config.ray_address:
        init["address"] = config.ray_address
    return {"client_resources": {"num_cpus": config.client_cpus, "num_gpus": 0.0}, "init_args": init}


def _finish(rows, config, out_dir, model_path, elapsed, plot) -> dict:
    csv_path = os.path.join(out_dir, "rounds.csv")
    write_rows(csv_path, rows)
    png_path, plot_note = None, None
    if plot:
        from ..plot import PlotError, save_curves
        try:
            png_path = save_curves(os.path.join(out_dir, "accuracy.png"),
                                   {f"{config.strategy} test accuracy": [r["accuracy"] for r in rows[1:]]},
                                   xlabel="round", ylabel="accuracy",
                                   title=f"{config.clients} clients, Dirichlet alpha={config.alpha}")
        except PlotError as e:
            plot_note = str(e)
    # rounds per minute once the engine runs: round 1 also pays for starting Ray and its workers
    steady = rows[-1]["elapsed_s"] - rows[1]["elapsed_s"] if config.rounds > 1 else 0.0
    return {"config": asdict(config), "rows": rows, "csv_path": csv_path, "png_path": png_path,
            "plot_note": plot_note, "model_path": model_path, "elapsed_s": elapsed,
            "first_round_s": rows[1]["elapsed_s"] - rows[0]["elapsed_s"],
            "rounds_per_minute": 60.0 * (config.rounds - 1) / steady if steady > 0 else float("nan")}


def write_rows(path, rows) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row[k] for k in CSV_FIELDS})


def format_results(r: dict) -> str:
    c, first, last = r["config"], r["rows"][0], r["rows"][-1]
    lines = [f"{c['strategy']} on {c['clients']} clients (Dirichlet alpha={c['alpha']}), {c['rounds']} rounds, "
             f"{c['local_epochs']} local epoch(s) of SGD lr={c['learning_rate']:g}, batch {c['batch_size']}",
             f"  test accuracy  : {100 * first['accuracy']:.2f}% before, {100 * last['accuracy']:.2f}% after "
             f"round {last['round']}",
             f"  rounds/minute  : {r['rounds_per_minute']:.1f} after round 1 (round 1 with the engine's start: "
             f"{r['first_round_s']:.1f} s; total {r['elapsed_s']:.1f} s)",
             f"  per-round CSV  : {r['csv_path']}",
             f"  accuracy plot  : {r['png_path'] or r['plot_note']}",
             f"  model file     : {r['model_path']} (global weights: {r['weights_path']})"]
    return "\n".join(lines)
