"""A new user's first hour: the command line and the errors a first model meets say what happened
and what to do, in the user's terms (run as a user would: commands in subprocesses)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import litetrain as lt
from litetrain import ops


def cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "litetrain.cli", *args], capture_output=True, text=True, input=stdin)


@pytest.fixture(scope="module")
def regression_file(tmp_path_factory):
    class Regressor(lt.Module):
        def __init__(self):
            self.w = np.ones((1, 4), np.float32)

        @lt.signature(x=lt.TensorSpec([None, 4]))
        def predict(self, x):
            return {"value": ops.fully_connected(x, self.w)}
    path = tmp_path_factory.mktemp("files") / "regressor.tflite"
    path.write_bytes(lt.convert(Regressor(), ["predict"]))
    return path


def test_version():
    out = cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"litetrain {lt.__version__}"


def test_inspect_piped_into_a_reader_that_stops_early(regression_file):
    shell = f"{sys.executable} -m litetrain.cli inspect {regression_file} | head -1"
    out = subprocess.run(["bash", "-c", shell], capture_output=True, text=True)
    assert out.returncode == 0 and "BrokenPipe" not in out.stderr and out.stdout.count("\n") == 1
    assert "(subgraph 0) (subgraph 0)" not in cli("inspect", str(regression_file)).stdout


def test_make_trainable_refuses_a_classification_loss_on_a_regression_output(regression_file, tmp_path):
    out = cli("make-trainable", str(regression_file), str(tmp_path / "t.tflite"), "--trainable", "all")
    assert out.returncode == 2 and "one value per example" in out.stderr and "mean_squared_error" in out.stderr
    ok = cli("make-trainable", str(regression_file), str(tmp_path / "t.tflite"), "--trainable", "all",
             "--loss", "mean_squared_error")
    assert ok.returncode == 0, ok.stderr


def test_make_trainable_help_shows_defaults_and_errors_name_the_flags(regression_file, tmp_path):
    assert "(default: sgd)" in cli("make-trainable", "--help").stdout
    out = cli("make-trainable", str(regression_file), str(tmp_path / "missing" / "t.tflite"), "--trainable", "all",
              "--loss", "mean_squared_error")
    assert out.returncode == 2 and "cannot write" in out.stderr and "Traceback" not in out.stderr


def test_demo_into_a_file_is_refused_with_a_sentence(tmp_path):
    target = tmp_path / "a_file"
    target.write_text("not a directory")
    out = cli("demo", "--out", str(target), "--epochs", "1", "--no-reference")
    assert out.returncode == 2 and "is a file" in out.stderr and "Traceback" not in out.stderr


def test_numpy_on_a_traced_tensor_runs_as_ops_or_says_to_use_lt_ops():
    class Uses(lt.Module):
        @lt.signature(x=lt.TensorSpec([3]))
        def f(self, x):
            return {"y": np.tanh(x) * np.float32(2.0) + np.ones(3, np.float32)}

    class Sums(lt.Module):
        @lt.signature(x=lt.TensorSpec([3]))
        def f(self, x):
            return {"y": np.sum(x)}
    x = np.array([0.0, 1.0, -2.0], np.float32)
    y = lt.Interpreter(model_content=lt.convert(Uses(), ["f"])).get_signature_runner("f")(x=x)["y"]
    np.testing.assert_allclose(y, np.tanh(x) * 2 + 1, rtol=1e-6)
    with pytest.raises(lt.TraceError, match="NumPy's sum .* lt.ops"):
        lt.convert(Sums(), ["f"])


def test_inputs_of_different_batch_sizes_are_named():
    from litetrain.apps.demo import DemoModel
    train = lt.Interpreter(model_content=lt.convert(DemoModel(), ["train"])).get_signature_runner("train")
    with pytest.raises(lt.ExecutionError, match=r"different batch sizes \(x 32, y 16\)"):
        train(x=np.zeros((32, 28, 28), np.float32), y=np.zeros((16, 10), np.float32))


def test_an_unknown_signature_is_named_with_balanced_quotes():
    class One(lt.Module):
        @lt.signature(x=lt.TensorSpec([3]))
        def f(self, x):
            return {"y": ops.add(x, 1.0)}
    with pytest.raises(ValueError) as err:
        lt.Interpreter(model_content=lt.convert(One(), ["f"])).get_signature_runner("nope")
    assert str(err.value) == "no signature 'nope'; the model has: 'f'"


def test_the_demo_draws_its_loss_curve(tmp_path):
    pytest.importorskip("matplotlib", reason="plots need the plot extra")
    from litetrain.apps.demo.data import DataError, load_animal_mnist
    try:
        load_animal_mnist()
    except DataError as e:
        pytest.skip(str(e))
    png = tmp_path / "loss.png"
    out = cli("demo", "--out", str(tmp_path / "run"), "--epochs", "2", "--no-reference", "--quiet", "--plot", str(png))
    assert out.returncode == 0, out.stderr
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(data[16:20], "big") == 600  # 6 inches at 100 dpi


def test_personalize_create_defaults_to_a_pretrained_base_and_warns_about_an_untrained_one(tmp_path):
    assert "mobilenet_v2 (the default)" in cli("personalize", "create", "--help").stdout
    out = cli("personalize", "create", "--base", "mobilenet_v2-0.35", "--size", "32", "--out", str(tmp_path / "m.tflite"))
    assert out.returncode == 0 and "is untrained" in out.stderr and "--base mobilenet_v2" in out.stderr
