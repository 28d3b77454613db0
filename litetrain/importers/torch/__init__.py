"""The PyTorch importer: a `torch.export` graph becomes a litetrain Module that traces litetrain ops.

    net = lt.importers.from_torch(model, example_input, trainable=["features.17", "features.18"])
    logits = net(x, training=False)        # inside a litetrain Module's @signature method

`from_torch(model, example_input, *, trainable=None, channels_last=False, name=None)` exports
`model.eval()` on `(example_input,)` with `torch.export.export` and returns a `TorchModule`. Calling
it walks the exported graph's aten nodes and emits litetrain ops for each, so the converter's
autodiff differentiates it like any litetrain layer. Nothing is compiled ahead: conversion decides.

Variables. Every parameter and batch-norm statistic the graph uses becomes a State of the module,
named by its torch name with "/" for "." (`features.17.conv.0.0.weight` -> `features/17/conv/0/0/weight`,
below the module's own path): parameters are Params, running statistics Buffers (`num_batches_tracked`
is not imported). `trainable` picks which Params train: None (all frozen), "all", or a list of module
path prefixes such as ["features.17", "features.18", "classifier"]; `freeze()`/`unfreeze()` and the
Params' `trainable` flags may change that before conversion. Convolution kernels are stored in
TFLite's layouts (OHWI; depthwise [1, kh, kw, C*M]), linear weights as torch's [out, in];
`torch_name(path)`, `to_torch_layout(path, value)` and `torch_state_dict()` map back to torch.

Layout. Inputs are NCHW as in torch, or NHWC with `channels_last=True` (then 4-D outputs are NHWC
too). Inside, every 4-D activation that meets a convolution, pooling or batch norm is held NHWC,
TFLite's layout: the importer transposes once at the boundary and maps the axes of layout-aware ops
(elementwise, cat, mean, pad, softmax, batch norm); other ops (view, flatten, permute, linear on
4-D, ...) get the tensor back in torch's order first, so flatten orders features as torch does.
Symmetric torch padding is TFLite's SAME when the two agree, else an explicit PAD and VALID.

Training. A batch norm trains (batch statistics, moving averages updated with torch's momentum
and unbiased variance: `running = (1 - momentum) * running + momentum * batch`) when the module is
called with `training=True` and its weight or bias is trainable; otherwise it runs on its running
statistics and is folded into the convolution before it (kernel and bias scaled in the graph, so
gradients still reach a trainable convolution). Dropout drops when `training=True` and a Param of
its parent module trains (RANDOM_UNIFORM seeded by its module path); otherwise it is the identity.

Inputs and outputs. `example_input` is one tensor or a tuple of them (several inputs: `net(x, mask)`);
float32, integer (token ids; torch's int64 becomes int32, and the signature may give int32 or int64)
and boolean (masks) tensors. A model returning several tensors (a tuple, or nested tuples as
nn.LSTM's (output, (h, c))) gives a tuple, flattened in order. A `torch.export.ExportedProgram` (e.g.
read from a .pt2 file with torch.export.load) may be given instead of a module.

The batch is not baked in: the model is exported with dim 0 of every input whose size is the first
input's as one dynamic size (`dynamic_batch=True`; an example batch of 1 is repeated to 2 for the export,
since torch.export fixes sizes of 1), so views that mix the batch with other dims (attention's
[batch * heads, ...]) take it at run time. A model torch.export cannot export that way is exported with
the example's shapes; then views whose first size equals the example's batch follow the input's batch.

What is supported: `check_import(model, example_input)` (or `litetrain import-check model.pt2`) lists
every aten op of a model as supported or not before anything is converted. Ops the importer does not
know raise TorchImportError naming the aten op, the torch module that called it and what to do.
"""
from __future__ import annotations

import numpy as np

from ... import ops
from ...frontend.module import Buffer, Module, Param
from ...core.trace import builder_of
from . import aten_conv, aten_nn, aten_rnn, aten_shape  # noqa: F401  (register their handlers)
from .aten import HANDLERS, TorchImportError, _aten_name, _inplace, _module_of, _P, _shape, _V, _where
from .coverage import ImportCheck, check_import, unsupported_message
from .exporting import DTYPES as _DTYPES, examples as _examples, export

__all__ = ["ImportCheck", "TorchImportError", "TorchModule", "check_import", "from_torch"]


# -- the module --------------------------------------------------------------------------------------------
class TorchModule(Module):
    """A torch model imported by `from_torch`; call it as `net(x, training=False)`."""

    def __init__(self, exported, examples, channels_last, batch, name=None):
        self.name = name
        self.channels_last = bool(channels_last)
        self._graph = exported.graph_module.graph
        self._examples = list(examples)          # (shape, dtype) of each input, as torch has them
        self._batch = batch                      # the example's batch when exported with fixed sizes, else None
        self._torch_names: dict[str, str] = {}  # relative state name -> torch name
        self._layouts: dict[str, str] = {}      # relative state name -> "torch" | "ohwi" | "dw"
        self._params: dict[str, _P] = {}        # placeholder name -> _P
        self._consts: dict[str, np.ndarray] = {}
        self._folds: dict = {}                  # conv node -> the batch norm node it may absorb
        self._inputs: list[str] = []            # the user inputs' placeholder names

    # mapping back to torch
    def torch_name(self, path: str) -> str:
        """The torch state_dict key of a variable path (with or without this module's path)."""
        own = self.path
        rel = path[len(own) + 1:] if own and path.startswith(own + "/") else path
        if rel not in self._torch_names:
            raise KeyError(f"{path!r} is not a variable imported from torch; known: "
                           f"{sorted(self._torch_names)[:5]}...")
        return self._torch_names[rel]

    def to_torch_layout(self, path: str, value) -> np.ndarray:
        """A variable's value in torch's layout (OHWI and depthwise kernels back to OIHW)."""
        own = self.path
        rel = path[len(own) + 1:] if own and path.startswith(own + "/") else path
        layout = self._layouts[rel]
        value = np.asarray(value)
        if layout == "ohwi":
            return np.ascontiguousarray(value.transpose(0, 3, 1, 2))
        if layout == "dw":
            return np.ascontiguousarray(value.transpose(3, 0, 1, 2))
        return value

    def torch_state_dict(self, values: dict | None = None) -> dict:
        """{torch name: ndarray in torch's layout} of the imported variables, from `values` (e.g. an
        interpreter's `get_variables()`, keyed by variable path) or else the States' values. Batch norms'
        `num_batches_tracked` is not imported: load with `model.load_state_dict(sd, strict=False)`."""
        out = {}
        for state in self.states():
            value = state.value if values is None else values[state.path]
            out[self.torch_name(state.path)] = self.to_torch_layout(state.path, value)
        return out

    # tracing
    def __call__(self, *inputs, training=False):
        if len(inputs) != len(self._examples):
            raise ValueError(f"{type(self).__name__} {self.path or ''}: the torch model takes {len(self._examples)} "
                             f"input(s), got {len(inputs)}")
        ctx = _Trace(self, builder_of(*inputs), bool(training))
        return ctx.run([self._input_value(k, x) for k, x in enumerate(inputs)])

    def _input_value(self, k, x):
        """Input k as the graph sees it: checked against the example, ids as int32, NHWC images flagged."""
        shape, dtype = self._examples[k]
        dims = self._input_dims(k)
        label = "input" if len(self._examples) == 1 else f"input {k}"
        what = f"{type(self).__name__} {self.path or ''}: {label}"
        if x.ndim != len(shape) or any(a is not None and b is not None and a != b for a, b in zip(x.shape[1:], dims)):
            layout = "NHWC" if self._nhwc_input(k) else "as torch"
            raise ValueError(f"{type(self).__name__} {self.path or ''}: expected {label} [batch, "
                             f"{', '.join(map(str, dims))}] ({layout}), got {list(x.shape)}")
        if dtype == "float32" and x.dtype != "float32":
            raise ValueError(f"{what} is float32 in the torch model, got {x.dtype}")
        if dtype == "int32" and x.dtype not in ("int32", "int64"):
            raise ValueError(f"{what} holds integers (torch {dtype.replace('32', '64')}), got {x.dtype}")
        if dtype == "bool" and x.dtype != "bool":
            raise ValueError(f"{what} is a boolean mask, got {x.dtype}")
        if x.dtype == "int64":
            x = ops.cast(x, "int32")
        return _V(x, nhwc=self._nhwc_input(k))

    def _nhwc_input(self, k):
        shape, dtype = self._examples[k]
        return self.channels_last and len(shape) == 4 and dtype == "float32"

    def _input_dims(self, k=0):
        s = self._examples[k][0]
        return (s[2], s[3], s[1]) if self._nhwc_input(k) else tuple(s[1:])


# -- tracing one call ----------------------------------------------------------------------------------------
class _Trace:
    def __init__(self, module, fb, training):
        self.m, self.fb, self.training = module, fb, training
        self.env: dict = {}
        self.done: set = set()
        self.batch = module._batch

    def run(self, inputs):
        m = self.m
        feeds = dict(zip(m._inputs, inputs))
        for node in m._graph.nodes:
            if node.op == "placeholder":
                if node.name in feeds:
                    self.env[node] = feeds[node.name]
                elif node.name in m._params:
                    self.env[node] = m._params[node.name]
                elif node.name in m._consts:
                    self.env[node] = _V(self.fb.const(m._consts[node.name]))
                else:
                    self.env[node] = None  # unused (e.g. num_batches_tracked)
            elif node.op == "call_function":
                if node in self.done:
                    continue
                args = self.resolve(node.args)
                kwargs = {k: self.resolve(v) for k, v in node.kwargs.items()}
                handler = HANDLERS[_aten_name(node.target)]
                try:
                    out = handler(self, node, *args, **kwargs)
                except TorchImportError:
                    raise
                except Exception as e:
                    raise TorchImportError(f"{node.target} in {_where(node)}: {e}") from e
                self.env[node] = out
                if _inplace(node.target) and node.args and hasattr(node.args[0], "op"):
                    self.env[node.args[0]] = out
            elif node.op == "output":
                outs = [self.output(self.resolve(n)) for n in node.args[0]]
                return outs[0] if len(outs) == 1 else tuple(outs)
            else:
                raise TorchImportError(f"unsupported graph node kind {node.op!r} ({node.name})")

    def resolve(self, a):
        if hasattr(a, "op") and hasattr(a, "target"):
            return self.env[a]
        if isinstance(a, (list, tuple)):
            return type(a)(self.resolve(v) for v in a)
        return a

    def output(self, v):
        if v is None or isinstance(v, (int, float, bool)) or hasattr(v, "fb"):  # (a size: an int32 scalar)
            return v if hasattr(v, "fb") else self.fb.const(np.asarray(0 if v is None else v))
        if isinstance(v, _P):
            return self.torch(v)
        if self.m.channels_last and v.t.ndim == 4:
            return self.nhwc(v)
        return self.torch(v)

    # values in a layout
    def read(self, p: _P):
        return self.fb.read(p.state)

    def torch(self, v):
        """The tensor in torch's dim order (Python numbers pass through)."""
        if isinstance(v, _P):
            t = self.read(v)
            if v.layout == "ohwi":
                return ops.transpose(t, [0, 3, 1, 2])
            if v.layout == "dw":
                return ops.transpose(t, [3, 0, 1, 2])
            return t
        if not isinstance(v, _V):
            return v
        if not v.nhwc:
            return v.t
        n, h, w, c = v.t.shape
        if h == 1 and w == 1:  # the same element order either way: a reshape, not a transpose
            return ops.reshape(v.t, [-1 if n is None else n, c, 1, 1])
        return ops.transpose(v.t, [0, 3, 1, 2])

    def nhwc(self, v):
        """A 4-D NHWC tensor for a value that torch sees as (broadcastable to) NCHW."""
        if isinstance(v, _V) and v.nhwc:
            return v.t
        t = self.torch(v)
        if not hasattr(t, "fb"):
            return t
        if t.ndim > 4:
            raise TorchImportError(f"cannot bring a rank-{t.ndim} tensor to NHWC")
        if t.ndim < 4:
            t = ops.reshape(t, [1] * (4 - t.ndim) + [-1 if d is None else d for d in t.shape])
        n, c, h, w = t.shape
        if h == 1 and w == 1:
            return ops.reshape(t, [-1 if n is None else n, 1, 1, c])
        return ops.transpose(t, [0, 2, 3, 1])

    def weight(self, v, layout):
        """A convolution kernel in `layout` ("ohwi" or "dw")."""
        if isinstance(v, _P) and v.layout == layout:
            return self.read(v)
        t = self.torch(v)
        return ops.transpose(t, [0, 2, 3, 1] if layout == "ohwi" else [1, 2, 3, 0])

    # training decisions
    def trains(self, node, own=()):
        """Whether a layer with its own Params `own` (or, without any, its parent module) trains."""
        if not self.training:
            return False
        own = [p for p in own if isinstance(p, _P)]
        if own:
            return any(p.state.trainable for p in own)
        path, cls = _module_of(node)
        if "Dropout" in cls or "BatchNorm" in cls:
            path = path.rsplit(".", 1)[0] if "." in path else ""
        prefix = f"{path}." if path else ""
        states = self.m.__dict__.get("_extra_states", {})
        return any(isinstance(s, Param) and s.trainable and self.m._torch_names[n].startswith(prefix)
                   for n, s in states.items())


# -- import --------------------------------------------------------------------------------------------------
def _trainable_filter(trainable, names):
    if trainable is None:
        return lambda n: False
    if trainable == "all":
        return lambda n: True
    if isinstance(trainable, str) or not all(isinstance(p, str) for p in trainable):
        raise ValueError(f"trainable must be None, 'all' or a list of torch module path prefixes, got {trainable!r}")
    prefixes = [p.rstrip(".") for p in trainable]
    for p in prefixes:
        if not any(n == p or n.startswith(p + ".") for n in names):
            tops = sorted({n.split(".")[0] for n in names})
            raise ValueError(f"trainable prefix {p!r} matches no parameter of the torch model; its "
                             f"top-level modules are {tops}")
    return lambda n: any(n == p or n.startswith(p + ".") for p in prefixes)


def _storage_layout(users):
    """'ohwi' or 'dw' when every use of a weight is as a 2-D convolution's kernel, else 'torch'."""
    layouts = set()
    for u in users:
        if _aten_name(u.target) not in ("conv2d", "convolution") or len(u.args) < 2 or \
                not hasattr(u.args[1], "users") or u.args[0] is u.args[1] or \
                (_aten_name(u.target) == "convolution" and len(u.args) > 6 and u.args[6]):  # (transposed)
            return "torch"
        w = u.args[1]
        shape = _shape(w)
        if shape is None or len(shape) != 4:
            return "torch"
        groups = u.args[6] if _aten_name(u.target) == "conv2d" and len(u.args) > 6 else u.kwargs.get("groups", 1)
        if _aten_name(u.target) == "convolution":
            groups = u.args[8]
        x_shape = _shape(u.args[0])
        cin = x_shape[1] if x_shape else None
        layouts.add("dw" if groups > 1 and groups == cin and shape[1] == 1 else "ohwi")
    return layouts.pop() if len(layouts) == 1 else "torch"


def from_torch(model, example_input=None, *, trainable=None, channels_last=False, name=None,
               dynamic_batch=True) -> TorchModule:
    """Import a torch.nn.Module or a torch.export.ExportedProgram (see the module docstring).
    `example_input` is one torch tensor (or NumPy array) in torch's layout (NCHW for images), or a tuple
    of them for several inputs; an ExportedProgram needs none. The batch size is not fixed."""
    try:
        import torch
    except ImportError:
        raise ImportError("the torch importer needs PyTorch: pip install torch") from None
    if isinstance(model, torch.export.ExportedProgram):
        exported, batch = model, None
        examples = [_placeholder_example(n) for n in _user_inputs(exported)]
    else:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"from_torch needs a torch.nn.Module or torch.export.ExportedProgram, got "
                            f"{type(model).__name__}")
        if example_input is None:
            raise TypeError("from_torch needs example_input (a tensor, or a tuple of them) to export the model")
        tensors = _examples(torch, example_input)
        exported, batch = export(model, tensors, dynamic_batch)
        examples = [(tuple(int(d) for d in t.shape), _DTYPES[str(t.dtype)]) for t in tensors]
    if channels_last and not any(len(s) == 4 and d == "float32" for s, d in examples):
        raise ValueError(f"channels_last=True is for 4-D image inputs; the example inputs have shapes "
                         f"{[list(s) for s, _ in examples]}")
    return _build(exported, examples, trainable, channels_last, name, batch)


def _user_inputs(exported):
    from torch.export.graph_signature import InputKind
    nodes = {n.name: n for n in exported.graph_module.graph.nodes}
    return [nodes[s.arg.name] for s in exported.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]


def _placeholder_example(node):
    val = node.meta.get("val")
    shape = tuple(int(d) if str(d).lstrip("-").isdigit() else None for d in val.shape)
    dtype = _DTYPES.get(str(val.dtype))
    if dtype is None:
        raise TorchImportError(f"input {node.name} is {val.dtype}; the importer takes float32, int64, int32 and "
                               "bool inputs")
    return shape, dtype


def _build(exported, examples, trainable, channels_last, name, batch):
    from torch.export.graph_signature import InputKind
    graph = exported.graph_module.graph
    net = TorchModule(exported, examples, channels_last, batch, name)
    nodes = {n.name: n for n in graph.nodes}
    unknown = [n for n in graph.nodes if n.op == "call_function" and _aten_name(n.target) not in HANDLERS]
    if unknown:
        raise TorchImportError(unsupported_message(unknown))
    state_dict = exported.state_dict
    param_names = [s.target for s in exported.graph_signature.input_specs if s.kind == InputKind.PARAMETER]
    is_trainable = _trainable_filter(trainable, param_names)
    for spec in exported.graph_signature.input_specs:
        node = nodes[spec.arg.name]
        if spec.kind == InputKind.USER_INPUT:
            net._inputs.append(spec.arg.name)
        elif spec.kind in (InputKind.PARAMETER, InputKind.BUFFER):
            if node.users:
                value = state_dict[spec.target] if spec.target in state_dict else exported.constants[spec.target]
                _add_state(net, spec, node, value.detach().cpu().numpy(), is_trainable)
        elif spec.kind == InputKind.CONSTANT_TENSOR:
            value = exported.constants[spec.target]
            net._consts[spec.arg.name] = np.asarray(value.detach().cpu().numpy())
        else:
            raise TorchImportError(f"unsupported graph input {spec.arg.name} of kind {spec.kind}")
    if len(net._inputs) != len(examples):
        raise TorchImportError(f"the exported graph has {len(net._inputs)} tensor inputs, the examples "
                               f"{len(examples)}: pass every tensor input (non-tensor arguments are fixed)")
    for node in graph.nodes:  # a convolution whose only user is a batch norm may absorb it
        if node.op == "call_function" and _aten_name(node.target) in ("conv2d", "convolution") \
                and len(node.users) == 1:
            (user,) = node.users
            if _aten_name(user.target) in ("batch_norm", "_native_batch_norm_legit_no_training") \
                    and user.args[0] is node:
                net._folds[node] = user
    return net


def _add_state(net, spec, node, value, is_trainable):
    """A parameter or buffer as a State (float32), or as a constant (integer and boolean buffers)."""
    from torch.export.graph_signature import InputKind
    if value.dtype in (np.int64, np.int32, np.bool_) and spec.kind == InputKind.BUFFER:
        net._consts[spec.arg.name] = value.astype(np.int32) if value.dtype != np.bool_ else value
        return
    if value.dtype != np.float32:
        raise TorchImportError(f"{spec.target} is {value.dtype}; the importer takes float32 models "
                               "(model.float() converts one)")
    layout = _storage_layout(list(node.users)) if value.ndim == 4 else "torch"
    stored = value.transpose(0, 2, 3, 1) if layout == "ohwi" else \
        value.transpose(1, 2, 3, 0) if layout == "dw" else value
    rel = spec.target.replace(".", "/")
    state = Param(np.ascontiguousarray(stored), trainable=is_trainable(spec.target)) \
        if spec.kind == InputKind.PARAMETER else Buffer(np.ascontiguousarray(stored))
    net.add_state(rel, state)
    net._torch_names[rel], net._layouts[rel] = spec.target, layout
    net._params[spec.arg.name] = _P(state, layout)
