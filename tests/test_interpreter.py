"""The interpreter's API and its behaviour on bad calls: clear errors, and no variable changed."""
import gc
import weakref

import numpy as np
import pytest

import litetrain as lt


class Classifier(lt.Module):
    def __init__(self, units=8, classes=3):
        self.net = lt.nn.Sequential([lt.nn.Dense(units, activation="tanh"), lt.nn.Dense(classes)])
        self.loss = lt.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.optimizer = lt.optim.Adam(0.01)

    @lt.signature(x=lt.TensorSpec([None, 4]), y=lt.TensorSpec([None], "int32"))
    def train(self, x, y):
        loss = self.loss(y, self.net(x))
        self.optimizer.minimize(loss, self.net.trainable_variables)
        return {"loss": loss}

    @lt.signature(x=lt.TensorSpec([None, 4]))
    def infer(self, x):
        return {"probabilities": lt.ops.softmax(self.net(x))}


SIGS = ["train", "infer", "save", "restore", "get_weights", "set_weights"]


@pytest.fixture(scope="module")
def model_bytes():
    return lt.convert(Classifier(), signatures=SIGS)


def data(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 4)).astype(np.float32), rng.integers(0, 3, n).astype(np.int32)


def trained(model_bytes):
    interp = lt.Interpreter(model_content=model_bytes)
    x, y = data()
    interp.get_signature_runner("train")(x=x, y=y)
    return interp


def test_signature_list_and_details(model_bytes):
    interp = lt.Interpreter(model_content=model_bytes)
    sigs = interp.get_signature_list()
    assert list(sigs) == SIGS
    assert sigs["train"] == {"inputs": ["x", "y"], "outputs": ["loss", "step_skipped"]}  # the guard, on by default
    assert sigs["save"]["inputs"] == ["checkpoint_path"]
    details = interp.get_signature_runner("train").get_input_details()
    assert details["x"]["dtype"] is np.float32 and list(details["x"]["shape_signature"]) == [-1, 4]
    assert details["y"]["dtype"] is np.int32


def test_main_subgraph_api_like_tflite(model_bytes):
    interp = lt.Interpreter(model_content=lt.convert(Classifier(), signatures=["infer", "train"]))
    (inp,), (out,) = interp.get_input_details(), interp.get_output_details()
    x, _ = data(5)
    interp.resize_tensor_input(inp["index"], [5, 4])
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    probs = interp.get_tensor(out["index"])
    np.testing.assert_allclose(probs, interp.get_signature_runner("infer")(x=x)["probabilities"])
    assert probs.shape == (5, 3)


def test_unknown_signature(model_bytes):
    with pytest.raises(ValueError, match="no signature 'trian'.*'train'"):
        lt.Interpreter(model_content=model_bytes).get_signature_runner("trian")


@pytest.mark.parametrize("call, message", [
    (lambda x, y: {"x": x}, r"signature 'train' is missing input\(s\) \['y'\]"),
    (lambda x, y: {"x": x, "y": y, "z": y}, r"signature 'train' has no input\(s\) \['z'\]"),
    (lambda x, y: {"x": x.astype(np.float64), "y": y}, "signature 'train' input 'x': expected dtype float32, got float64"),
    (lambda x, y: {"x": x, "y": y.astype(np.float32)}, "signature 'train' input 'y': expected dtype int32, got float32"),
    (lambda x, y: {"x": x[:, :3], "y": y}, r"signature 'train' input 'x': expected shape \[\?, 4\], got \[6, 3\]"),
    (lambda x, y: {"x": x[None], "y": y}, r"signature 'train' input 'x': expected shape \[\?, 4\], got \[1, 6, 4\]"),
])
def test_bad_inputs_name_the_signature_and_input_and_change_nothing(model_bytes, call, message):
    interp = trained(model_bytes)
    before = interp.get_variables()
    x, y = data(seed=1)
    with pytest.raises(lt.SignatureError, match=message):
        interp.get_signature_runner("train")(**call(x, y))
    after = interp.get_variables()
    assert sorted(after) == sorted(before)
    for k in before:
        np.testing.assert_array_equal(after[k], before[k])


def test_kernel_failure_mid_call_leaves_every_variable_unchanged():
    """The call assigns a variable, then fails inside a kernel: the assignment is undone."""
    interp = lt.Interpreter(model_content=lt.convert(_Exploding(), signatures=["train"]))
    run = interp.get_signature_runner("train")
    x, _ = data()
    run(x=x, idx=np.array([0, 3], np.int32))
    before = interp.get_variables()
    assert before["counter"] == 1 and before["table"][0] == 3
    with pytest.raises(lt.ExecutionError, match=r"signature 'train'.*gather.*out of range"):
        run(x=x, idx=np.array([0, 9], np.int32))
    for k, v in interp.get_variables().items():
        np.testing.assert_array_equal(v, before[k])


class _Exploding(lt.Module):
    """Assigns a variable, then gathers with the given indices (which may be out of range)."""

    def __init__(self):
        self.counter = lt.Buffer(np.float32(0))
        self.table = lt.Param(np.arange(4, dtype=np.float32))

    @lt.signature(x=lt.TensorSpec([None, 4]), idx=lt.TensorSpec([2], "int32"))
    def train(self, x, idx):
        fb = x.fb
        fb.assign(self.counter, lt.ops.add(fb.read(self.counter), 1.0))
        picked = lt.ops.gather(self.table, idx)
        fb.assign(self.table, lt.ops.add(fb.read(self.table), lt.ops.reduce_sum(picked)))
        return {"sum": lt.ops.reduce_sum(x)}


def test_checkpoint_of_another_model_is_refused_and_changes_nothing(model_bytes, tmp_path):
    other = lt.Interpreter(model_content=lt.convert(Classifier(units=5), signatures=["train", "save"]))
    x, y = data()
    other.get_signature_runner("train")(x=x, y=y)
    path = str(tmp_path / "other.safetensors")
    other.get_signature_runner("save")(checkpoint_path=path)
    interp = trained(model_bytes)
    before = interp.get_variables()
    with pytest.raises(lt.ExecutionError) as info:
        interp.get_signature_runner("restore")(checkpoint_path=path)
    msg = str(info.value)
    assert "does not fit this model" in msg and "net/dense/kernel" in msg and "model float32[8, 4]" in msg
    for k, v in interp.get_variables().items():
        np.testing.assert_array_equal(v, before[k])


def test_missing_checkpoint_file(model_bytes, tmp_path):
    interp = trained(model_bytes)
    with pytest.raises(lt.ExecutionError, match="cannot read checkpoint"):
        interp.get_signature_runner("restore")(checkpoint_path=str(tmp_path / "nope.safetensors"))


def test_get_and_set_weights_round_trip_between_interpreters(model_bytes):
    a, b = trained(model_bytes), lt.Interpreter(model_content=model_bytes)
    weights = a.get_signature_runner("get_weights")()
    assert sorted(weights) == ["net/dense/bias", "net/dense/kernel", "net/dense_1/bias", "net/dense_1/kernel"]
    b.get_signature_runner("set_weights")(**weights)
    x, _ = data(seed=3)
    np.testing.assert_array_equal(a.get_signature_runner("infer")(x=x)["probabilities"],
                                  b.get_signature_runner("infer")(x=x)["probabilities"])


def test_set_weights_with_wrong_shape_names_the_variable(model_bytes):
    interp = trained(model_bytes)
    weights = interp.get_signature_runner("get_weights")()
    weights["net/dense_1/bias"] = np.zeros(4, np.float32)
    before = interp.get_variables()
    with pytest.raises(lt.SignatureError, match="input 'net/dense_1/bias': expected shape \\[3\\]"):
        interp.get_signature_runner("set_weights")(**weights)
    for k, v in interp.get_variables().items():
        np.testing.assert_array_equal(v, before[k])


def test_interpreters_of_one_file_are_independent(model_bytes):
    a, b = lt.Interpreter(model_content=model_bytes), lt.Interpreter(model_content=model_bytes)
    x, y = data()
    a.get_signature_runner("train")(x=x, y=y)
    assert not np.array_equal(a.get_variables()["net/dense/kernel"], b.get_variables()["net/dense/kernel"])


def test_tracing_two_models_in_one_process_does_not_mix():
    first = lt.trace_program(Classifier(units=3), ["infer"])
    second = lt.trace_program(Classifier(units=7), ["infer"])
    assert first.variables["net/dense/kernel"].shape == (3, 4)
    assert second.variables["net/dense/kernel"].shape == (7, 4)


def test_unknown_signature_method_at_conversion():
    with pytest.raises(ValueError, match="no @signature method 'fit'"):
        lt.convert(Classifier(), signatures=["fit"])


def test_signature_outputs_merged_by_common_subexpression_elimination():
    """Two outputs computed the same way become one tensor in the file; both names still answer."""
    class Twice(lt.Module):
        @lt.signature(x=lt.TensorSpec([None, 3]))
        def f(self, x):
            return {"a": lt.ops.tanh(x), "b": lt.ops.tanh(x)}

    data = lt.convert(Twice(), ["f"])
    x = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    out = lt.Interpreter(model_content=data).get_signature_runner("f")(x=x)
    np.testing.assert_array_equal(out["a"], np.tanh(x))
    np.testing.assert_array_equal(out["b"], out["a"])


# -- lifetime: a dropped interpreter is freed at once -------------------------------------------------------
class _Recurrent(lt.Module):
    """An LSTM trained through time: WHILE loops, tensor lists and their fused steps."""

    def __init__(self):
        self.rnn = lt.nn.LSTM(4, input_dim=3)
        self.head = lt.nn.Dense(1, input_dim=4)
        self.optimizer = lt.optim.Adam(learning_rate=0.01)

    @lt.signature(x=lt.TensorSpec([None, 5, 3]), y=lt.TensorSpec([None, 1]))
    def train(self, x, y):
        loss = lt.ops.reduce_mean(lt.ops.square(lt.ops.sub(self.head(self.rnn(x)), y)))
        self.optimizer.minimize(loss, self.trainable_variables)
        return {"loss": loss}


@pytest.mark.parametrize("optimize", [True, False])
def test_a_dropped_interpreter_is_freed_without_the_garbage_collector(tmp_path, optimize):
    """Nothing an interpreter's plans hold refers back to it: dropping it frees its plans and buffers
    at once. (A step that held the executor made a cycle: in a loop that opens a fresh interpreter
    now and then, the dead ones piled up until a full collection and resident memory kept growing.)"""
    from tools.reliability import models

    rng = np.random.default_rng(0)
    files = [(models.mlp_file("adam", units=8), "train", lambda: dict(zip(("x", "y"), models.batch(0, 4)))),
             (lt.convert(_Recurrent(), ["train"]), "train",
              lambda: {"x": rng.standard_normal((2, 5, 3)).astype(np.float32), "y": np.ones((2, 1), np.float32)})]
    gc.collect()
    gc.disable()
    try:
        for content, name, inputs in files:
            interpreter = lt.Interpreter(model_content=content, optimize=optimize)
            for _ in range(2):
                interpreter.get_signature_runner(name)(**inputs())
            if "save" in interpreter.get_signature_list():
                path = str(tmp_path / "c.safetensors")
                interpreter.get_signature_runner("save")(checkpoint_path=path)
                interpreter.get_signature_runner("restore")(checkpoint_path=path)
            executor = weakref.ref(interpreter._executor)
            del interpreter
            assert executor() is None, "the dropped interpreter's executor is still alive (a reference cycle)"
    finally:
        gc.enable()
