"""TensorFlow ops that TensorFlow's converter leaves in training files as Flex custom ops, run natively.

A file converted with SELECT_TF_OPS (the on-device training guide's flow) keeps what TFLite has no
builtin for as Flex<Op> custom ops holding a NodeDef: the gradient kernels (ReluGrad,
Conv2DBackpropFilter, MaxPoolGrad, ...), the fused optimizer updates when they survive conversion
(ResourceApply*), and checkpoint I/O (Save/Restore in the V1 tensor-slice format, SaveV2/RestoreV2
in the tensor-bundle format, both in checkpoint.py here). Each is registered here with its
TensorFlow name (op "tf.<Name>") and attributes (NodeDef attrs with TensorFlow's defaults) and a NumPy
kernel written from TensorFlow's definition; resource inputs are litetrain's variable handles, so
the updates land in the interpreter's variable store. They are what a file already contains, never
emitted by litetrain's own gradient rules (which use builtins), so they are NOT_DIFFERENTIABLE.
"""
from __future__ import annotations

import os

import numpy as np

from . import checkpoint as tf_checkpoint
from ...core.ir import numpy_dtype
from ...core.registry import NOT_DIFFERENTIABLE, defop
from .flex import flex_op

CONV_ATTRS = {"T": "float32", "strides": (1, 1, 1, 1), "padding": "VALID", "explicit_paddings": (),
              "data_format": "NHWC", "dilations": (1, 1, 1, 1), "use_cudnn_on_gpu": True}
POOL_ATTRS = {"T": "float32", "ksize": (1, 1, 1, 1), "strides": (1, 1, 1, 1), "padding": "VALID",
              "explicit_paddings": (), "data_format": "NHWC"}


def tf_op(name, *, infer, kernel, attrs=None, stateful=False, num_inputs=(0, None)):
    return defop(f"tf.{name}", infer=infer, kernel=kernel, vjp=NOT_DIFFERENTIABLE, tflite=flex_op(name),
                 attrs=attrs, stateful=stateful, num_inputs=num_inputs)


# -- geometry (TensorFlow's GetWindowedOutputSizeVerbose) -------------------------------------------------
def _check_layout(data_format, strides, dilations=(1, 1, 1, 1)):
    if data_format != "NHWC":
        raise ValueError(f"data_format {data_format!r} is not supported (NHWC only)")
    if len(strides) != 4 or strides[0] != 1 or strides[3] != 1 or len(dilations) != 4 or dilations[0] != 1 or dilations[3] != 1:
        raise ValueError(f"strides {list(strides)} / dilations {list(dilations)} must be [1, h, w, 1]")


def _pads(size, k, stride, dilation, padding, explicit=(0, 0)):
    """(output size, pad before, pad after) along one axis, as TensorFlow computes them."""
    ek = (k - 1) * dilation + 1
    if padding == "SAME":
        out = -(-size // stride)
        total = max((out - 1) * stride + ek - size, 0)
        return out, total // 2, total - total // 2
    if padding == "VALID":
        return (size - ek) // stride + 1, 0, 0
    if padding == "EXPLICIT":
        before, after = explicit
        return (size + before + after - ek) // stride + 1, before, after
    raise ValueError(f"padding must be SAME, VALID or EXPLICIT, got {padding!r}")


def _geometry(h, w, kh, kw, strides, dilations, padding, explicit_paddings):
    ex = tuple(explicit_paddings) or (0,) * 8
    oh, pt, pb = _pads(h, kh, strides[1], dilations[1], padding, ex[2:4])
    ow, pl, pr = _pads(w, kw, strides[2], dilations[2], padding, ex[4:6])
    return oh, ow, (pt, pb), (pl, pr)


def _taps(kh, kw, sh, sw, dh, dw, oh, ow):
    """For each filter tap (i, j): the slices of the padded input it meets."""
    for i in range(kh):
        for j in range(kw):
            yield i, j, slice(i * dh, i * dh + (oh - 1) * sh + 1, sh), slice(j * dw, j * dw + (ow - 1) * sw + 1, sw)


# -- gradient kernels ---------------------------------------------------------------------------------
def _same_as(index, rank=None):
    def infer(attrs, inputs):
        shapes = [t.shape for t in inputs if rank is None or t is inputs[index]]
        if any(len(s) != len(shapes[0]) or any(a is not None and b is not None and a != b
                                                for a, b in zip(s, shapes[0])) for s in shapes):
            raise ValueError(f"inputs must have one shape, got {[list(s) for s in shapes]}")
        if rank is not None and len(inputs[index].shape) != rank:
            raise ValueError(f"input must be {rank}-D, got {list(inputs[index].shape)}")
        return [(inputs[index].dtype, inputs[index].shape)]
    return infer


tf_op("ReluGrad", infer=_same_as(0), num_inputs=(2, 2), attrs={"T": "float32"},
      kernel=lambda g, f, T="float32": np.where(f > 0, g, np.zeros_like(g)))
tf_op("Relu6Grad", infer=_same_as(0), num_inputs=(2, 2), attrs={"T": "float32"},
      kernel=lambda g, f, T="float32": np.where((f > 0) & (f < 6), g, np.zeros_like(g)))


def _bias_add_grad_infer(attrs, inputs):
    if not inputs[0].shape:
        raise ValueError("out_backprop must have rank >= 1")
    return [(inputs[0].dtype, (inputs[0].shape[-1],))]


def _bias_add_grad(g, T="float32", data_format="NHWC"):
    if data_format != "NHWC":
        raise ValueError(f"data_format {data_format!r} is not supported (NHWC only)")
    return g.sum(axis=tuple(range(g.ndim - 1)), dtype=g.dtype)


tf_op("BiasAddGrad", infer=_bias_add_grad_infer, kernel=_bias_add_grad, num_inputs=(1, 1),
      attrs={"T": "float32", "data_format": "NHWC"})


def _sizes_infer(size_input, like_input):
    def infer(attrs, inputs):
        info = inputs[size_input]
        if info.shape not in ((4,), (None,)) or info.dtype != "int32":
            raise ValueError(f"the sizes input must be int32[4], got {info.dtype}{list(info.shape)}")
        if info.data is not None:
            return [(inputs[like_input].dtype, tuple(int(d) for d in info.data))]
        return [(inputs[like_input].dtype, (None,) * 4)]
    return infer


def _filter_grad(x, filter_sizes, dy, T="float32", strides=(1, 1, 1, 1), padding="VALID", explicit_paddings=(),
                 data_format="NHWC", dilations=(1, 1, 1, 1), use_cudnn_on_gpu=True):
    """Conv2DBackpropFilter: dW[i, j, c, o] = sum over n, y, x of input(tap i, j)[c] * dy[o]."""
    _check_layout(data_format, strides, dilations)
    kh, kw, cin, cout = (int(d) for d in filter_sizes)
    n, h, w, c = x.shape
    oh, ow, ph, pw = _geometry(h, w, kh, kw, strides, dilations, padding, explicit_paddings)
    if c != cin or dy.shape != (n, oh, ow, cout):
        raise ValueError(f"input {list(x.shape)}, filter {[kh, kw, cin, cout]} and out_backprop "
                         f"{list(dy.shape)} do not fit (expected out_backprop {[n, oh, ow, cout]})")
    xp = np.pad(x, ((0, 0), ph, pw, (0, 0)))
    dw = np.zeros((kh, kw, cin, cout), x.dtype)
    flat = dy.reshape(-1, cout)
    for i, j, rows, cols in _taps(kh, kw, strides[1], strides[2], dilations[1], dilations[2], oh, ow):
        dw[i, j] = xp[:, rows, cols, :].reshape(-1, cin).T @ flat
    return dw


def _input_grad(input_sizes, wt, dy, T="float32", strides=(1, 1, 1, 1), padding="VALID", explicit_paddings=(),
                data_format="NHWC", dilations=(1, 1, 1, 1), use_cudnn_on_gpu=True):
    """Conv2DBackpropInput: each tap scatters dy @ W[i, j]^T back to the input pixels it read."""
    _check_layout(data_format, strides, dilations)
    n, h, w, cin = (int(d) for d in input_sizes)
    kh, kw, _, cout = wt.shape
    oh, ow, ph, pw = _geometry(h, w, kh, kw, strides, dilations, padding, explicit_paddings)
    if wt.shape[2] != cin or dy.shape != (n, oh, ow, cout):
        raise ValueError(f"input_sizes {[n, h, w, cin]}, filter {list(wt.shape)} and out_backprop "
                         f"{list(dy.shape)} do not fit (expected out_backprop {[n, oh, ow, cout]})")
    dxp = np.zeros((n, h + sum(ph), w + sum(pw), cin), dy.dtype)
    for i, j, rows, cols in _taps(kh, kw, strides[1], strides[2], dilations[1], dilations[2], oh, ow):
        dxp[:, rows, cols, :] += dy @ wt[i, j].T
    return dxp[:, ph[0]:ph[0] + h, pw[0]:pw[0] + w, :]


tf_op("Conv2DBackpropFilter", infer=_sizes_infer(1, 0), kernel=_filter_grad, num_inputs=(3, 3), attrs=CONV_ATTRS)
tf_op("Conv2DBackpropInput", infer=_sizes_infer(0, 1), kernel=_input_grad, num_inputs=(3, 3), attrs=CONV_ATTRS)


def _max_pool_grad(x, y, dy, T="float32", ksize=(1, 1, 1, 1), strides=(1, 1, 1, 1), padding="VALID",
                   explicit_paddings=(), data_format="NHWC"):
    """MaxPoolGrad: each window's gradient goes to its first maximum in row-major order (as
    TensorFlow's CPU kernel picks it); overlapping windows add up."""
    _check_layout(data_format, strides)
    if len(ksize) != 4 or ksize[0] != 1 or ksize[3] != 1:
        raise ValueError(f"ksize {list(ksize)} must be [1, h, w, 1]")
    kh, kw = ksize[1], ksize[2]
    n, h, w, c = x.shape
    oh, ow, ph, pw = _geometry(h, w, kh, kw, strides, (1, 1, 1, 1), padding, explicit_paddings)
    if dy.shape != (n, oh, ow, c):
        raise ValueError(f"grad {list(dy.shape)} does not fit input {list(x.shape)} (expected {[n, oh, ow, c]})")
    xp = np.pad(x, ((0, 0), ph, pw, (0, 0)), constant_values=-np.inf)
    best = np.full((n, oh, ow, c), -np.inf, x.dtype)
    arg = np.zeros((n, oh, ow, c), np.int64)
    for k, (i, j, rows, cols) in enumerate(_taps(kh, kw, strides[1], strides[2], 1, 1, oh, ow)):
        tap = xp[:, rows, cols, :]
        better = tap > best
        best = np.where(better, tap, best)
        arg = np.where(better, k, arg)
    dxp = np.zeros(xp.shape, dy.dtype)
    nn, yy, xx, cc = np.indices((n, oh, ow, c))
    np.add.at(dxp, (nn, yy * strides[1] + arg // kw, xx * strides[2] + arg % kw, cc), dy)
    return dxp[:, ph[0]:ph[0] + h, pw[0]:pw[0] + w, :]


tf_op("MaxPoolGrad", infer=_same_as(0, rank=4), kernel=_max_pool_grad, num_inputs=(3, 3), attrs=POOL_ATTRS)


# -- fused optimizer updates (resource inputs are variable handles) -------------------------------------
def _handle(h):
    return h if isinstance(h, str) else str(np.asarray(h).reshape(()))


def _update(ctx, handle, value):
    name = _handle(handle)
    old = ctx.variables.read(name)
    if old.shape != value.shape:
        raise ValueError(f"variable {name!r} is {list(old.shape)}; the update is {list(value.shape)}")
    ctx.variables.assign(name, value.astype(old.dtype, copy=False))


def _apply_gd(ctx, var, alpha, delta, T="float32", use_locking=False):
    _update(ctx, var, ctx.variables.read(_handle(var)) - alpha * delta)


def _apply_adam(ctx, var, m, v, beta1_power, beta2_power, lr, beta1, beta2, epsilon, grad, T="float32",
                use_locking=False, use_nesterov=False):
    """ResourceApplyAdam (training_ops.cc): m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2);
    var -= lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps) (Nesterov: (m b1 + g (1 - b1)))."""
    read = ctx.variables.read
    m_new = read(_handle(m)) + (grad - read(_handle(m))) * (1 - beta1)
    v_new = read(_handle(v)) + (np.square(grad) - read(_handle(v))) * (1 - beta2)
    alpha = lr * np.sqrt(1 - beta2_power) / (1 - beta1_power)
    step = (m_new * beta1 + grad * (1 - beta1)) if use_nesterov else m_new
    _update(ctx, m, m_new)
    _update(ctx, v, v_new)
    _update(ctx, var, read(_handle(var)) - alpha * step / (np.sqrt(v_new) + epsilon))


def _apply_keras_momentum(ctx, var, accum, lr, grad, momentum, T="float32", use_locking=False, use_nesterov=False):
    """ResourceApplyKerasMomentum: accum = accum * momentum - lr * grad; var += accum
    (Nesterov: var += accum * momentum - lr * grad)."""
    read = ctx.variables.read
    acc = read(_handle(accum)) * momentum - lr * grad
    _update(ctx, accum, acc)
    _update(ctx, var, read(_handle(var)) + (acc * momentum - lr * grad if use_nesterov else acc))


def _no_outputs(attrs, inputs):
    return []


OPT = {"T": "float32", "use_locking": False}
tf_op("ResourceApplyGradientDescent", infer=_no_outputs, kernel=_apply_gd, stateful=True, num_inputs=(3, 3), attrs=OPT)
tf_op("ResourceApplyAdam", infer=_no_outputs, kernel=_apply_adam, stateful=True, num_inputs=(10, 10),
      attrs={**OPT, "use_nesterov": False})
tf_op("ResourceApplyKerasMomentum", infer=_no_outputs, kernel=_apply_keras_momentum, stateful=True,
      num_inputs=(5, 5), attrs={**OPT, "use_nesterov": False})


# -- resource variables as Flex ops (older converters; today's emits the builtins) ------------------------------
def _var_handle(ctx, container="", shared_name="", dtype="float32", shape=(), allowed_devices=(), debug_name=""):
    if not shared_name:
        raise ValueError("VarHandleOp without a shared_name cannot name a variable in the store")
    return shared_name


def _read_infer(attrs, inputs):
    raise ValueError("ReadVariableOp's shape is that of the variable, known when the file runs")


def _assign_op(combine):
    def kernel(ctx, handle, value, dtype="float32", validate_shape=False):
        name = _handle(handle)
        if combine is None:
            ctx.variables.assign(name, np.asarray(value, numpy_dtype(dtype)))
        else:
            _update(ctx, handle, combine(ctx.variables.read(name), value))
    return kernel


tf_op("VarHandleOp", infer=lambda attrs, ins: [("resource", ())], kernel=_var_handle, stateful=True,
      num_inputs=(0, 0), attrs={"container": "", "shared_name": "", "dtype": "float32", "shape": (),
                                 "allowed_devices": (), "debug_name": ""})
tf_op("ReadVariableOp", infer=_read_infer, kernel=lambda ctx, h, dtype="float32": ctx.variables.read(_handle(h)),
      stateful=True, num_inputs=(1, 1), attrs={"dtype": "float32"})
tf_op("AssignVariableOp", infer=_no_outputs, kernel=_assign_op(None), stateful=True, num_inputs=(2, 2),
      attrs={"dtype": "float32", "validate_shape": False})
tf_op("AssignAddVariableOp", infer=_no_outputs, kernel=_assign_op(np.add), stateful=True, num_inputs=(2, 2),
      attrs={"dtype": "float32"})
tf_op("AssignSubVariableOp", infer=_no_outputs, kernel=_assign_op(np.subtract), stateful=True, num_inputs=(2, 2),
      attrs={"dtype": "float32"})


# -- checkpoints ----------------------------------------------------------------------------------------
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

