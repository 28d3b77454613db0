"""Recurrent loops in the planned executor against the op-by-op one (Interpreter(optimize=False)): the
fused cell steps and their gradients (runtime/fusion/recurrent.py), the fused tensor-list writes,
accumulations and capacity checks (runtime/fusion/lists.py) and the while loop's direct condition
give the op-by-op losses and weights bit for bit, for every cell, masked or not, reversed,
bidirectional, with sequences or the last state, in float32 and float64, as the sequence length
changes from call to call."""
from __future__ import annotations

import numpy as np
import pytest

import litetrain as lt
from litetrain import ops
from litetrain.ops.tensor_list import check_at_most, list_read, list_write

FEATURES, UNITS, CAPACITY = 3, 5, 9
CELLS = ["SimpleRNN", "LSTM", "GRU"]
LIST_STEPS = {"fused list write", "fused list accumulate", "fused capacity check"}
CELL_STEPS = {"LSTM": {"fused lstm step", "fused lstm step gradient"},
              "GRU": {"fused gru step", "fused gru step gradient"},
              "SimpleRNN": {"fused simple rnn step", "fused simple rnn step gradient"}}


def pair(content):
    """The planned interpreter and the op-by-op one on the same file."""
    return lt.Interpreter(model_content=content), lt.Interpreter(model_content=content, optimize=False)


def step_names(interp) -> set:
    """The names of the steps of every plan the interpreter made (fused steps as 'fused <pattern>')."""
    return {s[5].op for plans in interp._executor._plans.values() for plan in plans.values() for s in plan.steps}


def assert_same(a: dict, b: dict):
    """Equal bit for bit (NaN where NaN)."""
    assert a.keys() == b.keys()
    for k, v in a.items():
        np.testing.assert_array_equal(v, b[k], err_msg=k)


def trainer(cell, masked=True, sequences=False, bidirectional=False, go_backwards=False, dtype="float32",
            gate_blocks=None):
    """A recurrent layer (or a Bidirectional pair) -> mean squared error against y, trained by Adam (in
    float64, whose optimizers litetrain does not make, the gradients are returned instead)."""
    width = UNITS * (2 if bidirectional else 1)

    class Trainer(lt.Module):
        """The model."""

        def __init__(self):
            """The layer and Adam."""
            layer = getattr(lt.nn, cell)(UNITS, return_sequences=sequences, go_backwards=go_backwards,
                                         max_sequence_length=CAPACITY, input_dim=FEATURES, dtype=dtype)
            if gate_blocks is not None:
                layer.gate_blocks = gate_blocks
            self.rnn = lt.nn.Bidirectional(layer) if bidirectional else layer
            self.optimizer = lt.optim.Adam(0.05)

        @lt.signature(x=lt.TensorSpec([None, None, FEATURES], dtype), mask=lt.TensorSpec([None, None], "bool"),
                      y=lt.TensorSpec([None, width], dtype))
        def train(self, x, mask, y):
            """One step (in float64 the gradients, returned)."""
            out = self.rnn(x, mask=mask if masked else None)
            if sequences:
                out = ops.reduce_mean(out, axis=1)
            loss = ops.reduce_mean(ops.square(ops.sub(out, y)))
            params = [p for p in self.trainable_variables if p.path.startswith("rnn")]
            if dtype == "float64":
                return {"loss": loss, **{p.path: g for p, g in zip(params, lt.gradients(loss, params))}}
            self.optimizer.minimize(loss, params)
            return {"loss": loss}
    return Trainer(), width


def batch(rng, n, steps, dtype, width, scale=1.0):
    """Inputs of `n` sequences of `steps` (the first one full, the others of random lengths)."""
    x = (rng.standard_normal((n, steps, FEATURES)) * scale).astype(dtype)
    lengths = rng.integers(1, steps + 1, n)
    lengths[0] = steps
    return {"x": x, "mask": np.arange(steps)[None] < lengths[:, None], "y": rng.standard_normal((n, width)).astype(dtype)}


def train_both(model, width, steps=(6, 3, 9, 6), dtype="float32", scale=1.0, edit=None):
    """A few Adam steps on both interpreters (sequence lengths changing): the losses, the caller's arrays
    and at the end every variable agree bit for bit. Returns the planned interpreter."""
    fast, slow = pair(lt.convert(model, ["train"]))
    rng = np.random.default_rng(len(steps))
    for t in steps:
        inputs = batch(rng, 4, t, dtype, width, scale)
        if edit is not None:
            edit(inputs)
        kept = {k: v.copy() for k, v in inputs.items()}
        assert_same(fast.get_signature_runner("train")(**inputs), slow.get_signature_runner("train")(**inputs))
        assert_same(inputs, kept)  # the caller's arrays are never written into
    assert_same(fast.get_variables(), slow.get_variables())
    return fast


# -- every cell, every layout ----------------------------------------------------------------------------
@pytest.mark.parametrize("masked", [True, False], ids=["masked", "unmasked"])
@pytest.mark.parametrize("cell", CELLS)
def test_training_is_the_op_by_op_training_bit_for_bit(cell, masked):
    """And the cell's steps, the list steps and the capacity check are fused."""
    fast = train_both(*trainer(cell, masked=masked))
    names = step_names(fast)
    assert CELL_STEPS[cell] <= names and LIST_STEPS <= names, sorted(names)


@pytest.mark.parametrize("layout", ["reversed", "bidirectional", "sequences", "bidirectional-sequences"])
@pytest.mark.parametrize("cell", CELLS)
def test_reversed_bidirectional_and_sequence_layers_train_as_op_by_op(cell, layout):
    """go_backwards, Bidirectional and return_sequences (whose gradient recomputes h' for a shape)."""
    model, width = trainer(cell, go_backwards=layout == "reversed", bidirectional="bidirectional" in layout,
                           sequences="sequences" in layout)
    assert CELL_STEPS[cell] <= step_names(train_both(model, width, steps=(5, 9, 2)))


@pytest.mark.parametrize("cell", CELLS)
def test_float64_training_is_the_op_by_op_training(cell):
    """float64 gradients, bit for bit, and fused."""
    model, width = trainer(cell, dtype="float64", bidirectional=True)
    assert CELL_STEPS[cell] <= step_names(train_both(model, width, dtype="float64"))


@pytest.mark.parametrize("blocks", [(1, 0, 2), (2, 0, 1)])
def test_a_gru_with_its_gates_in_another_order_trains_as_op_by_op(blocks):
    """PyTorch's GRU keeps its gates as (r, z, n): (1, 0, 2), which is fused too; other orders run op by op."""
    if not hasattr(lt.nn.GRU, "gate_blocks"):
        pytest.skip("this GRU has one gate order")
    model, width = trainer("GRU", gate_blocks=blocks)
    names = step_names(train_both(model, width))
    assert (CELL_STEPS["GRU"] <= names) == (blocks == (1, 0, 2))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("cell", CELLS)
def test_saturated_gates_and_non_finite_inputs_give_the_op_by_op_values(cell):
    """Gates at 0 and 1 (inputs of 1e4), zeros of either sign, and a NaN and an infinity in padded steps,
    which the mask keeps out of the state but not out of the gradient's arithmetic."""
    def poison(inputs):
        """NaN and an infinity in padded steps, -0 in a real one."""
        inputs["mask"][1:, -1] = False
        inputs["x"][1:, -1, 0] = np.nan
        inputs["x"][1:, -1, 1] = np.inf
        inputs["x"][0, 0, :] = -0.0
    model, width = trainer(cell)
    train_both(model, width, steps=(6, 4), scale=1e4, edit=poison)


# -- the list steps on their own -------------------------------------------------------------------------
class Lists(lt.Module):
    """A list written at a run-time index (clamped into the list as DYNAMIC_UPDATE_SLICE clamps it), read
    back, and a counter stepped under a capacity check."""

    @lt.signature(lst=lt.TensorSpec([4, 2, 3]), value=lt.TensorSpec([2, 3]), index=lt.TensorSpec([], "int32"),
                  count=lt.TensorSpec([], "int32"))
    def write(self, lst, value, index, count):
        """The writes, a read, the count's step."""
        written = list_write(ops.add(lst, 0.0), index, value)  # a list of the call's own
        return {"list": written, "caller": list_write(lst, index, value), "slot": list_read(written, 1),
                "next": check_at_most(ops.add(count, 1), 5, "the count ran past five")}


def test_list_writes_clamp_the_index_and_spare_the_callers_list():
    """Indices out of the list are clamped as op by op; a count past the capacity fails as op by op."""
    fast, slow = pair(lt.convert(Lists(), ["write"]))
    rng = np.random.default_rng(0)
    for index, count in ((0, 0), (3, 4), (-7, 2), (2, -1), (99, 3)):
        inputs = {"lst": rng.standard_normal((4, 2, 3)).astype(np.float32), "index": np.int32(index),
                  "value": rng.standard_normal((2, 3)).astype(np.float32), "count": np.int32(count)}
        before = inputs["lst"].copy()
        assert_same(fast.get_signature_runner("write")(**inputs), slow.get_signature_runner("write")(**inputs))
        np.testing.assert_array_equal(inputs["lst"], before)
    assert {"fused list write", "fused capacity check"} <= step_names(fast)
    for interp in (fast, slow):
        with pytest.raises(lt.ExecutionError, match="capacity check: the count ran past five"):
            interp.get_signature_runner("write")(**{**inputs, "count": np.int32(5)})


def test_a_loop_past_its_capacity_fails_naming_the_check_and_changes_nothing():
    """A sequence longer than the capacity: the error names it, no variable moves."""
    model, width = trainer("LSTM")
    fast = lt.Interpreter(model_content=lt.convert(model, ["train"]))
    train = fast.get_signature_runner("train")
    rng = np.random.default_rng(1)
    train(**batch(rng, 3, 4, "float32", width))
    before = fast.get_variables()
    with pytest.raises(lt.ExecutionError, match=f"max_sequence_length={CAPACITY}"):
        train(**batch(rng, 3, CAPACITY + 1, "float32", width))
    assert_same(fast.get_variables(), before)
