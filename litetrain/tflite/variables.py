"""Deriving a .tflite file's resource variables from its VAR_HANDLE, ASSIGN_VARIABLE and READ_VARIABLE operators.

The reader takes the variables' initial values from the constants the init subgraph assigns; for a file
without litetrain's metadata (one made by TensorFlow) it also takes their names, dtypes and shapes from
these operators.
"""
from __future__ import annotations

import numpy as np

from ..core.ir import DTYPES, Function, TensorInfo, Variable


def _handles(fn: Function) -> dict[int, str]:
    """The output tensor of each VAR_HANDLE in `fn` -> the variable's shared name."""
    return {node.outputs[0]: node.attrs.get("shared_name", "") for node in fn.nodes
            if node.op == "var_handle" and node.outputs}


def assigned_constants(fn: Function) -> dict[str, TensorInfo]:
    """Variable name -> the constant tensor that `fn` assigns to it (what an init function does)."""
    handles, found = _handles(fn), {}
    for node in fn.nodes:
        if node.op == "assign_variable" and len(node.inputs) == 2:
            name, value = handles.get(node.inputs[0]), node.inputs[1]
            if name and value >= 0 and fn.tensors[value].data is not None:
                found.setdefault(name, fn.tensors[value])
    return found


def init_from_call_once(functions) -> int | None:
    """The subgraph the first CALL_ONCE runs (TensorFlow's init function), or None."""
    for fn in functions:
        for node in fn.nodes:
            if node.op == "call_once":
                return node.attrs["init_subgraph_index"]
    return None


def derive_variables(functions, init_function) -> dict[str, Variable]:
    """Variables of a file without litetrain's metadata (one made by TensorFlow): names from
    VAR_HANDLE, dtype and shape from the init constants, then ASSIGN_VARIABLE values, then reads."""
    assigned = assigned_constants(functions[init_function]) if init_function is not None else {}
    order, seen = [], {}
    for fn in functions:
        handles = _handles(fn)
        for name in handles.values():
            if name and name not in order:
                order.append(name)
        for node in fn.nodes:
            if node.op == "assign_variable" and len(node.inputs) == 2 and node.inputs[1] >= 0:
                info = fn.tensors[node.inputs[1]]
                seen.setdefault((0, handles.get(node.inputs[0])), info)
            elif node.op == "read_variable" and node.inputs and node.outputs:
                info = fn.tensors[node.outputs[0]]
                seen.setdefault((1, handles.get(node.inputs[0])), info)
    variables = {}
    for name in order:
        spec = assigned.get(name) or seen.get((0, name)) or seen.get((1, name))
        if spec is None:
            continue  # a handle never read or written: nothing says what it holds
        initial = assigned[name].data if name in assigned else empty_initial(spec.dtype)
        variables[name] = Variable(name, spec.dtype, tuple(spec.shape), initial, trainable=False)
    return variables


def empty_initial(dtype: str) -> np.ndarray:
    """The initial value of a variable the file gives none: an empty array of its dtype."""
    return np.empty((0,), dtype=DTYPES[dtype][0] or object)
