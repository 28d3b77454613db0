"""Hostile or careless inputs get one clear error of the documented type, and change nothing:
outputs made inside the call's transaction, non-files refused unread, checkpoint paths checked."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import litetrain as lt
from litetrain import ops
from litetrain.runtime import interpreter as interpreter_module


class Counter(lt.Module):
    def __init__(self):
        self.w = lt.Param(np.ones(3, np.float32))
        self.optimizer = lt.optim.SGD(0.5)

    @lt.signature(x=lt.TensorSpec([3]))
    def train(self, x):
        loss = ops.reduce_sum(ops.square(ops.mul(x, self.w)))
        self.optimizer.minimize(loss, [self.w])
        return {"loss": loss, "w": ops.mul(x.fb.read(self.w), 1.0)}


@pytest.fixture
def interp():
    return lt.Interpreter(model_content=lt.convert(Counter(), ["train", "save", "restore"]))


def test_running_out_of_memory_while_making_the_outputs_changes_nothing(interp, monkeypatch):
    before = interp.get_variables()

    def no_memory(value):
        raise MemoryError("the caller's copy of an output")
    monkeypatch.setattr(interpreter_module, "_result", no_memory)
    with pytest.raises(MemoryError):
        interp.get_signature_runner("train")(x=np.ones(3, np.float32))
    monkeypatch.undo()
    after = interp.get_variables()
    assert all(np.array_equal(before[k], after[k]) for k in before)  # the step was not kept


@pytest.mark.parametrize("path", ["/dev/zero", "fifo", "directory"])
def test_non_files_are_refused_unread(tmp_path, interp, path):
    if path == "fifo":
        path = str(tmp_path / "pipe")
        os.mkfifo(path)  # opening it to read would wait for a writer forever
    elif path == "directory":
        path = str(tmp_path)
    with pytest.raises(lt.InvalidModelError, match="not a regular file"):
        lt.Interpreter(model_path=path)
    before = interp.get_variables()
    with pytest.raises(lt.CheckpointError, match="not a regular file"):
        interp.get_signature_runner("restore")(checkpoint_path=path)
    assert all(np.array_equal(before[k], v) for k, v in interp.get_variables().items())


@pytest.mark.parametrize("value, error, message", [
    (None, lt.SignatureError, "expected strings, got NoneType"),
    (7, lt.SignatureError, "expected strings, got int"),
    ("a\0b", lt.CheckpointError, "NUL"),
    ("", lt.CheckpointError, "non-empty"),
])
def test_checkpoint_paths_must_be_real_strings(tmp_path, interp, value, error, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error, match=message):
        interp.get_signature_runner("save")(checkpoint_path=value)
    assert os.listdir(tmp_path) == []  # no ./None, no file of any name


def test_a_save_into_a_missing_directory_names_the_users_path(tmp_path, interp):
    target = str(tmp_path / "missing" / "model.ckpt")
    with pytest.raises(lt.CheckpointError, match="missing.* does not exist") as err:
        interp.get_signature_runner("save")(checkpoint_path=target)
    assert isinstance(err.value, lt.ExecutionError) and target in str(err.value) and ".tmp" not in str(err.value)


@pytest.mark.parametrize("shape", [[0, 10 ** 30], [0, 2 ** 62, 4], [-1, 3], [1.5]])
def test_a_checkpoint_with_an_impossible_shape_is_a_checkpoint_error(tmp_path, interp, shape):
    header = json.dumps({"w": {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]}}).encode()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(lt.CheckpointError):
        interp.get_signature_runner("restore")(checkpoint_path=str(path))
