"""Running functions: the variable store, the plans, and the execution loop.

A plan (plan.py) is built once per function and input shapes: the nodes left after folding and
fusion, each a kernel with its attributes bound, its input and output slots, and which slots are
freed after it runs. Running a plan is a short loop over those steps. Calls are transactional: a
variable's array is never changed once stored (a call stores new arrays), so restoring the
store's dictionary undoes a failed call exactly; an array a call made itself is stored without a
copy, and marked read-only.

A call is bounded (`Limits`, one per call, shared by every function it runs: loop bodies, branches,
the init function): its while loops may run `max_loop_iterations` iterations in all, nested loops
included, and the ops whose output size comes from tensor values (FILL, TILE, RANGE, ...: an op's
`allocates` in the registry) may allocate `memory_budget` bytes in all, checked before each one
allocates; a plan refuses a tensor over the budget when its shape is known at plan time.
"""
from __future__ import annotations

import os
import threading

import numpy as np

from .. import ops  # noqa: F401  (registers the op families whose kernels run)
from ..core.ir import Program, format_shape, numpy_dtype
from ..core.registry import OPS
from ..ops.checkpoint import CheckpointError
from . import heap, threads
from .plan import OverBudget, Plan, build_plan
from .bind import OutputCountError, bind_step
from .steps import PURE, STATEFUL

MAX_PLANS_PER_FUNCTION = 8  # input shapes remembered per function (the least recently used go)


class ExecutionError(RuntimeError):
    """A kernel failed while running a signature; names the signature, the node and the op."""


class CheckpointCallError(ExecutionError, CheckpointError):
    """A save or restore signature refused a checkpoint or could not write one: an ExecutionError
    (a call changed nothing) and a CheckpointError (lt.CheckpointError), naming the user's path."""


class NonFiniteError(ExecutionError):
    """A call left a float variable with an infinity or a NaN while the interpreter's
    `nonfinite_check` was on; the call was undone. Names the variables."""


class LoopLimitError(ExecutionError):
    """A call's while loops ran more iterations in all than the interpreter's `max_loop_iterations`
    (every iteration of every loop of the call counts, nested loops and loops in branches too); the
    call was undone. Names the loop."""


class MemoryBudgetError(ExecutionError):
    """An op would allocate past the call's `memory_budget`: one whose output size comes from tensor
    values (FILL, TILE, RANGE, ...; their outputs in one call are summed) or any op whose output
    alone is over the budget. Checked before allocating; the call was undone. Names the op, the
    output's dtype and shape, and the bytes against the budget."""


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

    def assign(self, name: str, value, owned: bool = False) -> None:
        """Store `value` as the variable's array. `owned`: the running call made it, so it is stored
        as is when it owns its memory (read-only from now on); anything else is copied, so that no
        caller's array, and no view of one, becomes a variable's."""
        value = np.asarray(value)
        old = self.values.get(name)
        if old is not None and old.dtype != value.dtype:
            raise TypeError(f"variable {name!r} is {old.dtype}; cannot assign {value.dtype}")
        if not (owned and value.flags.owndata):
            value = value.copy()
        value.setflags(write=False)
        self.values[name] = value

    def snapshot(self):
        return dict(self.values), set(self.initialized)

    def rollback(self, snap):
        self.values, self.initialized = dict(snap[0]), set(snap[1])


# A hostile file's loop condition may never turn false; a million iterations in one call (all its
# loops together) is far beyond any sequence or training loop a model file carries, and stops such a
# file within seconds.
DEFAULT_MAX_LOOP_ITERATIONS = 1_000_000
MEMORY_BUDGET_CAP = 2 << 30  # the default budget: 2 GiB, or half the physical memory when that is less
FOLD_BYTES = 64 << 20  # what the plans of one executor may fold to constants, together


def default_memory_budget() -> int:
    """min(2 GiB, half the machine's physical memory); 2 GiB where the memory cannot be read."""
    try:
        physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return MEMORY_BUDGET_CAP
    return min(MEMORY_BUDGET_CAP, physical // 2) if physical > 0 else MEMORY_BUDGET_CAP


DEFAULT_MEMORY_BUDGET = default_memory_budget()


class Limits:
    """What one call may spend, shared by every function it runs (loop bodies, branches, the init
    function): while-loop iterations, and bytes of the outputs of value-sized ops (None: no bound)."""
    __slots__ = ("iterations", "bytes", "max_iterations", "max_bytes")

    def __init__(self, max_iterations=DEFAULT_MAX_LOOP_ITERATIONS, max_bytes=DEFAULT_MEMORY_BUDGET):
        self.iterations, self.bytes = 0, 0
        self.max_iterations, self.max_bytes = max_iterations, max_bytes

    def loop_iteration(self, where: str, body: str) -> None:
        """Count one iteration of a while loop (its kernel calls this before each run of the body)."""
        self.iterations += 1
        if self.max_iterations is not None and self.iterations > self.max_iterations:
            raise LoopLimitError(f"{where}: this call's while loops ran {self.max_iterations:,} iterations in all "
                                 f"and the loop with body {body!r} would run another (max_loop_iterations counts "
                                 "every iteration of every loop of one call, nested loops too); the call was "
                                 "undone. Pass max_loop_iterations= to the Interpreter to allow more")

    def charge(self, nbytes: int, what) -> None:
        """Take `nbytes` from the budget before they are allocated; `what()` names the op and its output."""
        if self.max_bytes is not None and self.bytes + nbytes > self.max_bytes:
            raise MemoryBudgetError(
                f"{what()} would allocate {nbytes:,} bytes, over this call's memory budget: {self.bytes:,} of "
                f"{self.max_bytes:,} bytes taken (the outputs of ops sized by tensor values are summed over a "
                "call); the call was undone. Pass memory_budget= (bytes, or None) to the Interpreter to change it")
        self.bytes += nbytes


class RunContext:
    """What stateful kernels see: the variable store, a way to run other functions, and the call's
    limits (which the functions they run share)."""

    def __init__(self, executor: "Executor", where: str, limits: Limits):
        self.executor = executor
        self.variables = executor.variables
        self.where = where
        self.limits = limits

    def run(self, index: int, args, where: str, donate: bool = False):
        """Run function `index` within this call (its loops and allocations count against its limits)."""
        return self.executor.run_function(index, args, where=where, donate=donate, limits=self.limits)

    def call_once(self, index: int):
        if index in self.variables.initialized:
            return None
        self.run(index, [], where=f"{self.where} -> init subgraph {index}")
        self.variables.initialized.add(index)
        return None


class Executor:
    """Runs a Program's functions over one variable store. `optimize=False` runs every node's own
    kernel, with no folding, fusion or in-place work: the path the optimised one is tested against."""

    def __init__(self, program: Program, variables: VariableStore | None = None, optimize: bool = True,
                 num_threads: int = threads.DEFAULT_THREADS):
        heap.keep_freed_memory()  # (once per process: a step's arrays are not faulted in anew each call)
        self.program = program
        self.num_threads = num_threads  # BLAS threads during a call (runtime/threads.py)
        self.variables = variables or VariableStore()
        self.optimize = optimize
        self._plans: dict[int, dict] = {}
        self.lock = threading.RLock()
        self.nonfinite_check = False  # undo a call that leaves a float variable non-finite
        self.strict_checkpoints = False  # restore refuses a checkpoint without a checksum
        self.max_loop_iterations = DEFAULT_MAX_LOOP_ITERATIONS  # per call, all loops together; None: no bound
        self.memory_budget = DEFAULT_MEMORY_BUDGET  # bytes per call (Limits); None: no bound
        self._fold_left = FOLD_BYTES  # what new plans may still fold to constants
        self.random_streams: dict = {}  # generators of random ops (ops/random.py), by signature and seeds
        self._callers: tuple = ()  # the arrays the running call was given (never stored without a copy)
        self.keep_values = False  # keep every value of a run in last_values[function] (nothing freed)
        self.last_values: dict = {}

    def plan(self, index: int, args=None) -> Plan:
        """The plan of function `index` for inputs like `args` (arrays, or their shapes in a tuple;
        None: the shapes the function declares)."""
        fn = self.program.functions[index]
        if args is None:
            shapes = tuple(tuple(fn.tensors[i].shape) for i in fn.inputs)
        else:
            shapes = tuple(a if isinstance(a, tuple) else getattr(a, "shape", None) for a in args)
        plans = self._plans.setdefault(index, {})
        plan = plans.get(shapes)
        if plan is None:
            if len(plans) >= MAX_PLANS_PER_FUNCTION:
                self._fold_left += plans.pop(next(iter(plans))).folded_bytes
            budget = self.memory_budget
            try:
                plan = build_plan(self.program, index, shapes, self.optimize, free=not self.keep_values,
                                  max_bytes=budget, fold_bytes=min(self._fold_left, budget or FOLD_BYTES))
            except OverBudget as e:
                raise MemoryBudgetError(f"function {fn.name!r}: {e}; pass memory_budget= (bytes, or None) to the "
                                        "Interpreter to change it") from None
            self._fold_left -= plan.folded_bytes
            plans[shapes] = plan
        elif len(plans) > 1 and next(reversed(plans)) != shapes:  # most recently used last
            plans[shapes] = plans.pop(shapes)
        return plan

    def run_function(self, index: int, args, where: str = "", donate: bool = False, limits: Limits | None = None):
        """Run function `index` on `args` (arrays in the function's input order); returns the
        values of its outputs. `donate`: args is a list the caller gives up (it is emptied), so
        that a step may write into an input's buffer that nothing else holds (a loop's lists).
        `limits`: those of the call this run belongs to (None: a new call, with the executor's)."""
        if limits is None:
            limits = Limits(self.max_loop_iterations, self.memory_budget)
        try:
            plan = self.plan(index, args)
        except MemoryBudgetError as e:
            raise MemoryBudgetError(f"while planning {where or self.program.functions[index].name}: {e}") from None
        bound = plan.bound if plan.bound is not None else self._bind(plan)
        slots = plan.template.copy()
        for i, value in zip(plan.inputs, args):
            slots[i] = value
        value = None  # (holding the last argument would keep a step from writing into it)
        if donate:
            args.clear()
        call = _Call(self, where or plan.function.name, limits)
        n = -1
        try:
            for n, step in enumerate(bound):
                step(slots, call)
        except ExecutionError:
            raise
        except CheckpointError as e:  # the user's file, not the model: said as it is, catchable as such
            raise CheckpointCallError(f"{where or plan.function.name}: {e}") from None
        except Exception as e:
            raise self._failure(e, plan.steps[n] if n >= 0 else None, slots, plan, where) from e
        if self.keep_values:
            self.last_values[index] = slots
        return [slots[i] for i in plan.outputs]

    def _bind(self, plan):
        """The plan's steps as closures over their slots (a pre-bound sequence of kernel calls); the
        step of an op sized by tensor values first takes its bytes from the call's memory budget."""
        plan.bound = [_charging(bind_step(step, self), step, plan.function) for step in plan.steps]
        return plan.bound

    def _failure(self, e, step, slots, plan, where):
        fn = plan.function
        node = step[5] if step is not None else None
        if isinstance(e, OutputCountError):
            return ExecutionError(f"while running {where or fn.name}: node {_position(fn, node)} {node.op} has "
                                  f"{e.expected} outputs in the model but made {e.made}")
        loc = f" (traced at {node.where})" if getattr(node, "where", "") else ""
        shapes = ", ".join("-" if i < 0 else _describe(slots[i]) for i in step[2]) if step is not None else ""
        # the output's name is kept in the file; a check names what it checks there (ops/tensor_list.py)
        named = f" [output {fn.tensors[step[3][0]].name!r}]" if step is not None and step[3] else ""
        return ExecutionError(f"while running {where or fn.name}: node {_position(fn, node)} "
                              f"{getattr(node, 'op', '?')}({shapes}){loc} failed: {type(e).__name__}: {e}{named}")

    def run_transaction(self, index: int, args, where: str = "", finish=None):
        """Run a function; if it fails, every variable is left exactly as it was. `finish(outputs)`,
        when given, makes what the call returns (the caller's copies of the outputs, say) inside the
        transaction: if that fails too (memory runs out), the call changes nothing either."""
        with self.lock:
            snap = self.variables.snapshot()
            callers, self._callers = self._callers, tuple(args)
            blas = threads.limit(self.num_threads)
            try:
                result = self.run_function(index, args, where)
                if finish is not None:
                    result = finish(result)
                if self.nonfinite_check:
                    bad = _nonfinite_changes(snap[0], self.variables.values)
                    if bad:
                        raise NonFiniteError(f"{where or self.program.functions[index].name} left non-finite "
                                             f"values in variable(s) {', '.join(bad)}; the call was undone")
                return result
            except BaseException:
                self.variables.rollback(snap)
                raise
            finally:
                self._callers = callers
                threads.restore(blas)


class _Call:
    """One run of a function: where it runs (for errors and random streams), the limits of the call
    it belongs to (shared with the functions it runs) and, made when a stateful kernel first needs
    it, the RunContext those kernels get."""
    __slots__ = ("executor", "where", "limits", "_ctx")

    def __init__(self, executor, where, limits):
        self.executor, self.where, self.limits, self._ctx = executor, where, limits, None

    def ctx(self):
        if self._ctx is None:
            self._ctx = RunContext(self.executor, self.where, self.limits)
        return self._ctx


def _charging(run, step, fn):
    """`run`, preceded by taking the bytes its op will allocate from the call's memory budget, when
    the op's output size comes from tensor values (its `allocates` rule, ops/); else `run` itself."""
    kind, ins, node = step[1], step[2], step[5]
    sizes = getattr(OPS.get(getattr(node, "op", None)), "allocates", None) if kind in (PURE, STATEFUL) else None
    if sizes is None:
        return run
    attrs = node.attrs

    def step(slots, call):
        dtype, shape, nbytes = sizes(*[None if i < 0 else slots[i] for i in ins], **attrs)
        call.limits.charge(nbytes, lambda: f"{call.where}: node {_position(fn, node)} {node.op.upper()} "
                                           f"[output {np.dtype(dtype).name}{format_shape(shape)}]")
        run(slots, call)
    return step


def _position(fn, node):
    """The node's index in its function (a fused step: the first node it stands for)."""
    for k, n in enumerate(fn.nodes):
        if n is node:
            return k
    return f"[{getattr(node, 'name', '?')}]"


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
        if not all(isinstance(v, (str, bytes, np.str_, np.bytes_)) for v in arr.reshape(-1)):
            bad = next(v for v in arr.reshape(-1) if not isinstance(v, (str, bytes, np.str_, np.bytes_)))
            raise TypeError(f"{what}: expected strings, got {type(bad).__name__} {bad!r}")
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
