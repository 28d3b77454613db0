"""Hostile model files: mutated real files (seeded, hypothesis, atheris) and hand-crafted attacks
get InvalidModelError at load, or load and then fail their calls with SignatureError or
ExecutionError only, changing no variable; nothing crashes, hangs or allocates without bound.

The default suite runs small versions; the full ones (20,000 files each) are marked slow and
are what scripts/reliability.py reports in RELIABILITY.md."""
from __future__ import annotations

import struct
import time

import numpy as np
import pytest

import litetrain as lt
from litetrain.core.ir import Function, Node, Program, Signature
from litetrain.core.registry import OPS, get_op
from tools.reliability import fuzz, models
from litetrain.tflite import InvalidModelError, read_model, write_model
from litetrain.tflite.schema import schema_module

Model = schema_module("Model").Model


def assert_clean(summary):
    assert summary["unexpected_exceptions"] == 0, summary["unexpected_examples"]
    assert summary["crashes"] == summary["hangs_killed"] == summary["slow_cases"] == 0, summary
    assert summary["failed_calls_that_changed_state"] == 0, summary
    assert summary["memory_errors"] == 0, summary
    assert summary["completed"] == summary["cases"], summary


@pytest.fixture(scope="module")
def corpus():
    return fuzz.Corpus()


def test_seed_files_load_and_every_signature_runs(tmp_path):
    for name, data in models.seed_files().items():
        outcome = fuzz.check_model(data, str(tmp_path))
        assert outcome.loaded and not outcome.call_errors and not outcome.unexpected, (name, outcome)
        assert outcome.calls >= 8


def test_seeded_mutations_in_worker_processes(tmp_path):
    summary = fuzz.run_fuzz(500, workers=2, out_dir=str(tmp_path / "failures"))
    assert_clean(summary)
    assert summary["loaded"] > 20 and summary["calls"] > 100  # the run path is exercised too
    assert summary["worker_peak_rss_mb"] < 1024


def test_hypothesis_mutations(corpus):
    assert_clean(fuzz.hypothesis_fuzz(300, corpus))


@pytest.mark.skipif(not fuzz.atheris_available(), reason="atheris is not installed (pip install atheris)")
def test_atheris_coverage_guided():
    result = fuzz.run_atheris(2000)
    assert not result["crashed"], result["log_tail"]
    assert result["runs"] >= 2000


@pytest.mark.slow
def test_seeded_mutations_full(tmp_path):
    summary = fuzz.run_fuzz(20_000, workers=2, out_dir=str(tmp_path / "failures"))
    assert_clean(summary)


@pytest.mark.slow
def test_hypothesis_mutations_full(corpus):
    assert_clean(fuzz.hypothesis_fuzz(20_000, corpus))


@pytest.mark.slow
@pytest.mark.skipif(not fuzz.atheris_available(), reason="atheris is not installed (pip install atheris)")
def test_atheris_full():
    result = fuzz.run_atheris(20_000)
    assert not result["crashed"], result["log_tail"]


# -- crafted attacks ---------------------------------------------------------------------------------
def _call_chain(links, extra_call=None):
    """Function i calls function links[i] with CALL_ONCE (None: no call); extra_call adds one more
    (caller, callee) edge."""
    functions = []
    for i, callee in enumerate(links):
        fn = Function(f"f{i}")
        if callee is not None:
            fn.nodes.append(Node("call_once", [], [], {"init_subgraph_index": callee}))
        if extra_call and extra_call[0] == i:
            fn.nodes.append(Node("call_once", [], [], {"init_subgraph_index": extra_call[1]}))
        functions.append(fn)
    return Program(functions, [Signature("run", 0, {}, {})])


@pytest.mark.parametrize("links, extra, message", [
    ([0], None, r"cycle: 0 -> 0"),
    ([1, 0], None, r"cycle: 0 -> 1 -> 0"),
    ([1, 2, 3, 1], None, r"cycle: 1 -> 2 -> 3 -> 1"),
    ([1, 2, None], (2, 0), r"cycle: 0 -> 1 -> 2 -> 0"),
    (list(range(1, 41)) + [None], None, r"nests subgraph calls \d+ deep; at most 32"),
])
def test_subgraph_call_cycles_and_deep_chains_are_refused_at_load(links, extra, message):
    with pytest.raises(InvalidModelError, match=message):
        read_model(write_model(_call_chain(links, extra)))


def test_a_shallow_call_graph_with_shared_callees_loads():
    program = _call_chain([1, 2, None], extra_call=(0, 2))  # a diamond, not a cycle
    read_model(write_model(program))


SUBGRAPH_OPS = sorted(name for name, op in OPS.items() if any(k.endswith("subgraph_index") for k in op.attrs))


@pytest.mark.parametrize("op", SUBGRAPH_OPS)
def test_every_op_that_names_subgraphs_is_in_the_cycle_check(op):
    """Any op with a `*_subgraph_index` attribute (CALL_ONCE, WHILE, IF, ...) pointing back at
    its own subgraph is refused at load, whatever its inputs."""
    opdef = get_op(op)
    fn = Function("self_caller")
    lo = opdef.num_inputs[0]
    ins = [fn.add_tensor(f"in{k}", "bool" if k == 0 and op == "if" else "float32", ()) for k in range(lo)]
    fn.inputs = list(ins)
    outs = [fn.add_tensor(f"out{k}", "float32", ()) for k in range(max(lo - (op == "if"), 0))]
    attrs = {k: 0 for k in opdef.attrs if k.endswith("subgraph_index")}
    fn.nodes.append(Node(op, ins, outs, opdef.check_attrs(attrs)))
    program = Program([fn, Function("other")], [Signature("run", 0, {f"in{k}": i for k, i in enumerate(ins)}, {})])
    with pytest.raises(InvalidModelError, match=r"cycle: 0 -> 0"):
        read_model(write_model(program))


def test_vectors_shared_by_thousands_of_tables_are_refused_quickly():
    """A file whose operators all point at one long vector of valid indices would cost
    operators x length checks: the read budget (vectors may add up to 4x the file) refuses it."""
    n_ops, length = 1000, 8000
    fn = Function("f")
    x = fn.add_tensor("x", "float32", (1,))
    outs = [fn.add_tensor(f"y{k}", "float32", (1,)) for k in range(n_ops)]
    fn.nodes = [Node("concatenation", [x], [o], get_op("concatenation").check_attrs({})) for o in outs]
    fn.inputs, fn.outputs = [x], outs[:1]
    data = bytearray(write_model(Program([fn])))
    shared = len(data)  # a vector appended to the file: its length word, then indices of tensor x
    data += struct.pack("<I", length) + bytes(4 * length)
    sg = Model.GetRootAs(bytes(data), 0).Subgraphs(0)
    for k in range(n_ops):
        op = sg.Operators(k)
        field = op._tab.Pos + op._tab.Offset(6)  # Operator.inputs
        struct.pack_into("<I", data, field, shared - field)
    start = time.perf_counter()
    with pytest.raises(InvalidModelError, match="vectors add up to more than 4 times"):
        read_model(bytes(data))
    assert time.perf_counter() - start < 1.0


def test_operators_out_of_order_and_outputs_never_computed_are_refused():
    fn = Function("f")
    x = fn.add_tensor("x", "float32", (2,))
    a = fn.add_tensor("a", "float32", (2,))
    b = fn.add_tensor("b", "float32", (2,))
    fn.nodes = [Node("relu", [a], [b], {}), Node("relu", [x], [a], {})]  # reads a before it exists
    fn.inputs, fn.outputs = [x], [b]
    with pytest.raises(InvalidModelError, match=r"operator 0 \(RELU\): input tensor 1 'a' is read before"):
        read_model(write_model(Program([fn])))
    fn.nodes = [Node("relu", [x], [a], {})]
    with pytest.raises(InvalidModelError, match=r"output tensor 2 'b' is never computed"):
        read_model(write_model(Program([fn])))


def test_signatures_must_name_exactly_their_subgraph_inputs():
    data = models.mlp_file("adam")
    program = read_model(data)
    sig = program.signature("train")
    sig.inputs = {"x": sig.inputs["x"], "y2": sig.inputs["x"]}  # two names, one tensor; y unnamed
    with pytest.raises(InvalidModelError, match=r"signature 0 'train': the inputs .* are not exactly"):
        read_model(write_model(program))
    program = read_model(data)
    sig = program.signature("infer")
    sig.outputs["stray"] = program.functions[sig.function].inputs[0]
    with pytest.raises(InvalidModelError, match=r"signature 1 'infer': outputs \{'stray'"):
        read_model(write_model(program))


def test_an_op_given_more_outputs_than_its_kernel_makes_fails_the_call_cleanly():
    program = read_model(models.mlp_file("adam"))
    fn = program.functions[program.signature("infer").function]
    node = next(n for n in fn.nodes if n.op == "softmax")
    node.outputs.append(fn.add_tensor("phantom", "float32", (None, 3)))
    interp = lt.Interpreter(model_content=write_model(program))
    with pytest.raises(lt.ExecutionError, match="softmax has 2 outputs in the model but made 1"):
        interp.get_signature_runner("infer")(x=models.batch(0)[0])


@pytest.mark.parametrize("op, args", [
    ("fill", [np.array([1 << 20, 1 << 20], np.int32), np.array(1.0, np.float32)]),
    ("broadcast_to", [np.ones(1, np.float32), np.array([1 << 16, 1 << 16], np.int32)]),
    ("pad", [np.ones((2, 2), np.float32), np.array([[1 << 15, 1 << 15], [1 << 15, 1 << 15]], np.int32)]),
    ("one_hot", [np.zeros(1 << 10, np.int32), np.array(1 << 20, np.int32), np.array(1.0, np.float32),
                 np.array(0.0, np.float32)]),
    ("fill", [np.array([-4, 2], np.int32), np.array(1.0, np.float32)]),
])
def test_shapes_read_from_values_cannot_allocate_without_bound(op, args):
    """A constant in a hostile file can ask FILL for a trillion elements: refused before allocating."""
    kernel = get_op(op).kernel
    with pytest.raises(ValueError, match="elements, more than|negative dim"):
        kernel(*args)
