"""Flex ops (TensorFlow ops inside .tflite files) without TensorFlow: the protobuf wire format, the
NodeDef options, the fused optimizer kernels against TensorFlow's formulas, tensor lists against
TensorFlow's list semantics, round trips through litetrain's writer, an op litetrain lacks refused at
load time with one error naming it, and attributes a kernel does not take refused by name."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest
import tflite

import litetrain as lt
from litetrain.core.ir import Function, Node, Program, Signature
from litetrain.core.registry import get_op
from litetrain.runtime import Executor, VariableStore
from litetrain.ops.tf import proto
from litetrain.tflite import InvalidModelError, UnsupportedOpError, read_model, write_model
from litetrain.ops.tf import flex
from test_tf_fixtures import skip_on_a_knife_edge

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "tf"


def flex_options(path):
    """(op type, raw custom options) of every Flex operator in a file, read with the tflite schema."""
    m = tflite.Model.GetRootAs(path.read_bytes(), 0)
    out = []
    for si in range(m.SubgraphsLength()):
        sg = m.Subgraphs(si)
        for oi in range(sg.OperatorsLength()):
            op = sg.Operators(oi)
            code = m.OperatorCodes(op.OpcodeIndex()).CustomCode()
            if code and code.startswith(b"Flex"):
                out.append((code.decode()[4:], op.CustomOptionsAsNumpy().tobytes()))
    return out


# -- the wire format --------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [7, -3, 2 ** 40, 1.5, True, False, "SAME", b"\xff\x00", "float32",
                                   (1, 2, 2, 1), (), (0.5, 0.25), ("float32", "int32"), ("a", "bc"),
                                   ((2, None, 3), None), (2, 3)])
def test_attr_values_round_trip(value):
    back = proto.decode_attr(proto.encode_attr(value))
    assert back == value and type(back) is type(value)


@pytest.mark.parametrize("array", [np.arange(6, dtype=np.float32).reshape(2, 3), np.array(3, np.int64),
                                   np.array([True, False]), np.zeros((0, 2), np.float64)])
def test_tensor_protos_round_trip(array):
    for content in (True, False):
        raw = proto.encode_tensor(array, content=content)
        back = proto.decode_tensor(raw, array.dtype.name, array.shape)
        assert back.dtype == array.dtype and back.shape == array.shape and np.array_equal(back, array)


def test_a_short_value_list_repeats_its_last_value_as_tensorflow_does():
    raw = proto.varint_field(1, 1) + proto.bytes_field(2, proto.encode_shape((2, 3))) + proto.bytes_field(
        5, np.float32([1.5]).tobytes())
    np.testing.assert_array_equal(proto.decode_tensor(raw), np.full((2, 3), 1.5, np.float32))


@pytest.mark.parametrize("bad", [b"\x80", b"\x0a\x05ab", b"\x0b", b"\x00\x01"])
def test_malformed_messages_raise_proto_error(bad):
    with pytest.raises(proto.ProtoError):
        proto.fields(bad)


# -- NodeDefs in TensorFlow-converted files ---------------------------------------------------------------
def test_the_converters_nodedefs_decode_to_the_attributes_tensorflow_set():
    ops = flex_options(FIXTURES / "cnn_sgd.tflite")
    found = dict(ops)
    conv_2, conv_1 = [flex.decode_options(t, raw) for t, raw in ops if t == "Conv2DBackpropFilter"]
    assert conv_2 == {"T": "float32", "strides": (1, 2, 2, 1), "padding": "SAME", "explicit_paddings": (),
                      "data_format": "NHWC", "dilations": (1, 1, 1, 1), "use_cudnn_on_gpu": True}
    assert (conv_1["strides"], conv_1["padding"]) == ((1, 1, 1, 1), "VALID")  # the model's conv_1
    assert flex.decode_options("MaxPoolGrad", found["MaxPoolGrad"])["ksize"] == (1, 2, 2, 1)
    assert flex.decode_options("RestoreV2", found["RestoreV2"]) == {"dtypes": ("float32",) * 6}


@pytest.mark.parametrize("name", ["mlp_adam", "cnn_adam", "bn_cnn_sgd", "mobilenet_sgd", "lstm_sgd", "gru_sgd"])
def test_every_flex_op_in_the_fixtures_re_encodes_to_the_same_attributes(name):
    for op_type, raw in flex_options(FIXTURES / f"{name}.tflite"):
        attrs = flex.decode_options(op_type, raw)
        assert flex.decode_options(op_type, flex.encode_options(op_type, attrs)) == attrs
        get_op(f"tf.{op_type}").check_attrs(attrs)  # litetrain knows every attribute TensorFlow wrote


def test_options_naming_another_op_are_refused():
    raw = flex.encode_options("ReluGrad", {"T": "float32"})
    with pytest.raises(ValueError, match="NodeDef of op 'ReluGrad'"):
        flex.decode_options("Relu6Grad", raw)


# -- loading files: what litetrain lacks is refused at load time, by name ------------------------------------
def patched(name, old: bytes, new: bytes) -> bytes:
    data = (FIXTURES / name).read_bytes()
    assert len(old) == len(new) and data.count(old) >= 1
    return data.replace(old, new)


def test_a_flex_op_litetrain_lacks_is_one_load_time_error_naming_op_and_subgraph():
    data = patched("cnn_sgd.tflite", b"FlexMaxPoolGrad", b"FlexSigmoidGrad")  # a real TF op litetrain lacks
    with pytest.raises(UnsupportedOpError) as err:
        lt.Interpreter(model_content=data)
    message = str(err.value)
    assert "custom op 'FlexSigmoidGrad' (subgraph 3 operator" in message
    assert message.count("FlexSigmoidGrad") == 1  # one error, naming it once, before any call


def test_a_builtin_litetrain_lacks_is_refused_at_load_time_too():
    mediapipe = pytest.importorskip("importlib.util").find_spec("mediapipe")
    path = None if mediapipe is None else pathlib.Path(mediapipe.submodule_search_locations[0]) / \
        "modules/face_landmark/face_landmark_with_attention.tflite"
    if path is None or not path.exists():
        pytest.skip("mediapipe's face_landmark_with_attention.tflite (it has MediaPipe's own custom ops) is not installed")
    with pytest.raises(UnsupportedOpError, match=r"custom op 'Landmarks2TransformMatrix' \(subgraph 0 operator \d+"):
        lt.Interpreter(model_path=str(path))


def test_corrupt_flex_options_are_an_invalid_model_error_naming_the_operator():
    raw = dict(flex_options(FIXTURES / "mlp_sgd.tflite"))["ReluGrad"]
    data = (FIXTURES / "mlp_sgd.tflite").read_bytes()
    broken = raw.replace(b"ReluGrad\x1a", b"ReluGrad\x0f")  # a NodeDef field with a bad wire type
    assert len(broken) == len(raw) and broken != raw
    with pytest.raises(InvalidModelError, match=r"subgraph \d+ operator \d+ \(custom op 'FlexReluGrad'\).*FlexReluGrad options"):
        read_model(data.replace(raw, broken))


@pytest.mark.parametrize("name", ["mlp_adam", "cnn_sgd", "bn_cnn_sgd", "mobilenet_sgd", "lstm_sgd"])
def test_a_tensorflow_file_written_back_by_litetrain_trains_the_same_and_keeps_its_metadata(name):
    skip_on_a_knife_edge(name)
    d = np.load(FIXTURES / f"{name}.npz")
    original = read_model((FIXTURES / f"{name}.tflite").read_bytes())
    assert {"CONVERSION_METADATA"} <= set(original.metadata)
    rewritten = read_model(write_model(original))
    assert rewritten.metadata["CONVERSION_METADATA"] == original.metadata["CONVERSION_METADATA"]
    assert [n.op for f in rewritten.functions for n in f.nodes] == [n.op for f in original.functions for n in f.nodes]
    train = lt.Interpreter.from_program(rewritten).get_signature_runner("train")
    losses = [float(train(x=x, y=y)["loss"]) for x, y in zip(d["x"], d["y"])]
    np.testing.assert_allclose(losses, d["losses"], atol=1e-5)


# -- the fused optimizer ops, against TensorFlow's formulas (training_ops.cc) --------------------------------
def _apply_program(op, n_vars, scalars, attrs):
    """main(grad, *scalars): op(var handles..., scalars..., grad) on variables v0..v{n-1}."""
    fn = Function("main")
    handles = []
    for k in range(n_vars):
        h = fn.add_tensor(f"h{k}", "resource", ())
        fn.nodes.append(Node("var_handle", [], [h], {"container": "", "shared_name": f"v{k}"}))
        handles.append(h)
    ins = [fn.add_tensor(name, "float32", ()) for name in scalars]
    g = fn.add_tensor("grad", "float32", (3,))
    fn.inputs = ins + [g]
    order = {"tf.ResourceApplyGradientDescent": handles + ins + [g],
             "tf.ResourceApplyAdam": handles + ins + [g],
             "tf.ResourceApplyKerasMomentum": handles + ins[:1] + [g] + ins[1:]}[op]
    fn.nodes.append(Node(op, order, [], get_op(op).check_attrs(attrs)))
    return Program([fn], [Signature("main", 0, {n: i for n, i in zip(list(scalars) + ["grad"], fn.inputs)}, {})])


def _run(program, values, feeds, steps=3):
    program = read_model(write_model(program))  # through the file: the Flex encoding round-trips
    store = VariableStore()
    for k, v in enumerate(values):
        store.assign(f"v{k}", np.float32(v))
    ex = Executor(program, store)
    for _ in range(steps):
        ex.run_function(0, [np.float32(f) for f in feeds])
    return [store.read(f"v{k}") for k in range(len(values))]


G = np.float32([0.5, -1.0, 2.0])


def test_resource_apply_gradient_descent():
    var, = _run(_apply_program("tf.ResourceApplyGradientDescent", 1, ["alpha"], {}), [[1.0, 2.0, 3.0]], [0.1, G])
    np.testing.assert_allclose(var, np.float32([1, 2, 3]) - 3 * 0.1 * G, rtol=1e-6)


@pytest.mark.parametrize("nesterov", [False, True])
def test_resource_apply_adam(nesterov):
    b1, b2, lr, eps = 0.9, 0.999, 0.01, 1e-7
    start = [[1.0, 2.0, 3.0], [0.1, 0.0, -0.1], [0.01, 0.02, 0.0]]
    program = _apply_program("tf.ResourceApplyAdam", 3, ["b1p", "b2p", "lr", "b1", "b2", "eps"],
                             {"use_nesterov": nesterov})
    var, m, v = _run(program, start, [b1 ** 2, b2 ** 2, lr, b1, b2, eps, G], steps=1)
    m_ref = np.float64(start[1]) + (G - np.float64(start[1])) * (1 - b1)
    v_ref = np.float64(start[2]) + (G.astype(np.float64) ** 2 - start[2]) * (1 - b2)
    alpha = lr * np.sqrt(1 - b2 ** 2) / (1 - b1 ** 2)
    step = m_ref * b1 + G * (1 - b1) if nesterov else m_ref
    np.testing.assert_allclose(m, m_ref, rtol=1e-5)  # float32 kernels against a float64 formula
    np.testing.assert_allclose(v, v_ref, rtol=1e-5, atol=1e-7)  # (1 - beta_2) rounds in float32
    np.testing.assert_allclose(var, np.float64(start[0]) - alpha * step / (np.sqrt(v_ref) + eps), rtol=1e-5)


def test_resource_apply_keras_momentum():
    var, acc = _run(_apply_program("tf.ResourceApplyKerasMomentum", 2, ["lr", "momentum"], {}),
                    [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], [0.1, 0.9, G], steps=2)
    a1 = -0.1 * G
    a2 = a1 * 0.9 - 0.1 * G
    np.testing.assert_allclose(acc, a2, rtol=1e-6)
    np.testing.assert_allclose(var, np.float32([1, 2, 3]) + a1 + a2, rtol=1e-6)


def test_flex_resource_variable_ops_use_the_variable_store():
    """VarHandleOp / AssignVariableOp / AssignAddVariableOp / AssignSubVariableOp / ReadVariableOp
    as Flex ops (what older converters wrote) act on litetrain's variable store."""
    fn = Function("main")
    h = fn.add_tensor("h", "resource", ())
    x = fn.add_tensor("x", "float32", (2,))
    y = fn.add_tensor("y", "float32", (2,))
    fn.inputs, fn.outputs = [x], [y]
    op = lambda name, ins, outs, **a: Node(name, ins, outs, get_op(name).check_attrs(a))  # noqa: E731
    fn.nodes = [op("tf.VarHandleOp", [], [h], shared_name="w", shape=(2,)),
                op("tf.AssignAddVariableOp", [h, x], []),
                op("tf.AssignSubVariableOp", [h, x], []),
                op("tf.AssignAddVariableOp", [h, x], []),
                op("tf.ReadVariableOp", [h], [y])]
    program = read_model(write_model(Program([fn], [Signature("main", 0, {"x": x}, {"y": y})])))
    store = VariableStore()
    store.assign("w", np.float32([1, 2]))
    ex = Executor(program, store)
    out, = ex.run_function(0, [np.float32([0.5, 1])])
    np.testing.assert_array_equal(out, [1.5, 3])
    np.testing.assert_array_equal(store.read("w"), [1.5, 3])


# -- tensor lists (TensorFlow's list_kernels), kernel by kernel ------------------------------------------------
def _kernel(name, *args, **attrs):
    op = get_op(f"tf.{name}")
    return op.kernel(*args, **op.check_attrs(attrs))


def _shape(*dims):
    return np.array(dims if dims != (-1,) else -1, np.int32)


def test_a_reserved_list_reads_zeros_where_unset_and_values_are_never_changed_in_place():
    empty = _kernel("TensorListReserve", _shape(-1, 3), np.int32(3))
    a = np.float32([[1, 2, 3], [4, 5, 6]])
    one = _kernel("TensorListSetItem", empty, np.int32(1), a)
    assert _kernel("TensorListLength", one) == 3 and _kernel("TensorListLength", empty) == 3
    np.testing.assert_array_equal(_kernel("TensorListGetItem", one, np.int32(1), _shape(-1, 3)), a)
    # an unset slot reads as zeros of the element shape, its unknown dims taken from the items set
    np.testing.assert_array_equal(_kernel("TensorListGetItem", one, np.int32(0), _shape(-1, 3)), np.zeros((2, 3)))
    stacked = _kernel("TensorListStack", one, _shape(-1, 3), num_elements=3)
    np.testing.assert_array_equal(stacked, np.stack([np.zeros((2, 3)), a, np.zeros((2, 3))]))
    assert stacked.dtype == np.float32
    with pytest.raises(ValueError, match="not fully defined"):  # nothing set, nothing to take the shape from
        _kernel("TensorListGetItem", empty, np.int32(0), _shape(-1, 3))
    with pytest.raises(ValueError, match="element 3 in a list with 3 elements"):
        _kernel("TensorListGetItem", one, np.int32(3), _shape(2, 3))
    with pytest.raises(ValueError, match="expected a list with 2 elements"):
        _kernel("TensorListStack", one, _shape(2, 3), num_elements=2)
    with pytest.raises(ValueError, match="incompatible shape"):
        _kernel("TensorListSetItem", empty, np.int32(0), np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="invalid data types"):
        _kernel("TensorListGetItem", one, np.int32(1), _shape(2, 3), element_dtype="int32")


def test_a_list_from_a_tensor_stacks_back_to_it():
    t = np.arange(12, dtype=np.float32).reshape(4, 3)
    lst = _kernel("TensorListFromTensor", t, _shape(3))
    np.testing.assert_array_equal(_kernel("TensorListGetItem", lst, np.int32(2), _shape(3)), t[2])
    np.testing.assert_array_equal(_kernel("TensorListStack", lst, _shape(-1)), t)
    np.testing.assert_array_equal(_kernel("TensorListElementShape", lst), [3])
    with pytest.raises(ValueError, match="from a tensor with shape"):
        _kernel("TensorListFromTensor", t, _shape(4))


def test_push_back_and_pop_back_are_last_in_first_out_within_max_num_elements():
    lst = _kernel("EmptyTensorList", _shape(-1), np.int32(2), element_dtype="int32")
    assert _kernel("TensorListElementShape", lst).tolist() == -1  # an unknown rank
    for v in (7, 8):
        lst = _kernel("TensorListPushBack", lst, np.int32(v), element_dtype="int32")
    with pytest.raises(ValueError, match="full list"):
        _kernel("TensorListPushBack", lst, np.int32(9), element_dtype="int32")
    lst, last = _kernel("TensorListPopBack", lst, _shape(-1), element_dtype="int32")
    lst, first = _kernel("TensorListPopBack", lst, _shape(-1), element_dtype="int32")
    assert (int(last), int(first), _kernel("TensorListLength", lst)) == (8, 7, 0)
    with pytest.raises(ValueError, match="pop from an empty list"):
        _kernel("TensorListPopBack", lst, _shape(-1), element_dtype="int32")


def test_lists_add_item_by_item_and_zeros_like_keeps_unset_slots_unset():
    """AddN and ZerosLike of lists, as TensorFlow's gradients of While loops use them: an unset item
    adds as nothing (TensorFlow's BinaryAddTensors)."""
    base = _kernel("TensorListReserve", _shape(2), np.int32(3))
    a = _kernel("TensorListSetItem", base, np.int32(0), np.float32([1, 2]))
    b = _kernel("TensorListSetItem", _kernel("TensorListSetItem", base, np.int32(0), np.float32([10, 20])),
                 np.int32(2), np.float32([5, 6]))
    total = _kernel("AddN", a, b, N=2, T="variant")
    np.testing.assert_array_equal(_kernel("TensorListStack", total, _shape(2)), [[11, 22], [0, 0], [5, 6]])
    zeros = _kernel("ZerosLike", b, T="variant")
    assert [item is None for item in zeros.items] == [False, True, False]
    np.testing.assert_array_equal(_kernel("TensorListStack", zeros, _shape(2)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="different lengths"):
        _kernel("AddN", a, _kernel("TensorListReserve", _shape(2), np.int32(2)), N=2, T="variant")


# -- attributes TensorFlow allows but litetrain's kernels do not take: an error naming op and attribute -----------
@pytest.mark.parametrize("op, args, attrs, match", [
    ("DepthwiseConv2dNativeBackpropFilter", (np.zeros((1, 5, 5, 1), np.float32), np.int32([3, 3, 1, 1]),
                                             np.zeros((1, 1, 1, 1), np.float32)),
     {"dilations": (1, 2, 2, 1)}, "DepthwiseConv2dNativeBackpropFilter: dilations .* not supported"),
    ("AvgPoolGrad", (np.int32([1, 4, 4, 1]), np.zeros((1, 2, 2, 1), np.float32)),
     {"ksize": (1, 2, 2, 1), "strides": (1, 2, 2, 1), "data_format": "NCHW_VECT_C"},
     "AvgPoolGrad: data_format 'NCHW_VECT_C' is not supported"),
    ("FusedBatchNormV3", (np.zeros((1, 2, 2, 3), np.float32),) + (np.ones(3, np.float32),) * 4,
     {"U": "float16"}, "FusedBatchNormV3: T=float32, U=float16 is not supported"),
    ("MaxPoolGrad", (np.zeros((1, 4, 4, 1), np.float32),) * 2 + (np.zeros((1, 2, 2, 1), np.float32),),
     {"ksize": (2, 2, 2, 1), "strides": (1, 2, 2, 1)}, "MaxPoolGrad: ksize .* must be 1 on the batch"),
])
def test_an_attribute_the_kernel_does_not_take_is_an_error_naming_op_and_attribute(op, args, attrs, match):
    with pytest.raises(ValueError, match=match):
        _kernel(op, *args, **attrs)
