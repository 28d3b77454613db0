"""tf.lite.Interpreter's whole Python API: the same script on ai_edge_litert's Interpreter and on
lt.Interpreter, on the same files, gives the same results from every public method."""
from __future__ import annotations

import numpy as np
import pytest

import litetrain as lt
from litetrain import ops

litert = pytest.importorskip("ai_edge_litert.interpreter", reason="LiteRT's Interpreter is the reference here")


class Model(lt.Module):
    def __init__(self):
        self.net = lt.nn.Sequential([lt.nn.Dense(6, activation="relu", input_dim=4), lt.nn.Dense(3, input_dim=6)])
        self.optimizer = lt.optim.SGD(0.1)

    @lt.signature(x=lt.TensorSpec([None, 4]))
    def infer(self, x):
        return {"logits": self.net(x)}

    @lt.signature(x=lt.TensorSpec([None, 4]), y=lt.TensorSpec([None], "int32"))
    def train(self, x, y):
        loss = lt.losses.SparseCategoricalCrossentropy(from_logits=True)(y, self.net(x))
        self.optimizer.minimize(loss, self.net.trainable_variables)
        return {"loss": loss}


class Plain(lt.Module):
    """No variables: the main subgraph through allocate_tensors / set_tensor / invoke."""
    @lt.signature(x=lt.TensorSpec([2, 3]))
    def f(self, x):
        return {"y": ops.tanh(ops.mul(x, 2.0))}


@pytest.fixture(scope="module")
def files():
    return {"model": lt.convert(Model(), ["infer", "train"], portable_checkpoints=True),
            "plain": lt.convert(Plain(), ["f"])}


def public(cls):
    return {n for n in dir(cls) if not n.startswith("_")}


def test_every_public_method_of_litert_exists():
    missing = public(litert.Interpreter) - public(lt.Interpreter)
    assert not missing, missing
    assert public(litert.SignatureRunner) <= public(lt.SignatureRunner)


def script(make, content):
    """One script, either interpreter: every public method, its results collected."""
    out = {}
    interp = make(model_content=content)
    out["num_subgraphs"] = interp.num_subgraphs()
    out["signatures"] = interp.get_signature_list()
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    infer, train = interp.get_signature_runner("infer"), interp.get_signature_runner("train")
    out["runner_inputs"] = {k: (v["name"], list(v["shape_signature"]), v["dtype"]) for k, v in
                            train.get_input_details().items()}
    out["runner_outputs"] = sorted(train.get_output_details())
    out["before"] = infer(x=x)["logits"]
    for _ in range(3):
        train(x=x, y=np.array([0, 1, 2], np.int32))
    out["trained"] = infer(x=x)["logits"]
    interp.reset_all_variables()
    out["reset"] = infer(x=x)["logits"]
    return out


def main_subgraph_script(make, content):
    out = {}
    interp = make(model_content=content)
    interp.allocate_tensors()
    inp, outp = interp.get_input_details()[0], interp.get_output_details()[0]
    out["input"] = (list(inp["shape"]), inp["dtype"], inp["quantization"])
    out["output"] = (list(outp["shape"]), outp["dtype"])
    x = np.arange(6, dtype=np.float32).reshape(2, 3) / 6
    interp.set_tensor(inp["index"], x)
    x[...] = 99  # set_tensor copied it
    interp.invoke()
    out["y"] = interp.get_tensor(outp["index"])
    out["y_view"] = np.array(interp.tensor(outp["index"])())
    names = {d["name"] for d in interp.get_tensor_details()}
    out["has_io_names"] = {inp["name"], outp["name"]} <= names
    return out


def compare(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], np.ndarray):
            np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)
        else:
            assert a[k] == b[k], k


def test_the_same_script_gives_the_same_results(files):
    compare(script(lt.Interpreter, files["model"]), script(litert.Interpreter, files["model"]))
    compare(main_subgraph_script(lt.Interpreter, files["plain"]),
            main_subgraph_script(litert.Interpreter, files["plain"]))


def test_preserve_all_tensors_keeps_intermediate_values(files):
    interp = lt.Interpreter(model_content=files["plain"], experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], np.ones((2, 3), np.float32))
    interp.invoke()
    details = interp.get_tensor_details()
    doubled = next(d for d in details if "mul" in d["name"])
    np.testing.assert_array_equal(interp.get_tensor(doubled["index"]), np.full((2, 3), 2.0, np.float32))
    plain = lt.Interpreter(model_content=files["plain"])
    plain.allocate_tensors()
    plain.set_tensor(plain.get_input_details()[0]["index"], np.ones((2, 3), np.float32))
    plain.invoke()
    with pytest.raises(ValueError, match="experimental_preserve_all_tensors"):
        plain.get_tensor(doubled["index"])


def test_arguments_known_unknown_and_unsupported(files):
    lt.Interpreter(model_content=files["plain"], num_threads=2, experimental_preserve_all_tensors=False,
                   experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    with pytest.raises(TypeError, match="experimental_made_up"):
        lt.Interpreter(model_content=files["plain"], experimental_made_up=True)
    with pytest.raises(ValueError, match="no delegates"):
        lt.Interpreter(model_content=files["plain"], experimental_delegates=[object()])
    with pytest.raises(ValueError, match="num_threads"):
        lt.Interpreter(model_content=files["plain"], num_threads=0)
    with pytest.raises(ValueError, match="subgraph index"):
        lt.Interpreter(model_content=files["plain"]).get_tensor(0, subgraph_index=7)
