"""Recurrent training files on Google's LiteRT: builtin ops only (WHILE, DYNAMIC_UPDATE_SLICE,
GATHER_ND, SCATTER_ND, ... no custom op, no Flex), and LiteRT trains them with the same losses as
litetrain's interpreter while the sequence length changes from call to call. Past the capacity,
LiteRT fails the call too, and its variables stay as they were."""
from __future__ import annotations

import numpy as np
import pytest

import litetrain as lt
from litetrain.core.registry import Custom, get_op
from litetrain.tflite import read_model

litert = pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert is the TFLite oracle")

from test_rnn import CELLS, Regressor, padded_batch, regression_batches  # noqa: E402

SIGS = ["train", "infer", "save", "restore"]


def portable(model):
    return lt.convert(model, signatures=SIGS, portable_checkpoints=True)


def _loss(out):
    return float(np.asarray(out["loss"]).reshape(()))


@pytest.mark.parametrize("cell", CELLS)
def test_recurrent_training_file_trains_in_litert_with_the_same_losses(cell):
    data = portable(Regressor(cell))
    program = read_model(data)
    used = {n.op for f in program.functions for n in f.nodes}
    assert not [op for op in used if isinstance(get_op(op).tflite, Custom)], "the file must need no custom op"
    assert {"while", "dynamic_update_slice", "gather_nd", "call_once", "assign_variable"} <= used
    ours, theirs = lt.Interpreter(model_content=data), litert.Interpreter(model_content=data)
    steps = regression_batches(seed=11 + CELLS.index(cell))
    assert len({x.shape[1] for x, *_ in steps}) >= 6
    a = [_loss(ours.get_signature_runner("train")(x=x, mask=m, y=y)) for x, _, m, y in steps]
    b = [_loss(theirs.get_signature_runner("train")(x=x, mask=m, y=y)) for x, _, m, y in steps]
    assert np.mean(a[-5:]) < np.mean(a[:5])
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
    x, _, mask, _ = regression_batches(seed=99, steps=1)[0]
    np.testing.assert_allclose(theirs.get_signature_runner("infer")(x=x, mask=mask)["y"],
                               ours.get_signature_runner("infer")(x=x, mask=mask)["y"], rtol=1e-4, atol=1e-5)
    saved = theirs.get_signature_runner("save")()
    for name, value in ours.get_variables().items():
        np.testing.assert_allclose(saved[name], value, rtol=1e-4, atol=1e-5, err_msg=name)


class Tagger(lt.Module):
    """Embedding -> bidirectional GRU over a padded batch of ids -> per-step logits."""

    def __init__(self):
        self.embed = lt.nn.Embedding(12, 6)
        self.rnn = lt.nn.Bidirectional(lt.nn.GRU(8, return_sequences=True, max_sequence_length=9, input_dim=6))
        self.head = lt.nn.Dense(3, input_dim=16)
        self.optimizer = lt.optim.SGD(0.3, momentum=0.9)

    @lt.signature(ids=lt.TensorSpec([None, None], "int32"), tags=lt.TensorSpec([None, None, 3]))
    def train(self, ids, tags):
        logits = self.head(self.rnn(self.embed(ids), mask=lt.ops.not_equal(ids, 0)))
        loss = lt.losses.CategoricalCrossentropy(from_logits=True)(tags, logits)
        self.optimizer.minimize(loss, self.trainable_variables)
        return {"loss": loss}

    @lt.signature(ids=lt.TensorSpec([None, None], "int32"))
    def infer(self, ids):
        return {"logits": self.head(self.rnn(self.embed(ids), mask=lt.ops.not_equal(ids, 0)))}


def tagging_batches(seed=0, steps=15):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        length = int(rng.integers(2, 10))
        ids = rng.integers(1, 12, (6, length)).astype(np.int32)
        for i, n in enumerate(rng.integers(1, length + 1, 6)):
            ids[i, n:] = 0
        out.append((ids, np.eye(3, dtype=np.float32)[ids % 3]))
    return out


def test_embedding_and_bidirectional_gru_train_in_litert_with_the_same_losses():
    data = portable(Tagger())
    assert {"scatter_nd", "gather_nd", "while"} <= {n.op for f in read_model(data).functions for n in f.nodes}
    ours, theirs = lt.Interpreter(model_content=data), litert.Interpreter(model_content=data)
    steps = tagging_batches()
    a = [_loss(ours.get_signature_runner("train")(ids=i, tags=t)) for i, t in steps]
    b = [_loss(theirs.get_signature_runner("train")(ids=i, tags=t)) for i, t in steps]
    assert a[-1] < a[0]
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
    ids = steps[0][0]
    np.testing.assert_allclose(theirs.get_signature_runner("infer")(ids=ids)["logits"],
                               ours.get_signature_runner("infer")(ids=ids)["logits"], rtol=1e-4, atol=1e-5)


def test_litert_refuses_a_sequence_past_the_capacity_and_keeps_its_variables():
    """LiteRT has no transactions; the capacity check (a GATHER at the sequence length) comes before
    any ASSIGN_VARIABLE of the signature, so the failed call leaves LiteRT's variables untouched
    and training goes on as in litetrain's interpreter, which refuses the same call."""
    data = portable(Regressor("LSTM", capacity=6))
    ours, theirs = lt.Interpreter(model_content=data), litert.Interpreter(model_content=data)
    steps = regression_batches(seed=21, steps=6, max_len=6)
    for x, _, m, y in steps[:3]:
        ours.get_signature_runner("train")(x=x, mask=m, y=y)
        theirs.get_signature_runner("train")(x=x, mask=m, y=y)
    before = theirs.get_signature_runner("save")()
    x, _, mask = padded_batch(np.random.default_rng(1), 8, 9, np.float32)
    y = np.zeros((8, 1), np.float32)
    with pytest.raises(RuntimeError, match="gather index out of bounds"):
        theirs.get_signature_runner("train")(x=x, mask=mask, y=y)
    with pytest.raises(lt.ExecutionError, match="longer than max_sequence_length=6"):
        ours.get_signature_runner("train")(x=x, mask=mask, y=y)
    after = theirs.get_signature_runner("save")()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    a = [_loss(ours.get_signature_runner("train")(x=x, mask=m, y=y)) for x, _, m, y in steps[3:]]
    b = [_loss(theirs.get_signature_runner("train")(x=x, mask=m, y=y)) for x, _, m, y in steps[3:]]
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
