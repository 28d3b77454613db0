"""Training files made by TensorFlow's own converter (the on-device training guide's flow, with Flex
ops) run in litetrain's interpreter exactly as TensorFlow Lite ran them, and checkpoints cross
between the two runtimes both ways.

The fixtures in fixtures/tf/ were made by fixtures/make_tf_fixtures.py and
fixtures/make_tf_training_fixtures.py with tensorflow-cpu 2.18.1 and tf-keras 2.18 (a separate
environment; CI never needs TensorFlow): the .tflite files, the data,
TensorFlow Lite's per-step losses and infer outputs, the checkpoint TensorFlow Lite's `save` wrote,
and the infer outputs TensorFlow Lite gave after restoring a checkpoint written by litetrain.
"""
from __future__ import annotations

import pathlib

import numpy as np
import pytest

import litetrain as lt
from litetrain.ops.tf import checkpoint as tf_checkpoint

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "tf"
# the guide's MLP and a small CNN (make_tf_fixtures.py); batch norm, depthwise/separable convolutions,
# average pooling, dropout, LSTM/GRU and the other Keras optimizers (make_tf_training_fixtures.py)
MODELS = ["mlp_sgd", "mlp_adam", "cnn_sgd", "cnn_adam",
          "bn_cnn_sgd", "mobilenet_sgd", "lstm_sgd", "gru_sgd",
          "mlp_momentum", "mlp_adamw", "mlp_rmsprop", "mlp_adagrad"]
# float32 in both runtimes, the same formulas; only the order of summation differs (NumPy's pairwise
# sums and BLAS against Eigen's and TFLite's kernels): a few ulps per op, compounded over 6 steps.
# Measured worst: 7.2e-7 on losses of about 2 (mlp_rmsprop; 3 ulps, the others 1 ulp), 3.6e-6 on
# logits after training. What the fixtures tell apart is far above that: another dropout mask moves
# mobilenet_sgd's losses by 1e-2, moving averages left unchanged move bn_cnn_sgd's logits by 1e-2
# (the moving variance's Bessel correction, 1.0002 here, is checked by tests/op_cases_tf_training.py).
LOSS_TOL = 5e-6
OUT_TOL = 1e-5
_LISTS = {"tf.TensorListReserve", "tf.TensorListFromTensor", "tf.TensorListGetItem", "tf.TensorListSetItem",
          "tf.TensorListStack", "tf.EmptyTensorList", "tf.TensorListPushBack", "tf.TensorListPopBack",
          "tf.TensorListElementShape", "tf.TensorListLength", "tf.AddN", "tf.ZerosLike", "tf.StridedSliceGrad",
          "tf.BroadcastGradientArgs", "while", "split", "add_n"}
# what each model's file must contain for its fixture to test what it is for (Flex ops "tf.<Name>", builtins)
EXPECTED_OPS = {
    "mlp": {"tf.ReluGrad"},
    "cnn": {"tf.ReluGrad", "tf.Conv2DBackpropFilter", "tf.MaxPoolGrad"},
    "bn": {"tf.FusedBatchNormV3", "tf.FusedBatchNormGradV3", "tf.AvgPoolGrad", "tf.ReluGrad",
           "tf.Conv2DBackpropFilter"},
    "mobilenet": {"tf.FusedBatchNormV3", "tf.FusedBatchNormGradV3", "tf.DepthwiseConv2dNativeBackpropFilter",
                  "tf.DepthwiseConv2dNativeBackpropInput", "tf.Relu6Grad", "tf.ReluGrad", "tf.Conv2DBackpropFilter",
                  "tf.BroadcastGradientArgs", "random_uniform", "unpack"},  # random_uniform: the dropout
    "lstm": _LISTS,
    "gru": _LISTS | {"unpack"},
}


# The small CNN's fixture sits on a knife edge: at its second step one pre-activation of the second
# convolution is within 3e-8 of zero, so a 1-ulp difference in the first step's convolution (how the
# BLAS under NumPy sums, which differs between NumPy 1.23's and 2.x's OpenBLAS builds) flips that
# ReLU and the trajectories part (by 1.6e-4 in the third loss). With NumPy 2 litetrain's sums round
# as TensorFlow Lite's do and the file follows TFLite's losses to 2.4e-7.
KNIFE_EDGE = {"cnn_sgd"}


def skip_on_a_knife_edge(name):
    """Skip a check of `name`'s whole trajectory where NumPy's BLAS rounds its convolutions otherwise."""
    if name in KNIFE_EDGE and np.lib.NumpyVersion(np.__version__) < "2.0.0":
        pytest.skip(f"{name}'s trajectory flips a ReLU on a 1-ulp difference in NumPy {np.__version__}'s "
                    "sums (see KNIFE_EDGE); checked with NumPy 2")


def load(name):
    return np.load(FIXTURES / f"{name}.npz"), lt.Interpreter(model_path=str(FIXTURES / f"{name}.tflite"))


def path_arg(path) -> np.ndarray:
    return np.array(str(path).encode(), dtype=object)


def bundle(name) -> bool:
    """Whether the fixture saves with SaveV2/RestoreV2 (tensor bundle) rather than Save/Restore (V1)."""
    return (FIXTURES / f"{name}.ckpt.index").exists()


def tf_ckpt(name):
    return FIXTURES / f"{name}.ckpt"


def read_ckpt(name, path):
    return tf_checkpoint.read_bundle(path) if bundle(name) else tf_checkpoint.read_slices(path)


def report(what, diff):
    print(f"{what}: max abs diff {diff:.3g}")
    return diff


@pytest.mark.parametrize("name", MODELS)
def test_the_file_uses_flex_ops_that_litetrain_runs_natively(name):
    _, interp = load(name)
    ops = {n.op for f in interp._program.functions for n in f.nodes}
    flex = {op for op in ops if op.startswith("tf.")}
    assert ({"tf.SaveV2", "tf.RestoreV2"} if bundle(name) else {"tf.Save", "tf.Restore"}) <= flex
    missing = EXPECTED_OPS[name.split("_")[0]] - ops
    assert not missing, f"{name} no longer has {sorted(missing)}: the fixture does not test what it should"
    assert interp.get_signature_list().keys() == {"train", "infer", "save", "restore"}


@pytest.mark.parametrize("name", MODELS)
def test_training_matches_tensorflow_lite_step_by_step(name):
    skip_on_a_knife_edge(name)
    d, interp = load(name)
    infer, train = interp.get_signature_runner("infer"), interp.get_signature_runner("train")
    before = infer(x=d["x_infer"])
    assert report(f"{name} infer before training vs TFLite",
                  np.abs(before["logits"] - d["logits_before"]).max()) <= OUT_TOL
    np.testing.assert_allclose(before["output"], d["output_before"], atol=OUT_TOL)
    losses = np.float32([train(x=x, y=y)["loss"] for x, y in zip(d["x"], d["y"])])
    assert report(f"{name} per-step losses vs TFLite ({len(losses)} steps)",
                  np.abs(losses - d["losses"]).max()) <= LOSS_TOL, (losses, d["losses"])
    after = infer(x=d["x_infer"])
    assert report(f"{name} infer after training vs TFLite", np.abs(after["logits"] - d["logits_after"]).max()) <= OUT_TOL
    np.testing.assert_allclose(after["output"], d["output_after"], atol=OUT_TOL)


@pytest.mark.parametrize("name", MODELS)
def test_a_checkpoint_written_by_tensorflow_lite_restores_in_litetrain(name):
    d, interp = load(name)
    interp.get_signature_runner("restore")(checkpoint_path=path_arg(tf_ckpt(name)))
    logits = interp.get_signature_runner("infer")(x=d["x_infer"])["logits"]
    assert report(f"{name} infer after restoring TFLite's checkpoint",
                  np.abs(logits - d["logits_after"]).max()) <= OUT_TOL


@pytest.mark.parametrize("name", MODELS)
def test_a_checkpoint_written_by_litetrain_restores_in_tensorflow_lite(name, tmp_path):
    """TensorFlow Lite restored fixtures/tf/litetrain_written/<name>.ckpt (written by this repo's
    writer) and recorded its infer; litetrain's writer still writes those bytes exactly, and
    litetrain restoring them gives the same infer."""
    d, interp = load(name)
    ours = FIXTURES / "litetrain_written" / f"{name}.ckpt"
    values = {k: 0.5 * v for k, v in read_ckpt(name, tf_ckpt(name)).items()}
    order = [str(n) for n in d["weights_names"]]
    fresh = tmp_path / "again.ckpt"
    if bundle(name):
        tf_checkpoint.write_bundle(fresh, {k: values[k] for k in order})
        for suffix in (".index", tf_checkpoint.DATA_SUFFIX):
            assert (tmp_path / f"again.ckpt{suffix}").read_bytes() == pathlib.Path(f"{ours}{suffix}").read_bytes()
    else:
        tf_checkpoint.write_slices(fresh, values)
        assert fresh.read_bytes() == ours.read_bytes()
    interp.get_signature_runner("restore")(checkpoint_path=path_arg(ours))
    logits = interp.get_signature_runner("infer")(x=d["x_infer"])["logits"]
    assert report(f"{name} infer after restoring litetrain's checkpoint, litetrain vs TFLite",
                  np.abs(logits - d["logits_after_litetrain_ckpt"]).max()) <= OUT_TOL


@pytest.mark.parametrize("name", MODELS)
def test_litetrain_writes_tensorflow_checkpoints_byte_for_byte(name, tmp_path):
    """Our writer, given the tensors of TensorFlow's checkpoint, reproduces TensorFlow's files."""
    d, _ = load(name)
    values = read_ckpt(name, tf_ckpt(name))
    order = [str(n) for n in d["weights_names"]]
    assert sorted(values) == sorted(order)
    if bundle(name):
        tf_checkpoint.write_bundle(tmp_path / "c", {k: values[k] for k in order})
        for suffix in (".index", tf_checkpoint.DATA_SUFFIX):
            assert (tmp_path / f"c{suffix}").read_bytes() == pathlib.Path(f"{tf_ckpt(name)}{suffix}").read_bytes()
    else:
        tf_checkpoint.write_slices(tmp_path / "c", values)
        assert (tmp_path / "c").read_bytes() == tf_ckpt(name).read_bytes()


@pytest.mark.parametrize("name", MODELS)
def test_save_after_training_in_litetrain_holds_what_tensorflow_lite_saved(name, tmp_path):
    skip_on_a_knife_edge(name)
    d, interp = load(name)
    train = interp.get_signature_runner("train")
    for x, y in zip(d["x"], d["y"]):
        train(x=x, y=y)
    interp.get_signature_runner("save")(checkpoint_path=path_arg(tmp_path / "ours.ckpt"))
    ours, theirs = read_ckpt(name, tmp_path / "ours.ckpt"), read_ckpt(name, tf_ckpt(name))
    assert ours.keys() == theirs.keys()
    for k in ours:
        np.testing.assert_allclose(ours[k], theirs[k], atol=1e-5, err_msg=k)
    other = lt.Interpreter(model_path=str(FIXTURES / f"{name}.tflite"))
    other.get_signature_runner("restore")(checkpoint_path=path_arg(tmp_path / "ours.ckpt"))
    np.testing.assert_allclose(other.get_signature_runner("infer")(x=d["x_infer"])["logits"], d["logits_after"],
                               atol=OUT_TOL)


def test_restoring_a_missing_or_corrupt_checkpoint_fails_cleanly_and_changes_nothing(tmp_path):
    d, interp = load("cnn_sgd")
    restore, infer = interp.get_signature_runner("restore"), interp.get_signature_runner("infer")
    before = infer(x=d["x_infer"])["logits"]
    with pytest.raises(lt.ExecutionError, match="RestoreV2.*cannot read checkpoint"):
        restore(checkpoint_path=path_arg(tmp_path / "nowhere"))
    for suffix in (".index", tf_checkpoint.DATA_SUFFIX):
        data = bytearray(pathlib.Path(f"{tf_ckpt('cnn_sgd')}{suffix}").read_bytes())
        data[len(data) // 3] ^= 0x40
        (tmp_path / f"bad{suffix}").write_bytes(data)
        other = "" if suffix == ".index" else ".index"
        if other:
            (tmp_path / f"bad{other}").write_bytes(pathlib.Path(f"{tf_ckpt('cnn_sgd')}{other}").read_bytes())
        else:
            (tmp_path / f"bad{tf_checkpoint.DATA_SUFFIX}").write_bytes(
                pathlib.Path(f"{tf_ckpt('cnn_sgd')}{tf_checkpoint.DATA_SUFFIX}").read_bytes())
        with pytest.raises(lt.ExecutionError, match="corrupt|bad"):
            restore(checkpoint_path=path_arg(tmp_path / "bad"))
        np.testing.assert_array_equal(infer(x=d["x_infer"])["logits"], before)
