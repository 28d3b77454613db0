"""Flower (`flwr`) integration: a NumPyClient that trains the exact .tflite file, and the server
strategies (FedAvg, FedProx, FedAdam, FedAvgM) taken from Flower itself. This module imports flwr;
`litetrain.apps.federated` imports it only when a Flower object is asked for."""
from __future__ import annotations

import numpy as np
from flwr.client import NumPyClient
from flwr.common import ndarrays_to_parameters
from flwr.server import strategy as flower_strategies

from .client import LocalTrainer

STRATEGIES = ("fedavg", "fedprox", "fedadam", "fedavgm")


class LitetrainClient(NumPyClient):
    """Flower's NumPyClient over a `LocalTrainer`: parameters are the file's weights in get_weights
    order; the fit config may carry "server_round" (seeds the batch order), "local_epochs",
    "learning_rate" and FedProx's "proximal_mu" (the train signature's `mu` input)."""

    def __init__(self, trainer: LocalTrainer):
        self.trainer = trainer

    def get_parameters(self, config):
        return self.trainer.get_weights()

    def fit(self, parameters, config):
        epochs = config.get("local_epochs")
        lr = config.get("learning_rate")
        return self.trainer.fit(parameters, server_round=int(config.get("server_round", 0)),
                                mu=float(config.get("proximal_mu", 0.0)),
                                epochs=None if epochs is None else int(epochs),
                                learning_rate=None if lr is None else float(lr))

    def evaluate(self, parameters, config):
        return self.trainer.evaluate(parameters)


def weighted_metrics(results):
    """Flower's metrics aggregation: the example-weighted mean of each float metric."""
    total = sum(n for n, _ in results) or 1
    keys = {k for _, m in results for k, v in m.items() if isinstance(v, float)}
    return {k: sum(n * float(m[k]) for n, m in results if k in m) / total for k in sorted(keys)}


def make_strategy(name: str, initial_weights, num_clients: int, fraction_fit=1.0, mu=0.01, local_epochs=1,
                  learning_rate=None, evaluate_fn=None, server_learning_rate=None, server_momentum=0.9):
    """One of Flower's strategies, set up for litetrain clients: FedAvg; FedProx (proximal_mu=mu
    sent to the clients, which pass it to the train signature); FedAdam (server-side Adam on the
    averaged update, eta=server_learning_rate, default 0.01); FedAvgM (server momentum,
    server_learning_rate default 1.0). Clients are sampled with `fraction_fit`; evaluation is
    centralised (`evaluate_fn`), not on clients."""
    name = name.lower()
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    min_fit = max(1, int(round(fraction_fit * num_clients)))

    def fit_config(server_round):
        config = {"server_round": int(server_round), "local_epochs": int(local_epochs)}
        if learning_rate is not None:
            config["learning_rate"] = float(learning_rate)
        return config

    common = dict(fraction_fit=float(fraction_fit), fraction_evaluate=0.0, min_fit_clients=min_fit,
                  min_evaluate_clients=0, min_available_clients=num_clients, evaluate_fn=evaluate_fn,
                  on_fit_config_fn=fit_config, fit_metrics_aggregation_fn=weighted_metrics,
                  initial_parameters=ndarrays_to_parameters([np.asarray(w, np.float32) for w in initial_weights]))
    if name == "fedavg":
        return flower_strategies.FedAvg(**common)
    if name == "fedprox":
        return flower_strategies.FedProx(**common, proximal_mu=float(mu))
    if name == "fedadam":
        eta = 0.01 if server_learning_rate is None else float(server_learning_rate)
        return flower_strategies.FedAdam(**common, eta=eta, eta_l=float(learning_rate or 0.05))
    return flower_strategies.FedAvgM(**common, server_momentum=float(server_momentum),
                                     server_learning_rate=1.0 if server_learning_rate is None
                                     else float(server_learning_rate))
