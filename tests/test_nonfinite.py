"""Bad batches on an unattended device: the non-finite guard is on by default (a step whose loss or
gradients are not finite changes nothing and reports `step_skipped`); opting out, an `inf` input can
report a finite loss while the weights become NaN, which `nonfinite_check=True` catches; an empty
batch given to a signature that updates variables is refused before anything runs."""
from __future__ import annotations

import numpy as np
import pytest

import litetrain as lt
from tools.reliability import models
from tools.reliability.faults import snapshot


def _inf_batch():
    x, y = models.batch(5)
    x[0, 1] = np.inf  # tanh(inf) = 1: the loss stays finite, the first layer's gradient does not
    return {"x": x, "y": y}


def test_by_default_an_inf_input_skips_the_step_and_says_so():
    interp = lt.Interpreter(model_content=lt.convert(models.MLP("adam"), ["train"]))
    train = interp.get_signature_runner("train")
    train(**dict(zip("xy", models.batch(0))))
    before = snapshot(interp)
    out = train(**_inf_batch())
    assert out["step_skipped"] and np.isfinite(out["loss"])
    assert snapshot(interp) == before  # weights, slots and the step count
    assert not train(**dict(zip("xy", models.batch(1))))["step_skipped"]


def test_opting_out_an_inf_input_poisons_the_weights_unless_the_interpreter_checks():
    """The documented cost of nonfinite_guard=False: a finite loss is reported while the weights
    become NaN. Interpreter(nonfinite_check=True) undoes such a call and raises NonFiniteError."""
    data = lt.convert(models.MLP("adam"), ["train"], nonfinite_guard=False)
    plain = lt.Interpreter(model_content=data)
    out = plain.get_signature_runner("train")(**_inf_batch())
    assert list(out) == ["loss"] and np.isfinite(out["loss"])
    assert np.isnan(plain.get_variables()["net/dense/kernel"]).any()
    checked = lt.Interpreter(model_content=data, nonfinite_check=True)
    before = snapshot(checked)
    with pytest.raises(lt.NonFiniteError, match=r"signature 'train' left non-finite values in variable\(s\) net/"):
        checked.get_signature_runner("train")(**_inf_batch())
    assert snapshot(checked) == before


@pytest.mark.parametrize("guard", [True, False], ids=["guarded", "unguarded"])
def test_an_empty_batch_is_refused_naming_the_input_and_changes_nothing(guard):
    data = lt.convert(models.MLP("adam"), ["train", "infer"], nonfinite_guard=guard)
    interp = lt.Interpreter(model_content=data)
    train = interp.get_signature_runner("train")
    train(**dict(zip("xy", models.batch(0))))
    before = snapshot(interp)
    empty = {"x": np.zeros((0, models.FEATURES), np.float32), "y": np.zeros(0, np.int32)}
    with pytest.raises(lt.SignatureError, match=r"signature 'train' input 'x' is an empty batch \(shape \[0, 4\]\): "
                                                r"this signature updates variables.*Skip empty batches"):
        train(**empty)
    assert snapshot(interp) == before
    # a signature that changes no variable still takes 0 rows, as LiteRT does
    assert interp.get_signature_runner("infer")(x=empty["x"])["probabilities"].shape == (0, models.CLASSES)
    # invoke() on a main subgraph that trains refuses it too
    main = lt.Interpreter(model_content=lt.convert(models.MLP("adam"), ["train"], nonfinite_guard=guard))
    x_detail, y_detail = main.get_input_details()
    main.resize_tensor_input(x_detail["index"], [0, models.FEATURES])
    main.resize_tensor_input(y_detail["index"], [0])
    main.allocate_tensors()
    main.set_tensor(x_detail["index"], empty["x"])
    main.set_tensor(y_detail["index"], empty["y"])
    before = snapshot(main)
    with pytest.raises(lt.SignatureError, match=r"invoke\(\) input '.*' is an empty batch"):
        main.invoke()
    assert snapshot(main) == before

