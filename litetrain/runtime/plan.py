"""Plans: a function specialised to the shapes of its inputs, as a short list of pre-bound steps.

`build_plan` does at plan time what need not be done at every call, the way a delegate rewrites
the graph it receives (the file itself is never changed):
1. shapes: the shapes of the inputs of this call are propagated through every node with the ops'
   own shape rules; SHAPE of a tensor whose shape is then known is a constant;
2. folding: a node without side effects whose inputs are all constants is run once, here, and its
   outputs become constants (shape arithmetic, reshaped constants, ...); VAR_HANDLE is its name;
3. fusion (runtime/fusion/): subgraphs that converters emit (an activation's gradient, a pooling
   gradient, a convolution's filter gradient, ...) become one step each, when they match exactly;
4. memory: each value is freed after its last use, and an elementwise step whose input dies there
   may write its result into that input's buffer (`inplace.py`), when at run time nothing else
   holds it.
With `optimize=False` only the steps of the nodes are made: the op-by-op path every optimisation
is tested against.
"""
from __future__ import annotations

import numpy as np

from ..core.ir import Function, Program, TensorInfo, format_shape, numpy_dtype
from ..core.registry import get_op
from . import fusion, inplace
from .steps import Node, step_of_node

FOLD_LIMIT = 1 << 16  # fold a node whose outputs have at most this many elements


class OverBudget(Exception):
    """A node's output, its shape known at plan time, is larger than the whole memory budget."""


class Plan:
    """A function ready to run: `slots` to copy at each call (constants filled in), and `steps`,
    each (callable, kind, input slots, output slots, slots to free after it, node)."""

    def __init__(self, function: Function, template: list, steps: list, inputs: tuple, outputs: tuple):
        self.function = function
        self.template = template
        self.steps = steps
        self.inputs = inputs
        self.outputs = outputs
        self.bound = None  # the steps as closures, made by the executor at the first run (None again after a change)
        self.folded_bytes = 0  # the bytes of the values folded to constants (held as long as the plan)


def build_plan(program: Program, index: int, shapes, optimize: bool = True, free: bool = True,
               max_bytes: int | None = None, fold_bytes: int = 64 << 20) -> Plan:
    """The plan of function `index` for inputs of `shapes` (a tuple; None for an input whose shape
    is not known, a resource handle say). `free=False` keeps every value to the end of the run.
    `max_bytes`: the memory budget; a node whose output's shape, known here, is larger raises
    OverBudget. `fold_bytes`: the most bytes the folded values may take together (the nodes past it
    run at call time, where the budget checks them)."""
    fn = program.functions[index]
    infos = [TensorInfo(t.name, t.dtype, tuple(t.shape), t.data) for t in fn.tensors]
    for i, shape in zip(fn.inputs, shapes):
        if shape is not None and len(shape) == len(infos[i].shape):
            infos[i] = TensorInfo(infos[i].name, infos[i].dtype, tuple(shape), None)
    budget = _Budget(max_bytes, fold_bytes)
    nodes = _specialise(fn, infos, budget) if optimize else [
        Node(n, [None if i < 0 else infos[i] for i in n.inputs], [infos[o] for o in n.outputs]) for n in fn.nodes]
    steps = fusion.apply(nodes, fn, infos, program) if optimize else [step_of_node(n, infos) for n in nodes]
    steps = _with_frees(steps, fn, infos) if free else [s[:4] + ((),) + s[5:] for s in steps]
    if optimize:
        steps = inplace.mark(steps, fn, infos)
    template = [info.data for info in infos]
    plan = Plan(fn, template, steps, tuple(fn.inputs), tuple(fn.outputs))
    plan.folded_bytes = budget.folded
    return plan


class _Budget:
    """The memory budget at plan time: the largest output allowed, and what folding may still take."""

    def __init__(self, max_bytes, fold_bytes):
        self.max_bytes, self.fold_left, self.folded = max_bytes, fold_bytes, 0

    def check(self, k, node, specs):
        """Raise OverBudget when an output of node k, its shape fully known, is over the budget."""
        if self.max_bytes is None:
            return
        for dtype, shape in specs:
            n = _nbytes(dtype, shape)
            if n is not None and n > self.max_bytes:
                raise OverBudget(f"node {k} {node.op.upper()} [output {dtype}{format_shape(shape)}] would allocate "
                                 f"{n:,} bytes, more than the whole memory budget of {self.max_bytes:,} bytes")


def _nbytes(dtype, shape):
    """The bytes of a tensor of `dtype` and `shape` (Python ints: no overflow), or None when unknown."""
    if None in shape or dtype in ("resource", "variant", "string"):
        return None
    n = numpy_dtype(dtype).itemsize
    for d in shape:
        n *= int(d)
    return n


# -- 1 and 2: shapes and folding --------------------------------------------------------------------
def _specialise(fn: Function, infos: list, budget: _Budget) -> list:
    """The nodes left after folding, with infos updated in place (shapes, folded constants); refuses
    an output over the memory budget."""
    kept = []
    for k, node in enumerate(fn.nodes):
        opdef = get_op(node.op)
        ins = [None if i < 0 else infos[i] for i in node.inputs]
        if node.op == "var_handle":  # its output is the variable's name
            infos[node.outputs[0]].data = _constant(str(node.attrs.get("shared_name", "")))
            continue
        if not opdef.stateful:
            specs = _infer(opdef, node, ins)
            if specs is not None:
                budget.check(k, node, specs)
                for o, (dtype, shape) in zip(node.outputs, specs):
                    infos[o] = TensorInfo(infos[o].name, dtype, tuple(shape), None)
                if _fold(opdef, node, ins, infos, budget):
                    continue
        elif opdef.allocates is not None:  # a value-sized stateful op (RANDOM_UNIFORM): its declared outputs
            budget.check(k, node, [(infos[o].dtype, infos[o].shape) for o in node.outputs])
        kept.append(Node(node, ins, [infos[o] for o in node.outputs]))
    return kept


def _constant(value):
    arr = np.asarray(value, dtype=object) if isinstance(value, str) else np.asarray(value)
    arr.setflags(write=False)
    return arr if not isinstance(value, str) else value


def _infer(opdef, node, ins):
    """The op's shape rule on the infos known now, or None when it cannot say (then the file's
    declared shapes stand)."""
    try:
        specs = opdef.infer(node.attrs, ins)
    except Exception:  # noqa: BLE001  (a rule that refuses these inputs: the kernel will say why at run time)
        return None
    if len(specs) != len(node.outputs):
        return None
    return specs


def _fold(opdef, node, ins, infos, budget) -> bool:
    """Run the node now when its outputs are determined: SHAPE of a known shape, or every input a
    constant and the outputs small (and within what folding may still take). Returns whether it was
    folded."""
    outs = [infos[o] for o in node.outputs]
    if node.op == "shape" and ins[0] is not None and None not in ins[0].shape:
        values = (np.asarray(ins[0].shape, dtype=numpy_dtype(node.attrs.get("out_type", "int32"))),)
    elif ins and all(t is not None and t.data is not None for t in ins) and all(
            None not in t.shape and t.dtype not in ("resource", "variant", "string") for t in outs) and sum(
            int(np.prod(t.shape)) for t in outs) <= FOLD_LIMIT and sum(
            _nbytes(t.dtype, t.shape) for t in outs) <= budget.fold_left:
        try:
            result = opdef.kernel(*[t.data for t in ins], **node.attrs)
        except Exception:  # noqa: BLE001  (the same error comes at run time, naming the node)
            return False
        values = result if isinstance(result, tuple) else (result,)
    else:
        return False
    if len(values) != len(outs):
        return False
    for o, v in zip(node.outputs, values):
        arr = np.asarray(v)
        if arr.dtype != numpy_dtype(infos[o].dtype) or tuple(arr.shape) != tuple(infos[o].shape):
            return False
    for o, v in zip(node.outputs, values):
        infos[o] = TensorInfo(infos[o].name, infos[o].dtype, infos[o].shape, _constant(v))
        budget.fold_left -= infos[o].data.nbytes if isinstance(infos[o].data, np.ndarray) else 0
        budget.folded += infos[o].data.nbytes if isinstance(infos[o].data, np.ndarray) else 0
    return True


# -- memory -----------------------------------------------------------------------------------------
def _with_frees(steps, fn: Function, infos) -> list:
    """Each step with the slots whose last use it is (never an output or a constant)."""
    last_use = {}
    for k, step in enumerate(steps):
        for i in step[2]:
            if i >= 0:
                last_use[i] = k
    keep = set(fn.outputs) | {i for i, info in enumerate(infos) if info.data is not None}
    out = []
    for k, (call, kind, ins, outs, _, node) in enumerate(steps):
        frees = tuple(sorted({i for i in ins if i >= 0 and last_use.get(i) == k and i not in keep}))
        out.append((call, kind, ins, outs, frees, node))
    return out


