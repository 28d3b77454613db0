"""Failure injection: make one node of a signature's plan raise, to check that a call failing at
any point leaves every variable exactly as it was.

`fail_at(interpreter, "train", k)` replaces step k of the signature's plan (its latest: the one for
the input shapes of its last call) with one that raises; leaving the `with` block restores it. A
plan's steps are its nodes after folding and fusion, each a node or a fused group of them.
"""
from __future__ import annotations

import contextlib

import numpy as np

from litetrain.runtime.steps import PURE


class InjectedFault(Exception):
    """The exception an injected kernel raises."""


def plan_of(interpreter, signature):
    """The plan of a signature (by key) or of a function (by index)."""
    program = interpreter._program
    index = signature if isinstance(signature, int) else program.signature(signature).function
    plans = interpreter._executor._plans.get(index)
    return next(reversed(plans.values())) if plans else interpreter._executor.plan(index)


def node_ops(interpreter, signature: str) -> list[str]:
    """The op of each step of the signature's plan, in run order (a fused step: "fused <pattern>")."""
    return [step[5].op for step in plan_of(interpreter, signature).steps]


@contextlib.contextmanager
def fail_at(interpreter, signature, index: int, exception=InjectedFault):
    """While active, node `index` of the signature (or function, by index) raises `exception`
    (a class or an instance)."""
    plan = plan_of(interpreter, signature)
    original = plan.steps[index]

    def broken(*args, **kwargs):
        raise exception if isinstance(exception, BaseException) else exception(
            f"injected into node {index} ({original[5].op})")

    plan.steps[index] = (broken, PURE) + tuple(original[2:6])
    plan.bound = None  # the executor binds the steps again
    try:
        yield
    finally:
        plan.steps[index] = original
        plan.bound = None


def snapshot(interpreter) -> dict:
    """Every variable's dtype, shape and bytes (to compare bit for bit), plus which init
    functions have run."""
    store = interpreter._executor.variables
    values = {k: (v.dtype.str, v.shape, np.ascontiguousarray(v).tobytes()) for k, v in store.values.items()}
    return {"values": values, "initialized": sorted(store.initialized)}


# -- the checks scripts/reliability.py reports ---------------------------------------------------------
def _poisoned(step: int, how: str):
    from tools.reliability import models
    x, y = models.batch(step)
    x[1, 2] = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}[how]
    return {"x": x, "y": y}


def _trained(data: bytes, steps: int = 2):
    from litetrain import Interpreter
    from tools.reliability import models
    interp = Interpreter(model_content=data)
    for step in range(steps):
        interp.get_signature_runner("train")(**dict(zip("xy", models.batch(step))))
    return interp


def run_fault_injection() -> dict:
    """For every optimizer, an exception injected into each node of `train` in turn: count the
    calls that did not raise ExecutionError or that changed any variable."""
    from litetrain import ExecutionError
    from tools.reliability import models
    figures = {"faults_injected": 0, "not_raised": 0, "variables_changed": 0, "nodes_per_train": {}}
    for name in sorted(models.OPTIMIZERS):
        interp = _trained(models.mlp_file(name, guard=True))
        ops = node_ops(interp, "train")
        figures["nodes_per_train"][name] = len(ops)
        before = snapshot(interp)
        batch = dict(zip("xy", models.batch(99)))
        for index in range(len(ops)):
            with fail_at(interp, "train", index):
                try:
                    interp.get_signature_runner("train")(**batch)
                    figures["not_raised"] += 1
                except ExecutionError:
                    pass
            figures["faults_injected"] += 1
            figures["variables_changed"] += snapshot(interp) != before
    return figures


def run_guard_check() -> dict:
    """For every optimizer, guarded steps with a NaN, an inf and a -inf input: count steps not
    reported as skipped, steps that changed a variable, and runs that did not then continue
    exactly like a run that never saw the bad batches."""
    from tools.reliability import models
    figures = {"bad_steps": 0, "not_reported": 0, "variables_changed": 0, "diverged_after": 0}
    for name in sorted(models.OPTIMIZERS):
        data = models.mlp_file(name, guard=True)
        guarded, reference = _trained(data), _trained(data)
        train = guarded.get_signature_runner("train")
        for how in ("nan", "inf", "-inf"):
            before = snapshot(guarded)
            out = train(**_poisoned(7, how))
            figures["bad_steps"] += 1
            figures["not_reported"] += not bool(out["step_skipped"])
            figures["variables_changed"] += snapshot(guarded) != before
        for step in range(2, 5):
            batch = dict(zip("xy", models.batch(step)))
            train(**batch)
            reference.get_signature_runner("train")(**batch)
        figures["diverged_after"] += snapshot(guarded) != snapshot(reference)
    return figures


def run_thread_check(threads: int = 2, steps: int = 50) -> dict:
    """`threads` threads train one interpreter with the same batch while another reads its
    variables: count end states that differ from sequential training, and torn reads (a view
    that is not the state after some whole step)."""
    import threading

    from litetrain import Interpreter
    from tools.reliability import models
    data = models.mlp_file("adam")
    batch = dict(zip("xy", models.batch(0)))
    reference = Interpreter(model_content=data)
    states = {models.variables_digest(reference.get_variables())}
    for _ in range(threads * steps):
        reference.get_signature_runner("train")(**batch)
        states.add(models.variables_digest(reference.get_variables()))
    shared = Interpreter(model_content=data)
    seen, errors, stop = [], [], threading.Event()

    def train():
        try:
            for _ in range(steps):
                shared.get_signature_runner("train")(**batch)
        except Exception as e:  # noqa: BLE001 - counted
            errors.append(e)

    def read():
        while not stop.is_set():
            seen.append(models.variables_digest(shared.get_variables()))

    workers = [threading.Thread(target=train) for _ in range(threads)]
    watcher = threading.Thread(target=read)
    watcher.start()
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    stop.set()
    watcher.join()
    return {"threads": threads, "calls": threads * steps, "errors": len(errors),
            "end_state_differs": models.variables_digest(shared.get_variables()) != models.variables_digest(
                reference.get_variables()), "reads": len(seen), "torn_reads": sum(s not in states for s in seen)}
