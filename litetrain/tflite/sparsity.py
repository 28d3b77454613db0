"""Sparse constant tensors (TFLite's SparsityParameters), expanded to dense arrays when a file is read.

A sparse weight is stored as its non-zero values plus, per traversal level, either a dense size or
CSR segments and indices (with optional blocks). The DENSIFY op that such files apply to it then
has nothing left to do. The expansion follows TFLite's FormatConverter::SparseToDense, level by
level with NumPy instead of recursion; every index and segment is checked first (a file is
untrusted input).
"""
from __future__ import annotations

import numpy as np

MAX_ELEMENTS = 1 << 28


def _index_vector(kind: int, table, what: str) -> np.ndarray:
    """A SparseIndexVector union (Int32Vector / Uint16Vector / Uint8Vector) as int64."""
    import tflite
    classes = {tflite.SparseIndexVector.Int32Vector: tflite.Int32Vector,
               tflite.SparseIndexVector.Uint16Vector: tflite.Uint16Vector,
               tflite.SparseIndexVector.Uint8Vector: tflite.Uint8Vector}
    if kind not in classes or table is None:
        raise ValueError(f"{what} is missing or of unknown type {kind}")
    vec = classes[kind]()
    vec.Init(table.Bytes, table.Pos)
    return np.zeros(0, np.int64) if vec.ValuesIsNone() else vec.ValuesAsNumpy().astype(np.int64)


def densify(values: np.ndarray, shape: tuple, sparsity) -> np.ndarray:
    """The dense array of `shape` that the stored non-zero `values` and `sparsity` describe."""
    rank = len(shape)
    order = [] if sparsity.TraversalOrderIsNone() else [int(v) for v in sparsity.TraversalOrderAsNumpy()]
    block_map = [] if sparsity.BlockMapIsNone() else [int(v) for v in sparsity.BlockMapAsNumpy()]
    levels = sparsity.DimMetadataLength()
    if sorted(order) != list(range(rank + len(block_map))) or levels != len(order):
        raise ValueError(f"traversal_order {order} and {levels} dim_metadata entries do not fit rank {rank} "
                         f"with {len(block_map)} block dims")
    if any(not 0 <= b < rank for b in block_map):
        raise ValueError(f"block_map {block_map} names a dim outside rank {rank}")
    total = int(np.prod(shape, dtype=np.int64))
    if total > MAX_ELEMENTS:
        raise ValueError(f"dense shape {list(shape)} is too large")
    prev = np.zeros(1, np.int64)          # position in the previous level's storage
    coords = np.zeros((1, 0), np.int64)   # index at each level so far
    block_sizes = {}
    for level in range(levels):
        dm = sparsity.DimMetadata(level)
        if dm.Format() == 0:  # DENSE
            size = int(dm.DenseSize())
            if size < 0 or len(prev) * max(size, 1) > MAX_ELEMENTS:
                raise ValueError(f"dense_size {size} at level {level} is out of range")
            prev = (prev[:, None] * size + np.arange(size)[None, :]).reshape(-1)
            coords = np.concatenate([np.repeat(coords, size, axis=0), np.tile(np.arange(size), len(coords))[:, None]], 1)
        else:  # SPARSE_CSR
            seg = _index_vector(dm.ArraySegmentsType(), dm.ArraySegments(), f"array_segments at level {level}")
            idx = _index_vector(dm.ArrayIndicesType(), dm.ArrayIndices(), f"array_indices at level {level}")
            if len(seg) == 0 or prev.max(initial=0) + 1 >= len(seg) + (len(prev) == 0) or np.any(np.diff(seg) < 0) \
                    or seg[0] < 0 or seg[-1] > len(idx):
                raise ValueError(f"array_segments at level {level} are inconsistent")
            starts, counts = seg[prev], seg[prev + 1] - seg[prev]
            j = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts) + np.arange(counts.sum())
            coords = np.concatenate([np.repeat(coords, counts, axis=0), idx[j][:, None]], 1)
            prev = j
            size = None
        if order[level] >= rank:
            block_sizes[order[level] - rank] = size
    if len(prev) != values.size:
        raise ValueError(f"the sparsity describes {len(prev)} stored values, the buffer holds {values.size}")
    dense_index = np.zeros((len(prev), rank), np.int64)
    for level, dim in enumerate(order[:rank]):
        dense_index[:, dim] = coords[:, level]
    for level in range(rank, len(order)):
        b = order[level] - rank
        size = block_sizes.get(b)
        if size is None:
            raise ValueError("a block dimension must be DENSE")
        dense_index[:, block_map[b]] = dense_index[:, block_map[b]] * size + coords[:, level]
    if np.any(dense_index < 0) or np.any(dense_index >= np.asarray(shape, np.int64)):
        raise ValueError("a sparse index falls outside the dense shape")
    out = np.zeros(shape, values.dtype)
    out[tuple(dense_index.T)] = values.reshape(-1)
    return out
