"""TensorFlow ops that TensorFlow's converter leaves in training files as Flex custom ops, run natively.

A file converted with SELECT_TF_OPS (the on-device training guide's flow) keeps what TFLite has no
builtin for as Flex<Op> custom ops holding a NodeDef (flex.py, proto.py). Each op litetrain runs is
registered with its TensorFlow name (op "tf.<Name>"), its NodeDef attributes with TensorFlow's
defaults, and a NumPy kernel written from TensorFlow's definition (common.py says how):
- nn.py: gradient kernels of activations, convolutions (also depthwise) and pooling (max, average);
- batch_norm.py: FusedBatchNormV3 and its gradient;
- lists.py: tensor lists (TensorListReserve/SetItem/GetItem/Stack/...) for While loops, AddN, ZerosLike;
- shapes.py: BroadcastGradientArgs, StridedSliceGrad;
- variables.py: resource variables and fused optimizer updates (ResourceApply*);
- saving.py: Save/Restore and SaveV2/RestoreV2 (the checkpoint formats are in checkpoint.py).
This package is imported when a file with a Flex op is read (tflite/reader.py), never by litetrain's
own conversion: its gradient rules emit builtins only.
"""
from __future__ import annotations

from . import batch_norm, lists, nn, saving, shapes, variables  # noqa: F401  (registers the ops)
