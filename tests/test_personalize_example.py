"""examples/personalize_mobilenet.py against PyTorch: a pretrained MobileNetV2 imported into one
personalization file learns 4 new Animal MNIST classes from their bottlenecks as PyTorch does, step by
step (tiny configuration, default suite) and in test accuracy (the full protocol, slow)."""
import importlib.util
import pathlib

import numpy as np
import pytest

pytest.importorskip("torch", reason="PyTorch is the reference and the source of the pretrained weights")


@pytest.fixture(scope="module")
def example():
    from litetrain.apps.demo import data
    from litetrain.importers.torch import zoo as torch_zoo
    if importlib.util.find_spec("animal_mnist") is None:
        pytest.skip(f"Animal MNIST is not installed ({data.INSTALL_HINT})")
    try:
        torch_zoo.weights_path("mobilenet_v2")
    except (ModuleNotFoundError, FileNotFoundError) as e:
        pytest.skip(str(e))
    path = pathlib.Path(__file__).resolve().parent.parent / "examples" / "personalize_mobilenet.py"
    spec = importlib.util.spec_from_file_location("personalize_mobilenet", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_run_trains_the_head_as_pytorch_does_step_by_step(example):
    """The example's whole pipeline at 32x32 on 6 images per class: the file's `load` gives the torch
    model's bottlenecks, and `train` gives torch's losses at every step, from the same initial head
    and batch order."""
    epochs, batch = 5, 4
    r = example.run(samples=(6,), test_per_class=5, size=32, epochs=epochs, batch_size=batch)
    (s,) = r["settings"]
    ours, theirs = np.array(s["litetrain_losses"]), np.array(s["pytorch_losses"])
    steps_per_epoch = -(-4 * 6 // batch)
    assert len(ours) == len(theirs) == epochs * steps_per_epoch
    assert theirs[-steps_per_epoch:].mean() < 0.8 * theirs[:steps_per_epoch].mean()  # the reference learns
    np.testing.assert_allclose(ours, theirs, rtol=2e-4)
    assert r["bottleneck_max_abs_difference"] < 1e-4 * max(1.0, r["bottleneck_max_abs"])
    assert s["agreement"] == 1.0


@pytest.mark.slow
def test_accuracy_at_20_samples_per_class_is_within_one_point_of_pytorch(example):
    """Must-show 2: the blog's protocol at 224x224 (10, 20 and 50 samples per class, 100 test images per
    class); at 20 samples per class litetrain's accuracy is within one point of PyTorch's."""
    r = example.run()
    by_n = {s["samples_per_class"]: s for s in r["settings"]}
    s = by_n[20]
    assert s["pytorch_accuracy"] > 0.6, "well above chance (0.25): the comparison means something"
    assert abs(s["litetrain_accuracy"] - s["pytorch_accuracy"]) <= 0.01, s
    assert s["agreement"] >= 0.97
    for n, t in by_n.items():
        np.testing.assert_allclose(t["litetrain_losses"], t["pytorch_losses"], rtol=2e-4, err_msg=f"{n} per class")
