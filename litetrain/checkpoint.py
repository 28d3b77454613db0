"""Checkpoint files in the safetensors format, keyed by variable path, written atomically.

A safetensors file is an 8-byte little-endian header length, a JSON header mapping each name to
its dtype, shape and byte range, then the raw little-endian data. Nothing here executes code
from the file. Writes go to a temporary file in the same directory, are flushed and fsynced,
then renamed over the target, so a crash leaves either the old checkpoint or the new one.
"""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np

_ST_DTYPES = {"float32": "F32", "float64": "F64", "float16": "F16", "int32": "I32", "int64": "I64",
              "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL", "uint16": "U16", "uint32": "U32"}
_FROM_ST = {v: k for k, v in _ST_DTYPES.items()}
MAX_HEADER = 100 << 20


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that does not fit the model."""


def save(path, tensors: dict, metadata: dict | None = None) -> None:
    """Write `tensors` (name -> array) to `path` atomically, in the safetensors format."""
    path = os.fspath(path)
    header, offset, arrays = {}, 0, []
    for name in sorted(tensors):
        arr = np.asarray(tensors[name])
        if not arr.flags.c_contiguous:
            arr = arr.copy()
        dt = _ST_DTYPES.get(arr.dtype.name)
        if dt is None:
            raise CheckpointError(f"variable {name!r}: dtype {arr.dtype} cannot be stored in a checkpoint")
        arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
        arrays.append(arr)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".ckpt-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(len(head).to_bytes(8, "little"))
            f.write(head)
            for arr in arrays:
                f.write(arr.tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def load(path) -> dict:
    """Read a safetensors file into name -> array, checking every offset against the file."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path!r}: {e.strerror or e}") from None
    if len(data) < 8:
        raise CheckpointError(f"{path!r} is not a checkpoint: {len(data)} bytes")
    n = int.from_bytes(data[:8], "little")
    if n > min(MAX_HEADER, len(data) - 8):
        raise CheckpointError(f"{path!r} is not a checkpoint: header length {n} exceeds the file")
    try:
        header = json.loads(data[8:8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path!r} is not a checkpoint: bad header ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path!r} is not a checkpoint: the header is not a map")
    body = memoryview(data)[8 + n:]
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = np.dtype(_FROM_ST[entry["dtype"]]).newbyteorder("<")
            shape = tuple(int(d) for d in entry["shape"])
            begin, end = (int(v) for v in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path!r}: bad entry for {name!r}") from None
        if any(d < 0 for d in shape) or not 0 <= begin <= end <= len(body):
            raise CheckpointError(f"{path!r}: entry {name!r} points outside the file")
        if (end - begin) != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise CheckpointError(f"{path!r}: entry {name!r} has {end - begin} bytes for shape {list(shape)}")
        out[name] = np.frombuffer(body[begin:end], dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
    return out


def check_against(found: dict, expected: dict, path="checkpoint") -> None:
    """Refuse a checkpoint that does not hold exactly the expected variables (name -> (dtype, shape));
    the message lists every missing, extra and mismatched variable."""
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    wrong = []
    for name in sorted(set(expected) & set(found)):
        dtype, shape = expected[name]
        arr = found[name]
        if arr.dtype.name != dtype or (shape is not None and tuple(arr.shape) != tuple(shape)):
            wrong.append(f"{name} (model {dtype}{list(shape)}, checkpoint {arr.dtype.name}{list(arr.shape)})")
    if missing or extra or wrong:
        parts = []
        if missing:
            parts.append("missing: " + ", ".join(missing))
        if extra:
            parts.append("not in the model: " + ", ".join(extra))
        if wrong:
            parts.append("mismatched: " + ", ".join(wrong))
        raise CheckpointError(f"{path} does not fit this model; " + "; ".join(parts))
