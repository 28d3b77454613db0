"""Steps bound to their slots: each step of a plan as a closure `step(slots, call)`, so that running
a plan is a loop of calls with nothing left to decide per step (which kind of step, which slots,
how many outputs, what to free)."""
from __future__ import annotations

from .inplace import sole_owner
from .steps import ASSIGN, FUSED, INPLACE, PURE, READ


class OutputCountError(Exception):
    """A kernel made another number of outputs than the model gives its node."""

    def __init__(self, expected, made):
        super().__init__(f"{expected} outputs expected, {made} made")
        self.expected, self.made = expected, made


def store(result, outs, slots):
    """A kernel's outputs into their slots (a file may give an op more or fewer outputs than its
    kernel makes: an error)."""
    if len(outs) == 1 and result is not None and result.__class__ is not tuple:
        slots[outs[0]] = result
        return
    if not outs:
        return
    if not isinstance(result, tuple) or len(result) != len(outs) or any(r is None for r in result):
        raise OutputCountError(len(outs), len(result) if isinstance(result, tuple) else int(result is not None))
    for o, r in zip(outs, result):
        slots[o] = r


def bind_step(step, executor):
    """The closure that runs `step` (a plan step tuple) on a call's slots."""
    kernel, kind, ins, outs, frees = step[:5]
    if kind == READ:
        return _read(executor.variables, kernel, outs[0], frees)
    if kind == ASSIGN:
        return _assign(executor, kernel, ins[0], frees)
    if kind == INPLACE:
        return _inplace(kernel, ins, outs, frees, step[6])
    if kind in (PURE, FUSED):
        return _pure(kernel, ins, outs, frees)
    return _stateful(kernel, ins, outs, frees)


def _pure(kernel, ins, outs, frees):
    single = outs[0] if len(outs) == 1 else None
    if len(ins) == 1 and ins[0] >= 0 and single is not None and not frees:
        a, = ins

        def step(slots, call):
            result = kernel(slots[a])
            if result is None or result.__class__ is tuple:
                store(result, outs, slots)
            else:
                slots[single] = result
        return step
    if len(ins) == 2 and min(ins) >= 0 and single is not None:
        a, b = ins

        def step(slots, call):
            result = kernel(slots[a], slots[b])
            if result is None or result.__class__ is tuple:
                store(result, outs, slots)
            else:
                slots[single] = result
            for i in frees:
                slots[i] = None
        return step

    def step(slots, call):
        store(kernel(*[None if i < 0 else slots[i] for i in ins]), outs, slots)
        for i in frees:
            slots[i] = None
    return step


def _stateful(kernel, ins, outs, frees):
    def step(slots, call):
        store(kernel(call.ctx(), *[None if i < 0 else slots[i] for i in ins]), outs, slots)
        for i in frees:
            slots[i] = None
    return step


def _read(variables, name, out, frees):
    read = variables.read

    def step(slots, call):
        slots[out] = read(name)
        for i in frees:
            slots[i] = None
    return step


def _assign(executor, name, value_slot, frees):
    variables = executor.variables  # (the step reaches the executor through its call: a closure
    # holding the executor would make a cycle through its plans, and a dropped interpreter would
    # stay in memory until the garbage collector's next full pass)

    def step(slots, call):
        value = slots[value_slot]
        # an array the call made is stored as is; the caller's arrays are copied
        variables.assign(name, value, owned=not any(value is a for a in call.executor._callers))
        for i in frees:
            slots[i] = None
    return step


def _inplace(kernel, ins, outs, frees, pos):
    """An elementwise step that writes into its dying input's buffer when nothing else holds it."""
    def step(slots, call):
        args = [None if i < 0 else slots[i] for i in ins]
        for i in frees:
            slots[i] = None
        if sole_owner(args, pos):
            store(kernel(*args, out=args[pos]), outs, slots)
        else:
            store(kernel(*args), outs, slots)
    return step
