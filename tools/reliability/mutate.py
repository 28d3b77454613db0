"""Mutating real .tflite files for the fuzz: bit flips, byte replacements at the FlatBuffer's own
offsets, vtables and lengths, huge counts, small indices, truncation, splicing.

`structure(data)` reads a file once with litetrain's reader while recording every position the
FlatBuffers accessors read (a table's offset to its vtable, vtable entries, offsets to tables,
strings and vectors, vector lengths, scalar fields, vector elements). Those positions are where a
mutation changes the meaning of the file rather than a weight. `mutate` applies a list of
mutations, each given as integers (so hypothesis can draw and shrink them and a seeded random
generator can replay them).
"""
from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass, field

from flatbuffers import encode, number_types, table

KINDS = ("bitflip", "byte", "field", "count", "index", "element", "data", "truncate", "extend", "splice",
         "insert", "delete", "copy")
# values a constant's 4-byte word may take: NaN, infinities, a huge float, 0, -1, big and small ints
_DATA_WORDS = (0x7FC00000, 0x7F800000, 0xFF800000, 0x7149F2CA, 0, 0xFFFFFFFF, 0x7FFFFFFF, 2, 3, 1000000,
               1 << 24, 0x3F800000)


@dataclass
class Structure:
    """Positions in a file that the reader interprets, by kind: (position, width) pairs."""
    size: int
    fields: dict = field(default_factory=dict)  # kind -> sorted list of (position, width)

    def add(self, kind, pos, width):
        if 0 <= pos and pos + width <= self.size:
            self.fields.setdefault(kind, set()).add((pos, width))

    def freeze(self):
        self.fields = {k: sorted(v) for k, v in self.fields.items()}
        return self

    def pick(self, kinds, n: int):
        pool = [p for k in kinds for p in self.fields.get(k, ())]
        return pool[n % len(pool)] if pool else None


@contextlib.contextmanager
def _recording(st: Structure):
    """Patch the FlatBuffers Table accessors to note each position they read."""
    T = table.Table
    saved = {name: getattr(T, name) for name in ("Offset", "Indirect", "String", "VectorLen", "Vector",
                                                  "Union", "Get", "GetVectorAsNumpy")}
    U = number_types.UOffsetTFlags

    def offset(self, vtable_offset):
        st.add("soffset", self.Pos, 4)
        try:
            vtable = self.Pos - encode.Get(number_types.SOffsetTFlags.packer_type, self.Bytes, self.Pos)
            st.add("vtable", vtable, 2)
            st.add("vtable", vtable + 2, 2)
            st.add("vtable_entry", vtable + vtable_offset, 2)
        except Exception:
            pass
        return saved["Offset"](self, vtable_offset)

    def indirect(self, off):
        st.add("uoffset", off, 4)
        return saved["Indirect"](self, off)

    def string(self, off):
        st.add("uoffset", off, 4)
        try:
            st.add("length", off + encode.Get(U.packer_type, self.Bytes, off), 4)
        except Exception:
            pass
        return saved["String"](self, off)

    def vector_len(self, off):
        try:
            at = off + self.Pos
            st.add("uoffset", at, 4)
            st.add("length", at + encode.Get(U.packer_type, self.Bytes, at), 4)
        except Exception:
            pass
        return saved["VectorLen"](self, off)

    def vector(self, off):
        st.add("uoffset", off + self.Pos, 4)
        return saved["Vector"](self, off)

    def union(self, t2, off):
        st.add("uoffset", off + self.Pos, 4)
        return saved["Union"](self, t2, off)

    def get(self, flags, off):
        st.add("scalar", off, flags.bytewidth)
        return saved["Get"](self, flags, off)

    def vector_numpy(self, flags, off):
        result = saved["GetVectorAsNumpy"](self, flags, off)
        try:
            start = saved["Vector"](self, off)
            for k in range(min(len(result), 64)):
                st.add("element", start + k * flags.bytewidth, flags.bytewidth)
        except Exception:
            pass
        return result

    patches = {"Offset": offset, "Indirect": indirect, "String": string, "VectorLen": vector_len,
               "Vector": vector, "Union": union, "Get": get, "GetVectorAsNumpy": vector_numpy}
    try:
        for name, fn in patches.items():
            setattr(T, name, fn)
        yield st
    finally:
        for name, fn in saved.items():
            setattr(T, name, fn)


def structure(data: bytes) -> Structure:
    """Where the reader looks in `data` (a valid or at least readable file)."""
    from litetrain.tflite import InvalidModelError, read_model
    from litetrain.tflite.schema import schema_module
    st = Structure(len(data))
    with _recording(st):
        try:
            read_model(data)
        except InvalidModelError:
            pass  # e.g. an unsupported op: the positions read before it still count
    model = schema_module("Model").Model.GetRootAs(data, 0)
    for i in range(model.BuffersLength()):  # constants' bytes: weights, shapes, axes, depths
        tab = model.Buffers(i)._tab
        at = tab.Offset(4)
        if at:
            start, length = tab.Vector(at), tab.VectorLen(at)
            for k in range(0, min(length, 1024) - 3, 4):
                st.add("data", start + k, 4)
    return st.freeze()


def _interesting(width: int, old: int, size: int, r: int) -> int:
    """One of the values that break parsers, for a field of `width` bytes holding `old`."""
    top = (1 << (8 * width)) - 1
    values = [0, 1, top, top >> 1, (top >> 1) + 1, old + 1, old - 1, old + 4, old - 4, old * 2, old ^ 0x80,
              size, size - 4, size + 4, size // 2, 0x7FFF, 0xFFFF, 1 << 20, r]
    return values[r % len(values)] & top


def _read(data, pos, width):
    return int.from_bytes(data[pos:pos + width], "little")


def _write(data: bytearray, pos: int, width: int, value: int):
    data[pos:pos + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")


def apply(data: bytes, st: Structure, kind: str, a: int, b: int, c: int, other: bytes = b"") -> bytes:
    """One mutation of `data`; a, b, c are arbitrary non-negative integers that choose where and what."""
    out = bytearray(data)
    n = len(out)
    if n == 0:
        return bytes(out) + bytes([a & 255])
    if kind == "bitflip":
        for k in range(1 + c % 8):
            pos = (a + k * (b + 1)) % n
            out[pos] ^= 1 << ((b + k) % 8)
    elif kind == "byte":
        for k in range(1 + c % 4):
            out[(a + k) % n] = (0, 255, 0x7F, 0x80, b & 255)[(b + k) % 5]
    elif kind in ("field", "count", "index", "element", "data"):
        kinds = {"field": ("soffset", "vtable", "vtable_entry", "uoffset", "scalar"), "count": ("length",),
                 "index": ("scalar", "element"), "element": ("element",), "data": ("data",)}[kind]
        spot = st.pick(kinds, a)
        if spot is None:
            return apply(data, st, "byte", a, b, c)
        pos, width = spot
        old = _read(out, pos, width)
        if kind == "count":
            value = (0x7FFFFFFF, 0xFFFFFFFF, n // 4 + 1, n, 1 << 20, old + 1, old * 1000, 0)[b % 8]
        elif kind == "index":
            value = (b % 14) - 3  # -3 .. 10: tensor, buffer, opcode and subgraph indices, types
        elif kind == "data":
            value = _DATA_WORDS[b % len(_DATA_WORDS)]
        else:
            value = _interesting(width, old, n, b)
        _write(out, pos, width, value)
    elif kind == "truncate":
        return bytes(out[:a % n])
    elif kind == "extend":
        rng = random.Random(b)
        return bytes(out) + bytes(rng.getrandbits(8) for _ in range(1 + c % 64))
    elif kind == "splice":
        donor = other or data
        cut, at = a % n, b % max(len(donor), 1)
        return bytes(out[:cut]) + donor[at:]
    elif kind == "insert":
        pos = a % n
        return bytes(out[:pos]) + bytes([b & 255]) * (1 + c % 16) + bytes(out[pos:])
    elif kind == "delete":
        pos = a % n
        return bytes(out[:pos]) + bytes(out[pos + 1 + c % 16:])
    elif kind == "copy":
        donor = other or data
        length = 1 + c % 64
        src = b % max(len(donor), 1)
        chunk = donor[src:src + length]
        pos = a % n
        out[pos:pos + len(chunk)] = chunk
        return bytes(out[:n])
    else:
        raise ValueError(f"unknown mutation {kind!r}")
    return bytes(out)


def mutate(data: bytes, st: Structure, mutations, others=()) -> bytes:
    """Apply `mutations`, a list of (kind, a, b, c, donor index), in order. Positions found by
    `structure` refer to the original file, so structural kinds come first in practice."""
    for kind, a, b, c, d in mutations:
        other = others[d % len(others)] if others else b""
        data = apply(data, st, kind, a, b, c, other)
    return data


def random_mutations(rng: random.Random, max_count: int = 3):
    """A random list of mutations, weighted towards the structural kinds."""
    weights = {"bitflip": 2, "byte": 2, "field": 3, "count": 2, "index": 3, "element": 3, "data": 4, "truncate": 2,
               "extend": 1, "splice": 1, "insert": 1, "delete": 1, "copy": 1}
    kinds = list(weights)
    r = rng.random()  # mostly one mutation: a file a single change away from a real one often loads
    count = min(max_count, 1 if r < 0.7 else 2 if r < 0.9 else 3)
    return [(rng.choices(kinds, [weights[k] for k in kinds])[0], rng.getrandbits(31), rng.getrandbits(31),
             rng.getrandbits(8), rng.getrandbits(8)) for _ in range(count)]


__all__ = ["KINDS", "Structure", "apply", "mutate", "random_mutations", "structure"]
