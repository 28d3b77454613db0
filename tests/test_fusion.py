"""The planned executor against the op-by-op one (Interpreter(optimize=False)): every fused kernel,
the in-place memory plan and plan-time folding give the op-by-op results on the same inputs, and
never change what they must not (a caller's arrays, a variable's stored array, a failed call)."""
from __future__ import annotations

import numpy as np
import pytest

import litetrain as lt
from litetrain import ops
from litetrain.runtime.steps import FUSED, INPLACE


def pair(content, **kw):
    """The planned interpreter and the op-by-op one on the same file."""
    return lt.Interpreter(model_content=content, **kw), lt.Interpreter(model_content=content, optimize=False, **kw)


def plan_steps(interp, signature):
    """The names of the steps of the signature's latest plan (fused steps as 'fused <pattern>')."""
    index = interp._program.signature(signature).function
    plan = next(reversed(interp._executor._plans[index].values()))
    return [s[5].op for s in plan.steps], [s[1] for s in plan.steps]


def assert_same(a: dict, b: dict, rtol=0.0, atol=0.0):
    assert a.keys() == b.keys()
    for k in a:
        if rtol == 0 and atol == 0:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        else:
            np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=atol, err_msg=k)


# -- activation gradients ------------------------------------------------------------------------------
class Activations(lt.Module):
    def __init__(self, activation):
        self.activation = activation

    @lt.signature(x=lt.TensorSpec([None, 5]), g=lt.TensorSpec([None, 5]))
    def grad(self, x, g):
        y = getattr(ops, self.activation)(x)
        return {"dx": lt.gradients(ops.reduce_sum(ops.mul(y, g)), [x])[0]}


@pytest.mark.parametrize("activation", ["relu", "relu6"])
def test_activation_gradients_are_fused_and_exact(activation):
    fast, slow = pair(lt.convert(Activations(activation), ["grad"]))
    x = np.array([[-1.0, 0.0, 1e-30, 5.9, 6.0], [7.0, np.nan, -0.0, 3.0, np.inf]] * 3, np.float32)
    g = np.array([[1.0, -2.0, np.inf, np.nan, 4.0], [-5.0, 6.0, 7.0, -np.inf, 1.0]] * 3, np.float32)
    before = g.copy()
    a, b = fast.get_signature_runner("grad")(x=x, g=g), slow.get_signature_runner("grad")(x=x, g=g)
    assert_same(a, b)  # bit for bit, NaN and infinities included
    np.testing.assert_array_equal(g, before)  # the caller's array is never a buffer to write into
    names, _ = plan_steps(fast, "grad")
    assert f"fused {activation} gradient" in names and "select_v2" not in names


# -- in-place work and folding -------------------------------------------------------------------------
class Chain(lt.Module):
    """Elementwise chains on a variable, an input and their intermediates, and a loop writing a list."""
    def __init__(self):
        self.w = lt.Param(np.arange(12, dtype=np.float32).reshape(3, 4))

    @lt.signature(x=lt.TensorSpec([None, 4]))
    def step(self, x):
        w = x.fb.read(self.w)
        h = ops.exp(ops.mul(ops.add(x, 1.0), 0.5))    # temporaries: written in place
        u = ops.sub(ops.mul(w, 2.0), ops.sqrt(ops.add(ops.square(w), 1.0)))
        new = ops.add(w, ops.mul(ops.reduce_mean(h), 0.01))
        x.fb.assign(self.w, new)
        return {"h": h, "u": u, "w_read": ops.mul(w, 1.0), "shape": ops.shape_of(h)}


def test_in_place_steps_and_folding_give_the_op_by_op_values_and_spare_what_others_hold():
    fast, slow = pair(lt.convert(Chain(), ["step"]))
    x = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    x_before = x.copy()
    for _ in range(3):
        stored = fast._executor.variables.values.get("w")
        a, b = fast.get_signature_runner("step")(x=x), slow.get_signature_runner("step")(x=x)
        assert_same(a, b)
        if stored is not None:  # a stored array is never written into: the call stored a new one
            assert not stored.flags.writeable
    np.testing.assert_array_equal(x, x_before)
    assert_same(fast.get_variables(), slow.get_variables())
    names, kinds = plan_steps(fast, "step")
    assert INPLACE in kinds and "shape" not in names  # in place where it may be; SHAPE folded
    out = fast.get_signature_runner("step")(x=x)
    slow.get_signature_runner("step")(x=x)
    for value in out.values():
        value[...] = 0  # an output is the caller's: writing into it changes nothing of the model's
    assert_same(fast.get_signature_runner("step")(x=x), slow.get_signature_runner("step")(x=x))


def test_a_failed_call_after_in_place_work_changes_no_variable():
    from tools.reliability.faults import fail_at, snapshot
    fast, _ = pair(lt.convert(Chain(), ["step"]))
    run = fast.get_signature_runner("step")
    x = np.ones((2, 4), np.float32)
    run(x=x)
    before = snapshot(fast)
    names, _ = plan_steps(fast, "step")
    for k in range(len(names)):
        with fail_at(fast, "step", k):
            with pytest.raises(lt.ExecutionError):
                run(x=x)
        assert snapshot(fast) == before, names[k]


def test_plans_follow_the_input_shapes():
    fast, slow = pair(lt.convert(Chain(), ["step"]))
    for n in (1, 5, 1, 3):
        x = np.full((n, 4), 0.5, np.float32)
        assert_same(fast.get_signature_runner("step")(x=x), slow.get_signature_runner("step")(x=x))
    index = fast._program.signature("step").function
    assert len(fast._executor._plans[index]) == 3


def test_a_failure_inside_a_fused_step_names_the_pattern():
    from tools.reliability.faults import fail_at
    fast, _ = pair(lt.convert(Activations("relu"), ["grad"]))
    run = fast.get_signature_runner("grad")
    x = g = np.ones((2, 5), np.float32)
    run(x=x, g=g)
    names, kinds = plan_steps(fast, "grad")
    k = names.index("fused relu gradient")
    assert kinds[k] in (FUSED, INPLACE)
    with fail_at(fast, "grad", k):
        with pytest.raises(lt.ExecutionError, match="fused relu gradient"):
            run(x=x, g=g)


# -- whole training steps: every optimizer ---------------------------------------------------------------
OPTIMIZERS = {
    "sgd": lambda: lt.optim.SGD(0.05), "momentum": lambda: lt.optim.SGD(0.05, momentum=0.9),
    "nesterov": lambda: lt.optim.SGD(0.05, momentum=0.9, nesterov=True), "adam": lambda: lt.optim.Adam(0.01),
    "adamw": lambda: lt.optim.AdamW(0.01), "rmsprop": lambda: lt.optim.RMSProp(0.01, momentum=0.5),
    "adagrad": lambda: lt.optim.Adagrad(0.1), "clipped": lambda: lt.optim.Adam(0.01, clip_global_norm=0.5),
}


class Classifier(lt.Module):
    def __init__(self, optimizer):
        self.net = lt.nn.Sequential([lt.nn.Dense(16, activation="relu", input_dim=12), lt.nn.Dense(4, input_dim=16)])
        self.optimizer = optimizer

    @lt.signature(x=lt.TensorSpec([None, 12]), y=lt.TensorSpec([None], "int32"))
    def train(self, x, y):
        loss = lt.losses.SparseCategoricalCrossentropy(from_logits=True)(y, self.net(x))
        self.optimizer.minimize(loss, self.net.trainable_variables)
        return {"loss": loss}


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("guard", [False, True])
def test_training_steps_are_bit_identical_to_op_by_op(optimizer, guard):
    fast, slow = pair(lt.convert(Classifier(OPTIMIZERS[optimizer]()), ["train"], nonfinite_guard=guard))
    rng = np.random.default_rng(1)
    for step in range(5):
        x = rng.standard_normal((1 + 3 * step, 12)).astype(np.float32)  # the batch changes: several plans
        y = rng.integers(0, 4, len(x)).astype(np.int32)
        if guard and step == 3:
            x[0, 0] = np.nan  # a skipped step, in both
        assert_same(fast.get_signature_runner("train")(x=x, y=y), slow.get_signature_runner("train")(x=x, y=y))
    assert_same(fast.get_variables(), slow.get_variables())
    names, kinds = plan_steps(fast, "train")
    assert any(n.startswith("fused elementwise chain") for n in names) and "fused relu gradient" in names
    assert len(names) < len(plan_steps(slow, "train")[0])
    if guard:  # the guard's IF hands the new or the old values on: one step, no call of a branch
        assert "fused if handing inputs on" in names and "if" not in names


class Branches(lt.Module):
    @lt.signature(p=lt.TensorSpec([], "bool"), a=lt.TensorSpec([None, 3]), b=lt.TensorSpec([None, 3]))
    def pick(self, p, a, b):
        handed = ops.cond(p, lambda u, v: [u, v], lambda u, v: [ops.neg(u), v], [a, b])  # a branch computes
        swapped = ops.cond(p, lambda u, v: [v, u], lambda u, v: [u, v], [b, a])  # both only hand on
        return {"c": handed[0], "d": handed[1], "e": swapped[0], "f": swapped[1]}


def test_an_if_is_one_step_only_when_both_branches_hand_inputs_on():
    fast, slow = pair(lt.convert(Branches(), ["pick"]))
    a, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.array([[np.nan, -0.0, np.inf]] * 2, np.float32)
    for p in (True, False):
        ours = fast.get_signature_runner("pick")(p=np.bool_(p), a=a, b=b)
        assert_same(ours, slow.get_signature_runner("pick")(p=np.bool_(p), a=a, b=b))
        np.testing.assert_array_equal(ours["e"], a if p else b)
        ours["e"][...] = 7  # the caller's copies: neither the inputs nor the next call see it
        np.testing.assert_array_equal(a, np.arange(6, dtype=np.float32).reshape(2, 3))
    names, _ = plan_steps(fast, "pick")
    assert names.count("fused if handing inputs on") == 1 and names.count("if") == 1
