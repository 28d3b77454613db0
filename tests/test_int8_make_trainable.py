"""make_trainable on full-integer-quantized files (fixtures/int8/): the chosen layers become float32
variables initialised from their dequantized weights (bias: bias scale x int32), they and everything
after them run as float ops, and the layers before stay int8 ops.

The reference is LiteRT running the same trainable file (its reference kernels for the int8 part):
the losses step by step and the trained weights match litetrain's.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import litetrain as lt
from litetrain.importers.tflite import find_layers, make_trainable
from litetrain.tflite import read_model

litert = pytest.importorskip("ai_edge_litert.interpreter", reason="LiteRT is the reference runtime")

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "int8")
STEPS = 4


def fixture(name):
    with open(os.path.join(HERE, f"{name}.tflite"), "rb") as f:
        data = f.read()
    return data, np.load(os.path.join(HERE, f"{name}.npz"))["x"]


def _trajectory(runner_of, x, labels, xname):
    train = runner_of("train")
    return [float(train(**{xname: x, "labels": labels})["loss"]) for _ in range(STEPS)]


@pytest.mark.parametrize("name,trainable,optimizer", [
    ("small_cnn_int8", "last:1", "sgd"),
    ("small_cnn_int8", "last:2", "adam"),
    ("small_cnn_float_io", "last:3", "sgd"),
    ("ops_mix_int8", "last:2", "sgd"),
    ("mobilenet_v2_035_float_io", "last:2", "adam"),
    ("mobilenet_v2_035_int8", "all", "sgd"),
])
def test_trainable_int8_file_matches_litert(name, trainable, optimizer):
    data, x = fixture(name)
    new = make_trainable(data, trainable=trainable, optimizer=optimizer, learning_rate=0.05,
                         portable_checkpoints=True)
    ours = lt.Interpreter(model_content=new)
    theirs = litert.Interpreter(model_content=new, experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    xname = next(k for k in ours.get_signature_list()["train"]["inputs"] if k != "labels")
    classes = ours.get_signature_runner("infer")(**{xname: x})
    labels = (np.arange(len(x)) % next(iter(classes.values())).shape[-1]).astype(np.int32)
    a = _trajectory(ours.get_signature_runner, x, labels, xname)
    b = _trajectory(theirs.get_signature_runner, x, labels, xname)
    np.testing.assert_allclose(a, b, rtol=1e-5)
    assert a[-1] != a[0], "the weights must change"
    after = ours.get_signature_runner("infer")(**{xname: x})
    for key, value in theirs.get_signature_runner("infer")(**{xname: x}).items():
        np.testing.assert_allclose(after[key], value, rtol=1e-3, atol=1e-3)  # float32 sums in another order


def test_trained_layers_are_float_and_the_rest_stays_int8():
    data, x = fixture("small_cnn_int8")
    layers = find_layers(read_model(data))
    new = make_trainable(data, trainable="last:2", portable_checkpoints=True)
    program = read_model(new)
    ops = [n.op for n in program.functions[program.signature("infer").function].nodes]
    assert ops.count("quantized_conv_2d") == 1 and "quantized_depthwise_conv_2d" in ops
    assert "conv_2d" in ops and "fully_connected" in ops and "quantized_fully_connected" not in ops
    variables = lt.Interpreter(model_content=new).get_variables()
    for layer in layers[-2:]:
        for w in layer.weights:
            got = variables[w.name]
            assert got.dtype == np.float32
            np.testing.assert_allclose(got, w.value)
    fn = read_model(data).functions[0]
    dense = [n for n in fn.nodes if n.op == "quantized_fully_connected"][-1]
    kernel = fn.tensors[dense.inputs[1]]
    scales = np.asarray(kernel.quant.scale, np.float32).reshape(-1, 1)
    np.testing.assert_allclose(layers[-1].weights[0].value, scales * kernel.data.astype(np.float32), rtol=1e-6)


def test_untrained_infer_is_close_to_the_quantized_file():
    """Before training, the float tail computes what the int8 tail approximates: within a few
    output steps."""
    data, x = fixture("small_cnn_float_io")
    new = make_trainable(data, trainable="last:1", portable_checkpoints=True)
    ours = lt.Interpreter(model_content=new).get_signature_runner("infer")
    xname = "input_2" if "input_2" in lt.Interpreter(model_content=new).get_signature_list()["infer"]["inputs"] \
        else next(iter(lt.Interpreter(model_content=new).get_signature_list()["infer"]["inputs"]))
    got = next(iter(ours(**{xname: x}).values()))
    quantized = lt.Interpreter(model_content=data).get_signature_runner()
    expected = next(iter(quantized(**{xname: x}).values()))
    assert np.abs(got - expected).max() < 4 / 256
