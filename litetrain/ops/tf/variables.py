"""TensorFlow's resource-variable and fused optimizer ops as Flex ops: VarHandleOp, ReadVariableOp,
Assign(Add|Sub)VariableOp (what older converters wrote; today's writes TFLite's builtins) and the
ResourceApply* updates (training_ops.cc) where they survive conversion. Resource inputs are
litetrain's variable handles, so reads and updates use the interpreter's variable store.

TensorFlow 2.18's converter turns the Keras optimizers' updates (SGD, momentum, Adam, AdamW,
RMSprop, Adagrad) into TFLite builtins, and the legacy optimizers' fused ResourceApply* ops too
(fixtures/make_tf_fixtures.py says how that was checked); the fixtures made with it
(fixtures/tf/mlp_*) check that those train as TensorFlow Lite trains them.
"""
from __future__ import annotations

import numpy as np

from ...core.ir import numpy_dtype
from .common import handle, no_outputs, tf_op, update


def _apply_gd(ctx, var, alpha, delta, T="float32", use_locking=False):
    update(ctx, var, ctx.variables.read(handle(var)) - alpha * delta)


def _apply_adam(ctx, var, m, v, beta1_power, beta2_power, lr, beta1, beta2, epsilon, grad, T="float32",
                use_locking=False, use_nesterov=False):
    """ResourceApplyAdam (training_ops.cc): m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2);
    var -= lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps) (Nesterov: (m b1 + g (1 - b1)))."""
    read = ctx.variables.read
    m_new = read(handle(m)) + (grad - read(handle(m))) * (1 - beta1)
    v_new = read(handle(v)) + (np.square(grad) - read(handle(v))) * (1 - beta2)
    alpha = lr * np.sqrt(1 - beta2_power) / (1 - beta1_power)
    step = (m_new * beta1 + grad * (1 - beta1)) if use_nesterov else m_new
    update(ctx, m, m_new)
    update(ctx, v, v_new)
    update(ctx, var, read(handle(var)) - alpha * step / (np.sqrt(v_new) + epsilon))


def _apply_keras_momentum(ctx, var, accum, lr, grad, momentum, T="float32", use_locking=False, use_nesterov=False):
    """ResourceApplyKerasMomentum: accum = accum * momentum - lr * grad; var += accum
    (Nesterov: var += accum * momentum - lr * grad)."""
    read = ctx.variables.read
    acc = read(handle(accum)) * momentum - lr * grad
    update(ctx, accum, acc)
    update(ctx, var, read(handle(var)) + (acc * momentum - lr * grad if use_nesterov else acc))


OPT = {"T": "float32", "use_locking": False}
tf_op("ResourceApplyGradientDescent", infer=no_outputs, kernel=_apply_gd, stateful=True, num_inputs=(3, 3), attrs=OPT)
tf_op("ResourceApplyAdam", infer=no_outputs, kernel=_apply_adam, stateful=True, num_inputs=(10, 10),
      attrs={**OPT, "use_nesterov": False})
tf_op("ResourceApplyKerasMomentum", infer=no_outputs, kernel=_apply_keras_momentum, stateful=True,
      num_inputs=(5, 5), attrs={**OPT, "use_nesterov": False})


def _var_handle(ctx, container="", shared_name="", dtype="float32", shape=(), allowed_devices=(), debug_name=""):
    if not shared_name:
        raise ValueError("VarHandleOp without a shared_name cannot name a variable in the store")
    return shared_name


def _read_infer(attrs, inputs):
    raise ValueError("ReadVariableOp's shape is that of the variable, known when the file runs")


def _assign_op(combine):
    def kernel(ctx, h, value, dtype="float32", validate_shape=False):
        name = handle(h)
        if combine is None:
            ctx.variables.assign(name, np.asarray(value, numpy_dtype(dtype)))
        else:
            update(ctx, h, combine(ctx.variables.read(name), value))
    return kernel


tf_op("VarHandleOp", infer=lambda attrs, ins: [("resource", ())], kernel=_var_handle, stateful=True,
      num_inputs=(0, 0), attrs={"container": "", "shared_name": "", "dtype": "float32", "shape": (),
                                 "allowed_devices": (), "debug_name": ""})
tf_op("ReadVariableOp", infer=_read_infer, kernel=lambda ctx, h, dtype="float32": ctx.variables.read(handle(h)),
      stateful=True, num_inputs=(1, 1), attrs={"dtype": "float32"})
tf_op("AssignVariableOp", infer=no_outputs, kernel=_assign_op(None), stateful=True, num_inputs=(2, 2),
      attrs={"dtype": "float32", "validate_shape": False})
tf_op("AssignAddVariableOp", infer=no_outputs, kernel=_assign_op(np.add), stateful=True, num_inputs=(2, 2),
      attrs={"dtype": "float32"})
tf_op("AssignSubVariableOp", infer=no_outputs, kernel=_assign_op(np.subtract), stateful=True, num_inputs=(2, 2),
      attrs={"dtype": "float32"})
