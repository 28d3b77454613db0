"""Cleanup passes over a Program: dead-code elimination, common subexpressions, tensor compaction."""
from __future__ import annotations

from .ir import Function, Program
from .registry import get_op


def _freeze(value):
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


def eliminate_common_subexpressions(fn: Function) -> dict:
    """Merge pure nodes with the same op, inputs and attributes; returns {merged tensor: kept one}."""
    seen, rename = {}, {}
    kept = []
    for node in fn.nodes:
        node.inputs = [rename.get(i, i) for i in node.inputs]
        if not get_op(node.op).stateful:
            key = (node.op, tuple(node.inputs), _freeze(node.attrs))
            if key in seen:
                for old, new in zip(node.outputs, seen[key].outputs):
                    rename[old] = new
                continue
            seen[key] = node
        kept.append(node)
    fn.nodes = kept
    fn.outputs = [rename.get(i, i) for i in fn.outputs]
    return rename


def eliminate_dead_code(fn: Function) -> None:
    """Drop pure nodes whose outputs nothing uses."""
    live = set(fn.outputs)
    kept = []
    for node in reversed(fn.nodes):
        if get_op(node.op).stateful or any(o in live for o in node.outputs):
            kept.append(node)
            live.update(i for i in node.inputs if i >= 0)
    fn.nodes = kept[::-1]


def compact_tensors(fn: Function, pinned=()) -> dict:
    """Renumber tensors so that only used ones remain; returns old index -> new index."""
    used = set(fn.inputs) | set(fn.outputs) | set(pinned)
    for node in fn.nodes:
        used.update(i for i in node.inputs if i >= 0)
        used.update(node.outputs)
    order = sorted(used)
    remap = {old: new for new, old in enumerate(order)}
    fn.tensors = [fn.tensors[i] for i in order]
    fn.inputs = [remap[i] for i in fn.inputs]
    fn.outputs = [remap[i] for i in fn.outputs]
    for node in fn.nodes:
        node.inputs = [remap[i] if i >= 0 else -1 for i in node.inputs]
        node.outputs = [remap[i] for i in node.outputs]
    return remap


def renumber_functions(program: Program, order) -> None:
    """Put the functions in `order` (a permutation of their indices) and re-point every reference
    to them: signatures, the init function, and node attributes named `*subgraph_index` (CALL_ONCE,
    WHILE, IF). The one place where function indices change."""
    order = list(order)
    if sorted(order) != list(range(len(program.functions))):
        raise ValueError(f"{order} is not a permutation of the {len(program.functions)} functions")
    remap = {old: new for new, old in enumerate(order)}
    program.functions = [program.functions[i] for i in order]
    for sig in program.signatures:
        sig.function = remap[sig.function]
    if program.init_function is not None:
        program.init_function = remap[program.init_function]
    for fn in program.functions:
        for node in fn.nodes:
            for key, value in node.attrs.items():
                if key.endswith("subgraph_index"):
                    node.attrs[key] = remap[value]


def signatures_first(program: Program) -> None:
    """Order the functions as the file wants them: the signatures' functions first (the first is
    the main subgraph), then the functions they run (loop bodies, branches) in recorded order."""
    first = list(dict.fromkeys(sig.function for sig in program.signatures))
    renumber_functions(program, first + [i for i in range(len(program.functions)) if i not in first])


def optimize(program: Program) -> None:
    """Run the cleanup passes on every function and keep signatures pointing at the right tensors."""
    for index, fn in enumerate(program.functions):
        merged = eliminate_common_subexpressions(fn)
        eliminate_dead_code(fn)
        remap = compact_tensors(fn)
        for sig in program.signatures:
            if sig.function == index:
                sig.inputs = {k: remap[v] for k, v in sig.inputs.items()}
                sig.outputs = {k: remap[merged.get(v, v)] for k, v in sig.outputs.items()}
