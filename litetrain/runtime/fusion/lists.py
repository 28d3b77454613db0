"""Tensor-list plumbing of loop bodies as one step each: a write, an accumulation, the capacity check.

ops/tensor_list.py writes slot t of a list as DYNAMIC_UPDATE_SLICE(list, EXPAND_DIMS(v, 0),
CONCATENATION(RESHAPE(t, [1]), zeros)); the gradient of a read adds into one slot with GATHER_ND,
ADD and such a write; the loop counter's step is ADD(n, 1) checked by a GATHER from a table of
zeros (check_at_most). Four to seven steps each, every iteration. Fused: one step that sets (or
adds into) the slot, in the list's own buffer when nothing else holds it, with the values the
op-by-op path gives (the same copy, the same ADD) and the same index rules (DYNAMIC_UPDATE_SLICE
clamps the start, GATHER_ND and GATHER refuse an index out of range). And ZEROS_LIKE of a value
computed only for its shape (the gradient of a write recomputes the value written) is zeros of the
shape the plan knows, without computing the value.
"""
from __future__ import annotations

import numpy as np

from ...ops.tensor_list import CAPACITY_CHECK
from .graph import Fused

INDEX_DTYPES = ("int32", "int64")


def _const_equals(graph, tensor, values) -> bool:
    """Whether `tensor` is a constant holding `values` (in any shape)."""
    data = graph.constant(tensor)
    return data is not None and np.size(data) == len(values) and np.asarray(data).reshape(-1).tolist() == list(values)


def _single_user(graph, tensor, k) -> bool:
    """Whether node k is the one user of `tensor` (and the function does not give it out)."""
    return tensor not in graph.function_outputs and graph.consumers.get(tensor, []) == [k]


def _one_element(graph, tensor) -> bool:
    """Whether `tensor` is an integer tensor of one element (an index)."""
    shape = graph.shape(tensor)
    return None not in shape and int(np.prod(shape, dtype=np.int64)) == 1 and graph.dtype(tensor) in INDEX_DTYPES


def _index_of(graph, start, rank, k):
    """(a tensor whose first element is the slot index, the nodes that made the start from it) when
    `start`, the start of node k, is [index, 0, ...] built as ops/tensor_list.py builds it: the nodes
    nothing else uses are part of the step."""
    nodes, t, user = [], start, k
    if rank > 1:
        c = graph.made_by(start, "concatenation")
        if c is None or graph.node(c).attrs.get("axis") != 0 or len(graph.node(c).inputs) != 2:
            return None
        t, zeros = graph.node(c).inputs
        if not _const_equals(graph, zeros, [0] * (rank - 1)) or tuple(graph.shape(t)) != (1,):
            return None
        if not _single_user(graph, start, k):  # the start serves other steps too: read it as it is
            return (start, []) if graph.dtype(start) in INDEX_DTYPES else None
        nodes.append(c)
        user = c
    while True:  # reshapes of the index that nothing else uses are part of the step
        r = graph.made_by(t, "reshape")
        if r is None or not _single_user(graph, t, user) or not _one_element(graph, graph.node(r).inputs[0]):
            break
        nodes.append(r)
        t, user = graph.node(r).inputs[0], r
    return (t, nodes) if _one_element(graph, t) else None


def _slot_value(graph, update, lst, k):
    """(the value written, the EXPAND_DIMS node or None) when `update`, node k's, is EXPAND_DIMS(value, 0)
    shaped like one slot of `lst` (the update itself when other steps use it too), else None."""
    shape = graph.shape(lst)
    if None in shape or tuple(graph.shape(update)) != (1,) + tuple(shape[1:]) or graph.dtype(update) != graph.dtype(lst):
        return None
    e = graph.made_by(update, "expand_dims")
    if e is None or not _const_equals(graph, graph.node(e).inputs[1], [0]) or not _single_user(graph, update, k):
        return update, None
    return graph.node(e).inputs[0], e


def match(graph, k):
    """The list step whose last node is node k: a write or an accumulation (DYNAMIC_UPDATE_SLICE), the
    capacity check (ADD) or zeros of a shape (ZEROS_LIKE); None elsewhere."""
    if graph.op(k) == "add":
        return _capacity_check(graph, k)
    if graph.op(k) == "zeros_like":
        return _zeros_of_shape(graph, k)
    if graph.op(k) != "dynamic_update_slice":
        return None
    lst, update, start = graph.node(k).inputs
    if not graph.shape(lst) or graph.shape(lst)[0] in (None, 0):
        return None
    found = _slot_value(graph, update, lst, k)
    located = _index_of(graph, start, len(graph.shape(lst)), k) if found is not None else None
    if located is None:
        return None
    (value, e), (index, made_start) = found, located
    out = graph.node(k).outputs[0]
    made_update = [] if e is None else [e]
    a = graph.made_by(value, "add") if e is not None else None
    if a is not None:
        summed = _accumulation(graph, a, lst, index)
        if summed is not None:
            g, g_node = summed
            nodes = sorted([k, a, g_node] + made_update + made_start)
            if graph.fusable(nodes, [out]):
                return Fused("list accumulate", list_accumulate, nodes, [lst, g, index], [out], inplace=(0,))
    nodes = sorted([k] + made_update + made_start)
    if not graph.fusable(nodes, [out]):
        return None
    return Fused("list write", list_write, nodes, [lst, value, index], [out], inplace=(0,))


def _accumulation(graph, a, lst, index):
    """(g, the GATHER_ND node) when node a is ADD(GATHER_ND(lst, index), g) with g shaped like a slot."""
    read, g = graph.node(a).inputs
    r = graph.made_by(read, "gather_nd")
    if r is None or graph.node(r).inputs != [lst, index] or graph.node(a).attrs.get("fused_activation_function",
                                                                                     "NONE") != "NONE":
        return None
    if tuple(graph.shape(index)) != (1,) or tuple(graph.shape(g)) != tuple(graph.shape(read)) or (
            graph.dtype(g) != graph.dtype(lst)):
        return None
    return g, r


def list_write(lst, value, index, out=None):
    """DYNAMIC_UPDATE_SLICE(lst, EXPAND_DIMS(value, 0), [index, 0, ...]): slot index (clamped into the
    list) set to value (or to value[0], the update itself), in `out` (the list's own buffer) or a copy."""
    if value.shape != lst.shape[1:]:
        if value.shape != (1,) + lst.shape[1:]:
            raise ValueError(f"a value {list(value.shape)} does not fit a slot of the list {list(lst.shape)}")
        value = value[0]
    i = min(max(int(index.reshape(-1)[0]), 0), lst.shape[0] - 1)
    out = lst.copy() if out is None else out
    out[i] = value
    return out


def list_accumulate(lst, g, index, out=None):
    """The list with slot index replaced by GATHER_ND(lst, index) + g (ADD), in `out` or a copy; an
    index out of the list fails as GATHER_ND does."""
    i = int(index.reshape(-1)[0])
    if not 0 <= i < lst.shape[0]:
        raise IndexError(f"gather_nd index [{i}] is out of range for params {list(lst.shape)}")
    if g.shape != lst.shape[1:]:
        raise ValueError(f"a value {list(g.shape)} does not fit a slot of the list {list(lst.shape)}")
    out = lst.copy() if out is None else out
    np.add(lst[i], g, out=out[i])
    return out


# -- the loop counter's step and its capacity check ----------------------------------------------------
def _capacity_check(graph, k):
    """ADD(s, GATHER(zeros, s)) with s = ADD(n, step) and the GATHER named as check_at_most names it."""
    s, zero = graph.node(k).inputs
    g = graph.made_by(zero, "gather")
    a = graph.made_by(s, "add")
    if g is None or a is None or graph.node(g).inputs[1] != s or graph.node(g).attrs.get("axis", 0) != 0:
        return None
    name = graph.fn.tensors[zero].name
    table = graph.constant(graph.node(g).inputs[0])
    n, step = graph.node(a).inputs
    if not name.startswith(CAPACITY_CHECK) or table is None or table.ndim != 1 or np.any(table) or (
            graph.constant(step) is None or graph.shape(n) != () or graph.shape(step) != ()):
        return None
    if any(graph.dtype(t) != "int32" for t in (n, step, s, zero)) or table.dtype != np.int32 or any(
            graph.node(x).attrs.get("fused_activation_function", "NONE") != "NONE" for x in (a, k)):
        return None
    out = graph.node(k).outputs[0]
    nodes = sorted([a, g, k])
    if not graph.fusable(nodes, [out]):
        return None
    return Fused("capacity check", CountedStep(table.size, name), nodes, [n, step], [out])


class CountedStep:
    """n + step, refused (as the GATHER of check_at_most refuses it) when it is not below `size`."""

    def __init__(self, size, name):
        """`size`: the check's table size; `name`: the check's name, which says what it checks."""
        self.size, self.name = size, name

    def __call__(self, n, step):
        """ADD(n, step), checked; plus its GATHER's zero, as ADD adds it."""
        s = np.asarray(np.add(n, step), dtype=n.dtype)
        v = int(s)
        if not 0 <= v < self.size:
            raise IndexError(f"gather index {v} is out of range [0, {self.size}) ({self.name})")
        return np.asarray(np.add(s, np.zeros((), s.dtype)), dtype=s.dtype)


# -- zeros shaped like a value computed only for its shape ------------------------------------------------
SHAPE_SAFE = ("add", "sub", "mul", "neg", "square", "tanh", "logistic", "select_v2", "zeros_like", "expand_dims",
              "reshape")  # ops that cannot fail on inputs whose shapes the plan has checked


def _zeros_of_shape(graph, k):
    """ZEROS_LIKE(x) where x, and what made it, is used by nothing else (the gradient of a list write
    recomputes the value written only for its shape): zeros of the shape the plan knows, without them."""
    out = graph.node(k).outputs[0]
    if None in graph.shape(out) or graph.dtype(out) in ("resource", "variant", "string"):
        return None
    members, grown = {k}, True
    while grown:  # a node joins when every user of its value has joined
        grown = False
        for m in sorted(members):
            for t in graph.node(m).inputs:
                p = graph.made_by(t)
                if p is None or p in members or graph.op(p) not in SHAPE_SAFE or len(graph.node(p).outputs) != 1:
                    continue
                if t in graph.function_outputs or None in graph.shape(t) or not set(graph.consumers.get(t, [])) <= members:
                    continue
                members.add(p)
                grown = True
    nodes = sorted(members)
    if len(nodes) < 2 or not graph.fusable(nodes, [out]):
        return None
    return Fused("zeros of a shape", ZerosOf(tuple(graph.shape(out)), graph.dtype(out)), nodes, [], [out])


class ZerosOf:
    """A new array of zeros of one shape and dtype."""

    def __init__(self, shape, dtype):
        """Zeros of `shape` and `dtype` (a dtype name)."""
        self.shape, self.dtype = shape, np.dtype(dtype)

    def __call__(self):
        """The zeros."""
        return np.zeros(self.shape, self.dtype)
