"""The interpreter: the Python API of tf.lite.Interpreter over litetrain's NumPy runtime.

A script written for TensorFlow Lite's interpreter runs with this one by changing the import.
Variables are shared by every signature of one interpreter; separate interpreters of one file
are independent. A call with bad inputs raises an error naming the signature and the input and
changes no variable; a call that fails inside a kernel changes no variable either.
"""
from __future__ import annotations

import numpy as np

from ..core.ir import Program, numpy_dtype
from ..ops.checkpoint import read_regular_file
from ..tflite import InvalidModelError, read_model
from .executor import DEFAULT_MAX_LOOP_ITERATIONS, DEFAULT_MEMORY_BUDGET, ExecutionError, Executor, coerce_input
from .threads import check_threads


MAX_MODEL_BYTES = 1 << 31  # a FlatBuffer holds at most 2 GiB (larger files keep their data after it)


def _read_model_file(path) -> bytes:
    """A model file's bytes; a FIFO, a device or a file over MAX_MODEL_BYTES is refused unread."""
    try:
        return read_regular_file(path, MAX_MODEL_BYTES)
    except ValueError as e:
        raise InvalidModelError(f"{path}: {e}") from None


class SignatureError(ValueError):
    """A signature call with unknown, missing or ill-typed inputs."""


def _details(fn, index, shape=None):
    info = fn.tensors[index]
    q = info.quant
    sig = [-1 if d is None else d for d in info.shape]
    if shape is None:
        shape = [1 if d is None else d for d in info.shape]
    return {
        "name": info.name, "index": index,
        "shape": np.asarray(shape, np.int32), "shape_signature": np.asarray(sig, np.int32),
        "dtype": np.bytes_ if info.dtype == "string" else (
            numpy_dtype(info.dtype).type if info.dtype not in ("resource", "variant") else None),
        # TensorFlow Lite's forms: (scale, zero point) for a per-tensor quantization, (0.0, 0) otherwise
        "quantization": (float(q.scale[0]), int(q.zero_point[0])) if q is not None and len(q.scale) == 1
        else (0.0, 0),
        "quantization_parameters": {"scales": np.asarray(q.scale if q else (), np.float32),
                                    "zero_points": np.asarray(q.zero_point if q else (), np.int32),
                                    "quantized_dimension": q.axis if q else 0},
        "sparsity_parameters": {},
    }


def _updates_variables(program: Program, index: int) -> bool:
    """Whether function `index`, or one it runs (loop bodies, branches; not the initializer a
    CALL_ONCE runs), assigns a variable."""
    seen, todo = set(), [index]
    while todo:
        k = todo.pop()
        if k in seen or not 0 <= k < len(program.functions):
            continue
        seen.add(k)
        for node in program.functions[k].nodes:
            if node.op == "assign_variable":
                return True
            if node.op != "call_once":
                todo.extend(v for a, v in node.attrs.items() if a.endswith("_subgraph_index") and isinstance(v, int))
    return False


def _refuse_empty_batch(where: str, named_args) -> None:
    """An empty batch (0 rows in an input whose first dim the file leaves open) given to a signature
    that updates variables is refused before anything runs: a step on no data has a loss of 0 / 0 and
    would change the weights (or, guarded, be skipped) with nothing learned. Skip empty batches."""
    for name, shape, value in named_args:
        if shape and shape[0] is None and np.ndim(value) and np.shape(value)[0] == 0:
            raise SignatureError(f"{where} input {name!r} is an empty batch (shape {list(np.shape(value))}): this "
                                 "signature updates variables, and a step on 0 rows would have a NaN loss; the call "
                                 "was refused and changed nothing. Skip empty batches before calling")


def _result(value):
    arr = np.asarray(value) if not isinstance(value, np.ndarray) else value
    return arr if arr.flags.writeable and arr.base is None else arr.copy()


class SignatureRunner:
    """Runs one signature: runner(**inputs) -> {output name: array}."""

    def __init__(self, interpreter: "Interpreter", key: str):
        self._interpreter = interpreter
        self._sig = interpreter._program.signature(key)
        self._fn = interpreter._program.functions[self._sig.function]
        self.signature_key = key
        names = {v: k for k, v in self._sig.inputs.items()}
        # built once: (input name, dtype, shape) in the function's input order
        self._inputs = [(names[i], self._fn.tensors[i].dtype, self._fn.tensors[i].shape) for i in self._fn.inputs]
        self._outputs = [(name, self._fn.outputs.index(i)) for name, i in self._sig.outputs.items()]
        self._trains = _updates_variables(interpreter._program, self._sig.function)  # refuses empty batches

    def __call__(self, **inputs):
        sig = self._sig
        if len(inputs) != len(self._inputs) or not inputs.keys() <= sig.inputs.keys():
            extra = sorted(set(inputs) - set(sig.inputs))
            if extra:
                raise SignatureError(f"signature {sig.key!r} has no input(s) {extra}; it takes {sorted(sig.inputs)}")
            missing = sorted(set(sig.inputs) - set(inputs) - set(sig.defaults))
            if missing:
                raise SignatureError(f"signature {sig.key!r} is missing input(s) {missing}")
        args = []
        for name, dtype, shape in self._inputs:
            value = inputs[name] if name in inputs else sig.defaults[name]
            try:
                args.append(coerce_input(value, dtype, shape, f"signature {sig.key!r} input {name!r}"))
            except (TypeError, ValueError) as e:
                raise SignatureError(str(e)) from None
        if self._trains:
            _refuse_empty_batch(f"signature {sig.key!r}", [(n, shape, a) for (n, _, shape), a in zip(self._inputs, args)])
        try:
            return self._interpreter._executor.run_transaction(
                sig.function, args, where=f"signature {sig.key!r}",
                finish=lambda values: {name: _result(values[k]) for name, k in self._outputs})
        except ExecutionError as e:
            hint = self._batch_hint(args)
            if hint and type(e) is ExecutionError:
                raise ExecutionError(f"{hint}; {e}") from e.__cause__
            raise

    def _batch_hint(self, args) -> str:
        """When inputs whose first dim the signature leaves open disagree on it, the likely cause of a
        failed call, said with the inputs' names."""
        open_first = [(name, a.shape[0]) for (name, _, shape), a in zip(self._inputs, args)
                      if shape and shape[0] is None and np.ndim(a)]
        if len({n for _, n in open_first}) < 2:
            return ""
        listed = ", ".join(f"{name} {n}" for name, n in open_first)
        return f"signature {self._sig.key!r}: the inputs have different batch sizes ({listed})"

    def get_input_details(self):
        return {k: _details(self._fn, i) for k, i in self._sig.inputs.items()}

    def get_output_details(self):
        return {k: _details(self._fn, i) for k, i in self._sig.outputs.items()}


class Interpreter:
    """Interpreter(model_path=... | model_content=...): runs every signature of a .tflite file.

    The file is untrusted: a bad one raises InvalidModelError (UnsupportedOpError for operators
    litetrain lacks). A signature call raises only SignatureError (bad inputs) or ExecutionError
    (a kernel failed, a checkpoint was refused, ...), and then every variable is as it was. A
    signature that updates variables refuses an empty batch (0 rows in an input whose first dim is
    open) with SignatureError before running: a step on no data has a NaN loss.
    Calls from several threads are serialised.

    TensorFlow Lite's arguments: num_threads is the number of threads NumPy's BLAS may use during a
    call (default 1, see runtime/threads.py). experimental_preserve_all_tensors keeps every tensor
    of the main subgraph after invoke() for get_tensor (the plan then runs op by op). The delegate
    options (experimental_delegates, the op resolver type, clustering, node fusion, profiling,
    latest features, zero-point compression) are accepted as TensorFlow Lite takes them and change
    nothing: litetrain has one set of kernels and no delegates (a delegate given is an error).
    Any other argument is a TypeError.

    Options beyond TensorFlow Lite's: nonfinite_check: a call that leaves a float variable with an
    infinity or a NaN is undone and raises NonFiniteError (an ExecutionError). strict_checkpoints:
    restore refuses a checkpoint that carries no checksum (one not written by litetrain).
    max_loop_iterations: the while loops of one call may take at most this many iterations in all,
    nested loops and loops in branches included (default a million; None for no bound), so that a
    file whose loop condition never turns false, or a loop inside a loop, raises LoopLimitError (an
    ExecutionError) instead of hanging. memory_budget: the bytes one call may allocate through ops
    whose output size comes from tensor values (FILL, BROADCAST_TO, PAD, TILE, RANGE, ONE_HOT,
    SCATTER_ND, RESIZE_*, RANDOM_UNIFORM, TRANSPOSE_CONV), summed over the call and checked before
    each allocates; an op whose single output is larger than the budget is refused too (when the
    plan knows its shape). Default: 2 GiB, or half the physical memory when that is less; None for no
    bound. Past it a call raises MemoryBudgetError (an ExecutionError) naming the op, its output
    and the bytes. optimize: False runs every node's own kernel, without the plan's folding, fused
    kernels and in-place work (the reference path those are tested against)."""

    def __init__(self, model_path=None, model_content=None, experimental_delegates=None, num_threads=None,
                 experimental_op_resolver_type=None, experimental_preserve_all_tensors=False,
                 experimental_disable_delegate_clustering=False, experimental_default_delegate_latest_features=False,
                 experimental_compress_quantization_zero_points=False, experimental_disable_delegate_node_fusion=False,
                 experimental_force_delegate_node_profiling=False, *, nonfinite_check=False, strict_checkpoints=False,
                 max_loop_iterations=DEFAULT_MAX_LOOP_ITERATIONS, memory_budget=DEFAULT_MEMORY_BUDGET, optimize=True):
        if (model_path is None) == (model_content is None):
            raise ValueError("give exactly one of model_path and model_content")
        if experimental_delegates:
            raise ValueError("litetrain runs its own NumPy kernels and takes no delegates: leave "
                             "experimental_delegates out (TensorFlow Lite's delegates need TensorFlow Lite)")
        threads = check_threads(num_threads)
        for name, value in (("max_loop_iterations", max_loop_iterations), ("memory_budget", memory_budget)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive int or None, got {value!r}")
        if model_path is not None:
            model_content = _read_model_file(model_path)
        self._preserve = bool(experimental_preserve_all_tensors)
        self._compress_zero_points = bool(experimental_compress_quantization_zero_points)
        self._setup(read_model(bytes(model_content)), optimize and not self._preserve, threads)
        self._executor.keep_values = self._preserve
        self._executor.nonfinite_check = bool(nonfinite_check)
        self._executor.strict_checkpoints = bool(strict_checkpoints)
        self._executor.max_loop_iterations = max_loop_iterations
        self._executor.memory_budget = memory_budget

    def _setup(self, program: Program, optimize: bool, threads: int):
        self._program = program
        self._executor = Executor(program, optimize=bool(optimize), num_threads=threads)
        self._main = program.functions[0] if program.functions else None
        self._main_trains = self._main is not None and _updates_variables(program, 0)
        self._input_shapes, self._tensors, self._allocated = {}, {}, False

    @classmethod
    def from_program(cls, program: Program, optimize=True, num_threads=None) -> "Interpreter":
        """An interpreter over an in-memory Program (no file), e.g. straight from tracing."""
        self = cls.__new__(cls)
        self._preserve, self._compress_zero_points = False, False
        self._setup(program, optimize, check_threads(num_threads))
        return self

    @property
    def experimental_compress_quantization_zero_points(self) -> bool:
        return self._compress_zero_points

    def num_subgraphs(self) -> int:
        return len(self._program.functions)

    def reset_all_variables(self):
        """As TensorFlow Lite's: resets the file's variable *tensors* (the pre-resource-variable kind,
        which litetrain's reader does not create), and leaves resource variables, the state of
        litetrain's and TensorFlow's training files, as they are. To start over, make a new
        Interpreter of the file, or call its `restore` signature."""
        return None

    # -- signatures -----------------------------------------------------------------------
    def get_signature_list(self):
        return {s.key: {"inputs": list(s.inputs), "outputs": list(s.outputs)} for s in self._program.signatures}

    def get_signature_runner(self, signature_key=None):
        if signature_key is None:
            if len(self._program.signatures) != 1:
                raise ValueError("the model has several signatures; name one: "
                                 f"{[s.key for s in self._program.signatures]}")
            signature_key = self._program.signatures[0].key
        try:
            return SignatureRunner(self, signature_key)
        except KeyError as e:
            raise ValueError(e.args[0] if e.args else str(e)) from None

    # -- variables (an extension: TensorFlow Lite has no public API for these) --------------
    def get_variables(self):
        """Every variable's current value by path (runs initialisation first if needed)."""
        with self._executor.lock:  # a consistent view while other threads call signatures
            self._ensure_initialized()
            return {k: v.copy() for k, v in self._executor.variables.values.items()}

    def _ensure_initialized(self):
        init = self._program.init_function
        store = self._executor.variables
        with self._executor.lock:
            if init is not None and init not in store.initialized:
                self._executor.run_transaction(init, [], where="init subgraph")
                store.initialized.add(init)

    # -- the main subgraph --------------------------------------------------------------------
    def _check_index(self, index):
        if not isinstance(index, (int, np.integer)) or not 0 <= index < len(self._main.tensors):
            raise ValueError(f"tensor index {index} is out of range [0, {len(self._main.tensors)})")

    def get_input_details(self):
        return [_details(self._main, i, self._input_shapes.get(i)) for i in self._main.inputs]

    def get_output_details(self):
        return [_details(self._main, i) for i in self._main.outputs]

    def resize_tensor_input(self, input_index, tensor_size, strict=False):
        if input_index not in self._main.inputs:
            raise ValueError(f"tensor {input_index} is not an input of the main subgraph")
        sig = self._main.tensors[input_index].shape
        size = [int(d) for d in tensor_size]
        if len(size) != len(sig) or (strict and any(s is not None and s != d for s, d in zip(sig, size))):
            raise ValueError(f"cannot resize input {input_index} of shape {list(sig)} to {size}")
        self._input_shapes[input_index] = size
        self._allocated = False

    def allocate_tensors(self):
        self._executor.plan(0)
        self._allocated = True

    def set_tensor(self, tensor_index, value):
        self._check_index(tensor_index)
        info = self._main.tensors[tensor_index]
        shape = self._input_shapes.get(tensor_index) or [1 if d is None else d for d in info.shape]
        value = coerce_input(value, info.dtype, tuple(shape), f"tensor {tensor_index} ({info.name})")
        self._tensors[tensor_index] = np.array(value)  # a copy, as TensorFlow Lite's set_tensor makes

    def invoke(self):
        if not self._allocated:
            raise RuntimeError("call allocate_tensors() before invoke()")
        missing = [i for i in self._main.inputs if i not in self._tensors]
        if missing:
            raise ValueError(f"inputs {missing} were not set")
        if self._main_trains:
            _refuse_empty_batch("invoke()", [(self._main.tensors[i].name, self._main.tensors[i].shape, self._tensors[i])
                                             for i in self._main.inputs])
        outs = self._executor.run_transaction(0, [self._tensors[i] for i in self._main.inputs], where="invoke")
        self._tensors.update(zip(self._main.outputs, outs))

    def get_tensor(self, tensor_index, subgraph_index=0):
        """A copy of a tensor's value: an input set, an output of the last invoke(), a constant, or,
        with experimental_preserve_all_tensors, any tensor of the main subgraph."""
        return np.array(self._value(tensor_index, subgraph_index))

    def tensor(self, tensor_index):
        """A function giving the tensor's current value without a copy (an input set with set_tensor
        can be written through it before invoke(), as in TensorFlow Lite)."""
        self._value(tensor_index, 0)
        return lambda: self._value(tensor_index, 0)

    def _value(self, tensor_index, subgraph_index):
        if not isinstance(subgraph_index, (int, np.integer)) or not 0 <= subgraph_index < self.num_subgraphs():
            raise ValueError(f"subgraph index {subgraph_index} is out of range [0, {self.num_subgraphs()})")
        fn = self._program.functions[subgraph_index]
        if not isinstance(tensor_index, (int, np.integer)) or not 0 <= tensor_index < len(fn.tensors):
            raise ValueError(f"tensor index {tensor_index} is out of range [0, {len(fn.tensors)})")
        if subgraph_index == 0 and tensor_index in self._tensors:
            return self._tensors[tensor_index]
        kept = self._executor.last_values.get(subgraph_index)
        if kept is not None and kept[tensor_index] is not None:
            return kept[tensor_index]
        if fn.tensors[tensor_index].data is not None:
            return fn.tensors[tensor_index].data
        raise ValueError(f"tensor {tensor_index} ({fn.tensors[tensor_index].name}) has no value: only inputs, outputs "
                         "and constants are kept (Interpreter(experimental_preserve_all_tensors=True) keeps all)")

    def get_tensor_details(self, subgraph_index=0):
        """Name, index, shape, dtype and quantization of every named tensor of a subgraph."""
        if not isinstance(subgraph_index, (int, np.integer)) or not 0 <= subgraph_index < self.num_subgraphs():
            raise ValueError(f"subgraph index {subgraph_index} is out of range [0, {self.num_subgraphs()})")
        fn = self._program.functions[subgraph_index]
        return [_details(fn, i, self._input_shapes.get(i) if subgraph_index == 0 else None)
                for i, t in enumerate(fn.tensors) if t.name]
