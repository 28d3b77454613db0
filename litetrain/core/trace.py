"""Tracing: symbolic tensors that record registered ops into a Function as Python code runs.

There is no global tracing state: every symbolic Tensor knows the FunctionBuilder it belongs to,
and an op finds its builder from its tensor arguments. Tracing two models in one process, or two
signatures of one model, never mixes their graphs.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import numpy as np

from .ir import Function, Node, Program, Variable, dtype_name, format_shape, numpy_dtype
from .registry import get_op

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # litetrain/
FOLD_LIMIT = 1 << 16  # constant-fold ops whose result has at most this many elements


class TraceError(Exception):
    """An error while tracing a model: names the op and where in the user's code it was traced."""


def _user_location() -> str:
    frame = sys._getframe(2)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR):
        frame = frame.f_back
    if frame is None:
        return ""
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"


class Tensor:
    """A symbolic tensor: an index into the Function that its FunctionBuilder is recording."""
    __array_priority__ = 1000  # so ndarray (op) Tensor defers to Tensor

    def __init__(self, fb: "FunctionBuilder", index: int):
        self.fb = fb
        self.index = index

    @property
    def info(self):
        return self.fb.fn.tensors[self.index]

    @property
    def dtype(self) -> str:
        return self.info.dtype

    @property
    def shape(self) -> tuple:
        return self.info.shape

    @property
    def ndim(self) -> int:
        return len(self.info.shape)

    @property
    def constant(self):
        """The value when this tensor is a constant known at trace time, else None."""
        return self.info.data

    def __repr__(self):
        return f"Tensor({self.info.name}: {self.dtype}{format_shape(self.shape)})"

    def __bool__(self):
        raise TraceError("a symbolic tensor has no truth value while tracing; use lt.ops.where "
                         "or a Python value known at conversion time")

    # Arithmetic operators (+, *, @, <, ...) are attached by the op set (litetrain/ops/__init__.py).


class FunctionBuilder:
    """Records one Function of a Program: inputs, constants, nodes, variable reads and writes."""
    depth = 0  # how deeply nested in loop bodies / branches (subgraphs.BodyBuilder) this function is

    def __init__(self, pb: "ProgramBuilder", name: str):
        self.pb = pb
        self.fn = Function(name)
        self._consts: dict = {}
        self._handles: dict[str, int] = {}
        self._current: dict[str, Tensor] = {}  # variable name -> its value now in this function
        self.reads: dict[str, list[int]] = {}   # variable name -> read_variable output indices
        self.reports: dict[str, Tensor] = {}    # outputs added by library code (e.g. step_skipped)
        self.recompute_regions: list = []      # node lists whose values the backward pass recomputes (remat.py)
        self._counter = 0

    # -- tensors -------------------------------------------------------------------------
    def _name(self, stem: str) -> str:
        self._counter += 1
        return f"{self.fn.name}/{stem}_{self._counter}"

    def input(self, name: str, dtype, shape) -> Tensor:
        index = self.fn.add_tensor(f"{self.fn.name}_{name}:0", dtype_name(dtype), tuple(shape))
        self.fn.inputs.append(index)
        return Tensor(self, index)

    def const(self, value, dtype=None) -> Tensor:
        if isinstance(value, Tensor):
            return value
        dtype = dtype_name(dtype) if dtype is not None else None
        arr = np.asarray(value, dtype=numpy_dtype(dtype) if dtype else None)
        if arr is value:
            arr = arr.copy()  # the constant must not freeze or alias the caller's array
        if dtype is None:
            if arr.dtype == np.float64:
                arr = arr.astype(np.float32)
            elif arr.dtype == np.int64:
                arr = arr.astype(np.int32)
        if not arr.flags.c_contiguous:
            arr = arr.copy()  # (np.ascontiguousarray would turn a 0-d array into 1-d)
        key = (arr.dtype.str, arr.shape, arr.tobytes()) if arr.dtype != np.object_ else None
        if key is not None and key in self._consts:
            return self._consts[key]
        arr.setflags(write=False)
        index = self.fn.add_tensor(self._name("const"), dtype_name(arr.dtype), arr.shape, arr)
        tensor = Tensor(self, index)
        if key is not None:
            self._consts[key] = tensor
        return tensor

    def to_tensor(self, value, like: Tensor | None = None) -> Tensor:
        """A Tensor of this function for a Tensor, a Param/Buffer, or a Python/NumPy value.
        Python numbers take the dtype of `like`."""
        if isinstance(value, Tensor):
            if value.fb is not self:
                raise TraceError(f"{value!r} belongs to function {value.fb.fn.name!r}, "
                                 f"not to {self.fn.name!r}")
            return value
        if hasattr(value, "_litetrain_state"):
            return self.read(value)
        if like is not None and isinstance(value, (int, float, bool, np.number)):
            return self.const(value, like.dtype)
        return self.const(value)

    # -- nodes ---------------------------------------------------------------------------
    def emit(self, op: str, inputs, attrs=None, where: str | None = None):
        """Add a node; returns its output Tensor (or a tuple of them for several outputs).
        Inputs may be None for an absent optional input."""
        opdef = get_op(op)
        try:
            attrs = opdef.check_attrs(attrs or {})
        except ValueError as e:
            raise TraceError(str(e)) from None
        lo, hi = opdef.num_inputs
        if len(inputs) < lo or (hi is not None and len(inputs) > hi):
            raise TraceError(f"op {op!r} takes {lo}..{hi if hi is not None else 'any'} inputs, "
                             f"got {len(inputs)}")
        where = _user_location() if where is None else where
        idx = [-1 if t is None else self.to_tensor(t).index for t in inputs]
        infos = [None if i < 0 else self.fn.tensors[i] for i in idx]
        try:
            out_specs = opdef.infer(attrs, infos)
        except Exception as e:
            desc = ", ".join("-" if t is None else f"{t.dtype}{format_shape(t.shape)}" for t in infos)
            raise TraceError(f"op {op!r} at {where or '?'}: {e} (inputs: {desc})") from None
        if (not opdef.stateful and infos and all(t is not None and t.data is not None for t in infos)
                and all(None not in s for _, s in out_specs)
                and sum(int(np.prod(s)) for _, s in out_specs) <= FOLD_LIMIT):
            result = opdef.kernel(*[t.data for t in infos], **attrs)
            result = result if isinstance(result, tuple) else (result,)
            outs = tuple(self.const(np.asarray(r, dtype=numpy_dtype(d)), d)
                         for r, (d, _) in zip(result, out_specs))
            return outs[0] if len(outs) == 1 else outs
        out_idx = [self.fn.add_tensor(self._name(op), d, s) for d, s in out_specs]
        self.fn.nodes.append(Node(op, idx, out_idx, attrs, where))
        outs = tuple(Tensor(self, i) for i in out_idx)
        return outs[0] if len(outs) == 1 else (outs if outs else None)

    # -- variables -----------------------------------------------------------------------
    def _handle(self, name: str) -> int:
        if name not in self._handles:
            var = self.pb.program.variables[name]
            idx = self.fn.add_tensor(f"{name}/handle", "resource", ())
            self.fn.nodes.append(_node("var_handle", [], [idx], {"container": "", "shared_name": var.name}))
            self._handles[name] = idx
        return self._handles[name]

    def read(self, state) -> Tensor:
        """The current value of a Param/Buffer in this function (read once, then reused). A state
        marked `_as_constant` (frozen weights a converter keeps out of the variables) is its value
        as a constant, which constant folding may then combine with other constants."""
        if getattr(state, "_as_constant", False):
            return self.const(state.value)
        var = self.pb.variable(state)
        if var.name in self._current:
            return self._current[var.name]
        h = self._handle(var.name)
        out = self.fn.add_tensor(f"{var.name}/read_{len(self.reads.get(var.name, []))}", var.dtype, var.shape)
        self.fn.nodes.append(_node("read_variable", [h], [out], {}, _user_location()))
        self.reads.setdefault(var.name, []).append(out)
        self._current[var.name] = Tensor(self, out)
        return self._current[var.name]

    def assign(self, state, value) -> None:
        var = self.pb.variable(state)
        value = self.to_tensor(value)
        if value.dtype != var.dtype:
            raise TraceError(f"cannot assign {value.dtype} to variable {var.name!r} of {var.dtype}")
        _check_assign_shape(var, value.shape)
        h = self._handle(var.name)
        self.fn.nodes.append(_node("assign_variable", [h, value.index], [], {}, _user_location()))
        self._current[var.name] = value


def _check_assign_shape(var: Variable, shape):
    if len(shape) != len(var.shape) or any(a is not None and b is not None and a != b
                                           for a, b in zip(shape, var.shape)):
        raise TraceError(f"cannot assign a value of shape {format_shape(shape)} to variable "
                         f"{var.name!r} of shape {format_shape(var.shape)}")


def _node(op, inputs, outputs, attrs, where=""):
    return Node(op, inputs, outputs, attrs, where)


@dataclass
class TraceOptions:
    """Conversion options that library code reads while tracing (see convert's docstring)."""
    nonfinite_guard: bool = False              # optimizer steps skip non-finite losses and gradients
    max_sequence_length: int | None = None     # the capacity of a differentiated loop's tensor lists


class ProgramBuilder:
    """Collects the variables that tracing meets and the functions it records."""

    def __init__(self, options: TraceOptions | None = None):
        self.program = Program()
        self.options = options or TraceOptions()

    def variable(self, state) -> Variable:
        name = state.path
        if not name:
            raise TraceError(f"{state!r} has no path: attach it to a Module before tracing")
        var = self.program.variables.get(name)
        value = state.value
        if var is None:
            # `shape_signature` (e.g. a classifier head's [None, d]) lets assignments resize the variable
            shape = tuple(getattr(state, "shape_signature", None) or value.shape)
            var = Variable(name, dtype_name(value.dtype), shape, value,
                           trainable=state.trainable, kind=state.kind)
            self.program.variables[name] = var
        return var

    def function(self, name: str) -> FunctionBuilder:
        return FunctionBuilder(self, name)

    def add_function(self, fb: FunctionBuilder) -> int:
        self.program.functions.append(fb.fn)
        return len(self.program.functions) - 1


def builder_of(*values) -> FunctionBuilder:
    """The FunctionBuilder of the symbolic Tensors among `values` (nested in lists too). Inside a
    loop body or branch (core/subgraphs.py) tensors of enclosing functions may be mixed in: the
    innermost builder wins, and it captures the others."""
    found = None
    for v in values:
        for item in (v if isinstance(v, (list, tuple)) else (v,)):
            if isinstance(item, Tensor) and (found is None or item.fb.depth > found.depth):
                found = item.fb
    if found is not None:
        return found
    raise TraceError("this op needs at least one symbolic tensor argument to know which "
                     "function is being traced (got only constants or variables)")
