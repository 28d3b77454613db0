"""Authoring models: Module, typed state (Param, Buffer), TensorSpec and the @signature decorator.

State is named by its path in the module tree (`net/dense_1/kernel`); that path becomes the
variable's shared_name in the file and its key in checkpoints.
"""
from __future__ import annotations

import inspect
import zlib

import numpy as np

from ..core.ir import dtype_name, format_shape, numpy_dtype


class TensorSpec:
    """The dtype and shape (None for an unknown dim) of a signature input. A `default` makes the
    input optional: litetrain's interpreter fills it in when a call leaves it out."""

    def __init__(self, shape, dtype="float32", default=None):
        self.shape = tuple(None if d is None or d == -1 else int(d) for d in shape)
        self.dtype = dtype_name(dtype)
        self.default = None
        if default is not None:
            value = np.asarray(default, dtype=numpy_dtype(self.dtype))
            if value.ndim != len(self.shape) or any(d is not None and d != v
                                                    for d, v in zip(self.shape, value.shape)):
                raise ValueError(f"default of shape {list(value.shape)} does not fit {format_shape(self.shape)}")
            self.default = value

    def __repr__(self):
        return f"TensorSpec({format_shape(self.shape)}, {self.dtype!r})"


def signature(**inputs):
    """Mark a method as an entry point of the converted file, with one TensorSpec per input.
    The method returns a dict of output name -> tensor."""
    for name, spec in inputs.items():
        if not isinstance(spec, TensorSpec):
            raise TypeError(f"input {name!r} of a signature needs a TensorSpec, got {type(spec).__name__}")

    def mark(method):
        params = list(inspect.signature(method).parameters)[1:]
        if sorted(params) != sorted(inputs):
            raise TypeError(f"{method.__name__}: the signature names inputs {sorted(inputs)} but the "
                            f"method takes {params}")
        method._litetrain_signature = dict((p, inputs[p]) for p in params)
        return method
    return mark


class State:
    """A variable of a module: its path, its current (initial) value and whether it is trained."""
    _litetrain_state = True
    kind = "buffer"

    def __init__(self, value, dtype=None, trainable=False):
        arr = np.array(value, dtype=numpy_dtype(dtype_name(dtype)) if dtype else None)
        if dtype is None and arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        self.value = arr
        self.trainable = trainable
        self._owner = None
        self._name = None

    @property
    def path(self) -> str | None:
        if self._owner is None:
            return None
        prefix = self._owner.path
        return f"{prefix}/{self._name}" if prefix else self._name

    @property
    def shape(self):
        return self.value.shape

    @property
    def dtype(self):
        return self.value.dtype

    def assign(self, value):
        """Set the value the converted file starts from (before conversion)."""
        arr = np.asarray(value, dtype=self.value.dtype)
        if arr.shape != self.value.shape:
            raise ValueError(f"{self.path}: expected shape {list(self.value.shape)}, got {list(arr.shape)}")
        self.value = arr.copy()

    def __repr__(self):
        return f"{type(self).__name__}({self.path or '<unattached>'}: {self.value.dtype}{list(self.value.shape)})"


class Param(State):
    """Trainable state: optimizers update it."""
    kind = "param"

    def __init__(self, value, dtype=None, trainable=True):
        super().__init__(value, dtype, trainable)


class Buffer(State):
    """State that is not trained by gradients: statistics, counters, optimizer slots."""
    kind = "buffer"


class Slot(Buffer):
    """An optimizer's per-variable state (momentum, moments, accumulators)."""
    kind = "slot"


def _snake(name):
    out = "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")
    return out


class Module:
    """A tree of modules and state. Attributes that are Modules, States, or lists of Modules
    become children, named by attribute (list items by index)."""

    def __setattr__(self, name, value):
        if not name.startswith("_"):
            self._attach(name, value)
        object.__setattr__(self, name, value)

    def _attach(self, name, value):
        if isinstance(value, State):
            if value._owner is not None and value._owner is not self:
                raise ValueError(f"{value!r} already belongs to another module")
            value._owner, value._name = self, name
        elif isinstance(value, Module):
            self._adopt(name, value)
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, Module) for v in value):
            for i, v in enumerate(value):
                self._adopt(f"{name}/{i}", v)

    def _adopt(self, name, child):
        if getattr(child, "_parent", None) is not None and child._parent is not self:
            raise ValueError(f"module {name!r} already belongs to another module")
        object.__setattr__(child, "_parent", self)
        object.__setattr__(child, "_name", name)
        children = self.__dict__.setdefault("_children", {})
        children[name] = child

    def add_state(self, name: str, state: State) -> State:
        """Attach state under a name that need not be a Python identifier (e.g. 'm/net/kernel')."""
        states = self.__dict__.setdefault("_extra_states", {})
        if name in states:
            return states[name]
        state._owner, state._name = self, name
        states[name] = state
        return state

    @property
    def path(self) -> str:
        parent = self.__dict__.get("_parent")
        if parent is None:
            return ""
        prefix = parent.path
        return f"{prefix}/{self._name}" if prefix else self._name

    def modules(self):
        """This module and all below it, depth first."""
        yield self
        for child in self.__dict__.get("_children", {}).values():
            yield from child.modules()

    def states(self):
        """Every State in the tree, depth first, in attribute order."""
        seen = set()
        for module in self.modules():
            own = [v for k, v in vars(module).items() if not k.startswith("_") and isinstance(v, State)]
            own += list(module.__dict__.get("_extra_states", {}).values())
            for s in own:
                if id(s) not in seen:
                    seen.add(id(s))
                    yield s

    @property
    def variables(self):
        return list(self.states())

    @property
    def trainable_variables(self):
        return [s for s in self.states() if isinstance(s, Param) and s.trainable]

    def freeze(self):
        """Make every Param below this module non-trainable (decided at conversion)."""
        for s in self.states():
            if isinstance(s, Param):
                s.trainable = False
        return self

    def unfreeze(self):
        for s in self.states():
            if isinstance(s, Param):
                s.trainable = True
        return self

    def signatures(self) -> dict:
        """The methods marked with @signature, by name, in definition order."""
        out = {}
        for klass in reversed(type(self).__mro__):
            for name, member in vars(klass).items():
                if hasattr(member, "_litetrain_signature"):
                    out[name] = getattr(self, name)
        return out

    def seed_for(self, name: str, base: int = 0) -> np.random.Generator:
        """A random generator seeded by the state's path: initial values do not depend on the
        order in which layers are built."""
        path = f"{self.path}/{name}" if self.path else name
        return np.random.default_rng([base, zlib.crc32(path.encode())])

    def __repr__(self):
        return f"{type(self).__name__}({self.path or 'root'})"


def default_name(module: Module, taken: dict) -> str:
    """Keras-style names for unnamed layers: dense, dense_1, ..."""
    stem = getattr(module, "name", None) or _snake(type(module).__name__)
    n = taken.get(stem, 0)
    taken[stem] = n + 1
    return stem if n == 0 else f"{stem}_{n}"
