"""Building blocks imported from PyTorch against torch.autograd: for each (LayerNorm, GroupNorm, Conv1d,
ConvTranspose2d, Upsample, the activations, tensor ops such as chunk/stack/slicing/where/var,
scaled_dot_product_attention, MultiheadAttention, TransformerEncoderLayer, Embedding with int64 ids, GRU,
LSTM and RNN in their variants), the outputs and the gradients of every parameter and every float input
equal torch's (float32 tolerance). Models are imported with a dynamic batch and run on another batch
size than the example's."""
import numpy as np
import pytest

import litetrain as lt

torch = pytest.importorskip("torch", reason="PyTorch is the importer's source and the reference")
nn, F = torch.nn, torch.nn.functional

from litetrain.importers import from_torch  # noqa: E402

RTOL, ATOL = 1e-4, 2e-5


def imported_grads(model, inputs, example_batch=2, channels_last=False, **convert):
    """Our outputs and gradients of sum(out_k * c_k) (c random) for the imported model: a dict with
    y0, y1, ... (outputs), dx<k> (float inputs) and the torch name of each trainable parameter, in torch's
    layout; and the cotangents."""
    batch = inputs[0].shape[0]  # (the example has another batch: inputs of the first's batch are cut)
    examples = tuple(torch.from_numpy(a[:example_batch] if a.shape[0] == batch else a) for a in inputs)
    net = from_torch(model, examples, trainable="all", channels_last=channels_last)
    with torch.no_grad():
        outs = model(*[torch.from_numpy(a) for a in inputs])
    outs = _flat(outs)
    rng = np.random.default_rng(0)
    cots = [rng.standard_normal(tuple(o.shape)).astype(np.float32) if o.dtype == torch.float32 else None
            for o in outs]
    specs = [lt.TensorSpec([None if a.shape[0] == batch else a.shape[0], *a.shape[1:]], a.dtype.name)
             for a in inputs]

    class Wrapped(lt.Module):
        def __init__(self):
            self.net = net

        def body(self, *xs):
            ys = self.net(*xs, training=True)
            ys = ys if isinstance(ys, tuple) else (ys,)
            loss = None
            for y, c in zip(ys, cots):
                if c is not None:
                    term = lt.ops.reduce_sum(lt.ops.mul(y, c))
                    loss = term if loss is None else lt.ops.add(loss, term)
            floats = [x for x in xs if x.dtype == "float32"]
            grads = lt.gradients(loss, floats + self.net.trainable_variables)
            out = {f"y{k}": y for k, y in enumerate(ys)}
            out.update({f"dx{k}": g for k, g in enumerate(grads[:len(floats)])})
            out.update({f"g{k}": g for k, g in enumerate(grads[len(floats):])})
            return out

    names = ["x0", "x1", "x2"][:len(inputs)]
    method = {1: lambda self, x0: self.body(x0), 2: lambda self, x0, x1: self.body(x0, x1),
              3: lambda self, x0, x1, x2: self.body(x0, x1, x2)}[len(inputs)]
    Wrapped.f = lt.signature(**dict(zip(names, specs)))(method)
    program = lt.trace_program(Wrapped(), ["f"], **convert)
    out = lt.Interpreter.from_program(program).get_signature_runner("f")(**dict(zip(names, inputs)))
    for k, v in enumerate(net.trainable_variables):
        out[net.torch_name(v.path)] = net.to_torch_layout(v.path, out.pop(f"g{k}"))
    return out, cots


def _flat(outs):
    if isinstance(outs, (tuple, list)):
        return [o for item in outs for o in _flat(item)]
    return [outs]


def torch_grads(model, inputs, cots):
    ts = [torch.tensor(a, requires_grad=a.dtype == np.float32) for a in inputs]
    model.zero_grad()
    outs = _flat(model(*ts))
    loss = sum((o * torch.from_numpy(c)).sum() for o, c in zip(outs, cots) if c is not None)
    loss.backward()
    grads = {f"dx{k}": t.grad.numpy() for k, t in enumerate([t for t in ts if t.requires_grad])}
    grads.update({n: p.grad.numpy() for n, p in model.named_parameters() if p.grad is not None})
    return [o.detach().numpy() for o in outs], grads


def check(model, *inputs, rtol=RTOL, atol=ATOL, **kw):
    model.train()
    ours, cots = imported_grads(model, inputs, **kw)
    outs, grads = torch_grads(model, inputs, cots)
    for k, o in enumerate(outs):
        np.testing.assert_allclose(ours[f"y{k}"], o, rtol=rtol, atol=atol, err_msg=f"output {k}")
    params = [n for n, p in model.named_parameters()]
    assert sorted(n for n in ours if n in params) == sorted(params), "every parameter gets a gradient"
    for name, g in grads.items():
        scale = max(np.abs(g).max(), 1e-3)
        np.testing.assert_allclose(ours[name], g, rtol=rtol, atol=atol * scale, err_msg=name)
    return ours


def rand(*shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def seeded(fn):
    torch.manual_seed(0)
    return fn()


# -- normalisation, convolutions, resizing ---------------------------------------------------------------------
def test_layer_norm():
    model = seeded(lambda: nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.GELU(), nn.LayerNorm(8, eps=1e-3)))
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-0.5, 0.5)
    check(model, rand(5, 4, 6))


def test_group_norm_after_a_convolution():
    model = seeded(lambda: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(4, 8), nn.SiLU(),
                                         nn.Conv2d(8, 4, 1), nn.GroupNorm(2, 4)))
    check(model, rand(3, 3, 6, 5))


def test_group_norm_of_a_sequence():
    check(seeded(lambda: nn.Sequential(nn.Conv1d(4, 6, 3), nn.GroupNorm(3, 6))), rand(3, 4, 9))


@pytest.mark.parametrize("kw", [dict(padding=1), dict(stride=2), dict(padding="same", dilation=2),
                                dict(groups=4, padding=2), dict(groups=2, bias=False)])
def test_conv1d(kw):
    check(seeded(lambda: nn.Sequential(nn.Conv1d(4, 8, 3, **kw), nn.ReLU(), nn.Conv1d(8, 2, 1))), rand(3, 4, 11))


@pytest.mark.parametrize("kw", [dict(kernel_size=3, stride=2, padding=1, output_padding=1),
                                dict(kernel_size=2, stride=2), dict(kernel_size=3, stride=1, padding=1),
                                dict(kernel_size=4, stride=2, padding=1, bias=False)])
def test_conv_transpose2d(kw):
    model = seeded(lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ConvTranspose2d(4, 5, **kw)))
    check(model, rand(3, 3, 5, 4))


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_upsample(mode):
    model = seeded(lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Upsample(scale_factor=2, mode=mode),
                                         nn.Conv2d(4, 2, 3, padding=1)))
    check(model, rand(3, 3, 4, 5))


def test_interpolate_to_a_size():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 3, 1)

        def forward(self, x):
            return F.interpolate(self.conv(x), size=(7, 9), mode="nearest") + \
                F.interpolate(self.conv(x), size=(7, 9), mode="bilinear", align_corners=True)
    check(seeded(Net), rand(2, 2, 4, 5))


def test_activations():
    model = seeded(lambda: nn.Sequential(nn.Linear(5, 16), nn.ELU(), nn.Linear(16, 16), nn.Softplus(),
                                         nn.Linear(16, 16), nn.Mish(), nn.Linear(16, 16), nn.SiLU(), nn.Linear(16, 16),
                                         nn.LeakyReLU(0.1), nn.Linear(16, 16), nn.Hardswish(), nn.Linear(16, 16),
                                         nn.Hardsigmoid(), nn.Linear(16, 16), nn.GELU(approximate="tanh"),
                                         nn.Linear(16, 3), nn.ELU(alpha=0.5), nn.Softplus(beta=2.0)))
    check(model, rand(6, 5, scale=2.0))


# -- tensor ops ------------------------------------------------------------------------------------------------
class TensorOps(nn.Module):
    """chunk, stack, slicing with and without steps, select, unflatten, comparisons and where, var/std,
    masked_fill, split, expand, transpose, clamp: the ops models are written with."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x):  # x [B, 5, 8]
        h = self.lin(x)
        a, b = h.chunk(2, -1)
        s = torch.stack([a, b], 1)  # [B, 2, 5, 4]
        sl = h[:, 1:3] + h[:, 3:, ::2].sum(-1, keepdim=True)[:, :2]
        picked = h.select(1, 0) * h[:, -1]
        u = h.unflatten(-1, (2, 4)).sum(-2)
        w = torch.where(h > 0.1, h, h * 0.5) + (h <= -0.2).float()
        stats = h.var(-1) + h.std(1).sum(-1, keepdim=True) + h.var(1, unbiased=False).mean(-1, keepdim=True)
        filled = h.masked_fill(h.abs() < 0.05, 0.0)
        first, rest = torch.split(h, [3, 5], dim=-1)
        e = first.mean(-1, keepdim=True).expand(-1, -1, 5)
        return (s.sum((1, 3)) + sl.sum((1, 2))[:, None] + picked.sum(-1)[:, None] + u.sum(-1) + w.mean(-1)
                + stats + filled.sum(-1) + rest.transpose(1, 2).sum(1) + e.sum(-1)).clamp(-5, 5)


def test_tensor_ops():
    check(seeded(TensorOps), rand(4, 5, 8))


# -- attention -------------------------------------------------------------------------------------------------
class SDPA(nn.Module):
    def __init__(self, causal):
        super().__init__()
        self.qkv = nn.Linear(8, 24)
        self.causal = causal

    def forward(self, x, mask):  # mask [B, T] True for real tokens
        q, k, v = self.qkv(x).unflatten(-1, (2, 12)).transpose(1, 2).chunk(3, -1)  # [B, 2, T, 4] each
        attn = None if self.causal else mask[:, None, None, :]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn, is_causal=self.causal)


@pytest.mark.parametrize("causal", [False, True])
def test_scaled_dot_product_attention(causal):
    mask = np.ones((3, 6), bool)
    mask[1, 4:] = False
    mask[2, 2:] = False
    check(seeded(lambda: SDPA(causal)), rand(3, 6, 8), mask)


class MHA(nn.Module):
    def __init__(self, batch_first):
        super().__init__()
        self.batch_first = batch_first
        self.attn = nn.MultiheadAttention(8, 2, batch_first=batch_first)

    def forward(self, x, pad):  # x [B, T, E]; pad [B, T] True for padding
        q = x if self.batch_first else x.transpose(0, 1)
        y, w = self.attn(q, q, q, key_padding_mask=pad)
        return y, w


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_with_a_padding_mask(batch_first):
    pad = np.zeros((3, 5), bool)
    pad[1, 3:] = True
    check(seeded(lambda: MHA(batch_first)), rand(3, 5, 8), pad)


class Encoder(nn.Module):
    def __init__(self, norm_first, activation):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True, norm_first=norm_first,
                                                activation=activation)

    def forward(self, x, pad):
        return self.layer(x, src_key_padding_mask=pad)


@pytest.mark.parametrize("norm_first, activation", [(False, "relu"), (True, "gelu")])
def test_transformer_encoder_layer(norm_first, activation):
    pad = np.zeros((3, 5), bool)
    pad[2, 2:] = True
    check(seeded(lambda: Encoder(norm_first, activation)), rand(3, 5, 8), pad)


def test_causal_transformer_encoder():
    class Causal(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True), 2,
                                             enable_nested_tensor=False)

        def forward(self, x):
            return self.enc(x, mask=nn.Transformer.generate_square_subsequent_mask(5), is_causal=True)
    check(seeded(Causal), rand(3, 5, 8))


# -- embeddings and integer inputs -----------------------------------------------------------------------------
class Embed(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 6, padding_idx=0)
        self.head = nn.Linear(6, 3)

    def forward(self, ids):
        h = self.embed(ids)
        mask = (ids != 0).unsqueeze(-1).float()
        return self.head((h * mask).sum(1) / mask.sum(1).clamp(min=1.0))


def test_embedding_of_int64_ids_with_a_padding_row():
    ids = np.random.default_rng(0).integers(0, 10, (4, 7)).astype(np.int64)
    ids[0, :3] = [3, 3, 3]  # a repeated id: its gradient rows add up
    ids[1, 5:] = 0
    ours = check(seeded(Embed), ids)
    assert not ours["embed.weight"][0].any(), "the padding row gets no gradient, as in torch"


# -- recurrent layers ------------------------------------------------------------------------------------------
class Recurrent(nn.Module):
    def __init__(self, kind, batch_first, **kw):
        super().__init__()
        self.rnn = getattr(nn, kind)(5, 6, batch_first=batch_first, **kw)

    def forward(self, x):
        return self.rnn(x)


@pytest.mark.parametrize("kind", ["GRU", "LSTM", "RNN"])
@pytest.mark.parametrize("kw", [dict(), dict(bidirectional=True), dict(num_layers=2, bidirectional=True)])
def test_recurrent_layers_batch_first(kind, kw):
    check(seeded(lambda: Recurrent(kind, True, **kw)), rand(3, 7, 5))


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_recurrent_layers_time_major(kind):
    """[time, batch, features]: dim 0 (time) is the dynamic size, so the capacity comes from convert."""
    check(seeded(lambda: Recurrent(kind, False, num_layers=2, bidirectional=True)), rand(7, 3, 5),
          max_sequence_length=7)


class GivenState(nn.Module):
    """Initial states passed in (a decoder's, say): their gradients are checked too."""

    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.rnn = getattr(nn, kind)(5, 6, num_layers=2, bidirectional=True, batch_first=True)

    def forward(self, x, h0, c0):
        return self.rnn(x, (h0, c0) if self.kind == "LSTM" else h0 + c0)


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_recurrent_layers_with_initial_states(kind):
    """The batch is also dim 1 of the states: torch.export cannot make it dynamic, the sizes stay fixed."""
    check(seeded(lambda: GivenState(kind)), rand(3, 7, 5), rand(4, 3, 6, seed=1), rand(4, 3, 6, seed=2),
          example_batch=3)
