"""Batch normalisation in training mode, fused (runtime/fusion/batchnorm.py), against the op-by-op
path (Interpreter(optimize=False)): the three steps fire for every layer, and training gives the
op-by-op losses, weights and moving statistics within float rounding (the fused sums over rows add
their terms in another order), never less accurate than op by op against a float64 reference."""
from __future__ import annotations

import numpy as np
import pytest

import litetrain as lt
from litetrain import ops
from litetrain.core.trace import builder_of
from litetrain.frontend.nn import Activation, BatchNormalization, Conv2D, Dense, Flatten, Sequential
from litetrain.models import image_classifier

STEPS = ("fused batch norm statistics", "fused batch norm normalisation", "fused batch norm gradient")


def pair(content):
    """The planned interpreter and the op-by-op one on the same file."""
    return lt.Interpreter(model_content=content), lt.Interpreter(model_content=content, optimize=False)


def plan_ops(interp, signature):
    """The op of each step of the signature's latest plan (fused steps as 'fused <pattern>')."""
    index = interp._program.signature(signature).function
    plan = next(reversed(interp._executor._plans[index].values()))
    return [s[5].op for s in plan.steps]


def assert_close(ours, theirs, rtol=2e-5, floor=1e-30, err_msg=""):
    """Equal within float32 rounding, relative to the values' scale (at least `floor`; NaN where NaN)."""
    theirs = np.asarray(theirs)
    scale = float(np.max(np.abs(theirs[np.isfinite(theirs)]), initial=0.0))
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=max(rtol * scale, floor), err_msg=err_msg)


def conv_net(shape, channels=4, bn=None):
    """conv -> batch norm -> relu -> 1x1 conv -> batch norm -> dense to 3 classes."""
    bn = bn or BatchNormalization.like_torch(input_channels=channels)
    h, w, c = shape
    return Sequential([Conv2D(channels, 3, padding="same", use_bias=False, input_channels=c), bn,
                       Activation("relu"), Conv2D(3, 1, input_channels=channels),
                       BatchNormalization(input_channels=3), Flatten(), Dense(3, input_dim=h * w * 3)])


def dense_net(units=6, features=4, bn=None):
    """dense -> batch norm -> relu6 -> dense to 3 classes."""
    bn = bn or BatchNormalization(input_channels=units)
    return Sequential([Dense(units, input_dim=features), bn, Activation("relu6"), Dense(3, input_dim=units)])


def plain_batch_norm(channels):
    """A batch norm without gamma and beta."""
    return BatchNormalization(center=False, scale=False, input_channels=channels)


# name: (net, input shape, batch, batch norm layers)
MODELS = {
    "conv": (lambda: conv_net((6, 5, 2)), (6, 5, 2), 4, 2),
    "conv-batch-1": (lambda: conv_net((6, 5, 2)), (6, 5, 2), 1, 2),
    "conv-one-channel": (lambda: conv_net((7, 7, 1), channels=1), (7, 7, 1), 3, 2),
    "conv-no-scale-no-center": (lambda: conv_net((6, 5, 2), bn=plain_batch_norm(4)), (6, 5, 2), 4, 2),
    "dense": (lambda: dense_net(), (4,), 8, 1),
    "dense-batch-1": (lambda: dense_net(), (4,), 1, 1),
    "dense-one-channel": (lambda: dense_net(units=1), (4,), 5, 1),
    "dense-like-torch": (lambda: dense_net(bn=BatchNormalization.like_torch(input_channels=6)), (4,), 7, 1),
}


def batches(shape, batch, classes=3, count=4, seed=0):
    """`count` (x, one-hot y) batches, x away from zero mean."""
    rng = np.random.default_rng(seed)
    return [((rng.standard_normal((batch, *shape)) * 2 + 0.5).astype(np.float32),
             np.eye(classes, dtype=np.float32)[rng.integers(0, classes, batch)]) for _ in range(count)]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_training_with_fused_batch_norm_is_op_by_op_training(name):
    """A few SGD steps: the op-by-op losses, weights, momenta and moving statistics; every layer fused."""
    make, shape, batch, layers = MODELS[name]
    model = image_classifier(make(), shape, 3, lt.optim.SGD(0.05, momentum=0.9))
    fast, slow = pair(lt.convert(model, ["train"]))
    run_fast, run_slow = fast.get_signature_runner("train"), slow.get_signature_runner("train")
    for step, (x, y) in enumerate(batches(shape, batch)):
        assert_close(run_fast(x=x, y=y)["loss"], run_slow(x=x, y=y)["loss"], err_msg=f"loss at step {step}")
    ours, theirs = fast.get_variables(), slow.get_variables()
    assert ours.keys() == theirs.keys()
    assert sum("moving_" in k for k in ours) == 2 * layers
    before_batch_norm = "net/conv2d_1/bias" if name.startswith("conv") else "net/dense/bias"
    for k in theirs:
        if k.endswith(before_batch_norm):  # a gradient of 0 up to rounding: both are noise
            assert np.max(np.abs(ours[k])) < 1e-5 and np.max(np.abs(theirs[k])) < 1e-5, k
        else:  # a gradient that is a sum of a few hundred cancelling terms: rounding ~ eps * their sum
            assert_close(ours[k], theirs[k], floor=5e-6, err_msg=k)
    names = plan_ops(fast, "train")
    for step in STEPS:
        assert names.count(step) == layers, step
    assert not {"rsqrt", "broadcast_to", "square"} & set(names)


def layer_module(shape, **kw):
    """One batch norm in training mode on x of `shape`: its output and the gradients of x, gamma and
    beta for a cotangent g (y is a signature output too)."""
    class Layer(lt.Module):
        def __init__(self):
            self.bn = BatchNormalization(input_channels=shape[-1], **kw)

        @lt.signature(x=lt.TensorSpec(list(shape)), g=lt.TensorSpec(list(shape)))
        def f(self, x, g):
            y = self.bn(x, training=True)
            params = [p for p in (getattr(self.bn, "gamma", None), getattr(self.bn, "beta", None)) if p is not None]
            grads = lt.gradients(ops.reduce_sum(ops.mul(y, g)), [x] + params)
            return {"y": y, **{f"d{i}": d for i, d in enumerate(grads)}}
    return Layer()


def run_layer(shape, x, g, **kw):
    """The planned and the op-by-op outputs of one batch-norm layer on (x, g), and the plan's ops."""
    fast, slow = pair(lt.convert(layer_module(shape, **kw), ["f"]))
    return fast.get_signature_runner("f")(x=x, g=g), slow.get_signature_runner("f")(x=x, g=g), plan_ops(fast, "f")


def reference(x, g, epsilon, scale, center):
    """y and the gradients of x, gamma, beta (those present) in float64, from the closed form."""
    x, g = x.astype(np.float64), g.astype(np.float64)
    axes = tuple(range(x.ndim - 1))
    n = np.prod([x.shape[a] for a in axes])
    c = x - x.mean(axes)
    r = 1 / np.sqrt((c * c).mean(axes) + epsilon)
    gc = (g * c).sum(axes)
    dx = r / n * (n * g - g.sum(axes) - c * r * r * gc)
    return [c * r, dx] + ([gc * r] if scale else []) + ([g.sum(axes)] if center else [])


@pytest.mark.parametrize("shape", [(1, 5), (6, 1), (7, 3), (4, 5, 3), (2, 3, 4, 1), (1, 1, 1, 4), (3, 5, 5, 8), (4, 24, 24, 20),
                                   (2, 3, 3, 96)], ids=str)
@pytest.mark.parametrize("options", [{}, {"scale": False}, {"center": False}, {"scale": False, "center": False}],
                         ids=["affine", "no-scale", "no-center", "neither"])
def test_layer_outputs_and_gradients_are_op_by_op(shape, options):
    """y and the gradients of x, gamma, beta: op by op, and no further from float64 than op by op."""
    rng = np.random.default_rng(len(shape) * 31 + shape[-1])
    x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    before = x.copy(), g.copy()
    ours, theirs, names = run_layer(shape, x, g, **options)
    np.testing.assert_array_equal(x, before[0])  # the caller's arrays are read, never written
    np.testing.assert_array_equal(g, before[1])
    for step in STEPS:
        assert names.count(step) == 1, step
    expected = reference(x, g, 1e-3, options.get("scale", True), options.get("center", True))
    assert set(ours) == {"y"} | {f"d{i}" for i in range(len(expected) - 1)}
    for k, ref in zip(["y"] + [f"d{i}" for i in range(len(expected) - 1)], expected):
        assert_close(ours[k], theirs[k], err_msg=k)
        ours_error, theirs_error = (np.max(np.abs(v - ref), initial=0.0) for v in (ours[k], theirs[k]))
        assert ours_error <= 2 * theirs_error + 1e-6 * np.max(np.abs(ref), initial=1.0), k  # never less accurate


@pytest.mark.parametrize("case", ["constant-channel", "large-offset", "zero-cotangent", "tiny-variance"])
def test_layer_edge_values(case):
    """A channel of one value, a mean far from 0, zero cotangents, a tiny variance."""
    shape = (4, 3, 3, 5)
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    if case == "constant-channel":
        x[..., 2] = 1.5  # variance 0: the output is beta there, the gradient of x 0 up to rounding
    elif case == "large-offset":
        x = (x + 1000.0).astype(np.float32)
    elif case == "zero-cotangent":
        g[..., 1:3] = 0.0
    else:
        x = (x * 1e-4).astype(np.float32)
    ours, theirs, names = run_layer(shape, x, g)
    assert all(step in names for step in STEPS)
    for k in theirs:
        assert_close(ours[k], theirs[k], rtol=1e-4 if case == "large-offset" else 2e-5, err_msg=k)
    if case == "zero-cotangent":
        assert not np.any(ours["d0"][..., 1:3]) and not np.any(ours["d1"][1:3]) and not np.any(ours["d2"][1:3])


def test_a_normalisation_whose_intermediate_is_used_elsewhere_runs_op_by_op():
    """The same arithmetic with the squares also a signature output: the statistics are not fused
    (the squares are needed), the rest is, and the values are the op-by-op values."""
    class Exposed(lt.Module):
        @lt.signature(x=lt.TensorSpec([6, 4]))
        def f(self, x):
            mean = ops.reduce_mean(x, [0])
            centered = ops.sub(x, mean)
            squares = ops.square(centered)
            inverse = ops.rsqrt(ops.add(ops.reduce_mean(squares, [0]), 1e-3))
            return {"y": ops.mul(centered, inverse), "squares": squares}
    fast, slow = pair(lt.convert(Exposed(), ["f"]))
    x = np.random.default_rng(3).standard_normal((6, 4)).astype(np.float32)
    ours, theirs = fast.get_signature_runner("f")(x=x), slow.get_signature_runner("f")(x=x)
    for k in theirs:
        assert_close(ours[k], theirs[k], err_msg=k)
    names = plan_ops(fast, "f")
    assert STEPS[0] not in names and STEPS[1] in names


def test_float64_training_is_op_by_op_training():
    """A float64 model (the parity tests' twin of torch in float64) fuses too, within float64 rounding."""
    class Float64(lt.Module):
        def __init__(self):
            self.bn = BatchNormalization.like_torch(input_channels=3)
            for state in self.bn.states():
                state.value = state.value.astype(np.float64)
            self.optimizer = lt.optim.SGD(0.01)

        @lt.signature(x=lt.TensorSpec([5, 2, 2, 3], "float64"))
        def train(self, x):
            y = self.bn(x, training=True)
            loss = ops.reduce_sum(ops.mul(ops.mul(y, y), y))
            rate = builder_of(x).const(0.01, "float64")  # the optimizers' own constants are float32
            self.optimizer.minimize(loss, self.bn.trainable_variables, learning_rate=rate)
            return {"loss": loss}
    fast, slow = pair(lt.convert(Float64(), ["train"]))
    rng = np.random.default_rng(4)
    for _ in range(3):
        x = rng.standard_normal((5, 2, 2, 3))
        assert_close(fast.get_signature_runner("train")(x=x)["loss"],
                     slow.get_signature_runner("train")(x=x)["loss"], rtol=1e-12)
    for k, v in slow.get_variables().items():
        assert_close(fast.get_variables()[k], v, rtol=1e-12, err_msg=k)
    assert all(step in plan_ops(fast, "train") for step in STEPS[:2])


def test_imported_torch_batch_norm_is_fused():
    """The PyTorch importer's batch norm (its own graph) takes the same three steps."""
    torch = pytest.importorskip("torch", reason="the importer's source")
    from litetrain.importers import from_torch
    nn = torch.nn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 5 * 5, 3))
    x = np.random.default_rng(5).standard_normal((4, 2, 5, 5)).astype(np.float32)
    net = from_torch(model, torch.from_numpy(x), trainable="all")

    class Wrapped(lt.Module):
        def __init__(self):
            self.net, self.optimizer = net, lt.optim.SGD(0.1, momentum=0.9)

        @lt.signature(x=lt.TensorSpec([None, 2, 5, 5]), y=lt.TensorSpec([None, 3]))
        def train(self, x, y):
            loss = lt.losses.CategoricalCrossentropy(from_logits=True)(y, self.net(x, training=True))
            self.optimizer.minimize(loss, self.net.trainable_variables)
            return {"loss": loss}
    fast, slow = pair(lt.convert(Wrapped(), ["train"]))
    y = np.eye(3, dtype=np.float32)[[0, 2, 1, 2]]
    for _ in range(3):
        assert_close(fast.get_signature_runner("train")(x=x, y=y)["loss"],
                     slow.get_signature_runner("train")(x=x, y=y)["loss"])
    for k, v in slow.get_variables().items():
        assert_close(fast.get_variables()[k], v, err_msg=k)
    names = plan_ops(fast, "train")
    assert all(names.count(step) == 1 for step in STEPS)


class LookAlikes(lt.Module):
    """Products of a difference that are no batch norm: a 0-d difference, a difference from no mean."""
    def __init__(self):
        self.v = lt.Param(np.linspace(-1.0, 1.0, 4, dtype=np.float32))

    @lt.signature(y=lt.TensorSpec([None, 4]), x=lt.TensorSpec([]), a=lt.TensorSpec([None, 4]),
                  b=lt.TensorSpec([None, 4]), w=lt.TensorSpec([4]))
    def f(self, y, x, a, b, w):
        v = builder_of(y).read(self.v)
        return {"scalar": ops.mul(y, ops.sub(1.0, x)), "pair": ops.mul(ops.sub(a, b), w),
                "param": ops.mul(ops.sub(a, v), w)}


def test_products_of_differences_that_are_no_batch_norm_run_as_op_by_op():
    """The matcher passes over them (no planning error) and the values are op by op's, bit for bit."""
    fast, slow = pair(lt.convert(LookAlikes(), ["f"]))
    rng = np.random.default_rng(0)
    args = {"y": rng.normal(size=(3, 4)), "x": np.float32(0.3), "a": rng.normal(size=(3, 4)),
            "b": rng.normal(size=(3, 4)), "w": rng.normal(size=4)}
    args = {k: np.asarray(v, np.float32) for k, v in args.items()}
    ours, theirs = fast.get_signature_runner("f")(**args), slow.get_signature_runner("f")(**args)
    for k in theirs:
        np.testing.assert_array_equal(ours[k], theirs[k], err_msg=k)
    assert not set(STEPS) & set(plan_ops(fast, "f"))
