"""The demo end to end on Animal MNIST: litetrain's file-trained MLP against PyTorch trained the
same way, and the `litetrain demo` command."""
import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

import litetrain as lt
from litetrain.apps import demo
from litetrain.apps.demo import data

pytestmark = pytest.mark.skipif(data.importlib.util.find_spec("animal_mnist") is None,
                                reason=f"Animal MNIST is not installed ({data.INSTALL_HINT})")


@pytest.fixture(scope="module")
def full_demo(tmp_path_factory):
    """The demo exactly as `litetrain demo` runs it (default protocol); a few seconds on 2 cores."""
    pytest.importorskip("torch", reason="PyTorch is the reference the demo compares with")
    return demo.run_demo(out_dir=str(tmp_path_factory.mktemp("demo")), progress=False)


def test_full_demo_accuracy_is_within_one_point_of_pytorch(full_demo):
    r = full_demo
    assert r["protocol"] == dataclasses.asdict(demo.Protocol())
    assert r["steps"] == demo.Protocol().epochs * 250 and r["train_examples"] == 8000 and r["test_examples"] == 2000
    assert r["reference_accuracy"] > 0.8  # the reference learns the task, so the comparison means something
    assert abs(r["test_accuracy"] - r["reference_accuracy"]) <= 0.01
    assert r["prediction_agreement"] >= 0.95


def test_full_demo_follows_the_pytorch_trajectory(full_demo):
    """Same initial weights, batches and optimizer: the per-step losses coincide early on and stay
    close as float32 rounding differences accumulate."""
    ours, theirs = full_demo["losses"], full_demo["reference_losses"]
    assert ours.shape == theirs.shape == (full_demo["steps"],)
    np.testing.assert_allclose(ours[:100], theirs[:100], rtol=1e-3, atol=1e-4)
    assert abs(full_demo["final_loss"] - full_demo["reference_final_loss"]) < 0.05


def test_full_demo_restores_into_a_fresh_interpreter(full_demo):
    r = full_demo
    assert r["restored_matches_trained"]
    assert os.path.getsize(r["model_path"]) == r["file_size_bytes"] > 0
    assert os.path.getsize(r["checkpoint_path"]) == r["checkpoint_size_bytes"] > 0
    # the file written by the demo is self-contained: a third interpreter restores the checkpoint
    interp = lt.Interpreter(model_path=r["model_path"])
    assert sorted(interp.get_signature_list()) == sorted(demo.SIGNATURES)
    interp.get_signature_runner("restore")(checkpoint_path=r["checkpoint_path"])
    _, _, test_x, test_y = data.load_animal_mnist()
    pred = demo.predict(interp.get_signature_runner("infer"), demo.preprocess(test_x))
    assert np.mean(pred == test_y) == r["test_accuracy"]


def test_quick_demo_without_torch_says_why(tmp_path, monkeypatch):
    from litetrain.apps.demo import reference as reference_torch
    monkeypatch.setattr(reference_torch, "torch_available", lambda: False)
    r = demo.run_demo(epochs=1, batch_size=64, out_dir=str(tmp_path), progress=False, train_limit=1000)
    assert r["reference_accuracy"] is None and "PyTorch is not installed" in r["reference_note"]
    assert r["steps"] == 16 and r["restored_matches_trained"]
    assert "PyTorch is not installed" in demo.format_results(r)


def test_protocol_batches_cover_each_epoch_once():
    batches = demo.Protocol(epochs=2, batch_size=300).batches(1000)
    assert [len(b) for b in batches] == [300, 300, 300, 100] * 2
    for epoch in (batches[:4], batches[4:]):
        assert sorted(np.concatenate(epoch).tolist()) == list(range(1000))
    assert not np.array_equal(batches[0], batches[4])  # reshuffled per epoch
    with pytest.raises(ValueError, match="positive"):
        demo.Protocol(epochs=0).batches(10)


def test_cli_main_runs_the_demo(tmp_path, capsys):
    from litetrain.cli import main
    assert main(["demo", "--epochs", "1", "--batch-size", "128", "--out", str(tmp_path), "--no-reference"]) == 0
    out = capsys.readouterr()
    assert "litetrain test accuracy" in out.out and "skipped (--no-reference)" in out.out
    assert "epoch 1/1" in out.err  # the progress line
    assert (tmp_path / "animal_mlp.tflite").is_file() and (tmp_path / "animal_mlp.ckpt").is_file()


def test_cli_module_entry_point(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "litetrain.cli", "demo", "--epochs", "1", "--batch-size", "256",
                           "--out", str(tmp_path), "--no-reference", "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "litetrain test accuracy" in proc.stdout and proc.stderr == ""


def test_cli_rejects_bad_arguments(capsys):
    from litetrain.cli import main
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--epochs", "0"])
    assert exc.value.code == 2 and "positive" in capsys.readouterr().err


def test_cli_names_the_install_command_when_data_is_missing(tmp_path, monkeypatch, capsys):
    from litetrain.cli import main
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None)
    assert main(["demo", "--out", str(tmp_path), "--no-reference", "--quiet"]) == 2
    assert "pip install --no-deps animal-mnist==0.4" in capsys.readouterr().err


def test_console_script_is_registered():
    """`litetrain demo` (the command the README gives) resolves to cli.main."""
    from importlib.metadata import entry_points
    from litetrain.cli import main
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "litetrain"]
    assert script.value == "litetrain.cli:main" and script.load() is main
