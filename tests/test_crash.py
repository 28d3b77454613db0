"""Checkpoints survive crashes: atomic durable replace, a checksum verified on restore, clear
refusals of torn, corrupt and foreign files; and a training process killed with SIGKILL while
saving always leaves a checkpoint that restores and resumes the same trajectory."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import litetrain as lt
from litetrain.ops import checkpoint
from litetrain.ops.checkpoint import CheckpointError
from tools.reliability import crash, models

TENSORS = {"a/kernel": np.arange(12, dtype=np.float32).reshape(3, 4), "a/bias": np.ones(3, np.float32),
           "step": np.array(7, np.int32), "mask": np.array([True, False]), "empty": np.zeros((0, 2), np.float64)}


def same(found, expected):
    assert sorted(found) == sorted(expected)
    for k in expected:
        assert found[k].dtype == expected[k].dtype and found[k].shape == expected[k].shape, k
        assert found[k].tobytes() == np.ascontiguousarray(expected[k]).tobytes(), k


def test_round_trip_with_checksum_readable_by_the_safetensors_library(tmp_path):
    path = tmp_path / "c.safetensors"
    checkpoint.save(path, TENSORS, {"format": "litetrain"})
    same(checkpoint.load(path, require_checksum=True), TENSORS)
    _, meta = checkpoint.load_with_metadata(path)
    assert meta["format"] == "litetrain" and len(meta[checkpoint.CHECKSUM_KEY]) == 64
    safetensors = pytest.importorskip("safetensors.numpy", reason="the reference safetensors reader")
    same(safetensors.load_file(str(path)), TENSORS)


def test_files_without_a_checksum_load_unless_checksums_are_required(tmp_path):
    safetensors = pytest.importorskip("safetensors.numpy", reason="another tool's writer")
    path = str(tmp_path / "theirs.safetensors")
    safetensors.save_file({k: v for k, v in TENSORS.items() if v.size}, path)
    same(checkpoint.load(path), {k: v for k, v in TENSORS.items() if v.size})
    with pytest.raises(CheckpointError, match="carries no litetrain_sha256 checksum"):
        checkpoint.load(path, require_checksum=True)


def _saved(tmp_path):
    path = tmp_path / "c.safetensors"
    checkpoint.save(path, TENSORS)
    return path, path.read_bytes()


def test_any_flipped_data_bit_is_caught_by_the_checksum(tmp_path):
    path, data = _saved(tmp_path)
    header = 8 + int.from_bytes(data[:8], "little")
    for pos in range(header, len(data)):
        bad = bytearray(data)
        bad[pos] ^= 1 << (pos % 8)
        with pytest.raises(CheckpointError, match="corrupt or torn"):
            checkpoint.parse(bytes(bad))


def test_every_truncation_is_refused(tmp_path):
    path, data = _saved(tmp_path)
    for cut in range(len(data)):
        with pytest.raises(CheckpointError):
            checkpoint.parse(data[:cut])


def test_offsets_that_do_not_tile_the_data_are_refused(tmp_path):
    path, data = _saved(tmp_path)
    n = int.from_bytes(data[:8], "little")
    head = data[8:8 + n].decode()
    swapped = head.replace('"data_offsets":[0,12]', '"data_offsets":[0,11]', 1)  # a.bias: 12 bytes
    assert swapped != head
    with pytest.raises(CheckpointError, match="has 11 bytes|tile"):
        checkpoint.parse(data[:8] + swapped.encode() + data[8 + n:])


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4),
       st.integers(0, 10**6))
def test_a_damaged_checkpoint_is_refused_or_reads_back_exactly(tmp_path_factory, edits, cut):
    """Whatever bytes change, a litetrain checkpoint read with checksums required either fails to
    load / to fit the model with CheckpointError, or yields exactly the tensors that were saved.
    Without `require_checksum` the same holds for any one damaged byte; two (one renaming the
    checksum key in the header, one in the data) can pass, which is why the crash test and
    `strict_checkpoints=True` require the checksum."""
    path, data = _saved(tmp_path_factory.mktemp("ckpt"))
    bad = bytearray(data)
    for pos, value in edits:
        bad[pos % len(bad)] = value
    bad = bytes(bad[:len(bad) - cut % 3 * (cut % len(bad))])
    expected = {k: (v.dtype.name, v.shape) for k, v in TENSORS.items()}
    for strict, damaged in ((True, bad), (False, _one_edit(data, *edits[0]))):
        try:
            found, _ = checkpoint.parse(damaged, require_checksum=strict)
            checkpoint.check_against(found, expected)
        except CheckpointError:
            continue
        same(found, TENSORS)


def _one_edit(data, pos, value):
    bad = bytearray(data)
    bad[pos % len(bad)] = value
    return bytes(bad)


def test_restore_from_another_model_lists_every_missing_extra_and_mismatched_variable(tmp_path):
    ours = lt.Interpreter(model_content=models.mlp_file("adam"))
    theirs = lt.Interpreter(model_content=lt.convert(models.MLP("sgd_momentum", units=5), ["train", "save"]))
    theirs.get_signature_runner("train")(**dict(zip("xy", models.batch(0))))
    path = str(tmp_path / "theirs.safetensors")
    theirs.get_signature_runner("save")(checkpoint_path=path)
    before = ours.get_variables()
    with pytest.raises(lt.ExecutionError) as info:
        ours.get_signature_runner("restore")(checkpoint_path=path)
    msg = str(info.value)
    assert "does not fit this model" in msg
    assert "missing (12): optimizer/m/net/dense/bias" in msg  # Adam's moments
    assert "not in the model (6): optimizer/momentum/net/dense/bias" in msg  # SGD's momentum
    assert "mismatched (5): net/dense/bias (model float32[8], checkpoint float32[5])" in msg
    for k, v in ours.get_variables().items():
        assert v.tobytes() == before[k].tobytes()


def test_restore_of_a_torn_checkpoint_changes_nothing_and_says_so(tmp_path):
    interp = lt.Interpreter(model_content=models.mlp_file("adam"), strict_checkpoints=True)
    path = str(tmp_path / "c.safetensors")
    interp.get_signature_runner("save")(checkpoint_path=path)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:-5])  # as if the last write never reached the disk
    interp.get_signature_runner("train")(**dict(zip("xy", models.batch(0))))
    before = interp.get_variables()
    with pytest.raises(lt.CheckpointError, match="is corrupt or torn") as err:  # an ExecutionError too
        interp.get_signature_runner("restore")(checkpoint_path=path)
    assert isinstance(err.value, lt.ExecutionError) and str(path) in str(err.value)
    for k, v in interp.get_variables().items():
        assert v.tobytes() == before[k].tobytes()


def test_temporaries_of_dead_writers_are_removed_by_the_next_save(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has ended
    stale = tmp_path / f".c.safetensors.{pid}.0123abcd.tmp"
    stale.write_bytes(b"half a checkpoint")
    mine = tmp_path / f".c.safetensors.{os.getpid()}.89abcdef.tmp"  # this process's: left alone
    mine.write_bytes(b"")
    other = tmp_path / f".other.safetensors.{pid}.0123abcd.tmp"  # another checkpoint's: left alone
    other.write_bytes(b"")
    checkpoint.save(tmp_path / "c.safetensors", TENSORS)
    assert sorted(os.listdir(tmp_path)) == sorted([mine.name, other.name, "c.safetensors"])


def test_kill_while_saving_small():
    figures = crash.run_crash_test(kills=10, seed=1)
    assert figures["checkpoints_verified"] + figures["kills_before_first_checkpoint"] == 10
    assert figures["checkpoints_verified"] >= 8 and figures["final_matches_uninterrupted"]
    assert figures["stale_temporaries_left"] == 0


@pytest.mark.slow
def test_kill_while_saving_200_times():
    figures = crash.run_crash_test(kills=200, seed=0)
    assert figures["checkpoints_verified"] + figures["kills_before_first_checkpoint"] == 200
    assert figures["checkpoints_verified"] >= 195 and figures["final_matches_uninterrupted"]
    assert figures["kills_mid_write"] >= 20  # the kills do land inside saves
