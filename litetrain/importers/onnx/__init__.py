"""The ONNX importer: an ONNX graph becomes a litetrain Module that traces litetrain ops.

    net = lt.importers.from_onnx("model.onnx", trainable=["classifier"])
    logits = net(x, training=False)        # inside a litetrain Module's @signature method

`from_onnx(model_or_path, *, trainable=None, channels_last=False, name=None)` reads a model (a path, the
file's bytes, or an `onnx.ModelProto`; opsets 13 to 21 of the default domain) with the `onnx` package and
returns an `OnnxModule`. Calling it walks the graph's nodes and emits litetrain ops for each, so the
converter's autodiff differentiates it like any litetrain layer: an ONNX model becomes a trainable file
through `lt.convert`. The ops torch.onnx.export emits for CNN classifiers, MLPs, transformers (attention
as MatMul and Softmax, LayerNormalization or its decomposition, Gelu or its Erf form) and LSTM/GRU/RNN
are covered (`SUPPORTED_OPS`); any other op is refused, naming the op and the node, before tracing starts.

Variables. A layer's weights (Conv, Gemm, MatMul, the normalisations, the recurrent layers) and any other
float initializer of two or more elements that feeds a node's data (not a shape, axes, pads or scales
input) become States of the module, each named by its ONNX name with "/" for "."
(`features.0.weight` -> `features/0/weight`; other characters outside [A-Za-z0-9_/-] become "_"):
a batch norm's running mean and variance are Buffers, the rest Params. `trainable` picks which Params
train: None (all frozen), "all", or a list of name prefixes (["classifier", "features.18"], matched at
"." or "/" boundaries). Everything else (integer initializers, scalars, Constant nodes, shapes) is a
constant, so shape arithmetic is folded at import. An initializer that reaches nodes through Identity
(the legacy torch exporter shares equal initializers so) gets a variable of its own per Identity.
Convolution kernels are stored in TFLite's layouts (OHWI; depthwise [1, kh, kw, C*M]);
`onnx_name(path)`, `to_onnx_layout(path, value)` and `onnx_initializers(values)` map back to ONNX.

Layout. Inputs are NCHW as in ONNX, or NHWC with `channels_last=True` (then 4-D outputs are NHWC too).
Inside, as in the PyTorch importer, every 4-D activation that meets a convolution, pooling or batch
norm is held NHWC; layout-aware ops (elementwise, Concat, Reduce*, Pad, Softmax, Transpose, Slice,
BatchNormalization, Resize) map their axes, the others get the tensor back in ONNX's order.

Training. A BatchNormalization trains (batch statistics; running statistics updated as PyTorch does,
`running = momentum_onnx * running + (1 - momentum_onnx) * batch` with the unbiased batch variance)
when the module is called with `training=True` and its scale or bias is trainable; otherwise it uses
its running statistics. Dropout drops when `training=True` and some Param trains.

The batch. Dim 0 of the inputs is not baked in: a model exported with a fixed batch (e.g. 1) takes any
batch; reshapes whose first size is that batch follow the input's. Sizes the graph computes at run time
(Shape, Gather, Concat on an unknown batch) stay symbolic; ONNX's shape inference fills in what they
leave open.
"""
from __future__ import annotations

import os
import re

import numpy as np

from ... import ops
from ...core.trace import builder_of
from ...frontend.module import Buffer, Module, Param
from . import control, conv, elementwise, recurrent, shapes  # noqa: F401  (register their handlers)
from .graph import HANDLERS, Dims, OnnxImportError, P, V
from .loading import load_model, read_graph

__all__ = ["OnnxImportError", "OnnxModule", "SUPPORTED_OPS", "from_onnx"]

SUPPORTED_OPS = tuple(sorted(HANDLERS))


class OnnxModule(Module):
    """An ONNX model imported by `from_onnx`; call it as `net(*inputs, training=False)`."""

    def __init__(self, graph, channels_last, name=None):
        self.name = name
        self.channels_last = bool(channels_last)
        self._graph = graph                      # loading.Graph: nodes, inputs, outputs, shapes, opset
        self._onnx_names: dict[str, str] = {}   # relative state name -> ONNX initializer name
        self._layouts: dict[str, str] = {}      # relative state name -> "onnx" | "ohwi" | "dw"
        self._vars: dict[str, P] = {}           # ONNX initializer name -> P
        self._consts: dict[str, np.ndarray] = {}

    # mapping back to ONNX
    def _relative(self, path):
        own = self.path
        return path[len(own) + 1:] if own and path.startswith(own + "/") else path

    def onnx_name(self, path: str) -> str:
        """The ONNX initializer name of a variable path (with or without this module's path)."""
        rel = self._relative(path)
        if rel not in self._onnx_names:
            raise KeyError(f"{path!r} is not a variable imported from ONNX; known: {sorted(self._onnx_names)[:5]}...")
        return self._onnx_names[rel]

    def to_onnx_layout(self, path: str, value) -> np.ndarray:
        """A variable's value in ONNX's layout (OHWI and depthwise kernels back to OIHW)."""
        layout = self._layouts[self._relative(path)]
        value = np.asarray(value)
        if layout == "ohwi":
            return np.ascontiguousarray(value.transpose(0, 3, 1, 2))
        if layout == "dw":
            return np.ascontiguousarray(value.transpose(3, 0, 1, 2))
        return value

    def onnx_initializers(self, values: dict | None = None) -> dict:
        """{ONNX initializer name: ndarray in ONNX's layout} of the imported variables, from `values` (e.g.
        an interpreter's `get_variables()`, keyed by variable path) or else the States' values."""
        out = {}
        for state in self.states():
            value = state.value if values is None else values[state.path]
            out[self.onnx_name(state.path)] = self.to_onnx_layout(state.path, value)
        return out

    # tracing
    def __call__(self, *inputs, training=False):
        specs = self._graph.inputs
        if len(inputs) != len(specs):
            raise ValueError(f"{type(self).__name__} {self.path or ''}: the ONNX model takes {len(specs)} input(s) "
                             f"({', '.join(s.name for s in specs)}), got {len(inputs)}")
        ctx = Trace(self, builder_of(*inputs), bool(training))
        values = [self._input_value(k, x) for k, x in enumerate(inputs)]
        batch = specs[0].shape[0] if specs and specs[0].shape else None
        traced = values[0].t.shape[0] if values and values[0].t.shape else None
        if isinstance(batch, int) and traced is None:
            ctx.batch = batch  # a model exported with a fixed batch, traced with an unknown one
        elif isinstance(batch, int) and traced != batch:
            raise ValueError(f"{type(self).__name__} {self.path or ''}: the ONNX model fixes the batch at {batch}; "
                             f"give the signature's input {specs[0].name!r} the batch None (any batch) or {batch}")
        return ctx.run(values)

    def _input_value(self, k, x):
        spec = self._graph.inputs[k]
        nhwc = self._nhwc_input(k)
        dims = list(spec.shape[1:])
        if nhwc:
            dims = [dims[1], dims[2], dims[0]]
        what = f"{type(self).__name__} {self.path or ''}: input {spec.name!r}"
        if x.ndim != len(spec.shape) or any(isinstance(a, int) and b is not None and a != b
                                            for a, b in zip(dims, x.shape[1:])):
            shown = ", ".join(["batch"] + [str(d) if isinstance(d, int) else "?" for d in dims]) if spec.shape else ""
            raise ValueError(f"{what}: expected [{shown}]" + (" (NHWC)" if nhwc else "") + f", got {list(x.shape)}")
        if spec.dtype == "float32" and x.dtype != "float32":
            raise ValueError(f"{what} is float32 in the ONNX model, got {x.dtype}")
        if spec.dtype == "int32" and x.dtype not in ("int32", "int64"):
            raise ValueError(f"{what} holds integers ({spec.onnx_dtype}), got {x.dtype}")
        if spec.dtype == "bool" and x.dtype != "bool":
            raise ValueError(f"{what} is a boolean tensor, got {x.dtype}")
        if x.dtype == "int64":
            x = ops.cast(x, "int32")
        return V(x, nhwc=nhwc)

    def _nhwc_input(self, k):
        spec = self._graph.inputs[k]
        return self.channels_last and len(spec.shape) == 4 and spec.dtype == "float32"


# -- tracing one call ----------------------------------------------------------------------------------------
class Trace:
    """One call of an OnnxModule: the values of the graph's names, and the layout helpers handlers use."""

    def __init__(self, module, fb, training):
        self.m, self.fb, self.training = module, fb, training
        self.env: dict = {}
        self.batch = None   # the fixed batch of a model traced with an unknown one

    def run(self, inputs):
        m = self.m
        self.env.update(m._consts)
        self.env.update(m._vars)
        self.env.update(zip((s.name for s in m._graph.inputs), inputs))
        self.run_nodes(m._graph.nodes)
        outs = [self.output(self.env[name]) for name in m._graph.outputs]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def run_nodes(self, nodes):
        for node in nodes:
            args = [None if not name else self.value(name, node) for name in node.inputs]
            try:
                out = HANDLERS[node.op](self, node, *args)
            except OnnxImportError:
                raise
            except Exception as e:
                raise OnnxImportError(f"{node.where()}: {e}") from e
            outs = list(out) if isinstance(out, (list, tuple)) else [out]
            outs = [np.asarray(v) if isinstance(v, np.generic) else v for v in outs]
            for name, v in zip(node.outputs, outs):
                if name:
                    self.env[name] = v

    def value(self, name, node):
        if name not in self.env:
            raise node.refuse(f"input {name!r} is neither a graph input, an initializer nor an earlier output")
        v = self.env[name]
        if isinstance(v, V) and v.t.fb is not self.fb and v.t.fb.depth < self.fb.depth:  # inside an If's branch
            return V(self.fb.to_tensor(v.t), v.nhwc)
        return v

    def output(self, v):
        if isinstance(v, V) and v.nhwc and self.m.channels_last:
            return v.t
        return self.plain(v)

    def inferred(self, name):
        """ONNX's shape inference's dims of value `name` (ints, or None where unknown), or None."""
        return self.m._graph.shapes.get(name)

    # values as tensors, in a layout
    def read(self, p):
        return self.fb.read(p.state)

    def plain(self, v):
        """The value as a tensor in ONNX's dim order."""
        if isinstance(v, P):
            t = self.read(v)
            if v.layout == "ohwi":
                return ops.transpose(t, [0, 3, 1, 2])
            if v.layout == "dw":
                return ops.transpose(t, [3, 0, 1, 2])
            return t
        if isinstance(v, V):
            if not v.nhwc:
                return v.t
            n, h, w, c = v.t.shape
            if h == 1 and w == 1:  # the same element order either way: a reshape, not a transpose
                return ops.reshape(v.t, [-1 if n is None else n, c, 1, 1])
            return ops.transpose(v.t, [0, 3, 1, 2])
        if isinstance(v, Dims):
            return v.tensor(self.fb)
        if isinstance(v, np.ndarray):
            return self.fb.const(v)
        raise OnnxImportError(f"unexpected value {v!r}")

    def nhwc(self, v):
        """A 4-D NHWC tensor for a value that ONNX sees as (broadcastable to) NCHW."""
        if isinstance(v, V) and v.nhwc:
            return v.t
        if isinstance(v, np.ndarray) and v.ndim <= 4:
            a = v.reshape((1,) * (4 - v.ndim) + v.shape)
            return self.fb.const(np.ascontiguousarray(a.transpose(0, 2, 3, 1)))
        t = self.plain(v)
        if t.ndim > 4:
            raise OnnxImportError(f"cannot bring a rank-{t.ndim} tensor to NHWC")
        if t.ndim < 4:
            t = ops.reshape(t, [1] * (4 - t.ndim) + [-1 if d is None else d for d in t.shape])
        n, c, h, w = t.shape
        if h == 1 and w == 1:
            return ops.reshape(t, [-1 if n is None else n, 1, 1, c])
        return ops.transpose(t, [0, 2, 3, 1])

    def const(self, v):
        """The value as an ndarray when it is known at import, else None."""
        if isinstance(v, np.ndarray):
            return v
        if isinstance(v, Dims):
            return v.array() if v.known else None
        if isinstance(v, V) and v.t.constant is not None:
            c = np.asarray(v.t.constant)
            return c.transpose(0, 3, 1, 2) if v.nhwc else c
        return None

    def same_layout(self, *values):
        """The tensors of `values` in one layout (NHWC when any is an NHWC activation) and that flag."""
        nhwc = any(isinstance(v, V) and v.nhwc for v in values)
        return [(self.nhwc if nhwc else self.plain)(v) for v in values], nhwc

    def weight(self, v, layout):
        """A convolution kernel in `layout` ("ohwi" or "dw")."""
        if isinstance(v, P) and v.layout == layout:
            return self.read(v)
        t = self.plain(v)
        return ops.transpose(t, [0, 2, 3, 1] if layout == "ohwi" else [1, 2, 3, 0])

    def trains(self, *own):
        """Whether a node whose variables are `own` trains in this call (with no variables: any Param)."""
        if not self.training:
            return False
        own = [p for p in own if isinstance(p, P)]
        if own:
            return any(isinstance(p.state, Param) and p.state.trainable for p in own)
        return bool(self.m.trainable_variables)


# -- import --------------------------------------------------------------------------------------------------
def from_onnx(model_or_path, *, trainable=None, channels_last=False, name=None) -> OnnxModule:
    """Import an ONNX model: a path to a .onnx file, its bytes, or an onnx.ModelProto (see the module
    docstring). Ops the importer does not translate raise OnnxImportError naming each op and node."""
    if isinstance(model_or_path, (str, os.PathLike)) and not os.path.isfile(model_or_path):
        raise FileNotFoundError(f"no ONNX file at {os.fspath(model_or_path)!r}")
    graph = read_graph(load_model(model_or_path))
    unknown = {}
    for node in graph.all_nodes():
        if node.domain not in ("", "ai.onnx") or node.op not in HANDLERS:
            unknown.setdefault((node.domain, node.op), []).append(node)
    if unknown:
        raise OnnxImportError(_unsupported_message(unknown))
    if channels_last and not any(len(s.shape) == 4 and s.dtype == "float32" for s in graph.inputs):
        raise ValueError(f"channels_last=True is for 4-D image inputs; the model's inputs have shapes "
                         f"{[list(s.shape) for s in graph.inputs]}")
    net = OnnxModule(graph, channels_last, name)
    is_trainable = _trainable_filter(trainable, [n for n, kind in graph.variables.items() if kind == "param"])
    taken = set()
    for onnx_name, value in graph.initializers.items():
        kind = graph.variables.get(onnx_name)
        if kind is None:
            net._consts[onnx_name] = value
            continue
        layout = graph.layouts.get(onnx_name, "onnx")
        stored = value.transpose(0, 2, 3, 1) if layout == "ohwi" else \
            value.transpose(1, 2, 3, 0) if layout == "dw" else value
        stored = np.ascontiguousarray(stored, np.float32)
        state = Param(stored, trainable=is_trainable(onnx_name)) if kind == "param" else Buffer(stored)
        rel = _state_name(onnx_name, taken)
        net.add_state(rel, state)
        net._onnx_names[rel], net._layouts[rel] = onnx_name, layout
        net._vars[onnx_name] = P(state, layout)
    return net


def _unsupported_message(unknown):
    lines = []
    for (domain, op), nodes in sorted(unknown.items()):
        shown = ", ".join(repr(n.name) + (f" ({n.scope})" if n.scope else "") for n in nodes[:3])
        more = f" and {len(nodes) - 3} more" if len(nodes) > 3 else ""
        label = f"{domain}::{op}" if domain not in ("", "ai.onnx") else op
        lines.append(f"  {label}: node {shown}{more}")
    return ("the ONNX importer does not translate these ops (litetrain has no op for them):\n" + "\n".join(lines) +
            "\nexport the model without them (e.g. replace the layer in PyTorch before torch.onnx.export), or "
            f"write it with litetrain's layers; supported ops: {', '.join(SUPPORTED_OPS)}")


def _state_name(onnx_name, taken):
    rel = re.sub(r"[^A-Za-z0-9_/\-]", "_", onnx_name.replace("::", "_").replace(".", "/")).strip("/") or "w"
    rel = re.sub(r"/+", "/", rel)
    base, k = rel, 1
    while rel in taken:
        k += 1
        rel = f"{base}_{k}"
    taken.add(rel)
    return rel


def _matches(name, prefix):
    return name == prefix or name.startswith((prefix + ".", prefix + "/"))


def _trainable_filter(trainable, names):
    if trainable is None:
        return lambda n: False
    if trainable == "all":
        return lambda n: True
    if isinstance(trainable, str) or not all(isinstance(p, str) for p in trainable):
        raise ValueError(f"trainable must be None, 'all' or a list of initializer name prefixes, got {trainable!r}")
    prefixes = [p.rstrip("./") for p in trainable]
    for p in prefixes:
        if not any(_matches(n, p) for n in names):
            tops = sorted({re.split(r"[./]", n)[0] for n in names})
            raise ValueError(f"trainable prefix {p!r} matches no weight of the ONNX model; its weights' "
                             f"top-level names are {tops[:20]}")
    return lambda n: any(_matches(n, p) for p in prefixes)


