"""Personalization on an int8 base: `BaseModel.from_tflite` on a full-integer-quantized MobileNetV2-0.35
(fixtures/int8/mobilenet_v2_035_float_io.tflite: float images in, QUANTIZE, int8 to the bottleneck),
whose bottleneck is dequantized with the file's parameters, and a float softmax head.

- The personalization file keeps the backbone int8 (quantized ops, parameters on its tensors); LiteRT's
  reference kernels run its `load` and `train` signatures: bottlenecks bit-identical, the same losses.
- The bottleneck equals the dequantized input of the quantized file's classifier in LiteRT.
- Must-show: trained on the personalization example's data (4 new Animal MNIST classes, 20
  images each, 96x96), the int8 base's test accuracy is within one point of the float base's (the
  same network with float16 weights, fixtures/int8/mobilenet_v2_035_float16.tflite).
"""
from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest

import litetrain as lt

litert = pytest.importorskip("ai_edge_litert.interpreter", reason="LiteRT is the reference of the int8 base")

ROOT = pathlib.Path(__file__).resolve().parent.parent
INT8 = ROOT / "fixtures" / "int8" / "mobilenet_v2_035_float_io.tflite"
FLOAT = ROOT / "fixtures" / "int8" / "mobilenet_v2_035_float16.tflite"
SIZE = 96


def _preprocessing():
    from litetrain.apps.personalize.base import Preprocessing
    return Preprocessing((SIZE, SIZE), 3, (0.5,) * 3, (0.5,) * 3, 255.0)  # pixels in [0, 255] -> [-1, 1]


def personalization_file(path, learning_rate=0.003):
    from litetrain.apps.personalize import BaseModel, convert_personalization
    base = BaseModel.from_tflite(str(path), _preprocessing(), name="base")
    return convert_personalization(base, "softmax", num_classes=4, optimizer=lt.optim.Adam(learning_rate))


@pytest.fixture(scope="module")
def int8_file():
    return personalization_file(INT8)


def _pixels(n, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, SIZE, SIZE, 3)).astype(np.float32)


def test_int8_base_stays_int8_in_the_file(int8_file):
    from litetrain.tflite import read_model
    program = read_model(int8_file)
    ops = {n.op for fn in program.functions for n in fn.nodes}
    assert {"quantize", "quantized_conv_2d", "quantized_depthwise_conv_2d", "quantized_add", "dequantize"} <= ops
    assert "conv_2d" not in ops  # the backbone is not dequantized: only its bottleneck is
    weights = [t for fn in program.functions for t in fn.tensors if t.data is not None and t.data.ndim == 4]
    assert weights and all(t.dtype == "int8" for t in weights)


def test_litert_runs_the_int8_personalization_file_alike(int8_file):
    images = _pixels(3)
    ours = lt.Interpreter(model_content=int8_file)
    theirs = litert.Interpreter(model_content=int8_file,
                                experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    a = ours.get_signature_runner("load")(images=images)["bottleneck"]
    b = theirs.get_signature_runner("load")(images=images)["bottleneck"]
    np.testing.assert_array_equal(a, b)
    labels = np.array([0, 1, 3], np.int32)
    lr = np.float32(0.01)
    for _ in range(3):
        la = ours.get_signature_runner("train")(bottlenecks=a, labels=labels, learning_rate=lr)["loss"]
        lb = theirs.get_signature_runner("train")(bottlenecks=a, labels=labels, learning_rate=lr)["loss"]
        np.testing.assert_allclose(la, lb, rtol=1e-5)


def test_bottleneck_is_the_dequantized_classifier_input(int8_file):
    """The quantized file run by LiteRT's reference kernels, its classifier's int8 input dequantized."""
    from litetrain.tflite import read_model
    images = _pixels(2, seed=1)
    fn = read_model(INT8.read_bytes()).functions[0]
    fc = [n for n in fn.nodes if n.op == "quantized_fully_connected"][-1]
    index = fc.inputs[0]
    q = fn.tensors[index].quant
    interp = litert.Interpreter(model_path=str(INT8), experimental_preserve_all_tensors=True,
                                experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    detail, = interp.get_input_details()
    interp.resize_tensor_input(detail["index"], images.shape)
    interp.allocate_tensors()
    interp.set_tensor(detail["index"], images / np.float32(127.5) - np.float32(1.0))
    interp.invoke()
    expected = (np.float32(q.scale[0]) * (interp.get_tensor(index).astype(np.float32) - q.zero_point[0]))
    ours = lt.Interpreter(model_content=int8_file).get_signature_runner("load")(images=images)["bottleneck"]
    # the file normalises (x / 255 - 0.5) / 0.5 in its graph; LiteRT got x / 127.5 - 1: a float32 ulp
    # apart at most, so a handful of int8 values one step apart at the QUANTIZE
    close = np.isclose(ours, expected.reshape(ours.shape), rtol=0, atol=1e-6)
    assert close.mean() > 0.98, close.mean()


def test_finetuning_the_last_layers_of_an_int8_base_matches_litert():
    """trainable="last:3": those layers become float Params (their dequantized weights) and run as
    float ops with everything after them; the earlier layers stay int8. LiteRT trains the file alike."""
    from litetrain.apps.personalize import BaseModel, convert_personalization
    base = BaseModel.from_tflite(str(INT8), _preprocessing(), trainable="last:3", name="base")
    assert [len(stage) for stage in base.module.stages] == [2, 2, 2]
    model = convert_personalization(base, "softmax", num_classes=4, optimizer=lt.optim.SGD(0.01),
                                    finetune="trainable")
    ours = lt.Interpreter(model_content=model).get_signature_runner("train_finetune")
    theirs = litert.Interpreter(model_content=model, experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF
                                ).get_signature_runner("train_finetune")
    images, labels, lr = _pixels(4, seed=2), np.array([0, 1, 2, 3], np.int32), np.float32(0.01)
    a = [float(ours(images=images, labels=labels, learning_rate=lr)["loss"]) for _ in range(3)]
    b = [float(theirs(images=images, labels=labels, learning_rate=lr)["loss"]) for _ in range(3)]
    np.testing.assert_allclose(a, b, rtol=1e-5)
    assert a[2] != a[0], "the fine-tuned weights must change"


def _example():
    path = ROOT / "examples" / "personalize_mobilenet.py"
    spec = importlib.util.spec_from_file_location("personalize_mobilenet", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def personalize_accuracy(path, samples=20, test_per_class=100, epochs=30, batch_size=20, learning_rate=0.003):
    """The personalization example's protocol on a .tflite base: (accuracy, bottleneck ms per image,
    train step ms)."""
    example = _example()
    train_imgs, test_imgs = example.load_images(example.CLASSES, samples, test_per_class, SIZE)
    model = personalization_file(path, learning_rate)
    images = np.concatenate([example._flat(train_imgs), example._flat(test_imgs)])
    feats, seconds = example.litetrain_bottlenecks(model, images)
    k = len(example.CLASSES)
    train_x, test_x = feats[:k * samples], feats[k * samples:]
    y = np.repeat(np.arange(k, dtype=np.int32), samples)
    order = example.batch_order(k * samples, epochs, batch_size, 0)
    _, epoch_s, predicted = example.train_litetrain(model, train_x, y, test_x, order, learning_rate)
    accuracy = float(np.mean(predicted == np.repeat(np.arange(k), test_per_class)))
    return accuracy, 1e3 * seconds / len(images), 1e3 * epoch_s / len(order[0])


def test_int8_base_accuracy_within_one_point_of_the_float_base():
    """Must-show (about 15 s: 2 x 480 bottlenecks at 96x96): 0.6575 (int8) vs 0.6600 (float16 weights)."""
    if importlib.util.find_spec("animal_mnist") is None:
        pytest.skip("Animal MNIST is not installed (pip install --no-deps animal-mnist==0.4)")
    int8_accuracy, _, _ = personalize_accuracy(INT8)
    float_accuracy, _, _ = personalize_accuracy(FLOAT)
    assert float_accuracy > 0.5, "well above chance (0.25): the comparison means something"
    assert abs(int8_accuracy - float_accuracy) <= 0.01, (int8_accuracy, float_accuracy)
