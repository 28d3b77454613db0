"""`litetrain federate [--clients N] [--rounds R] [--strategy S] [--alpha A] ...`: a federated
simulation on Flower's simulation engine with litetrain clients (apps/federated)."""
from __future__ import annotations

import argparse
import os
import sys

from ..apps.federated.simulation import FederatedConfig, FederatedError, format_results


def _positive(kind):
    def parse(text):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse


def add_command(commands) -> None:
    d = FederatedConfig()
    p = commands.add_parser(
        "federate", help="simulate federated training of one .tflite file on Flower (N clients, non-IID)",
        description="Convert an MLP to one .tflite client file, split Animal MNIST's training set over N "
                    "clients with Dirichlet(alpha) class shares, and run R rounds of a Flower strategy on "
                    "Flower's simulation engine (Ray); the global model is evaluated on the test split "
                    "after every round. Writes federated.tflite, rounds.csv and accuracy.png to --out. "
                    'Needs Flower: pip install "litetrain[federated]".')
    p.add_argument("--clients", type=_positive(int), default=d.clients, help=f"virtual clients (default {d.clients})")
    p.add_argument("--rounds", type=_positive(int), default=d.rounds, help=f"rounds (default {d.rounds})")
    p.add_argument("--strategy", choices=("fedavg", "fedprox", "fedadam", "fedavgm"), default=d.strategy,
                   help=f"Flower's server strategy (default {d.strategy})")
    p.add_argument("--alpha", type=_positive(float), default=d.alpha,
                   help=f"Dirichlet concentration: small = few classes per client (default {d.alpha})")
    p.add_argument("--mu", type=_positive(float), default=d.mu, help=f"FedProx's proximal strength (default {d.mu})")
    p.add_argument("--fraction-fit", type=_positive(float), default=d.fraction_fit,
                   help=f"share of clients trained each round (default {d.fraction_fit})")
    p.add_argument("--local-epochs", type=_positive(int), default=d.local_epochs,
                   help=f"passes over a client's data per round (default {d.local_epochs})")
    p.add_argument("--batch-size", type=_positive(int), default=d.batch_size, help=f"(default {d.batch_size})")
    p.add_argument("--lr", type=_positive(float), default=d.learning_rate,
                   help=f"the clients' SGD learning rate (default {d.learning_rate})")
    p.add_argument("--server-lr", type=_positive(float), default=None,
                   help="FedAdam's eta (default 0.01) or FedAvgM's server learning rate (default 1.0)")
    p.add_argument("--hidden", type=_positive(int), default=d.hidden, help=f"MLP hidden units (default {d.hidden})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"partitions and batch order (default {d.seed})")
    p.add_argument("--client-cpus", type=_positive(float), default=d.client_cpus,
                   help=f"CPUs Ray reserves per virtual client (default {d.client_cpus})")
    p.add_argument("--ray-address", default=None, metavar="ADDRESS",
                   help="run the virtual clients on an existing Ray cluster ('auto' or HOST:PORT; default: a "
                        "local Ray started for this run)")
    p.add_argument("--out", default="federated_out", metavar="DIR", help="output directory (default ./federated_out)")
    p.add_argument("--no-plot", action="store_true", help="no PNG plot")
    p.add_argument("--quiet", action="store_true", help="no progress line per round")


def run_command(args) -> int:
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        print(f"litetrain federate: --out {args.out} is a file; give a directory", file=sys.stderr)
        return 2
    if args.fraction_fit > 1:
        print(f"litetrain federate: --fraction-fit must be at most 1, got {args.fraction_fit}", file=sys.stderr)
        return 2
    config = FederatedConfig(clients=args.clients, rounds=args.rounds, strategy=args.strategy, alpha=args.alpha,
                             mu=args.mu, fraction_fit=args.fraction_fit, local_epochs=args.local_epochs,
                             batch_size=args.batch_size, learning_rate=args.lr, server_learning_rate=args.server_lr,
                             hidden=args.hidden, seed=args.seed, client_cpus=args.client_cpus,
                             ray_address=args.ray_address)
    from ..apps.demo.data import DataError
    from ..apps.federated.data import PartitionError
    from ..apps.federated.simulation import run_federated
    try:
        results = run_federated(config, out_dir=args.out, progress=not args.quiet, plot=not args.no_plot)
    except (FederatedError, DataError, PartitionError) as e:
        print(f"litetrain federate: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"litetrain federate: cannot write to {args.out}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(format_results(results))
    return 0
