"""Writing a step's result into the buffer of an input that dies there.

At plan time (`mark`): a step of an op that declares `inplace` inputs becomes an INPLACE step when
one of those inputs has the output's shape and dtype (known for this call), is a float, and is
last used by this step. At run time (`sole_owner`), the buffer is written into only if nothing but
the step holds it: no variable, no constant, no caller's array, no other live value, no view of
it (a view holds its base). Otherwise the kernel allocates, as the op-by-op path does. This is
NumPy's own rule for eliding temporaries, applied across a plan's steps.
"""
from __future__ import annotations

import sys

import numpy as np

from ..core.ir import FLOAT_DTYPES
from ..core.registry import get_op
from .steps import FUSED, INPLACE, PURE


def mark(steps, fn, infos) -> list:
    """`steps` with each in-place-able step made INPLACE: (kernel, INPLACE, inputs, outputs, frees,
    node, donor position)."""
    out = []
    for step in steps:
        call, kind, ins, outs, frees, node = step
        donor = _donor(node, ins, outs, frees, infos) if kind in (PURE, FUSED) else None
        out.append(step if donor is None else (call, INPLACE, ins, outs, frees, node, donor))
    return out


def _donor(node, ins, outs, frees, infos):
    fused = getattr(node, "kernel", None) is not None  # a fusion.Fused stands for several nodes
    positions = node.inplace if fused else get_op(node.op).inplace
    if not positions or len(outs) != 1 or (not fused and node.attrs.get("fused_activation_function", "NONE") != "NONE"):
        return None
    result = infos[outs[0]]
    if result.dtype not in FLOAT_DTYPES or None in result.shape:
        return None
    for pos in positions:
        i = ins[pos] if pos < len(ins) else -1
        if i >= 0 and i in frees and infos[i].dtype == result.dtype and tuple(infos[i].shape) == tuple(result.shape):
            return pos
    return None


def _refs(args, pos):
    return sys.getrefcount(args[pos])


def _probe():
    """How many references a buffer held only by the run loop's argument list has, counted as
    `sole_owner` counts them (calibrated once: interpreters count differently)."""
    slots = [np.empty(1)]
    args = [slots[0]]
    slots[0] = None
    return _refs(args, 0)


SOLE = _probe()


def sole_owner(args, pos) -> bool:
    """Whether `args[pos]` (a step's argument whose slot was just cleared) is writable, owns its
    memory and is held by nothing else: not twice in `args`, not by any other slot, variable,
    constant or caller."""
    buffer = args[pos]
    if type(buffer) is not np.ndarray or not buffer.flags.owndata or not buffer.flags.writeable:
        return False
    if sum(a is buffer for a in args) != 1:
        return False
    del buffer
    return _refs(args, pos) <= SOLE
