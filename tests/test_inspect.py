"""`litetrain inspect FILE`: signatures, variables, op counts, custom ops, who can run the file."""
from __future__ import annotations

import json
import pathlib

import numpy as np

import litetrain as lt
from litetrain.cli import main
from litetrain.tflite.inspect import format_inspection, inspect_model

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "tf"


class Tiny(lt.Module):
    def __init__(self):
        self.dense = lt.nn.Dense(3)
        self.optimizer = lt.optim.SGD(0.1)

    @lt.signature(x=lt.TensorSpec([None, 4]), y=lt.TensorSpec([None, 3]))
    def train(self, x, y):
        loss = lt.losses.MeanSquaredError()(y, self.dense(x))
        self.optimizer.minimize(loss, self.dense.trainable_variables)
        return {"loss": loss}

    @lt.signature(x=lt.TensorSpec([None, 4]))
    def infer(self, x):
        return {"y": self.dense(x)}


def test_a_litetrain_file_with_builtins_only():
    info = inspect_model(lt.convert(Tiny(), ["train", "infer", "save", "restore"], portable_checkpoints=True))
    assert [s["name"] for s in info["signatures"]] == ["train", "infer", "save", "restore"]
    train = info["signatures"][0]
    assert [(t["key"], t["dtype"], t["shape"]) for t in train["inputs"]] == [("x", "float32", [None, 4]),
                                                                          ("y", "float32", [None, 3])]
    assert [(t["key"], t["shape"]) for t in train["outputs"]] == [("loss", []), ("step_skipped", [])]
    variables = {v["name"]: v for v in info["variables"]}
    assert variables["dense/kernel"]["trainable"] and variables["dense/kernel"]["shape"] == [3, 4]  # [out, in]
    assert not variables["optimizer/iterations"]["trainable"]
    assert info["op_counts"]["FULLY_CONNECTED"] >= 2 and info["custom_ops"] == []
    assert info["litert_can_run"].startswith("yes") and info["litetrain_can_run"] == "yes"
    json.dumps(info)  # JSON-ready


def test_a_tensorflow_training_file_with_flex_ops():
    info = inspect_model(FIXTURES / "cnn_adam.tflite")
    assert info["flex_ops"] == ["FlexConv2DBackpropFilter", "FlexMaxPoolGrad", "FlexReluGrad", "FlexRestoreV2",
                                "FlexSaveV2"]
    assert info["op_counts"]["FlexReluGrad"] == 2
    assert "Flex delegate" in info["litert_can_run"] and info["litetrain_can_run"] == "yes"
    assert {"CONVERSION_METADATA", "min_runtime_version"} <= set(info["metadata"])
    assert {v["name"] for v in info["variables"]} >= {"conv_1/kernel", "Adam/m/conv_1/kernel", "iteration"}
    text = format_inspection(info, "cnn_adam.tflite")
    assert "input  checkpoint_path: string[]" in text and "FlexConv2DBackpropFilter" in text


def test_a_file_litetrain_cannot_load_is_still_described():
    data = (FIXTURES / "cnn_sgd.tflite").read_bytes().replace(b"FlexMaxPoolGrad", b"FlexSigmoidGrad")
    info = inspect_model(data)
    assert info["variables"] is None and "FlexSigmoidGrad" in info["litetrain_can_run"]
    assert info["op_counts"]["FlexSigmoidGrad"] == 1
    assert "variables: unknown" in format_inspection(info)


def test_the_command(tmp_path, capsys):
    assert main(["inspect", str(FIXTURES / "mlp_sgd.tflite")]) == 0
    out = capsys.readouterr().out
    assert "train (subgraph" in out and "dense_1/kernel: float32[784, 16]" in out and "FlexSave" in out
    assert main(["inspect", "--json", str(FIXTURES / "mlp_sgd.tflite")]) == 0
    assert json.loads(capsys.readouterr().out)["signatures"][0]["name"] == "infer"
    (tmp_path / "junk.tflite").write_bytes(np.arange(64, dtype=np.uint8).tobytes())
    assert main(["inspect", str(tmp_path / "junk.tflite")]) == 2  # not a model: one line on stderr
    assert main(["inspect", str(tmp_path / "missing.tflite")]) == 2
    assert "cannot read" in capsys.readouterr().err
