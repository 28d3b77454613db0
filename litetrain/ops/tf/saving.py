"""TensorFlow's checkpoint I/O ops as Flex ops: Save/Restore (the V1 tensor-slice format the on-device
training guide's code uses) and SaveV2/RestoreV2 (the tensor-bundle format); the formats are in
checkpoint.py, written and read without TensorFlow."""
from __future__ import annotations

import os

import numpy as np

from . import checkpoint as tf_checkpoint
from ...core.ir import numpy_dtype
from .common import no_outputs as _no_outputs
from .common import tf_op


def _string(t, what) -> str:
    flat = np.asarray(t, dtype=object).reshape(-1)
    if flat.size != 1:
        raise ValueError(f"{what} must be one string, got {flat.size}")
    v = flat[0]
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def _strings(t) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in np.asarray(t, dtype=object).reshape(-1)]


def _check_names(names, values, what):
    if len(names) != len(values):
        raise ValueError(f"{what}: {len(names)} tensor names for {len(values)} tensors")
    if len(set(names)) != len(names):
        raise ValueError(f"{what}: tensor names repeat: {names}")


def _save(ctx, filename, tensor_names, *data, T=()):
    names = _strings(tensor_names)
    _check_names(names, data, "Save")
    tf_checkpoint.write_slices(_string(filename, "Save filename"), dict(zip(names, data)))


def _restore_any(path, names):
    """Read `names` from a V2 bundle at `path` if its .index exists, else from a V1 file (the
    fallback TensorFlow's RestoreV2 and Restore make too)."""
    if os.path.exists(path + ".index"):
        return tf_checkpoint.read_bundle(path, names)
    return tf_checkpoint.read_slices(path, names)


def _cast_restored(name, value, dtype, ctx_where="checkpoint"):
    want = numpy_dtype(dtype)
    if value.dtype != want:
        raise tf_checkpoint.TFCheckpointError(f"{ctx_where}: tensor {name!r} is {value.dtype}, the model expects {dtype}")
    return value


def _restore(ctx, file_pattern, tensor_name, dt="float32", preferred_shard=-1):
    path, name = _string(file_pattern, "Restore file_pattern"), _string(tensor_name, "Restore tensor_name")
    return _cast_restored(name, _restore_any(path, [name])[name], dt, path)


def _save_v2(ctx, prefix, tensor_names, shape_and_slices, *tensors, dtypes=()):
    names = _strings(tensor_names)
    _check_names(names, tensors, "SaveV2")
    if any(_strings(shape_and_slices)):
        raise ValueError("SaveV2 of partial slices (non-empty shape_and_slices) is not supported")
    tf_checkpoint.write_bundle(_string(prefix, "SaveV2 prefix"), dict(zip(names, tensors)))


def _restore_v2(ctx, prefix, tensor_names, shape_and_slices, dtypes=()):
    path, names = _string(prefix, "RestoreV2 prefix"), _strings(tensor_names)
    if len(names) != len(dtypes):
        raise ValueError(f"RestoreV2: {len(names)} tensor names for {len(dtypes)} dtypes")
    if any(_strings(shape_and_slices)):
        raise ValueError("RestoreV2 of partial slices (non-empty shape_and_slices) is not supported")
    found = _restore_any(path, names)
    return tuple(_cast_restored(n, found[n], d, path) for n, d in zip(names, dtypes))


def _shape_at_run_time(attrs, inputs):
    raise ValueError("the restored tensors' shapes are known only when the checkpoint is read")


tf_op("Save", infer=_no_outputs, kernel=_save, stateful=True, num_inputs=(2, None), attrs={"T": ()})
tf_op("Restore", infer=_shape_at_run_time, kernel=_restore, stateful=True, num_inputs=(2, 2),
      attrs={"dt": "float32", "preferred_shard": -1})
tf_op("SaveV2", infer=_no_outputs, kernel=_save_v2, stateful=True, num_inputs=(3, None), attrs={"dtypes": ()})
tf_op("RestoreV2", infer=_shape_at_run_time, kernel=_restore_v2, stateful=True, num_inputs=(3, 3),
      attrs={"dtypes": ()})

