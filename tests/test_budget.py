"""Per-call bounds on hostile files: the while loops of one call share max_loop_iterations (a loop in a
loop cannot multiply it), and the ops that size their output from tensor values share memory_budget,
checked before allocating (run under an address-space limit); a refused call changes no variable."""
from __future__ import annotations

import inspect
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest

import litetrain as lt
from litetrain import ops
from litetrain.core.ir import Function, Node, Program, Signature
from litetrain.core.registry import OPS
from litetrain.runtime import executor as executor_module
from litetrain.runtime.plan import build_plan

MiB, GiB = 1 << 20, 1 << 30
HERE = pathlib.Path(__file__).resolve().parent


def _snapshot(interp):
    return {k: v.tobytes() for k, v in interp.get_variables().items()}


# -- loops: one bound per call ------------------------------------------------------------------------
class Nested(lt.Module):
    """A loop of n iterations whose body runs a loop of n iterations (n * n in all, 10^8 for the
    n = 10^4 below), optionally through an IF branch; `w` is updated before the loops."""

    def __init__(self, through_branch=False):
        self.w = lt.Param(np.zeros(2, np.float32))
        self.through_branch = through_branch

    @lt.signature(n=lt.TensorSpec([], "int32"))
    def run(self, n):
        fb = n.fb
        fb.assign(self.w, ops.add(fb.read(self.w), 1.0))

        def inner(total):
            return ops.while_loop(lambda j, t: ops.less(j, n), lambda j, t: [ops.add(j, 1), ops.add(t, 1)],
                                  [ops.mul(n, 0), total])[1]

        def outer(i, total):
            if self.through_branch:
                total = ops.cond(ops.greater_equal(i, 0), inner, lambda t: ops.add(t, 0), total)
            else:
                total = inner(total)
            return [ops.add(i, 1), total]
        return {"total": ops.while_loop(lambda i, t: ops.less(i, n), outer, [ops.mul(n, 0), ops.mul(n, 0)])[1]}


@pytest.mark.parametrize("through_branch", [False, True])
def test_a_loop_inside_a_loop_is_bounded_for_the_whole_call(through_branch):
    """10^4 x 10^4 iterations, each loop run far under the bound: the call's count of all its loops'
    iterations passes max_loop_iterations after 10^4 and the call fails within a second, undone."""
    data = lt.convert(Nested(through_branch), ["run"])
    assert len(data) < 8000  # a few kilobytes
    interp = lt.Interpreter(model_content=data, max_loop_iterations=10_000)
    run = interp.get_signature_runner("run")
    assert run(n=np.int32(99))["total"] == 99 * 99  # 99 + 99 * 99 = 9,900 iterations in all: within the bound
    before = _snapshot(interp)
    started = time.process_time()
    with pytest.raises(lt.LoopLimitError, match=r"this call's while loops ran 10,000 iterations in all and the loop "
                                                r"with body '.*while_body.*' would run another"):
        run(n=np.int32(10_000))
    assert time.process_time() - started < 2.0
    assert _snapshot(interp) == before
    assert issubclass(lt.LoopLimitError, lt.ExecutionError)
    assert run(n=np.int32(99))["total"] == 99 * 99  # the next call has a count of its own
    assert lt.Interpreter(model_content=data)._executor.max_loop_iterations == 1_000_000


# -- memory: the budget --------------------------------------------------------------------------------
def _hostile(build, **specs):
    """A file whose signature `run` adds 1 to its variable `w`, then runs `build(fb, **inputs)` (the op
    under test, its sizes constants in the file or inputs), and returns the sum of what it made."""
    class Hostile(lt.Module):
        def __init__(self):
            self.w = lt.Param(np.zeros(2, np.float32))

        def run(self, **inputs):
            fb = next(iter(inputs.values())).fb
            fb.assign(self.w, ops.add(fb.read(self.w), 1.0))
            return {"y": ops.reduce_sum(ops.cast(build(fb, **inputs), "float32"))}
    names = ["self"] + list(specs)  # the method takes the inputs by name, as @signature checks
    Hostile.run.__signature__ = inspect.Signature([inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD)
                                                   for n in names])
    Hostile.run = lt.signature(**specs)(Hostile.run)
    return lt.convert(Hostile(), ["run"])


def _c(fb, value, dtype=np.int32):
    return fb.const(np.asarray(value, dtype))


# name -> (op, the file, its inputs, the output the error names)
HOSTILE = {
    "fill": ("FILL", lambda: _hostile(lambda fb, v: fb.emit("fill", [_c(fb, [1 << 14, 1 << 13]), v]),
                                      v=lt.TensorSpec([], "float64")),
             {"v": np.float64(1)}, "float64[16384, 8192]"),
    "fill, dims an input": ("FILL", lambda: _hostile(lambda fb, dims, v: fb.emit("fill", [dims, v]),
                                                     dims=lt.TensorSpec([2], "int32"), v=lt.TensorSpec([], "float64")),
                            {"dims": np.int32([1 << 14, 1 << 13]), "v": np.float64(1)}, "float64[16384, 8192]"),
    "broadcast_to": ("BROADCAST_TO", lambda: _hostile(lambda fb, x: fb.emit("broadcast_to", [x, _c(fb, [1 << 14] * 2)]),
                                                      x=lt.TensorSpec([1])), {"x": np.ones(1, np.float32)},
                     "float32[16384, 16384]"),
    "pad": ("PAD", lambda: _hostile(lambda fb, x: fb.emit("pad", [x, _c(fb, [[0, 1 << 14], [0, 1 << 14]])]),
                                    x=lt.TensorSpec([2, 2])), {"x": np.ones((2, 2), np.float32)},
            "float32[16386, 16386]"),
    "tile": ("TILE", lambda: _hostile(lambda fb, x: fb.emit("tile", [x, _c(fb, [1 << 20])]), x=lt.TensorSpec([1024])),
             {"x": np.ones(1024, np.float32)}, "float32[1073741824]"),
    "range": ("RANGE", lambda: _hostile(lambda fb, s: fb.emit("range", [s, _c(fb, 2 ** 31 - 1), _c(fb, 1)]),
                                        s=lt.TensorSpec([], "int32")), {"s": np.int32(0)}, "int32[2147483647]"),
    "one_hot": ("ONE_HOT", lambda: _hostile(lambda fb, i: fb.emit("one_hot", [i, _c(fb, 1 << 18), _c(fb, 1.0, np.float32),
                                                                              _c(fb, 0.0, np.float32)], {"axis": -1}),
                                            i=lt.TensorSpec([1024], "int32")),
                {"i": np.zeros(1024, np.int32)}, "float32[1024, 262144]"),
    "scatter_nd": ("SCATTER_ND", lambda: _hostile(lambda fb, u: fb.emit("scatter_nd", [_c(fb, [[0]]), u, _c(fb, [1 << 30])]),
                                                  u=lt.TensorSpec([1])), {"u": np.ones(1, np.float32)},
                   "float32[1073741824]"),
    "random_uniform": ("RANDOM_UNIFORM", lambda: _hostile(
        lambda fb, x: ops.add(fb.emit("random_uniform", [_c(fb, [1 << 30])], {"seed": 1, "seed2": 2}), x),
        x=lt.TensorSpec([1])), {"x": np.ones(1, np.float32)}, "float32[1073741824]"),
    "resize_bilinear": ("RESIZE_BILINEAR", lambda: _hostile(
        lambda fb, x: fb.emit("resize_bilinear", [x, _c(fb, [1 << 15, 1 << 15])]), x=lt.TensorSpec([1, 2, 2, 1])),
        {"x": np.ones((1, 2, 2, 1), np.float32)}, "float32[1, 32768, 32768, 1]"),
    "resize_nearest_neighbor": ("RESIZE_NEAREST_NEIGHBOR", lambda: _hostile(
        lambda fb, x: fb.emit("resize_nearest_neighbor", [x, _c(fb, [1 << 15, 1 << 15])]), x=lt.TensorSpec([1, 2, 2, 1])),
        {"x": np.ones((1, 2, 2, 1), np.float32)}, "float32[1, 32768, 32768, 1]"),
    "transpose_conv": ("TRANSPOSE_CONV", lambda: _hostile(
        lambda fb, x: ops.transpose_conv(_c(fb, [1, 1 << 14, 1 << 14, 1]), _c(fb, np.ones((1, 1, 1, 1)), np.float32), x),
        x=lt.TensorSpec([1, 1, 1, 1])), {"x": np.ones((1, 1, 1, 1), np.float32)}, "float32[1, 16384, 16384, 1]"),
    # three FILLs of 100 MiB each under a budget of 256 MiB: each fits alone, the third is refused
    "three fills": ("FILL", lambda: _hostile(lambda fb, v: ops.add(ops.add(*[
        ops.reduce_sum(fb.emit("fill", [_c(fb, [1 << 12, 3200]), ops.add(v, float(k))])) for k in range(2)]),
        ops.reduce_sum(fb.emit("fill", [_c(fb, [1 << 12, 3200]), v]))), v=lt.TensorSpec([], "float64")),
        {"v": np.float64(1)}, "float64[4096, 3200]"),
}
VALUE_SIZED = {"fill", "broadcast_to", "pad", "tile", "range", "one_hot", "scatter_nd", "random_uniform",
               "resize_bilinear", "resize_nearest_neighbor", "transpose_conv"}


def test_every_op_sized_by_values_says_what_it_allocates():
    assert {name for name, op in OPS.items() if op.allocates is not None and "." not in name} >= VALUE_SIZED
    assert VALUE_SIZED <= {op.lower() for op, *_ in HOSTILE.values()}


@pytest.fixture(scope="module")
def refused(tmp_path_factory):
    """Every hostile file run (optimised plan and op by op) in a child process under an address-space
    limit of 768 MiB more than it uses after warming up, with a budget of 256 MiB; one case with the
    default budget."""
    tmp = tmp_path_factory.mktemp("hostile")
    cases = []
    for name, (op, make, inputs, _) in HOSTILE.items():
        path, feeds = tmp / f"{len(cases)}.tflite", tmp / f"{len(cases)}.npz"
        path.write_bytes(make())
        np.savez(feeds, **inputs)
        cases.append({"name": name, "path": str(path), "inputs": str(feeds), "budget": 256 * MiB,
                      "headroom": 768 * MiB})
    cases.append(dict(cases[list(HOSTILE).index("tile")], name="tile, default budget", budget="default"))
    spec = tmp / "cases.json"
    spec.write_text(json.dumps(cases))
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(HERE.parent))
    proc = subprocess.run([sys.executable, str(HERE / "budget_child.py"), str(spec)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {}
    for line in proc.stdout.splitlines():
        r = json.loads(line)
        results[(r["name"], r["optimize"])] = r
    return results


@pytest.mark.parametrize("optimize", [True, False], ids=["planned", "op by op"])
@pytest.mark.parametrize("name", list(HOSTILE) + ["tile, default budget"])
def test_a_value_sized_op_past_the_budget_is_refused_before_allocating(refused, name, optimize):
    """MemoryBudgetError (an ExecutionError) naming the op, its output and the bytes against the budget;
    never a MemoryError under the limit; the variable updated before the op is as it was."""
    op, _, _, output = HOSTILE[name.split(",")[0] if name.startswith("tile") else name]
    r = refused[(name, optimize)]
    assert r["error"] == "MemoryBudgetError", r
    assert op in r["message"] and output in r["message"], r["message"]
    budget = executor_module.DEFAULT_MEMORY_BUDGET if "default" in name else 256 * MiB
    assert f"{budget:,} bytes" in r["message"] and "memory_budget=" in r["message"]
    assert r["unchanged"], r
    assert r["rss_growth"] < 256 * MiB + 64 * MiB, r  # what ran (two FILLs of 100 MiB at most) and no more


def test_the_budget_is_summed_over_a_call_not_per_op(refused):
    for optimize in (True, False):
        message = refused[("three fills", optimize)]["message"]
        assert "would allocate 104,857,600 bytes" in message and "209,715,200 of 268,435,456 bytes taken" in message


def test_the_default_budget_and_its_checks():
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert executor_module.DEFAULT_MEMORY_BUDGET == min(2 * GiB, physical // 2)
    data = HOSTILE["tile"][1]()
    assert lt.Interpreter(model_content=data)._executor.memory_budget == executor_module.DEFAULT_MEMORY_BUDGET
    for bad in (0, -1, 2.5, True, "1GB"):
        with pytest.raises(ValueError, match="memory_budget must be a positive int or None"):
            lt.Interpreter(model_content=data, memory_budget=bad)
    small = HOSTILE["fill"][1]()  # 1 GiB asked: runs with no budget is not tried here; a larger budget lets
    interp = lt.Interpreter(model_content=small, memory_budget=2 * GiB)  # the plan through (checked, not run)
    interp._executor.plan(0, (()))  # the plan's check passes under a budget that covers it
    with pytest.raises(lt.MemoryBudgetError, match=r"node \d+ FILL \[output float64\[16384, 8192\]\] would allocate "
                                                   r"1,073,741,824 bytes, more than the whole memory budget"):
        lt.Interpreter(model_content=small, memory_budget=GiB - 1)._executor.plan(0, (()))


def test_ops_within_the_budget_run_as_before():
    """The same kinds of op at small sizes, values equal to NumPy's."""
    data = _hostile(lambda fb, x: ops.add(ops.add(
        ops.reduce_sum(fb.emit("tile", [x, _c(fb, [3])])),
        ops.reduce_sum(fb.emit("pad", [x, _c(fb, [[1, 2]])]))),
        ops.reduce_sum(fb.emit("broadcast_to", [x, _c(fb, [2, 4])]))), x=lt.TensorSpec([4]))
    x = np.arange(4, dtype=np.float32)
    want = np.tile(x, 3).sum() + np.pad(x, [(1, 2)]).sum() + np.broadcast_to(x, (2, 4)).sum()
    for budget in (1024, None):
        assert lt.Interpreter(model_content=data, memory_budget=budget).get_signature_runner("run")(x=x)["y"] == want
    with pytest.raises(lt.MemoryBudgetError, match=r"node \d+ BROADCAST_TO \[output float32\[2, 4\]\] would "
                                                   r"allocate 32 bytes, over this call's memory budget: 76 of 100"):
        lt.Interpreter(model_content=data, memory_budget=100).get_signature_runner("run")(x=x)


def test_random_uniform_draws_the_same_numbers_in_chunks():
    """The kernel draws its Philox blocks in chunks (bounded working memory): the same words as one draw."""
    from litetrain.ops import random as random_ops
    n = 4 * random_ops.CHUNK_BLOCKS * 2 + 7

    class Ctx:
        executor = type("E", (), {"random_streams": {}})()
        where = "here"
    chunked = random_ops._random_uniform_kernel(Ctx(), np.int32([n]), seed=3, seed2=4)
    words = random_ops.Philox(3, 4).blocks(-(-n // 4)).reshape(-1)[:n]
    assert np.array_equal(chunked, random_ops.uint32_to_unit_float(words))


def test_folding_at_plan_time_is_bounded():
    """A file of many FILLs of constants (each 512 KiB, small enough to fold) cannot make its plans
    hold more than the fold allowance: past it, nodes run at call time, where the budget counts them."""
    fn = Function("f")
    dims = fn.add_tensor("dims", "int32", (1,), np.int32([1 << 16]))
    value = fn.add_tensor("value", "float64", (), np.float64(1))
    outs = [fn.add_tensor(f"y{k}", "float64", (1 << 16,)) for k in range(8)]
    fn.nodes = [Node("fill", [dims, value], [o], {}) for o in outs]
    fn.outputs = outs
    program = Program([fn], [Signature("run", 0, {}, {f"y{k}": o for k, o in enumerate(outs)})])
    plan = build_plan(program, 0, (), fold_bytes=3 * (1 << 19))
    assert plan.folded_bytes == 3 * (1 << 19) and len(plan.steps) == 5
    ex = executor_module.Executor(program)
    ex._fold_left = 1 << 20
    values = ex.run_function(0, [])
    assert ex._plans[0][()].folded_bytes == 1 << 20 and ex._fold_left == 0
    assert all(np.array_equal(v, np.ones(1 << 16)) for v in values)
    ex.memory_budget = 5 * (1 << 19)  # the six FILLs left to run take 6 x 512 KiB
    with pytest.raises(lt.MemoryBudgetError, match="FILL"):
        ex.run_function(0, [])
