"""Running functions: the variable store, per-signature plans, and the execution loop.

A plan is built once per function: each node's kernel with its attributes bound, its input and
output slots, and which slots can be freed after it runs. Running a plan is a short loop over
those steps. Calls are transactional: variables are replaced, never mutated in place, so
restoring the store's dictionary undoes a failed call exactly.
"""
from __future__ import annotations

import functools
import threading

import numpy as np

from .. import ops  # noqa: F401  (registers the op families whose kernels run)
from ..core.ir import Function, Program, format_shape, numpy_dtype
from ..core.registry import get_op


class ExecutionError(RuntimeError):
    """A kernel failed while running a signature; names the signature, the node and the op."""


class NonFiniteError(ExecutionError):
    """A call left a float variable with an infinity or a NaN while the interpreter's
    `nonfinite_check` was on; the call was undone. Names the variables."""


class VariableStore:
    """Variable values by name, shared by every signature of one interpreter."""

    def __init__(self):
        self.values: dict[str, np.ndarray] = {}
        self.initialized: set[int] = set()

    def has(self, name: str) -> bool:
        return name in self.values

    def read(self, name: str) -> np.ndarray:
        try:
            return self.values[name]
        except KeyError:
            raise KeyError(f"variable {name!r} is read before it is assigned") from None

    def assign(self, name: str, value) -> None:
        value = np.asarray(value)
        old = self.values.get(name)
        if old is not None and old.dtype != value.dtype:
            raise TypeError(f"variable {name!r} is {old.dtype}; cannot assign {value.dtype}")
        value = value.copy()  # a variable owns its value: later in-place work never aliases it
        value.setflags(write=False)
        self.values[name] = value

    def snapshot(self):
        return dict(self.values), set(self.initialized)

    def rollback(self, snap):
        self.values, self.initialized = dict(snap[0]), set(snap[1])


class RunContext:
    """What stateful kernels see: the variable store and a way to run other functions."""

    def __init__(self, executor: "Executor", where: str):
        self.executor = executor
        self.variables = executor.variables
        self.where = where

    def call_once(self, index: int):
        if index in self.variables.initialized:
            return None
        self.executor.run_function(index, [], where=f"{self.where} -> init subgraph {index}")
        self.variables.initialized.add(index)
        return None


class Plan:
    """A function ready to run: steps of (kernel, input slots, output slots, slots to free)."""

    def __init__(self, program: Program, index: int):
        fn: Function = program.functions[index]
        self.function = fn
        self.num_slots = len(fn.tensors)
        self.constants = [(i, t.data) for i, t in enumerate(fn.tensors) if t.data is not None]
        last_use = {}
        for step, node in enumerate(fn.nodes):
            for i in node.inputs:
                if i >= 0:
                    last_use[i] = step
        keep = set(fn.outputs) | {i for i, _ in self.constants}
        self.steps = []
        for step, node in enumerate(fn.nodes):
            opdef = get_op(node.op)
            kernel = functools.partial(opdef.kernel, **node.attrs) if node.attrs else opdef.kernel
            frees = tuple(i for i in set(node.inputs) if i >= 0 and last_use.get(i) == step and i not in keep)
            self.steps.append((kernel, opdef.stateful, tuple(node.inputs), tuple(node.outputs), frees, node))


# A hostile file's loop condition may never turn false; a million iterations is far beyond any
# sequence or training loop a model file carries, and stops such a file within seconds.
DEFAULT_MAX_LOOP_ITERATIONS = 1_000_000


class Executor:
    """Runs a Program's functions over one variable store."""

    def __init__(self, program: Program, variables: VariableStore | None = None):
        self.program = program
        self.variables = variables or VariableStore()
        self._plans: dict[int, Plan] = {}
        self.lock = threading.RLock()
        self.nonfinite_check = False  # undo a call that leaves a float variable non-finite
        self.strict_checkpoints = False  # restore refuses a checkpoint without a checksum
        self.max_loop_iterations = DEFAULT_MAX_LOOP_ITERATIONS  # per run of one while loop; None: no bound
        self.random_streams: dict = {}  # generators of random ops (ops/random.py), by signature and seeds

    def plan(self, index: int) -> Plan:
        plan = self._plans.get(index)
        if plan is None:
            plan = self._plans[index] = Plan(self.program, index)
        return plan

    def run_function(self, index: int, args, where: str = ""):
        """Run function `index` on `args` (arrays in the function's input order); returns the
        slots of its outputs."""
        plan = self.plan(index)
        fn = plan.function
        slots = [None] * plan.num_slots
        for i, data in plan.constants:
            slots[i] = data
        for i, value in zip(fn.inputs, args):
            slots[i] = value
        ctx = None
        for kernel, stateful, ins, outs, frees, node in plan.steps:
            try:
                if stateful:
                    if ctx is None:
                        ctx = RunContext(self, where or fn.name)
                    result = kernel(ctx, *[None if i < 0 else slots[i] for i in ins])
                else:
                    result = kernel(*[None if i < 0 else slots[i] for i in ins])
            except ExecutionError:
                raise
            except Exception as e:
                loc = f" (traced at {node.where})" if node.where else ""
                shapes = ", ".join("-" if i < 0 else _describe(slots[i]) for i in ins)
                # the output's name is kept in the file; a check names what it checks there (ops/tensor_list.py)
                named = f" [output {fn.tensors[outs[0]].name!r}]" if outs else ""
                raise ExecutionError(f"while running {where or fn.name}: node {fn.nodes.index(node)} "
                                     f"{node.op}({shapes}){loc} failed: {type(e).__name__}: {e}{named}") from e
            if len(outs) == 1 and not isinstance(result, tuple) and result is not None:
                slots[outs[0]] = result
            elif outs:  # a file may give an op more or fewer outputs than its kernel makes
                if not isinstance(result, tuple) or len(result) != len(outs) or any(r is None for r in result):
                    made = len(result) if isinstance(result, tuple) else int(result is not None)
                    raise ExecutionError(f"while running {where or fn.name}: node {fn.nodes.index(node)} "
                                         f"{node.op} has {len(outs)} outputs in the model but made {made}")
                for o, r in zip(outs, result):
                    slots[o] = r
            for i in frees:
                slots[i] = None
        return [slots[i] for i in fn.outputs]

    def run_transaction(self, index: int, args, where: str = ""):
        """Run a function; if it fails, every variable is left exactly as it was."""
        with self.lock:
            snap = self.variables.snapshot()
            try:
                result = self.run_function(index, args, where)
                if self.nonfinite_check:
                    bad = _nonfinite_changes(snap[0], self.variables.values)
                    if bad:
                        raise NonFiniteError(f"{where or self.program.functions[index].name} left non-finite "
                                             f"values in variable(s) {', '.join(bad)}; the call was undone")
                return result
            except BaseException:
                self.variables.rollback(snap)
                raise


def _nonfinite_changes(before: dict, after: dict) -> list[str]:
    """Names of float variables that a call replaced with a value holding an infinity or a NaN."""
    return [name for name, value in after.items()
            if value is not before.get(name) and value.dtype.kind == "f" and not np.isfinite(value).all()]


def _describe(value):
    if isinstance(value, np.ndarray):
        return f"{value.dtype}{format_shape(value.shape)}"
    return type(value).__name__


def coerce_input(value, dtype: str, shape, what: str) -> np.ndarray:
    """Check one input against its spec (dtype exactly as TensorFlow Lite does, rank and known dims)."""
    if dtype == "string":
        arr = np.asarray(value, dtype=object)
    else:
        arr = np.asarray(value)
        want = numpy_dtype(dtype)
        if arr.dtype != want:
            if isinstance(value, (int, float, bool)) or (arr.ndim == 0 and not isinstance(value, np.ndarray)):
                arr = arr.astype(want)  # a Python number is accepted for a scalar input
            else:
                raise TypeError(f"{what}: expected dtype {dtype}, got {arr.dtype}")
    if arr.ndim != len(shape) or any(d is not None and d != a for d, a in zip(shape, arr.shape)):
        raise ValueError(f"{what}: expected shape {format_shape(shape)}, got {list(arr.shape)}")
    return arr
