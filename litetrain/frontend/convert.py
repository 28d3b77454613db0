"""Conversion: trace a Module's signatures into one Program and write it as one .tflite file.

Each signature becomes a function (subgraph) that starts with CALL_ONCE of an init function
assigning every variable its initial value. Ready-made signatures are added on request:
`save`/`restore` (a checkpoint file, or with portable_checkpoints tensors in and out so the
file needs no custom op), `get_weights`/`set_weights` (the model's weights by path).
"""
from __future__ import annotations

import json

import numpy as np

from .. import ops
from ..core.ir import Node, Program, Signature
from ..core.passes import optimize, signatures_first
from ..core.trace import ProgramBuilder, Tensor, TraceError, TraceOptions
from ..tflite import write_model
from .module import Module
from .optim import Optimizer

READY_MADE = ("save", "restore", "get_weights", "set_weights")


def trace_program(module: Module, signatures=None, portable_checkpoints=False, nonfinite_guard=False,
                  max_sequence_length=None) -> Program:
    """Trace the chosen signatures of `module` into a Program (see `convert`)."""
    if not isinstance(module, Module):
        raise TypeError(f"convert needs a litetrain Module, got {type(module).__name__}")
    own = module.signatures()
    names = list(signatures) if signatures is not None else list(own) + ["save", "restore"]
    if len(set(names)) != len(names):
        raise ValueError(f"signature names repeat: {names}")
    for name in names:
        if name not in own and name not in READY_MADE:
            raise ValueError(f"{type(module).__name__} has no @signature method {name!r}; it has "
                             f"{sorted(own) or 'none'}, and ready-made ones are {list(READY_MADE)}")
    pb = ProgramBuilder(TraceOptions(nonfinite_guard=bool(nonfinite_guard), max_sequence_length=None
                                     if max_sequence_length is None else int(max_sequence_length)))
    program = pb.program
    traced = {}
    for name in names:  # the author's signatures first: they create optimizer slots lazily
        if name in own:
            traced[name] = _trace_method(pb, name, own[name])
    for state in module.states():  # every variable of the module, used or not
        if not getattr(state, "_as_constant", False):  # (frozen states a caller made constants stay out)
            pb.variable(state)
    for name in names:
        if name not in own:
            traced[name] = _READY[name](pb, module, portable_checkpoints)
    for name in names:
        fb, inputs, outputs, defaults = traced[name]
        index = pb.add_function(fb)
        program.signatures.append(Signature(name, index, inputs, outputs, defaults))
    signatures_first(program)  # loop bodies and branches were recorded before their signatures
    _add_init_function(program)
    optimize(program)
    program.metadata["litetrain"] = json.dumps({"portable_checkpoints": bool(portable_checkpoints)}).encode()
    return program


def convert(module: Module, signatures=None, portable_checkpoints=False, nonfinite_guard=False,
            max_sequence_length=None) -> bytes:
    """Convert `module` to the bytes of one .tflite file.

    signatures: names of @signature methods and ready-made signatures, in file order (the first
    is the main subgraph); default: all @signature methods plus save and restore.
    portable_checkpoints: `save` returns every variable as an output and `restore` takes them as
    inputs, so the file uses builtin ops only (stock LiteRT runs it); otherwise they read and
    write a safetensors file at `checkpoint_path` with two custom ops.
    nonfinite_guard: every optimizer update checks that the loss and the gradients are finite;
    a step where they are not changes no variable (weights, slots, step count) and the signature
    gets a bool output `step_skipped` (an optimizer's own `skip_nonfinite` overrides this).
    max_sequence_length: the capacity of the tensor lists in which a differentiated loop keeps
    each iteration's values (recurrent layers default to it); a longer sequence is an error."""
    return write_model(trace_program(module, signatures, portable_checkpoints, nonfinite_guard,
                                     max_sequence_length=max_sequence_length))


def _trace_method(pb, name, method):
    specs = method._litetrain_signature
    fb = pb.function(name)
    args = {k: fb.input(k, spec.dtype, spec.shape) for k, spec in specs.items()}
    try:
        result = method(**args)
    except TraceError as e:
        raise TraceError(f"while tracing signature {name!r}: {e}") from None
    if result is None:
        result = {}
    if not isinstance(result, dict):
        raise TraceError(f"signature {name!r} must return a dict of output name -> tensor, "
                         f"got {type(result).__name__}")
    # outputs library code added (e.g. the optimizer's step_skipped) follow the author's, who wins a clash
    result = {**result, **{k: v for k, v in fb.reports.items() if k not in result}}
    outputs = {}
    for key, value in result.items():
        t = _distinct(fb, fb.to_tensor(value))
        outputs[str(key)] = t.index
        fb.fn.outputs.append(t.index)
        fb.fn.tensors[t.index].name = f"{name}_{key}:0"
    defaults = {k: spec.default for k, spec in specs.items() if spec.default is not None}
    inputs = {k: t.index for k, t in args.items()}
    return fb, inputs, outputs, defaults


def _distinct(fb, t: Tensor) -> Tensor:
    """A tensor of its own for a signature output (an output may not be an input, another
    output or a shared constant)."""
    if t.constant is not None:
        return Tensor(fb, fb.fn.add_tensor(fb._name("output"), t.dtype, t.shape, t.constant))
    if t.index not in fb.fn.inputs and t.index not in fb.fn.outputs:
        return t
    if None in t.shape:
        return ops.reshape(t, ops.shape_of(t), known_shape=t.shape)
    return ops.reshape(t, list(t.shape))


def _weights(program, module):
    """The model's own variables: everything but optimizer state."""
    optimizer_state = {s.path for m in module.modules() if isinstance(m, Optimizer) for s in m.states()}
    return [v for v in program.variables.values() if v.name not in optimizer_state]


def _states_by_path(module):
    return {s.path: s for s in module.states()}


def _ready_get(pb, module, variables, name):
    fb = pb.function(name)
    states = _states_by_path(module)
    outputs = {}
    for var in variables:
        t = _distinct(fb, fb.read(states[var.name]))
        fb.fn.tensors[t.index].name = f"{name}_{var.name}:0"
        fb.fn.outputs.append(t.index)
        outputs[var.name] = t.index
    return fb, {}, outputs, {}


def _ready_set(pb, module, variables, name):
    fb = pb.function(name)
    states = _states_by_path(module)
    inputs = {}
    for var in variables:
        t = fb.input(var.name, var.dtype, var.shape)
        fb.assign(states[var.name], t)
        inputs[var.name] = t.index
    return fb, inputs, {}, {}


def _ready_save(pb, module, portable):
    variables = list(pb.program.variables.values())
    if portable:
        return _ready_get(pb, module, variables, "save")
    fb = pb.function("save")
    path = fb.input("checkpoint_path", "string", ())
    states = _states_by_path(module)
    values = [fb.read(states[v.name]) for v in variables]
    fb.emit("save_checkpoint", [path] + values, {"names": tuple(v.name for v in variables)})
    return fb, {"checkpoint_path": path.index}, {}, {}


def _ready_restore(pb, module, portable):
    variables = list(pb.program.variables.values())
    if portable:
        return _ready_set(pb, module, variables, "restore")
    fb = pb.function("restore")
    path = fb.input("checkpoint_path", "string", ())
    values = fb.emit("restore_checkpoint", [path], {
        "names": tuple(v.name for v in variables), "dtypes": tuple(v.dtype for v in variables),
        "shapes": tuple(tuple(v.shape) for v in variables)})
    values = values if isinstance(values, tuple) else (values,)
    states = _states_by_path(module)
    for var, value in zip(variables, values):
        fb.assign(states[var.name], value)
    return fb, {"checkpoint_path": path.index}, {}, {}


_READY = {
    "save": _ready_save,
    "restore": _ready_restore,
    "get_weights": lambda pb, m, portable: _ready_get(pb, m, _weights(pb.program, m), "get_weights"),
    "set_weights": lambda pb, m, portable: _ready_set(pb, m, _weights(pb.program, m), "set_weights"),
}


def _add_init_function(program: Program):
    pb = ProgramBuilder()
    pb.program = program
    fb = pb.function("init")
    for var in program.variables.values():
        handle = fb._handle(var.name)
        value = fb.const(np.asarray(var.initial), var.dtype)
        fb.fn.nodes.append(Node("assign_variable", [handle, value.index], [], {}))
    index = pb.add_function(fb)
    program.init_function = index
    for sig in program.signatures:
        program.functions[sig.function].nodes.insert(
            0, Node("call_once", [], [], {"init_subgraph_index": index}))
