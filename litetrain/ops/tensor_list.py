"""Tensor lists: stacked tensors [capacity, ...] written and read one slot at a time.

What a differentiated loop keeps of each iteration (the RFC's TensorList support), and what
recurrent layers collect their outputs in. A list is a FILL of zeros, written with
DYNAMIC_UPDATE_SLICE at the iteration counter and read with GATHER_ND; all are builtins.

The capacity is fixed at conversion. A run that needs more fails with an error naming the
capacity before any variable is assigned: TensorFlow Lite has no assert op, so `check_at_most`
is a GATHER from a table of `capacity + 1` entries at the counter, which litetrain's interpreter
and LiteRT both refuse when out of range. Its output's name starts with CAPACITY_CHECK, which the
file keeps, so the check is found again in a body read from a file and names what it checks in
the error.
"""
from __future__ import annotations

import numpy as np

from ..core.subgraphs import unfolded
from ..core.trace import Tensor, TraceError, builder_of
from .api import (add, arange, cast, concat, dynamic_update_slice, expand_dims, gather, gather_nd, mul, reshape,
                  shape_of, slice_)

CAPACITY_CHECK = "capacity check: "


def list_reserve(element: Tensor, capacity: int) -> Tensor:
    """A tensor list: `capacity` slots of zeros shaped like `element` at run time ([capacity, ...])."""
    fb = builder_of(element)
    tail = shape_of(element) if None in element.shape else None
    return _reserve(fb, tail, element.dtype, tuple(element.shape), capacity)


def _reserve(fb, tail, dtype, shape, capacity):
    """FILL of zeros [capacity, *shape]; `tail` is the run-time shape when `shape` has unknown dims."""
    if tail is not None:
        dims = concat([fb.const(np.int32([capacity])), tail], 0)
    else:
        dims = fb.const(np.asarray((capacity,) + shape, np.int32))
    return unfolded(fb, "fill", [dims, fb.const(0, dtype)], {}, dtype, (capacity,) + shape)


def _start(index: Tensor, rank: int) -> Tensor:
    fb = builder_of(index)
    index = reshape(cast(index, "int32"), [1])
    return concat([index, fb.const(np.zeros(rank - 1, np.int32))], 0) if rank > 1 else index


def list_write(lst: Tensor, index, value: Tensor) -> Tensor:
    """The list with slot `index` set to `value` (DYNAMIC_UPDATE_SLICE)."""
    fb = builder_of(lst, index, value)
    index, value = fb.to_tensor(index), fb.to_tensor(value)
    return dynamic_update_slice(lst, expand_dims(value, 0), _start(index, lst.ndim))


def list_read(lst: Tensor, index) -> Tensor:
    """Slot `index` of the list (GATHER_ND: its gradient is a SCATTER_ND into that one slot)."""
    fb = builder_of(lst, index)
    return gather_nd(lst, reshape(cast(fb.to_tensor(index), "int32"), [1]))


def list_from_tensor(x: Tensor, capacity: int, length=None, what="the sequence") -> Tensor:
    """A list of `capacity` slots holding x[0], x[1], ... (x's first dim may be unknown); a call
    with a longer x fails with an error naming the capacity. `length`: x's first dim, already
    checked with check_at_most (otherwise it is taken and checked here)."""
    fb = builder_of(x)
    n = length if length is not None else check_at_most(
        gather(shape_of(x), fb.const(np.int32(0))), capacity,
        f"{what} is longer than the capacity {capacity} set at conversion (max_sequence_length / maximum_iterations)")
    tail = None
    if None in x.shape[1:]:
        tail = slice_(shape_of(x), [1], [x.ndim - 1])
    lst = _reserve(fb, tail, x.dtype, tuple(x.shape[1:]), capacity)
    # the start is n * 0: the write depends on the check, so it cannot run before it
    return dynamic_update_slice(lst, x, _start(mul(n, 0), x.ndim))


def list_stack(lst: Tensor, length) -> Tensor:
    """The first `length` slots of the list as one tensor [length, ...] (GATHER_ND of a RANGE:
    its gradient, a SCATTER_ND, allows unknown dims)."""
    fb = builder_of(lst, length)
    steps = arange(fb.const(np.int32(0)), fb.to_tensor(length), fb.const(np.int32(1)))
    return gather_nd(lst, expand_dims(steps, -1))


def check_at_most(n, limit: int, message: str) -> Tensor:
    """`n` (an int32 scalar), after a run-time check that 0 <= n <= limit; a call where it is not
    fails with `message`. (GATHER from a table of limit + 1 zeros at n: see the module doc.)"""
    fb = builder_of(n)
    n = fb.to_tensor(n)
    if n.constant is not None:
        value = int(np.asarray(n.constant).reshape(()))
        if not 0 <= value <= limit:
            raise TraceError(f"{message} (it is {value})")
        return n
    zero = fb.emit("gather", [fb.const(np.zeros(limit + 1, np.int32)), cast(n, "int32")], {"axis": 0})
    zero.info.name = f"{CAPACITY_CHECK}{message}"  # kept in the file, where `where` is not
    return add(n, zero)
