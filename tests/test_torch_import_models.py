"""Whole models imported from PyTorch follow torch's Adam trajectory: a TransformerEncoder text classifier
(int64 token ids, the padding mask computed inside, masked mean pooling), a bidirectional stacked LSTM
and a GRU sequence-to-one classifier, an LSTM classifying from its last output step (out[:, -1]), a 1-D
convolutional classifier with BatchNorm1d and pooling, and a small U-Net (GroupNorm, strided and
transposed convolutions, Upsample, skip concatenations) trained with MSE: 20 Adam steps, the same
batches, losses and final weights compared with torch's. The converted files use builtin operators only
and Google's LiteRT trains them with the same losses."""
import numpy as np
import pytest

import litetrain as lt
from litetrain.core.registry import Builtin, get_op
from litetrain.tflite import read_model

torch = pytest.importorskip("torch", reason="PyTorch is the importer's source and the reference")
nn, F = torch.nn, torch.nn.functional

from litetrain.importers import from_torch  # noqa: E402

STEPS = 20


# -- the models ------------------------------------------------------------------------------------------------
class TextTransformer(nn.Module):
    """Token and position embeddings, two post-norm encoder layers (GELU) with the padding mask, masked
    mean pooling, a linear classifier."""

    def __init__(self, vocab=20, length=8, d=16, classes=4):
        super().__init__()
        self.embed = nn.Embedding(vocab, d, padding_idx=0)
        self.position = nn.Parameter(torch.randn(1, length, d) * 0.1)
        layer = nn.TransformerEncoderLayer(d, 2, 32, dropout=0.0, batch_first=True, activation="gelu")
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)

    def forward(self, ids):
        pad = ids == 0
        h = self.encoder(self.embed(ids) + self.position, src_key_padding_mask=pad)
        keep = (~pad).unsqueeze(-1).float()
        return self.head(self.norm((h * keep).sum(1) / keep.sum(1).clamp(min=1.0)))


class Seq2One(nn.Module):
    """A stacked bidirectional recurrent layer; the last layer's final states of both directions classify."""

    def __init__(self, kind="LSTM", features=5, hidden=8, classes=3):
        super().__init__()
        self.rnn = getattr(nn, kind)(features, hidden, num_layers=2, bidirectional=True, batch_first=True)
        self.head = nn.Linear(2 * hidden, classes)

    def forward(self, x):
        out = self.rnn(x)
        h = out[1][0] if isinstance(out[1], tuple) else out[1]
        return self.head(torch.cat([h[-2], h[-1]], -1))


class LastStep(nn.Module):
    """A single-layer recurrent net classifying from its output at the last time step (out[:, -1])."""

    def __init__(self, kind="LSTM", features=5, hidden=8, classes=3):
        super().__init__()
        self.rnn = getattr(nn, kind)(features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


class Conv1dNet(nn.Module):
    """Keyword-spotting style: Conv1d + BatchNorm1d + ReLU blocks, max pooling, a dilated depthwise
    convolution, global average pooling, a linear classifier. (The convolutions before a batch norm have
    no bias, as usual: its gradient is zero up to rounding, which Adam would turn into full steps.)"""

    def __init__(self, channels=3, classes=4):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(channels, 8, 5, padding=2, bias=False), nn.BatchNorm1d(8), nn.ReLU(), nn.MaxPool1d(2),
            nn.Conv1d(8, 8, 3, padding=2, dilation=2, groups=8, bias=False), nn.Conv1d(8, 16, 1, bias=False),
            nn.BatchNorm1d(16), nn.ReLU(),
            nn.AdaptiveAvgPool1d(1))
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def _block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(2, cout), nn.SiLU())


class TinyUNet(nn.Module):
    """Two levels down (stride-2 convolution, max pooling), up by a transposed convolution and by
    nearest upsampling, skip connections concatenated, a 1x1 output convolution."""

    def __init__(self):
        super().__init__()
        self.enc1, self.down1 = _block(2, 8), nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.enc2, self.pool = _block(8, 16), nn.MaxPool2d(2)
        self.mid = _block(16, 16)
        self.up2 = nn.Upsample(scale_factor=2, mode="nearest")
        self.dec2 = _block(32, 8)
        self.up1 = nn.ConvTranspose2d(8, 8, 2, stride=2)
        self.dec1 = _block(16, 8)
        self.out = nn.Conv2d(8, 1, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(self.down1(e1))
        d2 = self.dec2(torch.cat([self.up2(self.mid(self.pool(e2))), e2], 1))
        return self.out(self.dec1(torch.cat([self.up1(d2), e1], 1)))


# -- data ------------------------------------------------------------------------------------------------------
def token_batches(rng, n=STEPS, batch=6, length=8, vocab=20, classes=4):
    out = []
    for _ in range(n):
        ids = rng.integers(1, vocab, (batch, length))
        for row, cut in zip(ids, rng.integers(2, length + 1, batch)):
            row[cut:] = 0
        out.append((ids.astype(np.int64), rng.integers(0, classes, batch)))
    return out


def float_batches(rng, shape, classes, n=STEPS):
    """Random inputs labelled by a fixed random projection (a task the trajectory can make progress on)."""
    proj = rng.standard_normal((int(np.prod(shape[1:])), classes))
    out = []
    for _ in range(n):
        x = rng.standard_normal(shape).astype(np.float32)
        out.append((x, (x.reshape(shape[0], -1) @ proj).argmax(1)))
    return out


def image_batches(rng, n=STEPS):
    out = []
    for _ in range(n):
        x = rng.standard_normal((3, 2, 8, 8)).astype(np.float32)
        out.append((x, (x[:, :1] * 0.5 - x[:, 1:] ** 2 * 0.25).astype(np.float32)))  # a per-pixel target
    return out


MODELS = {
    "transformer": (TextTransformer, lambda rng: token_batches(rng), "ce"),
    "lstm": (lambda: Seq2One("LSTM"), lambda rng: float_batches(rng, (6, 7, 5), 3), "ce"),
    "gru": (lambda: Seq2One("GRU"), lambda rng: float_batches(rng, (6, 7, 5), 3), "ce"),
    "lstm_last_step": (lambda: LastStep("LSTM"), lambda rng: float_batches(rng, (6, 7, 5), 3), "ce"),
    "conv1d": (Conv1dNet, lambda rng: float_batches(rng, (6, 3, 32), 4), "ce"),
    "unet": (TinyUNet, lambda rng: image_batches(rng), "mse"),
}


# -- the two trainings -----------------------------------------------------------------------------------------
def converted(model, batches, loss_kind, lr, **convert):
    """The imported model's file (train and infer signatures) and the imported module."""
    x0, y0 = batches[0]
    net = from_torch(model, torch.from_numpy(x0[:2]), trainable="all")
    classes = None if loss_kind == "mse" else int(max(int(y.max()) for _, y in batches) + 1)
    y_spec = lt.TensorSpec([None, *y0.shape[1:]]) if classes is None else lt.TensorSpec([None, classes])
    x_spec = lt.TensorSpec([None, *x0.shape[1:]], "int64" if x0.dtype == np.int64 else "float32")
    loss = lt.losses.MeanSquaredError() if classes is None else lt.losses.CategoricalCrossentropy(from_logits=True)

    class Wrapped(lt.Module):
        def __init__(self):
            self.net = net
            self.optimizer = lt.optim.Adam(lr)

        @lt.signature(x=x_spec, y=y_spec)
        def train(self, x, y):
            out = self.net(x, training=True)
            value = loss(lt.ops.reshape(y, [-1, int(np.prod(y0.shape[1:]))]),
                         lt.ops.reshape(out, [-1, int(np.prod(y0.shape[1:]))])) if classes is None else loss(y, out)
            self.optimizer.minimize(value, self.net.trainable_variables)
            return {"loss": value}

    return lt.convert(Wrapped(), signatures=["train", "save"], portable_checkpoints=True, **convert), net, classes


def feeds(batches, classes):
    return [{"x": x, "y": y if classes is None else np.eye(classes, dtype=np.float32)[y]} for x, y in batches]


def torch_losses(model, batches, loss_kind, lr):
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    out = []
    for x, y in batches:
        opt.zero_grad()
        pred = model(torch.from_numpy(x))
        if loss_kind == "mse":
            loss = F.mse_loss(pred, torch.from_numpy(y))
        else:
            loss = F.cross_entropy(pred, torch.from_numpy(y))
        loss.backward()
        opt.step()
        out.append(loss.item())
    return out


def follow(name, lr=3e-3, rtol=2e-4):
    make, data, loss_kind = MODELS[name]
    torch.manual_seed(0)
    model = make()
    batches = data(np.random.default_rng(1))
    data_file, net, classes = converted(model, batches, loss_kind, lr)
    interp = lt.Interpreter(model_content=data_file)
    train = interp.get_signature_runner("train")
    ours = [float(train(**f)["loss"]) for f in feeds(batches, classes)]
    theirs = torch_losses(model, batches, loss_kind, lr)
    assert max(abs(t - theirs[0]) for t in theirs) > 1e-2, "the trajectory moves"
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=1e-6, err_msg=f"{name}: losses step by step")
    state = net.torch_state_dict(interp.get_variables())
    torch_state = model.state_dict()
    for k, v in state.items():
        want = torch_state[k].numpy()
        if k.endswith("in_proj_bias"):  # the key bias moves every score of a query alike: softmax cancels
            d = len(v) // 3               # it, its gradient is zero up to rounding, which Adam amplifies
            v, want = np.delete(v, np.s_[d:2 * d]), np.delete(want, np.s_[d:2 * d])
        np.testing.assert_allclose(v, want, rtol=2e-3, atol=2e-5, err_msg=f"{name}: {k}")
    return data_file, batches, classes, ours


@pytest.mark.parametrize("name", sorted(MODELS))
def test_models_follow_torchs_adam_trajectory(name):
    """(2-5 s each on 2 cores)"""
    follow(name)


# -- builtin operators only, and LiteRT trains the files --------------------------------------------------------
@pytest.mark.parametrize("name", sorted(MODELS))
def test_imported_files_are_builtin_only_and_train_in_litert(name):
    """(about 1 s each on 2 cores)"""
    litert = pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert is the TFLite oracle")
    make, data, loss_kind = MODELS[name]
    torch.manual_seed(0)
    batches = data(np.random.default_rng(1))[:4]
    data_file, _, classes = converted(make(), batches, loss_kind, 3e-3)
    program = read_model(data_file)
    custom = {n.op for f in program.functions for n in f.nodes if not isinstance(get_op(n.op).tflite, Builtin)}
    assert not custom, f"custom ops in the file: {custom}"
    ours = lt.Interpreter(model_content=data_file).get_signature_runner("train")
    theirs = litert.Interpreter(model_content=data_file).get_signature_runner("train")
    for f in feeds(batches, classes):
        a = float(ours(**f)["loss"])
        b = float(np.asarray(theirs(**f)["loss"]))
        assert b == pytest.approx(a, rel=1e-4), name
