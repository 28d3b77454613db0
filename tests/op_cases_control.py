"""Op table rows for the control and sequence families (litetrain/ops/control.py, gather_scatter.py, shape.py):
dynamic_update_slice (tensor-list writes), range, gather_nd / scatter_nd (embedding lookups and
their scatter-add gradient). WHILE and IF run other functions, so they cannot be one-op
functions: tests/test_loops.py tests them, against PyTorch and LiteRT."""
from __future__ import annotations

import numpy as np
import torch

from op_cases import Bad, Case, NumPy, Torch, const, i32, indices, value, x

STATEFUL_EXEMPT = {
    "while": "runs its condition and body functions; tests/test_loops.py builds loops around it",
    "if": "runs one of its branch functions; tests/test_loops.py builds conds around it",
}


def _dus(operand, update, start):
    """A copy of operand with update written at start, clamped as TensorFlow Lite does."""
    begin = [min(max(int(s), 0), o - u) for s, o, u in zip(start.tolist(), operand.shape, update.shape)]
    out = operand.clone()
    out[tuple(slice(b, b + u) for b, u in zip(begin, update.shape))] = update
    return out


def _range(start, limit, delta):
    return torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype)


def _gather_nd(params, idx):
    return params[tuple(idx.long().unbind(-1))]


def _scatter_nd(idx, updates, shape):
    out = torch.zeros(shape.tolist(), dtype=updates.dtype)
    return out.index_put(tuple(idx.long().unbind(-1)), updates, accumulate=True)


CASES = [
    Case("dynamic_update_slice", "row", (x(6, 3), x(1, 3), value([3, 0])), Torch(_dus)),
    Case("dynamic_update_slice", "block", (x(4, 5), x(2, 3), value([1, 2])), Torch(_dus)),
    Case("dynamic_update_slice", "clamped-start", (x(4, 3), x(2, 2), value([5, -1])), Torch(_dus)),
    Case("dynamic_update_slice", "list-unknown-batch", (x(5, 2, 3, traced=(5, None, 3)),
                                                        x(1, 2, 3, traced=(1, None, 3)), value([2, 0, 0])),
         Torch(_dus)),
    Case("dynamic_update_slice", "whole-sequence", (x(6, 2, 3), x(4, 2, 3, traced=(None, 2, 3)), value([0, 0, 0])),
         Torch(_dus)),
    Case("dynamic_update_slice", "int32", (i32(4, 3), i32(1, 3), value([2, 0])), Torch(_dus)),
    Case("range", "int32", (value(2), value(11), value(3)), Torch(_range)),
    Case("range", "negative-delta", (value(5), value(-3), value(-2)), Torch(_range)),
    Case("range", "float32", (value(0.5, "float32"), value(3.0, "float32"), value(0.75, "float32")), Torch(_range)),
    Case("range", "empty", (value(4), value(4), value(1)), Torch(_range),
         litert="LiteRT's Python API cannot hand back an empty output (GetTensor: Invalid tensor size)"),
    Case("gather_nd", "embedding-lookup", (x(6, 4), i32(2, 3, 1, gen=indices(6))), Torch(_gather_nd)),
    Case("gather_nd", "repeated-rows", (x(5, 3, traced=(5, None)), value([[1], [1], [4], [1]])), Torch(_gather_nd)),
    Case("gather_nd", "depth2", (x(3, 4, 2), value([[0, 1], [2, 3], [2, 0]])), Torch(_gather_nd)),
    Case("gather_nd", "full-depth", (x(3, 4), value([[1, 2], [0, 3]])), Torch(_gather_nd)),
    Case("gather_nd", "int32-params", (i32(4, 2), value([[3], [0]])), Torch(_gather_nd)),
    Case("scatter_nd", "repeated-add", (value([[1], [3], [1]]), x(3, 4), const([5, 4])), Torch(_scatter_nd)),
    Case("scatter_nd", "depth2", (value([[0, 1], [2, 0], [0, 1]]), x(3, 3), const([3, 2, 3])), Torch(_scatter_nd)),
    Case("scatter_nd", "embedding-gradient", (i32(2, 3, 1, gen=indices(5)), x(2, 3, 4, traced=(None, 3, 4)),
                                              const([5, 4])), Torch(_scatter_nd)),
    Case("scatter_nd", "int32", (value([[0], [2]]), i32(2, 3), const([3, 3])),
         NumPy(lambda idx, upd, shape: np.stack([upd[0], np.zeros(3, np.int32), upd[1]]))),
]

BAD = [
    Bad("dynamic_update_slice", "dtypes", (x(4, 3), i32(1, 3), value([0, 0])), "one dtype"),
    Bad("dynamic_update_slice", "rank", (x(4, 3), x(3), value([0, 0])), "rank"),
    Bad("dynamic_update_slice", "update-larger", (x(4, 3), x(5, 3), value([0, 0])), "larger"),
    Bad("dynamic_update_slice", "start-length", (x(4, 3), x(1, 3), value([0])), "one per operand dim"),
    Bad("dynamic_update_slice", "float-start", (x(4, 3), x(1, 3), value([0.0, 0.0], "float32")), "int32"),
    Bad("range", "mixed-dtypes", (value(0), value(3.0, "float32"), value(1)), "one dtype"),
    Bad("range", "not-scalar", (value([0, 1]), value(3), value(1)), "scalars"),
    Bad("range", "bool", (value(True, "bool"), value(True, "bool"), value(True, "bool")), "int32"),
    Bad("gather_nd", "float-indices", (x(4, 3), value([[0.0]], "float32")), "indices"),
    Bad("gather_nd", "too-deep", (x(4, 3), value([[0, 0, 0]])), "exceeds"),
    Bad("gather_nd", "unknown-depth", (x(4, 3), i32(2, 1, traced=(2, None))), "depth"),
    Bad("scatter_nd", "updates-shape", (value([[1], [3]]), x(3, 4), const([5, 4])), "do not fit"),
    Bad("scatter_nd", "shape-dtype", (value([[1]]), x(1, 4), const([5, 4], "int64")), "one dtype"),
]
