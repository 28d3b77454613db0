"""TensorFlow's "Flex" ops in .tflite files: custom ops named Flex<OpType> whose options hold the
TensorFlow NodeDef to run (what TensorFlow's converter emits with SELECT_TF_OPS).

A Flex op's custom_options are a FlexBuffer vector [op type, serialized NodeDef]; the NodeDef's
attributes (strides, padding, dtypes, ...) become the IR node's attributes. litetrain registers
each TensorFlow op it implements natively (litetrain/ops/tf/__init__.py) with `flex_op(...)`, whose
Custom entry decodes and re-encodes that format, so a file TensorFlow made reads into ordinary IR
nodes and writes back as Flex ops with the same attributes. (The NodeDef written back names no
inputs and attributes in sorted order; TensorFlow's converter writes one empty input name per
input, which only TensorFlow's own Flex delegate looks at.)
"""
from __future__ import annotations

from functools import partial

from flatbuffers import flexbuffers

from ...core.registry import Custom
from .proto import decode_node_def, encode_node_def

PREFIX = "Flex"


def decode_options(op_type: str, raw: bytes) -> dict:
    """Flex custom options -> the NodeDef's attributes (internal `_`-prefixed ones dropped)."""
    root = flexbuffers.GetRoot(bytearray(raw))
    if not root.IsVector or len(root.AsVector) < 2:
        raise ValueError("Flex options must be a FlexBuffer vector [op type, NodeDef]")
    vec = root.AsVector
    name, node = vec[0], vec[1]
    if not name.IsString or not (node.IsString or node.IsBlob):
        raise ValueError("Flex options must hold two strings: the op type and a serialized NodeDef")
    declared = bytes(name.AsStringBytes).decode("utf-8", "replace")
    node_def = decode_node_def(bytes(node.AsStringBytes if node.IsString else node.AsBlob))
    if declared != op_type or node_def["op"] != op_type:
        raise ValueError(f"Flex{op_type} holds a NodeDef of op {node_def['op'] or declared!r}")
    return {k: v for k, v in node_def["attrs"].items() if not k.startswith("_")}


def encode_options(op_type: str, attrs: dict) -> bytes:
    """The inverse of decode_options: [op type, NodeDef] as TensorFlow's converter writes it."""
    node_def = encode_node_def(op_type, op_type, attrs)
    b = flexbuffers.Builder()
    with b.Vector():
        b.String(op_type)
        b._WriteBlob(node_def, append_zero=True, type_=flexbuffers.Type.STRING)  # a string of any bytes
    return bytes(b.Finish())


def flex_op(op_type: str) -> Custom:
    """The file mapping of TensorFlow op `op_type` as a Flex custom op."""
    return Custom(PREFIX + op_type, decode=partial(decode_options, op_type), encode=partial(encode_options, op_type))
