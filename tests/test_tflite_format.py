"""The .tflite writer and reader: round trips, the file layout TFLite expects, LiteRT as the oracle,
and bad files (truncated, random, out-of-range indices, unknown ops) getting InvalidModelError."""
from __future__ import annotations

import random
import struct

import numpy as np
import pytest

import litetrain.ops  # noqa: F401  (registers the ops the tables below walk)
from litetrain.core.ir import DTYPES, Function, Node, Program, Signature, Variable
from litetrain.core.registry import OPS, Builtin, get_op
from litetrain.ops.quantization import QUANTIZED
from litetrain.runtime import Executor
from litetrain.tflite import InvalidModelError, UnsupportedOpError, read_model, write_model
from litetrain.tflite.schema import enum_members, schema_module

Model = schema_module("Model").Model


def attrs(op, **kw):
    return get_op(op).check_attrs(kw)


def litert():
    return pytest.importorskip("ai_edge_litert.interpreter",
                               reason="LiteRT (ai-edge-litert) is the oracle for the file layout")


# -- programs built by hand --------------------------------------------------------------------------
def dense_program():
    """x float32[?, 4] -> fully_connected(w[3, 4], b[3]) -> relu -> y."""
    rng = np.random.default_rng(0)
    fn = Function("infer")
    x = fn.add_tensor("x", "float32", (None, 4))
    w = fn.add_tensor("w", "float32", (3, 4), rng.standard_normal((3, 4)).astype(np.float32))
    b = fn.add_tensor("b", "float32", (3,), rng.standard_normal(3).astype(np.float32))
    h = fn.add_tensor("h", "float32", (None, 3))
    y = fn.add_tensor("y", "float32", (None, 3))
    fn.nodes = [Node("fully_connected", [x, w, b], [h], attrs("fully_connected")), Node("relu", [h], [y], {})]
    fn.inputs, fn.outputs = [x], [y]
    return Program([fn], [Signature("infer", 0, {"x": x}, {"y": y})])


def ops_program():
    """add, mul, softmax, reshape, mean on x float32[2, 3]."""
    fn = Function("main")
    x = fn.add_tensor("x", "float32", (2, 3))
    c = fn.add_tensor("c", "float32", (2, 3), np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3))
    a = fn.add_tensor("a", "float32", (2, 3))
    m = fn.add_tensor("m", "float32", (2, 3))
    s = fn.add_tensor("s", "float32", (2, 3))
    shape = fn.add_tensor("shape", "int32", (2,), np.array([3, 2], np.int32))
    r = fn.add_tensor("r", "float32", (3, 2))
    axis = fn.add_tensor("axis", "int32", (1,), np.array([0], np.int32))
    out = fn.add_tensor("out", "float32", (2,))
    fn.nodes = [Node("add", [x, c], [a], attrs("add", fused_activation_function="RELU")),
                Node("mul", [a, x], [m], attrs("mul")),
                Node("softmax", [m], [s], attrs("softmax", beta=0.5)),
                Node("reshape", [s, shape], [r], attrs("reshape", new_shape=(3, 2))),
                Node("mean", [r, axis], [out], attrs("mean"))]
    fn.inputs, fn.outputs = [x], [out]
    return Program([fn], [Signature("run", 0, {"x": x}, {"out": out})])


def full_program():
    """Two functions, variables, a custom op with tuple attrs, strings, defaults and metadata."""
    p = dense_program()
    fn = p.functions[0]
    y = fn.outputs[0]
    g = fn.add_tensor("g", "float32", (None, 3))
    fn.nodes.append(Node("gelu", [y], [g], attrs("gelu", approximate=True)))  # code 150 > 127
    path = fn.add_tensor("path", "string", (), np.array(b"/tmp/ckpt", dtype=object))
    names = fn.add_tensor("names", "string", (2,), np.array([b"w", b"\xffbias"], dtype=object))
    fn.nodes.append(Node("save_checkpoint", [path, 1, 2], [], {"names": ("w", "b")}))
    ra = fn.add_tensor("ra", "float32", (3, 4))
    rb = fn.add_tensor("rb", "int32", ())
    fn.nodes.append(Node("restore_checkpoint", [path], [ra, rb], {
        "names": ("a", "b"), "dtypes": ("float32", "int32"), "shapes": ((3, 4), ())}))
    lr = fn.add_tensor("lr", "float32", ())
    fn.inputs.append(lr)
    fn.outputs += [g, names]
    init = Function("init")
    h = init.add_tensor("w_handle", "resource", ())
    w0 = init.add_tensor("w_init", "float32", (3, 4), np.arange(12, dtype=np.float32).reshape(3, 4))
    hs = init.add_tensor("step_handle", "resource", ())
    s0 = init.add_tensor("step_init", "int64", (), np.array(7, np.int64))
    init.nodes = [Node("var_handle", [], [h], attrs("var_handle", shared_name="dense/w")),
                  Node("assign_variable", [h, w0], [], {}),
                  Node("var_handle", [], [hs], attrs("var_handle", container="c", shared_name="step")),
                  Node("assign_variable", [hs, s0], [], {})]
    p.functions.append(init)
    p.init_function = 1
    p.signatures = [Signature("infer", 0, {"x": 0, "lr": lr}, {"y": y, "g": g, "names": names}, defaults={
        "lr": np.array(0.1, np.float32), "x": np.ones((2, 4), np.float32)})]
    p.variables = {"dense/w": Variable("dense/w", "float32", (3, 4), init.tensors[w0].data, True, "param"),
                   "step": Variable("step", "int64", (), init.tensors[s0].data, False, "slot"),
                   "cache": Variable("cache", "float32", (None, 3), np.empty((0,), np.float32))}
    p.metadata = {"my_meta": b"\x00\x01binary"}
    p.description = "a test model"
    return p


def assert_same_program(p: Program, q: Program):
    assert [f.name for f in q.functions] == [f.name for f in p.functions]
    for f, g in zip(p.functions, q.functions):
        assert (g.inputs, g.outputs) == (f.inputs, f.outputs)
        assert len(g.tensors) == len(f.tensors)
        for a, b in zip(f.tensors, g.tensors):
            assert (b.name, b.dtype, b.shape) == (a.name, a.dtype, tuple(a.shape))
            assert (a.data is None) == (b.data is None), a.name
            if a.data is not None:
                assert b.data.shape == np.shape(a.data)
                if a.dtype == "string":
                    assert b.data.tolist() == np.asarray(a.data, dtype=object).tolist()
                else:
                    assert b.data.dtype == a.data.dtype and b.data.tobytes() == a.data.tobytes()
        assert [(n.op, n.inputs, n.outputs, n.attrs) for n in g.nodes] == \
               [(n.op, n.inputs, n.outputs, get_op(n.op).check_attrs(n.attrs)) for n in f.nodes]
    assert [(s.key, s.function, s.inputs, s.outputs) for s in q.signatures] == \
           [(s.key, s.function, s.inputs, s.outputs) for s in p.signatures]
    for s, t in zip(p.signatures, q.signatures):
        assert t.defaults.keys() == s.defaults.keys()
        for k in s.defaults:
            assert t.defaults[k].dtype == s.defaults[k].dtype and np.array_equal(t.defaults[k], s.defaults[k])
    assert q.variables.keys() == p.variables.keys()
    for v in p.variables.values():
        u = q.variables[v.name]
        assert (u.dtype, u.shape, u.trainable, u.kind) == (v.dtype, v.shape, v.trainable, v.kind)
        assert u.initial.dtype == v.initial.dtype and u.initial.tobytes() == v.initial.tobytes()
    assert (q.init_function, q.metadata, q.description) == (p.init_function, p.metadata, p.description)


# -- round trips and layout ----------------------------------------------------------------------------
def test_round_trip_full_program():
    p = full_program()
    data = write_model(p)
    q = read_model(data)
    assert_same_program(p, q)
    assert q.functions[0].nodes[4].attrs == {"names": ("a", "b"), "dtypes": ("float32", "int32"),
                                             "shapes": ((3, 4), ())}
    assert write_model(q) == data  # reading and writing again is a fixed point


def test_constants_are_aligned_views_on_the_file():
    data = write_model(full_program())
    m = Model.GetRootAs(data, 0)
    assert m.Buffers(0).DataIsNone()  # the empty sentinel
    for i in range(1, m.BuffersLength()):
        tab = m.Buffers(i)._tab
        if tab.Offset(4):
            assert tab.Vector(tab.Offset(4)) % 16 == 0, f"buffer {i} is not 16-byte aligned"
    q = read_model(data)
    w = q.functions[0].tensors[1].data
    assert np.shares_memory(w, np.frombuffer(data, np.uint8)) and not w.flags.writeable


def test_file_follows_tflite_conventions():
    data = write_model(full_program())
    assert data[4:8] == b"TFL3"
    m = Model.GetRootAs(data, 0)
    assert m.Version() == 3 and m.SubgraphsLength() == 2
    sg = m.Subgraphs(0)
    x, w = sg.Tensors(0), sg.Tensors(1)
    assert x.ShapeAsNumpy().tolist() == [1, 4] and x.ShapeSignatureAsNumpy().tolist() == [-1, 4]
    assert x.Buffer() == 0 and w.Buffer() != 0 and w.ShapeSignatureIsNone()
    codes = {}
    for i in range(m.OperatorCodesLength()):
        oc = m.OperatorCodes(i)
        codes[oc.BuiltinCode(), (oc.CustomCode() or b"").decode()] = oc.DeprecatedBuiltinCode()
    ops = enum_members("BuiltinOperator")
    assert codes[ops["GELU"], ""] == 127 and codes[ops["FULLY_CONNECTED"], ""] == ops["FULLY_CONNECTED"]
    assert codes[ops["CUSTOM"], "LitetrainSaveCheckpoint"] == ops["CUSTOM"]
    entries = {m.Metadata(i).Name().decode(): m.Metadata(i).Buffer() for i in range(m.MetadataLength())}
    assert set(entries) == {"my_meta", "min_runtime_version", "litetrain_program"}
    assert m.Buffers(entries["min_runtime_version"]).DataAsNumpy().tobytes().rstrip(b"\0") == b"2.16.0"
    sig = m.SignatureDefs(0)
    assert sig.SignatureKey() == b"infer" and sig.Inputs(1).Name() == b"lr"


@pytest.mark.parametrize("name", sorted(n for n, o in OPS.items() if isinstance(o.tflite, Builtin)))
def test_every_builtin_op_options_round_trip(name):
    """Non-default values of every field kind survive the generic options mapping."""
    opdef = get_op(name)
    spec = opdef.tflite
    if name in QUANTIZED.values():
        pytest.skip("a quantized variant: the reader picks it by its tensors' quantization, its options are its "
                    "float op's (tests/test_int8_ops.py round-trips it with quantized tensors)")
    if spec.code not in enum_members("BuiltinOperator"):
        with pytest.raises(ValueError, match=spec.code):
            write_model(_single_node_program(name, {}))
        return
    values = {"int": 1, "float": 0.1, "bool": True, "str": "a/b", "ints": (1, -2, 3), "activation": "RELU6",
              "padding": "VALID", "dtype": "int32", "weights_format": "SHUFFLED4x16INT8"}
    a = opdef.check_attrs({k: values[kind] for k, kind in spec.fields.items()})
    q = read_model(write_model(_single_node_program(name, a)))
    assert q.functions[0].nodes[0].attrs == a
    m = Model.GetRootAs(write_model(_single_node_program(name, a)), 0)
    assert m.OperatorCodes(0).Version() == spec.version


def _single_node_program(op, a):
    fn = Function("f")
    lo = get_op(op).num_inputs[0]
    ins = [fn.add_tensor(f"in{i}", "float32", (2,)) for i in range(lo)]
    out = fn.add_tensor("out", "float32", (2,))
    fn.nodes = [Node(op, ins, [out], a)]
    fn.inputs, fn.outputs = ins, [out]
    return Program([fn, Function("other")])


def test_absent_optional_input_and_empty_constant():
    fn = Function("f")
    x = fn.add_tensor("x", "float32", (2, 4))
    w = fn.add_tensor("w", "float32", (3, 4), np.ones((3, 4), np.float32))
    y = fn.add_tensor("y", "float32", (2, 3))
    empty = fn.add_tensor("empty", "int32", (0,), np.zeros((0,), np.int32))
    s = fn.add_tensor("s", "float32", ())
    fn.nodes = [Node("fully_connected", [x, w, -1], [y], attrs("fully_connected")),
                Node("reshape", [y, empty], [s], attrs("reshape"))]
    fn.inputs, fn.outputs = [x], [y]
    q = read_model(write_model(Program([fn])))
    assert q.functions[0].nodes[0].inputs == [0, 1, -1]
    assert q.functions[0].tensors[empty].data.shape == (0,)
    assert q.signatures[0].key == "serving_default"  # a file without SignatureDefs
    assert (q.signatures[0].inputs, q.signatures[0].outputs) == ({"x": x}, {"y": y})


def test_variables_derived_without_litetrain_metadata():
    """A file made by TensorFlow has no litetrain_program entry: variables come from VAR_HANDLE."""
    p = full_program()
    p.functions[0].nodes.insert(0, Node("call_once", [], [], attrs("call_once", init_subgraph_index=1)))
    data = bytearray(write_model(p))
    at = data.index(b"litetrain_program")
    data[at:at + 17] = b"litetrain_prograM"
    q = read_model(bytes(data))
    assert q.init_function == 1 and set(q.variables) == {"dense/w", "step"}
    w = q.variables["dense/w"]
    assert (w.dtype, w.shape, w.trainable) == ("float32", (3, 4), False)
    assert np.array_equal(w.initial, np.arange(12, dtype=np.float32).reshape(3, 4))
    assert q.variables["step"].initial.dtype == np.int64 and "litetrain_prograM" in q.metadata
    assert q.signatures[0].defaults == {}


def test_writer_errors_name_the_place():
    p = dense_program()
    p.functions[0].tensors[1].data = p.functions[0].tensors[1].data.astype(np.float64)
    with pytest.raises(ValueError, match=r"function 0 \(infer\) tensor 1 'w'.*float64"):
        write_model(p)
    p = dense_program()
    p.functions[0].nodes[1].op = "no_such_op"
    with pytest.raises(ValueError, match=r"function 0 \(infer\) node 1.*no_such_op"):
        write_model(p)
    p = dense_program()
    p.functions[0].nodes[0].attrs["fused_activation_function"] = "SWISH"
    with pytest.raises(ValueError, match="ActivationFunctionType"):
        write_model(p)


# -- LiteRT as the oracle ------------------------------------------------------------------------------
def _compare_with_litert(program, signature, inputs, rtol=1e-5, atol=1e-6):
    it = litert().Interpreter(model_content=write_model(program))
    runner = it.get_signature_runner(signature)
    sig = program.signature(signature)
    got = runner(**inputs)
    want = Executor(program).run_function(sig.function, [inputs[k] for k in sig.inputs])
    assert set(got) == set(sig.outputs)
    for (name, _), w in zip(sig.outputs.items(), want):
        assert got[name].dtype == np.asarray(w).dtype, name
        np.testing.assert_allclose(got[name], w, rtol=rtol, atol=atol, err_msg=name)


def test_litert_runs_dense_with_dynamic_batch():
    p = dense_program()
    for batch in (5, 1, 3):  # the signature runner resizes the -1 dim each call
        x = np.random.default_rng(batch).standard_normal((batch, 4)).astype(np.float32)
        _compare_with_litert(p, "infer", {"x": x})


def test_litert_runs_add_mul_softmax_reshape_mean():
    x = np.random.default_rng(1).standard_normal((2, 3)).astype(np.float32)
    _compare_with_litert(ops_program(), "run", {"x": x})


def variable_program():
    """step(x): CALL_ONCE(init), acc += x, return acc; peek(): return acc. Init sets acc = [10, 20]."""
    def handle(fn):
        h = fn.add_tensor("acc_handle", "resource", ())
        fn.nodes.append(Node("var_handle", [], [h], attrs("var_handle", shared_name="acc")))
        return h
    step = Function("step")
    x = step.add_tensor("x", "float32", (2,))
    step.nodes.append(Node("call_once", [], [], attrs("call_once", init_subgraph_index=1)))
    h = handle(step)
    v = step.add_tensor("acc_value", "float32", (2,))
    s = step.add_tensor("sum", "float32", (2,))
    step.nodes += [Node("read_variable", [h], [v], {}), Node("add", [v, x], [s], attrs("add")),
                   Node("assign_variable", [h, s], [], {})]
    step.inputs, step.outputs = [x], [s]
    init = Function("init")
    h = handle(init)
    c = init.add_tensor("acc_init", "float32", (2,), np.array([10, 20], np.float32))
    init.nodes.append(Node("assign_variable", [h, c], [], {}))
    peek = Function("peek")
    peek.nodes.append(Node("call_once", [], [], attrs("call_once", init_subgraph_index=1)))
    h = handle(peek)
    v = peek.add_tensor("acc", "float32", (2,))
    peek.nodes.append(Node("read_variable", [h], [v], {}))
    peek.outputs = [v]
    return Program([step, init, peek], [Signature("step", 0, {"x": x}, {"sum": s}),
                                        Signature("peek", 2, {}, {"acc": v})],
                   {"acc": Variable("acc", "float32", (2,), init.tensors[c].data, True, "param")}, init_function=1)


def test_litert_resource_variables_persist_across_calls_and_signatures():
    p = variable_program()
    q = read_model(write_model(p))
    assert_same_program(p, q)
    it = litert().Interpreter(model_content=write_model(p))
    assert set(it.get_signature_list()) == {"step", "peek"}
    step, peek = it.get_signature_runner("step"), it.get_signature_runner("peek")
    ex = Executor(q)
    one = np.array([1, 2], np.float32)
    expected = [[10, 20], [11, 22], [12, 24], [12, 24]]
    got = [peek()["acc"], step(x=one)["sum"], step(x=one)["sum"], peek()["acc"]]
    mine = [ex.run_function(2, [])[0], ex.run_function(0, [one])[0], ex.run_function(0, [one])[0],
            ex.run_function(2, [])[0]]
    for e, g, m in zip(expected, got, mine):
        np.testing.assert_array_equal(g, np.array(e, np.float32))
        np.testing.assert_array_equal(m, np.array(e, np.float32))


def test_litert_runs_other_signatures_of_a_file_with_custom_ops():
    """LiteRT resolves custom ops only when a signature that uses one is prepared."""
    p = variable_program()
    save = Function("save")
    path = save.add_tensor("path", "string", ())
    h = save.add_tensor("acc_handle", "resource", ())
    v = save.add_tensor("acc", "float32", (2,))
    save.nodes = [Node("call_once", [], [], attrs("call_once", init_subgraph_index=1)),
                  Node("var_handle", [], [h], attrs("var_handle", shared_name="acc")),
                  Node("read_variable", [h], [v], {}), Node("save_checkpoint", [path, v], [], {"names": ("acc",)})]
    save.inputs = [path]
    p.functions.append(save)
    p.signatures.append(Signature("save", 3, {"path": path}, {}))
    it = litert().Interpreter(model_content=write_model(p))
    step = it.get_signature_runner("step")
    np.testing.assert_array_equal(step(x=np.ones(2, np.float32))["sum"], [11, 21])
    with pytest.raises(RuntimeError, match="unresolved custom op: LitetrainSaveCheckpoint"):
        it.get_signature_runner("save")(path=np.array(b"/tmp/unused", dtype=object))
    np.testing.assert_array_equal(step(x=np.ones(2, np.float32))["sum"], [12, 22])


# one builtin op at a time, LiteRT against the registry's NumPy kernel
F = np.float32
_RNG = np.random.default_rng(7)
_X = _RNG.standard_normal((2, 3)).astype(F)
_POS = (np.abs(_X) + 0.5).astype(F)
_Y = _RNG.standard_normal((2, 3)).astype(F)
I32 = lambda *v: np.array(v, np.int32)  # noqa: E731
CASES = [(op, [_X], {}) for op in ("neg", "exp", "square", "abs", "sign", "floor", "sin", "cos", "tanh",
                                    "logistic", "relu", "relu6", "zeros_like", "log_softmax")]
CASES += [(op, [_POS], {}) for op in ("log", "sqrt", "rsqrt")]
CASES += [("gelu", [_X], {"approximate": False}), ("gelu", [_X], {"approximate": True}),
          ("softmax", [_X], {"beta": 0.5})]
CASES += [(op, [_X, _Y], {}) for op in ("add", "sub", "mul", "maximum", "minimum", "squared_difference",
                                        "less", "less_equal", "greater", "greater_equal", "equal", "not_equal")]
CASES += [("add", [_X, _Y], {"fused_activation_function": "RELU6"}), ("div", [_X, _POS], {}),
          ("sub", [_X, _Y[:1]], {"fused_activation_function": "RELU"}), ("pow", [_POS, _Y], {}),
          ("logical_and", [_X > 0, _Y > 0], {}), ("logical_not", [_X > 0], {}),
          ("select_v2", [_X > 0, _X, _Y], {}),
          ("cast", [_X * 3], {"in_data_type": "float32", "out_data_type": "int32"}),
          ("fully_connected", [_RNG.standard_normal((2, 2, 3)).astype(F), ("c", _Y)], {"keep_num_dims": True}),
          ("batch_matmul", [_X, _Y], {"adj_y": True}), ("batch_matmul", [_X, _Y], {"adj_x": True}),
          ("sum", [_X, ("c", I32(1))], {}), ("mean", [_X, ("c", I32(0))], {"keep_dims": True}),
          ("reduce_max", [_X, ("c", I32(1))], {}), ("reduce_min", [_X, ("c", I32(0, 1))], {}),
          ("reduce_prod", [_X, ("c", I32(1))], {"keep_dims": True}),
          ("arg_max", [_X, ("c", I32(1))], {"output_type": "int32"}),
          ("reshape", [_X, ("c", I32(3, 2))], {}), ("transpose", [_X, ("c", I32(1, 0))], {}),
          ("expand_dims", [_X, ("c", I32(1))], {}), ("squeeze", [_X[:1]], {"squeeze_dims": (0,)}),
          ("broadcast_to", [_X[:1], ("c", I32(4, 3))], {}), ("shape", [_X], {"out_type": "int32"}),
          ("gather", [_X, ("c", I32(2, 0))], {"axis": 1}),
          ("concatenation", [_X, _Y], {"axis": 1, "fused_activation_function": "RELU"}),
          ("slice", [_X, ("c", I32(0, 1)), ("c", I32(2, -1))], {}),
          ("pad", [_X, ("c", I32(1, 0, 0, 2).reshape(2, 2))], {}),
          ("fill", [("c", I32(2, 2)), np.array(1.5, F)], {}),
          ("one_hot", [("c", I32(0, 2, 1)), ("c", np.array(3, np.int32)), np.array(1.0, F), np.array(0.0, F)], {})]


def _op_program(op, args, a):
    fn = Function(op)
    ins, feeds = [], {}
    for k, arg in enumerate(args):
        if isinstance(arg, tuple):
            ins.append(fn.add_tensor(f"c{k}", str(arg[1].dtype), arg[1].shape, arg[1]))
        else:
            i = fn.add_tensor(f"in{k}", str(arg.dtype), arg.shape)
            ins.append(i)
            fn.inputs.append(i)
            feeds[f"in{k}"] = arg
    opdef = get_op(op)
    a = opdef.check_attrs(a)
    for dtype, shape in opdef.infer(a, [fn.tensors[i] for i in ins]):
        fn.outputs.append(fn.add_tensor(f"out{len(fn.outputs)}", dtype, shape))
    fn.nodes = [Node(op, ins, list(fn.outputs), a)]
    sig = Signature(op, 0, {f"in{k}": i for k, i in enumerate(ins) if i in fn.inputs},
                    {fn.tensors[i].name: i for i in fn.outputs})
    return Program([fn], [sig]), feeds


@pytest.mark.parametrize("op,args,a", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_litert_agrees_with_kernel(op, args, a):
    program, feeds = _op_program(op, args, a)
    _compare_with_litert(program, op, feeds, rtol=2e-5, atol=2e-6)


# -- bad files ---------------------------------------------------------------------------------------
def _patch_u32(data, pos, value, fmt="<I"):
    data = bytearray(data)
    struct.pack_into(fmt, data, pos, value)
    return bytes(data)


def _field_pos(obj, slot):
    offset = obj._tab.Offset(4 + 2 * slot)
    assert offset, "field not present"
    return obj._tab.Pos + offset


def test_truncated_and_random_files_are_rejected():
    data = write_model(full_program())
    for cut in [0, 3, 7, 8, 16, 64, len(data) // 3, len(data) // 2, len(data) - 4]:  # the last 3 are padding
        with pytest.raises(InvalidModelError):
            read_model(data[:cut])
    rng = random.Random(0)
    for n in (10, 100, 5000):
        with pytest.raises(InvalidModelError, match="not a TensorFlow Lite model"):
            read_model(bytes(rng.getrandbits(8) for _ in range(n)))
        with pytest.raises(InvalidModelError):
            read_model(bytes(rng.getrandbits(8) for _ in range(4)) + b"TFL3" + bytes(n))


def test_corrupted_bytes_never_crash():
    data = write_model(full_program())
    rng = random.Random(1)
    for _ in range(300):
        bad = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            bad[rng.randrange(8, len(bad))] = rng.getrandbits(8)
        try:
            read_model(bytes(bad))
        except InvalidModelError:
            pass


def test_out_of_range_indices_are_named():
    data = write_model(dense_program())
    sg = Model.GetRootAs(data, 0).Subgraphs(0)
    bad = _patch_u32(data, _field_pos(sg.Tensors(1), 2), 999)  # w's buffer index
    with pytest.raises(InvalidModelError, match=r"subgraph 0 tensor 1 'w': buffer index 999 is out of range"):
        read_model(bad)
    op = sg.Operators(0)
    bad = _patch_u32(data, op._tab.Vector(op._tab.Offset(6)), 77)  # first input of fully_connected
    with pytest.raises(InvalidModelError, match=r"subgraph 0 operator 0 \(FULLY_CONNECTED\): input tensor index 77"):
        read_model(bad)
    bad = _patch_u32(data, _field_pos(sg.Operators(1), 0), 50)  # relu's opcode index
    with pytest.raises(InvalidModelError, match=r"subgraph 0 operator 1: operator code index 50"):
        read_model(bad)
    w = sg.Tensors(1)
    bad = _patch_u32(data, w._tab.Vector(w._tab.Offset(4)), 5, "<i")  # w: [3, 4] -> [5, 4]
    with pytest.raises(InvalidModelError, match=r"tensor 1 'w': buffer \d+ holds 48 bytes, but float32\[5, 4\]"):
        read_model(bad)
    with pytest.raises(InvalidModelError, match="file identifier"):
        read_model(data[:4] + b"XXXX" + data[8:])


def test_unknown_tensor_type_is_named():
    data = write_model(ops_program())
    sg = Model.GetRootAs(data, 0).Subgraphs(0)
    bad = bytearray(data)
    bad[_field_pos(sg.Tensors(5), 1)] = 8  # 'shape' int32 -> COMPLEX64
    with pytest.raises(InvalidModelError, match=r"subgraph 0 tensor 5 'shape': TensorType 8 \(COMPLEX64\)"):
        read_model(bytes(bad))


def test_unknown_ops_are_named_at_load():
    data = write_model(dense_program())
    m = Model.GetRootAs(data, 0)
    relu = m.OperatorCodes(1)
    bad = bytearray(data)
    bad[_field_pos(relu, 0)] = 15
    bad = _patch_u32(bad, _field_pos(relu, 3), 15, "<i")  # RELU -> LSH_PROJECTION (litetrain has no such op)
    with pytest.raises(UnsupportedOpError, match=r"LSH_PROJECTION \(subgraph 0 operator 1\)"):
        read_model(bad)
    data = write_model(full_program())
    at = data.index(b"LitetrainSaveCheckpoint")
    bad = data[:at] + b"LitetrainSaveCheckpoinX" + data[at + 23:]
    with pytest.raises(UnsupportedOpError, match=r"custom op 'LitetrainSaveCheckpoinX' \(subgraph 0 operator 3\)"):
        read_model(bad)


def test_bad_custom_options_are_rejected():
    p = full_program()
    data = write_model(p)
    op = Model.GetRootAs(data, 0).Subgraphs(0).Operators(3)
    start = op._tab.Vector(op._tab.Offset(14))  # custom_options is field 5
    n = op.CustomOptionsLength()
    bad = bytearray(data)
    bad[start:start + n] = bytes(n)
    with pytest.raises(InvalidModelError, match=r"subgraph 0 operator 3 \(custom op 'LitetrainSaveCheckpoint'\)"):
        read_model(bytes(bad))


def test_dtypes_table_matches_schema():
    types = enum_members("TensorType")
    for name, (_, code) in DTYPES.items():
        assert types[name.upper()] == code, name
