"""Calls that fail at any point change nothing; bad steps are skipped; threads never corrupt state;
nothing on a load path executes code from data."""
from __future__ import annotations

import ast
import pathlib
import threading

import numpy as np
import pytest

import litetrain as lt
from tools.reliability import faults, models
from tools.reliability.faults import fail_at, snapshot
from litetrain.runtime import NonFiniteError
from litetrain.tflite import UnsupportedOpError

OPTIMIZERS = sorted(models.OPTIMIZERS)


@pytest.fixture(scope="module")
def files():
    return {name: models.mlp_file(name, guard=True) for name in OPTIMIZERS}


def trained(data: bytes, steps=2, **options):
    interp = lt.Interpreter(model_content=data, **options)
    train = interp.get_signature_runner("train")
    for step in range(steps):
        train(**dict(zip("xy", models.batch(step))))
    return interp


# -- failure injection ----------------------------------------------------------------------------
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_a_fault_at_any_node_of_train_leaves_every_variable_bit_identical(files, optimizer):
    """Inject an exception into each node of the train signature in turn (the variable reads, the
    forward and backward pass, between the optimizer's assignments, the last assignment)."""
    interp = trained(files[optimizer])
    ops = faults.node_ops(interp, "train")
    assigns = [i for i, op in enumerate(ops) if op == "assign_variable"]
    assert len(assigns) >= 5 and ops[0] == "call_once"
    train = interp.get_signature_runner("train")
    x, y = models.batch(99)
    before = snapshot(interp)
    for index in range(len(ops)):
        with fail_at(interp, "train", index):
            with pytest.raises(lt.ExecutionError, match=f"InjectedFault: injected into node {index}"):
                train(x=x, y=y)
        assert snapshot(interp) == before, f"node {index} ({ops[index]})"
    # a fault right after each assignment, then the same step succeeds as if nothing had happened
    reference = trained(files[optimizer])
    reference.get_signature_runner("train")(x=x, y=y)
    for index in assigns[:-1]:
        with fail_at(interp, "train", index + 1):
            with pytest.raises(lt.ExecutionError):
                train(x=x, y=y)
    train(x=x, y=y)
    assert snapshot(interp) == snapshot(reference)


@pytest.mark.parametrize("exception", [KeyboardInterrupt, MemoryError, RecursionError])
def test_interrupts_and_resource_errors_roll_back_too(files, exception):
    interp = trained(files["adam"])
    ops = faults.node_ops(interp, "train")
    before = snapshot(interp)
    middle = [i for i, op in enumerate(ops) if op == "assign_variable"][3] + 1
    with fail_at(interp, "train", middle, exception()):
        with pytest.raises((exception, lt.ExecutionError)):
            interp.get_signature_runner("train")(**dict(zip("xy", models.batch(5))))
    assert snapshot(interp) == before


def test_a_fault_in_the_init_function_leaves_the_model_uninitialised_and_retryable(files):
    interp = lt.Interpreter(model_content=files["adam"])
    init = interp._program.init_function
    middle = len(faults.plan_of(interp, init).steps) // 2
    with fail_at(interp, init, middle):
        with pytest.raises(lt.ExecutionError, match="InjectedFault"):
            interp.get_signature_runner("infer")(x=models.batch(0)[0])
    assert snapshot(interp) == {"values": {}, "initialized": []}
    fresh = lt.Interpreter(model_content=files["adam"])
    x = models.batch(0)[0]
    np.testing.assert_array_equal(interp.get_signature_runner("infer")(x=x)["probabilities"],
                                  fresh.get_signature_runner("infer")(x=x)["probabilities"])


def test_a_failed_save_keeps_the_previous_checkpoint(files, tmp_path, monkeypatch):
    interp = trained(files["adam"])
    path = str(tmp_path / "ckpt.safetensors")
    interp.get_signature_runner("save")(checkpoint_path=path)
    good = pathlib.Path(path).read_bytes()
    trained_more = trained(files["adam"], steps=4)
    import os
    from litetrain.ops import checkpoint

    def full_disk(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(checkpoint.os, "fsync", full_disk)
    before = snapshot(trained_more)
    with pytest.raises(lt.ExecutionError, match="No space left on device"):
        trained_more.get_signature_runner("save")(checkpoint_path=path)
    monkeypatch.undo()
    assert pathlib.Path(path).read_bytes() == good and os.listdir(tmp_path) == ["ckpt.safetensors"]
    assert snapshot(trained_more) == before


# -- the non-finite guard ---------------------------------------------------------------------------
def poisoned(step, how):
    x, y = models.batch(step)
    x[1, 2] = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}[how]
    return x, y


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_guarded_step_with_non_finite_loss_or_gradients_changes_nothing(files, optimizer):
    guarded = trained(files[optimizer])
    reference = trained(files[optimizer])
    train = guarded.get_signature_runner("train")
    assert guarded.get_signature_list()["train"]["outputs"] == ["loss", "step_skipped"]
    for how in ("nan", "inf", "-inf"):  # inf inputs: tanh keeps the loss finite, the gradients are not
        before = snapshot(guarded)
        out = train(**dict(zip("xy", poisoned(7, how))))
        assert out["step_skipped"].dtype == np.bool_ and out["step_skipped"], how
        assert snapshot(guarded) == before, how  # weights, slots and the step count
    for step in range(2, 5):  # then training goes on exactly as if the bad batches never came
        batch = dict(zip("xy", models.batch(step)))
        assert not train(**batch)["step_skipped"]
        reference.get_signature_runner("train")(**batch)
    assert snapshot(guarded) == snapshot(reference)


def test_guard_on_by_default_and_per_optimizer_switch():
    """convert guards every optimizer step unless told not to (nonfinite_guard=False); an
    optimizer's own skip_nonfinite wins either way."""
    default = lt.Interpreter(model_content=lt.convert(models.MLP("adam"), ["train"]))
    assert default.get_signature_list()["train"]["outputs"] == ["loss", "step_skipped"]
    assert not default.get_signature_runner("train")(**dict(zip("xy", models.batch(0))))["step_skipped"]
    before = snapshot(default)
    assert default.get_signature_runner("train")(**dict(zip("xy", poisoned(0, "nan"))))["step_skipped"]
    assert snapshot(default) == before
    plain = lt.Interpreter(model_content=models.mlp_file("adam", guard=False))
    assert plain.get_signature_list()["train"]["outputs"] == ["loss"]
    plain.get_signature_runner("train")(**dict(zip("xy", poisoned(0, "nan"))))
    assert np.isnan(plain.get_variables()["net/dense/kernel"]).any()  # what the guard prevents
    own = lt.convert(models.MLP("adam", skip_nonfinite=True), ["train"], nonfinite_guard=False)
    assert lt.Interpreter(model_content=own).get_signature_runner("train")(
        **dict(zip("xy", poisoned(0, "nan"))))["step_skipped"]
    off = lt.convert(models.MLP("adam", skip_nonfinite=False), ["train"])
    assert lt.Interpreter(model_content=off).get_signature_list()["train"]["outputs"] == ["loss"]


def test_guarded_file_runs_on_litert_and_skips_the_same_steps():
    litert = pytest.importorskip("ai_edge_litert.interpreter", reason="LiteRT is the oracle")
    data = lt.convert(models.MLP("adam"), ["train", "get_weights"], nonfinite_guard=True)
    theirs = litert.Interpreter(model_content=data)
    ours = lt.Interpreter(model_content=data)
    for step in range(6):
        batch = dict(zip("xy", poisoned(step, "nan") if step in (2, 4) else models.batch(step)))
        a, b = theirs.get_signature_runner("train")(**batch), ours.get_signature_runner("train")(**batch)
        assert bool(a["step_skipped"]) == bool(b["step_skipped"]) == (step in (2, 4))
    wa, wb = theirs.get_signature_runner("get_weights")(), ours.get_signature_runner("get_weights")()
    for k in wb:
        np.testing.assert_allclose(wa[k], wb[k], rtol=1e-5, atol=1e-6, err_msg=k)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_run_time_check_undoes_a_call_that_leaves_a_non_finite_variable(optimizer):
    data = models.mlp_file(optimizer, extra=("set_weights", "get_weights"))
    interp = trained(data, nonfinite_check=True)
    before = snapshot(interp)
    with pytest.raises(NonFiniteError, match=r"signature 'train' left non-finite values in variable\(s\) net/"):
        interp.get_signature_runner("train")(**dict(zip("xy", poisoned(3, "nan"))))
    assert snapshot(interp) == before
    weights = interp.get_signature_runner("get_weights")()
    weights["net/dense/bias"] = np.full_like(weights["net/dense/bias"], np.inf)
    with pytest.raises(lt.ExecutionError, match="net/dense/bias"):
        interp.get_signature_runner("set_weights")(**weights)
    assert snapshot(interp) == before
    interp.get_signature_runner("train")(**dict(zip("xy", models.batch(3))))  # good steps still train


# -- threads ---------------------------------------------------------------------------------------
def test_one_interpreter_from_several_threads_serialises_calls():
    """Two threads train with the same batch, a third reads the variables meanwhile: the end state
    is that of 60 sequential steps, and every view the reader got is the state after some step."""
    r = faults.run_thread_check(threads=2, steps=30)  # the check RELIABILITY.md reports
    assert r["errors"] == 0 and not r["end_state_differs"]
    assert r["reads"] > 0 and r["torn_reads"] == 0


def test_interpreters_of_one_file_in_parallel_threads_are_independent():
    data = models.mlp_file("rmsprop")
    results = {}

    def run(k):
        interp = lt.Interpreter(model_content=data)
        for step in range(25):
            interp.get_signature_runner("train")(**dict(zip("xy", models.batch(100 * k + step))))
        results[k] = models.variables_digest(interp.get_variables())

    threads = [threading.Thread(target=run, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(3):
        alone = lt.Interpreter(model_content=data)
        for step in range(25):
            alone.get_signature_runner("train")(**dict(zip("xy", models.batch(100 * k + step))))
        assert results[k] == models.variables_digest(alone.get_variables())


# -- no code from data -------------------------------------------------------------------------------
FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle", "joblib"}
FORBIDDEN_BUILTINS = {"eval", "exec", "compile", "__import__"}
FORBIDDEN_CALLS = {"import_module", "load_module", "exec_module", "run_path", "run_module"}


def test_no_pickle_eval_or_dynamic_import_anywhere_in_the_package():
    """An AST scan of every module: no unpickling module, no eval/exec/compile/__import__/
    import_module, no np.load with allow_pickle (data.py reads pickles with pickletools, which
    decodes opcodes and never runs them)."""
    root = pathlib.Path(lt.__file__).parent
    problems = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {(node.module or "").split(".")[0]}
            else:
                names = set()
            if names & FORBIDDEN_MODULES:
                problems.append(f"{path.relative_to(root)}:{node.lineno} imports {names & FORBIDDEN_MODULES}")
            if isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
                if name in FORBIDDEN_CALLS or (isinstance(func, ast.Name) and name in FORBIDDEN_BUILTINS):
                    problems.append(f"{path.relative_to(root)}:{node.lineno} calls {name}")
                if name == "load" and any(k.arg == "allow_pickle" for k in node.keywords):
                    problems.append(f"{path.relative_to(root)}:{node.lineno} loads with allow_pickle")
    assert not problems, "\n".join(problems)


def test_custom_ops_resolve_only_from_the_registry():
    """A file naming a custom op that looks like code gets UnsupportedOpError, nothing else."""
    data = models.mlp_file("adam")
    at = data.index(b"LitetrainSaveCheckpoint")
    for name in (b"os.system(\"touch x\")\0", b"__import__('os')\0\0\0\0\0", b"builtins.eval\0\0\0\0\0\0\0\0\0\0"):
        bad = data[:at] + name[:23].ljust(23, b"\0") + data[at + 23:]
        with pytest.raises(UnsupportedOpError, match="does not support: custom op"):
            lt.Interpreter(model_content=bad)


class Forever(lt.Module):
    """A counter whose loop condition is `n >= 0`, true forever once n starts non-negative: what a
    hostile or broken file can carry. Its Param `w` is updated before the loop."""

    def __init__(self):
        self.w = lt.Param(np.zeros(2, np.float32))

    @lt.signature(n=lt.TensorSpec([], "int32"))
    def run(self, n):
        fb = n.fb
        fb.assign(self.w, lt.ops.add(fb.read(self.w), 1.0))
        out = lt.ops.while_loop(lambda i: lt.ops.greater_equal(i, 0), lambda i: lt.ops.add(i, 1), n)
        return {"n": out}


def test_a_loop_that_never_ends_is_stopped_and_changes_nothing():
    """A while loop whose condition never turns false raises LoopLimitError (an ExecutionError) after
    the bound (max_loop_iterations, for all the loops of a call), in well under a second for a small
    bound, and the call is undone;
    a negative start ends at once; the bound is checked."""
    import time
    from litetrain.runtime import ExecutionError
    data = lt.convert(Forever(), ["run"])
    interp = lt.Interpreter(model_content=data, max_loop_iterations=1000)
    run = interp.get_signature_runner("run")
    assert run(n=np.int32(-5))["n"] == -5
    before = snapshot(interp)
    started = time.process_time()
    with pytest.raises(lt.LoopLimitError, match="while loops ran 1,000 iterations in all"):
        run(n=np.int32(0))
    assert time.process_time() - started < 1.0
    assert snapshot(interp) == before
    assert issubclass(lt.LoopLimitError, ExecutionError)
    assert lt.Interpreter(model_content=data)._executor.max_loop_iterations == 1_000_000
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="max_loop_iterations must be a positive int or None"):
            lt.Interpreter(model_content=data, max_loop_iterations=bad)


# -- the RELIABILITY.md table -----------------------------------------------------------------------
ROOT = pathlib.Path(__file__).resolve().parent.parent


def _table_reproduces(mode):
    import subprocess
    import sys
    from tools.reliability import fuzz
    document = (ROOT / "RELIABILITY.md").read_text()
    own = len(models.seed_files())
    extra = len(models.mediapipe_files())
    seeds = f"{own + extra} seeds ({own} litetrain, {extra} MediaPipe)"
    if seeds not in document:
        pytest.skip(f"the committed table was made with other seed files than the {seeds} here "
                    "(MediaPipe's: pip install --no-deps mediapipe==0.10.21)")
    if fuzz.atheris_available() == ("atheris is not installed" in document):
        pytest.skip("the committed table was made with atheris installed and this Python has none, or the reverse")
    args = [sys.executable, str(ROOT / "scripts" / "reliability.py"), "--check"] + (["--quick"] if mode == "quick" else [])
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "the table reproduces" in proc.stdout


def test_quick_reliability_table_reproduces_from_its_script():
    _table_reproduces("quick")


@pytest.mark.slow
def test_full_reliability_table_reproduces_from_its_script():
    _table_reproduces("full")
