"""Convolutional networks against PyTorch: layers and their gradients, batch normalisation's moving
averages, dropout and its random stream, max pooling's ties, and 20-step training trajectories of
the small CNN and MobileNetV2 from the same initial weights (tools.torch_mirror builds
the torch twin of a litetrain network with torch's own kernels and autograd)."""
import numpy as np
import pytest

import litetrain as lt
from litetrain.models import MobileNetV2, SmallCNN, image_classifier
from litetrain.core.trace import builder_of
from litetrain.frontend.module import Slot

torch = pytest.importorskip("torch", reason="PyTorch is the reference for CNN layers and training")
F = torch.nn.functional

import op_cases  # noqa: E402,F401  (imported first: it loads op_cases_conv, which imports it)
from tools.torch_mirror import to_torch, weights  # noqa: E402
from op_cases_conv import _pad_nchw, _philox_uniform  # noqa: E402

nn = lt.nn


# -- data and the two trainers ---------------------------------------------------------------------------
def image_batches(shape, classes, batch, steps, seed=0):
    """A learnable problem: each class brightens its own square of a noisy image (faintly, so that
    the loss stays of order one over 20 steps, where a relative comparison means something)."""
    rng = np.random.default_rng(seed)
    h, w, c = shape
    cell = h // 4
    out = []
    for _ in range(steps):
        y = rng.integers(0, classes, batch)
        x = rng.random((batch, h, w, c), dtype=np.float32)
        for i, k in enumerate(y):
            r, q = (k % 4) * cell, (k // 4) * cell
            x[i, r:r + cell, q:q + cell, :] += 0.2
        out.append((x, np.eye(classes, dtype=np.float32)[y]))
    return out


def train_both(net, shape, classes, ours_optimizer, torch_optimizer, batches):
    """Losses of litetrain's converted file and of the torch twin over `batches`, from the same
    initial weights; returns (ours, theirs, interpreter, torch twin)."""
    mirror = to_torch(net).train()
    model = image_classifier(net, shape, classes, ours_optimizer)
    interp = lt.Interpreter(model_content=lt.convert(model, signatures=["train", "infer"]))
    train = interp.get_signature_runner("train")
    ours = np.array([float(train(x=x, y=y)["loss"]) for x, y in batches])
    opt = torch_optimizer([p for p in mirror.parameters() if p.requires_grad])
    theirs = []
    for x, y in batches:
        opt.zero_grad()
        loss = F.cross_entropy(mirror(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        opt.step()
        theirs.append(loss.item())
    return ours, np.array(theirs), interp, mirror


def assert_same_state(net, interp, mirror, rtol, atol, only=None):
    """Every weight and moving average of the file equals the torch twin's."""
    ours, theirs = interp.get_variables(), weights(net, mirror)
    names = sorted(n for n in theirs if only is None or only(n))
    assert names and all(n in ours for n in names)
    for name in names:
        np.testing.assert_allclose(ours[name], theirs[name], rtol=rtol, atol=atol, err_msg=name)
    return names


# -- must-show 2: 20-step trajectories ---------------------------------------------------------------------
# Training these CNNs from random initial weights is chaotic: two runs that differ only in rounding
# part exponentially. PyTorch's own float32 run leaves its float64 run by 1e-3 (relative loss) within
# ~5 steps for the small CNN and within 2-3 for MobileNetV2, whose float32 gradient through 52 batch
# norms in training mode is already 1-2% off at step 0 (torch's as much as ours). "The same losses
# within float32 tolerance" is therefore checked against float32's own tolerance: torch runs the same
# 20 steps in float64 (the exact trajectory) and three times in float32, once as given and twice with
# the samples of every batch shuffled (the same mathematics — batch statistics and the mean loss do
# not depend on the order — but other roundings): the float32 noise of this very computation.
# litetrain's float32 file must agree with the float64 run at step 0 to 1e-5, and afterwards be no
# farther from it, at every step, than 4 times the farthest any torch float32 run has been so far
# (plus 1e-5); its weights and moving averages after 20 steps no farther than 4 times the farthest
# torch float32 run's. Where the arithmetic is exact enough for chaos not to act (float64, below),
# the trajectories must agree to 1e-6.
OPTIMIZERS = {
    "sgd": (lambda: lt.optim.SGD(0.01, momentum=0.9), lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9)),
    "adam": (lambda: lt.optim.Adam(1e-3), lambda p: torch.optim.Adam(p, lr=1e-3)),
}
MOBILENET_OPTIMIZERS = {
    "sgd": (lambda: lt.optim.SGD(1e-3, momentum=0.9), lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.9)),
    "adam": (lambda: lt.optim.Adam(1e-4), lambda p: torch.optim.Adam(p, lr=1e-4)),
}


def torch_losses(mirror, make_opt, batches, dtype):
    mirror = mirror.to(dtype).train()
    opt = make_opt([p for p in mirror.parameters() if p.requires_grad])
    out = []
    for x, y in batches:
        opt.zero_grad()
        loss = F.cross_entropy(mirror(torch.from_numpy(x).to(dtype)), torch.from_numpy(y).to(dtype))
        loss.backward()
        opt.step()
        out.append(loss.item())
    return np.array(out)


def shuffled(batches, seed):
    """The same batches with the samples of each in another order."""
    rng = np.random.default_rng(100 + seed)
    out = []
    for x, y in batches:
        order = rng.permutation(len(x))
        out.append((x[order], y[order]))
    return out


def assert_within_float32_noise(net, shape, classes, make_ours, make_torch, batches, moving_layers, learns=True):
    """See the comment above. Returns (litetrain's, torch float32's) relative loss deviations from
    the float64 trajectory, and their state distances (moving averages, weights)."""
    exact, shuffled_twins = to_torch(net), [to_torch(net) for _ in range(2)]
    ours, t32, interp, single = train_both(net, shape, classes, make_ours(), make_torch, batches)
    t64 = torch_losses(exact, make_torch, batches, torch.float64)
    runs32 = [t32] + [torch_losses(twin, make_torch, shuffled(batches, seed), torch.float32)
                      for seed, twin in enumerate(shuffled_twins)]
    if learns:  # 20 steps of batch 8 at MobileNetV2's rates barely move its loss: there the arithmetic is compared
        assert t64[-5:].mean() < t64[0], "the reference learns, so the comparison means something"
    ours_dev = np.abs(ours - t64) / t64
    torch_dev = np.max([np.abs(t - t64) / t64 for t in runs32], axis=0)
    assert ours_dev[0] < 1e-5
    envelope = 4 * np.maximum.accumulate(torch_dev) + 1e-5
    assert (ours_dev <= envelope).all(), f"litetrain {ours_dev} vs torch float32 {torch_dev}"
    truth, ours_state = weights(net, exact), interp.get_variables()
    singles = [weights(net, twin) for twin in [single] + shuffled_twins]
    distances = []
    for kind in (lambda n: "moving_" in n, lambda n: "moving_" not in n):
        names = [n for n in truth if kind(n)]

        def distance(state):
            return np.sqrt(sum(((state[n] - truth[n]) ** 2).sum() for n in names) /
                           sum((truth[n] ** 2).sum() for n in names))
        distances.append((distance(ours_state), max(distance(w) for w in singles)))
        assert distances[-1][0] <= 4 * distances[-1][1] + 1e-6, distances
    assert sum("moving_" in n for n in truth) == 2 * moving_layers
    return ours_dev, torch_dev, distances


@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
def test_small_cnn_trajectory_within_float32_noise_of_pytorch(opt):
    """The small CNN, batch 32, batch norm in training mode, 20 steps."""
    assert_within_float32_noise(SmallCNN(), (28, 28, 1), 10, *OPTIMIZERS[opt],
                                image_batches((28, 28, 1), 10, 32, 20, seed=1), moving_layers=2)


@pytest.mark.slow
@pytest.mark.parametrize("opt", sorted(MOBILENET_OPTIMIZERS))
def test_mobilenet_v2_trajectory_within_float32_noise_of_pytorch(opt):
    """MobileNetV2 width 0.35, 96x96, batch 8, batch norm in training mode (52 layers), 20 steps."""
    net = MobileNetV2(alpha=0.35, input_shape=(96, 96, 3), num_classes=10)
    assert_within_float32_noise(net, (96, 96, 3), 10, *MOBILENET_OPTIMIZERS[opt],
                                image_batches((96, 96, 3), 10, 8, 20, seed=2), moving_layers=52, learns=False)


def as_float64(net):
    for state in net.states():
        if state.value.dtype == np.float32:
            state.value = state.value.astype(np.float64)
    return net


def float64_trainer(net, shape, classes, lr, momentum):
    """SGD with momentum in float64. State turns a float64 default into float32, so the momentum
    slots are made float64 here, under the names SGD gives them (Adam's step count is float32, so
    Adam cannot run in float64)."""
    class Float64Classifier(lt.Module):
        def __init__(self):
            self.net = as_float64(net)
            self.optimizer = lt.optim.SGD(lr, momentum=momentum)
            self.loss = lt.losses.CategoricalCrossentropy(from_logits=True)
            for p in self.net.trainable_variables:
                self.optimizer.add_state(f"momentum/{p.path}", Slot(np.zeros(p.shape), "float64"))

        @lt.signature(x=lt.TensorSpec([None, *shape], "float64"), y=lt.TensorSpec([None, classes], "float64"))
        def train(self, x, y):
            loss = self.loss(y, self.net(x, training=True))
            rate = builder_of(x).const(lr, "float64")  # the optimizers' own constants are float32
            self.optimizer.minimize(loss, self.net.trainable_variables, learning_rate=rate)
            return {"loss": loss}
    return Float64Classifier()


def float64_trajectories(net, shape, classes, batches, lr, momentum=0.9):
    mirror = to_torch(net)
    model = float64_trainer(net, shape, classes, lr, momentum)
    interp = lt.Interpreter(model_content=lt.convert(model, signatures=["train"]))
    train = interp.get_signature_runner("train")
    ours = np.array([float(train(x=x.astype(np.float64), y=y.astype(np.float64))["loss"]) for x, y in batches])
    theirs = torch_losses(mirror, lambda p: torch.optim.SGD(p, lr=lr, momentum=momentum), batches, torch.float64)
    return ours, theirs, interp, mirror


def test_small_cnn_float64_trajectory_is_pytorchs():
    """In float64 the small CNN's 20 steps (SGD with momentum) match torch's to 1e-6: the same
    arithmetic, batch norm and max pooling's gradient included."""
    net = SmallCNN()
    ours, theirs, interp, mirror = float64_trajectories(net, (28, 28, 1), 10,
                                                        image_batches((28, 28, 1), 10, 32, 20, seed=1), lr=0.01)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    names = assert_same_state(net, interp, mirror, rtol=1e-5, atol=1e-8)
    assert [n for n in names if "moving_" in n] == [f"net/bn{i}/moving_{s}" for i in (1, 2) for s in ("mean", "variance")]


@pytest.mark.slow
def test_mobilenet_v2_float64_trajectory_is_pytorchs():
    """MobileNetV2 width 0.35, 96x96, batch 8, batch norm in training mode, SGD 1e-3 with momentum
    0.9 (a regime where a 1e-12 perturbation of the weights stays below 1e-9 over 20 steps; at 1e-2
    even two float64 runs part after ~12), in float64: torch's losses, weights and moving averages."""
    net = MobileNetV2(alpha=0.35, input_shape=(96, 96, 3), num_classes=10)
    batches = image_batches((96, 96, 3), 10, 8, 20, seed=2)
    ours, theirs, interp, mirror = float64_trajectories(net, (96, 96, 3), 10, batches, lr=1e-3)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    names = assert_same_state(net, interp, mirror, rtol=1e-5, atol=1e-8)
    assert sum("moving_" in n for n in names) == 2 * 52


def test_mobilenet_v2_trains_from_a_chosen_block():
    """Stages before `trainable_from` are frozen and run in inference mode: their weights and moving
    averages never change; the rest trains exactly as the torch twin with the same stages frozen
    (in float64, so that the comparison is tight; see above)."""
    net = MobileNetV2(alpha=0.35, input_shape=(48, 48, 3), num_classes=4, trainable_from=12)
    rng = np.random.default_rng(3)  # frozen batch norms with moving averages unlike a fresh layer's
    for state in net.states():
        if state.path.endswith("moving_mean"):
            state.assign(rng.normal(0, 0.1, state.shape))
        elif state.path.endswith("moving_variance"):
            state.assign(rng.uniform(0.5, 1.5, state.shape))
    initial = {id(s): s.value.copy() for s in net.states()}
    frozen = [s for stage in net.stages[:12] for s in stage.states()]
    assert all(not s.trainable for s in frozen if s.kind == "param")
    batches = image_batches((48, 48, 3), 4, 8, 6, seed=4)
    ours, theirs, interp, mirror = float64_trajectories(net, (48, 48, 3), 4, batches, lr=1e-3)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    after = interp.get_variables()  # by path, now that the net belongs to the trainer ("net/...")
    for s in frozen:
        np.testing.assert_array_equal(after[s.path], initial[id(s)], err_msg=f"{s.path} is frozen")
    assert_same_state(net, interp, mirror, rtol=1e-5, atol=1e-8)
    frozen_ids = {id(s) for s in frozen}
    trained = [s for s in net.states() if s.path.endswith("kernel") and id(s) not in frozen_ids]
    assert trained and all(not np.array_equal(after[s.path], initial[id(s)]) for s in trained)


# -- layers: values and gradients against torch ------------------------------------------------------------
def probe(net, shape, training):
    """A module whose signature f(x, c) returns net(x), and the gradients of sum(net(x) * c) with
    respect to x and every trainable variable (by path)."""
    class Probe(lt.Module):
        def __init__(self):
            self.net = net

        @lt.signature(x=lt.TensorSpec([None, *shape]), c=lt.TensorSpec([None, 6]))
        def f(self, x, c):
            y = self.net(x, training=training)
            params = self.net.trainable_variables
            grads = lt.gradients(lt.ops.reduce_sum(lt.ops.mul(y, c)), [x] + params)
            return {"y": y, "dx": grads[0], **{p.path: g for p, g in zip(params, grads[1:])}}
    return Probe()


def _layers():
    return nn.Sequential([
        nn.ZeroPadding2D(((1, 0), (0, 2))),
        nn.Conv2D(5, 3, strides=2, padding="same", activation="relu", input_channels=3),
        nn.DepthwiseConv2D(3, padding=(1, 2), depth_multiplier=2, dilation_rate=(2, 1), input_channels=5),
        nn.BatchNormalization.like_torch(input_channels=10),
        nn.SeparableConv2D(8, (3, 2), strides=2, padding="same", depth_multiplier=2, activation="relu6",
                           input_channels=10),
        nn.MaxPool2D(3, strides=1, padding="same"),
        nn.AveragePool2D(2, padding="valid"),
        nn.Conv2D(7, 1, padding="valid", input_channels=8),
        nn.GlobalAveragePooling2D(),
        nn.Dense(6, input_dim=7),
    ])


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
def test_conv_layers_match_torch_values_and_gradients(training):
    net = _layers()
    bn = net.layers[3]
    rng = np.random.default_rng(5)
    bn.moving_mean.assign(rng.normal(0, 0.2, 10))
    bn.moving_variance.assign(rng.uniform(0.5, 2, 10))
    bn.gamma.assign(rng.uniform(0.5, 1.5, 10))
    shape = (13, 14, 3)
    x = rng.standard_normal((3, *shape)).astype(np.float32)
    c = rng.standard_normal((3, 6)).astype(np.float32)
    program = lt.trace_program(probe(net, shape, training), ["f"])
    out = lt.Interpreter.from_program(program).get_signature_runner("f")(x=x, c=c)
    mirror = to_torch(net).train(training)
    tx = torch.from_numpy(x).requires_grad_(True)
    ty = mirror(tx)
    (ty * torch.from_numpy(c)).sum().backward()
    np.testing.assert_allclose(out["y"], ty.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["dx"], tx.grad.numpy(), rtol=1e-4, atol=1e-5)
    grads = _torch_grads(net, mirror)
    assert sorted(k for k in out if k.startswith("net/")) == sorted(grads)
    for name, g in grads.items():
        np.testing.assert_allclose(out[name], g, rtol=1e-4, atol=1e-5, err_msg=name)


def _torch_grads(net, mirror):
    """The torch twin's parameter gradients by litetrain path and layout."""
    saved = {n: p.data.clone() for n, p in mirror.named_parameters()}
    for p in mirror.parameters():  # weights() reads .data: swap each gradient in, read, swap back
        p.data = p.grad.clone() if p.grad is not None else torch.zeros_like(p)
    out = {k: v for k, v in weights(net, mirror).items() if "moving" not in k}
    for n, p in mirror.named_parameters():
        p.data = saved[n]
    return out


def test_explicit_padding_is_torch_padding_and_same_is_tflite_padding():
    """padding=1 is torch's symmetric padding; "same" with stride 2 on an even input pads (0, 1)."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 8, 8, 3)).astype(np.float32)
    for padding, torch_pad in ((1, (1, 1, 1, 1)), ("same", (0, 1, 0, 1))):
        layer = nn.Conv2D(4, 3, strides=2, padding=padding, input_channels=3)
        w = torch.from_numpy(layer.kernel.value.transpose(0, 3, 1, 2).copy())
        expected = F.conv2d(F.pad(torch.from_numpy(x).permute(0, 3, 1, 2), torch_pad), w, stride=2)

        class M(lt.Module):
            def __init__(self):
                self.layer = layer

            @lt.signature(x=lt.TensorSpec([None, 8, 8, 3]))
            def f(self, x):
                return {"y": self.layer(x)}
        y = lt.Interpreter(model_content=lt.convert(M(), ["f"])).get_signature_runner("f")(x=x)["y"]
        np.testing.assert_allclose(y, expected.permute(0, 2, 3, 1).numpy(), rtol=1e-5, atol=1e-5)


# -- batch normalisation: the two conventions of the moving averages ---------------------------------------
@pytest.mark.parametrize("like_torch", [False, True], ids=["keras-defaults", "like-torch"])
def test_batch_norm_moving_averages(like_torch):
    bn = nn.BatchNormalization.like_torch(input_channels=3) if like_torch else nn.BatchNormalization(input_channels=3)

    class M(lt.Module):
        def __init__(self):
            self.bn = bn

        @lt.signature(x=lt.TensorSpec([None, 4, 5, 3]))
        def train(self, x):
            return {"y": self.bn(x, training=True)}

    interp = lt.Interpreter(model_content=lt.convert(M(), ["train"]))
    rng = np.random.default_rng(7)
    torch_bn = torch.nn.BatchNorm2d(3, eps=bn.epsilon, momentum=1 - bn.momentum)
    mean, var = np.zeros(3), np.ones(3)
    for _ in range(3):
        x = (rng.standard_normal((6, 4, 5, 3)) * 2 + 1).astype(np.float32)
        y = interp.get_signature_runner("train")(x=x)["y"]
        m, v = x.mean((0, 1, 2)), x.var((0, 1, 2))
        n = x.size // 3
        mean = bn.momentum * mean + (1 - bn.momentum) * m
        var = bn.momentum * var + (1 - bn.momentum) * (v * n / (n - 1) if like_torch else v)
        np.testing.assert_allclose(y, (x - m) / np.sqrt(v + bn.epsilon), rtol=1e-4, atol=1e-5)
        if like_torch:
            torch_bn(torch.from_numpy(x).permute(0, 3, 1, 2))
    state = interp.get_variables()
    np.testing.assert_allclose(state["bn/moving_mean"], mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state["bn/moving_variance"], var, rtol=1e-5, atol=1e-6)
    if like_torch:
        np.testing.assert_allclose(state["bn/moving_variance"], torch_bn.running_var.numpy(), rtol=1e-5)
        np.testing.assert_allclose(state["bn/moving_mean"], torch_bn.running_mean.numpy(), rtol=1e-5, atol=1e-6)


# -- max pooling: ties go to the first maximum, as in torch ----------------------------------------------
@pytest.mark.parametrize("pool", [(2, 2, "VALID"), (3, 2, "SAME"), (2, 1, "VALID")], ids=["tiles", "overlap-same", "stride1"])
def test_max_pool_gradient_with_ties_goes_to_the_first_maximum(pool):
    k, s, padding = pool
    x = np.random.default_rng(8).integers(0, 2, (2, 6, 7, 3)).astype(np.float32)  # many ties

    class M(lt.Module):
        @lt.signature(x=lt.TensorSpec([None, 6, 7, 3]), c=lt.TensorSpec([None, None, None, 3]))
        def f(self, x, c):
            y = lt.ops.max_pool_2d(x, k, s, padding)
            dx, = lt.gradients(lt.ops.reduce_sum(lt.ops.mul(y, c)), [x])
            return {"y": y, "dx": dx}

    tx = torch.from_numpy(x).requires_grad_(True)
    ty = F.max_pool2d(_pad_nchw(tx.permute(0, 3, 1, 2), k, k, s, s, 1, 1, padding, -float("inf")), k, s)
    c = np.random.default_rng(9).standard_normal(ty.permute(0, 2, 3, 1).shape).astype(np.float32)
    (ty.permute(0, 2, 3, 1) * torch.from_numpy(c)).sum().backward()
    out = lt.Interpreter.from_program(lt.trace_program(M(), ["f"])).get_signature_runner("f")(x=x, c=c)
    np.testing.assert_array_equal(out["y"], ty.permute(0, 2, 3, 1).detach().numpy())
    np.testing.assert_allclose(out["dx"], tx.grad.numpy(), rtol=1e-6, atol=1e-6)


# -- random_uniform and dropout ----------------------------------------------------------------------------
class Noise(lt.Module):
    def __init__(self, shape, seed, seed2):
        self.shape, self.seed, self.seed2 = shape, seed, seed2

    @lt.signature(x=lt.TensorSpec([None, 3]))
    def draw(self, x):
        fb = builder_of(x)
        u = lt.ops.random_uniform(fb.const(np.asarray(self.shape, np.int32)), self.seed, self.seed2)
        v = lt.ops.random_uniform_like(x, self.seed + 1, self.seed2)  # run-time shape: SHAPE(x)
        return {"u": u, "v": v}


@pytest.mark.parametrize("n", [12, 10], ids=["whole-blocks", "partial-block"])
def test_random_uniform_follows_the_philox_stream_call_after_call(n):
    """Each call draws ceil(n / 4) new blocks of the node's stream (a partial block's rest is
    dropped, as TFLite does); a fresh interpreter starts over."""
    data = lt.convert(Noise([n], 42, -7), ["draw"])
    blocks = -(-n // 4) * 4
    stream = _philox_uniform([3 * blocks], 42, -7)
    for _ in range(2):  # a fresh interpreter repeats the stream
        draw = lt.Interpreter(model_content=data).get_signature_runner("draw")
        for call in range(3):
            u = draw(x=np.zeros((2, 3), np.float32))["u"]
            np.testing.assert_array_equal(u, stream[call * blocks:call * blocks + n])
    assert 0.0 <= stream.min() and stream.max() < 1.0


def test_random_uniform_without_seeds_differs_between_interpreters():
    data = lt.convert(Noise([64], 0, 0), ["draw"])
    a, b = (lt.Interpreter(model_content=data).get_signature_runner("draw")(x=np.zeros((1, 3), np.float32))["u"]
            for _ in range(2))
    assert not np.array_equal(a, b)


def test_random_uniform_round_trips_and_refuses_bad_seeds():
    from litetrain.tflite import read_model
    program = read_model(lt.convert(Noise([5], 2 ** 31 - 2, -2 ** 31), ["draw"]))
    seeds = [(n.attrs["seed"], n.attrs["seed2"]) for n in program.functions[0].nodes if n.op == "random_uniform"]
    assert seeds == [(2 ** 31 - 2, -2 ** 31), (2 ** 31 - 1, -2 ** 31)]
    with pytest.raises(lt.TraceError, match="seed must fit in int32"):
        lt.convert(Noise([5], 2 ** 31, 0), ["draw"])


class DropoutProbe(lt.Module):
    def __init__(self, rate):
        self.drop = nn.Dropout(rate)

    @lt.signature(x=lt.TensorSpec([None, 1000]))
    def train(self, x):
        y = self.drop(x, training=True)
        dx, = lt.gradients(lt.ops.reduce_sum(lt.ops.mul(y, 3.0)), [x])
        return {"y": y, "dx": dx}

    @lt.signature(x=lt.TensorSpec([None, 1000]))
    def infer(self, x):
        return {"y": self.drop(x)}


def test_dropout_statistics_and_deterministic_inference():
    rate = 0.3
    interp = lt.Interpreter(model_content=lt.convert(DropoutProbe(rate), ["train", "infer"]))
    x = np.random.default_rng(10).uniform(1, 2, (64, 1000)).astype(np.float32)
    masks = []
    for _ in range(3):
        out = interp.get_signature_runner("train")(x=x)
        kept = out["y"] != 0
        masks.append(kept)
        assert abs(1 - kept.mean() - rate) < 0.01  # 64,000 draws: the binomial's sd is 0.0018
        np.testing.assert_allclose(out["y"][kept], x[kept] / (1 - rate), rtol=1e-6)
        np.testing.assert_allclose(out["dx"], np.where(kept, 3.0 / (1 - rate), 0.0), rtol=1e-6)
    assert not np.array_equal(masks[0], masks[1]), "every call draws a new mask"
    assert abs(np.mean(masks[0] == masks[1]) - (rate ** 2 + (1 - rate) ** 2)) < 0.01, "masks are independent"
    infer = interp.get_signature_runner("infer")
    np.testing.assert_array_equal(infer(x=x)["y"], x)
    np.testing.assert_array_equal(infer(x=x)["y"], infer(x=x)["y"])


def test_dropout_layers_get_distinct_streams():
    net = nn.Sequential([nn.Dropout(0.5), nn.Dropout(0.5)])

    class M(lt.Module):
        def __init__(self):
            self.net = net

        @lt.signature(x=lt.TensorSpec([8, 100]))
        def f(self, x):
            return {"a": self.net.layers[0](x, training=True), "b": self.net.layers[1](x, training=True)}

    out = lt.Interpreter(model_content=lt.convert(M(), ["f"])).get_signature_runner("f")(x=np.ones((8, 100), np.float32))
    assert not np.array_equal(out["a"] != 0, out["b"] != 0)


# -- must-show 4: the example on Animal MNIST ---------------------------------------------------------------
@pytest.mark.slow
def test_cnn_example_accuracy_is_within_one_point_of_pytorch(tmp_path):
    """examples/train_cnn_animal_mnist.py as it runs (3 epochs): the small CNN trained on the device
    from its .tflite file, and its PyTorch twin trained the same way, agree on test accuracy."""
    import importlib.util
    import pathlib
    from litetrain.apps.demo import data
    if importlib.util.find_spec("animal_mnist") is None:
        pytest.skip(f"Animal MNIST is not installed ({data.INSTALL_HINT})")
    path = pathlib.Path(__file__).resolve().parent.parent / "examples" / "train_cnn_animal_mnist.py"
    spec = importlib.util.spec_from_file_location("train_cnn_animal_mnist", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    r = example.run(out_dir=str(tmp_path), progress=False)
    assert r["reference_accuracy"] > 0.85, "the reference learns the task, so the comparison means something"
    assert abs(r["test_accuracy"] - r["reference_accuracy"]) <= 0.01, r
    assert r["prediction_agreement"] >= 0.9
