"""Checkpoint files in the safetensors format, keyed by variable path, crash-safe and checksummed.

A safetensors file is an 8-byte little-endian header length, a JSON header mapping each name to
its dtype, shape and byte range, then the raw little-endian data. Nothing here executes code
from the file.

Crash safety: a checkpoint is written to a temporary file in the same directory, flushed and
fsynced, renamed over the target (an atomic replace), and then the directory is fsynced so the
rename itself is durable. A process killed at any moment leaves either the old checkpoint or
the new one, never a torn file; the temporary files such a kill leaves behind are removed by
the next save to the same path.

Integrity: litetrain writes the SHA-256 of the data section (every byte after the header) as
`litetrain_sha256` in the header's `__metadata__`, so the file stays a plain safetensors file
for other readers. `load` verifies it when present and refuses a mismatch with CheckpointError.
A file without it (written by another tool) loads unless `require_checksum` is set. Whatever
the checksum says, `load` also checks that the byte ranges tile the data section exactly (as
the safetensors format requires), so a corrupted offset cannot move data between tensors.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat

import numpy as np

_ST_DTYPES = {"float32": "F32", "float64": "F64", "float16": "F16", "int32": "I32", "int64": "I64",
              "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL", "uint16": "U16", "uint32": "U32"}
_FROM_ST = {v: k for k, v in _ST_DTYPES.items()}
MAX_HEADER = 100 << 20
CHECKSUM_KEY = "litetrain_sha256"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, is corrupt, or does not fit the model."""


def save(path, tensors: dict, metadata: dict | None = None) -> None:
    """Write `tensors` (name -> array) to `path` atomically and durably, in the safetensors format,
    with the data section's SHA-256 in the metadata."""
    path = os.fspath(path)
    header, offset, arrays = {}, 0, []
    digest = hashlib.sha256()
    for name in sorted(tensors):
        arr = np.asarray(tensors[name])
        dt = _ST_DTYPES.get(arr.dtype.name)
        if dt is None:
            raise CheckpointError(f"variable {name!r}: dtype {arr.dtype} cannot be stored in a checkpoint")
        arr = np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("<"), copy=False)).reshape(arr.shape)
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
        raw = arr.reshape(-1).view(np.uint8) if arr.size else b""
        digest.update(raw)
        arrays.append(raw)
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta[CHECKSUM_KEY] = digest.hexdigest()
    header["__metadata__"] = meta
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    directory, base = os.path.split(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CheckpointError(f"cannot write checkpoint {path!r}: the directory {directory!r} does not exist")
    _remove_stale_temporaries(directory, base)
    tmp = os.path.join(directory, f".{base}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        _write(tmp, path, head, arrays)
    except OSError as e:  # named by the user's path, not the temporary's
        raise CheckpointError(f"cannot write checkpoint {path!r}: {e.strerror or e}") from None
    _fsync_directory(directory)


def _write(tmp, path, head, arrays):
    """Write the checkpoint to `tmp`, flush it to the disk, and rename it to `path`."""
    try:
        with open(tmp, "xb") as f:
            f.write(len(head).to_bytes(8, "little"))
            f.write(head)
            for raw in arrays:
                f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _fsync_directory(directory: str) -> None:
    """Make a rename in `directory` durable (POSIX; other systems have no directory fsync)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_stale_temporaries(directory: str, base: str) -> None:
    """Delete temporaries of `base` left by processes that died while saving (POSIX only: there,
    signal 0 asks whether a process exists; elsewhere os.kill would end it)."""
    if os.name != "posix":
        return
    pattern = re.compile(rf"\.{re.escape(base)}\.(\d+)\.[0-9a-f]{{8}}\.tmp")
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        m = pattern.fullmatch(name)
        if not m or int(m.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(m.group(1)), 0)
            continue  # its writer is alive (maybe saving right now)
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError, OSError):
            continue
        try:
            os.unlink(os.path.join(directory, name))
        except OSError:
            pass


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"a key appears twice: {sorted({k for k in keys if keys.count(k) > 1})[:3]}")
    return dict(pairs)


def load(path, require_checksum: bool = False) -> dict:
    """Read a safetensors file into name -> array, checking every offset against the file and the
    litetrain checksum when present (required when `require_checksum`)."""
    tensors, _ = load_with_metadata(path, require_checksum)
    return tensors


def load_with_metadata(path, require_checksum: bool = False) -> tuple[dict, dict]:
    """(name -> array, the header's __metadata__); see `load`."""
    path = os.fspath(path)
    try:
        data = read_regular_file(path, MAX_CHECKPOINT_BYTES)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read checkpoint {path!r}: {getattr(e, 'strerror', None) or e}") from None
    return parse(data, path, require_checksum)


MAX_CHECKPOINT_BYTES = 1 << 34  # 16 GiB: far above any on-device model's state, far below a sparse file's claim


def read_regular_file(path, limit: int) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; a FIFO, a device (/dev/zero) or a
    directory is refused before anything is read (reading one could hang or never end)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO's open would wait for a writer
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("it is not a regular file")
        if info.st_size > limit:
            raise ValueError(f"it has {info.st_size:,} bytes, more than the {limit:,} allowed")
        chunks, left = [], info.st_size + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
    finally:
        os.close(fd)
    if len(data) > info.st_size:
        raise ValueError("it grew while being read")
    return data


def parse(data: bytes, path="checkpoint", require_checksum: bool = False) -> tuple[dict, dict]:
    """(name -> array, metadata) from a checkpoint's bytes; raises CheckpointError for a bad one."""
    if len(data) < 8:
        raise CheckpointError(f"{path!r} is not a checkpoint: {len(data)} bytes")
    n = int.from_bytes(data[:8], "little")
    if n > min(MAX_HEADER, len(data) - 8):
        raise CheckpointError(f"{path!r} is not a checkpoint: header length {n} exceeds the file")
    try:
        header = json.loads(bytes(data[8:8 + n]), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{path!r} is not a checkpoint: bad header ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path!r} is not a checkpoint: the header is not a map")
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{path!r}: __metadata__ is not a map of strings")
    body = memoryview(data)[8 + n:]
    expected = metadata.get(CHECKSUM_KEY)
    if expected is not None:
        if hashlib.sha256(body).hexdigest() != expected:
            raise CheckpointError(f"{path!r} is corrupt or torn: the data does not match its SHA-256 checksum")
    elif require_checksum:
        raise CheckpointError(f"{path!r} carries no {CHECKSUM_KEY} checksum (it was not written by "
                              "litetrain); refusing it because checksums are required")
    entries = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = np.dtype(_FROM_ST[entry["dtype"]]).newbyteorder("<")
            shape = tuple(_non_negative_int(d) for d in entry["shape"])
            begin, end = (_non_negative_int(v) for v in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path!r}: bad entry for {name!r}") from None
        if not begin <= end <= len(body):
            raise CheckpointError(f"{path!r}: entry {name!r} points outside the file")
        count, span = 1, 1
        for d in shape:
            count, span = count * d, span * max(d, 1)
        if span * dtype.itemsize >= 1 << 62:  # NumPy refuses such a shape even with a zero in it
            raise CheckpointError(f"{path!r}: entry {name!r} has shape {list(shape)}, too large for any array")
        if end - begin != count * dtype.itemsize:
            raise CheckpointError(f"{path!r}: entry {name!r} has {end - begin} bytes for shape {list(shape)}")
        entries.append((begin, end, name, dtype, shape))
    entries.sort(key=lambda e: (e[0], e[1]))
    at = 0
    for begin, end, name, _, _ in entries:
        if begin != at:
            raise CheckpointError(f"{path!r}: entry {name!r} starts at byte {begin} of the data, expected "
                                  f"{at} (the entries must tile the data with no gap or overlap)")
        at = end
    if at != len(body):
        raise CheckpointError(f"{path!r}: the data section has {len(body)} bytes, the entries cover {at}")
    out = {}
    for begin, end, name, dtype, shape in entries:
        out[name] = np.frombuffer(body[begin:end], dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
    return out, metadata


def _non_negative_int(value) -> int:
    """A dim or an offset of the header: an int in [0, 2**62) (a larger one describes no real array)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 62:
        raise ValueError(f"{value!r} is not a non-negative integer below 2**62")
    return value


def check_against(found: dict, expected: dict, path="checkpoint") -> None:
    """Refuse a checkpoint that does not hold exactly the expected variables (name -> (dtype, shape));
    the message lists every missing, extra and mismatched variable."""
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    wrong = []
    for name in sorted(set(expected) & set(found)):
        dtype, shape = expected[name]
        arr = found[name]
        if arr.dtype.name != dtype or (shape is not None and (arr.ndim != len(shape) or any(
                d is not None and a != d for a, d in zip(arr.shape, shape)))):  # None: any size
            wrong.append(f"{name} (model {dtype}{list(shape)}, checkpoint {arr.dtype.name}{list(arr.shape)})")
    if missing or extra or wrong:
        parts = []
        if missing:
            parts.append(f"missing ({len(missing)}): " + ", ".join(missing))
        if extra:
            parts.append(f"not in the model ({len(extra)}): " + ", ".join(extra))
        if wrong:
            parts.append(f"mismatched ({len(wrong)}): " + ", ".join(wrong))
        raise CheckpointError(f"{path} does not fit this model; " + "; ".join(parts))
