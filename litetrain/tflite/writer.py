"""Writing a Program as one TensorFlow Lite FlatBuffers file: subgraphs, signatures, variables.

Function i becomes subgraph i. Builtin operators get their options tables built generically from
the op's `Builtin(code, options, fields)` entry in the registry (no per-op code here); custom ops
carry their attributes as a FlexBuffer map. Constant data is 16-byte aligned so the reader can
view it in place. What TFLite has no field for (variable flags, signature defaults) goes in the
"litetrain_program" metadata entry as JSON.
"""
from __future__ import annotations

import json

import flatbuffers
import numpy as np
from flatbuffers import flexbuffers

from .. import ops  # noqa: F401  (registers the op families whose file mappings are written)
from ..core.ir import DTYPES, Function, Program, format_shape, numpy_dtype
from ..core.registry import Builtin, Custom, get_op
from ..ops.quantization import TENSOR_ATTRS
from .quantization import quantization_table, tensor_quantization
from .schema import (DATA_ALIGNMENT, ENUM_KINDS, FILE_IDENTIFIER, MIN_RUNTIME_METADATA, MIN_RUNTIME_VERSION,
                     PLACEHOLDER_FOR_GREATER_OP_CODES, PROGRAM_METADATA, SCHEMA_VERSION, camel, enum_members,
                     options_union, schema_module)


# -- data encoding ---------------------------------------------------------------------------------
def encode_strings(data) -> bytes:
    """TFLite's string tensor layout: int32 count, int32 offsets[count + 1], then the bytes."""
    items = [x if isinstance(x, bytes) else str(x).encode("utf-8")
             for x in np.asarray(data, dtype=object).reshape(-1)]
    header = 4 * (len(items) + 2)
    offsets = np.cumsum([header] + [len(x) for x in items], dtype=np.int64)
    if offsets[-1] >= 2 ** 31:
        raise ValueError("string tensor is larger than 2 GB")
    return (np.asarray([len(items)], "<i4").tobytes() + offsets.astype("<i4").tobytes()
            + b"".join(items))


def constant_bytes(info, where: str) -> bytes:
    """The raw little-endian bytes of a constant tensor, after checking it matches its TensorInfo."""
    if None in info.shape:
        raise ValueError(f"{where}: constant has unknown dims {format_shape(info.shape)}")
    data = np.asarray(info.data) if info.dtype != "string" else np.asarray(info.data, dtype=object)
    if tuple(data.shape) != tuple(info.shape):
        raise ValueError(f"{where}: constant data has shape {list(data.shape)} but the tensor is "
                         f"{format_shape(info.shape)}")
    if info.dtype == "string":
        return encode_strings(data)
    if DTYPES[info.dtype][0] is None:
        raise ValueError(f"{where}: a {info.dtype} tensor cannot hold constant data")
    want = numpy_dtype(info.dtype)
    if data.dtype != want:
        raise ValueError(f"{where}: constant data is {data.dtype} but the tensor is {info.dtype}")
    return np.ascontiguousarray(data, dtype=want.newbyteorder("<")).tobytes()


def json_values(array: np.ndarray, dtype: str):
    if dtype == "string":
        flat = [v.decode("utf-8") if isinstance(v, bytes) else str(v)
                for v in np.asarray(array, dtype=object).reshape(-1)]
        return np.array(flat, dtype=object).reshape(np.shape(array)).tolist()
    return np.asarray(array).tolist()


def program_json(program: Program) -> bytes:
    """What TFLite has no field for: variable flags, the init function, signature defaults."""
    variables = [{"name": v.name, "dtype": v.dtype, "shape": [None if d is None else int(d) for d in v.shape],
                  "trainable": bool(v.trainable), "kind": v.kind} for v in program.variables.values()]
    signatures = {}
    for sig in program.signatures:
        defaults = {}
        for name, value in sig.defaults.items():
            arr = np.asarray(value, dtype=object) if isinstance(value, (bytes, str)) else np.asarray(value)
            dtype = "string" if arr.dtype.kind in "SUO" else arr.dtype.name
            defaults[name] = {"dtype": dtype, "shape": list(arr.shape), "values": json_values(arr, dtype)}
        signatures[sig.key] = {"defaults": defaults}
    init = program.init_function
    doc = {"format": 1, "variables": variables, "init_function": None if init is None else int(init),
           "signatures": signatures}
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


def _flex_plain(value):
    """Attribute values as FlexBuffers can hold them (tuples become lists, NumPy scalars numbers)."""
    if isinstance(value, (list, tuple)):
        return [_flex_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _flex_plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return _flex_plain(value.tolist())
    return value


# -- the writer ------------------------------------------------------------------------------------
class _ModelWriter:
    def __init__(self, program: Program):
        self.program = program
        data_bytes = sum(getattr(t.data, "nbytes", 0) + DATA_ALIGNMENT for f in program.functions
                         for t in f.tensors if t.data is not None)
        self.b = flatbuffers.Builder(min(data_bytes + 65536, 2 ** 31 - 1))  # no regrowth copies
        self.buffers: list[bytes | None] = [None]  # buffer 0: the empty sentinel
        self._buffer_index: dict[bytes, int] = {}
        self.opcodes: list[tuple] = []
        self._opcode_index: dict[tuple, int] = {}

    # small FlatBuffers helpers
    def int32_vector(self, values, where: str):
        try:
            arr = np.asarray(list(values), dtype=np.int64)
            if arr.size and (arr.min() < -2 ** 31 or arr.max() >= 2 ** 31):
                raise OverflowError("value out of int32 range")
        except (TypeError, ValueError, OverflowError) as e:
            raise ValueError(f"{where}: {list(values)} is not a list of int32 ({e})") from None
        return self.b.CreateNumpyVector(arr.astype("<i4"))

    def offset_vector(self, offsets):
        self.b.StartVector(4, len(offsets), 4)
        for off in reversed(offsets):
            self.b.PrependUOffsetTRelative(off)
        return self.b.EndVector()

    def aligned_bytes(self, data: bytes):
        """A [ubyte] vector whose first byte is DATA_ALIGNMENT-aligned in the finished file."""
        b = self.b
        b.StartVector(1, len(data), DATA_ALIGNMENT)
        b.head = b.Head() - len(data)
        b.Bytes[b.head:b.head + len(data)] = data
        return b.EndVector()

    def add_buffer(self, data: bytes, share: bool = True) -> int:
        if share and data in self._buffer_index:
            return self._buffer_index[data]
        self.buffers.append(data)
        if share:
            self._buffer_index[data] = len(self.buffers) - 1
        return len(self.buffers) - 1

    def opcode(self, key: tuple) -> int:
        if key not in self._opcode_index:
            self._opcode_index[key] = len(self.opcodes)
            self.opcodes.append(key)
        return self._opcode_index[key]

    # tables
    def tensor(self, fn: Function, index: int, fi: int, unranked: bool = False, quant=None):
        info = fn.tensors[index]
        where = f"function {fi} ({fn.name}) tensor {index} {info.name!r}"
        if info.dtype not in DTYPES:
            raise ValueError(f"{where}: unknown dtype {info.dtype!r}")
        for d in info.shape:
            if d is not None and (not isinstance(d, (int, np.integer)) or d < 0):
                raise ValueError(f"{where}: bad dim {d!r} in shape {info.shape}")
        buffer = 0
        if info.data is not None:
            buffer = self.add_buffer(constant_bytes(info, where), share=True)
        name = self.b.CreateString(info.name)
        shape = self.int32_vector([] if unranked else [1 if d is None else int(d) for d in info.shape], where)
        signature = None
        if None in info.shape:
            signature = self.int32_vector([-1 if d is None else int(d) for d in info.shape], where)
        quantization = quantization_table(self.b, quant) if quant is not None else None
        T = schema_module("Tensor")
        T.TensorStart(self.b)
        T.TensorAddShape(self.b, shape)
        T.TensorAddType(self.b, DTYPES[info.dtype][1])
        T.TensorAddBuffer(self.b, buffer)
        T.TensorAddName(self.b, name)
        if signature is not None:
            T.TensorAddShapeSignature(self.b, signature)
        if quantization is not None:
            T.TensorAddQuantization(self.b, quantization)
        return T.TensorEnd(self.b)

    def builtin_options(self, spec: Builtin, attrs: dict, defaults: dict, where: str):
        extra = [k for k in attrs if k not in spec.fields and k not in TENSOR_ATTRS and attrs[k] != defaults.get(k)]
        if extra:
            raise ValueError(f"{where}: attribute(s) {extra} have no field in the file's "
                             f"{spec.options or 'operator (it has no options table)'}")
        if spec.options is None:
            return None
        mod = schema_module(spec.options)
        values = {}
        for attr, kind in spec.fields.items():  # strings and vectors go before the table starts
            value = attrs.get(attr, defaults.get(attr))
            if value is None:
                continue
            try:
                values[attr] = self.option_value(kind, value)
            except (KeyError, ValueError, TypeError) as e:
                raise ValueError(f"{where}: attribute {attr}={value!r} ({kind}): {e}") from None
        b = self.b
        b.ForceDefaults(True)  # a value set in the IR is always present in the file
        try:
            getattr(mod, f"{spec.options}Start")(b)
            for attr, value in values.items():
                adder = getattr(mod, f"{spec.options}Add{camel(attr)}", None)
                if adder is None:
                    raise ValueError(f"{where}: {spec.options} has no field {camel(attr)}")
                try:
                    adder(b, value)
                except (TypeError, ValueError) as e:  # out of the field's integer range
                    raise ValueError(f"{where}: attribute {attr}={attrs.get(attr)!r} does not fit "
                                     f"{spec.options}.{camel(attr)}: {e}") from None
            return getattr(mod, f"{spec.options}End")(b)
        finally:
            b.ForceDefaults(False)

    def option_value(self, kind: str, value):
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            return bool(value)
        if kind == "str":
            return self.b.CreateString(str(value))
        if kind == "ints":
            return self.int32_vector(tuple(value), "ints attribute")
        if kind == "dtype":
            if value not in DTYPES:
                raise ValueError(f"unknown dtype; known: {', '.join(DTYPES)}")
            return DTYPES[value][1]
        if kind in ENUM_KINDS:
            members = enum_members(ENUM_KINDS[kind])
            if value not in members:
                raise ValueError(f"not a {ENUM_KINDS[kind]}; known: {', '.join(members)}")
            return members[value]
        raise ValueError(f"unknown field kind {kind!r}")

    def operator(self, fn: Function, fi: int, ni: int, node):
        where = f"function {fi} ({fn.name}) node {ni} ({node.op})"
        try:
            opdef = get_op(node.op)
        except KeyError as e:
            raise ValueError(f"{where}: {e.args[0]}") from None
        n = len(fn.tensors)
        for i in node.inputs:
            if not -1 <= i < n:
                raise ValueError(f"{where}: input tensor index {i} is out of range (function has {n})")
        for i in node.outputs:
            if not 0 <= i < n:
                raise ValueError(f"{where}: output tensor index {i} is out of range (function has {n})")
        spec = opdef.tflite
        options = custom = None
        if isinstance(spec, Builtin):
            code = enum_members("BuiltinOperator").get(spec.code)
            if code is None:
                raise ValueError(f"{where}: op {node.op!r} maps to builtin {spec.code!r}, which the "
                                 f"TensorFlow Lite schema does not have")
            opcode = self.opcode((code, None, spec.version))
            options = self.builtin_options(spec, node.attrs, opdef.attrs, where)
        elif isinstance(spec, Custom):
            opcode = self.opcode((enum_members("BuiltinOperator")["CUSTOM"], spec.name, 1))
            if spec.encode is not None:  # the op family's own options format (e.g. Flex NodeDefs)
                try:
                    custom = self.b.CreateByteVector(bytes(spec.encode(node.attrs)))
                except Exception as e:
                    raise ValueError(f"{where}: attributes cannot be written as {spec.name} options: {e}") from None
            elif node.attrs:
                try:
                    custom = self.b.CreateByteVector(bytes(flexbuffers.Dumps(_flex_plain(node.attrs))))
                except Exception as e:
                    raise ValueError(f"{where}: attributes cannot be written as a FlexBuffer map: {e}") from None
        else:
            raise ValueError(f"{where}: op {node.op!r} has no TensorFlow Lite mapping")
        inputs = self.int32_vector(node.inputs, where)
        outputs = self.int32_vector(node.outputs, where)
        O = schema_module("Operator")
        O.OperatorStart(self.b)
        O.OperatorAddOpcodeIndex(self.b, opcode)
        O.OperatorAddInputs(self.b, inputs)
        O.OperatorAddOutputs(self.b, outputs)
        if options is not None:
            which, union = options_union(spec.options)
            if which == 1:
                O.OperatorAddBuiltinOptionsType(self.b, union)
                O.OperatorAddBuiltinOptions(self.b, options)
            else:
                O.OperatorAddBuiltinOptions2Type(self.b, union)
                O.OperatorAddBuiltinOptions2(self.b, options)
        if custom is not None:
            O.OperatorAddCustomOptions(self.b, custom)
            O.OperatorAddCustomOptionsFormat(self.b, enum_members("CustomOptionsFormat")["FLEXBUFFERS"])
        return O.OperatorEnd(self.b)

    def subgraph(self, fi: int, fn: Function):
        n = len(fn.tensors)
        for what, indices in (("input", fn.inputs), ("output", fn.outputs)):
            for i in indices:
                if not 0 <= i < n:
                    raise ValueError(f"function {fi} ({fn.name}): {what} tensor index {i} is out of range")
        # LiteRT resizes a READ_VARIABLE output only when the file gives it no dims: so a read of a
        # resizable variable (unknown dims) is written with an empty shape and its shape_signature
        unranked = {o for node in fn.nodes if node.op == "read_variable" for o in node.outputs
                    if None in fn.tensors[o].shape}
        quants = tensor_quantization(fn)  # quantized ops' parameters, stored on their tensors
        tensors = [self.tensor(fn, i, fi, i in unranked, quants.get(i)) for i in range(n)]
        operators = [self.operator(fn, fi, ni, node) for ni, node in enumerate(fn.nodes)]
        tensors_vec = self.offset_vector(tensors)
        operators_vec = self.offset_vector(operators)
        inputs = self.int32_vector(fn.inputs, f"function {fi}")
        outputs = self.int32_vector(fn.outputs, f"function {fi}")
        name = self.b.CreateString(fn.name)
        S = schema_module("SubGraph")
        S.SubGraphStart(self.b)
        S.SubGraphAddTensors(self.b, tensors_vec)
        S.SubGraphAddInputs(self.b, inputs)
        S.SubGraphAddOutputs(self.b, outputs)
        S.SubGraphAddOperators(self.b, operators_vec)
        S.SubGraphAddName(self.b, name)
        return S.SubGraphEnd(self.b)

    def tensor_map(self, name: str, index: int):
        M = schema_module("TensorMap")
        s = self.b.CreateString(name)
        M.TensorMapStart(self.b)
        M.TensorMapAddName(self.b, s)
        M.TensorMapAddTensorIndex(self.b, index)
        return M.TensorMapEnd(self.b)

    def signature(self, sig):
        functions = self.program.functions
        if not 0 <= sig.function < len(functions):
            raise ValueError(f"signature {sig.key!r} names function {sig.function}; the program has "
                             f"{len(functions)}")
        n = len(functions[sig.function].tensors)
        maps = {}
        for what, names in (("inputs", sig.inputs), ("outputs", sig.outputs)):
            for name, i in names.items():
                if not 0 <= i < n:
                    raise ValueError(f"signature {sig.key!r} {what[:-1]} {name!r}: tensor index {i} is "
                                     f"out of range")
            maps[what] = self.offset_vector([self.tensor_map(k, i) for k, i in names.items()])
        key = self.b.CreateString(sig.key)
        D = schema_module("SignatureDef")
        D.SignatureDefStart(self.b)
        D.SignatureDefAddInputs(self.b, maps["inputs"])
        D.SignatureDefAddOutputs(self.b, maps["outputs"])
        D.SignatureDefAddSignatureKey(self.b, key)
        D.SignatureDefAddSubgraphIndex(self.b, sig.function)
        return D.SignatureDefEnd(self.b)

    def operator_code(self, key: tuple):
        code, custom_name, version = key
        C = schema_module("OperatorCode")
        name = self.b.CreateString(custom_name) if custom_name is not None else None
        C.OperatorCodeStart(self.b)
        C.OperatorCodeAddDeprecatedBuiltinCode(self.b, min(code, PLACEHOLDER_FOR_GREATER_OP_CODES))
        C.OperatorCodeAddBuiltinCode(self.b, code)
        C.OperatorCodeAddVersion(self.b, version)
        if name is not None:
            C.OperatorCodeAddCustomCode(self.b, name)
        return C.OperatorCodeEnd(self.b)

    def metadata_entry(self, name: str, data: bytes):
        index = self.add_buffer(bytes(data), share=False)
        s = self.b.CreateString(name)
        M = schema_module("Metadata")
        M.MetadataStart(self.b)
        M.MetadataAddName(self.b, s)
        M.MetadataAddBuffer(self.b, index)
        return M.MetadataEnd(self.b)

    def buffer(self, data: bytes | None):
        B = schema_module("Buffer")
        vec = self.aligned_bytes(data) if data else None
        B.BufferStart(self.b)
        if vec is not None:
            B.BufferAddData(self.b, vec)
        return B.BufferEnd(self.b)

    def write(self) -> bytes:
        p = self.program
        subgraphs = [self.subgraph(i, fn) for i, fn in enumerate(p.functions)]
        signatures = [self.signature(sig) for sig in p.signatures]
        entries = dict(p.metadata)
        for reserved in (PROGRAM_METADATA,):
            entries.pop(reserved, None)
        entries.setdefault(MIN_RUNTIME_METADATA, MIN_RUNTIME_VERSION.ljust(16, b"\0"))
        entries[PROGRAM_METADATA] = program_json(p)
        metadata = [self.metadata_entry(k, v) for k, v in entries.items()]
        opcodes = [self.operator_code(k) for k in self.opcodes]
        buffers = [self.buffer(d) for d in self.buffers]
        vectors = {"OperatorCodes": self.offset_vector(opcodes), "Subgraphs": self.offset_vector(subgraphs),
                   "Buffers": self.offset_vector(buffers), "Metadata": self.offset_vector(metadata),
                   "SignatureDefs": self.offset_vector(signatures)}
        description = self.b.CreateString(p.description or "")
        M = schema_module("Model")
        M.ModelStart(self.b)
        M.ModelAddVersion(self.b, SCHEMA_VERSION)
        M.ModelAddDescription(self.b, description)
        for field, vec in vectors.items():
            getattr(M, f"ModelAdd{field}")(self.b, vec)
        model = M.ModelEnd(self.b)
        self.b.Finish(model, FILE_IDENTIFIER)
        return bytes(self.b.Output())


def write_model(program: Program) -> bytes:
    """The Program as the bytes of one .tflite file (FlatBuffers, TensorFlow Lite schema v3)."""
    try:
        return _ModelWriter(program).write()
    except flatbuffers.builder.BuilderSizeError:
        raise ValueError("the model is larger than 2 GB, more than one FlatBuffers file can hold") from None
