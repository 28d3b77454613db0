"""Reading an ONNX model for the importer: the `onnx` package (imported here only), the graph's nodes as
plain Python, which initializers become variables (and in which layout), and ONNX's inferred shapes."""
from __future__ import annotations

import ast
import os

import numpy as np

from .graph import Node, OnnxImportError

MIN_OPSET = 13

# inputs of an op that are shapes, axes, pads, scales or indices: an initializer there is a constant
CONST_INPUTS = {
    "Reshape": {1}, "Expand": {1}, "Tile": {1}, "ConstantOfShape": {0}, "Squeeze": {1}, "Unsqueeze": {1},
    "Split": {1}, "Slice": {1, 2, 3, 4}, "Pad": {1, 2, 3}, "Resize": {1, 2, 3}, "Upsample": {1},
    "ReduceMean": {1}, "ReduceSum": {1}, "ReduceMax": {1}, "ReduceMin": {1}, "ReduceProd": {1},
    "ReduceL2": {1}, "ReduceSumSquare": {1}, "Clip": {1, 2}, "Range": {0, 1, 2}, "Gather": {1},
    "OneHot": {1, 2}, "LSTM": {4, 5, 6}, "GRU": {4, 5}, "RNN": {4, 5}, "TopK": {1}, "CumSum": {1},
}
# (op, input index) of a batch norm's running statistics: Buffers, not Params
STATISTICS = {("BatchNormalization", 3), ("BatchNormalization", 4)}
# weight inputs of layers: variables whatever their size (elsewhere one float is a constant)
WEIGHT_INPUTS = {"Conv": {1, 2}, "ConvTranspose": {1, 2}, "Gemm": {1, 2}, "MatMul": {0, 1}, "PRelu": {1},
                 "BatchNormalization": {1, 2, 3, 4}, "LayerNormalization": {1, 2}, "InstanceNormalization": {1, 2},
                 "GroupNormalization": {1, 2}, "LSTM": {1, 2, 3}, "GRU": {1, 2, 3}, "RNN": {1, 2, 3}}

_DTYPES = {1: "float32", 6: "int32", 7: "int32", 9: "bool"}
_DTYPE_NAMES = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 9: "bool", 10: "float16",
                11: "float64", 16: "bfloat16"}


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError("the ONNX importer needs the onnx package: pip install onnx "
                          "(or pip install 'litetrain[onnx]')") from None
    return onnx


def load_model(model_or_path):
    """An onnx.ModelProto from a path, the file's bytes or a ModelProto."""
    onnx = _onnx()
    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path
    if isinstance(model_or_path, (bytes, bytearray)):
        return onnx.load_from_string(bytes(model_or_path))
    if isinstance(model_or_path, (str, os.PathLike)):
        return onnx.load(os.fspath(model_or_path))
    raise TypeError(f"from_onnx needs a path to a .onnx file, its bytes or an onnx.ModelProto, got "
                    f"{type(model_or_path).__name__}")


class InputSpec:
    def __init__(self, name, shape, dtype, onnx_dtype):
        self.name, self.shape, self.dtype, self.onnx_dtype = name, tuple(shape), dtype, onnx_dtype


class Graph:
    """A model's main graph, read: nodes, inputs, output names, initializers (ndarrays), which of them
    are variables ("param" or "buffer") and their storage layouts, ONNX's inferred dims, the opset."""

    def __init__(self, opset):
        self.opset = opset
        self.nodes: list[Node] = []
        self.inputs: list[InputSpec] = []
        self.outputs: list[str] = []
        self.initializers: dict[str, np.ndarray] = {}
        self.variables: dict[str, str] = {}
        self.layouts: dict[str, str] = {}
        self.shapes: dict[str, list] = {}
        self._subgraphs: dict[int, list[Node]] = {}

    def subgraph(self, proto):
        """The nodes of a subgraph attribute (an If's branch), read once."""
        key = id(proto)
        if key not in self._subgraphs:
            self._subgraphs[key] = [_node(n) for n in proto.node]
            for init in proto.initializer:
                self.initializers.setdefault(init.name, _array(init))
        return self._subgraphs[key]

    def all_nodes(self):
        """Every node, those of subgraphs (If branches) included."""
        stack = list(self.nodes)
        while stack:
            node = stack.pop(0)
            yield node
            for value in node.attrs.values():
                if hasattr(value, "node") and hasattr(value, "initializer"):
                    stack.extend(self.subgraph(value))


def read_graph(model) -> Graph:
    """The importer's reading of an onnx.ModelProto (see Graph)."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or opset < MIN_OPSET:
        raise OnnxImportError(f"the model uses opset {opset} of the default ONNX domain; the importer reads opsets "
                              f"{MIN_OPSET} to 21: update it first with onnx.version_converter.convert_version("
                              f"model, 17)")
    g = Graph(opset)
    g.initializers = {init.name: _array(init) for init in model.graph.initializer}
    g.nodes = [_node(n) for n in model.graph.node]
    g.nodes = _identities_as_copies(g)
    for vi in model.graph.input:
        if vi.name not in g.initializers:
            g.inputs.append(_input_spec(vi))
    g.outputs = [o.name for o in model.graph.output]
    g.shapes = _inferred_shapes(model)
    _classify(g)
    return g


def _array(tensor):
    from onnx import numpy_helper
    return np.asarray(numpy_helper.to_array(tensor))


def _attr(a):
    onnx = _onnx()
    if a.type == onnx.AttributeProto.TENSOR:
        return _array(a.t)
    if a.type == onnx.AttributeProto.GRAPH:
        return a.g
    value = onnx.helper.get_attribute_value(a)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode("utf-8", "replace") for v in value]
    return value


def _scope(proto):
    """The module path the torch exporter recorded for a node, if any."""
    for prop in proto.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                names = [n for n in ast.literal_eval(prop.value) if n]
            except (ValueError, SyntaxError):
                return ""
            return names[-2] if len(names) >= 2 else ""
    return ""


def _node(proto):
    return Node(proto, {a.name: _attr(a) for a in proto.attribute}, _scope(proto))


def _identities_as_copies(g):
    """Identity nodes of an initializer become initializers of their own (the legacy torch exporter shares
    one initializer among parameters of equal value through Identity nodes)."""
    kept = []
    for node in g.nodes:
        if node.op == "Identity" and node.inputs and node.inputs[0] in g.initializers and node.outputs:
            g.initializers[node.outputs[0]] = g.initializers[node.inputs[0]].copy()
        else:
            kept.append(node)
    return kept


def _input_spec(vi):
    ttype = vi.type.tensor_type
    if not vi.type.HasField("tensor_type"):
        raise OnnxImportError(f"graph input {vi.name!r} is not a tensor (a sequence or map); the importer takes "
                              "tensor inputs only")
    elem = ttype.elem_type
    if elem not in _DTYPES:
        raise OnnxImportError(f"graph input {vi.name!r} is {_DTYPE_NAMES.get(elem, elem)}; the importer takes "
                              "float32, int64, int32 and bool inputs")
    shape = [d.dim_value if d.HasField("dim_value") else None for d in ttype.shape.dim]
    return InputSpec(vi.name, shape, _DTYPES[elem], _DTYPE_NAMES.get(elem, str(elem)))


def _inferred_shapes(model):
    """{value name: dims (int, or None where unknown)} from ONNX's shape inference (with data propagation,
    so sizes computed from Shape are known where they can be), or from the model's own value_info."""
    onnx = _onnx()
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001  (a model ONNX cannot infer: use what it carries)
        inferred = model
    out = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
    return out


_VIEWS = {"Unsqueeze", "Squeeze", "Reshape", "Flatten", "Transpose", "Identity", "Cast", "Expand"}


def _classify(g):
    """Which float initializers are variables: a layer's weights (also through views: torch's PReLU slope
    reaches PRelu unsqueezed), and those of two or more elements that feed some node's data (not a shape,
    axes or pads input). A batch norm's statistics are Buffers. A kernel used only by 2-D convolutions is
    stored as TFLite wants it (OHWI, or [1, kh, kw, C*M] for a depthwise one)."""
    uses: dict[str, list] = {}
    for node in g.all_nodes():
        for k, name in enumerate(node.inputs):
            uses.setdefault(name, []).append((node, k))

    def weight(name, depth=0):
        return depth < 4 and any(k in WEIGHT_INPUTS.get(n.op, ()) or (
            n.op in _VIEWS and k == 0 and weight(n.outputs[0], depth + 1)) for n, k in uses.get(name, []))

    for name, value in g.initializers.items():
        if value.dtype.kind != "f":
            continue
        data = [(n, k) for n, k in uses.get(name, []) if k not in CONST_INPUTS.get(n.op, ())]
        if not data or (value.size < 2 and not weight(name)):
            continue
        g.variables[name] = "buffer" if all((n.op, k) in STATISTICS for n, k in data) else "param"
        if value.ndim == 4 and all(n.op == "Conv" and k == 1 for n, k in uses[name]):
            groups = {int(n.attr("group", 1)) for n, _ in uses[name]}
            group = groups.pop() if len(groups) == 1 else None
            if group is not None:
                depthwise = group > 1 and value.shape[1] == 1 and value.shape[0] % group == 0
                g.layouts[name] = "dw" if depthwise else "ohwi"
