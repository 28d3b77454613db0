"""make_trainable on a MobileNetV2 inference file made by TensorFlow's converter (fixtures/tf/
mobilenet_v2.tflite): the trainable file's losses match PyTorch's for the same frozen/trainable
split, step by step, and stock LiteRT trains the same file with the same losses.

PyTorch's twin is built from the inference file itself: a small interpreter that runs the file's
ops with torch.nn.functional (its own convolutions, autograd and optimizers), so nothing of
litetrain's kernels, gradient rules or optimizer code is in the reference.
"""
from __future__ import annotations

import pathlib

import numpy as np
import pytest

import litetrain as lt
from litetrain.importers.tflite import MakeTrainableError, find_layers, make_trainable, select_weights
from litetrain.tflite import read_model

torch = pytest.importorskip("torch", reason="PyTorch's twin of the inference file is the reference")
F = torch.nn.functional

MODEL = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "tf" / "mobilenet_v2.tflite"
STEPS, BATCH = 4, 6


# -- PyTorch's twin -------------------------------------------------------------------------------------------
def _pads(size, k, stride, dilation, padding):
    if padding == "VALID":
        return 0, 0
    out = -(-size // stride)
    total = max((out - 1) * stride + (k - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _act(y, name):
    return {"NONE": lambda t: t, "RELU": F.relu, "RELU6": lambda t: torch.clamp(t, 0, 6),
            "TANH": torch.tanh}[name](y)


def _conv(x, w, b, a, depthwise):
    kh, kw = w.shape[1], w.shape[2]
    t, bo = _pads(x.shape[1], kh, a["stride_h"], a["dilation_h_factor"], a["padding"])
    le, r = _pads(x.shape[2], kw, a["stride_w"], a["dilation_w_factor"], a["padding"])
    xt = F.pad(x.permute(0, 3, 1, 2), (le, r, t, bo))
    if depthwise:  # [1, kh, kw, C*M] -> [C*M, 1, kh, kw], groups = C
        weight, groups = w.permute(3, 0, 1, 2), x.shape[3]
    else:  # OHWI -> OIHW
        weight, groups = w.permute(0, 3, 1, 2), 1
    y = F.conv2d(xt, weight, b, stride=(a["stride_h"], a["stride_w"]),
                 dilation=(a["dilation_h_factor"], a["dilation_w_factor"]), groups=groups)
    return _act(y.permute(0, 2, 3, 1), a["fused_activation_function"])


def torch_forward(fn, x, weights):
    """Run the inference function with torch; `weights` maps tensor index -> torch tensor."""
    env = {fn.inputs[0]: x, **weights}

    def get(i):
        if i < 0:
            return None
        if i not in env:
            env[i] = torch.from_numpy(np.array(fn.tensors[i].data))
        return env[i]

    for node in fn.nodes:
        ins, a = [get(i) for i in node.inputs], node.attrs
        if node.op in ("conv_2d", "depthwise_conv_2d"):
            y = _conv(ins[0], ins[1], ins[2] if len(ins) > 2 else None, a, node.op == "depthwise_conv_2d")
        elif node.op == "add":
            y = _act(ins[0] + ins[1], a["fused_activation_function"])
        elif node.op == "mean":
            y = ins[0].mean(dim=[int(d) for d in ins[1].reshape(-1)], keepdim=a["keep_dims"])
        elif node.op == "fully_connected":
            y = _act(F.linear(ins[0].reshape(-1, ins[1].shape[1]), ins[1], ins[2]), a["fused_activation_function"])
        else:
            raise NotImplementedError(node.op)
        env[node.outputs[0]] = y
    return env[fn.outputs[0]]


def torch_losses(trainable, optimizer, lr, batches):
    program = read_model(MODEL.read_bytes())
    fn = program.functions[0]
    chosen = select_weights(find_layers(program), trainable)
    params = {w.tensor: torch.tensor(np.array(w.value), requires_grad=True) for w in chosen}
    opt = (torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam)(list(params.values()), lr=lr)
    losses = []
    for x, y in batches:
        opt.zero_grad()
        loss = F.cross_entropy(torch_forward(fn, torch.from_numpy(x), params), torch.from_numpy(y).long())
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return np.float32(losses), {w.name: params[w.tensor].detach().numpy() for w in chosen}


def batches():
    rng = np.random.default_rng(7)
    return [(rng.uniform(-1, 1, (BATCH, 64, 64, 3)).astype(np.float32), rng.integers(0, 5, BATCH).astype(np.int32))
            for _ in range(STEPS)]


SPLITS = [("last:1", "sgd", 0.1), ("last:1", "adam", 0.01), ("last:3", "sgd", 0.05), ("biases", "adam", 0.01)]


# -- the must-show: ours vs PyTorch vs LiteRT -----------------------------------------------------------------------
@pytest.mark.parametrize("trainable,optimizer,lr", SPLITS)
def test_trainable_mobilenet_matches_pytorch_and_litert(trainable, optimizer, lr):
    data = batches()
    content = make_trainable(MODEL.read_bytes(), trainable, optimizer=optimizer, learning_rate=lr,
                             portable_checkpoints=True)
    interp = lt.Interpreter(model_content=content)
    train = interp.get_signature_runner("train")
    ours = np.float32([train(input_1=x, labels=y)["loss"] for x, y in data])
    theirs, weights = torch_losses(trainable, optimizer, lr, data)
    diff = np.abs(ours - theirs).max()
    print(f"{trainable}/{optimizer}: losses ours {np.round(ours, 5).tolist()}; max abs diff vs PyTorch {diff:.2e}")
    np.testing.assert_allclose(ours, theirs, atol=2e-5, rtol=1e-5)
    ours_weights = interp.get_variables()
    # Adam's step m / sqrt(v) is about +-lr wherever a gradient is tiny, so float32 rounding in such
    # a gradient can move a weight by a fraction of lr, or flip its step: 1% of lr is allowed, and
    # beyond it at most one weight in a thousand, by no more than the 2 lr a flipped step makes a step
    atol = 2e-5 if optimizer == "sgd" else 0.01 * lr
    for name, value in weights.items():
        if optimizer == "sgd":
            np.testing.assert_allclose(ours_weights[name], value, atol=atol, rtol=1e-4, err_msg=name)
            continue
        gap = np.abs(ours_weights[name] - value)
        beyond = gap > atol + 1e-4 * np.abs(value)
        assert beyond.mean() <= 1e-3 and gap.max() <= 2 * lr * STEPS, (name, int(beyond.sum()), float(gap.max()))
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    runner = litert.Interpreter(model_content=content).get_signature_runner("train")
    lite = np.float32([runner(input_1=x, labels=y)["loss"] for x, y in data])
    print(f"{trainable}/{optimizer}: max abs diff vs LiteRT {np.abs(ours - lite).max():.2e}")
    np.testing.assert_allclose(ours, lite, atol=2e-5, rtol=1e-5)


def test_infer_of_the_trainable_file_is_the_inference_file():
    x = batches()[0][0]
    before = lt.Interpreter(model_path=str(MODEL)).get_signature_runner()(input_1=x)["predictions"]
    made = lt.Interpreter(model_content=make_trainable(MODEL.read_bytes(), "all"))
    np.testing.assert_array_equal(made.get_signature_runner("infer")(input_1=x)["predictions"], before)


def test_only_the_chosen_weights_become_variables_and_the_rest_stay_constants():
    layers = find_layers(read_model(MODEL.read_bytes()))
    assert len(layers) == 53 and layers[-1].op == "fully_connected"
    made = lt.Interpreter(model_content=make_trainable(MODEL.read_bytes(), "last:2"))
    trainable = {v.name for v in made._program.variables.values() if v.trainable}
    assert trainable == {f"{layer.name}/{w.role}" for layer in layers[-2:] for w in layer.weights}
    assert all(not v.trainable for v in made._program.variables.values() if v.name.startswith("optimizer/"))
    named = make_trainable(MODEL.read_bytes(), ["*/Conv_1"])
    assert {v.name for v in lt.Interpreter(model_content=named)._program.variables.values() if v.trainable} == {
        "mobilenetv2_0.35_64/Conv_1/kernel", "mobilenetv2_0.35_64/Conv_1/bias"}


def test_checkpoints_of_the_trainable_file_restore_in_a_fresh_interpreter(tmp_path):
    content = make_trainable(MODEL.read_bytes(), "last:1", optimizer="adam", learning_rate=0.01)
    a = lt.Interpreter(model_content=content)
    x, y = batches()[0]
    for _ in range(2):
        a.get_signature_runner("train")(input_1=x, labels=y)
    path = np.array(str(tmp_path / "ckpt.safetensors"), dtype=object)
    a.get_signature_runner("save")(checkpoint_path=path)
    b = lt.Interpreter(model_content=content)
    b.get_signature_runner("restore")(checkpoint_path=path)
    np.testing.assert_array_equal(b.get_signature_runner("infer")(input_1=x)["predictions"],
                                  a.get_signature_runner("infer")(input_1=x)["predictions"])
    np.testing.assert_array_equal(b.get_signature_runner("train")(input_1=x, labels=y)["loss"],
                                  a.get_signature_runner("train")(input_1=x, labels=y)["loss"])


@pytest.mark.parametrize("kwargs,match", [
    ({"trainable": "last:99"}, "cannot train the last 99"),
    ({"trainable": ["no/such/layer"]}, "no layer or weight matches"),
    ({"output": "logits"}, "no output 'logits'"),
    ({"loss": "hinge"}, "unknown loss"),
    ({"optimizer": "lion"}, "unknown optimizer"),
])
def test_bad_choices_are_refused_with_a_message(kwargs, match):
    with pytest.raises(MakeTrainableError, match=match):
        make_trainable(MODEL.read_bytes(), **kwargs)


def test_the_command_line(tmp_path, capsys):
    from litetrain.cli import main
    out = tmp_path / "trainable.tflite"
    assert main(["make-trainable", str(MODEL), str(out), "--trainable", "last:1", "--optimizer", "adam",
                 "--portable-checkpoints"]) == 0
    assert "signatures train, infer, save, restore" in capsys.readouterr().out
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "fully_connected/kernel: float32[5, 1280]  trainable" in text
    assert "stock LiteRT can run it: yes" in text
    assert main(["make-trainable", str(MODEL), str(out), "--list-layers"]) == 0
    assert "mobilenetv2_0.35_64/Conv_1  (conv_2d: kernel [1280, 1, 1, 112], bias [1280])" in capsys.readouterr().out
    assert main(["make-trainable", str(MODEL), str(out), "--trainable", "nothing*"]) == 2
    assert "no layer or weight matches" in capsys.readouterr().err
