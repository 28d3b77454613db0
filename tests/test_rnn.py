"""Recurrent layers against PyTorch: float64 gradients of SimpleRNN, LSTM and GRU (masked, reversed,
bidirectional, sequences or last state), float32 training trajectories whose sequence length
changes from call to call, the capacity error, the embedding's scatter-add gradient, and the two
examples (surnames by language, sunspot forecasting) beside their PyTorch twins."""
from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest

import litetrain as lt
from litetrain.frontend.nn.recurrent import load_torch_state_dict, torch_state_dict

torch = pytest.importorskip("torch", reason="PyTorch is the reference for the recurrent layers")

CELLS = ["SimpleRNN", "LSTM", "GRU"]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Small matrices: with two threads PyTorch mostly waits for the other (20x slower on a busy box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TORCH_CELL = {"SimpleRNN": "RNN", "LSTM": "LSTM", "GRU": "GRU"}
FEATURES, UNITS = 3, 5


def torch_layer(layer, dtype=torch.float64):
    """torch.nn.RNN/LSTM/GRU with the litetrain layer's weights (gates reordered)."""
    inner = layer.forward_layer if isinstance(layer, lt.nn.Bidirectional) else layer
    net = getattr(torch.nn, TORCH_CELL[type(inner).__name__])(
        inner.input_dim, inner.units, batch_first=True, bidirectional=isinstance(layer, lt.nn.Bidirectional))
    net = net.to(dtype)
    net.load_state_dict({k: torch.from_numpy(v).to(dtype) for k, v in torch_state_dict(layer).items()})
    if not isinstance(inner, lt.nn.GRU):  # our one bias is PyTorch's two summed: the twin that trains
        for name, p in net.named_parameters():  # like ours keeps bias_hh at zero (Adam and SGD would
            if name.startswith("bias_hh"):       # otherwise move the sum twice as fast)
                p.requires_grad_(False)
    return net


def torch_run(net, x, lengths, sequences):
    """PyTorch's packed-sequence run: padded outputs (zeros past each length), or the last states."""
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.as_tensor(lengths), batch_first=True,
                                                     enforce_sorted=False)
    out, h = net(packed)
    if sequences:
        return torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]
    h = h[0] if isinstance(h, tuple) else h
    return torch.cat([h[0], h[1]], -1) if net.bidirectional else h[0]


def padded_batch(rng, batch, steps, dtype=np.float64):
    x = rng.standard_normal((batch, steps, FEATURES)).astype(dtype)
    lengths = rng.integers(1, steps + 1, batch)
    lengths[0] = steps
    return x, lengths, np.arange(steps)[None] < lengths[:, None]


# -- (1) gradients in float64 -------------------------------------------------------------------------
class Gradients(lt.Module):
    def __init__(self, layer):
        self.rnn = layer

    @lt.signature(x=lt.TensorSpec([None, None, FEATURES], "float64"), mask=lt.TensorSpec([None, None], "bool"),
                  cotangent=lt.TensorSpec([None, None], "float64"))
    def grads(self, x, mask, cotangent):
        y = self.rnn(x, mask=mask)
        loss = lt.ops.reduce_sum(lt.ops.mul(y, lt.ops.reshape(cotangent, lt.ops.shape_of(y), known_shape=y.shape)))
        params = self.rnn.trainable_variables
        grads = lt.gradients(loss, params + [x])
        return {"y": y, "dx": grads[-1], **{p.path: g for p, g in zip(params, grads)}}


def make_layer(cell, bidirectional=False, sequences=False, dtype="float64", capacity=10, units=UNITS):
    layer = getattr(lt.nn, cell)(units, return_sequences=sequences, max_sequence_length=capacity,
                                 input_dim=FEATURES, dtype=dtype)
    return lt.nn.Bidirectional(layer) if bidirectional else layer


def _ours_by_torch_name(layer, out):
    """Our gradients under PyTorch's parameter names, in its gate order."""
    grads = {}
    for inner, suffix in ([(layer.forward_layer, "_l0"), (layer.backward_layer, "_l0_reverse")]
                          if isinstance(layer, lt.nn.Bidirectional) else [(layer, "_l0")]):
        fake = type(inner)(**inner.config())  # a layer whose "weights" are the gradients
        fake.build(inner.input_dim)
        for p in ("kernel", "recurrent_kernel", "bias", "recurrent_bias"):
            if p in inner.__dict__:
                getattr(fake, p).assign(out[getattr(inner, p).path])
        converted = torch_state_dict(fake, suffix)
        if not isinstance(inner, lt.nn.GRU):  # our one bias stands for PyTorch's two
            converted[f"bias_hh{suffix}"] = converted[f"bias_ih{suffix}"]
        grads.update(converted)
    return grads


@pytest.mark.parametrize("sequences", [False, True], ids=["last-state", "sequences"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["forward", "bidirectional"])
@pytest.mark.parametrize("cell", CELLS)
def test_gradients_match_pytorch_in_float64(cell, bidirectional, sequences):
    layer = make_layer(cell, bidirectional, sequences)
    net = torch_layer(layer)  # the initial weights, before conversion
    runner = lt.Interpreter(model_content=lt.convert(Gradients(layer), ["grads"])).get_signature_runner("grads")
    rng = np.random.default_rng(CELLS.index(cell) * 4 + bidirectional * 2 + sequences)
    worst = 0.0
    for steps in (7, 3, 10):  # one signature, three trip counts
        x, lengths, mask = padded_batch(rng, 4, steps)
        width = UNITS * (2 if bidirectional else 1)
        cot = rng.standard_normal((4, steps, width) if sequences else (4, width))
        out = runner(x=x, mask=mask, cotangent=cot.reshape(4, -1) if sequences else cot)
        tx = torch.tensor(x, requires_grad=True)
        y = torch_run(net, tx, lengths, sequences)
        net.zero_grad()
        (y * torch.from_numpy(cot)).sum().backward()
        np.testing.assert_allclose(out["y"], y.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(out["dx"], tx.grad.numpy(), rtol=1e-9, atol=1e-12)
        for name, g in _ours_by_torch_name(layer, out).items():
            p = getattr(net, name)
            if not p.requires_grad:
                continue  # PyTorch's second bias (frozen at zero): ours is its bias_ih
            theirs = p.grad.numpy()
            np.testing.assert_allclose(g, theirs, rtol=1e-9, atol=1e-12, err_msg=f"{cell} {name} T={steps}")
            worst = max(worst, float(np.abs(g - theirs).max()))
    assert worst < 1e-12


def test_weight_layout_converts_both_ways():
    """GRU gates are (z, r, n) here and (r, z, n) in PyTorch; LSTM's and SimpleRNN's one bias is
    PyTorch's two summed. torch -> litetrain -> torch gives the same forward pass."""
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((2, 6, FEATURES)))
    for cell in CELLS:
        net = getattr(torch.nn, TORCH_CELL[cell])(FEATURES, UNITS, batch_first=True).double()
        layer = make_layer(cell)
        load_torch_state_dict(layer, net.state_dict())
        back = torch_layer(layer)
        with torch.no_grad():
            np.testing.assert_allclose(back(x)[0].numpy(), net(x)[0].numpy(), rtol=1e-12, atol=1e-13)
    gru = make_layer("GRU")
    z_rows = gru.kernel.value[:UNITS]
    assert np.array_equal(torch_state_dict(gru)["weight_ih_l0"][UNITS:2 * UNITS], z_rows)


# -- (1, 2) float32 training trajectories; the sequence length changes between calls ------------------
class Regressor(lt.Module):
    def __init__(self, cell, capacity=12, units=8, learning_rate=0.01):
        self.rnn = make_layer(cell, dtype="float32", capacity=capacity, units=units)
        self.head = lt.nn.Dense(1, input_dim=units)
        self.loss = lt.losses.MeanSquaredError()
        self.optimizer = lt.optim.Adam(learning_rate)

    @lt.signature(x=lt.TensorSpec([None, None, FEATURES]), mask=lt.TensorSpec([None, None], "bool"),
                  y=lt.TensorSpec([None, 1]))
    def train(self, x, mask, y):
        loss = self.loss(y, self.head(self.rnn(x, mask=mask)))
        self.optimizer.minimize(loss, self.trainable_variables)
        return {"loss": loss}

    @lt.signature(x=lt.TensorSpec([None, None, FEATURES]), mask=lt.TensorSpec([None, None], "bool"))
    def infer(self, x, mask):
        return {"y": self.head(self.rnn(x, mask=mask))}


def regression_batches(seed=0, steps=20, batch=8, max_len=12):
    """Padded batches whose length changes every step; the target depends on the real steps only."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        x, lengths, mask = padded_batch(rng, batch, int(rng.integers(2, max_len + 1)), np.float32)
        y = (np.sin(x[..., 0]) * mask).sum(1, keepdims=True).astype(np.float32) / 3
        out.append((x, lengths, mask, y))
    return out


class TorchRegressor(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.rnn = torch_layer(model.rnn, torch.float32)
        self.head = torch.nn.Linear(model.head.kernel.value.shape[1], 1)
        with torch.no_grad():
            self.head.weight.copy_(torch.from_numpy(model.head.kernel.value))
            self.head.bias.copy_(torch.from_numpy(model.head.bias.value))

    def forward(self, x, lengths):
        return self.head(torch_run(self.rnn, x, lengths, False))


def torch_trajectory(net, steps, learning_rate=0.01):
    opt = torch.optim.Adam(net.parameters(), lr=learning_rate)
    losses = []
    for x, lengths, _, y in steps:
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(net(torch.from_numpy(x), lengths), torch.from_numpy(y))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return np.array(losses)


@pytest.mark.parametrize("cell", CELLS)
def test_training_trajectory_matches_pytorch_as_the_length_changes(cell):
    model = Regressor(cell)
    net = TorchRegressor(model)
    train = lt.Interpreter(model_content=lt.convert(model, ["train", "infer"])).get_signature_runner("train")
    steps = regression_batches(seed=CELLS.index(cell))
    assert len({x.shape[1] for x, *_ in steps}) >= 6, "the trip count must change between calls"
    ours = np.array([float(train(x=x, mask=m, y=y)["loss"]) for x, _, m, y in steps])
    theirs = torch_trajectory(net, steps)
    assert theirs[-5:].mean() < theirs[:5].mean() * 0.8  # the reference learns, so agreement means something
    np.testing.assert_allclose(ours, theirs, rtol=2e-4, atol=1e-6)


def test_trained_weights_match_pytorch_after_variable_length_steps():
    """After 20 steps of different lengths the weights themselves agree, so inference agrees."""
    model = Regressor("LSTM")
    net = TorchRegressor(model)
    interpreter = lt.Interpreter(model_content=lt.convert(model, ["train", "infer"]))
    steps = regression_batches(seed=7)
    for x, _, m, y in steps:
        interpreter.get_signature_runner("train")(x=x, mask=m, y=y)
    torch_trajectory(net, steps)
    weights = interpreter.get_variables()
    theirs = torch_state_dict(model.rnn)  # layout only; values come from the torch net below
    for name in theirs:
        theirs[name] = getattr(net.rnn, name).detach().numpy()
    load_torch_state_dict(model.rnn, theirs)
    np.testing.assert_allclose(weights["rnn/kernel"], model.rnn.kernel.value, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(weights["rnn/recurrent_kernel"], model.rnn.recurrent_kernel.value, rtol=1e-4, atol=1e-5)
    x, lengths, mask, _ = regression_batches(seed=8, steps=1)[0]
    with torch.no_grad():
        expected = net(torch.from_numpy(x), lengths).numpy()
    np.testing.assert_allclose(interpreter.get_signature_runner("infer")(x=x, mask=mask)["y"], expected,
                               rtol=1e-4, atol=1e-5)


# -- (5) a sequence longer than the capacity --------------------------------------------------------------
def test_a_sequence_longer_than_the_capacity_is_refused_and_changes_nothing():
    model = Regressor("GRU", capacity=6)
    net = TorchRegressor(model)
    interpreter = lt.Interpreter(model_content=lt.convert(model, ["train", "infer"]))
    train = interpreter.get_signature_runner("train")
    steps = regression_batches(seed=3, steps=4, max_len=6)
    train(x=steps[0][0], mask=steps[0][2], y=steps[0][3])
    before = interpreter.get_variables()
    rng = np.random.default_rng(0)
    x, _, mask = padded_batch(rng, 8, 7, np.float32)
    with pytest.raises(lt.ExecutionError, match="longer than max_sequence_length=6") as err:
        train(x=x, mask=mask, y=np.zeros((8, 1), np.float32))
    assert "capacity check" in str(err.value) and "index 7" in str(err.value)
    after = interpreter.get_variables()
    assert after.keys() == before.keys() and all(np.array_equal(after[k], before[k]) for k in before)
    assert int(after["optimizer/iterations"]) == 1  # the step count did not move either
    # training goes on from where it was, on PyTorch's trajectory
    ours = [float(train(x=x, mask=m, y=y)["loss"]) for x, _, m, y in steps[1:]]
    np.testing.assert_allclose(ours, torch_trajectory(net, steps)[1:], rtol=2e-4, atol=1e-6)


def test_a_recurrent_layer_needs_a_capacity_for_an_unknown_length():
    class Model(lt.Module):
        def __init__(self):
            self.rnn = lt.nn.LSTM(4, input_dim=FEATURES)

        @lt.signature(x=lt.TensorSpec([None, None, FEATURES]))
        def infer(self, x):
            return {"y": self.rnn(x)}

    with pytest.raises(lt.TraceError, match="max_sequence_length"):
        lt.convert(Model(), ["infer"])
    program = lt.trace_program(Model(), ["infer"], max_sequence_length=9)  # lt.convert's option works
    assert any(n.op == "while" for f in program.functions for n in f.nodes)


# -- the embedding: gradient as a scatter-add ---------------------------------------------------------------
def test_embedding_gradient_is_a_scatter_add_matching_pytorch():
    class Model(lt.Module):
        def __init__(self):
            self.embed = lt.nn.Embedding(7, 3, dtype="float64")

        @lt.signature(ids=lt.TensorSpec([None, None], "int32"), cotangent=lt.TensorSpec([None, None, 3], "float64"))
        def grads(self, ids, cotangent):
            e = self.embed(ids)
            g, = lt.gradients(lt.ops.reduce_sum(lt.ops.mul(e, cotangent)), [self.embed.embeddings])
            return {"e": e, "g": g}

    model = Model()
    table = torch.tensor(model.embed.embeddings.value, requires_grad=True)
    program = lt.trace_program(model, ["grads"])
    ops_used = {n.op for f in program.functions for n in f.nodes}
    assert {"gather_nd", "scatter_nd"} <= ops_used and "one_hot" not in ops_used
    ids = np.array([[1, 4, 4, 0], [4, 6, 1, 1]], np.int32)  # repeated ids add up
    cot = np.random.default_rng(0).standard_normal((2, 4, 3))
    out = lt.Interpreter.from_program(program).get_signature_runner("grads")(ids=ids, cotangent=cot)
    e = torch.nn.functional.embedding(torch.from_numpy(ids).long(), table)
    (e * torch.from_numpy(cot)).sum().backward()
    np.testing.assert_allclose(out["e"], e.detach().numpy(), rtol=0, atol=0)
    np.testing.assert_allclose(out["g"], table.grad.numpy(), rtol=1e-12, atol=1e-14)


# -- the examples ---------------------------------------------------------------------------------------
EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def _example(name):
    sys.path.insert(0, str(EXAMPLES))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(EXAMPLES))


def _surnames(epochs):
    pytest.importorskip("faker", reason="the surnames come from the faker package's locale data")
    result = _example("surnames").run(epochs=epochs, verbose=False)
    assert result["test_names"] > 900 and len(result["languages"]) == 8
    assert result["torch_accuracy"] > 2 * result["chance"]  # PyTorch learns the task
    assert abs(result["accuracy"] - result["torch_accuracy"]) <= 0.02
    np.testing.assert_allclose(result["losses"][:50], result["torch_losses"][:50], rtol=1e-3, atol=1e-5)
    return result


def test_surname_classifier_matches_pytorch_accuracy():
    """Three epochs (about 200 steps, each batch padded to its own longest name)."""
    _surnames(epochs=3)


@pytest.mark.slow
def test_surname_classifier_matches_pytorch_accuracy_fully_trained():
    """The example's default: 12 epochs (about 800 steps)."""
    result = _surnames(epochs=12)
    assert result["accuracy"] > 0.7


def test_sunspot_regression_matches_pytorch():
    pytest.importorskip("statsmodels", reason="the sunspot series ships with statsmodels")
    result = _example("sequence_regression").run(steps=150, verbose=False)
    assert len(set(result["lengths"])) > 10  # the window length changes between calls
    np.testing.assert_allclose(result["losses"][:40], result["torch_losses"][:40], rtol=2e-3, atol=1e-5)
    assert result["rmse"] < 0.8 * result["persistence_rmse"]  # it learned something persistence does not
    assert abs(result["rmse"] - result["torch_rmse"]) < 0.1 * result["torch_rmse"]
