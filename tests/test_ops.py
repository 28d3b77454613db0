"""Every registered op, from the table in op_cases.py: kernel vs an independent reference, inferred
shape/dtype vs the real output, a float64 random-cotangent gradient check (central differences and
PyTorch's autograd), a .tflite write/read round trip, LiteRT on the same file, and bad inputs.

The state and I/O ops are tested at the end with small hand-built programs."""
from __future__ import annotations

import types
import zlib

import numpy as np
import pytest

from litetrain import ops  # registers every op family
from litetrain.ops import tf as tf_ops  # noqa: F401  (and TensorFlow's Flex ops, which files load on demand)
from litetrain.core.autodiff import gradients
from litetrain.core.ir import FLOAT_DTYPES, Signature, dtype_name, numpy_dtype
from litetrain.core.registry import NOT_DIFFERENTIABLE, OPS, Builtin, get_op
from litetrain.runtime import ExecutionError, Executor, VariableStore
from litetrain.core.trace import ProgramBuilder, TraceError

torch = pytest.importorskip("torch", reason="PyTorch is the independent reference of most op cases and of the "
                            "gradient checks (op_cases.py imports it)")

from op_cases import BAD, CASES, STATEFUL_EXEMPT, VALUE_EXEMPT, NumPy, Raises, Torch  # noqa: E402

try:
    from ai_edge_litert import interpreter as litert
except ImportError:  # the LiteRT checks skip; everything else runs
    litert = None

# Inputs that carry an output shape as data: with them at run time the shape is unknown at trace time.
SHAPE_INPUTS = {"reshape": 1, "fill": 0, "range": 0, "tf.BroadcastGradientArgs": 0}
FD_EPS = 1e-6


def _params(cases, litert_marks=False):
    out = []
    for c in cases:
        marks = [pytest.mark.xfail(reason=c.litert, strict=True)] if litert_marks and c.litert else []
        out.append(pytest.param(c, id=c.id, marks=marks))
    return out


# -- building and running one-op programs ----------------------------------------------------------------
def inputs_of(case):
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    return [spec.make(rng) for spec in case.inputs]


def _retype(value, float_dtype):
    """float32 -> float_dtype in arrays and in dtype-valued attributes."""
    if isinstance(value, np.ndarray) and value.dtype == np.float32:
        return value.astype(float_dtype)
    if isinstance(value, str) and value == "float32":
        return dtype_name(float_dtype)
    return value


def one_op(case, arrays, float_dtype="float32", static=False):
    """Trace `case.op` on its inputs (run-time inputs by `fb.input`, constants by `fb.const`).
    Returns (builder, input tensors, output tensor, run-time feeds {name: array}, attrs)."""
    pb = ProgramBuilder()
    fb = pb.function("f")
    tensors, feeds = [], {}
    for k, (spec, arr) in enumerate(zip(case.inputs, arrays)):
        arr = _retype(arr, float_dtype)
        if spec.const:
            tensors.append(fb.const(arr, dtype_name(arr.dtype)))
        else:
            tensors.append(fb.input(f"x{k}", arr.dtype, arr.shape if static else spec.trace_shape))
            feeds[f"x{k}"] = arr
    attrs = {k: _retype(v, float_dtype) for k, v in case.attrs.items()}
    y = fb.emit(case.op, tensors, attrs)
    if isinstance(y, tuple):  # an op with several outputs: the case checks one of them
        y = y[getattr(case, "output", 0)]
    pb.add_function(fb)
    return fb, tensors, y, feeds, attrs


def run(fb, outputs, feeds):
    fb.fn.outputs = [t.index for t in outputs]
    return Executor(fb.pb.program).run_function(0, list(feeds.values()))


def kernel_output(case, *arrays, **attrs):
    """The op's kernel on arrays: the output the case checks (an op may have several)."""
    result = get_op(case.op).kernel(*arrays, **attrs)
    return result[case.output] if isinstance(result, tuple) else result


def reference(case, arrays):
    if isinstance(case.ref, Torch):
        return case.ref.fn(*[torch.from_numpy(np.array(a)) for a in arrays], **case.attrs).detach().numpy()
    return np.asarray(case.ref.fn(*arrays, **case.attrs))


def assert_close(ours, expected, rtol, atol, what):
    ours, expected = np.asarray(ours), np.asarray(expected)
    assert ours.shape == expected.shape, f"{what}: shape {ours.shape}, expected {expected.shape}"
    assert ours.dtype.kind == expected.dtype.kind or {ours.dtype.kind, expected.dtype.kind} <= {"i", "u"}, (
        f"{what}: dtype {ours.dtype}, expected the kind of {expected.dtype}")
    if ours.dtype.kind == "f":
        np.testing.assert_allclose(ours, expected, rtol=rtol, atol=atol, err_msg=what)
    else:
        np.testing.assert_array_equal(ours, expected.astype(ours.dtype), err_msg=what)


# -- 1. kernel vs reference; inferred shape and dtype vs the real output ---------------------------------
@pytest.mark.parametrize("case", _params(CASES))
def test_kernel_matches_reference(case):
    arrays = inputs_of(case)
    fb, _, y, feeds, _ = one_op(case, arrays)
    assert [n.op for n in fb.fn.nodes] == [case.op], "the op must run as a node, not be folded at trace time"
    out, = run(fb, [y], feeds)
    assert_close(out, reference(case, arrays), case.rtol, case.atol, case.id)


@pytest.mark.parametrize("case", _params(CASES))
def test_inferred_shape_and_dtype_match_the_output(case):
    arrays = inputs_of(case)
    for static in (False, True):
        fb, _, y, feeds, _ = one_op(case, arrays, static=static)
        out, = run(fb, [y], feeds)
        info = y.info
        assert out.dtype == numpy_dtype(info.dtype), f"inferred {info.dtype}, kernel gave {out.dtype}"
        assert len(info.shape) == out.ndim and all(d is None or d == o for d, o in zip(info.shape, out.shape)), (
            f"inferred {info.shape} (static={static}), kernel gave {out.shape}")
        k = SHAPE_INPUTS.get(case.op)
        data_shaped = k is not None and k < len(case.inputs) and not case.inputs[k].const
        if static and not data_shaped:
            assert info.shape == out.shape, f"all input shapes known: inferred {info.shape}, got {out.shape}"


# -- 2. gradients: float64, random cotangent, central differences and torch.autograd ---------------------
def _differentiable(case):
    return [k for k, s in enumerate(case.inputs) if not s.const and s.dtype in FLOAT_DTYPES]


def _loss_and_cotangent(case, arrays64, attrs64, fb, y):
    """sum(op(x) * c) with a random constant cotangent c shaped like the real output."""
    y_np = np.asarray(kernel_output(case, *arrays64, **attrs64))
    c = np.random.default_rng(zlib.crc32(case.id.encode()) + 1).standard_normal(y_np.shape)
    yf = y if y.dtype == "float64" else ops.cast(y, "float64")
    return ops.reduce_sum(ops.mul(yf, fb.const(c, "float64"))), c


def _finite_differences(case, arrays64, attrs64, c, k):
    def f(args):
        return float(np.sum(np.asarray(kernel_output(case, *args, **attrs64), dtype=np.float64) * c))

    x = arrays64[k]
    grad = np.zeros(x.shape, np.float64)
    for j in np.ndindex(*x.shape):
        up, down = [a.copy() for a in arrays64], [a.copy() for a in arrays64]
        up[k][j] += FD_EPS
        down[k][j] -= FD_EPS
        grad[j] = (f(up) - f(down)) / (2 * FD_EPS)
    return grad


def _torch_gradients(case, arrays64, attrs64, c, wrt):
    ts = [torch.from_numpy(np.array(a)) for a in arrays64]
    for k in wrt:
        ts[k].requires_grad_(True)
    out = case.ref.fn(*ts, **attrs64)
    if not out.requires_grad:  # e.g. a cast to int: no path back
        return [np.zeros(arrays64[k].shape) for k in wrt]
    loss = (out.to(torch.float64) * torch.tensor(c)).sum()
    grads = torch.autograd.grad(loss, [ts[k] for k in wrt], allow_unused=True)
    return [np.zeros(arrays64[k].shape) if g is None else g.numpy() for k, g in zip(wrt, grads)]


@pytest.mark.parametrize("case", _params(CASES))
def test_gradient(case):
    opdef = get_op(case.op)
    wrt = _differentiable(case)
    if opdef.vjp == NOT_DIFFERENTIABLE:
        if wrt:  # autodiff passes over it: the gradient through it is zero, not an error (in the case's
            arrays = inputs_of(case)  # own dtypes: such an op may take float32 only, as TensorFlow's do)
            fb, tensors, y, feeds, attrs = one_op(case, arrays)
            loss, _ = _loss_and_cotangent(case, arrays, attrs, fb, y)
            zeros = run(fb, gradients(loss, [tensors[k] for k in wrt]), feeds)
            assert all(not z.any() for z in zeros)
        pytest.skip(f"{case.op} is registered NOT_DIFFERENTIABLE")
    arrays64 = [_retype(a, np.float64) for a in inputs_of(case)]
    fb, tensors, y, feeds, attrs64 = one_op(case, arrays64)
    loss, c = _loss_and_cotangent(case, arrays64, attrs64, fb, y)
    if isinstance(case.grad, str):
        pytest.skip(case.grad)
    if not wrt:
        pytest.skip("no float run-time input to differentiate")
    if isinstance(case.grad, Raises):
        with pytest.raises(TraceError, match=case.grad.match):
            gradients(loss, [tensors[k] for k in wrt])
        return
    grads = gradients(loss, [tensors[k] for k in wrt])
    for k, g in zip(wrt, grads):
        spec = case.inputs[k]
        assert g.dtype == "float64"
        assert len(g.shape) == len(spec.trace_shape) and all(
            d is None or t is None or d == t for d, t in zip(g.shape, spec.trace_shape)), (
            f"gradient of input {k} inferred {g.shape}, input traced {spec.trace_shape}")
    ours = run(fb, [loss, *grads], feeds)[1:]
    for k, g in zip(wrt, ours):
        assert g.shape == arrays64[k].shape and g.dtype == np.float64, f"input {k}: gradient {g.dtype}{g.shape}"
        numeric = _finite_differences(case, arrays64, attrs64, c, k)
        np.testing.assert_allclose(g, numeric, rtol=1e-5, atol=1e-6,
                                   err_msg=f"{case.id}: d/d input {k} vs central differences")
    if isinstance(case.ref, Torch):
        for k, g, tg in zip(wrt, ours, _torch_gradients(case, arrays64, attrs64, c, wrt)):
            np.testing.assert_allclose(g, tg, rtol=1e-7, atol=1e-9,
                                       err_msg=f"{case.id}: d/d input {k} vs torch.autograd")


# -- 3. the .tflite file: write/read round trip, and Google's LiteRT on the same file ------------------------
def _file_for(fb, y, feeds):
    from litetrain.tflite import write_model
    fb.fn.outputs = [y.index]
    names = dict(zip(feeds, fb.fn.inputs))
    fb.pb.program.signatures.append(Signature("serving_default", 0, names, {"y": y.index}))
    return write_model(fb.pb.program)


def _plain(attrs):
    return {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in attrs.items()}


@pytest.mark.parametrize("case", _params(CASES))
def test_tflite_round_trip_is_bit_exact(case):
    from litetrain.tflite import read_model
    arrays = inputs_of(case)
    fb, _, y, feeds, _ = one_op(case, arrays)
    data = _file_for(fb, y, feeds)
    back = read_model(data)
    node, = fb.fn.nodes
    back_node, = back.functions[0].nodes
    assert back_node.op == node.op and _plain(back_node.attrs) == _plain(node.attrs)
    for a, b in zip(fb.fn.tensors, back.functions[0].tensors):
        assert (a.dtype, tuple(a.shape)) == (b.dtype, tuple(b.shape)), f"tensor {a.name}: {b}"
    ours, = Executor(fb.pb.program).run_function(0, list(feeds.values()))
    theirs, = Executor(back).run_function(0, list(feeds.values()))
    assert (theirs.dtype, theirs.shape) == (ours.dtype, ours.shape)
    assert theirs.tobytes() == ours.tobytes()


# AUTO is what users run (optimized kernels, XNNPACK); BUILTIN_REF is TFLite's reference kernels,
# the closest thing to a written definition of each op's semantics.
RESOLVERS = ["AUTO", "BUILTIN_REF"]


def _litert_run(data, feeds, resolver="AUTO"):
    kind = getattr(litert.OpResolverType, resolver)
    interp = litert.Interpreter(model_content=data, experimental_op_resolver_type=kind)
    return interp.get_signature_runner("serving_default")(**feeds)


@pytest.mark.skipif(litert is None, reason="ai-edge-litert is the TFLite oracle; not installed")
@pytest.mark.parametrize("resolver", RESOLVERS)
@pytest.mark.parametrize("case", _params(CASES, litert_marks=True))
def test_litert_agrees(case, resolver):
    if not isinstance(get_op(case.op).tflite, Builtin):
        pytest.skip(f"{case.op} is a custom op; LiteRT has no kernel for it")
    arrays = inputs_of(case)
    fb, _, y, feeds, _ = one_op(case, arrays)
    data = _file_for(fb, y, feeds)
    ours, = Executor(fb.pb.program).run_function(0, list(feeds.values()))
    theirs = np.asarray(_litert_run(data, feeds, resolver)["y"])
    assert theirs.dtype == ours.dtype, f"LiteRT gave {theirs.dtype}, we give {ours.dtype}"
    assert_close(ours, theirs, 1e-5, 1e-6, f"{case.id}: ours vs LiteRT")


@pytest.mark.skipif(litert is None, reason="ai-edge-litert is the TFLite oracle; not installed")
@pytest.mark.parametrize("case", _params([c for c in CASES if c.grad is True and _differentiable(c)
                                          and get_op(c.op).vjp != NOT_DIFFERENTIABLE]))
@pytest.mark.parametrize("resolver", RESOLVERS)
def test_gradient_graph_runs_in_litert(case, resolver):
    """The backward ops a rule emits are builtins LiteRT runs with the same results (float32)."""
    if not isinstance(get_op(case.op).tflite, Builtin):
        pytest.skip(f"{case.op} is a custom op; LiteRT cannot run the forward op the gradient graph starts from")
    arrays = inputs_of(case)
    fb, tensors, y, feeds, attrs = one_op(case, arrays)
    c = np.random.default_rng(1).standard_normal(np.asarray(kernel_output(case, *arrays, **attrs)).shape)
    yf = y if y.dtype == "float32" else ops.cast(y, "float32")
    loss = ops.reduce_sum(ops.mul(yf, fb.const(c, "float32")))
    grads = gradients(loss, [tensors[k] for k in _differentiable(case)])
    out = ops.concat([ops.reshape(g, [-1]) for g in grads], 0)
    data = _file_for(fb, out, feeds)
    ours, = Executor(fb.pb.program).run_function(0, list(feeds.values()))
    theirs = np.asarray(_litert_run(data, feeds, resolver)["y"])
    np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-6)


# -- 4. bad inputs are refused at trace time, naming the op ---------------------------------------------------
@pytest.mark.parametrize("bad", [pytest.param(b, id=b.id) for b in BAD])
def test_bad_input_is_refused_at_trace_time(bad):
    arrays = inputs_of(bad)
    with pytest.raises(TraceError, match=bad.match) as err:
        one_op(bad, arrays)
    assert f"op '{bad.op}'" in str(err.value)


# -- 5. the registry: every op has every kind of check ---------------------------------------------------------
def test_every_registered_op_is_covered_by_the_table():
    problems = []
    known = set(OPS)
    for name in sorted({c.op for c in CASES} | {b.op for b in BAD} | set(STATEFUL_EXEMPT) | set(VALUE_EXEMPT)):
        if name not in known:
            problems.append(f"{name}: in the table but not registered")
    for name, opdef in OPS.items():
        if name in VALUE_EXEMPT:  # its inputs or outputs are not arrays: tested where it runs
            continue
        if name in STATEFUL_EXEMPT:
            if not opdef.stateful:
                problems.append(f"{name}: exempt as stateful but not registered stateful")
            continue
        cases = [c for c in CASES if c.op == name]
        if not cases:
            problems.append(f"{name}: no case")
        if any(not isinstance(c.ref, (Torch, NumPy)) for c in cases):
            problems.append(f"{name}: a case without a reference")
        if opdef.vjp != NOT_DIFFERENTIABLE and not any(c.grad is True and _differentiable(c) for c in cases):
            problems.append(f"{name}: differentiable, but no case checks its gradient")
        if not any(b.op == name for b in BAD):
            problems.append(f"{name}: no bad-input case")
        problems += _file_mapping_problems(name, opdef)
    ids = [c.id for c in CASES] + [b.id for b in BAD]
    problems += [f"{i}: duplicate case id" for i in sorted({i for i in ids if ids.count(i) > 1})]
    assert not problems, "\n".join(problems)


def _file_mapping_problems(name, opdef):
    """A Builtin must name an operator, an options table and fields that the schema has."""
    from litetrain.tflite.schema import camel, enum_members, schema_module
    spec = opdef.tflite
    if not isinstance(spec, Builtin):
        return []
    if spec.code not in enum_members("BuiltinOperator"):
        return [f"{name}: TensorFlow Lite has no builtin operator {spec.code}"]
    if spec.options is None:
        return [f"{name}: attribute {a} has no options table" for a in spec.fields]
    try:
        mod = schema_module(spec.options)
    except ImportError:
        return [f"{name}: the schema has no options table {spec.options}"]
    return [f"{name}: {spec.options} has no field for attribute {a}" for a in spec.fields
            if not hasattr(mod, f"{spec.options}Add{camel(a)}")] + [
            f"{name}: attribute {a} is not written to the file" for a in opdef.attrs if a not in spec.fields]


def test_ones_like_is_written_with_builtins():
    """TensorFlow Lite has no ONES_LIKE: ones_like is a constant, or FILL(SHAPE(x)) for unknown dims."""
    pb = ProgramBuilder()
    fb = pb.function("f")
    x = fb.input("x", "float32", (None, 3))
    ones, small = ops.ones_like(x), ops.ones_like(fb.input("i", "int32", (2,)))
    assert ones.shape == (None, 3) and ones.dtype == "float32"
    assert small.dtype == "int32" and np.array_equal(small.constant, [1, 1])
    assert [n.op for n in fb.fn.nodes] == ["shape", "fill"]
    pb.add_function(fb)
    feeds = {"x": np.zeros((4, 3), np.float32), "i": np.zeros(2, np.int32)}
    out, = run(fb, [ones], feeds)
    assert out.dtype == np.float32 and np.array_equal(out, np.ones((4, 3)))
    if litert is not None:
        np.testing.assert_array_equal(_litert_run(_file_for(fb, ones, feeds), feeds)["y"], out)


# -- 6. the state and I/O ops, in small hand-built programs -----------------------------------------------------
def _state(path, value):
    """The least a FunctionBuilder needs to see a Param: a path, a value, trainable and kind."""
    return types.SimpleNamespace(_litetrain_state=True, path=path, value=np.asarray(value),
                                 trainable=True, kind="param")


def _stateful_program():
    """main(x): call_once(init); v += x; returns (v before, v after). init: v = [[1, 2, 3]] * 2."""
    pb = ProgramBuilder()
    v = _state("layer/v", np.zeros((2, 3), np.float32))
    main = pb.function("main")
    main.emit("call_once", [], {"init_subgraph_index": 1})
    x = main.input("x", "float32", (None, 3))
    before = main.read(v)
    after = main.emit("add", [before, x])
    main.assign(v, after)
    main.fn.outputs = [before.index, after.index]
    init = pb.function("init")
    init.assign(v, init.const(np.tile(np.float32([1, 2, 3]), (2, 1))))
    pb.add_function(main)
    pb.program.init_function = pb.add_function(init)
    pb.program.signatures.append(Signature("step", 0, {"x": x.index},
                                           {"before": before.index, "after": after.index}))
    return pb, v


def test_variables_read_assign_and_call_once_runs_its_function_once():
    pb, _ = _stateful_program()
    assert {n.op for n in pb.program.functions[0].nodes} == {"call_once", "var_handle", "read_variable",
                                                            "add", "assign_variable"}
    store = VariableStore()
    ex = Executor(pb.program, store)
    x = np.full((2, 3), 0.5, np.float32)
    start = np.tile(np.float32([1, 2, 3]), (2, 1))
    for step in range(3):
        before, after = ex.run_function(0, [x])
        np.testing.assert_array_equal(before, start + 0.5 * step)  # init ran once, not every call
        np.testing.assert_array_equal(after, start + 0.5 * (step + 1))
    assert store.initialized == {1}
    np.testing.assert_array_equal(store.read("layer/v"), start + 1.5)
    assert not store.read("layer/v").flags.writeable, "a variable owns its value"


def test_stateful_program_round_trips_through_tflite():
    from litetrain.tflite import read_model, write_model
    pb, _ = _stateful_program()
    back = read_model(write_model(pb.program))
    assert [n.op for n in back.functions[0].nodes] == [n.op for n in pb.program.functions[0].nodes]
    x = np.ones((1, 3), np.float32)
    ours, theirs = Executor(pb.program), Executor(back)
    for _ in range(2):
        for a, b in zip(ours.run_function(0, [x]), theirs.run_function(0, [x])):
            np.testing.assert_array_equal(a, b)
    if litert is not None:
        runner = litert.Interpreter(model_content=write_model(pb.program)).get_signature_runner("step")
        runner(x=x)
        np.testing.assert_array_equal(runner(x=x)["before"], ours.variables.read("layer/v") - 1)


def test_state_ops_refuse_bad_inputs_at_trace_time():
    pb = ProgramBuilder()
    fb = pb.function("f")
    v = _state("v", np.zeros((2, 3), np.float32))
    h = fb.emit("var_handle", [], {"shared_name": "v"})
    with pytest.raises(TraceError, match="op 'read_variable'.*variable it reads"):
        fb.emit("read_variable", [h])
    with pytest.raises(TraceError, match="cannot assign int32 to variable 'v'"):
        fb.assign(v, fb.input("i", "int32", (2, 3)))
    with pytest.raises(TraceError, match=r"shape \[2, 4\] to variable 'v'"):
        fb.assign(v, fb.input("w", "float32", (2, 4)))
    with pytest.raises(TraceError, match="op 'call_once' takes 0..0 inputs"):
        fb.emit("call_once", [h])
    with pytest.raises(TypeError, match="variable 'v' is float32"):
        store = VariableStore()
        store.assign("v", np.zeros(2, np.float32))
        store.assign("v", np.zeros(2, np.int32))


def _checkpoint_program(shapes):
    """save(path) writes the variables `shapes` names; restore(path) assigns them from the file."""
    pb = ProgramBuilder()
    states = [_state(name, np.zeros(shape, np.float32)) for name, shape in shapes.items()]
    save = pb.function("save")
    path = save.input("path", "string", ())
    save.emit("save_checkpoint", [path, *[save.read(v) for v in states]], {"names": tuple(shapes)})
    restore = pb.function("restore")
    rpath = restore.input("path", "string", ())
    values = restore.emit("restore_checkpoint", [rpath], {
        "names": tuple(shapes), "dtypes": ("float32",) * len(shapes), "shapes": tuple(shapes.values())})
    for v, value in zip(states, values if isinstance(values, tuple) else (values,)):
        restore.assign(v, value)
    pb.add_function(save)
    pb.add_function(restore)
    return pb


def _save_and_restore(tmp_path, shapes):
    store = VariableStore()
    ex = Executor(_checkpoint_program(shapes).program, store)
    path = np.array(str(tmp_path / "ckpt.safetensors"), dtype=object)
    saved = {name: np.arange(np.prod(shape), dtype=np.float32).reshape(shape) + k
             for k, (name, shape) in enumerate(shapes.items())}
    for name, value in saved.items():
        store.assign(name, value)
    ex.run_function(0, [path])
    for name, shape in shapes.items():
        store.assign(name, np.zeros(shape, np.float32))
    ex.run_function(1, [path])
    for name, value in saved.items():
        np.testing.assert_array_equal(store.read(name), value, err_msg=name)
    return store, path


def test_save_and_restore_checkpoint(tmp_path):
    store, path = _save_and_restore(tmp_path, {"enc/w": (2, 3), "enc/b": (3,)})
    # a checkpoint of another shape is refused by name, and the failed call changes nothing
    other = Executor(_checkpoint_program({"enc/w": (3, 2), "enc/b": (3,)}).program, store)
    store.assign("enc/w", np.zeros((3, 2), np.float32))
    before = dict(store.values)
    with pytest.raises(ExecutionError, match="enc/w"):
        other.run_transaction(1, [path])
    assert store.values.keys() == before.keys() and all(store.values[k] is v for k, v in before.items())


def test_save_and_restore_checkpoint_of_one_variable(tmp_path):
    _save_and_restore(tmp_path, {"enc/v": (2, 3)})


def test_the_split_stack_and_sum_builders_emit_their_ops():
    """ops/api.py's split, unstack, stack and add_n (what a layer writes) give NumPy's results."""
    from litetrain.ops import api
    pb = ProgramBuilder()
    fb = pb.function("f")
    xt = fb.input("x", "float32", (None, 6))
    parts = api.split(xt, 3, axis=1)
    rows = api.unstack(api.transpose(xt, [1, 0]))
    outs = [*parts, api.stack(parts, axis=0), api.add_n(parts), rows[4]]
    assert [n.op for n in fb.fn.nodes] == ["split", "transpose", "unpack", "pack", "add_n"]
    with pytest.raises(ValueError, match="unstack needs the size"):
        api.unstack(xt)
    pb.add_function(fb)
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    got = run(fb, outs, {"x": x})
    want = [*np.split(x, 3, axis=1), np.stack(np.split(x, 3, axis=1)), sum(np.split(x, 3, axis=1)), x[:, 4]]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
