"""CNN training files on Google's LiteRT: builtin operators only (no custom op, no Flex kernels), and
LiteRT trains them with litetrain's losses.

Training these CNNs from random weights is chaotic in float32 (tests/test_cnn.py: torch's own float32
run leaves its float64 run within a few steps), so LiteRT is checked along litetrain's 20-step
trajectory: before every step LiteRT restores litetrain's state (weights, moving averages, optimizer
slots, step count) through the portable `restore` signature, then both take the step; the loss and
the new moving averages must agree to float32 rounding (1e-4), and the weight updates to float32 gradient
noise (see MOBILENET_OPTIMIZERS: torch's own float32 gradient of MobileNetV2 at step 0 is ~1% off its
float64 one). With dropout the losses agree only because litetrain's RANDOM_UNIFORM draws LiteRT's
Philox stream, call after call.
"""
import numpy as np
import pytest

import litetrain as lt
from litetrain.models import MobileNetV2, SmallCNN, image_classifier
from litetrain.core.registry import Builtin, get_op
from litetrain.tflite import read_model

litert = pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert is the TFLite oracle")

from litert_child import run_signature  # noqa: E402
from test_cnn import image_batches  # noqa: E402

SIGS = ["train", "infer", "save", "restore"]
OPTIMIZERS = {"sgd": lambda: lt.optim.SGD(0.01, momentum=0.9), "adam": lambda: lt.optim.Adam(1e-3)}
# (optimizer, the largest relative gap allowed between LiteRT's weight update and ours): measured
# below 0.05% for the small CNN; for MobileNetV2 up to 2.2% with SGD (median 0.3%) and 7.3% with Adam
# (median 1.2%), whose first update is about lr * sign(gradient), so weights whose exact gradient is
# near zero (batch norm makes many) move by +-lr on rounding alone.
MOBILENET_OPTIMIZERS = {"sgd": (lambda: lt.optim.SGD(1e-3, momentum=0.9), 0.05),
                        "adam": (lambda: lt.optim.Adam(1e-4), 0.15)}


def portable_file(net, shape, optimizer, classes=10):
    return lt.convert(image_classifier(net, shape, classes, optimizer), signatures=SIGS, portable_checkpoints=True)


def loss_of(out):
    return float(np.asarray(out["loss"]).reshape(()))


@pytest.mark.parametrize("model", ["small_cnn", "mobilenet_v2"])
def test_cnn_training_files_use_builtin_operators_only(model):
    if model == "small_cnn":
        data = portable_file(SmallCNN(dropout=0.5), (28, 28, 1), lt.optim.Adam(1e-3))
        expected = {"conv_2d", "transpose_conv", "max_pool_2d", "arg_max", "one_hot", "random_uniform"}
    else:
        data = portable_file(MobileNetV2(alpha=0.35, input_shape=(96, 96, 3), num_classes=10), (96, 96, 3),
                             lt.optim.Adam(1e-4))
        expected = {"conv_2d", "depthwise_conv_2d", "relu6", "batch_matmul"}  # 1x1 gradients are matmuls
    program = read_model(data)
    ops = {n.op for f in program.functions for n in f.nodes}
    assert all(isinstance(get_op(op).tflite, Builtin) for op in ops), sorted(ops)
    assert expected <= ops
    litert.Interpreter(model_content=data).get_signature_runner("train")  # LiteRT resolves every operator


def assert_litert_follows(data, batches, moving_layers, max_gap):
    """LiteRT takes each step from litetrain's state (see the module docstring); returns the
    relative gaps between LiteRT's weight updates and litetrain's."""
    ours, theirs = lt.Interpreter(model_content=data), litert.Interpreter(model_content=data)
    save, restore = ours.get_signature_runner("save"), theirs.get_signature_runner("restore")
    gaps, losses = [], []
    for step, (x, y) in enumerate(batches):
        before = save()
        restore(**before)
        a = loss_of(ours.get_signature_runner("train")(x=x, y=y))
        b = loss_of(theirs.get_signature_runner("train")(x=x, y=y))
        assert b == pytest.approx(a, rel=1e-4), f"step {step}"
        losses.append(a)
        after_ours = save()
        after_theirs = {k: np.asarray(v) for k, v in theirs.get_signature_runner("save")().items()}
        assert int(after_theirs["optimizer/iterations"]) == step + 1
        moving = [k for k in after_ours if "moving_" in k]
        assert len(moving) == 2 * moving_layers
        for k in moving:
            np.testing.assert_allclose(after_theirs[k], after_ours[k], rtol=1e-4, atol=1e-5, err_msg=f"step {step} {k}")
        trained = [k for k in after_ours if k.startswith("net/") and "moving_" not in k]
        gap = sum(((after_theirs[k] - after_ours[k]) ** 2).sum() for k in trained)
        update = sum(((after_ours[k] - before[k]) ** 2).sum() for k in trained)
        gaps.append(np.sqrt(gap / update))
    assert np.mean(losses[-5:]) < losses[0], "it learns, so the comparison means something"
    assert max(gaps) < max_gap, f"LiteRT's update vs ours, relative: {np.round(gaps, 4)}"
    x = batches[0][0]
    restore(**save())
    np.testing.assert_allclose(theirs.get_signature_runner("infer")(x=x)["logits"],
                               ours.get_signature_runner("infer")(x=x)["logits"], rtol=1e-4, atol=1e-4)
    return gaps


@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
def test_litert_trains_the_small_cnn_with_litetrains_losses(opt):
    data = portable_file(SmallCNN(), (28, 28, 1), OPTIMIZERS[opt]())
    assert_litert_follows(data, image_batches((28, 28, 1), 10, 32, 20, seed=5), moving_layers=2, max_gap=0.01)


def test_litert_draws_litetrains_dropout_masks():
    """SmallCNN with Dropout(0.5) in training: the losses agree step for step only if both runtimes
    drop the same units, i.e. draw the same random stream (restore does not touch the streams)."""
    data = portable_file(SmallCNN(dropout=0.5), (28, 28, 1), lt.optim.SGD(0.01, momentum=0.9))
    assert_litert_follows(data, image_batches((28, 28, 1), 10, 32, 10, seed=6), moving_layers=2, max_gap=0.01)


@pytest.mark.parametrize("opt", sorted(MOBILENET_OPTIMIZERS))
def test_litert_trains_mobilenet_v2_with_litetrains_losses(opt):
    """MobileNetV2 width 0.35, 96x96, batch 8, batch norm in training mode, 20 steps."""
    make, max_gap = MOBILENET_OPTIMIZERS[opt]
    data = portable_file(MobileNetV2(alpha=0.35, input_shape=(96, 96, 3), num_classes=10), (96, 96, 3), make())
    assert_litert_follows(data, image_batches((96, 96, 3), 10, 8, 20, seed=7), moving_layers=52, max_gap=max_gap)


def test_litert_takes_the_gradient_of_a_wide_overlapping_max_pool(tmp_path):
    """A 3x3 stride-2 SAME max pool over 640 channels (as ResNet's stem or Inception's reductions), on a
    batch of unknown size: its gradient must not pass a wide tensor through DEPTHWISE_CONV_2D, whose
    float kernel in LiteRT never returns above 4832 output channels (the rule that gathered each window
    by a depth_multiplier=9 depthwise convolution did, from 537 channels, once XNNPACK was off). LiteRT
    runs in a subprocess with a time limit: a regression fails here instead of hanging the suite.
    Values repeat, so ties pick each window's first maximum, as in PyTorch."""
    torch = pytest.importorskip("torch", reason="PyTorch is the gradient oracle")
    c = 640

    class Pool(lt.Module):
        @lt.signature(x=lt.TensorSpec([None, 9, 9, c]), g=lt.TensorSpec([None, 5, 5, c]))
        def grads(self, x, g):
            y = lt.ops.max_pool_2d(x, 3, 2, "SAME")
            return {"y": y, "dx": lt.gradients(y, [x], grad_y=g)[0]}

    data = lt.convert(Pool(), signatures=["grads"])
    assert "depthwise_conv_2d" not in {n.op for f in read_model(data).functions for n in f.nodes}
    rng = np.random.default_rng(0)
    x = (np.round(rng.standard_normal((3, 9, 9, c)) * 2) / 2).astype(np.float32)
    g = rng.standard_normal((3, 5, 5, c)).astype(np.float32)
    theirs = run_signature(data, "grads", {"x": x, "g": g}, tmp_path)
    ours = lt.Interpreter(model_content=data).get_signature_runner("grads")(x=x, g=g)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2)).requires_grad_()
    yt = torch.nn.functional.max_pool2d(xt, 3, 2, padding=1)  # SAME pads one pixel each side here
    yt.backward(torch.from_numpy(g.transpose(0, 3, 1, 2)))
    np.testing.assert_array_equal(ours["y"], yt.detach().numpy().transpose(0, 2, 3, 1))
    np.testing.assert_allclose(ours["dx"], xt.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-6, atol=1e-6)
    for k in ours:
        np.testing.assert_array_equal(np.asarray(theirs[k]), ours[k], err_msg=k)
