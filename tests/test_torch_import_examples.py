"""The examples of models imported from PyTorch and trained on the device, against the same models trained
in PyTorch: examples/transformer_surnames.py (a transformer classifying faker's surnames by language) and
examples/keyword_conv1d.py (a keyword-spotting style 1-D convolutional network recognising the speaker of
Japanese Vowels utterances, sktime's data files). Same initial weights, same batches: the losses agree
step by step and the test accuracies agree."""
import importlib.util
import pathlib

import numpy as np
import pytest

pytest.importorskip("torch", reason="PyTorch is the model's source and the reference")


def _example(name):
    path = pathlib.Path(__file__).resolve().parent.parent / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def surnames():
    pytest.importorskip("faker", reason="the surnames come from the faker package's locale data")
    return _example("transformer_surnames")


@pytest.fixture(scope="module")
def keywords():
    module = _example("keyword_conv1d")
    try:
        module.data_dir()
    except ModuleNotFoundError as e:
        pytest.skip(str(e))
    return module


def test_transformer_on_a_few_surnames_follows_pytorch_step_by_step(surnames):
    """(about 3 s)"""
    r = surnames.run(epochs=1, limit=512, verbose=False)
    assert r["steps"] == 8
    np.testing.assert_allclose(r["losses"], r["torch_losses"], rtol=1e-4)
    assert r["agreement"] >= 0.99


@pytest.mark.slow
def test_transformer_surname_classifier_matches_pytorchs_accuracy(surnames):
    """The README's run: 8 epochs of 4176 names (about 30 s on 2 cores)."""
    r = surnames.run(verbose=False)
    assert r["torch_accuracy"] > 2 * r["chance"], "the model learns: the comparison means something"
    assert abs(r["accuracy"] - r["torch_accuracy"]) <= 0.01
    assert r["agreement"] >= 0.97
    np.testing.assert_allclose(r["losses"][:50], r["torch_losses"][:50], rtol=1e-3)


def test_keyword_conv1d_learns_the_speakers_as_pytorch_does(keywords):
    """The README's run: 40 epochs of 270 utterances, batch norm training (about 6 s on 2 cores)."""
    x, mask, y = keywords.load("TRAIN")
    assert x.shape == (270, 12, 29) and np.bincount(y).tolist() == [30] * 9
    assert set(mask.sum(1).astype(int)) <= set(range(7, 30))
    r = keywords.run(verbose=False)
    # step by step while float32 rounding has not yet grown (batch-norm training amplifies it), then the accuracy
    np.testing.assert_allclose(r["losses"][:40], r["torch_losses"][:40], rtol=1e-3, atol=1e-5)
    assert r["torch_accuracy"] > 0.9
    assert abs(r["accuracy"] - r["torch_accuracy"]) <= 0.01
    assert r["agreement"] >= 0.98
