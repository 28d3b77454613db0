"""Memory-lean training: blocks whose activations the backward pass recomputes (nn.recompute) train
exactly as without, the forward values die after their last forward use, and the file stays
builtin operators that LiteRT runs."""
from __future__ import annotations

import numpy as np
import pytest

import litetrain as lt
from litetrain.core.registry import Builtin, get_op
from litetrain.models import MobileNetV2, image_classifier
from litetrain.tflite import read_model


class Blocks(lt.Module):
    """Dense + batch norm + dropout blocks; `chosen` are recomputed."""
    def __init__(self, chosen):
        self.blocks = [lt.nn.Sequential([lt.nn.Dense(16, activation="relu", input_dim=8 if k == 0 else 16),
                                         lt.nn.BatchNormalization(), lt.nn.Dropout(0.25)]) for k in range(3)]
        self.head = lt.nn.Dense(3, input_dim=16)
        self.chosen = chosen
        self.optimizer = lt.optim.Adam(0.01)

    @lt.signature(x=lt.TensorSpec([None, 8]), y=lt.TensorSpec([None], "int32"))
    def train(self, x, y):
        h = x
        for k, block in enumerate(self.blocks):
            h = lt.nn.recompute(block, h, training=True) if k in self.chosen else block(h, training=True)
        loss = lt.losses.SparseCategoricalCrossentropy(from_logits=True)(y, self.head(h))
        self.optimizer.minimize(loss, self.trainable_variables)
        return {"loss": loss}


def _run(content, steps=4):
    interp = lt.Interpreter(model_content=content)
    rng = np.random.default_rng(3)
    losses = [interp.get_signature_runner("train")(x=rng.standard_normal((6, 8)).astype(np.float32),
                                                   y=rng.integers(0, 3, 6).astype(np.int32))["loss"]
              for _ in range(steps)]
    return losses, interp.get_variables()


@pytest.mark.parametrize("chosen", [(0,), (1, 2), (0, 1, 2)])
def test_recomputed_blocks_train_bit_for_bit_as_kept_ones(chosen):
    plain, lean = lt.convert(Blocks(()), ["train"]), lt.convert(Blocks(chosen), ["train"])
    (la, va), (lb, vb) = _run(plain), _run(lean)
    np.testing.assert_array_equal(la, lb)  # same dropout masks (random draws are kept, not redrawn)
    for k in va:
        np.testing.assert_array_equal(va[k], vb[k], err_msg=k)
    fa, fb = (read_model(c).functions[read_model(c).signature("train").function] for c in (plain, lean))
    assert len(fb.nodes) > len(fa.nodes)  # the copies of the recomputed blocks survived the cleanup passes


def test_forward_values_of_a_recomputed_block_die_before_the_backward_pass():
    net = MobileNetV2(alpha=0.35, input_shape=(32, 32, 3), num_classes=4, recompute=[3, 4, 5])
    program = lt.trace_program(image_classifier(net, (32, 32, 3), 4, lt.optim.SGD(0.01)), ["train"])
    fn = program.functions[program.signature("train").function]
    recomputed = [k for k, n in enumerate(fn.nodes) if any(fn.tensors[o].name.endswith("/recomputed") for o in n.outputs)]
    assert recomputed
    first_copy = recomputed[0]
    # every value the copies stand for is used only before the first copy (the executor frees it there),
    # but for a block's output that is the next recomputed block's input: the copies start from it
    copied_from = {fn.tensors[o].name[:-len("/recomputed")] for k in recomputed for o in fn.nodes[k].outputs}
    originals = {i for i, t in enumerate(fn.tensors) if t.name in copied_from}
    restart = {k for k, n in enumerate(fn.nodes) if any(fn.tensors[o].name.endswith(("/kept", "/shape"))
                                                        for o in n.outputs)}
    last_use = {i: max(k for k, n in enumerate(fn.nodes) if i in n.inputs and k not in restart) for i in originals
                if any(i in n.inputs for k, n in enumerate(fn.nodes) if k not in restart)}
    assert last_use and all(k < first_copy for k in last_use.values())


def test_a_file_with_recomputed_blocks_is_builtins_only_and_trains_on_litert():
    litert = pytest.importorskip("ai_edge_litert.interpreter", reason="LiteRT is the oracle here")
    content = lt.convert(Blocks((0, 1, 2)), ["train"], portable_checkpoints=True)
    program = read_model(content)
    assert all(isinstance(get_op(n.op).tflite, Builtin) for f in program.functions for n in f.nodes)
    ours = lt.Interpreter(model_content=content).get_signature_runner("train")
    theirs = litert.Interpreter(model_content=content).get_signature_runner("train")
    x, y = np.random.default_rng(0).standard_normal((6, 8)).astype(np.float32), np.array([0, 1, 2, 0, 1, 2], np.int32)
    np.testing.assert_allclose(theirs(x=x, y=y)["loss"], ours(x=x, y=y)["loss"], rtol=1e-5)
