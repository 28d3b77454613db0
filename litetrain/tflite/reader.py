"""Reading a .tflite file into a Program, treating the file as untrusted input.

Every index (buffer, tensor, operator code, subgraph), every count and every constant's byte size
is checked against the file before it is used; any problem raises one InvalidModelError that says
what is wrong and where (subgraph i, operator j, tensor k). Constant data are read-only NumPy views
on the file's bytes (no copy). Operators map back to registered ops through the registry's
`tflite` entries, and their options are read through the same `fields` tables the writer uses.
"""
from __future__ import annotations

import json
import struct

import numpy as np
from flatbuffers import flexbuffers

from .. import ops  # noqa: F401  (registers the op families whose file mappings are read)
from ..core.ir import DTYPE_FROM_CODE, DTYPES, Function, Node, Program, Signature, TensorInfo, Variable, numpy_dtype
from ..core.registry import OPS, Builtin, Custom
from ..ops.quantization import QUANTIZED
from .quantization import quantized_node, read_tensor_quantization
from .schema import (ENUM_KINDS, FILE_IDENTIFIER, MIN_RUNTIME_METADATA, PROGRAM_METADATA, SCHEMA_VERSION, camel,
                     enum_members, enum_names, field_slot, options_union, schema_module)
from .variables import assigned_constants, derive_variables, empty_initial, init_from_call_once

MAX_FLEX_ITEMS = 100_000  # custom options are small; this bounds nested-reference blow-ups
MAX_FLEX_DEPTH = 32
MAX_CALL_DEPTH = 32  # subgraphs calling subgraphs (CALL_ONCE, WHILE, IF, ...): nesting bound
READ_BUDGET = 4  # all vectors read may add up to this many times the file's bytes (shared vectors
# are legal FlatBuffers, but a hostile file could point thousands of tables at one huge vector)


class InvalidModelError(ValueError):
    """The file is not a valid TensorFlow Lite model; the message says what and where."""


class UnsupportedOpError(InvalidModelError):
    """The model uses operators litetrain has no definition for; the message lists them."""


def _op_tables():
    """(builtin operator name -> op name, custom code -> op name) from the registry."""
    builtins, customs = {}, {}
    for name, opdef in OPS.items():
        if name in QUANTIZED.values():  # picked by the node's tensors, not by its operator code
            continue
        if isinstance(opdef.tflite, Builtin):
            builtins.setdefault(opdef.tflite.code, name)
        elif isinstance(opdef.tflite, Custom):
            customs.setdefault(opdef.tflite.name, name)
    return builtins, customs


def read_model(data) -> Program:
    """The Program stored in a .tflite file's bytes. Raises InvalidModelError for a bad file."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"read_model takes the file's bytes, got {type(data).__name__}")
    reader = _ModelReader(data)
    try:
        return reader.read()
    except InvalidModelError:
        raise
    except Exception as e:  # a malformed offset deep in the FlatBuffers accessors
        if isinstance(e, (struct.error, TypeError)) or "buffer is smaller" in str(e):
            what = "an offset or a length points outside the file"  # struct.error, or flatbuffers' range checks
        else:
            what = "the file's tables are malformed"
        raise InvalidModelError(f"{reader.where}: {what} ({type(e).__name__}: {e})") from e


class _ModelReader:
    def __init__(self, data):
        self.data = data
        self.size = data.nbytes if isinstance(data, memoryview) else len(data)
        self.where = "the file header"
        self._spans: dict[int, tuple[int, int] | None] = {}
        self.unsupported: dict[str, list] = {}
        self.calls: dict[int, set[int]] = {}  # subgraph -> subgraphs its operators call
        self.budget = READ_BUDGET * self.size + 4096  # bytes of vectors left to read (linear work)

    def fail(self, message: str):
        raise InvalidModelError(f"{self.where}: {message}")

    def count(self, n: int, what: str, elem_size: int = 4) -> int:
        if n < 0 or n * elem_size > self.size:
            self.fail(f"{what} count {n} cannot fit in a {self.size}-byte file")
        self.budget -= n * elem_size
        if self.budget < 0:
            self.fail(f"the file's vectors add up to more than {READ_BUDGET} times its {self.size} bytes "
                      "(tables share vectors beyond any real model's need)")
        return n

    def string(self, obj, table: str, field: str) -> str:
        """A string field, checked to lie inside the file (the generated accessors truncate silently)."""
        offset = obj._tab.Offset(4 + 2 * field_slot(table, field)[0])
        if not offset:
            return ""
        at = obj._tab.Pos + offset
        at += struct.unpack_from("<I", self.data, at)[0]
        length = struct.unpack_from("<I", self.data, at)[0] if at + 4 <= self.size else self.size
        if at + 4 + length + 1 > self.size:  # + 1: the NUL FlatBuffers writes after every string
            self.fail(f"{table}.{field} runs past the end of the file")
        return self.text(bytes(self.data[at + 4:at + 4 + length]))

    def text(self, raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.fail(f"string {raw[:40]!r} is not UTF-8")

    def ints(self, table, field: str, what: str) -> list[int]:
        if getattr(table, f"{field}IsNone")():
            return []
        self.count(getattr(table, f"{field}Length")(), what)
        return [int(v) for v in getattr(table, f"{field}AsNumpy")()]

    def check_index(self, i: int, n: int, what: str, allow_absent: bool = False):
        if not (-1 if allow_absent else 0) <= i < n:
            self.fail(f"{what} {i} is out of range (there are {n})")

    # -- the model ---------------------------------------------------------------------------------
    def read(self) -> Program:
        if self.size < 8:
            self.fail(f"not a TensorFlow Lite model: the file has only {self.size} bytes")
        ident = bytes(self.data[4:8])
        if ident != FILE_IDENTIFIER:
            self.fail(f"not a TensorFlow Lite model: file identifier is {ident!r}, expected {FILE_IDENTIFIER!r}")
        if struct.unpack_from("<I", self.data, 0)[0] + 4 > self.size:
            self.fail("the root table offset points past the end of the file")
        self.model = model = schema_module("Model").Model.GetRootAs(self.data, 0)
        if model.Version() != SCHEMA_VERSION:
            self.fail(f"schema version {model.Version()}, expected {SCHEMA_VERSION}")
        self.where = "the model"
        self.num_buffers = self.count(model.BuffersLength(), "buffer")
        self.op_tables = _op_tables()
        self.opcodes = [self.operator_code(i) for i in range(self.count(model.OperatorCodesLength(), "operator code"))]
        self.where = "the model"
        self.num_subgraphs = self.count(model.SubgraphsLength(), "subgraph")
        if self.num_subgraphs == 0:
            self.fail("the model has no subgraphs")
        functions = [self.function(i) for i in range(self.num_subgraphs)]
        if self.unsupported:
            uses = "; ".join(f"{label} (subgraph {where[0][0]} operator {where[0][1]}"
                             + (f", {len(where)} uses" if len(where) > 1 else "") + ")"
                             for label, where in self.unsupported.items())
            raise UnsupportedOpError(f"the model uses operators litetrain does not support: {uses}")
        self.where = "the subgraph calls"
        self.check_calls()
        self.where = "the model description"
        program = Program(functions=functions, description=self.string(model, "Model", "description"))
        doc = self.metadata(program)
        program.signatures = self.signatures(functions)
        self.where = f"metadata {PROGRAM_METADATA!r}"
        if doc is not None:
            self.apply_program_json(program, doc)
        else:
            program.init_function = init_from_call_once(functions)
            program.variables = derive_variables(functions, program.init_function)
        return program

    def operator_code(self, i: int):
        self.where = f"operator code {i}"
        oc = self.model.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        builtins, customs = self.op_tables
        if code == enum_members("BuiltinOperator")["CUSTOM"]:
            name = self.string(oc, "OperatorCode", "custom_code")
            if name not in customs and name.startswith("Flex"):  # TensorFlow's ops: registered on first need
                from ..ops import tf  # noqa: F401
                self.op_tables = builtins, customs = _op_tables()
            return customs.get(name), f"custom op {name!r}"
        name = enum_names("BuiltinOperator").get(code)
        return builtins.get(name), name or f"builtin operator code {code}"

    def buffer_span(self, index: int):
        """(start, length) of buffer `index`'s data in the file, or None when it is empty."""
        if index in self._spans:
            return self._spans[index]
        buf = self.model.Buffers(index)
        offset, size = buf.Offset(), buf.Size()
        if offset > 1:  # data stored after the FlatBuffer (models larger than 2 GB)
            span = (offset, size)
        else:
            field = buf._tab.Offset(4)
            span = (buf._tab.Vector(field), buf._tab.VectorLen(field)) if field else None
        if span is not None and span[0] + span[1] > self.size:
            self.fail(f"buffer {index} ({span[1]} bytes at offset {span[0]}) runs past the end of the "
                      f"{self.size}-byte file")
        self._spans[index] = span if span and span[1] else None
        return self._spans[index]

    # -- subgraphs ---------------------------------------------------------------------------------
    def function(self, si: int) -> Function:
        self.where = f"subgraph {si}"
        sg = self.model.Subgraphs(si)
        fn = Function(self.string(sg, "SubGraph", "name") or f"subgraph_{si}")
        nt = self.count(sg.TensorsLength(), "tensor")
        for what in ("Inputs", "Outputs"):
            indices = self.ints(sg, what, f"subgraph {what.lower()}")
            for i in indices:
                self.check_index(i, nt, f"subgraph {what.lower()[:-1]} tensor index")
            setattr(fn, what.lower(), indices)
        operators = []
        for oi in range(self.count(sg.OperatorsLength(), "operator")):
            self.where = f"subgraph {si} operator {oi}"
            op = sg.Operators(oi)
            opcode = op.OpcodeIndex()
            self.check_index(opcode, len(self.opcodes), "operator code index")
            self.where += f" ({self.opcodes[opcode][1]})"
            inputs, outputs = self.ints(op, "Inputs", "input"), self.ints(op, "Outputs", "output")
            for i in inputs:
                self.check_index(i, nt, "input tensor index", allow_absent=True)
            for i in outputs:
                self.check_index(i, nt, "output tensor index")
            operators.append((op, opcode, inputs, outputs))
        produced = {i for *_, outs in operators for i in outs} | set(fn.inputs)
        fn.tensors = [self.tensor(si, ti, sg.Tensors(ti), ti not in produced) for ti in range(nt)]
        self.check_order(si, fn, operators)
        for oi, (op, opcode, inputs, outputs) in enumerate(operators):
            node = self.node(si, oi, op, opcode, inputs, outputs)
            if node is not None:
                if node.op == "cast" and node.attrs.get("out_data_type") is None and len(outputs) == 1:
                    # TensorFlow's converter writes CAST without CastOptions: the tensors give the types
                    node.attrs["in_data_type"] = fn.tensors[inputs[0]].dtype if inputs and inputs[0] >= 0 else None
                    node.attrs["out_data_type"] = fn.tensors[outputs[0]].dtype
                problem = quantized_node(fn, node)  # a node on quantized tensors runs its quantized kernel
                if problem is not None:
                    self.unsupported.setdefault(problem, []).append((si, oi))
                fn.nodes.append(node)
        return fn

    def tensor(self, si: int, ti: int, t, may_be_constant: bool) -> TensorInfo:
        self.where = f"subgraph {si} tensor {ti}"
        name = self.string(t, "Tensor", "name")
        self.where += f" {name!r}"
        dtype = DTYPE_FROM_CODE.get(t.Type())
        if dtype is None:
            label = enum_names("TensorType").get(t.Type(), "an unknown type")
            self.fail(f"TensorType {t.Type()} ({label}) is not supported")
        shape = self.ints(t, "Shape", "shape dim")
        if any(d < 0 for d in shape):
            self.fail(f"negative dim in shape {shape}")
        dims = tuple(shape)
        if not t.ShapeSignatureIsNone():
            signature = self.ints(t, "ShapeSignature", "shape_signature dim")
            # an empty shape with a signature: a dynamic tensor (a read of a resizable variable)
            if (shape and len(signature) != len(shape)) or any(d < -1 for d in signature):
                self.fail(f"shape_signature {signature} does not match shape {shape}")
            dims = tuple(None if d == -1 else d for d in signature)
        quant = read_tensor_quantization(self, t, dtype, dims)  # what the integers stand for
        sparsity = t.Sparsity()  # a sparse constant: expanded to dense below (its DENSIFY is then a copy)
        if t.IsVariable():
            self.fail("is_variable tensors (TFLite's older stateful tensors) are not supported; "
                      "litetrain uses resource variables")
        buffer = t.Buffer()
        self.check_index(buffer, self.num_buffers, "buffer index")
        span = self.buffer_span(buffer)
        data = None
        empty_constant = buffer != 0 and may_be_constant and None not in dims and 0 in dims
        if sparsity is not None:
            data = self.sparse_constant(dtype, dims, buffer, span, sparsity)
        elif span is not None or empty_constant:
            data = self.constant(dtype, dims, buffer, span or (0, 0))
        return TensorInfo(name, dtype, dims, data, quant)

    def sparse_constant(self, dtype: str, dims: tuple, buffer: int, span, sparsity) -> np.ndarray:
        from .sparsity import densify
        if span is None or None in dims or dtype not in DTYPES or DTYPES[dtype][0] is None or dtype == "string":
            self.fail(f"sparse tensor (buffer {buffer}) must be a numeric constant of known shape")
        dt = numpy_dtype(dtype).newbyteorder("<")
        if span[1] % dt.itemsize:
            self.fail(f"sparse buffer {buffer} holds {span[1]} bytes, not a whole number of {dtype}")
        values = np.frombuffer(self.data, dtype=dt, count=span[1] // dt.itemsize, offset=span[0])
        try:
            return densify(values, dims, sparsity)
        except ValueError as e:
            self.fail(f"bad sparsity parameters: {e}")

    def constant(self, dtype: str, dims: tuple, buffer: int, span: tuple[int, int]) -> np.ndarray:
        if None in dims:
            self.fail(f"constant (buffer {buffer}) has unknown dims")
        n = 1
        for d in dims:
            n *= d
        start, length = span
        if dtype == "string":
            return self.strings(dims, n, buffer, start, length)
        if DTYPES[dtype][0] is None:
            self.fail(f"a {dtype} tensor cannot hold constant data (buffer {buffer})")
        dt = numpy_dtype(dtype).newbyteorder("<")
        if length != n * dt.itemsize:
            self.fail(f"buffer {buffer} holds {length} bytes, but {dtype}{list(dims)} needs {n * dt.itemsize}")
        arr = np.frombuffer(self.data, dtype=dt, count=n, offset=start).reshape(dims)
        if arr.flags.writeable:
            arr.flags.writeable = False
        return arr

    def strings(self, dims, n, buffer, start, length) -> np.ndarray:
        if length < 4:
            self.fail(f"string buffer {buffer} has {length} bytes, too few for its header")
        count = struct.unpack_from("<i", self.data, start)[0]
        header = 4 * (count + 2)
        if count != n or header > length:
            self.fail(f"string buffer {buffer} holds {count} strings, the shape {list(dims)} needs {n}")
        offsets = np.frombuffer(self.data, dtype="<i4", count=count + 1, offset=start + 4).astype(np.int64)
        if offsets[0] < header or offsets[-1] > length or np.any(np.diff(offsets) < 0):
            self.fail(f"string buffer {buffer} has bad offsets")
        raw = bytes(self.data[start:start + length])
        out = np.empty(n, dtype=object)
        for i in range(n):
            out[i] = raw[offsets[i]:offsets[i + 1]]
        return out.reshape(dims)

    # -- operators ---------------------------------------------------------------------------------
    def node(self, si: int, oi: int, op, opcode: int, inputs, outputs) -> Node | None:
        opname, label = self.opcodes[opcode]
        self.where = f"subgraph {si} operator {oi} ({label})"
        if opname is None:
            self.unsupported.setdefault(label, []).append((si, oi))
            return None
        opdef = OPS[opname]
        lo, hi = opdef.num_inputs
        if len(inputs) < lo or (hi is not None and len(inputs) > hi):
            takes = f"{lo}" if hi == lo else f"{lo} or more" if hi is None else f"{lo} to {hi}"
            self.fail(f"{len(inputs)} inputs, but {opname} takes {takes}")
        if isinstance(opdef.tflite, Builtin):
            attrs = self.builtin_attrs(op, opdef)
        else:
            attrs = self.custom_attrs(op, opdef.tflite)
        try:
            attrs = opdef.check_attrs(attrs)
        except ValueError as e:
            self.fail(str(e))
        for key, value in attrs.items():  # any op that names subgraphs: CALL_ONCE, WHILE, IF, ...
            if key.endswith("subgraph_index"):
                for v in value if isinstance(value, (tuple, list)) else (value,):
                    if not isinstance(v, int) or isinstance(v, bool):
                        self.fail(f"{key} is {v!r}, not a subgraph index")
                    self.check_index(v, self.num_subgraphs, f"{key}")
                    self.calls.setdefault(si, set()).add(v)
        return Node(opname, inputs, outputs, attrs, where=f"subgraph {si} operator {oi}")

    def builtin_attrs(self, op, opdef) -> dict:
        spec = opdef.tflite
        if spec.options is None:
            return {}
        which, union = options_union(spec.options)
        kind_of = "BuiltinOptions" if which == 1 else "BuiltinOptions2"
        found = op.BuiltinOptionsType() if which == 1 else op.BuiltinOptions2Type()
        table = None
        if found == union:
            tab = op.BuiltinOptions() if which == 1 else op.BuiltinOptions2()
            if tab is not None:
                table = getattr(schema_module(spec.options), spec.options)()
                table.Init(tab.Bytes, tab.Pos)
        elif found != 0:
            self.fail(f"options table is {enum_names(kind_of).get(found, found)}, expected {spec.options}")
        attrs = {}
        for attr, kind in spec.fields.items():
            slot, default = field_slot(spec.options, attr)
            present = table is not None and table._tab.Offset(4 + 2 * slot) != 0
            if not present and opdef.attrs.get(attr, 0) is None:
                attrs[attr] = None  # the IR's "not set"
                continue
            accessor = camel(attr)
            if kind == "ints":
                raw = self.ints(table, accessor, attr) if present else []
            elif kind == "str":
                attrs[attr] = self.string(table, spec.options, attr) if present else ""
                continue
            else:
                raw = getattr(table, accessor)() if present else default
            attrs[attr] = self.option_value(kind, raw, attr)
        return attrs

    def option_value(self, kind: str, raw, attr: str):
        if kind == "int":
            return int(raw)
        if kind == "float":  # the shortest decimal that rounds to the stored float32
            return float(str(np.float32(raw)))
        if kind == "bool":
            return bool(raw)
        if kind == "ints":
            return tuple(raw)
        if kind == "dtype":
            if raw not in DTYPE_FROM_CODE:
                self.fail(f"option {attr} = {raw} is not a supported TensorType")
            return DTYPE_FROM_CODE[raw]
        if kind in ENUM_KINDS:
            name = enum_names(ENUM_KINDS[kind]).get(raw)
            if name is None:
                self.fail(f"option {attr} = {raw} is not a {ENUM_KINDS[kind]}")
            return name
        raise ValueError(f"unknown field kind {kind!r} for option {attr}")

    def custom_attrs(self, op, spec: Custom) -> dict:
        if op.CustomOptionsFormat() != enum_members("CustomOptionsFormat")["FLEXBUFFERS"]:
            self.fail(f"custom_options_format {op.CustomOptionsFormat()} is not FLEXBUFFERS")
        offset, size = op.LargeCustomOptionsOffset(), op.LargeCustomOptionsSize()
        if offset > 1:
            if offset + size > self.size:
                self.fail("large custom options run past the end of the file")
            raw = bytes(self.data[offset:offset + size])
        elif op.CustomOptionsIsNone():
            raw = b""
        else:
            self.count(op.CustomOptionsLength(), "custom options byte", 1)
            raw = op.CustomOptionsAsNumpy().tobytes()
        if spec.decode is not None:  # the op family's own options format (e.g. Flex NodeDefs)
            try:
                return spec.decode(raw)
            except Exception as e:
                self.fail(f"custom options are not valid {spec.name} options ({type(e).__name__}: {e})")
        if not raw:
            return {}
        try:
            value = _flex_value(flexbuffers.GetRoot(bytearray(raw)), [MAX_FLEX_ITEMS], 0)
        except Exception as e:
            self.fail(f"custom options are not a valid FlexBuffer ({type(e).__name__}: {e})")
        if not isinstance(value, dict):
            self.fail(f"custom options hold a {type(value).__name__}, expected a FlexBuffer map")
        return value

    def check_order(self, si: int, fn: Function, operators):
        """Operators run in file order: each input must be a subgraph input, a constant or an
        earlier operator's output, and each subgraph output must be computed by then."""
        ready = set(fn.inputs) | {ti for ti, t in enumerate(fn.tensors) if t.data is not None}
        if len(set(fn.inputs)) != len(fn.inputs):
            self.where = f"subgraph {si}"
            self.fail(f"a tensor is listed twice among the subgraph inputs {fn.inputs}")
        for oi, (_, opcode, inputs, outputs) in enumerate(operators):
            for i in inputs:
                if i >= 0 and i not in ready:
                    self.where = f"subgraph {si} operator {oi} ({self.opcodes[opcode][1]})"
                    self.fail(f"input tensor {i} {fn.tensors[i].name!r} is read before any operator computes it")
            ready.update(outputs)
        for i in fn.outputs:
            if i not in ready:
                self.where = f"subgraph {si}"
                self.fail(f"output tensor {i} {fn.tensors[i].name!r} is never computed")

    def check_calls(self):
        """Subgraph calls must form no cycle (a subgraph may not run itself, directly or not) and
        nest at most MAX_CALL_DEPTH deep, so running a signature always ends."""
        depth: dict[int, int] = {}  # subgraph -> longest call chain below it (when finished)
        for root in sorted(self.calls):
            if root in depth:
                continue
            path, stack = [root], [iter(sorted(self.calls.get(root, ())))]
            while stack:
                callee = next(stack[-1], None)
                if callee is None:
                    done = path.pop()
                    stack.pop()
                    depth[done] = 1 + max((depth[c] for c in self.calls.get(done, ())), default=-1)
                    if depth[done] > MAX_CALL_DEPTH:
                        self.fail(f"subgraph {done} nests subgraph calls {depth[done]} deep; at most "
                                  f"{MAX_CALL_DEPTH} are allowed")
                elif callee in path:
                    cycle = path[path.index(callee):] + [callee]
                    self.fail("subgraphs call each other in a cycle: " + " -> ".join(map(str, cycle)))
                elif callee not in depth:
                    path.append(callee)
                    stack.append(iter(sorted(self.calls.get(callee, ()))))

    # -- model-level tables ------------------------------------------------------------------------
    def metadata(self, program: Program):
        doc = None
        for i in range(self.count(self.model.MetadataLength(), "metadata entry")):
            self.where = f"metadata entry {i}"
            entry = self.model.Metadata(i)
            name = self.string(entry, "Metadata", "name")
            self.where += f" {name!r}"
            self.check_index(entry.Buffer(), self.num_buffers, "buffer index")
            span = self.buffer_span(entry.Buffer())
            raw = bytes(self.data[span[0]:span[0] + span[1]]) if span else b""
            if name == PROGRAM_METADATA:
                try:
                    doc = json.loads(raw.decode("utf-8"))
                except ValueError as e:
                    self.fail(f"is not UTF-8 JSON: {e}")
                if not isinstance(doc, dict):
                    self.fail("is not a JSON object")
            elif name != MIN_RUNTIME_METADATA:  # the writer writes its own
                program.metadata[name] = raw
        return doc

    def signatures(self, functions) -> list[Signature]:
        n = self.count(self.model.SignatureDefsLength(), "signature")
        if n == 0:  # TensorFlow's convention for a file without SignatureDefs
            fn = functions[0]
            self.where = "the default signature (subgraph 0)"
            sig = Signature("serving_default", 0, _names(fn, fn.inputs, "input"), _names(fn, fn.outputs, "output"))
            self.check_signature(sig, fn)
            return [sig]
        result = []
        for i in range(n):
            self.where = f"signature {i}"
            sd = self.model.SignatureDefs(i)
            key = self.string(sd, "SignatureDef", "signature_key")
            self.where += f" {key!r}"
            if any(s.key == key for s in result):
                self.fail("duplicate signature key")
            fi = sd.SubgraphIndex()
            self.check_index(fi, len(functions), "subgraph index")
            maps = {}
            for what in ("Inputs", "Outputs"):
                maps[what] = {}
                for j in range(self.count(getattr(sd, f"{what}Length")(), what.lower())):
                    tm = getattr(sd, what)(j)
                    name = self.string(tm, "TensorMap", "name")
                    if name in maps[what]:
                        self.fail(f"duplicate {what.lower()[:-1]} name {name!r}")
                    self.check_index(tm.TensorIndex(), len(functions[fi].tensors),
                                     f"{what.lower()[:-1]} {name!r} tensor index")
                    maps[what][name] = tm.TensorIndex()
            result.append(Signature(key, fi, maps["Inputs"], maps["Outputs"]))
            self.check_signature(result[-1], functions[fi])
        return result

    def check_signature(self, sig: Signature, fn: Function):
        """A signature names each input of its subgraph exactly once, and only its outputs."""
        if sorted(sig.inputs.values()) != sorted(fn.inputs):
            self.fail(f"the inputs {sig.inputs} are not exactly the subgraph's input tensors {fn.inputs}")
        strays = {k: i for k, i in sig.outputs.items() if i not in fn.outputs}
        if strays:
            self.fail(f"outputs {strays} are not among the subgraph's output tensors {fn.outputs}")

    def apply_program_json(self, program: Program, doc: dict):
        init = doc.get("init_function")
        if init is not None:
            if not isinstance(init, int):
                self.fail(f"init_function {init!r} is not an index")
            self.check_index(init, len(program.functions), "init_function")
        program.init_function = init
        assigned = assigned_constants(program.functions[init]) if init is not None else {}
        for v in doc.get("variables", []):
            try:
                name, dtype, shape = v["name"], v["dtype"], tuple(v["shape"])
                if dtype not in DTYPES or not all(d is None or (isinstance(d, int) and d >= 0) for d in shape):
                    raise ValueError(f"bad dtype or shape {dtype} {list(shape)}")
                initial = assigned[name].data if name in assigned else empty_initial(dtype)
                program.variables[name] = Variable(name, dtype, shape, initial, bool(v.get("trainable", False)),
                                                   str(v.get("kind", "buffer")))
            except (KeyError, TypeError, ValueError) as e:
                self.fail(f"variable entry {v!r} is malformed: {e}")
        for key, entry in (doc.get("signatures") or {}).items():
            try:
                sig = program.signature(key)
            except KeyError as e:
                self.fail(str(e.args[0]))
            for name, d in (entry.get("defaults") or {}).items():
                try:
                    sig.defaults[name] = _default_array(d)
                except (KeyError, TypeError, ValueError) as e:
                    self.fail(f"signature {key!r} default {name!r} is malformed: {e}")


def _flex_value(ref, budget: list, depth: int):
    """A FlexBuffer value as plain Python (vectors as tuples), with bounded work."""
    budget[0] -= 1
    if budget[0] < 0 or depth > MAX_FLEX_DEPTH:
        raise ValueError("custom options are too large or too deeply nested")
    if ref.IsMap:
        m = ref.AsMap
        keys, values = m.Keys, m.Values
        if len(m) > budget[0] or len(keys) != len(m):
            raise ValueError("map is larger than the custom options")
        return {keys[i].AsKey: _flex_value(values[i], budget, depth + 1) for i in range(len(m))}
    if ref.IsVector:
        vec = ref.AsVector
    elif ref.IsTypedVector:
        vec = ref.AsTypedVector
    elif ref.IsFixedTypedVector:
        vec = ref.AsFixedTypedVector
    else:
        value = ref.Value
        return bytes(value) if isinstance(value, (bytearray, memoryview)) else value
    if len(vec) > budget[0]:
        raise ValueError("vector is larger than the custom options")
    return tuple(_flex_value(vec[i], budget, depth + 1) for i in range(len(vec)))


def _default_array(d: dict) -> np.ndarray:
    dtype, shape = d["dtype"], tuple(d["shape"])
    if dtype == "string":
        flat = [s.encode("utf-8") for s in np.asarray(d["values"], dtype=object).reshape(-1)]
        out = np.empty(len(flat), dtype=object)
        out[:] = flat
        return out.reshape(shape)
    return np.asarray(d["values"], dtype=numpy_dtype(dtype)).reshape(shape)


def _names(fn: Function, indices, what: str) -> dict[str, int]:
    names = {}
    for k, i in enumerate(indices):
        name = fn.tensors[i].name
        names[name if name and name not in names else f"{what}_{k}"] = i
    return names
