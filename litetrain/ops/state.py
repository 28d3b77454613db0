"""State and I/O ops: resource variables, CALL_ONCE initialisation, checkpoint save/restore.

Variables live in the runtime's variable store, shared by every signature of one interpreter.
A resource handle at run time is the variable's shared_name. The two checkpoint ops are the
file's only custom ops; a model converted with portable checkpoints has none.
"""
from __future__ import annotations

import numpy as np

from . import checkpoint
from ..core.ir import numpy_dtype
from ..core.registry import NOT_DIFFERENTIABLE, Builtin, Custom, defop


def _var_handle_kernel(ctx, container="", shared_name=""):
    return shared_name


def _handle_name(handle):
    return handle if isinstance(handle, str) else str(np.asarray(handle).reshape(()))


def _read_infer(attrs, inputs):
    raise ValueError("read_variable takes its dtype and shape from the variable it reads")


defop("var_handle", infer=lambda attrs, ins: [("resource", ())], kernel=_var_handle_kernel,
      vjp=NOT_DIFFERENTIABLE, stateful=True, num_inputs=(0, 0),
      attrs={"container": "", "shared_name": ""},
      tflite=Builtin("VAR_HANDLE", "VarHandleOptions", {"container": "str", "shared_name": "str"}))

defop("read_variable", infer=_read_infer, kernel=lambda ctx, h: ctx.variables.read(_handle_name(h)),
      vjp=NOT_DIFFERENTIABLE, stateful=True, num_inputs=(1, 1),
      tflite=Builtin("READ_VARIABLE", "ReadVariableOptions"))

defop("assign_variable", infer=lambda attrs, ins: [],
      kernel=lambda ctx, h, v: ctx.variables.assign(_handle_name(h), v),
      vjp=NOT_DIFFERENTIABLE, stateful=True, num_inputs=(2, 2),
      tflite=Builtin("ASSIGN_VARIABLE", "AssignVariableOptions"))

defop("call_once", infer=lambda attrs, ins: [], kernel=lambda ctx, init_subgraph_index=0: ctx.call_once(init_subgraph_index),
      vjp=NOT_DIFFERENTIABLE, stateful=True, num_inputs=(0, 0), attrs={"init_subgraph_index": 0},
      tflite=Builtin("CALL_ONCE", "CallOnceOptions", {"init_subgraph_index": "int"}))


def _path_of(path_tensor) -> str:
    value = np.asarray(path_tensor, dtype=object).reshape(-1)
    if value.size != 1:
        raise checkpoint.CheckpointError(f"checkpoint_path must be one string, got {value.size}")
    v = value[0]
    if isinstance(v, bytes):
        try:
            v = v.decode()
        except UnicodeDecodeError:
            raise checkpoint.CheckpointError("checkpoint_path is not UTF-8") from None
    if not isinstance(v, str) or not v:
        raise checkpoint.CheckpointError(f"checkpoint_path must be a non-empty string, got {v!r}")
    if "\0" in v:
        raise checkpoint.CheckpointError(f"checkpoint_path {v!r} contains a NUL character")
    return v


def _save_kernel(ctx, path, *values, names=()):
    if len(values) != len(names):
        raise ValueError(f"save_checkpoint got {len(values)} values for {len(names)} names")
    checkpoint.save(_path_of(path), dict(zip(names, values)), {"format": "litetrain"})


def _restore_infer(attrs, inputs):
    return [(d, tuple(s)) for d, s in zip(attrs["dtypes"], attrs["shapes"])]


def _restore_kernel(ctx, path, names=(), dtypes=(), shapes=()):
    p = _path_of(path)
    found = checkpoint.load(p, require_checksum=getattr(ctx.executor, "strict_checkpoints", False))
    # shapes are checked against the variables as they are now (a variable may have been resized);
    # a dim the model declares unknown (a resizable variable, e.g. a growing head) takes any size
    expected = {n: (d, tuple(s) if None in tuple(s) else ctx.variables.read(n).shape if ctx.variables.has(n)
                    else tuple(s)) for n, d, s in zip(names, dtypes, shapes)}
    checkpoint.check_against(found, expected, f"checkpoint {p!r}")
    return tuple(found[n].astype(numpy_dtype(d), copy=False) for n, d in zip(names, dtypes))


defop("save_checkpoint", infer=lambda attrs, ins: [], kernel=_save_kernel, vjp=NOT_DIFFERENTIABLE,
      stateful=True, attrs={"names": ()}, num_inputs=(1, None), tflite=Custom("LitetrainSaveCheckpoint"))
defop("restore_checkpoint", infer=_restore_infer, kernel=_restore_kernel, vjp=NOT_DIFFERENTIABLE,
      stateful=True, attrs={"names": (), "dtypes": (), "shapes": ()}, num_inputs=(1, 1),
      tflite=Custom("LitetrainRestoreCheckpoint"))
