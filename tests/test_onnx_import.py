"""The ONNX importer against ONNX Runtime and PyTorch: models exported with torch.onnx.export (both of
its exporters) give onnxruntime's outputs and follow PyTorch's Adam trajectory; the imported files use
builtin operators only and LiteRT trains them with the same losses; what the importer cannot translate is
refused naming the op and the node. (Real models shipped in packages: test_onnx_import_real.py.)"""
import io
import subprocess
import sys
import warnings

import numpy as np
import pytest

import litetrain as lt
from litetrain.core.registry import Builtin, get_op
from litetrain.tflite import read_model

onnx = pytest.importorskip("onnx", reason="the onnx package reads the models (pip install 'litetrain[onnx]')")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is the oracle")
torch = pytest.importorskip("torch", reason="PyTorch exports the test models and is the training reference")
F = torch.nn.functional

from litetrain.importers import OnnxImportError, from_onnx  # noqa: E402
from litetrain.importers.onnx import SUPPORTED_OPS  # noqa: E402
from onnx_cases import (MODELS, TextClassifier, close, export, graph_model, infer, make, onnxruntime,  # noqa: E402
                        token_batches, wrap)


# -- inference equals onnxruntime's ------------------------------------------------------------------------------
@pytest.mark.parametrize("name,exporter,dynamic", [
    (n, "legacy", True) for n in MODELS] + [(n, "legacy", False) for n in ("attention", "lstm", "cnn")] + [
    (n, "dynamo", True) for n in ("cnn", "attention", "lstm", "unet")] + [("attention", "dynamo", False)])
def test_exported_models_give_onnxruntimes_outputs(name, exporter, dynamic):
    """Exported with a dynamic batch or with a fixed one (2): either way the imported model takes any batch."""
    model, shape, _ = make(name)
    proto = export(model, shape, exporter, dynamic)
    x = np.random.default_rng(0).standard_normal((4, *shape)).astype(np.float32)
    (ref,) = onnxruntime(proto, {proto.graph.input[0].name: x})
    (ours,) = infer(from_onnx(proto), {"x": x})
    assert close(ours, ref), float(np.abs(ours - ref).max())
    with torch.no_grad():
        assert close(ours, model(torch.from_numpy(x)).numpy(), 1e-4)


@pytest.mark.parametrize("opset", [13, 17])
def test_older_opsets_decomposed_layer_norm_and_erf_gelu(opset):
    """Below opset 17 torch exports LayerNorm as ReduceMean/Sub/Pow/Sqrt/Div, below 20 GELU as Erf."""
    model, shape, _ = make("attention")
    proto = export(model, shape, opset=opset)
    ops_used = {n.op_type for n in proto.graph.node}
    assert "Erf" in ops_used and ("LayerNormalization" in ops_used) == (opset >= 17)
    x = np.random.default_rng(1).standard_normal((3, *shape)).astype(np.float32)
    (ref,) = onnxruntime(proto, {"x": x})
    (ours,) = infer(from_onnx(proto), {"x": x})
    assert close(ours, ref), float(np.abs(ours - ref).max())


@pytest.mark.parametrize("op,direction,layout", [("LSTM", "bidirectional", 0), ("LSTM", "reverse", 1),
                                                 ("GRU", "bidirectional", 0), ("RNN", "forward", 1)])
def test_recurrent_nodes_with_sequence_lengths_and_initial_states(op, direction, layout):
    """ONNX LSTM/GRU/RNN nodes as ONNX writes them (not only as torch exports them): sequence_lens (padded
    steps give zeros, Y_h the last real step), initial states, every output. onnxruntime runs layout 0 only,
    so a batch-first (layout 1) node is compared with its layout-0 twin on the transposed tensors."""
    h, T = onnx.helper, onnx.TensorProto
    dirs, hidden, feat, steps, batch = 2 if direction == "bidirectional" else 1, 5, 4, 6, 3
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    rng = np.random.default_rng(8)
    weights = {"W": (dirs, gates * hidden, feat), "R": (dirs, gates * hidden, hidden), "B": (dirs, 2 * gates * hidden)}
    inits = [onnx.numpy_helper.from_array((0.4 * rng.standard_normal(s)).astype(np.float32), k)
             for k, s in weights.items()]
    names = ["x", "W", "R", "B", "lens", "h0"] + (["c0"] if op == "LSTM" else [])
    outs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])

    def model(lay):
        xs, hs = ([steps, batch, feat], [dirs, batch, hidden]) if lay == 0 else ([batch, steps, feat],
                                                                                  [batch, dirs, hidden])
        node = h.make_node(op, names, outs, name="encoder_rnn", hidden_size=hidden, direction=direction,
                           layout=lay, **({"linear_before_reset": 1} if op == "GRU" else {}))
        inputs = [h.make_tensor_value_info("x", T.FLOAT, xs), h.make_tensor_value_info("lens", T.INT32, [batch])]
        inputs += [h.make_tensor_value_info(n, T.FLOAT, hs) for n in names[5:]]
        return graph_model([node], inputs, [h.make_tensor_value_info(o, T.FLOAT, None) for o in outs], inits)

    feeds = {"x": rng.standard_normal((steps, batch, feat)).astype(np.float32), "lens": np.asarray([6, 3, 1], np.int32)}
    feeds.update({n: (0.5 * rng.standard_normal((dirs, batch, hidden))).astype(np.float32) for n in names[5:]})
    refs = ort.InferenceSession(model(0).SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    if layout:  # batch first: x [batch, time, features], states [batch, directions, hidden], Y [batch, time, ...]
        feeds = {k: v if k == "lens" else np.ascontiguousarray(v.transpose(1, 0, 2)) for k, v in feeds.items()}
        refs = [r.transpose(2, 0, 1, 3) if r.ndim == 4 else r.transpose(1, 0, 2) for r in refs]
    specs = {n: lt.TensorSpec(list(v.shape), str(v.dtype)) for n, v in feeds.items()}
    ours = infer(from_onnx(model(layout)), feeds, specs)
    for name, a, b in zip(outs, ours, refs):
        assert close(a, b), (name, float(np.abs(a - b).max()))


def test_channels_last_takes_nhwc_images():
    model, shape, _ = make("mobile_block")
    proto = export(model, shape)
    x = np.random.default_rng(2).standard_normal((3, *shape)).astype(np.float32)
    (ref,) = onnxruntime(proto, {"x": x})
    (ours,) = infer(from_onnx(proto, channels_last=True), {"x": np.ascontiguousarray(x.transpose(0, 2, 3, 1))})
    assert close(ours, ref)


# -- training follows torch --------------------------------------------------------------------------------------
# Parameters whose gradient is zero up to rounding: Adam turns rounding noise into steps of the learning rate,
# so they are compared only through the losses (the key projection's bias: softmax ignores a constant added
# to every score of a row).
DEGENERATE = {"attention": {"qkv.bias": slice(16, 32)}}


def adam_trajectories(name, proto, channels_last=False, steps=20):
    """(our losses, torch's, our final variables by ONNX name, torch's state dict) of `steps` Adam steps on
    the same batches; torch's batch norms train in train mode, as the imported ones do with training=True."""
    model, shape, classes = make(name)
    rng = np.random.default_rng(1)
    batches = [(rng.standard_normal((4, *shape)).astype(np.float32), rng.integers(0, classes, 4))
               for _ in range(steps)]
    net = from_onnx(proto, trainable="all", channels_last=channels_last)
    feed = (lambda a: np.ascontiguousarray(a.transpose(0, 2, 3, 1))) if channels_last else (lambda a: a)
    spec = {"x": lt.TensorSpec([None, *feed(batches[0][0]).shape[1:]])}
    data = lt.convert(wrap(net, spec, classes, lt.optim.Adam(1e-2)), signatures=["train"])
    interp = lt.Interpreter(model_content=data)
    train = interp.get_signature_runner("train")
    ours = [float(train(x=feed(x), y=np.eye(classes, dtype=np.float32)[y])["loss"]) for x, y in batches]
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    theirs = []
    for x, y in batches:
        opt.zero_grad()
        loss = F.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        opt.step()
        theirs.append(loss.item())
    return ours, theirs, net.onnx_initializers(interp.get_variables()), model.state_dict()


@pytest.mark.parametrize("name,exporter", [(n, "legacy") for n in MODELS] + [("mobile_block", "dynamo"),
                                                                              ("attention", "dynamo")])
def test_training_follows_torchs_adam_trajectory(name, exporter):
    """20 Adam steps of the imported model (every weight trainable, batch norms on batch statistics and
    updating their running statistics) take the losses and end at the weights torch's do. (Adam moves a
    weight whose gradient is near zero by up to its learning rate, whichever way rounding tips it: the
    weights are compared to 2% of one step.)"""
    model, shape, _ = make(name)
    proto = export(model, shape, exporter, keep=True)
    ours, theirs, state, torch_state = adam_trajectories(name, proto)
    assert abs(theirs[-1] - theirs[0]) > 0.05
    np.testing.assert_allclose(ours, theirs, rtol=2e-5, atol=2e-6)
    named = [k for k in state if k in torch_state]
    assert len(named) >= len([k for k, v in torch_state.items() if v.dtype == torch.float32]) - 2 * (
        name in ("lstm", "bigru"))
    for k in named:
        ref = torch_state[k].numpy().copy()
        mine = state[k].copy()
        if k in DEGENERATE.get(name, {}):
            ref[DEGENERATE[name][k]] = mine[DEGENERATE[name][k]] = 0.0
        np.testing.assert_allclose(mine, ref, rtol=1e-3, atol=2e-4, err_msg=k)  # (2% of one Adam step)


def test_channels_last_training_follows_torch():
    model, shape, _ = make("cnn")
    ours, theirs, _, _ = adam_trajectories("cnn", export(model, shape, keep=True), channels_last=True)
    np.testing.assert_allclose(ours, theirs, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_transformer_text_classifier_with_ids_and_mask(exporter):
    """Integer and boolean inputs: onnxruntime's outputs (either exporter), and, exported keeping torch's
    weights (legacy), 20 Adam steps with the same losses as torch (embedding rows trained by scatter-add)."""
    torch.manual_seed(0)
    model = TextClassifier().eval()
    ids, mask = torch.randint(0, 30, (2, 6)), torch.zeros(2, 6, dtype=torch.bool)
    if exporter == "dynamo":
        pytest.importorskip("onnxscript", reason="torch.onnx's dynamo exporter needs onnxscript")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            batch = torch.export.Dim("batch")
            proto = torch.onnx.export(model, (ids, mask), dynamo=True, verbose=False,
                                      dynamic_shapes=({0: batch}, {0: batch})).model_proto
        else:
            f = io.BytesIO()
            torch.onnx.export(model, (ids, mask), f, dynamo=False, input_names=["ids", "mask"],
                              dynamic_axes={"ids": {0: "b"}, "mask": {0: "b"}}, do_constant_folding=False)
            proto = onnx.load_from_string(f.getvalue())
    names = [i.name for i in proto.graph.input]
    (i0, m0, _), = token_batches(1, np.random.default_rng(5), batch=3)
    feeds = {names[0]: i0.astype(np.int64), names[1]: m0}
    (ref,) = onnxruntime(proto, feeds)
    assert close(infer(from_onnx(proto), feeds)[0], ref)
    if exporter == "dynamo":
        return
    net = from_onnx(proto, trainable="all")

    class Train(lt.Module):
        def __init__(self):
            self.net, self.optimizer = net, lt.optim.Adam(1e-2)

        @lt.signature(ids=lt.TensorSpec([None, 6], "int32"), mask=lt.TensorSpec([None, 6], "bool"),
                      y=lt.TensorSpec([None, 4]))
        def train(self, ids, mask, y):
            loss = lt.losses.CategoricalCrossentropy(from_logits=True)(y, self.net(ids, mask, training=True))
            self.optimizer.minimize(loss, self.net.trainable_variables)
            return {"loss": loss}

    run = lt.Interpreter(model_content=lt.convert(Train(), signatures=["train"])).get_signature_runner("train")
    batches = token_batches(20, np.random.default_rng(6))
    ours = [float(run(ids=i.astype(np.int32), mask=m, y=np.eye(4, dtype=np.float32)[y])["loss"]) for i, m, y in batches]
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    theirs = []
    for i, m, y in batches:
        opt.zero_grad()
        loss = F.cross_entropy(model(torch.from_numpy(i), torch.from_numpy(m)), torch.from_numpy(y))
        loss.backward()
        opt.step()
        theirs.append(loss.item())
    np.testing.assert_allclose(ours, theirs, rtol=2e-5, atol=5e-6)


# -- builtin operators only; LiteRT trains the files -------------------------------------------------------------
@pytest.mark.parametrize("name", ["mobile_block", "attention", "lstm"])
def test_imported_files_are_builtin_only_and_train_in_litert(name):
    litert = pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert is the TFLite oracle")
    model, shape, classes = make(name)
    net = from_onnx(export(model, shape, keep=True), trainable="all")
    spec = {"x": lt.TensorSpec([None, *shape])}
    data = lt.convert(wrap(net, spec, classes, lt.optim.SGD(0.1, momentum=0.9)),
                      signatures=["train", "infer", "save"], portable_checkpoints=True)
    program = read_model(data)
    assert all(isinstance(get_op(n.op).tflite, Builtin) for f in program.functions for n in f.nodes)
    ours, theirs = lt.Interpreter(model_content=data), litert.Interpreter(model_content=data)
    rng = np.random.default_rng(3)
    for _ in range(3):
        x = rng.standard_normal((4, *shape)).astype(np.float32)
        y = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, 4)]
        a = float(ours.get_signature_runner("train")(x=x, y=y)["loss"])
        b = float(np.asarray(theirs.get_signature_runner("train")(x=x, y=y)["loss"]))
        assert b == pytest.approx(a, rel=1e-4)
    after_ours, after_theirs = ours.get_signature_runner("save")(), theirs.get_signature_runner("save")()
    for k in after_ours:
        np.testing.assert_allclose(np.asarray(after_theirs[k]), after_ours[k], rtol=1e-3, atol=1e-5, err_msg=k)


# -- names, refusals, optional dependencies -----------------------------------------------------------------------
def test_variables_are_named_by_initializer_and_prefixes_pick_the_trainable_ones():
    model, shape, _ = make("mobile_block")
    proto = export(model, shape, keep=True)
    net = from_onnx(proto, trainable=["head", "proj"])
    trainable = {net.onnx_name(s.path) for s in net.trainable_variables}
    assert trainable == {"head.weight", "head.bias", "proj.0.weight", "proj.1.weight", "proj.1.bias"}
    buffers = {net.onnx_name(s.path) for s in net.variables if not isinstance(s, lt.Param)}
    assert buffers == {f"{m}.1.running_{k}" for m in ("stem", "expand", "dw", "proj") for k in ("mean", "var")}
    assert "dw/0/weight" in {s.path for s in net.variables}
    initializers = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    for k, v in net.onnx_initializers().items():  # (kernels stored OHWI or depthwise come back as OIHW)
        np.testing.assert_array_equal(v, initializers.get(k, model.state_dict()[k].numpy()), err_msg=k)
    net.unfreeze()
    assert len(net.trainable_variables) == len(list(model.parameters()))
    with pytest.raises(ValueError, match="'features' matches no weight.*'dw', 'expand', 'head'"):
        from_onnx(proto, trainable=["features"])


def test_refusals_name_the_op_and_the_node():
    h, T = onnx.helper, onnx.TensorProto
    x = h.make_tensor_value_info("x", T.FLOAT, ["batch", 8])
    y = h.make_tensor_value_info("y", T.FLOAT, ["batch", 2])
    k = onnx.numpy_helper.from_array(np.asarray([2], np.int64), "k")
    topk = graph_model([h.make_node("Relu", ["x"], ["r"], name="relu_1"),
                         h.make_node("TopK", ["r", "k"], ["y", "i"], name="pick_best"),
                         h.make_node("CumSum", ["r", "k"], ["z"], name="running_total")], [x], [y], [k])
    with pytest.raises(OnnxImportError, match=r"(?s)CumSum: node 'running_total'.*TopK: node 'pick_best'"):
        from_onnx(topk)
    img = h.make_tensor_value_info("img", T.FLOAT, [1, 3, 4, 4])
    out = h.make_tensor_value_info("out", T.FLOAT, [1, 3, 8, 8])
    scales = onnx.numpy_helper.from_array(np.asarray([1, 1, 2, 2], np.float32), "scales")
    cubic = graph_model([h.make_node("Resize", ["img", "", "scales"], ["out"], name="upsample_3", mode="cubic")],
                         [img], [out], [scales])
    net = from_onnx(cubic)
    with pytest.raises(OnnxImportError, match=r"ONNX Resize node 'upsample_3': resizing .* mode='cubic'"):
        infer(net, {"img": np.zeros((1, 3, 4, 4), np.float32)})
    with pytest.raises(OnnxImportError, match=r"opset 11.*convert_version"):
        from_onnx(graph_model([h.make_node("Relu", ["x"], ["y"])], [x], [y], opset=11))
    model, shape, _ = make("mlp")
    with pytest.raises(ValueError, match=r"input 'x': expected \[batch, 12\], got \[None, 10\]"):
        infer(from_onnx(export(model, shape)), {"x": np.zeros((2, 10), np.float32)})
    with pytest.raises(FileNotFoundError, match="no ONNX file"):
        from_onnx("/nonexistent/model.onnx")


def test_supported_ops_cover_what_torch_exports():
    for op in ("Conv", "BatchNormalization", "Relu", "Clip", "HardSwish", "Sigmoid", "MaxPool", "AveragePool",
               "GlobalAveragePool", "Gemm", "MatMul", "Add", "Mul", "Sub", "Div", "Reshape", "Flatten",
               "Transpose", "Concat", "Pad", "Slice", "Squeeze", "Unsqueeze", "Gather", "Shape",
               "LayerNormalization", "ReduceMean", "Pow", "Sqrt", "Softmax", "LogSoftmax", "Erf", "Gelu", "Tanh",
               "LSTM", "GRU", "If"):
        assert op in SUPPORTED_OPS, op


def test_importing_litetrain_does_not_import_onnx():
    code = ("import sys, litetrain, litetrain.importers; litetrain.importers.from_onnx; "
            "assert 'onnx' not in sys.modules, 'onnx was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
