"""Fused kernels: subgraphs that converters emit, recognised at plan time and run as one step.

Each pattern module has `match(graph, k)`: given the specialised nodes of a function (a `Graph`)
and the index of a node, it returns a `Fused` step standing for that node and others, or None.
A pattern matches only the exact subgraph it was written for (ops, attributes, shapes, and every
intermediate value used nowhere else); anything else runs op by op. Each fused kernel is tested
against the op-by-op result on the same inputs (tests/test_fusion.py).
"""
from __future__ import annotations

from ..steps import FUSED, step_of_node
from .graph import Fused, Graph  # noqa: F401  (what a pattern returns)

from . import activation, batchnorm, control, conv, depthwise, elementwise, lists, pool, recurrent

PATTERNS = [activation, depthwise, pool, batchnorm, lists, recurrent, conv, control]  # pattern modules, tried in order at every node
GENERIC = [elementwise]  # tried after every specific pattern has taken its nodes


def apply(nodes, fn, infos, program=None) -> list:
    """The steps of `nodes`: fused where a pattern matches, one per node elsewhere. `program`:
    the functions that IF nodes run (their branches)."""
    graph = Graph(nodes, fn, infos, program)
    done, fused_at = graph.taken, {}
    for patterns in (PATTERNS, GENERIC):
        for k in range(len(nodes)):
            if k in done:
                continue
            for pattern in patterns:
                found = pattern.match(graph, k)
                if found is not None and not (set(found.nodes) & done):
                    done.update(found.nodes)
                    fused_at[max(found.nodes)] = found
                    break
    steps = []
    for k, n in enumerate(nodes):
        if k in fused_at:
            f = fused_at[k]
            steps.append((f.kernel, FUSED, tuple(f.inputs), tuple(f.outputs), (), f))
        elif k not in done:
            steps.append(step_of_node(n, infos))
    return steps
