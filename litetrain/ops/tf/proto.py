"""TensorFlow's protocol buffers without TensorFlow: the wire format, read and written by hand.

Only the few messages that TensorFlow Lite files and TensorFlow checkpoints carry are handled:
NodeDef with its AttrValues (what a Flex op stores), TensorProto and TensorShapeProto, and the
checkpoint headers (BundleHeaderProto, BundleEntryProto, SavedTensorSlices). Field numbers are
those of tensorflow/core/framework/*.proto and tensorflow/core/protobuf/tensor_bundle.proto.
Reading is bounded: a truncated or malformed message raises ProtoError, never loops or allocates
more than its own size.
"""
from __future__ import annotations

import struct

import numpy as np


class ProtoError(ValueError):
    """Bytes that are not the protocol buffer message they should be."""


# TensorFlow DataType enum -> litetrain dtype name (types.proto)
TF_DTYPES = {1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string",
             9: "int64", 10: "bool", 17: "uint16", 19: "float16", 20: "resource", 21: "variant",
             22: "uint32"}
TF_DTYPE_CODES = {v: k for k, v in TF_DTYPES.items()}


# -- the wire format -------------------------------------------------------------------------------
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ProtoError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtoError("varint longer than 10 bytes")


def fields(buf: bytes) -> list[tuple[int, int, object]]:
    """A message's fields in order: (field number, wire type, value). Varints are ints,
    fixed32/64 are raw 4/8 bytes, length-delimited values are bytes."""
    buf = bytes(buf)
    out, pos, n = [], 0, len(buf)
    while pos < n:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ProtoError("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ProtoError(f"unsupported wire type {wire} (field {number})")
        if pos > n:
            raise ProtoError(f"field {number} runs past the end of the message")
        out.append((number, wire, value))
    return out


def by_number(buf: bytes) -> dict[int, list]:
    found: dict[int, list] = {}
    for number, wire, value in fields(buf):
        found.setdefault(number, []).append((wire, value))
    return found


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _ints(entries) -> list[int]:
    """A repeated integer field, packed or not."""
    out = []
    for wire, value in entries:
        if wire == 0:
            out.append(_signed(value))
        elif wire == 2:
            pos = 0
            while pos < len(value):
                v, pos = _varint(value, pos)
                out.append(_signed(v))
        else:
            raise ProtoError(f"integer field has wire type {wire}")
    return out


def _floats(entries, fmt="<f") -> list[float]:
    size = struct.calcsize(fmt)
    out = []
    for wire, value in entries:
        if wire == 2:
            if len(value) % size:
                raise ProtoError("packed floats of a ragged length")
            out.extend(v for (v,) in struct.iter_unpack(fmt, value))
        elif wire in (1, 5):
            out.append(struct.unpack(fmt, value)[0])
        else:
            raise ProtoError(f"float field has wire type {wire}")
    return out


def _one(found, number, default=None):
    entries = found.get(number)
    return entries[-1][1] if entries else default


def _text(raw) -> str:
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise ProtoError(f"string field {bytes(raw)[:40]!r} is not UTF-8") from None


# writing
def _enc_varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def varint_field(number: int, value: int) -> bytes:
    return _enc_varint(number << 3) + _enc_varint(int(value))


def bytes_field(number: int, value) -> bytes:
    value = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    return _enc_varint(number << 3 | 2) + _enc_varint(len(value)) + value


def fixed32_field(number: int, value: int) -> bytes:
    return _enc_varint(number << 3 | 5) + struct.pack("<I", value & 0xFFFFFFFF)


def packed_varints(number: int, values) -> bytes:
    return bytes_field(number, b"".join(_enc_varint(int(v)) for v in values)) if len(values) else b""


# -- TensorShapeProto, TensorProto ------------------------------------------------------------------
def decode_shape(buf: bytes):
    """TensorShapeProto -> tuple of dims (None for -1), or None for unknown rank."""
    found = by_number(buf)
    if _one(found, 3, 0):
        return None
    dims = []
    for _, dim in found.get(2, []):
        size = _one(by_number(dim), 1, 0)
        dims.append(None if _signed(size) == -1 else _signed(size))
    return tuple(dims)


def encode_shape(shape) -> bytes:
    if shape is None:
        return varint_field(3, 1)
    return b"".join(bytes_field(2, varint_field(1, -1 if d is None else int(d)) if d != 0 else b"")
                    for d in shape)


_VAL_FIELDS = {"float32": (5, "f"), "float64": (6, "d"), "int32": (7, "i"), "uint8": (7, "i"),
               "int16": (7, "i"), "int8": (7, "i"), "int64": (10, "i"), "bool": (11, "i"),
               "float16": (13, "i"), "uint32": (16, "i"), "uint16": (7, "i")}


def decode_tensor(buf: bytes, dtype: str | None = None, shape=None, max_bytes: int | None = None) -> np.ndarray:
    """TensorProto -> ndarray (tensor_content, or the typed *_val fields with TensorFlow's rule that
    a shorter list is padded with its last value). `dtype` and `shape` stand in for the message's
    own when it has none (as in V1 checkpoints, whose slices store only the values). `max_bytes`
    bounds the array a few stored values may be padded to (a hostile file's shape is refused)."""
    found = by_number(buf)
    code = _one(found, 1, 0)
    dtype = TF_DTYPES.get(code) if code else dtype
    if dtype is None or dtype in ("resource", "variant"):
        raise ProtoError(f"TensorProto of unsupported DataType {code}")
    shape = decode_shape(_one(found, 2)) if 2 in found else tuple(shape or ())
    if None in shape:
        raise ProtoError("TensorProto with unknown dims")
    n = 1
    for d in shape:
        n *= d
    size = n * (8 if dtype == "string" else np.dtype(dtype).itemsize)
    if max_bytes is not None and size > max_bytes:
        raise ProtoError(f"a {dtype}{list(shape)} tensor would take {size:,} bytes, more than its file could hold")
    if dtype == "string":
        items = [bytes(v) for _, v in found.get(8, [])]
        if len(items) not in (n, 1) and not (n == 0 and not items):
            raise ProtoError(f"{len(items)} strings for shape {list(shape)}")
        out = np.empty(n, dtype=object)
        for i in range(n):
            out[i] = items[min(i, len(items) - 1)]
        return out.reshape(shape)
    np_dtype = np.dtype(dtype).newbyteorder("<")
    content = _one(found, 4)
    if content is not None:
        if len(content) != n * np_dtype.itemsize:
            raise ProtoError(f"tensor_content has {len(content)} bytes for {dtype}{list(shape)}")
        return np.frombuffer(content, np_dtype).reshape(shape).astype(np_dtype.newbyteorder("="))
    number, kind = _VAL_FIELDS[dtype]
    entries = found.get(number, [])
    if dtype == "float16":
        raw = np.asarray(_ints(entries), np.uint16).view(np.float16)
    elif kind == "f":
        raw = np.asarray(_floats(entries), np.float32)
    elif kind == "d":
        raw = np.asarray(_floats(entries, "<d"), np.float64)
    else:
        raw = np.asarray(_ints(entries), np.int64)
    if raw.size > n or (raw.size == 0 and n):
        if raw.size == 0:
            return np.zeros(shape, np_dtype.newbyteorder("="))
        raise ProtoError(f"{raw.size} values for shape {list(shape)}")
    if raw.size < n:
        raw = np.concatenate([raw, np.full(n - raw.size, raw[-1], raw.dtype)])
    return raw.astype(np.dtype(dtype)).reshape(shape)


def encode_tensor(array, content: bool = True) -> bytes:
    """ndarray -> TensorProto: dtype, shape and tensor_content; with content=False only the typed
    value list, as TensorFlow's V1 checkpoints store a slice's data."""
    arr = np.asarray(array)
    dtype = "string" if arr.dtype.kind in "OSU" else arr.dtype.name
    out = varint_field(1, TF_DTYPE_CODES[dtype]) + bytes_field(2, encode_shape(arr.shape)) if content else b""
    if dtype == "string":
        return out + b"".join(bytes_field(8, v if isinstance(v, bytes) else str(v).encode())
                              for v in arr.reshape(-1))
    if content:
        return out + bytes_field(4, np.ascontiguousarray(arr, arr.dtype.newbyteorder("<")).tobytes())
    number, kind = _VAL_FIELDS[dtype]
    flat = arr.reshape(-1)
    if dtype == "float16":
        return out + packed_varints(number, flat.view(np.uint16).tolist())
    if kind == "f":
        return out + (bytes_field(number, flat.astype("<f4").tobytes()) if flat.size else b"")
    if kind == "d":
        return out + (bytes_field(number, flat.astype("<f8").tobytes()) if flat.size else b"")
    return out + packed_varints(number, flat.astype(np.int64).tolist())


# -- NodeDef and AttrValue --------------------------------------------------------------------------
def decode_attr(buf: bytes):
    """AttrValue -> a plain Python value: str for s, int, float, bool, a dtype name for type,
    a tuple of dims for shape, an ndarray for tensor, a tuple for list, the name for func."""
    found = by_number(buf)
    if 1 in found:  # list
        lst = by_number(_one(found, 1))
        for number, conv in ((2, lambda e: [_text(v) for _, v in e]), (3, _ints), (4, _floats),
                             (5, lambda e: [bool(v) for v in _ints(e)]),
                             (6, lambda e: [TF_DTYPES.get(v, f"DT_{v}") for v in _ints(e)]),
                             (7, lambda e: [decode_shape(v) for _, v in e]),
                             (8, lambda e: [decode_tensor(v) for _, v in e])):
            if number in lst:
                return tuple(conv(lst[number]))
        return ()
    if 2 in found:
        raw = bytes(_one(found, 2))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw
    if 3 in found:
        return _ints(found[3])[-1]
    if 4 in found:
        return float(np.float32(_floats(found[4])[-1]))
    if 5 in found:
        return bool(_one(found, 5))
    if 6 in found:
        code = _one(found, 6)
        return TF_DTYPES.get(code, f"DT_{code}")
    if 7 in found:
        return decode_shape(_one(found, 7))
    if 8 in found:
        return decode_tensor(_one(found, 8))
    if 10 in found:
        return _text(_one(by_number(_one(found, 10)), 1, b""))
    if 9 in found:
        return _text(_one(found, 9))
    return None


def encode_attr(value) -> bytes:
    """A plain Python value -> AttrValue (the inverse of decode_attr for the kinds it produces)."""
    if isinstance(value, bool):
        return varint_field(5, int(value))
    if isinstance(value, int):
        return varint_field(3, value)
    if isinstance(value, float):
        return fixed32_field(4, struct.unpack("<I", struct.pack("<f", value))[0])
    if isinstance(value, str):
        if value in TF_DTYPE_CODES:
            return varint_field(6, TF_DTYPE_CODES[value])
        return bytes_field(2, value)
    if isinstance(value, bytes):
        return bytes_field(2, value)
    if isinstance(value, np.ndarray):
        return bytes_field(8, encode_tensor(value))
    if isinstance(value, (list, tuple)):
        items = list(value)
        if not items:
            return bytes_field(1, b"")
        if all(isinstance(v, bool) for v in items):
            body = packed_varints(5, [int(v) for v in items])
        elif all(isinstance(v, int) for v in items):
            body = packed_varints(3, items)
        elif all(isinstance(v, (int, float)) for v in items):
            body = bytes_field(4, np.asarray(items, "<f4").tobytes())
        elif all(isinstance(v, str) and v in TF_DTYPE_CODES for v in items):
            body = packed_varints(6, [TF_DTYPE_CODES[v] for v in items])
        elif all(isinstance(v, (str, bytes)) for v in items):
            body = b"".join(bytes_field(2, v) for v in items)
        elif all(v is None or isinstance(v, tuple) for v in items):
            body = b"".join(bytes_field(7, encode_shape(v)) for v in items)
        else:
            raise ProtoError(f"cannot encode attribute list {value!r}")
        return bytes_field(1, body)
    raise ProtoError(f"cannot encode attribute value {value!r}")


def decode_node_def(buf: bytes) -> dict:
    """NodeDef -> {"name", "op", "inputs", "device", "attrs": {name: value}}."""
    found = by_number(buf)
    attrs = {}
    for _, entry in found.get(5, []):
        e = by_number(entry)
        attrs[_text(_one(e, 1, b""))] = decode_attr(_one(e, 2, b""))
    return {"name": _text(_one(found, 1, b"")), "op": _text(_one(found, 2, b"")),
            "inputs": [_text(v) for _, v in found.get(3, [])], "device": _text(_one(found, 4, b"")),
            "attrs": attrs}


def encode_node_def(name: str, op: str, attrs: dict, inputs=()) -> bytes:
    out = bytes_field(1, name) + bytes_field(2, op) + b"".join(bytes_field(3, i) for i in inputs)
    for key in sorted(attrs):
        out += bytes_field(5, bytes_field(1, key) + bytes_field(2, encode_attr(attrs[key])))
    return out
