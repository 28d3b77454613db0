"""Federated learning with litetrain clients against plain PyTorch FedAvg and FedProx.

Flower's own strategies (FedAvg, FedProx) aggregate the results of litetrain clients that train the
exact .tflite file; the PyTorch twin trains the same network from the same initial weights on the
same partitions and batches with torch.optim.SGD (FedProx's proximal term written out) and averages
by example count. Round by round the global weights agree to float32 precision. Flower's engine is
not started here (its strategy and client objects are called directly): see
test_federated_simulation.py for runs on the engine."""
import numpy as np
import pytest

from litetrain.apps.federated.client import ClientError, ClientFile, LocalTrainer
from litetrain.apps.federated.data import PartitionError, client_batches, dirichlet_partition, label_histogram
from litetrain.apps.federated.model import federated_file, mlp

torch = pytest.importorskip("torch", reason="PyTorch is the reference for federated training")

CLIENTS, ROUNDS, EPOCHS, BATCH, LR, SEED = 6, 3, 2, 16, 0.1, 3
HIDDEN = 32


def animal_mnist_subset(n=900):
    from litetrain.apps.demo import preprocess
    from litetrain.apps.demo.data import DataError, load_animal_mnist
    try:
        train_x, train_y, test_x, test_y = load_animal_mnist()
    except DataError as e:
        pytest.skip(f"Animal MNIST is not installed: {e}")
    return preprocess(train_x[:n]), train_y[:n].astype(np.int32), preprocess(test_x[:400]), test_y[:400].astype(np.int32)


NAMES = ("net/dense/kernel", "net/dense/bias", "net/dense_1/kernel", "net/dense_1/bias")


def torch_net(weights: dict):
    hidden = weights["net/dense/bias"].shape[0]
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, hidden), torch.nn.ReLU(),
                              torch.nn.Linear(hidden, 10))
    with torch.no_grad():
        for p, name in zip(net.parameters(), NAMES):
            p.copy_(torch.from_numpy(np.array(weights[name])))
    return net


def torch_fed_round(global_w: dict, x, labels, parts, server_round, mu, epochs=EPOCHS, batch=BATCH, lr=LR,
                    seed=SEED):
    """One round of FedAvg (mu=0) or FedProx in plain PyTorch: each client trains a copy of the
    global model with SGD on its batches; the new global model is the example-weighted mean."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small network: one thread is ten times faster than two on 2 cores
    try:
        return _torch_fed_round(global_w, x, labels, parts, server_round, mu, epochs, batch, lr, seed)
    finally:
        torch.set_num_threads(threads)


def _torch_fed_round(global_w, x, labels, parts, server_round, mu, epochs, batch, lr, seed):
    results = []
    for cid, idx in enumerate(parts):
        net = torch_net(global_w)
        anchor = [p.detach().clone() for p in net.parameters()]
        opt = torch.optim.SGD(net.parameters(), lr=lr)
        for b in client_batches(len(idx), epochs, batch, seed, cid, server_round):
            xb, yb = torch.from_numpy(x[idx][b]), torch.from_numpy(labels[idx][b].astype(np.int64))
            loss = torch.nn.functional.cross_entropy(net(xb), yb)
            loss = loss + mu / 2 * sum(((p - a) ** 2).sum() for p, a in zip(net.parameters(), anchor))
            opt.zero_grad()
            loss.backward()
            opt.step()
        results.append(([p.detach().numpy().copy() for p in net.parameters()], len(idx)))
    total = sum(n for _, n in results)
    return {name: sum(w[j] * np.float32(n / total) for w, n in results) for j, name in enumerate(NAMES)}


class TorchServer:
    """The server's update in PyTorch: FedAvg/FedProx take the average; FedAvgM is torch.optim.SGD
    (momentum 0.9, lr 1) on the pseudo-gradient global - average (Hsu et al. 2019)."""

    def __init__(self, strategy, weights: dict):
        self.params = {k: torch.tensor(np.array(v)) for k, v in weights.items()}
        self.opt = (torch.optim.SGD(list(self.params.values()), lr=1.0, momentum=0.9)
                    if strategy == "fedavgm" else None)

    def step(self, average: dict) -> dict:
        if self.opt is None:
            return average
        for k, p in self.params.items():
            p.grad = p.detach() - torch.from_numpy(average[k])
        self.opt.step()
        return {k: p.detach().numpy().copy() for k, p in self.params.items()}


def flower_round(strategy, clients, parameters, server_round):
    """configure_fit -> each LitetrainClient's fit -> aggregate_fit, as Flower's server loop does,
    without its transport."""
    from flwr.common import Code, FitIns, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server.client_manager import SimpleClientManager
    from flwr.server.client_proxy import ClientProxy

    class Proxy(ClientProxy):
        def get_properties(self, ins, timeout, group_id):
            raise NotImplementedError

        get_parameters = fit = evaluate = reconnect = get_properties

    manager = SimpleClientManager()
    proxies = [Proxy(str(i)) for i in range(len(clients))]
    for p in proxies:
        manager.register(p)
    results = []
    for proxy, ins in strategy.configure_fit(server_round, parameters, manager):
        assert isinstance(ins, FitIns)
        weights, n, metrics = clients[int(proxy.cid)].fit(parameters_to_ndarrays(ins.parameters), ins.config)
        results.append((proxy, FitRes(Status(Code.OK, ""), ndarrays_to_parameters(weights), n, metrics)))
    aggregated, metrics = strategy.aggregate_fit(server_round, results, [])
    return aggregated, metrics


@pytest.fixture(scope="module")
def setting():
    x, labels, _, _ = animal_mnist_subset()
    parts = dirichlet_partition(labels, CLIENTS, alpha=0.5, seed=SEED)
    content = federated_file(mlp(HIDDEN), learning_rate=LR)
    return x, labels, parts, content


@pytest.mark.parametrize("strategy_name, mu", [("fedavg", 0.0), ("fedprox", 0.5), ("fedavgm", 0.0)])
def test_flower_strategy_with_litetrain_clients_equals_pytorch(setting, strategy_name, mu):
    pytest.importorskip("flwr", reason="Flower is optional: pip install 'litetrain[federated]'")
    from flwr.common import parameters_to_ndarrays

    from litetrain.apps.federated.flower import LitetrainClient, make_strategy
    x, labels, parts, content = setting
    file = ClientFile(content)
    initial = file("get_weights")
    clients = [LitetrainClient(LocalTrainer(file, x[idx], labels[idx], client_id=cid, epochs=EPOCHS,
                                            batch_size=BATCH, seed=SEED)) for cid, idx in enumerate(parts)]
    strategy = make_strategy(strategy_name, [initial[k] for k in file.names], CLIENTS, mu=mu, local_epochs=EPOCHS)
    parameters = strategy.initialize_parameters(None)
    reference = {k: np.array(initial[k]) for k in NAMES}
    server = TorchServer(strategy_name, reference)
    for server_round in range(1, ROUNDS + 1):
        parameters, metrics = flower_round(strategy, clients, parameters, server_round)
        reference = server.step(torch_fed_round(reference, x, labels, parts, server_round, mu))
        ours = dict(zip(file.names, parameters_to_ndarrays(parameters)))
        for name in NAMES:
            np.testing.assert_allclose(ours[name], reference[name], rtol=1e-4, atol=2e-6,
                                       err_msg=f"round {server_round}: {name}")
        assert 0.0 < metrics["train_loss"] < 5.0
    moved = max(float(np.abs(reference[k] - initial[k]).max()) for k in NAMES)
    assert moved > 0.05  # the rounds trained something, so agreeing means something


def test_fedprox_term_is_what_makes_the_difference(setting):
    """FedProx with mu > 0 and FedAvg differ (the term is applied), and each matches its twin above."""
    x, labels, parts, content = setting
    trainer = LocalTrainer(content, x[parts[0]], labels[parts[0]], client_id=0, epochs=EPOCHS, batch_size=BATCH,
                           seed=SEED)
    start = trainer.get_weights()
    plain, _, _ = trainer.fit(start, server_round=1, mu=0.0)
    prox, _, _ = trainer.fit(start, server_round=1, mu=5.0)
    plain_again, _, _ = trainer.fit(start, server_round=1, mu=0.0)  # each fit starts afresh
    for a, b in zip(plain, plain_again):
        np.testing.assert_array_equal(a, b)
    drift = [float(np.linalg.norm(w - s)) for w, s in zip(plain, start)]
    held = [float(np.linalg.norm(w - s)) for w, s in zip(prox, start)]
    assert sum(held) < 0.9 * sum(drift)


def test_deltas_out_and_litert_client_give_the_same_update(setting):
    x, labels, parts, content = setting
    idx = parts[1]
    ours = LocalTrainer(content, x[idx], labels[idx], client_id=1, epochs=EPOCHS, batch_size=BATCH, seed=SEED)
    start = [w + np.float32(0.01) for w in ours.get_weights()]  # global weights other than the file's
    weights, n, metrics = ours.fit(start, server_round=2, mu=0.3)
    deltas_client = LocalTrainer(content, x[idx], labels[idx], client_id=1, epochs=EPOCHS, batch_size=BATCH,
                                 seed=SEED, send="deltas")
    deltas, _, _ = deltas_client.fit(start, server_round=2, mu=0.3)
    for w, d, s in zip(weights, deltas, start):
        np.testing.assert_allclose(d, w - s, rtol=0, atol=0)
    assert n == len(idx) and set(metrics) == {"train_loss", "train_accuracy", "client_id"}
    litert = pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert is the TFLite oracle")
    theirs = LocalTrainer(ClientFile(content, interpreter=litert.Interpreter(model_content=content)),
                          x[idx], labels[idx], client_id=1, epochs=EPOCHS, batch_size=BATCH, seed=SEED)
    their_weights, _, their_metrics = theirs.fit(start, server_round=2, mu=0.3)
    for a, b in zip(weights, their_weights):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(their_metrics["train_loss"], metrics["train_loss"], rtol=1e-5)
    loss, _, acc = ours.evaluate(weights)
    their_loss, _, their_acc = theirs.evaluate(weights)
    np.testing.assert_allclose(their_loss, loss, rtol=1e-5)
    assert their_acc == acc


def test_dirichlet_partitions():
    labels = np.repeat(np.arange(10), 100)
    parts = dirichlet_partition(labels, 20, alpha=0.3, seed=1)
    assert sorted(np.concatenate(parts).tolist()) == list(range(1000))  # each example once
    assert min(len(p) for p in parts) >= 2
    again = dirichlet_partition(labels, 20, alpha=0.3, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    skewed = label_histogram(labels, parts, 10)
    iid = label_histogram(labels, dirichlet_partition(labels, 20, alpha=1000.0, seed=1), 10)

    def mean_max_share(h):
        return float(np.mean(h.max(1) / np.maximum(h.sum(1), 1)))
    assert mean_max_share(skewed) > 0.3 > mean_max_share(iid)  # small alpha: a few classes per client
    with pytest.raises(PartitionError, match="use fewer clients"):
        dirichlet_partition(labels, 600, alpha=0.5)
    with pytest.raises(PartitionError, match="alpha > 0"):
        dirichlet_partition(labels, 5, alpha=0.0)


def test_client_mistakes_get_clear_errors(setting):
    x, labels, parts, content = setting
    trainer = LocalTrainer(content, x[:10], labels[:10])
    with pytest.raises(ClientError, match="got 3 arrays, the file's weights are 4"):
        trainer.fit(trainer.get_weights()[:3])
    with pytest.raises(ClientError, match="send must be"):
        LocalTrainer(content, x[:10], labels[:10], send="gradients")
    import litetrain as lt
    from test_training_parity import MLP
    with pytest.raises(ClientError, match="lacks the signatures"):
        ClientFile(lt.convert(MLP(lt.optim.SGD(0.1))))
