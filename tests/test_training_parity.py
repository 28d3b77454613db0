"""Training trajectories of converted files against PyTorch autograd and torch.optim.

From the same initial weights and batches, every optimizer and schedule gives the same losses
for 50 steps; save -> fresh interpreter -> restore continues on the same trajectory."""
import math

import numpy as np
import pytest

import litetrain as lt

torch = pytest.importorskip("torch", reason="PyTorch is the reference for training trajectories")

STEPS = 50
BATCH = 32


class MLP(lt.Module):
    def __init__(self, optimizer, hidden=32):
        self.net = lt.nn.Sequential([lt.nn.Flatten(), lt.nn.Dense(hidden, activation="relu"), lt.nn.Dense(10)])
        self.loss = lt.losses.CategoricalCrossentropy(from_logits=True)
        self.optimizer = optimizer

    @lt.signature(x=lt.TensorSpec([None, 28, 28]), y=lt.TensorSpec([None, 10]))
    def train(self, x, y):
        loss = self.loss(y, self.net(x))
        self.optimizer.minimize(loss, self.net.trainable_variables)
        return {"loss": loss}

    @lt.signature(x=lt.TensorSpec([None, 28, 28]), y=lt.TensorSpec([None, 10]),
                  learning_rate=lt.TensorSpec([], "float32", default=0.05))
    def train_lr(self, x, y, learning_rate):
        loss = self.loss(y, self.net(x))
        self.optimizer.minimize(loss, self.net.trainable_variables, learning_rate=learning_rate)
        return {"loss": loss}

    @lt.signature(x=lt.TensorSpec([None, 28, 28]), y=lt.TensorSpec([None, 10]))
    def gradients(self, x, y):
        loss = self.loss(y, self.net(x))
        params = self.net.trainable_variables
        grads = lt.gradients(loss, params)
        return {"loss": loss, **{f"grad/{p.path}": g for p, g in zip(params, grads)}}

    @lt.signature(x=lt.TensorSpec([None, 28, 28]))
    def infer(self, x):
        return {"logits": self.net(x)}


def batches(seed=0, steps=STEPS):
    rng = np.random.default_rng(seed)
    # a learnable problem: the class is decided by which image quadrant is brightest, plus noise
    out = []
    for _ in range(steps):
        y = rng.integers(0, 10, BATCH)
        x = rng.random((BATCH, 28, 28), dtype=np.float32) * 0.5
        for i, c in enumerate(y):
            x[i, (c % 4) * 7:(c % 4) * 7 + 7, (c // 4) * 9:(c // 4) * 9 + 9] += 0.5
        out.append((x, np.eye(10, dtype=np.float32)[y]))
    return out


def torch_mlp(model):
    kernels = [model.net.layers[1], model.net.layers[2]]
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, kernels[0].units), torch.nn.ReLU(),
                              torch.nn.Linear(kernels[0].units, 10))
    with torch.no_grad():
        for layer, dense in zip([net[1], net[3]], kernels):
            layer.weight.copy_(torch.from_numpy(np.array(dense.kernel.value)))
            layer.bias.copy_(torch.from_numpy(np.array(dense.bias.value)))
    return net


def build(optimizer, portable=False, signatures=("train", "infer", "save", "restore")):
    model = MLP(optimizer)
    data = lt.convert(model, signatures=list(signatures), portable_checkpoints=portable)
    return model, data


def torch_losses(net, make_opt, data, schedule=None, clip=None):
    opt = make_opt(net.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule) if schedule else None
    losses = []
    for x, y in data:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
        opt.step()
        if sched:
            sched.step()
        losses.append(loss.item())
    return np.array(losses)


O = lt.optim
T = torch.optim
CASES = {
    "sgd": (lambda: O.SGD(0.1), lambda p: T.SGD(p, lr=0.1), None, None),
    "sgd_momentum": (lambda: O.SGD(0.05, momentum=0.9), lambda p: T.SGD(p, lr=0.05, momentum=0.9), None, None),
    "sgd_nesterov": (lambda: O.SGD(0.05, momentum=0.9, nesterov=True),
                     lambda p: T.SGD(p, lr=0.05, momentum=0.9, nesterov=True), None, None),
    "sgd_weight_decay": (lambda: O.SGD(0.1, weight_decay=1e-2), lambda p: T.SGD(p, lr=0.1, weight_decay=1e-2), None, None),
    "adam": (lambda: O.Adam(0.003), lambda p: T.Adam(p, lr=0.003), None, None),
    "adam_weight_decay": (lambda: O.Adam(0.003, weight_decay=1e-2), lambda p: T.Adam(p, lr=0.003, weight_decay=1e-2), None, None),
    "adamw": (lambda: O.AdamW(0.003, weight_decay=0.05), lambda p: T.AdamW(p, lr=0.003, weight_decay=0.05), None, None),
    "rmsprop": (lambda: O.RMSProp(0.002), lambda p: T.RMSprop(p, lr=0.002), None, None),
    "rmsprop_momentum": (lambda: O.RMSProp(0.001, momentum=0.5), lambda p: T.RMSprop(p, lr=0.001, momentum=0.5), None, None),
    "adagrad": (lambda: O.Adagrad(0.05), lambda p: T.Adagrad(p, lr=0.05), None, None),
    "clip_global_norm": (lambda: O.SGD(0.5, clip_global_norm=0.5), lambda p: T.SGD(p, lr=0.5), None, 0.5),
    "exponential_decay": (lambda: O.SGD(O.ExponentialDecay(0.2, decay_steps=10, decay_rate=0.5)),
                          lambda p: T.SGD(p, lr=0.2), lambda s: 0.5 ** (s / 10), None),
    "exponential_staircase": (lambda: O.SGD(O.ExponentialDecay(0.2, decay_steps=10, decay_rate=0.5, staircase=True)),
                              lambda p: T.SGD(p, lr=0.2), lambda s: 0.5 ** (s // 10), None),
    "cosine_decay": (lambda: O.Adam(O.CosineDecay(0.01, decay_steps=40, alpha=0.1)), lambda p: T.Adam(p, lr=0.01),
                     lambda s: 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, 40) / 40)) + 0.1, None),
    "step_decay": (lambda: O.SGD(O.StepDecay(0.2, step_size=15, gamma=0.3)), lambda p: T.SGD(p, lr=0.2),
                   lambda s: 0.3 ** (s // 15), None),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_trajectory_matches_pytorch(case):
    make_ours, make_torch, schedule, clip = CASES[case]
    model, data = build(make_ours())
    net = torch_mlp(model)
    train = lt.Interpreter(model_content=data).get_signature_runner("train")
    steps = batches()
    ours = np.array([float(train(x=x, y=y)["loss"]) for x, y in steps])
    theirs = torch_losses(net, make_torch, steps, schedule, clip)
    assert theirs[-1] < theirs[0] * 0.9  # the reference itself learns, so the comparison means something
    np.testing.assert_allclose(ours, theirs, rtol=2e-4, atol=2e-5)


def test_learning_rate_is_a_runtime_input():
    model, data = build(O.SGD(0.05), signatures=["train_lr", "infer"])
    net = torch_mlp(model)
    train = lt.Interpreter(model_content=data).get_signature_runner("train_lr")
    opt = T.SGD(net.parameters(), lr=0.05)
    steps = batches(steps=20)
    for i, (x, y) in enumerate(steps):
        lr = 0.05 if i < 10 else 0.3  # the default for 10 steps, then a value passed at run time
        ours = train(x=x, y=y) if i < 10 else train(x=x, y=y, learning_rate=np.float32(lr))
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        opt.step()
        np.testing.assert_allclose(float(ours["loss"]), loss.item(), rtol=2e-4, atol=2e-5)


def test_gradients_by_variable_name_match_autograd():
    model, data = build(O.SGD(0.1), signatures=["gradients", "train"])
    net = torch_mlp(model)
    x, y = batches(steps=1)[0]
    out = lt.Interpreter(model_content=data).get_signature_runner("gradients")(x=x, y=y)
    loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y))
    loss.backward()
    names = {"net/dense/kernel": net[1].weight, "net/dense/bias": net[1].bias,
             "net/dense_1/kernel": net[3].weight, "net/dense_1/bias": net[3].bias}
    assert sorted(k for k in out if k.startswith("grad/")) == sorted(f"grad/{n}" for n in names)
    for name, p in names.items():
        np.testing.assert_allclose(out[f"grad/{name}"], p.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_signatures_share_variables():
    """Training in one signature is seen by every other signature of the same interpreter."""
    model, data = build(O.SGD(0.1))
    net = torch_mlp(model)
    interp = lt.Interpreter(model_content=data)
    train, infer = interp.get_signature_runner("train"), interp.get_signature_runner("infer")
    steps = batches(steps=5)
    torch_losses(net, lambda p: T.SGD(p, lr=0.1), steps)
    for x, y in steps:
        train(x=x, y=y)
    x = steps[0][0]
    np.testing.assert_allclose(infer(x=x)["logits"], net(torch.from_numpy(x)).detach().numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("portable", [False, True], ids=["checkpoint_file", "portable"])
@pytest.mark.parametrize("case", ["adam", "sgd_momentum", "rmsprop"])
def test_save_restore_resumes_the_same_trajectory(tmp_path, case, portable):
    make_ours = CASES[case][0]
    _, data = build(make_ours(), portable=portable)
    steps = batches(seed=1, steps=30)
    # uninterrupted run
    a = lt.Interpreter(model_content=data)
    straight = [float(a.get_signature_runner("train")(x=x, y=y)["loss"]) for x, y in steps]
    # 15 steps, save, fresh interpreter, restore, 15 more
    b = lt.Interpreter(model_content=data)
    first = [float(b.get_signature_runner("train")(x=x, y=y)["loss"]) for x, y in steps[:15]]
    x0 = steps[0][0]
    before = b.get_signature_runner("infer")(x=x0)["logits"]
    c = lt.Interpreter(model_content=data)
    if portable:
        c.get_signature_runner("restore")(**b.get_signature_runner("save")())
    else:
        path = str(tmp_path / "ckpt.safetensors")
        b.get_signature_runner("save")(checkpoint_path=path)
        c.get_signature_runner("restore")(checkpoint_path=path)
    np.testing.assert_array_equal(c.get_signature_runner("infer")(x=x0)["logits"], before)
    rest = [float(c.get_signature_runner("train")(x=x, y=y)["loss"]) for x, y in steps[15:]]
    assert first + rest == straight  # bit-identical: every optimizer slot and the step count restored


def test_checkpoint_file_is_standard_safetensors(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="safetensors reads our checkpoint")
    _, data = build(O.Adam(0.01))
    interp = lt.Interpreter(model_content=data)
    x, y = batches(steps=1)[0]
    interp.get_signature_runner("train")(x=x, y=y)
    path = str(tmp_path / "c.safetensors")
    interp.get_signature_runner("save")(checkpoint_path=path)
    loaded = safetensors_numpy.load_file(path)
    ours = interp.get_variables()
    assert sorted(loaded) == sorted(ours)
    assert "optimizer/m/net/dense/kernel" in loaded and int(loaded["optimizer/iterations"]) == 1
    for k in ours:
        np.testing.assert_array_equal(loaded[k], ours[k])
