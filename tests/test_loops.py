"""while_loop and cond: loop bodies, conditions and branches as functions of the program, written as
TFLite WHILE/IF with subgraph indices and read back; the interpreter's WHILE/IF; gradients through
loops (backpropagation through time with tensor lists) and branches against PyTorch in float64;
LiteRT on the same files; the capacity error; bad inputs."""
from __future__ import annotations

import numpy as np
import pytest

import litetrain as lt
from litetrain import ops
from litetrain.core.passes import renumber_functions
from litetrain.tflite import read_model, write_model

torch = pytest.importorskip("torch", reason="PyTorch is the reference for gradients through loops")

try:
    from ai_edge_litert import interpreter as litert
except ImportError:
    litert = None
needs_litert = pytest.mark.skipif(litert is None, reason="ai-edge-litert is the TFLite oracle; not installed")

CAPACITY = 8


F = lt.TensorSpec([None, 3])
I = lt.TensorSpec([], "int32")


class Loop(lt.Module):
    """h <- tanh(h * w + x * b) repeated n times (n given at run time); a Param read inside the body,
    a tensor of the signature captured by it."""

    def __init__(self, dtype="float64", maximum_iterations=CAPACITY):
        rng = np.random.default_rng(0)
        self.w = lt.Param(rng.uniform(0.5, 1.5, 3), dtype=dtype)
        self.b = lt.Param(rng.uniform(-1, 1, 3), dtype=dtype)
        self.maximum_iterations = maximum_iterations
        spec = lt.TensorSpec([None, 3], dtype)
        n = lt.TensorSpec([], "int32")
        type(self).grads = lt.signature(x=spec, n=n)(Loop._grads)
        type(self).train = lt.signature(x=spec, n=n)(Loop._train)
        type(self).get = lt.signature()(Loop._get)

    def forward(self, x, n):
        def body(t, h):
            return t + 1, ops.tanh(ops.add(ops.mul(h, self.w), ops.mul(x, self.b)))
        _, h = ops.while_loop(lambda t, h: ops.less(t, n), body, [0, x], maximum_iterations=self.maximum_iterations)
        return ops.reduce_sum(ops.square(h))

    def _grads(self, x, n):
        loss = self.forward(x, n)
        gw, gb, gx = lt.gradients(loss, [self.w, self.b, x])
        return {"loss": loss, "w": gw, "b": gb, "x": gx}

    def _train(self, x, n):
        loss = self.forward(x, n)
        for p, g in zip([self.w, self.b], lt.gradients(loss, [self.w, self.b])):  # plain SGD
            builder = g.fb
            builder.assign(p, ops.sub(builder.read(p), ops.mul(g, 0.1)))
        return {"loss": loss}

    def _get(self):
        return {"w": self.w, "b": self.b}


def torch_loop(w, b, x, n):
    tw, tb, tx = (torch.tensor(np.asarray(a, np.float64), requires_grad=True) for a in (w, b, x))
    h = tx
    for _ in range(n):
        h = torch.tanh(h * tw + tx * tb)
    loss = (h ** 2).sum()
    loss.backward()
    return loss.item(), {"w": tw.grad, "b": tb.grad, "x": tx.grad}


def _grad(g, like):
    return np.zeros(np.shape(like)) if g is None else g.numpy()


def test_loop_with_a_runtime_trip_count_and_its_gradient_match_pytorch():
    model = Loop()
    w, b = model.w.value, model.b.value
    runner = lt.Interpreter(model_content=lt.convert(model, ["grads"])).get_signature_runner("grads")
    x = np.random.default_rng(1).standard_normal((2, 3))
    for n in (0, 1, 4, 8, 3):  # the trip count changes from call to call of one signature
        out = runner(x=x, n=np.int32(n))
        loss, grads = torch_loop(w, b, x, n)
        np.testing.assert_allclose(out["loss"], loss, rtol=1e-12)
        for name in ("w", "b", "x"):
            np.testing.assert_allclose(out[name], _grad(grads[name], out[name]), rtol=1e-10, atol=1e-13,
                                       err_msg=f"d/d{name} at n={n}")


def test_loop_functions_follow_the_signatures_and_survive_the_file():
    """Signatures' functions come first in the file; loop bodies, conditions and their gradients
    after; every subgraph index points at the right function, also after reading the file back."""
    model = Loop()
    program = lt.trace_program(model, ["grads", "train", "get"])
    names = [f.name for f in program.functions]
    assert names[:3] == ["grads", "train", "get"] and names[-1] == "init"
    called = {}
    for f in program.functions:
        for node in f.nodes:
            for key, value in node.attrs.items():
                if key.endswith("subgraph_index"):
                    called.setdefault(key, []).append(program.functions[value].name)
    assert all(n.startswith(("grads/", "train/")) and "_body" in n for n in called["body_subgraph_index"])
    assert all("_cond" in n for n in called["cond_subgraph_index"])
    assert len(called["body_subgraph_index"]) == 4  # forward and backward loop in each of two signatures
    back = read_model(write_model(program))
    assert [f.name for f in back.functions] == names
    assert [[(n.op, n.attrs) for n in f.nodes] for f in back.functions] == \
           [[(n.op, n.attrs) for n in f.nodes] for f in program.functions]
    x = np.random.default_rng(2).standard_normal((3, 3))
    a = lt.Interpreter.from_program(program).get_signature_runner("grads")(x=x, n=np.int32(5))
    b = lt.Interpreter.from_program(back).get_signature_runner("grads")(x=x, n=np.int32(5))
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_renumbering_functions_re_points_every_reference():
    program = lt.trace_program(Loop(), ["grads"])
    x = np.random.default_rng(3).standard_normal((2, 3))
    before = lt.Interpreter.from_program(program).get_signature_runner("grads")(x=x, n=np.int32(3))
    n = len(program.functions)
    renumber_functions(program, [0] + list(range(n - 1, 0, -1)))  # reverse all but the main one
    assert program.functions[1].name == "init" and program.init_function == 1
    after = lt.Interpreter.from_program(program).get_signature_runner("grads")(x=x, n=np.int32(3))
    assert all(np.array_equal(before[k], after[k]) for k in before)
    with pytest.raises(ValueError, match="permutation"):
        renumber_functions(program, [0, 0])


def test_a_loop_past_its_capacity_is_an_error_that_changes_no_variable():
    model = Loop(dtype="float32")
    interpreter = lt.Interpreter(model_content=lt.convert(model, ["train", "get"]))
    train = interpreter.get_signature_runner("train")
    x = np.random.default_rng(4).standard_normal((2, 3)).astype(np.float32)
    train(x=x, n=np.int32(3))
    before = interpreter.get_variables()
    with pytest.raises(lt.ExecutionError, match=f"maximum_iterations={CAPACITY}") as err:
        train(x=x, n=np.int32(CAPACITY + 1))
    assert "capacity check" in str(err.value) and f"index {CAPACITY + 1}" in str(err.value)
    after = interpreter.get_variables()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    train(x=x, n=np.int32(CAPACITY))  # the capacity itself is allowed


@needs_litert
def test_litert_runs_the_loop_and_its_gradient_and_refuses_the_same_overflow():
    """LiteRT runs the same file (WHILE with subgraph indices, tensor lists as DYNAMIC_UPDATE_SLICE
    and GATHER_ND) with the same results. Past the capacity its GATHER refuses the index too, so
    the call fails there before any ASSIGN_VARIABLE: LiteRT has no transactions, but the check
    comes before every assignment of a signature, so its variables stay as they were as well."""
    model = Loop(dtype="float32")
    data = lt.convert(model, ["grads", "train", "get"])
    ours, theirs = lt.Interpreter(model_content=data), litert.Interpreter(model_content=data)
    x = np.random.default_rng(5).standard_normal((4, 3)).astype(np.float32)
    for n in (0, 2, 7, 5):
        a = ours.get_signature_runner("grads")(x=x, n=np.int32(n))
        b = theirs.get_signature_runner("grads")(x=x, n=np.int32(n))
        for k in a:
            np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-6, err_msg=f"{k} at n={n}")
    for n in (3, 6):
        a = ours.get_signature_runner("train")(x=x, n=np.int32(n))["loss"]
        b = theirs.get_signature_runner("train")(x=x, n=np.int32(n))["loss"]
        np.testing.assert_allclose(b, a, rtol=1e-5)
    before = theirs.get_signature_runner("get")()
    with pytest.raises(RuntimeError, match="gather index out of bounds"):
        theirs.get_signature_runner("train")(x=x, n=np.int32(CAPACITY + 3))
    after = theirs.get_signature_runner("get")()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    np.testing.assert_allclose(after["w"], ours.get_variables()["w"], rtol=1e-6)


# -- cond ---------------------------------------------------------------------------------------------------
class Branches(lt.Module):
    """y = x * a (read inside the true branch) if flag else sin(x) + b * x; also an IF inside a
    loop body, so the loop's gradient differentiates a copy of the IF."""

    def __init__(self, dtype="float64"):
        rng = np.random.default_rng(6)
        self.a = lt.Param(rng.uniform(-1, 1, 3), dtype=dtype)
        self.b = lt.Param(rng.uniform(-1, 1, 3), dtype=dtype)
        spec = lt.TensorSpec([None, 3], dtype)
        type(self).grads = lt.signature(x=spec, flag=lt.TensorSpec([], "bool"))(Branches._grads)
        type(self).loop_grads = lt.signature(x=spec, n=lt.TensorSpec([], "int32"))(Branches._loop_grads)

    def branch(self, flag, x):
        return ops.cond(flag, lambda x: ops.mul(x, self.a), lambda x: ops.add(ops.sin(x), ops.mul(x, self.b)), [x])

    def _grads(self, x, flag):
        y = self.branch(flag, x)
        loss = ops.reduce_sum(ops.mul(y, y))
        ga, gb, gx = lt.gradients(loss, [self.a, self.b, x])
        return {"y": y, "a": ga, "b": gb, "x": gx}

    def _loop_grads(self, x, n):
        def body(t, h):
            even = ops.equal(ops.sub(t, ops.mul(ops.div(t, 2), 2)), 0)
            return t + 1, ops.tanh(self.branch(even, h))
        _, h = ops.while_loop(lambda t, h: ops.less(t, n), body, [0, x], maximum_iterations=6)
        loss = ops.reduce_sum(h)
        ga, gb, gx = lt.gradients(loss, [self.a, self.b, x])
        return {"loss": loss, "a": ga, "b": gb, "x": gx}


def torch_branches(a, b, x, flag=None, n=None):
    ta, tb, tx = (torch.tensor(np.asarray(v, np.float64), requires_grad=True) for v in (a, b, x))
    branch = lambda f, h: h * ta if f else torch.sin(h) + h * tb  # noqa: E731
    if n is None:
        y = branch(flag, tx)
        (y * y).sum().backward()
        out = {"y": y.detach().numpy()}
    else:
        h = tx
        for t in range(n):
            h = torch.tanh(branch(t % 2 == 0, h))
        h.sum().backward()
        out = {"loss": h.sum().item()}
    return {**out, **{k: _grad(v.grad, v) for k, v in (("a", ta), ("b", tb), ("x", tx))}}


def test_cond_and_its_gradient_match_pytorch_on_both_branches():
    model = Branches()
    runner = lt.Interpreter(model_content=lt.convert(model, ["grads"])).get_signature_runner("grads")
    x = np.random.default_rng(7).standard_normal((2, 3))
    for flag in (True, False):
        out = runner(x=x, flag=np.bool_(flag))
        ref = torch_branches(model.a.value, model.b.value, x, flag=flag)
        for k in ("y", "a", "b", "x"):
            np.testing.assert_allclose(out[k], ref[k], rtol=1e-12, atol=1e-14, err_msg=f"{k} flag={flag}")


def test_gradient_through_a_cond_inside_a_loop_matches_pytorch():
    model = Branches()
    runner = lt.Interpreter(model_content=lt.convert(model, ["loop_grads"])).get_signature_runner("loop_grads")
    x = np.random.default_rng(8).standard_normal((2, 3))
    for n in (0, 1, 4, 5):
        out = runner(x=x, n=np.int32(n))
        ref = torch_branches(model.a.value, model.b.value, x, n=n)
        for k in ("loss", "a", "b", "x"):
            np.testing.assert_allclose(out[k], ref[k], rtol=1e-11, atol=1e-13, err_msg=f"{k} n={n}")


@needs_litert
def test_litert_runs_cond_and_its_gradient():
    model = Branches(dtype="float32")
    data = lt.convert(model, ["grads", "loop_grads"])
    ours, theirs = lt.Interpreter(model_content=data), litert.Interpreter(model_content=data)
    assert {"if", "while"} <= {n.op for f in read_model(data).functions for n in f.nodes}
    x = np.random.default_rng(9).standard_normal((3, 3)).astype(np.float32)
    for flag in (True, False):
        a = ours.get_signature_runner("grads")(x=x, flag=np.bool_(flag))
        b = theirs.get_signature_runner("grads")(x=x, flag=np.bool_(flag))
        for k in a:
            np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-6)
    a = ours.get_signature_runner("loop_grads")(x=x, n=np.int32(5))
    b = theirs.get_signature_runner("loop_grads")(x=x, n=np.int32(5))
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-6)


# -- nested loops and tensor lists ------------------------------------------------------------------------
def test_gradient_through_nested_loops_matches_pytorch():
    """An inner loop in the outer body: the backward body recomputes a copy of the inner loop (with
    its own functions) and differentiates that."""
    class Nested(lt.Module):
        def __init__(self):
            self.w = lt.Param(np.array([0.9, -0.7, 1.1]), dtype="float64")

        @lt.signature(x=lt.TensorSpec([None, 3], "float64"), n=lt.TensorSpec([], "int32"),
                      m=lt.TensorSpec([], "int32"))
        def grads(self, x, n, m):
            def inner(s, h):
                return s + 1, ops.sin(ops.mul(h, self.w))

            def outer(t, h):
                _, h = ops.while_loop(lambda s, h: ops.less(s, m), inner, [0, h], maximum_iterations=4)
                return t + 1, ops.add(h, x)
            _, h = ops.while_loop(lambda t, h: ops.less(t, n), outer, [0, x], maximum_iterations=5)
            loss = ops.reduce_sum(ops.square(h))
            gw, gx = lt.gradients(loss, [self.w, x])
            return {"loss": loss, "w": gw, "x": gx}

    model = Nested()
    runner = lt.Interpreter(model_content=lt.convert(model, ["grads"])).get_signature_runner("grads")
    x = np.random.default_rng(10).standard_normal((2, 3))
    for n, m in ((0, 2), (3, 2), (2, 4), (5, 1)):
        tw, tx = torch.tensor(model.w.value, requires_grad=True), torch.tensor(x, requires_grad=True)
        h = tx
        for _ in range(n):
            for _ in range(m):
                h = torch.sin(h * tw)
            h = h + tx
        loss = (h ** 2).sum()
        loss.backward()
        out = runner(x=x, n=np.int32(n), m=np.int32(m))
        np.testing.assert_allclose(out["loss"], loss.item(), rtol=1e-12)
        np.testing.assert_allclose(out["w"], _grad(tw.grad, out["w"]), rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(out["x"], tx.grad.numpy(), rtol=1e-10, atol=1e-13)


def test_tensor_lists_round_trip_and_refuse_a_sequence_past_capacity():
    class Lists(lt.Module):
        @lt.signature(x=lt.TensorSpec([None, 2], "float64"), cotangent=lt.TensorSpec([None, 2], "float64"))
        def run(self, x, cotangent):
            lst = ops.list_from_tensor(x, 5)
            length = ops.gather(ops.shape_of(x), 0)
            third = ops.list_read(lst, 2)
            back = ops.list_stack(ops.list_write(lst, 0, ops.mul(third, 10.0)), length)
            g, = lt.gradients(ops.reduce_sum(ops.mul(back, cotangent)), [x])
            return {"list": lst, "back": back, "g": g}

    runner = lt.Interpreter(model_content=lt.convert(Lists(), ["run"])).get_signature_runner("run")
    x = np.arange(8, dtype=np.float64).reshape(4, 2)
    c = np.random.default_rng(11).standard_normal((4, 2))
    out = runner(x=x, cotangent=c)
    np.testing.assert_array_equal(out["list"], np.concatenate([x, np.zeros((1, 2))]))
    np.testing.assert_array_equal(out["back"], np.concatenate([x[2:3] * 10, x[1:]]))
    tx = torch.tensor(x, requires_grad=True)
    (torch.cat([tx[2:3] * 10, tx[1:]]) * torch.from_numpy(c)).sum().backward()
    np.testing.assert_allclose(out["g"], tx.grad.numpy(), rtol=1e-14)
    with pytest.raises(lt.ExecutionError, match="longer than the capacity 5"):
        runner(x=np.zeros((6, 2)), cotangent=np.zeros((6, 2)))


def test_a_loop_variable_that_changes_shape_runs_but_cannot_be_kept_in_a_list():
    class Growing(lt.Module):
        @lt.signature(x=lt.TensorSpec([1, 2], "float64"), n=lt.TensorSpec([], "int32"))
        def grow(self, x, n):
            _, y = ops.while_loop(lambda t, y: ops.less(t, n), lambda t, y: (t + 1, ops.concat([y, ops.mul(y, 2.0)], 0)),
                                  [0, x], maximum_iterations=4)
            return {"y": y}

        @lt.signature(x=lt.TensorSpec([1, 2], "float64"), n=lt.TensorSpec([], "int32"))
        def grads(self, x, n):
            y = self.grow(x, n)["y"]
            return {"g": lt.gradients(ops.reduce_sum(y), [x])[0]}

    runner = lt.Interpreter(model_content=lt.convert(Growing(), ["grow"])).get_signature_runner("grow")
    x = np.array([[1.0, -2.0]])
    y = runner(x=x, n=np.int32(3))["y"]
    expected = x
    for _ in range(3):
        expected = np.concatenate([expected, expected * 2])
    np.testing.assert_array_equal(y, expected)
    with pytest.raises(lt.TraceError, match="changes shape between iterations"):
        lt.convert(Growing(), ["grads"])


# -- bad inputs ---------------------------------------------------------------------------------------------
def _trace(build):
    class M(lt.Module):
        @lt.signature(x=F, n=I)
        def f(self, x, n):
            return build(x, n)
    return lt.trace_program(M(), ["f"])




@pytest.mark.parametrize("build, match", [
    (lambda x, n: {"y": ops.cond(ops.reduce_sum(x), lambda x: x, lambda x: x, [x])}, "predicate must be one bool"),
    (lambda x, n: {"y": ops.cond(ops.less(n, 2), lambda x: x, lambda x: ops.cast(x, "int32"), [x])},
     "float32.*in the true branch and int32"),
    (lambda x, n: {"y": ops.cond(ops.less(n, 2), lambda x: x, lambda x: (x, x), [x])}, "return 1 and 2 values"),
    (lambda x, n: {"y": ops.while_loop(lambda h: ops.less(n, 2), lambda h: (h, h), [x])}, "returned 2 values for 1"),
    (lambda x, n: {"y": ops.while_loop(lambda h: ops.less(n, 2), lambda h: ops.cast(h, "int32"), [x])},
     "float32 before the body and int32"),
    (lambda x, n: {"y": ops.while_loop(lambda h: ops.reduce_sum(h), lambda h: h, [x])}, "condition must give one bool"),
    (lambda x, n: {"y": ops.while_loop(lambda h: ops.less(n, 2), lambda h: ops.reduce_sum(h, [1]), [x])}, "changes rank"),
    (lambda x, n: {"y": ops.while_loop(lambda h: ops.less(n, 2), lambda h: h, [x], maximum_iterations=-1)}, ">= 0"),
    (lambda x, n: {"g": lt.gradients(ops.reduce_sum(ops.while_loop(lambda h: ops.less(n, 2), ops.sin, x)), [x])[0]},
     "needs a capacity"),
], ids=["float-predicate", "branch-dtypes", "branch-arity", "body-arity", "body-dtype", "float-condition",
        "body-rank", "negative-maximum", "no-capacity"])
def test_bad_loops_and_conds_are_refused_at_trace_time(build, match):
    with pytest.raises(lt.TraceError, match=match):
        _trace(build)


def test_assigning_a_variable_inside_a_body_is_refused():
    class M(lt.Module):
        def __init__(self):
            self.v = lt.Buffer(np.zeros(3, np.float32))

        @lt.signature(x=F)
        def f(self, x):
            def body(h):
                builder = h.fb
                builder.assign(self.v, ops.reduce_sum(h, [0]))
                return h
            return {"y": ops.while_loop(lambda h: ops.less(ops.reduce_sum(h), 0.0), body, [x])}

    with pytest.raises(lt.TraceError, match="cannot assign variable 'v' inside a loop body"):
        lt.convert(M(), ["f"])


def test_a_file_whose_loop_names_an_ill_fitting_body_gets_a_clear_error():
    program = lt.trace_program(Loop(dtype="float32"), ["grads"])
    body = next(f for f in program.functions if f.name == "grads/while_body")
    body.outputs = body.outputs[:-1]  # one loop variable fewer than the WHILE passes
    runner = lt.Interpreter(model_content=write_model(program)).get_signature_runner("grads")
    with pytest.raises(lt.ExecutionError, match=r"while body subgraph \d+ \(grads/while_body\) takes"):
        runner(x=np.zeros((1, 3), np.float32), n=np.int32(1))


# -- a loop read from a file is differentiated like a traced one ----------------------------------------------
STEPS, FEATURES, HIDDEN, CLASSES = 5, 3, 4, 3
_RNG = np.random.default_rng(42)
W1, B1 = _RNG.standard_normal((HIDDEN, FEATURES)) * 0.5, _RNG.standard_normal(HIDDEN) * 0.1
U = _RNG.standard_normal((HIDDEN, HIDDEN)) * 0.5
W2, B2 = _RNG.standard_normal((CLASSES, HIDDEN)) * 0.5, _RNG.standard_normal(CLASSES) * 0.1


def _recurrent_logits(x, w1, b1, w2, b2):
    """Dense over every step, then a tanh recurrence h = tanh(h U + y_t) in a WHILE loop, then Dense."""
    y = ops.reshape(ops.fully_connected(ops.reshape(x, [-1, FEATURES]), w1, b1), [-1, STEPS, HIDDEN])
    steps = ops.transpose(y, [1, 0, 2])  # [STEPS, batch, HIDDEN]
    h0 = ops.mul(ops.gather(steps, 0), 0.0)
    _, h = ops.while_loop(lambda t, h: ops.less(t, STEPS),
                          lambda t, h: (t + 1, ops.tanh(ops.add(ops.matmul(h, U.astype(np.float32)),
                                                                ops.gather(steps, t)))),
                          [0, h0], maximum_iterations=STEPS)
    return ops.fully_connected(h, w2, b2)


class InferenceRNN(lt.Module):
    """Weights as constants: an inference file, as a converter would write one."""
    @lt.signature(x=lt.TensorSpec([None, STEPS, FEATURES]))
    def infer(self, x):
        return {"logits": _recurrent_logits(x, *(a.astype(np.float32) for a in (W1, B1, W2, B2)))}


class TracedRNN(lt.Module):
    """The same network traced with its weights as Params: the reference the file's gradients must match."""
    def __init__(self):
        self.w1, self.b1, self.w2, self.b2 = (lt.Param(a.astype(np.float32)) for a in (W1, B1, W2, B2))
        self.loss = lt.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.optimizer = lt.optim.SGD(0.1)

    @lt.signature(x=lt.TensorSpec([None, STEPS, FEATURES]), labels=lt.TensorSpec([None], "int32"))
    def train(self, x, labels):
        loss = self.loss(labels, _recurrent_logits(x, self.w1, self.b1, self.w2, self.b2))
        self.optimizer.minimize(loss, [self.w1, self.b1, self.w2, self.b2])
        return {"loss": loss}

    @lt.signature(x=lt.TensorSpec([None, STEPS, FEATURES]))
    def input_gradient(self, x):
        loss = ops.reduce_sum(ops.square(_recurrent_logits(x, self.w1, self.b1, self.w2, self.b2)))
        return {"loss": loss, "dx": lt.gradients(loss, [x])[0]}


def test_a_while_loop_read_from_a_file_is_differentiated_like_the_traced_one():
    """The loop of an inference file (no trace of it survives but the file) is replayed into a new
    function and differentiated from the program alone: its input gradient equals the traced model's,
    and make_trainable trains through it exactly as the traced model trains."""
    from litetrain.core.autodiff import gradients
    from litetrain.core.subgraphs import copy_into
    from litetrain.core.trace import ProgramBuilder
    from litetrain.frontend.convert import trace_program

    file_program = read_model(lt.convert(InferenceRNN(), ["infer"]))
    serving = file_program.functions[file_program.signature("infer").function]
    assert any(n.op == "while" for n in serving.nodes) and not file_program.variables

    class Replayed(lt.Module):
        @lt.signature(x=lt.TensorSpec([None, STEPS, FEATURES]))
        def input_gradient(self, x):
            env = copy_into(x.fb, serving, {serving.inputs[0]: x}, functions=file_program.functions)
            loss = ops.reduce_sum(ops.square(env[serving.outputs[0]]))
            return {"loss": loss, "dx": gradients(loss, [x])[0]}

    replayed = lt.Interpreter(model_content=write_model(trace_program(Replayed(), ["input_gradient"])))
    traced = lt.Interpreter(model_content=lt.convert(TracedRNN(), ["input_gradient"]))
    x = np.random.default_rng(7).standard_normal((2, STEPS, FEATURES)).astype(np.float32)
    a = replayed.get_signature_runner("input_gradient")(x=x)
    b = traced.get_signature_runner("input_gradient")(x=x)
    assert np.abs(b["dx"]).min() > 0  # every input step reaches the loss through the loop
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-6)
    np.testing.assert_allclose(a["dx"], b["dx"], rtol=1e-5, atol=1e-7)

    # and PyTorch's autograd agrees with both
    tx = torch.tensor(x, requires_grad=True)
    y = (tx.reshape(-1, FEATURES) @ torch.tensor(W1.T, dtype=torch.float32) + torch.tensor(B1, dtype=torch.float32))
    y = y.reshape(-1, STEPS, HIDDEN)
    h = torch.zeros(2, HIDDEN)
    for t in range(STEPS):
        h = torch.tanh(h @ torch.tensor(U, dtype=torch.float32) + y[:, t])
    logits = h @ torch.tensor(W2.T, dtype=torch.float32) + torch.tensor(B2, dtype=torch.float32)
    (logits ** 2).sum().backward()
    np.testing.assert_allclose(a["dx"], tx.grad.numpy(), rtol=1e-4, atol=1e-6)

    # make_trainable on the inference file trains its Dense layers through the loop as the traced model does
    trainable = lt.Interpreter(model_content=lt.make_trainable(lt.convert(InferenceRNN(), ["infer"]), trainable="all",
                                                               optimizer="sgd", learning_rate=0.1))
    reference = lt.Interpreter(model_content=lt.convert(TracedRNN(), ["train"]))
    labels = np.array([0, 2], np.int32)
    for step in range(3):
        xs = np.random.default_rng(step).standard_normal((2, STEPS, FEATURES)).astype(np.float32)
        la = trainable.get_signature_runner("train")(x=xs, labels=labels)["loss"]
        lb = reference.get_signature_runner("train")(x=xs, labels=labels)["loss"]
        np.testing.assert_allclose(la, lb, rtol=1e-5)
    ours = {k: v for k, v in trainable.get_variables().items() if not k.startswith("optimizer")}
    theirs = reference.get_variables()
    for name, value in ours.items():
        match = [v for k, v in theirs.items() if not k.startswith("optimizer") and v.shape == value.shape]
        assert any(np.allclose(value, m, rtol=1e-5, atol=1e-6) for m in match), name
    assert not np.allclose(ours[next(k for k in ours if ours[k].shape == W1.shape)], W1)  # it did train
