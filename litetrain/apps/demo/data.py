"""Datasets for the demo and benchmarks: Animal MNIST, read without unpickling.

Animal MNIST (the `animal-mnist` wheel, MIT licence, Copyright (c) 2025 SinaSR-6) holds 10,000
28x28 uint8 animal silhouettes in 10 classes of 1,000. Install it without its TensorFlow
dependency: `pip install --no-deps animal-mnist==0.4`.

The wheel ships each array as a gzip'd pickle. litetrain never unpickles: `parse_pickled_array`
walks the opcodes with `pickletools.genops` (which decodes, never executes) and evaluates them
symbolically: strings, numbers, tuples and bytes become Python values, a reference to a callable
becomes a name, and a call becomes a record of that name and its arguments. Only the three
callables of NumPy's array pickle are allowed, the resulting structure must be exactly an
ndarray's, and its dtype, shape and byte count must be the expected ones; then the array is
built with `np.frombuffer`. Anything else is refused with a `DataError`.

`load_animal_mnist()` splits the data the same way every time: for each class, a permutation
drawn from `np.random.default_rng(SPLIT_SEED)` puts 200 images in the test split and 800 in the
train split (8,000 / 2,000 in all, stratified); each split is in the original file order.
"""
from __future__ import annotations

import gzip
import importlib.util
import os
import pickletools
import re

import numpy as np

INSTALL_HINT = "pip install --no-deps animal-mnist==0.4"
SPLIT_SEED = 0
TEST_PER_CLASS = 200
NUM_CLASSES = 10
MAX_STREAM_BYTES = 64 << 20  # the images are 7.8 MB; refuse anything that inflates past this

_FILES = ("animal_data_version_3.gz", "animal_label_version_3.gz")

# The callables a NumPy array's pickle refers to (numpy >= 2 writes `numpy._core`).
_ALLOWED_CALLABLES = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


class DataError(ValueError):
    """A data file that is missing, or whose contents are not the expected array."""


# -- reading a pickled ndarray without unpickling ----------------------------------------------
class _Global:
    def __init__(self, module, name):
        self.module, self.name = module, name

    def __repr__(self):
        return f"{self.module}.{self.name}"


class _Call:
    """A call the stream asks for (never made): callable, args, and the state BUILD gives it."""

    def __init__(self, func, args):
        self.func, self.args, self.state = func, args, None


_MARK = object()
_PUSH = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "BININT", "BININT1", "BININT2",
         "SHORT_BINBYTES", "BINBYTES", "BINBYTES8"}
_CONSTANTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False, "EMPTY_TUPLE": ()}
_TUPLES = {"TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}


class _SymbolicPickle:
    """A pickle stream being evaluated symbolically: its stack, its memo, one method per opcode group."""

    def __init__(self, what: str):
        self.what, self.stack, self.memo = what, [], {}

    def malformed(self, detail) -> DataError:
        """The error for a stream that breaks the pickle format."""
        return DataError(f"{self.what}: malformed pickle stream ({detail})")

    def run(self, stream: bytes):
        """The value the stream describes; see `_symbolic_eval`."""
        try:
            for op, arg, pos in pickletools.genops(stream):
                if op.name == "STOP":
                    return self.stop()
                handler = _HANDLERS.get(op.name)
                if handler is None:
                    raise DataError(f"{self.what}: opcode {op.name} at byte {pos} has no place in a NumPy array "
                                    "pickle; refusing the stream")
                handler(self, op.name, arg)
        except ValueError as e:  # pickletools' own decoding errors (truncation, bad lengths)
            if isinstance(e, DataError):
                raise
            raise self.malformed(e) from None
        raise DataError(f"{self.what}: the pickle stream ends without STOP")

    def pop(self):
        """The top of the stack, removed; a MARK is not a value."""
        if not self.stack or self.stack[-1] is _MARK:
            raise self.malformed("stack underflow")
        return self.stack.pop()

    def pop_to_mark(self) -> tuple:
        """The values above the topmost MARK, in stream order, removed with the MARK."""
        items = []
        while self.stack and self.stack[-1] is not _MARK:
            items.append(self.stack.pop())
        if not self.stack:
            raise self.malformed("no MARK")
        self.stack.pop()
        return tuple(reversed(items))

    def check_callable(self, module, name) -> _Global:
        """A reference to one of the callables of a NumPy array's pickle; any other is refused."""
        if (module, name) not in _ALLOWED_CALLABLES:
            raise DataError(f"{self.what}: the stream refers to {module}.{name}, which is not part of a "
                            "NumPy array; refusing it")
        return _Global(module, name)

    def stop(self):
        """STOP: the one value left on the stack."""
        if len(self.stack) != 1:
            raise self.malformed(f"{len(self.stack)} values at STOP")
        return self.stack[0]

    def skip(self, name, arg):
        """PROTO, FRAME: nothing to evaluate."""

    def push_argument(self, name, arg):
        """Strings, ints and bytes: the opcode's argument is the value."""
        self.stack.append(arg)

    def push_constant(self, name, arg):
        """None, True, False and the empty tuple."""
        self.stack.append(_CONSTANTS[name])

    def mark(self, name, arg):
        """MARK: where the next TUPLE starts."""
        self.stack.append(_MARK)

    def tuple_to_mark(self, name, arg):
        """TUPLE: a tuple of the values above the topmost MARK."""
        self.stack.append(self.pop_to_mark())

    def small_tuple(self, name, arg):
        """TUPLE1, TUPLE2, TUPLE3: a tuple of the top 1, 2 or 3 values."""
        items = [self.pop() for _ in range(_TUPLES[name])]
        self.stack.append(tuple(reversed(items)))

    def memoize(self, name, arg):
        """MEMOIZE (at the next free index), BINPUT, LONG_BINPUT: remember the top of the stack."""
        if not self.stack:
            raise self.malformed(f"{name} on an empty stack")
        self.memo[len(self.memo) if name == "MEMOIZE" else arg] = self.stack[-1]

    def memo_get(self, name, arg):
        """BINGET, LONG_BINGET: push a remembered value."""
        if arg not in self.memo:
            raise self.malformed(f"{name} {arg} before it is stored")
        self.stack.append(self.memo[arg])

    def stack_global(self, name, arg):
        """STACK_GLOBAL: a callable named by the two strings on the stack."""
        attr, module = self.pop(), self.pop()
        if not isinstance(module, str) or not isinstance(attr, str):
            raise self.malformed("STACK_GLOBAL of non-strings")
        self.stack.append(self.check_callable(module, attr))

    def global_(self, name, arg):
        """GLOBAL: a callable named by the opcode's "module name" argument."""
        module, _, attr = arg.partition(" ")
        self.stack.append(self.check_callable(module, attr))

    def reduce(self, name, arg):
        """REDUCE: a record of the call, never made."""
        args, func = self.pop(), self.pop()
        if not isinstance(func, _Global) or not isinstance(args, tuple):
            raise self.malformed(f"REDUCE of {type(func).__name__}")
        self.stack.append(_Call(func, args))

    def build(self, name, arg):
        """BUILD: the state given to a recorded call (at most once)."""
        state, obj = self.pop(), self.pop()
        if not isinstance(obj, _Call) or obj.state is not None:
            raise self.malformed(f"BUILD on {type(obj).__name__}")
        obj.state = state
        self.stack.append(obj)


_HANDLERS = {  # opcode name -> the _SymbolicPickle method that evaluates it; STOP is handled by `run`
    **dict.fromkeys(("PROTO", "FRAME"), _SymbolicPickle.skip),
    **dict.fromkeys(_PUSH, _SymbolicPickle.push_argument),
    **dict.fromkeys(_CONSTANTS, _SymbolicPickle.push_constant),
    "MARK": _SymbolicPickle.mark,
    "TUPLE": _SymbolicPickle.tuple_to_mark,
    **dict.fromkeys(_TUPLES, _SymbolicPickle.small_tuple),
    **dict.fromkeys(("MEMOIZE", "BINPUT", "LONG_BINPUT"), _SymbolicPickle.memoize),
    **dict.fromkeys(("BINGET", "LONG_BINGET"), _SymbolicPickle.memo_get),
    "STACK_GLOBAL": _SymbolicPickle.stack_global,
    "GLOBAL": _SymbolicPickle.global_,
    "REDUCE": _SymbolicPickle.reduce,
    "BUILD": _SymbolicPickle.build,
}


def _symbolic_eval(stream: bytes, what: str):
    """The value a pickle stream describes, with calls as `_Call` records; refuses any opcode or
    callable outside the small set a NumPy array pickle uses."""
    return _SymbolicPickle(what).run(stream)


def _is(value, module_suffix, name):
    return isinstance(value, _Global) and value.name == name and value.module.endswith(module_suffix)


def parse_pickled_array(stream: bytes, dtype, shape, what: str = "array") -> np.ndarray:
    """The ndarray a NumPy pickle stream (protocol 3 or 4) holds, checked to have exactly `dtype` and
    `shape`, built with np.frombuffer; nothing in the stream is executed."""
    dtype, shape = np.dtype(dtype), tuple(int(d) for d in shape)
    root = _symbolic_eval(stream, what)
    bad = f"{what}: the stream does not hold a plain NumPy array"
    if not (isinstance(root, _Call) and _is(root.func, "multiarray", "_reconstruct")
            and len(root.args) == 3 and _is(root.args[0], "numpy", "ndarray")):
        raise DataError(bad)
    state = root.state
    if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1):
        raise DataError(f"{bad} (unexpected array state)")
    _, found_shape, dt, fortran, raw = state
    if not (isinstance(dt, _Call) and _is(dt.func, "numpy", "dtype") and len(dt.args) == 3
            and isinstance(dt.args[0], str) and isinstance(dt.state, tuple) and len(dt.state) == 8
            and dt.state[1] in ("<", ">", "|") and dt.state[2:5] == (None, None, None)):
        raise DataError(f"{bad} (unexpected dtype record)")
    code, order = dt.args[0], dt.state[1]
    if not re.fullmatch(r"[biuf][1248]", code):  # a plain number type ("u1", "f4"): nothing NumPy would parse
        raise DataError(f"{what}: unknown dtype code {code!r}")
    found_dtype = np.dtype(code).newbyteorder(order)
    if found_dtype.kind in "OV" or found_dtype.newbyteorder("=") != dtype.newbyteorder("="):
        raise DataError(f"{what}: expected dtype {dtype}, found {found_dtype}")
    if not (isinstance(found_shape, tuple) and all(isinstance(d, int) for d in found_shape)):
        raise DataError(f"{bad} (shape is not a tuple of ints)")
    if found_shape != shape:
        raise DataError(f"{what}: expected shape {list(shape)}, found {list(found_shape)}")
    if fortran is not False:
        raise DataError(f"{what}: expected a C-ordered array")
    if not isinstance(raw, (bytes, bytearray)):
        raise DataError(f"{bad} (the data is not a bytes operand)")
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(f"{what}: expected {expected} data bytes for {dtype}{list(shape)}, found {len(raw)}")
    return np.frombuffer(raw, dtype=found_dtype).reshape(shape).astype(dtype.newbyteorder("="))


# -- Animal MNIST ---------------------------------------------------------------------------------
def animal_mnist_dir() -> str:
    """The directory of the data files in the installed `animal-mnist` wheel (found without
    importing the package, whose loader imports TensorFlow)."""
    spec = importlib.util.find_spec("animal_mnist")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the Animal MNIST data is not installed; install it with:\n    " + INSTALL_HINT)
    for base in spec.submodule_search_locations:
        directory = os.path.join(base, "data", "Animal_MNIST")
        if all(os.path.isfile(os.path.join(directory, f)) for f in _FILES):
            return directory
    raise DataError(f"the installed animal_mnist package has no {' / '.join(_FILES)}; reinstall "
                    "it with:\n    " + INSTALL_HINT)


def _read_gzip(path, limit=MAX_STREAM_BYTES) -> bytes:
    try:
        with gzip.open(path, "rb") as f:
            data = f.read(limit + 1)
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    if len(data) > limit:
        raise DataError(f"{path} inflates past {limit} bytes; refusing it")
    return data


def load_animal_mnist_arrays():
    """All 10,000 images (uint8 [10000, 28, 28]) and labels (int64 [10000]), in file order."""
    directory = animal_mnist_dir()
    images_path, labels_path = (os.path.join(directory, f) for f in _FILES)
    n = NUM_CLASSES * 1000
    images = parse_pickled_array(_read_gzip(images_path), np.uint8, (n, 28, 28), images_path)
    labels = parse_pickled_array(_read_gzip(labels_path), np.int64, (n,), labels_path)
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise DataError(f"{labels_path}: labels outside [0, {NUM_CLASSES})")
    return images, labels


def stratified_split(labels, test_per_class=TEST_PER_CLASS, seed=SPLIT_SEED):
    """(train indices, test indices): per class, `test_per_class` drawn by a seeded permutation;
    both sorted ascending."""
    rng = np.random.default_rng(seed)
    test = []
    for c in range(int(labels.max()) + 1):
        members = np.flatnonzero(labels == c)
        if len(members) <= test_per_class:
            raise DataError(f"class {c} has {len(members)} examples; need more than {test_per_class}")
        test.append(rng.permutation(members)[:test_per_class])
    test = np.sort(np.concatenate(test))
    train = np.setdiff1d(np.arange(len(labels)), test)
    return train, test


def load_animal_mnist():
    """(train_x, train_y, test_x, test_y): uint8 [8000, 28, 28], int64 [8000], uint8 [2000, 28, 28],
    int64 [2000]; the fixed stratified split described in this module's docstring."""
    images, labels = load_animal_mnist_arrays()
    train, test = stratified_split(labels)
    return images[train], labels[train], images[test], labels[test]
