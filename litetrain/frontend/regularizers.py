"""Penalties that tie parameters to reference values, generated in the graph: FedProx's proximal term,
L2-SP and EWC (continual learning). The references (anchors) and per-weight importances (EWC's Fisher
diagonal) are variables of the file, set on the device by signatures; the strength is whatever
tensor the signature passes (usually a run-time input)."""
from __future__ import annotations

import numpy as np

from .. import ops
from ..core.trace import TraceError, builder_of
from .module import Buffer, Module


class Anchors(Module):
    """One reference value per parameter (a variable named `<this module's path>/<parameter path>`,
    initially the parameter's converted value). Not weights: the ready-made get_weights/set_weights
    leave them out, save/restore keep them."""
    excluded_from_weights = True

    fill = None  # None: a copy of the parameter's converted value; a number: that constant

    def of(self, param) -> Buffer:
        """The variable that holds `param`'s reference (created on first use)."""
        if not param.path:
            raise TraceError(f"{param!r} has no path: attach it to a Module before tracing")
        value = (np.array(param.value, copy=True) if self.fill is None
                 else np.full(param.value.shape, self.fill, param.value.dtype))
        return self.add_state(param.path, Buffer(value))

    def assign(self, params, values) -> None:
        """Set each parameter's reference to a tensor of the same shape (in the traced function)."""
        params, values = list(params), list(values)
        fb = builder_of(values)
        for p, v in zip(params, values):
            fb.assign(self.of(p), v)

    def copy_current(self, params, like) -> None:
        """Set every reference to the parameter's current value (`like`: any tensor of the traced
        function, to find it)."""
        params = list(params)
        fb = builder_of(like)
        for p in params:
            fb.assign(self.of(p), fb.read(p))

    def values(self, params, like) -> list:
        fb = builder_of(like)
        return [fb.read(self.of(p)) for p in params]


class Importances(Anchors):
    """One non-negative weight per parameter element (EWC's Fisher diagonal), initially zero."""
    fill = 0.0


def weighted_squared_distance(params, anchors: Anchors, like, importance: Anchors | None = None):
    """sum over parameters of sum(importance * (p - anchor)^2) (importance 1 when None): a float32
    scalar tensor of the traced function of `like`."""
    fb = builder_of(like)
    total = None
    for p in params:
        d = ops.sub(fb.read(p), fb.read(anchors.of(p)))
        term = ops.square(d)
        if importance is not None:
            term = ops.mul(term, fb.read(importance.of(p)))
        s = ops.reduce_sum(term)
        total = s if total is None else ops.add(total, s)
    if total is None:
        raise TraceError("a distance penalty got no parameters")
    return total


def penalty(strength, distance):
    """strength / 2 * distance: FedProx's mu/2 ||w - w_global||^2, L2-SP's alpha/2 ||w - w0||^2 and
    EWC's lambda/2 sum F (w - w*)^2 (strength a float or a scalar tensor)."""
    half = ops.mul(strength, 0.5) if hasattr(strength, "fb") else float(strength) * 0.5
    return ops.mul(distance, half)
