"""TensorFlow's checkpoint formats, read and written without TensorFlow (NumPy only).

Two formats, both built on TensorFlow's SSTable (LevelDB's table layout: prefix-compressed
blocks with CRC32C trailers, an index block and a 48-byte footer):
- V2, the tensor bundle that SaveV2/RestoreV2 use: `<prefix>.index` (an SSTable mapping "" to a
  BundleHeaderProto and each tensor name to a BundleEntryProto with dtype, shape, offset, size and
  CRC32C) and `<prefix>.data-00000-of-00001` (the raw little-endian tensor bytes);
- V1, the single-file tensor-slice format that Save/Restore use (and the on-device training
  guide's code): an SSTable whose "" entry lists each tensor's name, shape and dtype and whose
  other entries, keyed by TensorFlow's OrderedCode encoding of (name, slice), hold the data as
  TensorProtos.
Files written here are byte-for-byte what TensorFlow 2.18 writes for the same tensors
(tests/test_tf_fixtures.py compares them), and every read checks offsets, sizes and CRCs.
Writes are atomic: a temporary file in the same directory is renamed over the target.
"""
from __future__ import annotations

import os
import struct
import tempfile

import numpy as np

from ..checkpoint import MAX_CHECKPOINT_BYTES, read_regular_file
from . import proto
from .proto import TF_DTYPE_CODES, TF_DTYPES

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
RESTART_INTERVAL = 16
BLOCK_SIZE = 262144  # TensorFlow's table::Options default (LevelDB's is 4096)
DATA_SUFFIX = ".data-00000-of-00001"


class TFCheckpointError(ValueError):
    """A TensorFlow checkpoint that cannot be read, or does not hold what is asked for."""


# -- CRC32C (Castagnoli), masked as LevelDB and TensorFlow store it ----------------------------------
def _crc_table():
    table = np.zeros(256, np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table[i] = c
    return [int(v) for v in table]


_CRC_TABLE = _crc_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    table = _CRC_TABLE
    crc ^= 0xFFFFFFFF
    for b in bytes(data):
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# -- the SSTable ----------------------------------------------------------------------------------------
class _BlockBuilder:
    """LevelDB's BlockBuilder: prefix-compressed entries with a restart point every 16."""

    def __init__(self):
        self.out, self.restarts, self.last, self.count = bytearray(), [0], b"", 0

    def add(self, key: bytes, value: bytes):
        shared = 0
        if self.count and self.count % RESTART_INTERVAL == 0:
            self.restarts.append(len(self.out))
        elif self.count:
            n = min(len(self.last), len(key))
            while shared < n and self.last[shared] == key[shared]:
                shared += 1
        self.out += proto._enc_varint(shared) + proto._enc_varint(len(key) - shared) + proto._enc_varint(len(value))
        self.out += key[shared:] + value
        self.last, self.count = key, self.count + 1

    def size(self) -> int:
        return len(self.out) + 4 * len(self.restarts) + 4

    def finish(self) -> bytes:
        return bytes(self.out) + b"".join(struct.pack("<I", r) for r in self.restarts) + struct.pack(
            "<I", len(self.restarts))


def _block(entries) -> bytes:
    builder = _BlockBuilder()
    for key, value in entries:
        builder.add(key, value)
    return builder.finish()


def _handle(offset: int, size: int) -> bytes:
    return proto._enc_varint(offset) + proto._enc_varint(size)


def _shortest_separator(start: bytes, limit: bytes) -> bytes:
    """LevelDB's bytewise FindShortestSeparator: a short key in [start, limit)."""
    n = min(len(start), len(limit))
    i = 0
    while i < n and start[i] == limit[i]:
        i += 1
    if i < n and start[i] < 0xFF and start[i] + 1 < limit[i]:
        return start[:i] + bytes([start[i] + 1])
    return start


def _short_successor(key: bytes) -> bytes:
    for i, b in enumerate(key):
        if b != 0xFF:
            return key[:i] + bytes([b + 1])
    return key


def build_table(entries) -> bytes:
    """An SSTable of (key, value) byte pairs, in sorted key order, as TensorFlow's TableBuilder
    writes it (uncompressed blocks, each closed once it reaches BLOCK_SIZE bytes)."""
    entries = sorted(entries)
    out, index, block = bytearray(), [], _BlockBuilder()

    def flush(next_key):
        nonlocal block
        data = block.finish()
        handle = _handle(len(out), len(data))
        out.extend(data + b"\0" + struct.pack("<I", masked_crc32c(data + b"\0")))
        last = block.last
        index.append((_shortest_separator(last, next_key) if next_key is not None else _short_successor(last), handle))
        block = _BlockBuilder()

    pending = False
    for key, value in entries:
        if pending:
            flush(key)
            pending = False
        block.add(key, value)
        pending = block.size() >= BLOCK_SIZE
    if block.count:
        flush(None)
    handles = []
    for contents in (_block([]), _block(index)):  # the (empty) metaindex block, then the index block
        handles.append(_handle(len(out), len(contents)))
        out.extend(contents + b"\0" + struct.pack("<I", masked_crc32c(contents + b"\0")))
    footer = (handles[0] + handles[1]).ljust(40, b"\0")
    out += footer + struct.pack("<II", TABLE_MAGIC & 0xFFFFFFFF, TABLE_MAGIC >> 32)
    return bytes(out)


def _read_block(data: bytes, handle: bytes, what: str) -> list[tuple[bytes, bytes]]:
    offset, pos = proto._varint(handle, 0)
    size, _ = proto._varint(handle, pos)
    if offset + size + 5 > len(data):
        raise TFCheckpointError(f"{what}: a block runs past the end of the file")
    contents = data[offset:offset + size]
    kind = data[offset + size]
    (stored,) = struct.unpack_from("<I", data, offset + size + 1)
    if masked_crc32c(contents + bytes([kind])) != stored:
        raise TFCheckpointError(f"{what}: block checksum mismatch (the file is corrupt)")
    if kind != 0:
        raise TFCheckpointError(f"{what}: compressed blocks (type {kind}) are not supported")
    if size < 4:
        raise TFCheckpointError(f"{what}: a block of {size} bytes")
    (num_restarts,) = struct.unpack_from("<I", contents, size - 4)
    end = size - 4 - 4 * num_restarts
    if end < 0:
        raise TFCheckpointError(f"{what}: bad restart count {num_restarts}")
    entries, pos, last = [], 0, b""
    while pos < end:
        shared, pos = proto._varint(contents, pos)
        unshared, pos = proto._varint(contents, pos)
        vlen, pos = proto._varint(contents, pos)
        if shared > len(last) or pos + unshared + vlen > end:
            raise TFCheckpointError(f"{what}: a block entry runs past its block")
        key = last[:shared] + contents[pos:pos + unshared]
        pos += unshared
        entries.append((key, contents[pos:pos + vlen]))
        pos += vlen
        last = key
    return entries


def read_table(data: bytes, what: str = "table") -> dict[bytes, bytes]:
    """Every (key, value) of an SSTable, checking the footer and every block's CRC."""
    data = bytes(data)
    if len(data) < FOOTER_SIZE:
        raise TFCheckpointError(f"{what}: {len(data)} bytes is too short for a TensorFlow table")
    lo, hi = struct.unpack_from("<II", data, len(data) - 8)
    if (hi << 32 | lo) != TABLE_MAGIC:
        raise TFCheckpointError(f"{what}: not a TensorFlow checkpoint table (bad magic number)")
    footer = data[len(data) - FOOTER_SIZE:]
    _, pos = proto._varint(footer, 0)
    _, pos = proto._varint(footer, pos)
    index = _read_block(data, footer[pos:], what)
    table = {}
    for _, handle in index:
        table.update(_read_block(data, handle, what))
    return table


def _atomic_write(path: str, data: bytes) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tfckpt-", suffix=".tmp", dir=directory)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as an ordinary open() would create it, not mkstemp's 0600
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read(path: str) -> bytes:
    try:
        return read_regular_file(path, MAX_CHECKPOINT_BYTES)
    except (OSError, ValueError) as e:
        raise TFCheckpointError(f"cannot read checkpoint {path!r}: {getattr(e, 'strerror', None) or e}") from None


def _numeric(name: str, value) -> np.ndarray:
    arr = np.asarray(value)
    dtype = arr.dtype.name
    if dtype not in TF_DTYPE_CODES or dtype in ("string", "resource", "variant"):
        raise TFCheckpointError(f"tensor {name!r}: dtype {arr.dtype} cannot be stored in a TensorFlow checkpoint")
    return arr


# -- V2: the tensor bundle (SaveV2 / RestoreV2) ------------------------------------------------------
def write_bundle(prefix, tensors: dict) -> None:
    """Write `tensors` (name -> array) as `<prefix>.index` + `<prefix>.data-00000-of-00001`."""
    prefix = os.fspath(prefix)
    data, entries = bytearray(), [(b"", proto.varint_field(1, 1) + proto.bytes_field(3, proto.varint_field(1, 1)))]
    for name in tensors:  # the data file holds them in the order given, as TensorFlow's writer does
        arr = _numeric(name, tensors[name])
        raw = np.ascontiguousarray(arr, arr.dtype.newbyteorder("<")).tobytes()
        entry = proto.varint_field(1, TF_DTYPE_CODES[arr.dtype.name])
        entry += proto.bytes_field(2, proto.encode_shape(arr.shape)) if arr.ndim else b""
        entry += (proto.varint_field(4, len(data)) if data else b"") + (proto.varint_field(5, len(raw)) if raw else b"")
        entry += proto.fixed32_field(6, masked_crc32c(raw))
        entries.append((name.encode("utf-8"), entry))
        data += raw
    _atomic_write(prefix + DATA_SUFFIX, bytes(data))
    _atomic_write(prefix + ".index", build_table(entries))


def read_bundle(prefix, names=None) -> dict[str, np.ndarray]:
    """The tensors of a V2 checkpoint (all, or those in `names`), checking each CRC32C."""
    prefix = os.fspath(prefix)
    try:
        return _bundle(prefix, names)
    except (proto.ProtoError, ValueError, OverflowError) as e:
        if isinstance(e, TFCheckpointError):
            raise
        raise TFCheckpointError(f"{prefix}: {e}") from None


def _bundle(prefix, names) -> dict[str, np.ndarray]:
    """See read_bundle."""
    table = read_table(_read(prefix + ".index"), f"{prefix}.index")
    header = proto.by_number(table.get(b"", b""))
    if proto._one(header, 1, 0) != 1:
        raise TFCheckpointError(f"{prefix}: checkpoints in {proto._one(header, 1, 0)} shards are not supported")
    if proto._one(header, 2, 0) != 0:
        raise TFCheckpointError(f"{prefix}: a big-endian checkpoint is not supported")
    data = _read(prefix + DATA_SUFFIX)
    wanted = None if names is None else set(names)
    out = {}
    for key, value in table.items():
        if not key:
            continue
        name = key.decode("utf-8", "replace")
        if wanted is not None and name not in wanted:
            continue
        entry = proto.by_number(value)
        dtype = TF_DTYPES.get(proto._one(entry, 1, 0))
        if dtype in (None, "string", "resource", "variant"):
            raise TFCheckpointError(f"{prefix}: tensor {name!r} has an unsupported DataType {proto._one(entry, 1, 0)}")
        if 7 in entry:
            raise TFCheckpointError(f"{prefix}: tensor {name!r} is stored in slices; not supported")
        shape = proto.decode_shape(proto._one(entry, 2, b"")) or ()
        offset, size = proto._one(entry, 4, 0), proto._one(entry, 5, 0)
        np_dtype = np.dtype(dtype).newbyteorder("<")
        if None in shape or size != int(np.prod(shape, dtype=np.int64)) * np_dtype.itemsize or offset + size > len(data):
            raise TFCheckpointError(f"{prefix}: tensor {name!r} ({dtype}{list(shape)}) has a bad size or offset")
        raw = data[offset:offset + size]
        stored = proto._one(entry, 6)
        if stored is not None and masked_crc32c(raw) != struct.unpack("<I", stored)[0]:
            raise TFCheckpointError(f"{prefix}: tensor {name!r} fails its CRC32C check (the file is corrupt)")
        out[name] = np.frombuffer(raw, np_dtype).reshape(shape).astype(np.dtype(dtype))
    if wanted is not None and wanted - set(out):
        raise TFCheckpointError(f"{prefix}: no tensor(s) {sorted(wanted - set(out))} in the checkpoint; "
                                f"it has {sorted(k.decode() for k in table if k)}")
    return out


# -- V1: tensor slices (Save / Restore) --------------------------------------------------------------
def _ordered_num_increasing(v: int) -> bytes:
    raw = v.to_bytes((v.bit_length() + 7) // 8, "big") if v else b""
    return bytes([len(raw)]) + raw


def _ordered_string(s: bytes) -> bytes:
    return _escape(s) + b"\x00\x01"


def _escape(s: bytes) -> bytes:
    out = bytearray()
    for b in s:
        out += b"\x00\xff" if b == 0 else b"\xff\x00" if b == 0xFF else bytes([b])
    return bytes(out)


_HEADER_BITS = {1: (0x80, 0), 2: (0xC0, 0), 3: (0xE0, 0), 4: (0xF0, 0), 5: (0xF8, 0), 6: (0xFC, 0),
                7: (0xFE, 0), 8: (0xFF, 0), 9: (0xFF, 0x80), 10: (0xFF, 0xC0)}


def _ordered_signed(v: int) -> bytes:
    """OrderedCode::WriteSignedNumIncreasing."""
    x = ~v if v < 0 else v
    if x < 64:
        return bytes([(0x80 ^ v) & 0xFF])
    n = (x.bit_length() + 7) // 7
    buf = bytearray((v & (2 ** 80 - 1)).to_bytes(10, "big"))
    if v < 0:
        buf[0] = buf[1] = 0xFF
    begin = buf[10 - n:]
    begin[0] ^= _HEADER_BITS[n][0]
    begin[1] ^= _HEADER_BITS[n][1]
    return bytes(begin)


def slice_key(name: str, rank: int) -> bytes:
    """checkpoint::EncodeTensorNameSlice for the full slice of a rank-`rank` tensor."""
    key = _ordered_num_increasing(0) + _ordered_string(name.encode("utf-8")) + _ordered_num_increasing(rank)
    return key + (_ordered_signed(0) + _ordered_signed(-1)) * rank


def write_slices(path, tensors: dict) -> None:
    """Write `tensors` (name -> array) as a V1 tensor-slice checkpoint, as tf.raw_ops.Save does."""
    path = os.fspath(path)
    metas, entries = [], []
    for name in sorted(tensors):
        arr = _numeric(name, tensors[name])
        full = b"".join(proto.bytes_field(1, b"") for _ in range(arr.ndim))
        metas.append(proto.bytes_field(1, proto.bytes_field(1, name) + proto.bytes_field(2, proto.encode_shape(arr.shape))
                                       + proto.varint_field(3, TF_DTYPE_CODES[arr.dtype.name])
                                       + proto.bytes_field(4, full)))
        data = proto.bytes_field(1, name) + proto.bytes_field(2, full) + proto.bytes_field(3, proto.encode_tensor(arr, content=False))
        entries.append((slice_key(name, arr.ndim), proto.bytes_field(2, data)))
    meta = b"".join(metas) + proto.bytes_field(2, proto.varint_field(1, 1))
    entries.append((b"", proto.bytes_field(1, meta)))
    _atomic_write(path, build_table(entries))


def read_slices(path, names=None) -> dict[str, np.ndarray]:
    """The tensors of a V1 checkpoint (all, or those in `names`); only whole-tensor slices."""
    path = os.fspath(path)
    data = _read(path)
    try:
        return _slices(read_table(data, path), path, names, 64 * len(data) + (1 << 20))
    except (proto.ProtoError, ValueError, OverflowError) as e:
        if isinstance(e, TFCheckpointError):
            raise
        raise TFCheckpointError(f"{path}: {e}") from None


def _slices(table, path, names, max_bytes) -> dict[str, np.ndarray]:
    """The tensors of a V1 checkpoint's table; a tensor over `max_bytes` is refused."""
    meta = proto.by_number(proto._one(proto.by_number(table.get(b"", b"")), 1, b""))
    wanted = None if names is None else set(names)
    out = {}
    for _, m in meta.get(1, []):
        m = proto.by_number(m)
        name = proto._text(proto._one(m, 1, b""))
        if wanted is not None and name not in wanted:
            continue
        shape = proto.decode_shape(proto._one(m, 2, b"")) or ()
        dtype = TF_DTYPES.get(proto._one(m, 3, 0))
        if len(m.get(4, [])) != 1:
            raise TFCheckpointError(f"{path}: tensor {name!r} is stored in {len(m.get(4, []))} slices; not supported")
        value = table.get(slice_key(name, len(shape)))
        if value is None:
            raise TFCheckpointError(f"{path}: tensor {name!r} is listed but its data is missing")
        saved = proto.by_number(proto._one(proto.by_number(value), 2, b""))
        arr = proto.decode_tensor(proto._one(saved, 3, b""), dtype, shape, max_bytes=max_bytes)
        if arr.dtype.name != dtype or arr.size != int(np.prod(shape, dtype=np.int64)):
            raise TFCheckpointError(f"{path}: tensor {name!r} holds {arr.dtype}{list(arr.shape)}, "
                                    f"its entry says {dtype}{list(shape)}")
        out[name] = arr.reshape(shape)
    if wanted is not None and wanted - set(out):
        raise TFCheckpointError(f"{path}: no tensor(s) {sorted(wanted - set(out))} in the checkpoint; "
                                f"it has {sorted(out) if wanted is None else '(see the file)'}")
    return out
