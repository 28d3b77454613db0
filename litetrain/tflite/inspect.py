"""What a .tflite file holds: signatures, variables, ops, custom ops, and who can run it.

`inspect_model(path or bytes)` returns a plain dict (JSON-ready); `format_inspection` prints it
for `litetrain inspect FILE`. The op census reads the FlatBuffer directly, so a file litetrain
cannot load (an op it lacks) is still described, with the load error said plainly.
"""
from __future__ import annotations

import os
from collections import Counter

from ..core.ir import DTYPE_FROM_CODE, format_shape
from .schema import enum_members, enum_names, schema_module


def _shape(t) -> list:
    shape = [int(d) for d in t.ShapeAsNumpy()] if not t.ShapeIsNone() else []
    if not t.ShapeSignatureIsNone():
        shape = [None if int(d) == -1 else int(d) for d in t.ShapeSignatureAsNumpy()]
    return shape


def _tensor(sg, index) -> dict:
    t = sg.Tensors(index)
    return {"name": (t.Name() or b"").decode("utf-8", "replace"),
            "dtype": DTYPE_FROM_CODE.get(t.Type(), enum_names("TensorType").get(t.Type(), str(t.Type())).lower()),
            "shape": _shape(t)}


def inspect_model(source) -> dict:
    """Describe a .tflite file (a path or its bytes)."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            data = f.read()
    else:
        data = bytes(source)
    from .reader import UnsupportedOpError, read_model
    try:  # a malformed file raises InvalidModelError here, before the raw pass below reads it
        program, load_error = read_model(data), None
    except UnsupportedOpError as e:  # the file is sound; litetrain lacks some of its ops
        program, load_error = None, str(e)
    model = schema_module("Model").Model.GetRootAs(data, 0)
    custom_code = enum_members("BuiltinOperator")["CUSTOM"]
    names = enum_names("BuiltinOperator")
    codes = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        codes.append((oc.CustomCode() or b"").decode("utf-8", "replace") if code == custom_code
                     else names.get(code, f"BUILTIN_{code}"))
    ops, per_subgraph, custom = Counter(), [], set()
    for si in range(model.SubgraphsLength()):
        sg = model.Subgraphs(si)
        counts = Counter()
        for oi in range(sg.OperatorsLength()):
            idx = sg.Operators(oi).OpcodeIndex()
            name = codes[idx] if 0 <= idx < len(codes) else f"<bad opcode index {idx}>"
            counts[name] += 1
            if 0 <= idx < len(codes) and model.OperatorCodes(idx).CustomCode():
                custom.add(name)
        ops.update(counts)
        per_subgraph.append({"index": si, "name": (sg.Name() or b"").decode("utf-8", "replace"),
                             "operators": sum(counts.values())})
    signatures = []
    for i in range(model.SignatureDefsLength()):
        sd = model.SignatureDefs(i)
        sg = model.Subgraphs(sd.SubgraphIndex())
        sig = {"name": sd.SignatureKey().decode("utf-8", "replace"), "subgraph": sd.SubgraphIndex()}
        for what in ("Inputs", "Outputs"):
            sig[what.lower()] = [{"key": getattr(sd, what)(j).Name().decode("utf-8", "replace"),
                                  **_tensor(sg, getattr(sd, what)(j).TensorIndex())}
                                 for j in range(getattr(sd, f"{what}Length")())]
        signatures.append(sig)
    if not signatures and model.SubgraphsLength():
        sg = model.Subgraphs(0)
        signatures.append({"name": "serving_default (no SignatureDefs)", "subgraph": 0,
                           "inputs": [_tensor(sg, int(i)) for i in sg.InputsAsNumpy()],
                           "outputs": [_tensor(sg, int(i)) for i in sg.OutputsAsNumpy()]})
    variables = None
    if program is not None:
        variables = [{"name": v.name, "dtype": v.dtype, "shape": list(v.shape), "trainable": bool(v.trainable),
                      "kind": v.kind} for v in program.variables.values()]
    flex = sorted(c for c in custom if c.startswith("Flex"))
    others = sorted(c for c in custom if not c.startswith("Flex"))
    if others:
        litert = f"no: it needs custom op(s) {', '.join(others)}, which stock LiteRT lacks"
    elif flex:
        litert = ("no: it has TensorFlow (Flex) ops, which need TensorFlow Lite's Flex delegate "
                  "(tf.lite.Interpreter in tensorflow<=2.18); ai-edge-litert has none")
    else:
        litert = "yes: builtin operators only"
    metadata = [(model.Metadata(i).Name() or b"").decode("utf-8", "replace") for i in range(model.MetadataLength())]
    return {"size_bytes": len(data), "description": (model.Description() or b"").decode("utf-8", "replace"),
            "subgraphs": per_subgraph, "signatures": signatures, "variables": variables,
            "op_counts": dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
            "custom_ops": sorted(custom), "flex_ops": flex, "metadata": metadata,
            "litert_can_run": litert, "litetrain_can_run": "yes" if load_error is None else f"no: {load_error}"}


def format_inspection(info: dict, path: str = "") -> str:
    lines = [f"{path or 'model'}: {info['size_bytes']} bytes, {len(info['subgraphs'])} subgraph(s)"
             + (f", description {info['description']!r}" if info["description"] else "")]
    lines.append("signatures:")
    for sig in info["signatures"]:
        lines.append(f"  {sig['name']} (subgraph {sig['subgraph']})")
        for what in ("inputs", "outputs"):
            for t in sig[what]:
                key = t.get("key", t["name"])
                lines.append(f"    {what[:-1]:6} {key}: {t['dtype']}{format_shape(t['shape'])}")
    if info["variables"] is None:
        lines.append("variables: unknown (litetrain cannot load the file; see below)")
    else:
        lines.append(f"variables ({len(info['variables'])}):")
        for v in info["variables"]:
            lines.append(f"  {v['name']}: {v['dtype']}{format_shape(v['shape'])}"
                         f"{'  trainable' if v['trainable'] else ''}")
    total = sum(info["op_counts"].values())
    lines.append(f"ops ({total} operators, {len(info['op_counts'])} types):")
    lines.extend(f"  {n:5d}  {name}" for name, n in info["op_counts"].items())
    lines.append(f"custom ops: {', '.join(info['custom_ops']) or 'none'}")
    if info["metadata"]:
        lines.append(f"metadata: {', '.join(info['metadata'])}")
    lines.append(f"stock LiteRT can run it: {info['litert_can_run']}")
    lines.append(f"litetrain can run it: {info['litetrain_can_run']}")
    return "\n".join(lines)
