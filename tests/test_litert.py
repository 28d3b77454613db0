"""The portable form of a training file runs on Google's LiteRT interpreter, with the same results.

The file holds builtin ops only (no custom op, no TensorFlow "Flex" kernels): stock LiteRT trains
it, and the losses of 20 steps match litetrain's interpreter step for step."""
import numpy as np
import pytest

import litetrain as lt
from litetrain.tflite import read_model

litert = pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert is the TFLite oracle")

from test_training_parity import CASES, MLP, batches  # noqa: E402

SIGS = ["train", "infer", "save", "restore", "get_weights", "set_weights"]


def portable(optimizer, hidden=128):
    model = MLP(optimizer, hidden=hidden)
    return lt.convert(model, signatures=SIGS, portable_checkpoints=True)


def test_portable_file_has_builtin_ops_only():
    program = read_model(portable(lt.optim.Adam(0.01)))
    from litetrain.core.registry import Custom, get_op
    ops = {n.op for f in program.functions for n in f.nodes}
    assert not [op for op in ops if isinstance(get_op(op).tflite, Custom)]
    assert {"var_handle", "read_variable", "assign_variable", "call_once"} <= ops


@pytest.mark.parametrize("case", ["sgd", "sgd_momentum", "adam", "adamw", "rmsprop", "adagrad",
                                  "clip_global_norm", "cosine_decay", "exponential_staircase"])
def test_litert_trains_the_demo_model_with_the_same_losses(case):
    data = portable(CASES[case][0]())
    ours = lt.Interpreter(model_content=data).get_signature_runner("train")
    theirs = litert.Interpreter(model_content=data).get_signature_runner("train")
    ours_losses, theirs_losses = [], []
    for x, y in batches(seed=5, steps=20):
        ours_losses.append(float(ours(x=x, y=y)["loss"]))
        theirs_losses.append(float(np.asarray(theirs(x=x, y=y)["loss"]).reshape(())))
    assert ours_losses[-1] < ours_losses[0]
    np.testing.assert_allclose(theirs_losses, ours_losses, rtol=1e-4, atol=1e-5)


def test_litert_variables_are_shared_across_signatures():
    """Train in LiteRT, then its infer signature sees the trained weights (the same as ours)."""
    data = portable(lt.optim.SGD(0.1))
    ours, theirs = lt.Interpreter(model_content=data), litert.Interpreter(model_content=data)
    for x, y in batches(seed=6, steps=5):
        ours.get_signature_runner("train")(x=x, y=y)
        theirs.get_signature_runner("train")(x=x, y=y)
    x = batches(seed=7, steps=1)[0][0]
    np.testing.assert_allclose(theirs.get_signature_runner("infer")(x=x)["logits"],
                               ours.get_signature_runner("infer")(x=x)["logits"], rtol=1e-4, atol=1e-5)


def test_weights_move_between_litert_and_litetrain():
    """save in LiteRT -> restore in litetrain (optimizer slots included) and back: same trajectory."""
    data = portable(lt.optim.Adam(0.003))
    steps = batches(seed=8, steps=12)
    theirs = litert.Interpreter(model_content=data)
    for x, y in steps[:6]:
        theirs.get_signature_runner("train")(x=x, y=y)
    state = {k: np.asarray(v) for k, v in theirs.get_signature_runner("save")().items()}
    assert "optimizer/v/net/dense/kernel" in state and int(state["optimizer/iterations"]) == 6
    ours = lt.Interpreter(model_content=data)
    ours.get_signature_runner("restore")(**state)
    ours_losses = [float(ours.get_signature_runner("train")(x=x, y=y)["loss"]) for x, y in steps[6:]]
    theirs_losses = [float(np.asarray(theirs.get_signature_runner("train")(x=x, y=y)["loss"]).reshape(()))
                     for x, y in steps[6:]]
    np.testing.assert_allclose(ours_losses, theirs_losses, rtol=1e-4, atol=1e-5)
    back = litert.Interpreter(model_content=data)
    back.get_signature_runner("restore")(**ours.get_signature_runner("save")())
    x = steps[0][0]
    np.testing.assert_allclose(back.get_signature_runner("infer")(x=x)["logits"],
                               ours.get_signature_runner("infer")(x=x)["logits"], rtol=1e-5, atol=1e-6)
