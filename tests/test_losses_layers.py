"""Losses and layers against PyTorch: values and gradients with respect to their inputs."""
import numpy as np
import pytest

import litetrain as lt

torch = pytest.importorskip("torch", reason="PyTorch is the reference for losses and layers")
F = torch.nn.functional


def run_loss(loss, y_true, y_pred):
    """Value of `loss` and its gradient with respect to y_pred, from a traced program."""

    class M(lt.Module):
        @lt.signature(t=lt.TensorSpec([None] + list(y_true.shape[1:]), y_true.dtype.name),
                      p=lt.TensorSpec([None] + list(y_pred.shape[1:]), "float64"))
        def f(self, t, p):
            value = loss(t, p)
            grad, = lt.gradients(value, [p])
            return {"loss": value, "grad": grad}

    program = lt.trace_program(M(), ["f"])
    return lt.Interpreter.from_program(program).get_signature_runner("f")(t=y_true, p=y_pred)


def torch_value_grad(fn, y_pred):
    p = torch.tensor(y_pred, requires_grad=True)
    value = fn(p)
    value.backward()
    return value.item(), p.grad.numpy()


rng = np.random.default_rng(0)
LOGITS = rng.standard_normal((7, 5)) * 2
LABELS = rng.integers(0, 5, 7)
ONEHOT = np.eye(5)[LABELS]
SOFT = rng.dirichlet(np.ones(5), 7)  # soft targets
PROBS = rng.dirichlet(np.ones(5), 7)
BIN_T = rng.integers(0, 2, (7, 3)).astype(np.float64)
BIN_LOGITS = rng.standard_normal((7, 3)) * 3
TARGET = rng.standard_normal((7, 3))

CASES = {
    "cce_logits": (lt.losses.CategoricalCrossentropy(from_logits=True), SOFT, LOGITS,
                   lambda p: F.cross_entropy(p, torch.tensor(SOFT))),
    "cce_probs": (lt.losses.CategoricalCrossentropy(), ONEHOT, PROBS,
                  lambda p: F.nll_loss(torch.log(p / p.sum(-1, keepdim=True)), torch.tensor(LABELS))),
    "sparse_cce_logits": (lt.losses.SparseCategoricalCrossentropy(from_logits=True), LABELS.astype(np.int32), LOGITS,
                          lambda p: F.cross_entropy(p, torch.tensor(LABELS))),
    "sparse_cce_probs": (lt.losses.SparseCategoricalCrossentropy(), LABELS.astype(np.int32), PROBS,
                         lambda p: F.nll_loss(torch.log(p / p.sum(-1, keepdim=True)), torch.tensor(LABELS))),
    "bce_logits": (lt.losses.BinaryCrossentropy(from_logits=True), BIN_T, BIN_LOGITS,
                   lambda p: F.binary_cross_entropy_with_logits(p, torch.tensor(BIN_T))),
    "bce_probs": (lt.losses.BinaryCrossentropy(), BIN_T, 1 / (1 + np.exp(-BIN_LOGITS)),
                  lambda p: F.binary_cross_entropy(p, torch.tensor(BIN_T))),
    "mse": (lt.losses.MeanSquaredError(), TARGET, BIN_LOGITS, lambda p: F.mse_loss(p, torch.tensor(TARGET))),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_loss_value_and_gradient_match_pytorch(case):
    loss, y_true, y_pred, reference = CASES[case]
    out = run_loss(loss, y_true, y_pred)
    value, grad = torch_value_grad(reference, y_pred)
    np.testing.assert_allclose(out["loss"], value, rtol=1e-6)
    np.testing.assert_allclose(out["grad"], grad, rtol=1e-6, atol=1e-12)


def test_probability_losses_clip_like_keras():
    """A zero probability for the true class gives -log(1e-7), not infinity."""
    probs = np.array([[0.0, 1.0]])
    out = run_loss(lt.losses.CategoricalCrossentropy(), np.array([[1.0, 0.0]]), probs)
    np.testing.assert_allclose(out["loss"], -np.log(1e-7), rtol=1e-6)


@pytest.mark.parametrize("name, reference", [
    ("relu", F.relu), ("relu6", F.relu6), ("tanh", torch.tanh), ("sigmoid", torch.sigmoid),
    ("softmax", lambda x: F.softmax(x, -1)), ("gelu", F.gelu),
    ("gelu_tanh", lambda x: F.gelu(x, approximate="tanh")),
])
def test_dense_activations_match_pytorch(name, reference):
    x = rng.standard_normal((6, 5)) * 3
    layer = lt.nn.Dense(4, activation=name, input_dim=5)
    layer.kernel.assign(rng.standard_normal((4, 5)))
    layer.bias.assign(rng.standard_normal(4))

    class M(lt.Module):
        def __init__(self):
            self.layer = layer

        @lt.signature(x=lt.TensorSpec([None, 5]))
        def f(self, x):
            y = self.layer(x)
            g, = lt.gradients(lt.ops.reduce_sum(lt.ops.mul(y, y)), [self.layer.kernel])
            return {"y": y, "g": g}

    out = lt.Interpreter.from_program(lt.trace_program(M(), ["f"])).get_signature_runner("f")(
        x=x.astype(np.float32))
    w = torch.tensor(layer.kernel.value, requires_grad=True)
    y = reference(F.linear(torch.tensor(x, dtype=torch.float32), w, torch.tensor(layer.bias.value)))
    (y * y).sum().backward()
    np.testing.assert_allclose(out["y"], y.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["g"], w.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_dense_on_rank3_inputs_keeps_leading_dims():
    layer = lt.nn.Dense(3, input_dim=4)

    class M(lt.Module):
        def __init__(self):
            self.layer = layer

        @lt.signature(x=lt.TensorSpec([None, 2, 4]))
        def f(self, x):
            return {"y": self.layer(x)}

    x = rng.standard_normal((5, 2, 4)).astype(np.float32)
    y = lt.Interpreter.from_program(lt.trace_program(M(), ["f"])).get_signature_runner("f")(x=x)["y"]
    np.testing.assert_allclose(y, x @ layer.kernel.value.T + layer.bias.value, rtol=1e-5, atol=1e-6)


def test_variable_names_are_paths():
    class Encoder(lt.Module):
        def __init__(self):
            self.dense_1 = lt.nn.Dense(3, input_dim=2)

    class M(lt.Module):
        def __init__(self):
            self.encoder = Encoder()
            self.head = lt.nn.Sequential([lt.nn.Dense(2, input_dim=3), lt.nn.Dense(2, input_dim=2)])

    paths = [s.path for s in M().states()]
    assert paths == ["encoder/dense_1/kernel", "encoder/dense_1/bias", "head/dense/kernel", "head/dense/bias",
                     "head/dense_1/kernel", "head/dense_1/bias"]
