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


def test_a_tiny_tf_checkpoint_claiming_a_huge_tensor_is_refused_by_its_size(tmp_path):
    """161 bytes that declare float32[16384, 16384] with one stored value (TensorFlow pads a short
    value list with its last value): refused, not padded to 1 GiB."""
    from litetrain.ops.tf import checkpoint as tf_checkpoint
    from litetrain.ops.tf import proto
    name, shape = "w", (16384, 16384)
    full = b"".join(proto.bytes_field(1, b"") for _ in shape)
    meta = proto.bytes_field(1, proto.bytes_field(1, name) + proto.bytes_field(2, proto.encode_shape(shape))
                             + proto.varint_field(3, 1) + proto.bytes_field(4, full))
    one_value = proto.bytes_field(5, np.float32(1.0).tobytes())  # float_val, packed: one value
    data = proto.bytes_field(1, name) + proto.bytes_field(2, full) + proto.bytes_field(3, one_value)
    table = tf_checkpoint.build_table([(tf_checkpoint.slice_key(name, 2), proto.bytes_field(2, data)),
                                       (b"", proto.bytes_field(1, meta + proto.bytes_field(2, proto.varint_field(1, 1))))])
    path = tmp_path / "tiny.ckpt"
    path.write_bytes(table)
    assert len(table) < 400
    with pytest.raises(tf_checkpoint.TFCheckpointError, match="more than its file could hold"):
        tf_checkpoint.read_slices(path)
    with pytest.raises(tf_checkpoint.TFCheckpointError):  # a bad proto is the same error type, not ProtoError
        tf_checkpoint.read_slices(_write(tmp_path / "junk.ckpt", table[:-60] + b"\xff" * 60))


def _write(path, data):
    path.write_bytes(data)
    return path


def test_a_pickle_with_a_dtype_code_numpy_would_parse_is_refused():
    import pickle
    from litetrain.apps.demo import data
    stream = pickle.dumps(np.zeros(3, np.uint8), protocol=4).replace(b"u1", b",8")
    with pytest.raises(data.DataError, match="unknown dtype code"):
        data.parse_pickled_array(stream, np.uint8, (3,))
