"""The ONNX importer's test models and helpers (tests/test_onnx_import*.py): PyTorch models exported with
torch.onnx.export, onnxruntime as the oracle, and a litetrain Module around an imported net. Imported by the
tests after they have checked that torch, onnx and onnxruntime are installed."""
import inspect
import io
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import litetrain as lt

nn, F = torch.nn, torch.nn.functional


# -- the models ---------------------------------------------------------------------------------------------
class SmallCNN(nn.Module):
    """conv + bn + relu, max pooling, a grouped strided conv + bn + hardswish, average pooling, flatten, linear."""

    def __init__(self):
        super().__init__()
        self.c1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.c2, self.bn2 = nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2, bias=False), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16 * 2 * 2, 5)

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.bn1(self.c1(x))), 2)
        h = F.avg_pool2d(F.hardswish(self.bn2(self.c2(h))), 2)
        return self.fc(torch.flatten(h, 1))


class MobileBlock(nn.Module):
    """A MobileNetV2-like block: stem, 1x1 expansion (relu6), depthwise 3x3 (hardswish), squeeze-excite
    (global pooling, 1x1 convs, sigmoid), 1x1 projection, residual, global mean and a linear head."""

    def __init__(self, c=8, e=4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, 2, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU6())
        self.expand = nn.Sequential(nn.Conv2d(c, c * e, 1, bias=False), nn.BatchNorm2d(c * e), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(c * e, c * e, 3, 1, 1, groups=c * e, bias=False), nn.BatchNorm2d(c * e),
                                nn.Hardswish())
        self.se1, self.se2 = nn.Conv2d(c * e, 8, 1), nn.Conv2d(8, c * e, 1)
        self.proj = nn.Sequential(nn.Conv2d(c * e, c, 1, bias=False), nn.BatchNorm2d(c))
        self.head = nn.Linear(c, 4)

    def forward(self, x):
        x = self.stem(x)
        h = self.dw(self.expand(x))
        h = h * torch.sigmoid(self.se2(F.relu(self.se1(F.adaptive_avg_pool2d(h, 1)))))
        return self.head((self.proj(h) + x).mean((2, 3)))


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(12, 32), nn.Linear(32, 16), nn.Linear(16, 3)

    def forward(self, x):
        return F.log_softmax(self.c(torch.tanh(self.b(F.gelu(self.a(x))))), -1)


class AttentionBlock(nn.Module):
    """A pre-norm transformer block on [batch, time, 16]: LayerNorm, multi-head attention written with
    matmuls and softmax (qkv chunked, heads split by reshape and transpose), a GELU MLP, mean pooling."""

    def __init__(self, d=16, heads=2):
        super().__init__()
        self.heads = heads
        self.ln1, self.qkv, self.o = nn.LayerNorm(d), nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ln2, self.f1, self.f2, self.cls = nn.LayerNorm(d), nn.Linear(d, 32), nn.Linear(32, d), nn.Linear(d, 3)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).chunk(3, -1)
        q, k, v = (z.reshape(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        a = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, -1) @ v
        x = x + self.o(a.transpose(1, 2).reshape(b, t, d))
        x = x + self.f2(F.gelu(self.f1(self.ln2(x))))
        return self.cls(x.mean(1))


class Recurrent(nn.Module):
    def __init__(self, kind="lstm", bidirectional=False):
        super().__init__()
        self.rnn = (nn.LSTM if kind == "lstm" else nn.GRU)(6, 10, batch_first=True, bidirectional=bidirectional)
        self.fc = nn.Linear(20 if bidirectional else 10, 3)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.fc(out[:, -1])


class UNetLike(nn.Module):
    """InstanceNorm, a strided conv + GroupNorm + SiLU, two transposed convolutions (one with padding and
    output_padding), bilinear and nearest upsampling, a skip concatenation, max and average pooling with
    ceil_mode (the average not counting its padding)."""

    def __init__(self):
        super().__init__()
        self.norm = nn.InstanceNorm2d(3, affine=True)
        self.down, self.gn = nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.GroupNorm(2, 8)
        self.up = nn.ConvTranspose2d(8, 8, 2, 2)
        self.up2 = nn.ConvTranspose2d(8, 8, 3, stride=2, padding=1, output_padding=1)
        self.mix, self.fc = nn.Conv2d(8 + 3, 4, 1), nn.Linear(4 * 5 * 5, 3)

    def forward(self, x):
        x = self.norm(x)
        h = F.silu(self.gn(self.down(x)))
        u = self.up(h) + self.up2(h) + F.interpolate(h, scale_factor=2, mode="bilinear") + \
            F.interpolate(h, scale_factor=2, mode="nearest")
        y = F.leaky_relu(self.mix(torch.cat([u, x], 1)), 0.1)
        y = F.avg_pool2d(F.max_pool2d(y, 3, 2, ceil_mode=True), 3, 2, padding=1, count_include_pad=False,
                         ceil_mode=True)
        return self.fc(y.flatten(1))


class Conv1dNet(nn.Module):
    """Conv1d + BatchNorm1d + ReLU, 1-D average pooling, a dilated depthwise Conv1d + ELU, 1-D max pooling."""

    def __init__(self):
        super().__init__()
        self.c1, self.bn = nn.Conv1d(6, 8, 3, padding=1, bias=False), nn.BatchNorm1d(8)
        self.c2, self.fc = nn.Conv1d(8, 8, 3, padding=2, dilation=2, groups=8), nn.Linear(8 * 4, 3)

    def forward(self, x):
        h = F.avg_pool1d(F.relu(self.bn(self.c1(x))), 2)
        return self.fc(F.max_pool1d(F.elu(self.c2(h)), 2).flatten(1))


class OneChannel(nn.Module):
    """Weights of one element: a one-channel batch norm and PReLU's slope (which reaches PRelu unsqueezed)."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.act = nn.Conv2d(3, 1, 3, bias=False), nn.BatchNorm2d(1), nn.PReLU()
        self.fc = nn.Linear(36, 2)

    def forward(self, x):
        return self.fc(self.act(self.bn(self.conv(x))).flatten(1))


MODELS = {  # name -> (constructor, input shape of one example, classes)
    "cnn": (SmallCNN, (3, 16, 16), 5), "mobile_block": (MobileBlock, (3, 16, 16), 4), "mlp": (MLP, (12,), 3),
    "attention": (AttentionBlock, (5, 16), 3), "lstm": (lambda: Recurrent("lstm"), (7, 6), 3),
    "bigru": (lambda: Recurrent("gru", bidirectional=True), (7, 6), 3), "unet": (UNetLike, (3, 16, 16), 3),
    "conv1d": (Conv1dNet, (6, 16), 3), "one_channel": (OneChannel, (3, 8, 8), 2),
}


def make(name):
    """The model in eval mode, seeded, batch norms with non-trivial statistics and affine parameters."""
    cls, shape, classes = MODELS[name]
    torch.manual_seed(0)
    model = cls()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval(), shape, classes


def export(model, shape, exporter="legacy", dynamic=True, keep=False, opset=None, batch=2):
    """torch.onnx.export of `model` on a batch of `batch`: the TorchScript exporter ("legacy") or the
    torch.export-based one ("dynamo", torch's default); `keep` keeps torch's parametrisation (no constant
    folding: batch norms and parameter names stay as torch has them)."""
    x = torch.randn(batch, *shape)
    if exporter == "dynamo":
        pytest.importorskip("onnxscript", reason="torch.onnx's dynamo exporter needs onnxscript")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            kw = {"dynamic_shapes": ({0: torch.export.Dim("batch")},)} if dynamic else {}
            return torch.onnx.export(model, (x,), dynamo=True, optimize=not keep, verbose=False, **kw).model_proto
        f = io.BytesIO()
        torch.onnx.export(model, (x,), f, dynamo=False, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}} if dynamic else None, do_constant_folding=not keep,
                          **({"opset_version": opset} if opset else {}))
    return onnx.load_from_string(f.getvalue())


def onnxruntime(model, feeds):
    """onnxruntime's outputs; a model with a fixed batch runs on the examples in batches of its size."""
    sess = ort.InferenceSession(model.SerializeToString() if hasattr(model, "SerializeToString") else str(model),
                               providers=["CPUExecutionProvider"])
    first = sess.get_inputs()[0]
    n = len(feeds[first.name])
    b = first.shape[0] if first.shape and isinstance(first.shape[0], int) else n
    chunks = [sess.run(None, {k: (v[i:i + b] if k == first.name else v) for k, v in feeds.items()})
              for i in range(0, n, b)]
    return [np.concatenate(parts) for parts in zip(*chunks)]


def wrap(net, specs, classes=None, optimizer=None):
    """A Module around an imported net: infer(**inputs) -> y0, y1, ...; with an optimizer, train(x, y)
    -> the cross-entropy loss of one step."""
    names = list(specs)

    class Wrapped(lt.Module):
        def __init__(self):
            self.net = net
            if optimizer is not None:
                self.optimizer = optimizer

        def _infer(self, **inputs):
            out = self.net(*[inputs[k] for k in names])
            return {f"y{i}": v for i, v in enumerate(out if isinstance(out, tuple) else (out,))}

        if optimizer is not None:
            @lt.signature(x=specs["x"], y=lt.TensorSpec([None, classes]))
            def train(self, x, y):
                loss = lt.losses.CategoricalCrossentropy(from_logits=True)(y, self.net(x, training=True))
                self.optimizer.minimize(loss, self.net.trainable_variables)
                return {"loss": loss}

    Wrapped.infer = lt.signature(**specs)(_with_params(Wrapped._infer, names))
    return Wrapped()


def _with_params(fn, names):
    """fn(self, **inputs) given a signature naming each input (what @lt.signature reads)."""
    params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in ["self", *names]]

    def method(self, *args, **kwargs):
        return fn(self, **dict(zip(names, args)), **kwargs)
    method.__signature__ = inspect.Signature(params)
    return method


def infer(net, feeds, specs=None):
    """The imported net's outputs on `feeds` (inputs in the model's order; the signature names them i0, i1,
    ... since ONNX names need not be identifiers); specs default to the feeds' shapes with any batch."""
    specs = list((specs or {k: lt.TensorSpec([None, *v.shape[1:]], str(v.dtype)) for k, v in feeds.items()}).values())
    interp = lt.Interpreter(model_content=lt.convert(wrap(net, {f"i{k}": s for k, s in enumerate(specs)}),
                                                     signatures=["infer"]))
    out = interp.get_signature_runner("infer")(**{f"i{k}": v for k, v in enumerate(feeds.values())})
    return [out[f"y{i}"] for i in range(len(out))]


def close(ours, ref, rtol=1e-5):
    """Equal within float32 tolerance relative to the reference's scale."""
    scale = max(float(np.abs(ref).max()), 1e-3)
    return ours.shape == ref.shape and float(np.abs(ours - ref).max()) <= rtol * scale + 1e-6



class TextClassifier(nn.Module):
    """Token ids and a padding mask in: nn.Embedding, a pre-norm nn.TransformerEncoderLayer with the mask,
    masked mean pooling, a linear classifier."""

    def __init__(self, vocab=30, d=16):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.enc = nn.TransformerEncoderLayer(d, 2, 32, dropout=0.0, batch_first=True, norm_first=True)
        self.fc = nn.Linear(d, 4)

    def forward(self, ids, mask):
        h = self.enc(self.emb(ids), src_key_padding_mask=mask)
        keep = (~mask).float().unsqueeze(-1)
        return self.fc((h * keep).sum(1) / keep.sum(1))


def token_batches(n, rng, batch=4, length=6):
    out = []
    for _ in range(n):
        mask = np.zeros((batch, length), bool)
        mask[rng.integers(0, batch), rng.integers(2, length):] = True
        out.append((rng.integers(0, 30, (batch, length)), mask, rng.integers(0, 4, batch)))
    return out



def graph_model(nodes, inputs, outputs, initializers=(), opset=17):
    h = onnx.helper
    graph = h.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])
