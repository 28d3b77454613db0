"""Random ops: RANDOM_UNIFORM with TensorFlow Lite's generator (Philox4x32-10), for dropout.

TensorFlow Lite's RANDOM_UNIFORM keeps one Philox generator per node, seeded from the node's
RandomOptions (seed, seed2) and advanced by every call: each call draws ceil(n / 4) blocks of four
32-bit words and turns each word into a float in [0, 1) from its low 23 bits. Our kernel does the
same, vectorised over the blocks, so a file draws the same numbers in litetrain as in LiteRT as long
as both runtimes see the same sequence of calls. The generator's state lives with the executor
(one stream per signature and seed pair; not in the variable store, so checkpoints do not hold it),
and a fresh interpreter starts every stream from its seed again. seed = seed2 = 0 means "seed
from the operating system", as in TensorFlow Lite. The schema stores the seeds as int64, but
LiteRT's kernel parameters hold them as int32 (the file's value truncated, then sign-extended): the
kernel does the same, and tracing refuses seeds outside the int32 range.
"""
from __future__ import annotations

import os

import numpy as np

from ..core.registry import NOT_DIFFERENTIABLE, Builtin, defop
from ._util import sized

PHILOX_M = (0xD2511F53, 0xCD9E8D57)
PHILOX_W = (0x9E3779B9, 0xBB67AE85)


MASK32 = np.uint64(0xFFFFFFFF)


class Philox:
    """TensorFlow's PhiloxRandom(seed_lo=seed, seed_hi=seed2): key from `seed`, the high half of
    the 128-bit counter from `seed2`; `blocks(n)` returns the next n outputs as uint32 [n, 4]."""

    def __init__(self, seed: int, seed2: int):
        seed, seed2 = int(seed) & (2 ** 64 - 1), int(seed2) & (2 ** 64 - 1)
        self.key = (seed & 0xFFFFFFFF, seed >> 32)
        self.counter = seed2 << 64  # words 2 and 3 of the counter; words 0 and 1 start at zero

    def blocks(self, n: int) -> np.ndarray:
        start = self.counter
        self.counter = (self.counter + n) % (1 << 128)
        low0 = np.uint64(start & (2 ** 64 - 1))
        low = low0 + np.arange(n, dtype=np.uint64)  # wraps mod 2^64 ...
        high = np.uint64(start >> 64) + (low < low0).astype(np.uint64)  # ... carrying into the high half
        c = [low & MASK32, low >> np.uint64(32), high & MASK32, high >> np.uint64(32)]
        k0, k1 = np.uint64(self.key[0]), np.uint64(self.key[1])
        for round_ in range(10):
            p0 = c[0] * np.uint64(PHILOX_M[0])
            p1 = c[2] * np.uint64(PHILOX_M[1])
            c = [(p1 >> np.uint64(32)) ^ c[1] ^ k0, p1 & MASK32, (p0 >> np.uint64(32)) ^ c[3] ^ k1, p0 & MASK32]
            k0, k1 = (k0 + np.uint64(PHILOX_W[0])) & MASK32, (k1 + np.uint64(PHILOX_W[1])) & MASK32
        return np.stack(c, axis=1).astype(np.uint32)


def uint32_to_unit_float(words: np.ndarray) -> np.ndarray:
    """TensorFlow's Uint32ToFloat: 1.0 with the word's low 23 bits as mantissa, minus 1."""
    return ((words & np.uint32(0x7FFFFF)) | np.uint32(0x3F800000)).view(np.float32) - np.float32(1.0)


def _shape_of(shape):
    dims = [int(d) for d in np.asarray(shape).reshape(-1)]
    if any(d < 0 for d in dims):
        raise ValueError(f"random_uniform: negative dimension in shape {dims}")
    return dims


def _as_int32(v: int) -> int:
    v = int(v) & 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


CHUNK_BLOCKS = 1 << 16  # Philox blocks drawn at once: the working memory stays a few MB whatever the shape


def _random_uniform_kernel(ctx, shape, seed=0, seed2=0):
    dims = _shape_of(shape)
    seed, seed2 = _as_int32(seed), _as_int32(seed2)
    n = 1
    for d in dims:
        n *= d
    streams = ctx.executor.random_streams
    key = (ctx.where, int(seed), int(seed2))
    rng = streams.get(key)
    if rng is None:
        if seed == 0 and seed2 == 0:  # as TensorFlow Lite: unseeded means seeded by the system
            s, s2 = (int.from_bytes(os.urandom(8), "little") for _ in range(2))
        else:
            s, s2 = seed, seed2
        rng = streams[key] = Philox(s, s2)
    out = np.empty(n, np.float32)
    for start in range(0, n, 4 * CHUNK_BLOCKS):  # the same words as one draw of every block
        count = min(4 * CHUNK_BLOCKS, n - start)
        out[start:start + count] = uint32_to_unit_float(rng.blocks(-(-count // 4)).reshape(-1)[:count])
    return out.reshape(dims)


def _random_uniform_allocates(shape, seed=0, seed2=0):
    return sized(np.float32, _shape_of(shape), "random_uniform")


def _random_uniform_infer(attrs, inputs):
    shape, = inputs
    if shape.dtype != "int32":
        raise ValueError(f"the shape must be int32, got {shape.dtype}")
    if len(shape.shape) != 1 or shape.shape[0] is None:
        raise ValueError("the shape must be a 1-D tensor of known length")
    for name in ("seed", "seed2"):
        if not -2 ** 31 <= int(attrs[name]) < 2 ** 31:
            raise ValueError(f"{name} must fit in int32 (LiteRT keeps 32 bits of it), got {attrs[name]}")
    if shape.data is not None:
        return [("float32", tuple(_shape_of(shape.data)))]
    return [("float32", (None,) * shape.shape[0])]


defop("random_uniform", infer=_random_uniform_infer, kernel=_random_uniform_kernel, vjp=NOT_DIFFERENTIABLE,
      attrs={"seed": 0, "seed2": 0}, stateful=True, num_inputs=(1, 1), allocates=_random_uniform_allocates,
      tflite=Builtin("RANDOM_UNIFORM", "RandomOptions", {"seed": "int", "seed2": "int"}))
