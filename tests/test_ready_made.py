"""The ready-made get_gradients, apply_gradients and evaluate, optimizer hyperparameters set at run
time and the run-time trainable mask, against PyTorch autograd and torch.optim; the same file on
LiteRT gives the same results."""
import numpy as np
import pytest

import litetrain as lt
from litetrain.tflite import read_model

torch = pytest.importorskip("torch", reason="PyTorch is the reference for gradients and optimizer steps")

from test_training_parity import MLP, batches, torch_mlp  # noqa: E402

F = torch.nn.functional
O, T = lt.optim, torch.optim
SIGS = ["train", "infer", "get_gradients", "apply_gradients", "evaluate", "get_weights", "set_weights",
        "save", "restore"]
PARAMS = ("net/dense/kernel", "net/dense/bias", "net/dense_1/kernel", "net/dense_1/bias")
HIDDEN = ("net/dense/kernel", "net/dense/bias")


def build(optimizer, **options):
    model = MLP(optimizer)
    options = {"runtime_hyperparameters": True, "trainable_groups": "layers", **options}
    data = lt.convert(model, signatures=SIGS, portable_checkpoints=True, **options)
    return data, torch_mlp(model)


def torch_params(net) -> dict:
    return dict(zip(PARAMS, [net[1].weight, net[1].bias, net[3].weight, net[3].bias]))


def torch_step(net, opt, x, y, frozen=(), clip=None):
    opt.zero_grad()
    loss = F.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y))
    loss.backward()
    params = torch_params(net)
    for name in frozen:  # a frozen parameter has no gradient: torch.optim skips it, step count included
        params[name].grad = None
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
    opt.step()
    return loss.item()


def assert_weights(ours: dict, net, rtol=1e-4, atol=1e-5):  # atol: 0.1% of an Adam step of 0.01
    for name, p in torch_params(net).items():
        np.testing.assert_allclose(ours[name], p.detach().numpy(), rtol=rtol, atol=atol, err_msg=name)


def with_defaults(data, signature, inputs):
    """Every input of `signature`, its defaults filled in (LiteRT knows no defaults: pass them all)."""
    sig = read_model(data).signature(signature)
    return {**{k: np.asarray(v) for k, v in sig.defaults.items()}, **inputs}


def test_get_gradients_and_evaluate_match_autograd_and_change_nothing():
    data, net = build(O.Adam(0.01))
    interp = lt.Interpreter(model_content=data)
    steps = batches(seed=3, steps=3)
    for x, y in steps[:2]:  # optimizer state that is not zero, so "nothing changed" means something
        interp.get_signature_runner("train")(x=x, y=y)
    opt = T.Adam(net.parameters(), lr=0.01)
    for x, y in steps[:2]:
        torch_step(net, opt, x, y)
    before = interp.get_signature_runner("save")()
    x, y = steps[2]
    grads = interp.get_signature_runner("get_gradients")(x=x, y=y)
    evaluated = interp.get_signature_runner("evaluate")(x=x, y=y)
    opt.zero_grad()
    loss = F.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y))
    loss.backward()
    assert sorted(grads) == sorted(("loss",) + PARAMS)
    assert list(evaluated) == ["loss"]
    np.testing.assert_allclose(grads["loss"], loss.item(), rtol=1e-5)
    np.testing.assert_allclose(evaluated["loss"], loss.item(), rtol=1e-5)
    for name, p in torch_params(net).items():
        np.testing.assert_allclose(grads[name], p.grad.numpy(), rtol=1e-4, atol=1e-6, err_msg=name)
    after = interp.get_signature_runner("save")()
    assert sorted(after) == sorted(before) and "optimizer/m/net/dense/kernel" in after
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)


APPLY_CASES = {
    "sgd_momentum": (lambda: O.SGD(0.05, momentum=0.9), lambda p: T.SGD(p, lr=0.05, momentum=0.9)),
    "adam": (lambda: O.Adam(0.01), lambda p: T.Adam(p, lr=0.01)),
    "adamw": (lambda: O.AdamW(0.01, weight_decay=0.1), lambda p: T.AdamW(p, lr=0.01, weight_decay=0.1)),
    "rmsprop": (lambda: O.RMSProp(0.003, momentum=0.5), lambda p: T.RMSprop(p, lr=0.003, momentum=0.5)),
}


@pytest.mark.parametrize("case", sorted(APPLY_CASES))
def test_apply_gradients_takes_pytorch_gradients_and_steps_as_torch_optim(case):
    """Gradients computed by PyTorch go in; the weights that come out are torch.optim's."""
    make_ours, make_torch = APPLY_CASES[case]
    data, net = build(make_ours())
    interp = lt.Interpreter(model_content=data)
    apply, get_weights = interp.get_signature_runner("apply_gradients"), interp.get_signature_runner("get_weights")
    opt = make_torch(net.parameters())
    for x, y in batches(seed=4, steps=4):
        torch_step(net, opt, x, y)
        apply(**{name: p.grad.numpy() for name, p in torch_params(net).items()})
        assert_weights(get_weights(), net)


def test_get_then_apply_gradients_is_a_train_step():
    data, _ = build(O.Adam(0.01))
    split, whole = lt.Interpreter(model_content=data), lt.Interpreter(model_content=data)
    for x, y in batches(seed=5, steps=3):
        grads = split.get_signature_runner("get_gradients")(x=x, y=y)
        grads.pop("loss")
        split.get_signature_runner("apply_gradients")(**grads)
        whole.get_signature_runner("train")(x=x, y=y)
    ours, theirs = split.get_signature_runner("save")(), whole.get_signature_runner("save")()
    for name in theirs:
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-6, atol=1e-7, err_msg=name)


# (our optimizer, torch's, our hyperparameter, its new value, how torch's param group takes it)
def _group_key(key):
    return lambda group, value: group.__setitem__(key, value)


def _beta(i):
    return lambda group, value: group.__setitem__("betas", tuple(value if j == i else b
                                                                 for j, b in enumerate(group["betas"])))


HP_CASES = {
    "sgd-learning_rate": (lambda: O.SGD(0.05, momentum=0.9), lambda p: T.SGD(p, lr=0.05, momentum=0.9),
                          "learning_rate", 0.3, _group_key("lr")),
    "sgd-momentum": (lambda: O.SGD(0.05, momentum=0.9), lambda p: T.SGD(p, lr=0.05, momentum=0.9),
                     "momentum", 0.5, _group_key("momentum")),
    "sgd-momentum-from-zero": (lambda: O.SGD(0.05), lambda p: T.SGD(p, lr=0.05), "momentum", 0.9,
                               _group_key("momentum")),
    "sgd-nesterov-momentum": (lambda: O.SGD(0.05, momentum=0.9, nesterov=True),
                              lambda p: T.SGD(p, lr=0.05, momentum=0.9, nesterov=True), "momentum", 0.5,
                              _group_key("momentum")),
    "sgd-weight_decay": (lambda: O.SGD(0.1), lambda p: T.SGD(p, lr=0.1), "weight_decay", 0.05,
                         _group_key("weight_decay")),
    "sgd-clip_norm": (lambda: O.SGD(0.5), lambda p: T.SGD(p, lr=0.5), "clip_norm", 0.05, None),
    "sgd-clip_norm-converted": (lambda: O.SGD(0.5, clip_global_norm=0.5), lambda p: T.SGD(p, lr=0.5),
                                "clip_norm", 0.05, None),
    "adam-learning_rate": (lambda: O.Adam(0.01), lambda p: T.Adam(p, lr=0.01), "learning_rate", 0.002,
                           _group_key("lr")),
    "adam-beta_1": (lambda: O.Adam(0.01), lambda p: T.Adam(p, lr=0.01), "beta_1", 0.5, _beta(0)),
    "adam-beta_2": (lambda: O.Adam(0.01), lambda p: T.Adam(p, lr=0.01), "beta_2", 0.9, _beta(1)),
    "adam-epsilon": (lambda: O.Adam(0.01), lambda p: T.Adam(p, lr=0.01), "epsilon", 1e-3, _group_key("eps")),
    "adam-weight_decay": (lambda: O.Adam(0.01), lambda p: T.Adam(p, lr=0.01), "weight_decay", 0.1,
                          _group_key("weight_decay")),
    "adamw-weight_decay": (lambda: O.AdamW(0.01), lambda p: T.AdamW(p, lr=0.01), "weight_decay", 0.5,
                           _group_key("weight_decay")),
    "rmsprop-rho": (lambda: O.RMSProp(0.003), lambda p: T.RMSprop(p, lr=0.003), "rho", 0.5, _group_key("alpha")),
    "rmsprop-momentum": (lambda: O.RMSProp(0.003, momentum=0.3), lambda p: T.RMSprop(p, lr=0.003, momentum=0.3),
                         "momentum", 0.6, _group_key("momentum")),
    "rmsprop-epsilon": (lambda: O.RMSProp(0.003), lambda p: T.RMSprop(p, lr=0.003), "epsilon", 1e-2,
                        _group_key("eps")),
    "adagrad-epsilon": (lambda: O.Adagrad(0.05), lambda p: T.Adagrad(p, lr=0.05), "epsilon", 1e-2,
                        _group_key("eps")),
    "adagrad-learning_rate": (lambda: O.Adagrad(0.05), lambda p: T.Adagrad(p, lr=0.05), "learning_rate", 0.2,
                              _group_key("lr")),
}


@pytest.mark.parametrize("case", sorted(HP_CASES))
def test_each_hyperparameter_set_at_run_time_steps_as_torch_optim(case):
    """Two steps with the converted values, one with the hyperparameter changed, two more with the
    input left out (the default again): the weights are torch.optim's after every step."""
    make_ours, make_torch, name, value, set_torch = HP_CASES[case]
    optimizer = make_ours()
    converted = optimizer.hyperparameters()[name]
    data, net = build(optimizer)
    interp = lt.Interpreter(model_content=data)
    train, get_weights = interp.get_signature_runner("train"), interp.get_signature_runner("get_weights")
    opt = make_torch(net.parameters())
    converted_clip = optimizer.clip_global_norm
    for i, (x, y) in enumerate(batches(seed=6, steps=5)):
        changed = i == 2
        if changed:
            ours = train(x=x, y=y, **{name: np.float32(value)})
        else:
            ours = train(x=x, y=y)
        if set_torch is not None:
            for group in opt.param_groups:
                set_torch(group, value if changed else converted)
        clip = value if (changed and name == "clip_norm") else converted_clip
        theirs = torch_step(net, opt, x, y, clip=clip)
        np.testing.assert_allclose(ours["loss"], theirs, rtol=1e-5, atol=1e-6)
        # RMSProp's first steps are lr * g / (0.1 |g| + eps): for a gradient near eps the float32
        # rounding of either side moves the weight by up to 2e-5 (0.07% of that 0.03 step)
        assert_weights(get_weights(), net, atol=5e-5 if case.startswith("rmsprop") else 1e-5)


FREEZE_CASES = {
    "sgd_momentum": (lambda: O.SGD(0.05, momentum=0.9), lambda p: T.SGD(p, lr=0.05, momentum=0.9), None),
    "adam": (lambda: O.Adam(0.01), lambda p: T.Adam(p, lr=0.01), None),
    "adam_clipped": (lambda: O.Adam(0.01, clip_global_norm=0.2), lambda p: T.Adam(p, lr=0.01), 0.2),
}


@pytest.mark.parametrize("case", sorted(FREEZE_CASES))
def test_a_frozen_group_stays_while_the_others_move_as_in_torch(case):
    """The hidden layer is frozen for steps 2 and 3 (its parameters get no gradient in PyTorch):
    its weights, optimizer slots and step count stay exactly; the output layer moves as torch's,
    and after unfreezing both continue on torch's trajectory (Adam's bias correction included)."""
    make_ours, make_torch, clip = FREEZE_CASES[case]
    data, net = build(make_ours())
    interp = lt.Interpreter(model_content=data)
    train, save = interp.get_signature_runner("train"), interp.get_signature_runner("save")
    opt = make_torch(net.parameters())
    for i, (x, y) in enumerate(batches(seed=7, steps=5)):
        frozen = i in (1, 2)
        before = save()
        train(x=x, y=y, **{"trainable/net/dense": np.bool_(not frozen)})
        after = save()
        torch_step(net, opt, x, y, frozen=HIDDEN if frozen else (), clip=clip)
        assert_weights(after, net)
        hidden_state = [k for k in after if k.endswith("net/dense/kernel") or k.endswith("net/dense/bias")
                        or k.endswith("iterations/net/dense")]
        assert len(hidden_state) >= 3
        for k in hidden_state:
            if frozen:
                np.testing.assert_array_equal(after[k], before[k], err_msg=k)
            else:
                assert not np.array_equal(after[k], before[k]), k
        moved = [k for k in after if "dense_1" in k and not np.array_equal(after[k], before[k])]
        assert "net/dense_1/kernel" in moved


def test_litert_runs_the_same_file_with_the_same_results():
    """get_gradients, apply_gradients with a hyperparameter and a frozen group, train with others,
    evaluate: LiteRT (every input passed, defaults included) gives litetrain's numbers."""
    data, _ = build(O.Adam(0.01, clip_global_norm=1.0))
    litert = pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert is the TFLite oracle")
    ours, theirs = lt.Interpreter(model_content=data), litert.Interpreter(model_content=data)

    def both(signature, **inputs):
        inputs = with_defaults(data, signature, inputs)
        a = ours.get_signature_runner(signature)(**inputs)
        b = theirs.get_signature_runner(signature)(**inputs)
        assert sorted(a) == sorted(b)
        for k in a:
            np.testing.assert_allclose(np.asarray(b[k]).reshape(np.shape(a[k])), a[k], rtol=1e-4, atol=1e-6,
                                       err_msg=f"{signature}: {k}")
        return a

    steps = batches(seed=8, steps=5)
    x, y = steps[0]
    grads = both("get_gradients", x=x, y=y)
    grads.pop("loss")
    both("apply_gradients", **grads, beta_1=np.float32(0.5), **{"trainable/net/dense_1": np.bool_(False)})
    both("train", x=steps[1][0], y=steps[1][1], learning_rate=np.float32(0.003), clip_norm=np.float32(0.1))
    both("train", x=steps[2][0], y=steps[2][1], **{"trainable/net/dense": np.bool_(False)})
    both("train", x=steps[3][0], y=steps[3][1], weight_decay=np.float32(0.1), epsilon=np.float32(1e-3))
    both("evaluate", x=steps[4][0], y=steps[4][1])
    both("save")


def test_groups_by_name_and_files_without_the_options():
    data, _ = build(O.SGD(0.1), trainable_groups={"hidden": "net/dense", "output": ["net/dense_1"]})
    interp = lt.Interpreter(model_content=data)
    assert interp.get_signature_list()["train"]["inputs"] == [
        "x", "y", "learning_rate", "momentum", "weight_decay", "clip_norm", "trainable/hidden", "trainable/output"]
    plain = lt.convert(MLP(O.SGD(0.1)), signatures=SIGS, portable_checkpoints=True)
    signatures = lt.Interpreter(model_content=plain).get_signature_list()
    assert signatures["train"]["inputs"] == ["x", "y"]  # no option: the author's inputs only
    assert signatures["apply_gradients"]["inputs"] == list(PARAMS) + [
        "learning_rate", "momentum", "weight_decay", "clip_norm"]  # always there, with defaults
    assert not read_model(plain).signature("train").defaults


def test_mistakes_get_clear_errors():
    with pytest.raises(ValueError, match=r"trainable groups \['head'\] match no variable"):
        build(O.SGD(0.1), trainable_groups={"head": "net/classifier"})
    with pytest.raises(TypeError, match="trainable_groups must be"):
        build(O.SGD(0.1), trainable_groups=["net/dense"])
    with pytest.raises(ValueError, match="train_signature=<its name>"):
        build(O.SGD(0.1), train_signature="fit")

    class Clash(MLP):
        @lt.signature(x=lt.TensorSpec([None, 28, 28]), y=lt.TensorSpec([None, 10]),
                      momentum=lt.TensorSpec([], "float32", default=0.5))
        def fit(self, x, y, momentum):
            loss = self.loss(y, self.net(x))
            self.optimizer.minimize(loss, self.net.trainable_variables)
            return {"loss": loss}

    with pytest.raises(lt.TraceError, match="'momentum'.*clashes"):
        lt.convert(Clash(O.SGD(0.1, momentum=0.9)), signatures=["fit"], runtime_hyperparameters=True)
