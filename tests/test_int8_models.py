"""Whole quantized models (fixtures/int8/, made by fixtures/make_int8_fixtures.py with TensorFlow's
converter: post-training full-integer quantization with a representative data set) run by
litetrain and by LiteRT.

- LiteRT's reference kernels (OpResolverType.BUILTIN_REF) and TensorFlow 2.18's (recorded in the
  fixture's .npz when it was made): the outputs, and every intermediate tensor, bit-identical.
- LiteRT's default kernels: outputs of the small models within one quantization step; in the
  MobileNetV2 their one-step differences grow layer by layer (LiteRT's own default kernels are as
  far from its reference kernels as from ours), the predicted classes are the same.
- The planned executor and optimize=False give identical outputs; a file litetrain writes back
  (quantization parameters on its tensors) runs in LiteRT with the same results.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import litetrain as lt
from litetrain.runtime import Executor
from litetrain.tflite import read_model, write_model

litert = pytest.importorskip("ai_edge_litert.interpreter", reason="LiteRT is the oracle of the quantized models; "
                             "ai-edge-litert is not installed")

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "int8")
MODELS = ["small_cnn_int8", "small_cnn_float_io", "ops_mix_int8", "ops_mix_float_io", "mobilenet_v2_035_int8",
          "mobilenet_v2_035_float_io"]


def fixture(name):
    path = os.path.join(HERE, f"{name}.tflite")
    with open(path, "rb") as f:
        data = f.read()
    return path, data, dict(np.load(os.path.join(HERE, f"{name}.npz")))


def litert_run(data, x, resolver="BUILTIN_REF"):
    interp = litert.Interpreter(model_content=data,
                                experimental_op_resolver_type=getattr(litert.OpResolverType, resolver))
    runner = interp.get_signature_runner("serving_default")
    name, = interp.get_signature_list()["serving_default"]["inputs"]
    return runner(**{name: x})


def ours_run(data, x, optimize=True):
    interp = lt.Interpreter(model_content=data, optimize=optimize)
    name, = interp.get_signature_list()["serving_default"]["inputs"]
    return interp.get_signature_runner("serving_default")(**{name: x})


def output_step(data):
    """The scale of the quantized tensor the float output is dequantized from."""
    fn = read_model(data).functions[0]
    last = next(n for n in fn.nodes if fn.outputs[0] in n.outputs)
    assert last.op == "dequantize"
    return fn.tensors[last.inputs[0]].quant.scale[0]


@pytest.mark.parametrize("name", MODELS)
def test_model_equals_litert_reference_kernels(name):
    _, data, ref = fixture(name)
    ours = ours_run(data, ref["x"])
    theirs = litert_run(data, ref["x"])
    assert set(ours) == set(theirs)
    for key, value in ours.items():
        assert value.dtype == theirs[key].dtype and value.shape == theirs[key].shape
        np.testing.assert_array_equal(value, theirs[key], err_msg=f"{name} {key}: ours vs LiteRT BUILTIN_REF")
        np.testing.assert_array_equal(value, ref[f"ref_{key}"], err_msg=f"{name} {key}: ours vs TensorFlow 2.18")
    if "int8" in name:
        assert next(iter(ours.values())).dtype == np.int8


@pytest.mark.parametrize("name", MODELS)
def test_model_planned_and_unoptimized_are_identical(name):
    _, data, ref = fixture(name)
    planned, plain = ours_run(data, ref["x"]), ours_run(data, ref["x"], optimize=False)
    for key in planned:
        assert planned[key].tobytes() == plain[key].tobytes()


SMALL = [m for m in MODELS if not m.startswith("mobilenet")]


@pytest.mark.parametrize("name", SMALL)
def test_small_models_within_a_step_of_litert_default_kernels(name):
    """LiteRT's default kernels are not the reference arithmetic (its optimized QUANTIZE rounds halves
    to even, its optimized convolutions requantize differently): within one output step."""
    _, data, ref = fixture(name)
    step = output_step(data) if "float_io" in name else 1
    ours = ours_run(data, ref["x"])
    for key, theirs in litert_run(data, ref["x"], "AUTO").items():
        diff = np.abs(ours[key].astype(np.float64) - theirs.astype(np.float64)).max()
        assert diff <= step * 1.0001, f"{name} {key}: {diff} from LiteRT's default kernels (a step is {step})"


@pytest.mark.parametrize("name", ["mobilenet_v2_035_int8", "mobilenet_v2_035_float_io"])
def test_mobilenet_default_kernels_differ_from_the_reference_as_from_us(name):
    """In a deep int8 network the default kernels' one-step differences grow layer by layer (on the
    fixture's borderline first image, 54 output steps in LiteRT itself, reference vs default): ours
    are the reference kernels' exactly, so the default kernels are exactly as far from ours as from
    LiteRT's reference, and predict the same classes."""
    _, data, ref = fixture(name)
    ours, reference = ours_run(data, ref["x"]), litert_run(data, ref["x"], "BUILTIN_REF")
    for key, theirs in litert_run(data, ref["x"], "AUTO").items():
        np.testing.assert_array_equal(np.abs(ours[key].astype(np.float64) - theirs),
                                      np.abs(reference[key].astype(np.float64) - theirs))
        np.testing.assert_array_equal(ours[key].argmax(-1), theirs.argmax(-1))


def every_value(data, x):
    """Every node output of the main function, by tensor index."""
    program = read_model(data)
    fn = program.functions[0]
    fn.outputs = [o for n in fn.nodes for o in n.outputs if o >= 0]
    return dict(zip(fn.outputs, Executor(program, optimize=False).run_function(0, [x])))


def litert_every_value(data, x):
    interp = litert.Interpreter(model_content=data, experimental_preserve_all_tensors=True,
                                experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    detail, = interp.get_input_details()
    interp.resize_tensor_input(detail["index"], x.shape)
    interp.allocate_tensors()
    interp.set_tensor(detail["index"], x)
    interp.invoke()
    return interp


@pytest.mark.parametrize("name", MODELS + ["small_cnn_16x8"])
def test_every_intermediate_tensor_equals_litert(name):
    """Op by op: each node's output is LiteRT's reference kernels' (same tensor index in the file)."""
    _, data, ref = fixture(name)
    ours = every_value(data, ref["x"])
    interp = litert_every_value(data, ref["x"])
    ops = {n.op for n in read_model(data).functions[0].nodes}
    assert len(ours) >= 8 and any(op.startswith("quantized_") for op in ops)
    for index, value in ours.items():
        theirs = interp.get_tensor(index)
        assert value.dtype == theirs.dtype and value.shape == theirs.shape, index
        np.testing.assert_array_equal(value, theirs, err_msg=f"{name}: tensor {index}")


def test_16x8_model_equals_litert():
    """int16 activations, int8 weights, int64 biases (float in and out): LiteRT 2.3's reference and
    default kernels exactly; TensorFlow 2.18's recorded outputs within one output step (its int16
    kernels round one step differently here and there)."""
    _, data, ref = fixture("small_cnn_16x8")
    ours = ours_run(data, ref["x"])
    for resolver in ("BUILTIN_REF", "AUTO"):
        for key, value in litert_run(data, ref["x"], resolver).items():
            np.testing.assert_array_equal(ours[key], value)
    step = output_step(data)
    for key, value in ours.items():
        assert np.abs(value - ref[f"ref_{key}"]).max() <= step


@pytest.mark.parametrize("name", ["small_cnn_int8", "ops_mix_float_io"])
def test_written_back_file_runs_the_same_in_litert(name):
    """read_model then write_model keeps each tensor's quantization: LiteRT runs the result alike."""
    _, data, ref = fixture(name)
    again = write_model(read_model(data))
    for key, value in litert_run(data, ref["x"]).items():
        np.testing.assert_array_equal(litert_run(again, ref["x"])[key], value)
        np.testing.assert_array_equal(ours_run(again, ref["x"])[key], value)


def test_mobilenet_covers_the_ops_of_a_quantized_mobile_model():
    ops = set()
    for name in MODELS:
        ops |= {n.op for n in read_model(fixture(name)[1]).functions[0].nodes}
    expected = {"quantized_conv_2d", "quantized_depthwise_conv_2d", "quantized_fully_connected", "quantized_add",
                "quantized_mul", "quantized_average_pool_2d", "quantized_max_pool_2d", "quantized_mean",
                "quantized_softmax", "quantized_logistic", "quantized_hard_swish", "quantized_concatenation",
                "quantized_pad", "quantized_resize_bilinear", "quantize", "dequantize"}
    assert expected <= ops, expected - ops


def test_float16_base_equals_litert():
    """The float base of the personalization comparison (the same network, float16 weights behind
    DEQUANTIZE, float computation) as LiteRT and TensorFlow 2.18 compute it."""
    _, data, ref = fixture("mobilenet_v2_035_float16")
    ours = ours_run(data, ref["x"])
    for key, value in litert_run(data, ref["x"], "AUTO").items():
        np.testing.assert_allclose(ours[key], value, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(ours[key], ref[f"ref_{key}"], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["small_cnn_int8", "mobilenet_v2_035_int8"])
def test_tensor_details_give_the_quantization_litert_gives(name):
    """get_input_details/get_output_details/get_tensor_details carry each tensor's scale and zero
    point, as LiteRT's do (a user quantizes inputs and dequantizes outputs with them); per-channel
    tensors give (0.0, 0) and their parameters in `quantization_parameters`."""
    _, data, _ = fixture(name)
    ours, theirs = lt.Interpreter(model_content=data), litert.Interpreter(model_content=data)
    for kind in ("get_input_details", "get_output_details"):
        a, b = getattr(ours, kind)(), getattr(theirs, kind)()
        assert [d["quantization"] for d in a] == [d["quantization"] for d in b]
        assert all(d["quantization"] != (0.0, 0) for d in a)
    theirs_by_name = {d["name"]: d for d in theirs.get_tensor_details()}
    checked = per_channel = 0
    for d in ours.get_tensor_details():
        other = theirs_by_name.get(d["name"])
        if other is None:
            continue
        q, r = d["quantization_parameters"], other["quantization_parameters"]
        assert d["quantization"] == other["quantization"], d["name"]
        np.testing.assert_array_equal(q["scales"], r["scales"])
        np.testing.assert_array_equal(q["zero_points"], r["zero_points"])
        if len(q["scales"]) > 1:
            assert q["quantized_dimension"] == r["quantized_dimension"]
            per_channel += 1
        checked += 1
    assert checked > 10 and per_channel > 0
