"""The op test table: every registered op's cases as data, read by tests/test_ops.py.

A `Case` names an op, its inputs (how to generate each, the shape it is traced with, whether it is a
trace-time constant), its attributes and an independent reference: PyTorch where it has the op
(`Torch`, which also gives autograd to check our gradients against), otherwise NumPy written
differently from the kernel (`NumPy`). A `Bad` row is an input the op must refuse while tracing.
Generators pick the gradient's domain: positive inputs for log/sqrt/pow, no ties for max/min,
nothing within reach of a kink (relu at 0, relu6 at 0 and 6, abs at 0).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

# The state and I/O ops cannot run as a one-op function: they need variables, an init subgraph
# or a file around them. tests/test_ops.py tests them with small hand-built programs.
STATEFUL_EXEMPT = {
    "var_handle": "yields a resource handle; meaningful only with read/assign_variable",
    "read_variable": "takes its dtype and shape from a program variable (FunctionBuilder.read)",
    "assign_variable": "writes the variable store; has no output to compare",
    "call_once": "runs another subgraph of the program once per variable store",
    "save_checkpoint": "writes a file",
    "restore_checkpoint": "reads a file and checks it against the variable store",
}
# Ops whose inputs or outputs are not arrays (TensorFlow's tensor lists), or that need parameters on
# their tensors (quantized ops), cannot run as a one-op row either: each entry says where they are tested.
VALUE_EXEMPT: dict[str, str] = {}


# -- input generators: (rng, shape, dtype) -> array -------------------------------------------------
def normal(scale=1.0):
    def gen(rng, shape, dtype):
        return (rng.standard_normal(shape) * scale).astype(dtype)
    return gen


def uniform(lo, hi):
    def gen(rng, shape, dtype):
        return rng.uniform(lo, hi, shape).astype(dtype)
    return gen


def away_from(*kinks, lo=-3.0, hi=3.0, gap=0.1):
    """Uniform in [lo, hi) but never within `gap` of a kink, where a gradient jumps."""
    def gen(rng, shape, dtype):
        x = rng.uniform(lo, hi, shape)
        for _ in range(1000):
            near = np.zeros(x.shape, bool)
            for k in kinks:
                near |= np.abs(x - k) < gap
            if not near.any():
                return x.astype(dtype)
            x[near] = rng.uniform(lo, hi, int(near.sum()))
        raise RuntimeError("away_from: could not sample away from the kinks")
    return gen


def distinct(phase=0.0):
    """Distinct values on a 0.25 grid shifted by `phase`: max/min/arg_max have no ties, and two
    inputs with different phases never come closer than the difference of their phases."""
    def gen(rng, shape, dtype):
        n = int(np.prod(shape, dtype=np.int64))
        return ((rng.permutation(n) - n // 2) * 0.25 + phase).reshape(shape).astype(dtype)
    return gen


def coarse(rng, shape, dtype):
    """Floats on a coarse grid that includes 0, so comparisons see equal elements."""
    return rng.integers(-2, 3, shape).astype(dtype) * 0.5


def ints(lo=-6, hi=7, nonzero=False):
    def gen(rng, shape, dtype):
        x = rng.integers(lo, hi, shape)
        if nonzero:
            x[x == 0] = 1
        return x.astype(dtype)
    return gen


def indices(n):
    return ints(0, n)


def bools(rng, shape, dtype):
    return rng.random(shape) < 0.5


# -- the table's rows ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class In:
    """One input: its data (`value`, or `gen` for the given concrete `shape`), the shape it is
    traced with (None for dims unknown at conversion; defaults to the concrete shape), and whether
    it is a trace-time constant."""
    shape: tuple = ()
    dtype: str = "float32"
    gen: Callable = normal()
    const: bool = False
    value: Any = None
    traced: tuple | None = None

    @property
    def trace_shape(self):
        return tuple(self.shape if self.traced is None else self.traced)

    def make(self, rng):
        if self.value is not None:
            return np.asarray(self.value, dtype=self.dtype)
        return np.asarray(self.gen(rng, self.shape, self.dtype), dtype=self.dtype)


def x(*shape, traced=None, gen=None, dtype="float32"):
    """A run-time input."""
    return In(tuple(shape), dtype, gen or normal(), traced=traced)


def i32(*shape, traced=None, gen=None):
    return x(*shape, traced=traced, gen=gen or ints(), dtype="int32")


def b(*shape, traced=None):
    return x(*shape, traced=traced, gen=bools, dtype="bool")


def const(value, dtype="int32"):
    """A trace-time constant (axis, perm, shape, begin/size, paddings, ...)."""
    shape = np.shape(value)
    return In(shape, dtype, const=True, value=value)


def value(v, dtype="int32"):
    """A run-time input with fixed data."""
    return In(np.shape(v), dtype, value=v)


@dataclass(frozen=True)
class Torch:
    """Reference written with PyTorch: fn(*torch tensors, **attrs) -> torch tensor."""
    fn: Callable


@dataclass(frozen=True)
class NumPy:
    """Reference written with NumPy, differently from the kernel: fn(*arrays, **attrs) -> array."""
    fn: Callable


@dataclass(frozen=True)
class Raises:
    """The gradient rule must refuse this case with a TraceError matching `match`."""
    match: str


@dataclass(frozen=True)
class Case:
    op: str
    name: str
    inputs: tuple
    ref: Torch | NumPy
    attrs: dict = field(default_factory=dict)
    grad: bool | str | Raises = True  # True: check; a string: why not; Raises: the rule refuses
    litert: str | None = None  # why LiteRT is expected to disagree (an xfail), if it is
    rtol: float = 1e-5
    atol: float = 1e-6
    output: int = 0  # an op with several outputs: the one this case checks (the reference gives it)

    @property
    def id(self):
        return f"{self.op}-{self.name}"


@dataclass(frozen=True)
class Bad:
    """Inputs the op must refuse at trace time with a TraceError naming it and matching `match`."""
    op: str
    name: str
    inputs: tuple
    match: str
    attrs: dict = field(default_factory=dict)

    @property
    def id(self):
        return f"{self.op}-{self.name}"


# -- references -----------------------------------------------------------------------------------------
ACT = {"NONE": lambda t: t, "RELU": torch.relu, "RELU6": lambda t: torch.clamp(t, 0, 6),
       "RELU_N1_TO_1": lambda t: torch.clamp(t, -1, 1), "TANH": torch.tanh}


def _binary(fn):
    return Torch(lambda a, b, fused_activation_function="NONE": ACT[fused_activation_function](fn(a, b)))


def _div(a, b):
    if a.dtype.is_floating_point:
        return a / b
    return torch.div(a, b, rounding_mode="trunc")  # TFLite DIV on int32: C++ '/', toward zero


def _dims(axis):
    return tuple(int(a) for a in axis.reshape(-1).tolist())


def _torch_prod(t, axis, keep_dims=False):
    dims = sorted({d % t.ndim for d in _dims(axis)}, reverse=True)
    for d in dims:
        t = torch.prod(t, dim=d, keepdim=True)
    return t if keep_dims else t.reshape([s for i, s in enumerate(t.shape) if i not in dims])


def _reducer(fn):
    return Torch(lambda t, axis, keep_dims=False: fn(t, dim=_dims(axis), keepdim=keep_dims))


def _linear(x, w, b=None, keep_num_dims=False, fused_activation_function="NONE"):
    flat = x if keep_num_dims else x.reshape(-1, w.shape[1])
    return ACT[fused_activation_function](F.linear(flat, w, b))


def _bmm(a, b, adj_x=False, adj_y=False):
    return torch.matmul(a.mT if adj_x else a, b.mT if adj_y else b)


def _gather(t, idx, axis=0):
    a = axis % t.ndim
    return t[(slice(None),) * a + (idx.long(),)]


def _slice(t, begin, size):
    for d, (b0, s) in enumerate(zip(begin.tolist(), size.tolist())):
        t = t.narrow(d, b0, t.shape[d] - b0 if s == -1 else s)
    return t


def _pad(t, paddings):
    flat = [int(v) for pair in reversed(paddings.tolist()) for v in pair]  # last dim first
    return F.pad(t, flat)


def _fill(dims, v):
    return v.reshape(()).expand(dims.tolist()).clone()


def _one_hot(idx, depth, on, off, axis=-1):
    """Row `depth` of an extended identity is all off: the out-of-range indices' row."""
    d = int(depth)
    eye = np.eye(d + 1, d, dtype=bool)
    hot = eye[np.where((idx >= 0) & (idx < d), idx, d)]
    out = np.where(hot, on, off).astype(np.asarray(on).dtype)
    return np.moveaxis(out, -1, axis % out.ndim)


TORCH_DTYPE = {"float32": torch.float32, "float64": torch.float64, "int32": torch.int32,
               "int64": torch.int64, "bool": torch.bool, "float16": torch.float16}


def _cast(t, in_data_type=None, out_data_type=None):
    return t.to(TORCH_DTYPE[out_data_type])


# -- the cases --------------------------------------------------------------------------------------------
def _binary_cases(op, fn, *, b_gen=None, ints_ok=True, fused="RELU6"):
    ref = _binary(fn)
    rows = [
        Case(op, "bcast-batch", (x(2, 3, 4, traced=(None, 3, 4)), x(4, gen=b_gen)), ref),
        Case(op, "bcast-both", (x(3, 1), x(1, 5, gen=b_gen)), ref),
        Case(op, "scalar", (x(2, 3), x(gen=b_gen)), ref),
        Case(op, f"fused-{fused.lower()}", (x(2, 3, gen=normal(4.0)), x(3, gen=b_gen)), ref,
             {"fused_activation_function": fused}, grad=Raises("fused activation")),
    ]
    if ints_ok:
        rows.append(Case(op, "int32", (i32(2, 3), i32(3, gen=ints(nonzero=True))), ref))
    return rows


def _unary(op, fn, gen=None, *, int_ok=False, grad=True, **kw):
    rows = [Case(op, "float", (x(2, 3, 4, traced=(None, 3, 4), gen=gen),), Torch(fn), grad=grad, **kw)]
    if int_ok:
        rows.append(Case(op, "int32", (i32(2, 5),), Torch(fn)))
    return rows


def _compare_cases(op, fn):
    ref = Torch(fn)
    rows = [Case(op, "bcast", (x(2, 3, traced=(None, 3), gen=coarse), x(3, gen=coarse)), ref),
            Case(op, "int32", (i32(2, 3, gen=ints(-2, 3)), i32(1, 3, gen=ints(-2, 3))), ref)]
    if op in ("equal", "not_equal"):
        rows.append(Case(op, "bool", (b(2, 3), b(3)), ref))
    return rows


def _reduce_cases(op, fn, gen=None):
    ref = fn if isinstance(fn, (Torch, NumPy)) else _reducer(fn)
    return [
        Case(op, "axis1-keep", (x(2, 3, 4, traced=(None, 3, 4), gen=gen), const([1])), ref, {"keep_dims": True}),
        Case(op, "neg-axes", (x(2, 3, 4, gen=gen), const([-1, 0])), ref, {"keep_dims": False}),
        Case(op, "batch-axis", (x(3, 2, traced=(None, 2), gen=gen), const([0])), ref),
        Case(op, "all-keep", (x(3, 4, traced=(None, 4), gen=gen), const([0, 1])), ref, {"keep_dims": True}),
    ]


CASES: list[Case] = [
    # -- elementwise arithmetic
    *_binary_cases("add", torch.add),
    *_binary_cases("sub", torch.sub, fused="RELU"),
    *_binary_cases("mul", torch.mul, fused="RELU_N1_TO_1"),
    *_binary_cases("div", _div, b_gen=away_from(0, lo=-2, hi=2, gap=0.3), fused="RELU"),
    Case("add", "int64", (x(2, 3, dtype="int64", gen=ints()), x(3, dtype="int64", gen=ints())), _binary(torch.add)),
    Case("div", "int32-mixed-signs", (value([[-7, 7, -7, 7, 0], [-1, 1, 9, -9, -6]]), value([2, -2, 3, 4, -4])),
         _binary(_div)),
    Case("maximum", "bcast", (x(2, 3, traced=(None, 3), gen=distinct()), x(3, gen=distinct(0.1))),
         Torch(torch.maximum)),
    Case("maximum", "int32", (i32(2, 3), i32(2, 1)), Torch(torch.maximum)),
    Case("minimum", "bcast", (x(2, 3, traced=(None, 3), gen=distinct()), x(3, gen=distinct(0.1))),
         Torch(torch.minimum)),
    Case("minimum", "int32", (i32(2, 3), i32(2, 1)), Torch(torch.minimum)),
    Case("pow", "both-inputs", (x(2, 3, traced=(None, 3), gen=uniform(0.5, 2.0)), x(3)), Torch(torch.pow)),
    Case("pow", "const-exponent", (x(2, 4, gen=uniform(0.5, 2.0)), const(3.0, "float32")), Torch(torch.pow)),
    Case("pow", "negative-base-int-exponent", (x(2, 4, gen=normal(2.0)), const(2.0, "float32")), Torch(torch.pow)),
    Case("pow", "int32", (i32(2, 3, gen=ints(-3, 4)), i32(3, gen=ints(0, 4))), Torch(torch.pow)),
    Case("squared_difference", "bcast", (x(2, 3, traced=(None, 3)), x(1, 3)), Torch(lambda a, b: (a - b) ** 2)),
    Case("squared_difference", "int32", (i32(2, 3), i32(3)), Torch(lambda a, b: (a - b) ** 2)),
    # -- unary
    *_unary("neg", torch.neg, int_ok=True),
    *_unary("exp", torch.exp),
    *_unary("log", torch.log, uniform(0.2, 3.0)),
    *_unary("sqrt", torch.sqrt, uniform(0.2, 3.0)),
    *_unary("rsqrt", torch.rsqrt, uniform(0.2, 3.0)),
    *_unary("square", torch.square),
    *_unary("abs", torch.abs, away_from(0), int_ok=True),
    *_unary("sign", torch.sign, coarse, int_ok=True),
    *_unary("floor", torch.floor, normal(3.0)),
    *_unary("sin", torch.sin, normal(2.0)),
    *_unary("cos", torch.cos, normal(2.0)),
    *_unary("tanh", torch.tanh, normal(2.0)),
    *_unary("logistic", torch.sigmoid, normal(3.0)),
    *_unary("relu", torch.relu, away_from(0)),
    *_unary("relu6", lambda t: torch.clamp(t, 0, 6), away_from(0, 6, lo=-2, hi=8)),
    Case("gelu", "exact", (x(2, 3, 4, traced=(None, 3, 4), gen=normal(2.0)),), Torch(lambda t: F.gelu(t))),
    Case("gelu", "tanh-approximation", (x(2, 3, 4, traced=(None, 3, 4), gen=normal(2.0)),),
         Torch(lambda t, approximate: F.gelu(t, approximate="tanh" if approximate else "none")),
         {"approximate": True}),
    # -- comparisons, logic, selection
    *_compare_cases("less", torch.lt),
    *_compare_cases("less_equal", torch.le),
    *_compare_cases("greater", torch.gt),
    *_compare_cases("greater_equal", torch.ge),
    *_compare_cases("equal", torch.eq),
    *_compare_cases("not_equal", torch.ne),
    Case("logical_and", "bcast", (b(2, 3, traced=(None, 3)), b(3)), Torch(torch.logical_and)),
    Case("logical_not", "bool", (b(2, 3, traced=(None, 3)),), Torch(torch.logical_not)),
    Case("select_v2", "bcast", (b(2, 1, 4), x(3, 4, traced=(None, 4)), x()), Torch(torch.where)),
    Case("select_v2", "same-shape", (b(2, 3, traced=(None, 3)), x(2, 3, traced=(None, 3)), x(2, 3)),
         Torch(torch.where)),
    Case("select_v2", "int32", (b(2, 3), i32(2, 3), i32(3)), Torch(torch.where)),
    # -- casts and fills
    Case("cast", "f32-to-i32", (x(2, 5, gen=normal(4.0)),), Torch(_cast),
         {"in_data_type": "float32", "out_data_type": "int32"}),
    Case("cast", "i32-to-f32", (i32(2, 5, traced=(None, 5)),), Torch(_cast),
         {"in_data_type": "int32", "out_data_type": "float32"}),
    Case("cast", "bool-to-f32", (b(2, 3),), Torch(_cast), {"in_data_type": "bool", "out_data_type": "float32"}),
    Case("cast", "f32-to-bool", (x(2, 3, gen=coarse),), Torch(_cast),
         {"in_data_type": "float32", "out_data_type": "bool"}),
    Case("cast", "f32-to-f64", (x(2, 3, traced=(None, 3)),), Torch(_cast),
         {"in_data_type": "float32", "out_data_type": "float64"}),
    Case("zeros_like", "float", (x(2, 3, traced=(None, 3)),), Torch(torch.zeros_like)),
    Case("zeros_like", "int32", (i32(4),), Torch(torch.zeros_like)),
    # -- matrix products
    Case("fully_connected", "bias", (x(3, 5, traced=(None, 5)), x(4, 5), x(4)), Torch(_linear)),
    Case("fully_connected", "no-bias", (x(2, 5), x(3, 5)), Torch(_linear)),
    Case("fully_connected", "keep-num-dims", (x(2, 3, 5, traced=(None, 3, 5)), x(4, 5), x(4)), Torch(_linear),
         {"keep_num_dims": True}),
    Case("fully_connected", "flatten-3d", (x(2, 3, 5), x(4, 5), x(4)), Torch(_linear)),
    Case("fully_connected", "const-weights", (x(3, 5, traced=(None, 5)), In((4, 5), const=True),
                                              In((4,), const=True)), Torch(_linear)),
    Case("fully_connected", "fused-relu", (x(3, 5), x(4, 5), x(4)), Torch(_linear),
         {"fused_activation_function": "RELU"}, grad=Raises("fused activation")),
    Case("batch_matmul", "plain", (x(2, 3, 4, traced=(None, 3, 4)), x(2, 4, 5)), Torch(_bmm)),
    Case("batch_matmul", "adj_x", (x(2, 4, 3), x(2, 4, 5)), Torch(_bmm), {"adj_x": True}),
    Case("batch_matmul", "adj_y", (x(2, 3, 4), x(2, 5, 4)), Torch(_bmm), {"adj_y": True}),
    Case("batch_matmul", "adj_xy", (x(2, 4, 3, traced=(None, 4, 3)), x(2, 5, 4)), Torch(_bmm),
         {"adj_x": True, "adj_y": True}),
    Case("batch_matmul", "bcast-batch", (x(2, 1, 3, 4), x(3, 4, 5)), Torch(_bmm)),
    Case("batch_matmul", "rank2", (x(3, 4), x(4, 5)), Torch(_bmm)),
    # -- reductions
    *_reduce_cases("sum", torch.sum),
    Case("sum", "int32", (i32(2, 3), const([1])), _reducer(torch.sum)),
    *_reduce_cases("mean", torch.mean),
    *_reduce_cases("reduce_max", torch.amax, distinct()),
    Case("reduce_max", "int32", (i32(2, 3), const([1])), _reducer(torch.amax)),
    *_reduce_cases("reduce_min", torch.amin, distinct()),
    *_reduce_cases("reduce_prod", Torch(_torch_prod), away_from(0, lo=-2, hi=2, gap=0.3)),
    Case("arg_max", "axis1-int32", (x(3, 5, traced=(None, 5), gen=distinct()), const([1])),
         Torch(lambda t, axis, output_type: torch.argmax(t, dim=_dims(axis)[0])), {"output_type": "int32"}),
    Case("arg_max", "neg-axis-int64", (x(2, 3, 4, gen=distinct()), const([-2])),
         Torch(lambda t, axis, output_type: torch.argmax(t, dim=_dims(axis)[0])), {"output_type": "int64"}),
    Case("softmax", "beta1", (x(3, 5, traced=(None, 5), gen=normal(3.0)),), Torch(lambda t: torch.softmax(t, -1))),
    Case("softmax", "beta-half-3d", (x(2, 3, 4, gen=normal(3.0)),),
         Torch(lambda t, beta: torch.softmax(t * beta, -1)), {"beta": 0.5}),
    Case("log_softmax", "2d", (x(3, 5, traced=(None, 5), gen=normal(3.0)),), Torch(lambda t: torch.log_softmax(t, -1))),
    Case("log_softmax", "3d", (x(2, 3, 4, gen=normal(3.0)),), Torch(lambda t: torch.log_softmax(t, -1))),
    # -- shapes
    Case("reshape", "shape-input", (x(2, 2, 3, traced=(None, 2, 3)), const([-1, 6])),
         Torch(lambda t, s: t.reshape(s.tolist()))),
    Case("reshape", "new-shape-attr", (x(2, 3, 4),), Torch(lambda t, new_shape: t.reshape(new_shape)),
         {"new_shape": (4, 6)}),
    Case("reshape", "runtime-shape", (x(2, 6), value([3, 4])), Torch(lambda t, s: t.reshape(s.tolist()))),
    Case("reshape", "int32", (i32(2, 3), const([3, 1, 2])), Torch(lambda t, s: t.reshape(s.tolist()))),
    Case("transpose", "3d", (x(2, 3, 4, traced=(None, 3, 4)), const([2, 0, 1])),
         Torch(lambda t, p: t.permute(p.tolist()))),
    Case("transpose", "4d", (x(2, 3, 1, 4), const([0, 3, 1, 2])), Torch(lambda t, p: t.permute(p.tolist()))),
    Case("transpose", "int32", (i32(2, 3), const([1, 0])), Torch(lambda t, p: t.permute(p.tolist()))),
    Case("expand_dims", "axis0", (x(2, 3, traced=(None, 3)), const([0])), Torch(lambda t, a: t.unsqueeze(int(a)))),
    Case("expand_dims", "neg-axis", (x(2, 3), const([-1])), Torch(lambda t, a: t.unsqueeze(int(a)))),
    Case("expand_dims", "scalar-axis-batch", (x(2, 3, traced=(None, 3)), const(1)),
         Torch(lambda t, a: t.unsqueeze(int(a)))),
    Case("squeeze", "all-ones", (x(1, 3, 1, 4),), Torch(lambda t: t.squeeze())),
    Case("squeeze", "neg-axis-batch", (x(2, 1, 3, traced=(None, 1, 3)),),
         Torch(lambda t, squeeze_dims: t.squeeze(squeeze_dims[0])), {"squeeze_dims": (-2,)}),
    Case("broadcast_to", "rank-up", (x(3, 1), const([2, 3, 4])), Torch(lambda t, s: t.broadcast_to(s.tolist()))),
    Case("broadcast_to", "same-rank", (x(1, 4), const([3, 4])), Torch(lambda t, s: t.broadcast_to(s.tolist()))),
    Case("broadcast_to", "int32", (i32(3,), const([2, 3])), Torch(lambda t, s: t.broadcast_to(s.tolist()))),
    Case("shape", "int32", (x(2, 3, traced=(None, 3)),), NumPy(lambda a: np.array(list(a.shape), np.int32))),
    Case("shape", "int64", (x(2, 3, 4),), NumPy(lambda a, out_type: np.array(list(a.shape), out_type)),
         {"out_type": "int64"}),
    Case("gather", "1d-repeated", (x(5), value([4, 0, 4])), Torch(_gather)),
    Case("gather", "2d-indices", (x(4, 3), i32(2, 2, gen=indices(4))), Torch(_gather)),
    Case("gather", "axis1", (x(2, 5, 3, traced=(None, 5, 3)), i32(4, gen=indices(5))), Torch(_gather), {"axis": 1}),
    Case("gather", "neg-axis-int64", (x(3, 4), x(2, dtype="int64", gen=indices(4))), Torch(_gather), {"axis": -1}),
    Case("gather", "scalar-index", (x(4, 3, traced=(4, None)), value(2)), Torch(_gather)),
    Case("gather", "unknown-gathered-dim", (x(4, 3, traced=(None, 3)), i32(2, gen=indices(4))), Torch(_gather),
         grad=Raises("size of the gathered axis")),
    Case("gather", "int32-params", (i32(4, 3), i32(2, gen=indices(4))), Torch(_gather)),
    Case("concatenation", "axis0", (x(2, 3), x(1, 3)), Torch(lambda *ts, axis: torch.cat(ts, axis)), {"axis": 0}),
    Case("concatenation", "three-neg-axis", (x(2, 2, traced=(None, 2)), x(2, 3, traced=(None, 3)),
                                             x(2, 1, traced=(None, 1))),
         Torch(lambda *ts, axis: torch.cat(ts, axis)), {"axis": -1}),
    Case("concatenation", "int32", (i32(2, 3), i32(2, 2)), Torch(lambda *ts, axis: torch.cat(ts, axis)), {"axis": 1}),
    Case("slice", "basic", (x(4, 5), const([1, 2]), const([2, -1])), Torch(_slice)),
    Case("slice", "batch", (x(2, 5, 3, traced=(None, 5, 3)), const([0, 1, 0]), const([-1, 3, 2])), Torch(_slice)),
    Case("slice", "int32", (i32(3, 4), const([1, 0]), const([2, 3])), Torch(_slice)),
    Case("pad", "2d", (x(2, 3), const([[1, 0], [0, 2]])), Torch(_pad)),
    Case("pad", "batch", (x(2, 3, 4, traced=(None, 3, 4)), const([[0, 0], [1, 1], [2, 0]])), Torch(_pad)),
    Case("pad", "batch-padded-after", (x(2, 3, traced=(None, 3)), const([[0, 1], [1, 0]])), Torch(_pad),
         grad=Raises("unknown dim")),
    Case("pad", "int32", (i32(2, 2), const([[1, 1], [0, 1]])), Torch(_pad)),
    Case("fill", "float-value", (const([2, 3]), x()), Torch(_fill)),
    Case("fill", "runtime-dims", (value([2, 2]), x()), Torch(_fill)),
    Case("fill", "int32-value", (const([3]), i32()), Torch(_fill)),
    Case("one_hot", "out-of-range", (value([3, 0, -1, 5, 4]), const(5), const(1.0, "float32"),
                                     const(0.0, "float32")), NumPy(_one_hot)),
    Case("one_hot", "axis0-2d", (i32(2, 3, gen=indices(4)), const(4), const(2.0, "float32"),
                                 const(-1.0, "float32")), NumPy(_one_hot), {"axis": 0}),
    Case("one_hot", "int32-values", (i32(3, traced=(None,), gen=indices(3)), const(3), const(5),
                                     const(0)), NumPy(_one_hot)),
]

BAD: list[Bad] = [
    *[Bad(op, "no-broadcast", (x(2, 3), x(4)), "broadcast")
      for op in ("add", "sub", "mul", "div", "maximum", "minimum", "pow", "squared_difference",
                 "less", "less_equal", "greater", "greater_equal", "equal", "not_equal")],
    *[Bad(op, "mixed-dtypes", (x(2, 3), i32(2, 3)), "one dtype")
      for op in ("add", "sub", "mul", "div", "maximum", "minimum", "pow", "squared_difference",
                 "less", "less_equal", "greater", "greater_equal", "equal", "not_equal")],
    *[Bad(op, "int32", (i32(2, 3),), "int32")
      for op in ("exp", "log", "sqrt", "rsqrt", "square", "floor", "sin", "cos", "tanh", "logistic",
                 "relu", "relu6", "gelu", "softmax", "log_softmax")],
    *[Bad(op, "bool", (b(2, 3),), "bool") for op in ("neg", "abs", "sign", "zeros_like")],
    Bad("logical_and", "float", (x(2, 3), b(2, 3)), "bool"),
    Bad("logical_not", "float", (x(2, 3),), "bool"),
    Bad("select_v2", "float-condition", (x(2, 3), x(2, 3), x(2, 3)), "condition must be bool"),
    Bad("select_v2", "branch-dtypes", (b(2, 3), x(2, 3), i32(2, 3)), "one dtype"),
    Bad("cast", "no-out-type", (x(2, 3),), "out_data_type"),
    Bad("cast", "unknown-out-type", (x(2, 3),), "complex64", {"out_data_type": "complex64"}),
    Bad("fully_connected", "depth-mismatch", (x(3, 5), x(4, 6)), "does not match"),
    Bad("fully_connected", "bias-shape", (x(3, 5), x(4, 5), x(3)), "bias"),
    Bad("batch_matmul", "contraction", (x(2, 3, 4), x(2, 5, 6)), "contraction"),
    Bad("batch_matmul", "rank1", (x(4), x(4, 5)), "rank"),
    *[Bad(op, "axis-out-of-range", (x(2, 3), const([2])), "out of range")
      for op in ("sum", "mean", "reduce_max", "reduce_min", "reduce_prod", "arg_max")],
    *[Bad(op, "runtime-axis", (x(2, 3), value([1])), "constant")
      for op in ("sum", "mean", "reduce_max", "reduce_min", "reduce_prod", "arg_max")],
    Bad("arg_max", "float-output-type", (x(2, 3), const([1])), "output_type", {"output_type": "float32"}),
    Bad("reshape", "element-count", (x(2, 3), const([4, 2])), "cannot reshape"),
    Bad("reshape", "two-unknowns", (x(2, 3), const([-1, -1])), "at most one -1"),
    Bad("transpose", "not-a-permutation", (x(2, 3), const([0, 0])), "not a permutation"),
    Bad("transpose", "runtime-perm", (x(2, 3), value([1, 0])), "constant"),
    Bad("expand_dims", "axis-out-of-range", (x(2, 3), const([3])), "out of range"),
    Bad("squeeze", "not-size-1", (x(2, 3),), "cannot squeeze", {"squeeze_dims": (0,)}),
    Bad("squeeze", "unknown-dims-unnamed", (x(2, 1, traced=(None, 1)),), "squeeze_dims"),
    Bad("broadcast_to", "incompatible", (x(1, 4), const([3, 1])), "broadcast"),
    Bad("broadcast_to", "rank-down", (x(3, 4), const([4])), "broadcast"),
    Bad("shape", "float-out-type", (x(2, 3),), "out_type", {"out_type": "float32"}),
    Bad("gather", "float-indices", (x(4, 3), x(2)), "indices"),
    Bad("gather", "axis-out-of-range", (x(4, 3), i32(2)), "out of range", {"axis": 2}),
    Bad("concatenation", "ranks", (x(2, 3), x(3)), "rank"),
    Bad("concatenation", "other-dims", (x(2, 1), x(2, 3)), "dim", {"axis": 0}),
    Bad("slice", "past-the-end", (x(4, 5), const([1, 2]), const([4, 1])), "exceeds"),
    Bad("slice", "negative-begin", (x(4, 5), const([-1, 0]), const([1, 1])), "begin"),
    Bad("slice", "runtime-begin", (x(4, 5), value([1, 2]), const([1, 1])), "constant"),
    Bad("pad", "paddings-shape", (x(2, 3), const([[1, 1]])), "paddings"),
    Bad("pad", "negative", (x(2, 3), const([[1, -1], [0, 0]])), "negative"),
    Bad("fill", "non-scalar-value", (const([2, 3]), x(2)), "scalar"),
    Bad("one_hot", "float-indices", (x(3), const(4), const(1.0, "float32"), const(0.0, "float32")), "indices"),
    Bad("one_hot", "on-off-dtypes", (i32(3), const(4), const(1.0, "float32"), const(0)), "dtype"),
]


# -- op families add their rows in tests/op_cases_<family>.py (CASES, BAD, STATEFUL_EXEMPT, VALUE_EXEMPT) ---
def _load_family_tables():
    import importlib
    import pathlib
    for path in sorted(pathlib.Path(__file__).parent.glob("op_cases_*.py")):
        module = importlib.import_module(path.stem)
        CASES.extend(module.CASES)
        BAD.extend(getattr(module, "BAD", []))
        STATEFUL_EXEMPT.update(getattr(module, "STATEFUL_EXEMPT", {}))
        VALUE_EXEMPT.update(getattr(module, "VALUE_EXEMPT", {}))


_load_family_tables()
