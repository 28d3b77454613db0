"""Conversion: trace a Module's signatures into one Program and write it as one .tflite file.

Each signature becomes a function (subgraph) that starts with CALL_ONCE of an init function
assigning every variable its initial value. Ready-made signatures are added on request:
`save`/`restore` (a checkpoint file, or with portable_checkpoints tensors in and out so the
file needs no custom op), `get_weights`/`set_weights` (the model's weights by path), and, from
the signature that trains (`train_signature`), `get_gradients` (its outputs and every gradient
its optimizers would apply, by variable path, no update), `apply_gradients` (one optimizer step
from given gradients) and `evaluate` (its outputs, no variable changed).
"""
from __future__ import annotations

import json

import numpy as np

from .. import ops
from ..core.ir import Node, Program, Signature
from ..core.passes import optimize, signatures_first
from ..core.trace import FunctionBuilder, ProgramBuilder, Tensor, TraceError, TraceOptions
from ..tflite import write_model
from .module import Module
from .optim import Optimizer, UpdateControls

READY_MADE = ("save", "restore", "get_weights", "set_weights", "get_gradients", "apply_gradients", "evaluate")
FROM_TRAINING = ("get_gradients", "apply_gradients", "evaluate")  # derived from the training signature


def trace_program(module: Module, signatures=None, portable_checkpoints=False, nonfinite_guard=True,
                  max_sequence_length=None, runtime_hyperparameters=False, trainable_groups=None,
                  train_signature="train") -> Program:
    """Trace the chosen signatures of `module` into a Program (see `convert`)."""
    if not isinstance(module, Module):
        raise TypeError(f"convert needs a litetrain Module, got {type(module).__name__}")
    own = module.signatures()
    names = list(signatures) if signatures is not None else list(own) + ["save", "restore"]
    _check_names(module, own, names)
    pb = ProgramBuilder(TraceOptions(nonfinite_guard=bool(nonfinite_guard), max_sequence_length=None
                                     if max_sequence_length is None else int(max_sequence_length)))
    program = pb.program
    groups = group_rule(trainable_groups)
    masks = {}  # group -> variable paths, as the traced updates met them
    traced = {}
    for name in names:  # the author's signatures first: they create optimizer slots lazily
        if name in own:
            controls = UpdateControls(runtime_hyperparameters=bool(runtime_hyperparameters), groups=groups,
                                      taken=own[name]._litetrain_signature)
            traced[name] = _trace_method(pb, name, own[name], controls)
            _note_groups(controls, masks)
    derived = _FromTraining(pb, own, train_signature, groups)
    for name in names:
        if name in FROM_TRAINING and name not in own:
            traced[name] = derived.trace(name)
            _note_groups(derived.controls, masks)
    _check_groups(trainable_groups, masks)
    for state in module.states():  # every variable of the module, used or not
        if not getattr(state, "_as_constant", False):  # (frozen states a caller made constants stay out)
            pb.variable(state)
    for name in names:
        if name not in own and name not in FROM_TRAINING:
            traced[name] = _READY[name](pb, module, portable_checkpoints)
    for name in names:
        fb, inputs, outputs, defaults = traced[name]
        index = pb.add_function(fb)
        program.signatures.append(Signature(name, index, inputs, outputs, defaults))
    signatures_first(program)  # loop bodies and branches were recorded before their signatures
    _add_init_function(program)
    optimize(program)
    program.metadata["litetrain"] = json.dumps({"portable_checkpoints": bool(portable_checkpoints),
                                                "trainable_groups": {g: sorted(v) for g, v in masks.items()}}).encode()
    return program


def convert(module: Module, signatures=None, portable_checkpoints=False, nonfinite_guard=True,
            max_sequence_length=None, runtime_hyperparameters=False, trainable_groups=None,
            train_signature="train") -> bytes:
    """Convert `module` to the bytes of one .tflite file.

    signatures: names of @signature methods and ready-made signatures, in file order (the first
    is the main subgraph); default: all @signature methods plus save and restore.
    portable_checkpoints: `save` returns every variable as an output and `restore` takes them as
    inputs, so the file uses builtin ops only (stock LiteRT runs it); otherwise they read and
    write a safetensors file at `checkpoint_path` with two custom ops.
    nonfinite_guard (default True): every optimizer update checks that the loss and the gradients
    are finite; a step where they are not changes no variable (weights, slots, step count) and the
    signature gets a bool output `step_skipped` (builtin ops: LiteRT runs it too). False leaves the
    check out (a step on an `inf` or NaN batch then writes NaN weights, possibly with a finite
    loss); an optimizer's own `skip_nonfinite` overrides this either way.
    max_sequence_length: the capacity of the tensor lists in which a differentiated loop keeps
    each iteration's values (recurrent layers default to it); a longer sequence is an error.
    runtime_hyperparameters: every optimizer update of the author's signatures takes its
    hyperparameters (learning_rate, momentum, beta_1, beta_2, rho, epsilon, weight_decay,
    clip_norm: `Optimizer.hyperparameters()`) as optional float32 inputs whose defaults are the
    converted values (a second optimizer's inputs are prefixed with its path). The ready-made
    `apply_gradients` always takes them.
    trainable_groups: "layers" (each module that owns parameters is a group, named by its path)
    or {group name: variable path prefix or list of them}. Each group gets an optional bool input
    `trainable/<group>` (default true) in every signature that updates its variables; false
    leaves the group's variables, optimizer slots and step count unchanged for that call.
    train_signature: the signature whose loss and optimizer the ready-made get_gradients,
    apply_gradients and evaluate use."""
    return write_model(trace_program(module, signatures, portable_checkpoints, nonfinite_guard,
                                     max_sequence_length=max_sequence_length,
                                     runtime_hyperparameters=runtime_hyperparameters,
                                     trainable_groups=trainable_groups, train_signature=train_signature))


def _check_names(module, own, names):
    if len(set(names)) != len(names):
        raise ValueError(f"signature names repeat: {names}")
    for name in names:
        if name not in own and name not in READY_MADE:
            raise ValueError(f"{type(module).__name__} has no @signature method {name!r}; it has "
                             f"{sorted(own) or 'none'}, and ready-made ones are {list(READY_MADE)}")


def group_rule(spec):
    """A callable: variable path -> its trainable group (None: always trained), from
    `trainable_groups` ("layers", {group: prefix or [prefixes]}, or None for no groups)."""
    if spec is None:
        return None
    if spec == "layers":
        return lambda path: path.rpartition("/")[0] or path
    if not isinstance(spec, dict) or not spec:
        raise TypeError(f"trainable_groups must be 'layers' or a non-empty dict of group name -> variable path "
                        f"prefix(es), got {spec!r}")
    prefixes = {}
    for group, value in spec.items():
        items = [value] if isinstance(value, str) else list(value)
        if not isinstance(group, str) or not group or not items or not all(isinstance(p, str) and p for p in items):
            raise TypeError(f"trainable group {group!r}: give a non-empty name and one or more variable path "
                            f"prefixes (e.g. 'net/dense'), got {value!r}")
        prefixes[group] = [p.rstrip("/") for p in items]

    def rule(path):
        found = [g for g, ps in prefixes.items() if any(path == p or path.startswith(p + "/") for p in ps)]
        if len(found) > 1:
            raise TraceError(f"variable {path!r} is in trainable groups {found}; a variable may be in one group")
        return found[0] if found else None
    return rule


def _note_groups(controls, masks):
    for captured in controls.masked:
        masks.setdefault(captured[0], set()).add(captured[1])


def _check_groups(spec, masks):
    if isinstance(spec, dict):
        unused = [g for g in spec if g not in masks]
        if unused:
            raise ValueError(f"trainable groups {unused} match no variable that an optimizer updates "
                             f"(groups in use: {sorted(masks) or 'none'}); check their path prefixes")


def _trace_method(pb, name, method, controls, fb=None):
    specs = method._litetrain_signature
    fb = fb if fb is not None else pb.function(name)
    fb.update_controls = controls
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
    outputs = _set_outputs(fb, name, result)
    defaults = {k: spec.default for k, spec in specs.items() if spec.default is not None}
    inputs = {k: t.index for k, t in args.items()}
    for key, (tensor, default) in controls.inputs.items():  # run-time hyperparameters, trainable groups
        inputs[key] = tensor.index
        defaults[key] = default
    return fb, inputs, outputs, defaults


def _set_outputs(fb, name, result: dict) -> dict:
    outputs = {}
    for key, value in result.items():
        t = _distinct(fb, fb.to_tensor(value))
        outputs[str(key)] = t.index
        fb.fn.outputs.append(t.index)
        fb.fn.tensors[t.index].name = f"{name}_{key}:0"
    return outputs


class _StateUntouched(FunctionBuilder):
    """A function whose variable assignments are left out (reads see the values before the call):
    the ready-made get_gradients and evaluate."""

    def assign(self, state, value) -> None:
        self.to_tensor(value)


class _FromTraining:
    """The ready-made signatures derived from the signature that trains: its method is traced again
    with updates recorded instead of applied (`UpdateControls(apply=False)`)."""

    def __init__(self, pb, own, train_signature, groups):
        self.pb, self.own, self.train_signature, self.groups = pb, own, train_signature, groups
        self.captured = None
        self.controls = UpdateControls()

    def _method(self, name):
        if self.train_signature not in self.own:
            raise ValueError(f"the ready-made {name!r} is derived from the signature that trains, "
                             f"{self.train_signature!r}, which the module does not have (its signatures: "
                             f"{sorted(self.own) or 'none'}); pass train_signature=<its name> to convert")
        return self.own[self.train_signature]

    def _traced(self, name):
        method = self._method(name)
        self.controls = UpdateControls(apply=False, taken=method._litetrain_signature)
        fb, inputs, outputs, defaults = _trace_method(self.pb, name, method, self.controls,
                                                      _StateUntouched(self.pb, name))
        if not self.controls.captured:
            raise ValueError(f"the ready-made {name!r}: signature {self.train_signature!r} calls no optimizer's "
                             "minimize or apply_gradients, so there is nothing to derive it from")
        self.captured = self.controls.captured
        return fb, inputs, outputs, defaults

    def trace(self, name):
        if name == "apply_gradients":
            return self._apply_gradients()
        fb, inputs, outputs, defaults = self._traced(name)
        if name == "evaluate":
            return fb, inputs, outputs, defaults
        if "loss" not in outputs and len(self.captured) == 1 and self.captured[0][1] is not None:
            outputs.update(_set_outputs(fb, name, {"loss": self.captured[0][1]}))
        gradients = {}
        for _, _, variables, grads in self.captured:
            for var, g in zip(variables, grads):
                _check_new_name(var.path, {**outputs, **gradients}, name)
                gradients[var.path] = g
        outputs.update(_set_outputs(fb, name, gradients))
        return fb, inputs, outputs, defaults

    def _apply_gradients(self):
        if self.captured is None:  # a probe in a program of its own (its functions are not kept)
            probe = ProgramBuilder(self.pb.options)
            controls = UpdateControls(apply=False)
            _trace_method(probe, "probe", self._method("apply_gradients"), controls, _StateUntouched(probe, "probe"))
            if not controls.captured:
                raise ValueError(f"the ready-made 'apply_gradients': signature {self.train_signature!r} calls "
                                 "no optimizer's minimize or apply_gradients")
            self.captured = controls.captured
        fb = self.pb.function("apply_gradients")
        paths = [v.path for _, _, variables, _ in self.captured for v in variables]
        self.controls = fb.update_controls = UpdateControls(runtime_hyperparameters=True, groups=self.groups,
                                                            taken=paths)
        inputs = {}
        for optimizer, _, variables, _ in self.captured:
            grads = []
            for var in variables:
                _check_new_name(var.path, inputs, "apply_gradients")
                info = self.pb.variable(var)
                grads.append(fb.input(var.path, info.dtype, info.shape))
                inputs[var.path] = grads[-1].index
            optimizer.apply_gradients(zip(grads, variables))
        outputs = _set_outputs(fb, "apply_gradients", dict(fb.reports))
        defaults = {}
        for key, (tensor, default) in self.controls.inputs.items():
            inputs[key] = tensor.index
            defaults[key] = default
        return fb, inputs, outputs, defaults


def _check_new_name(key, taken, signature):
    if key in taken:
        raise ValueError(f"the ready-made {signature!r}: the name {key!r} is used twice (a variable updated "
                         "by two optimizer steps, or an output of the same name); rename one")


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
    """The model's own variables: everything but optimizer state (and the state of modules marked
    `excluded_from_weights`, such as a regulariser's anchors)."""
    optimizer_state = {s.path for m in module.modules()
                       if isinstance(m, Optimizer) or getattr(m, "excluded_from_weights", False) for s in m.states()}
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
