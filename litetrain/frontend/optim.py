"""Optimizers and learning-rate schedules, written as graph builders with slot variables.

Each optimizer's update is emitted as ordinary ops in the signature that calls `minimize` or
`apply_gradients`; its state (step count, momentum, moments, accumulators) lives in variables,
so checkpoints resume training exactly. Update rules follow PyTorch's definitions.
"""
from __future__ import annotations

import math

import numpy as np

from .. import ops
from ..core.autodiff import gradients
from ..core.trace import Tensor, builder_of
from .module import Buffer, Module, Slot


# -- schedules --------------------------------------------------------------------------------
class Schedule:
    """A learning rate as a function of the step count (a float32 scalar tensor)."""

    def __call__(self, step: Tensor) -> Tensor:
        raise NotImplementedError


class ExponentialDecay(Schedule):
    """initial * decay_rate ** (step / decay_steps); floor of the exponent when `staircase`."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False):
        self.initial, self.decay_steps, self.rate, self.staircase = (
            float(initial_learning_rate), float(decay_steps), float(decay_rate), staircase)

    def __call__(self, step):
        p = ops.div(step, self.decay_steps)
        if self.staircase:
            p = ops.floor(p)
        return ops.mul(ops.pow_(ops.mul(ops.ones_like(step), self.rate), p), self.initial)


class CosineDecay(Schedule):
    """initial * ((1 - alpha) * (1 + cos(pi * min(step, decay_steps) / decay_steps)) / 2 + alpha)."""

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0):
        self.initial, self.decay_steps, self.alpha = float(initial_learning_rate), float(decay_steps), float(alpha)

    def __call__(self, step):
        t = ops.div(ops.minimum(step, self.decay_steps), self.decay_steps)
        cosine = ops.mul(ops.add(ops.cos(ops.mul(t, math.pi)), 1.0), 0.5)
        return ops.mul(ops.add(ops.mul(cosine, 1.0 - self.alpha), self.alpha), self.initial)


class StepDecay(Schedule):
    """initial * gamma ** floor(step / step_size)."""

    def __init__(self, initial_learning_rate, step_size, gamma=0.1):
        self.initial, self.step_size, self.gamma = float(initial_learning_rate), float(step_size), float(gamma)

    def __call__(self, step):
        k = ops.floor(ops.div(step, self.step_size))
        return ops.mul(ops.pow_(ops.mul(ops.ones_like(step), self.gamma), k), self.initial)


# -- optimizers ---------------------------------------------------------------------------------
class Optimizer(Module):
    """Base class: turns gradients into variable updates inside the traced signature.

    learning_rate: a float or a Schedule (computed from the step count in the graph); a call of
    `minimize`/`apply_gradients` may pass a tensor instead (e.g. a signature input) to set it at
    run time. weight_decay: L2 added to the gradient (decoupled in AdamW). clip_global_norm:
    rescale all gradients together so their global norm is at most this (as PyTorch's
    clip_grad_norm_). skip_nonfinite: when the loss or any gradient is not finite, the step
    changes no variable (weights, slots, step count) and the signature gets a bool output
    `step_skipped`; None (the default) follows `convert(..., nonfinite_guard=...)`."""

    def __init__(self, learning_rate=0.01, weight_decay=0.0, clip_global_norm=None, skip_nonfinite=None):
        self.learning_rate = learning_rate
        self.weight_decay = float(weight_decay)
        self.clip_global_norm = clip_global_norm
        self.skip_nonfinite = skip_nonfinite
        self.iterations = Buffer(np.int32(0))

    def slot(self, var, name, init=0.0) -> Slot:
        slot = self.add_state(f"{name}/{var.path}", Slot(np.full(var.value.shape, init, var.value.dtype)))
        if getattr(var, "shape_signature", None) is not None:  # a resizable variable: its slots resize too
            slot.shape_signature = var.shape_signature
        return slot

    def minimize(self, loss, variables, learning_rate=None):
        """Add the gradients of `loss` and one update of `variables`; returns the gradients."""
        variables = list(variables)
        grads = gradients(loss, variables)
        self.apply_gradients(zip(grads, variables), learning_rate=learning_rate, loss=loss)
        return grads

    def apply_gradients(self, grads_and_vars, learning_rate=None, loss=None):
        """Add one update of each variable; `loss`, when given, is checked by the non-finite guard."""
        pairs = list(grads_and_vars)
        if not pairs:
            raise ValueError("apply_gradients got no (gradient, variable) pairs")
        fb = builder_of([g for g, _ in pairs])
        guard = self.skip_nonfinite if self.skip_nonfinite is not None else fb.pb.options.nonfinite_guard
        if guard:
            fb = _GuardedUpdates(fb, [g for g, _ in pairs] + ([loss] if loss is not None else []))
        step_int = fb.read(self.iterations)
        step = ops.cast(step_int, "float32")
        lr = self._learning_rate(fb, step, learning_rate)
        grads = [g for g, _ in pairs]
        if self.clip_global_norm is not None:
            grads = clip_by_global_norm(grads, self.clip_global_norm)
        for g, var in zip(grads, (v for _, v in pairs)):
            value = fb.read(var)
            if g.dtype != value.dtype:
                g = ops.cast(g, value.dtype)
            fb.assign(var, self.update(fb, var, value, g, lr, step))
        fb.assign(self.iterations, ops.add(step_int, 1))

    def _learning_rate(self, fb, step, override):
        if override is not None:
            return fb.to_tensor(override, step)
        if isinstance(self.learning_rate, Schedule):
            return self.learning_rate(step)
        return fb.const(float(self.learning_rate), "float32")

    def _decayed(self, value, g):
        return ops.add(g, ops.mul(value, self.weight_decay)) if self.weight_decay else g

    def update(self, fb, var, value, g, lr, step):
        """The new value of `var` (and the slot updates); `step` counts from 0."""
        raise NotImplementedError


class _GuardedUpdates:
    """A FunctionBuilder whose assignments keep the old value unless every checked tensor is
    finite: each becomes ASSIGN_VARIABLE(SELECT_V2(ok, new, old)), builtin ops that LiteRT runs."""

    def __init__(self, fb, checked):
        self._fb = fb
        total = None  # x * 0 is 0 for finite x and NaN for an infinity or a NaN (IEEE 754)
        for t in checked:
            s = ops.cast(ops.reduce_sum(ops.mul(t, 0.0)), "float32")
            total = s if total is None else ops.add(total, s)
        self.ok = ops.equal(total, 0.0)
        skipped = ops.logical_not(self.ok)
        before = fb.reports.get("step_skipped")  # a second guarded update in the same signature
        fb.reports["step_skipped"] = skipped if before is None else ops.logical_not(
            ops.logical_and(ops.logical_not(before), self.ok))

    def assign(self, state, value):
        old = self._fb.read(state)
        self._fb.assign(state, ops.where(self.ok, self._fb.to_tensor(value, old), old))

    def __getattr__(self, name):
        return getattr(self._fb, name)


def clip_by_global_norm(grads, max_norm):
    """Scale gradients by min(1, max_norm / (global_norm + 1e-6))."""
    total = None
    for g in grads:
        s = ops.reduce_sum(ops.square(g))
        total = s if total is None else ops.add(total, s)
    norm = ops.sqrt(total)
    scale = ops.minimum(ops.div(float(max_norm), ops.add(norm, 1e-6)), 1.0)
    return [ops.mul(g, scale) for g in grads]


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as torch.optim.SGD."""

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, **kw):
        super().__init__(learning_rate, **kw)
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.momentum, self.nesterov = float(momentum), nesterov

    def update(self, fb, var, value, g, lr, step):
        g = self._decayed(value, g)
        if self.momentum:
            buf = self.slot(var, "momentum")
            b = ops.add(ops.mul(fb.read(buf), self.momentum), g)
            fb.assign(buf, b)
            g = ops.add(g, ops.mul(b, self.momentum)) if self.nesterov else b
        return ops.sub(value, ops.mul(g, lr))


class Adam(Optimizer):
    """Adam as torch.optim.Adam (bias-corrected moments; eps added to the corrected sqrt(v))."""
    decoupled = False

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-8, **kw):
        super().__init__(learning_rate, **kw)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)

    def update(self, fb, var, value, g, lr, step):
        if self.decoupled and self.weight_decay:
            value = ops.mul(value, ops.sub(1.0, ops.mul(lr, self.weight_decay)))
        elif not self.decoupled:
            g = self._decayed(value, g)
        m_slot, v_slot = self.slot(var, "m"), self.slot(var, "v")
        m = ops.add(ops.mul(fb.read(m_slot), self.beta_1), ops.mul(g, 1.0 - self.beta_1))
        v = ops.add(ops.mul(fb.read(v_slot), self.beta_2), ops.mul(ops.square(g), 1.0 - self.beta_2))
        fb.assign(m_slot, m)
        fb.assign(v_slot, v)
        t = ops.add(step, 1.0)
        ones = ops.ones_like(t)
        bias1 = ops.sub(1.0, ops.pow_(ops.mul(ones, self.beta_1), t))
        bias2 = ops.sub(1.0, ops.pow_(ops.mul(ones, self.beta_2), t))
        denom = ops.add(ops.div(ops.sqrt(v), ops.sqrt(bias2)), self.epsilon)
        return ops.sub(value, ops.mul(ops.div(lr, bias1), ops.div(m, denom)))


class AdamW(Adam):
    """Adam with decoupled weight decay, as torch.optim.AdamW (default weight_decay 0.01)."""
    decoupled = True

    def __init__(self, learning_rate=0.001, weight_decay=0.01, **kw):
        super().__init__(learning_rate, weight_decay=weight_decay, **kw)


class RMSProp(Optimizer):
    """RMSProp as torch.optim.RMSprop: v = alpha v + (1 - alpha) g^2; step g / (sqrt(v) + eps)."""

    def __init__(self, learning_rate=0.01, rho=0.99, momentum=0.0, epsilon=1e-8, **kw):
        super().__init__(learning_rate, **kw)
        self.rho, self.momentum, self.epsilon = float(rho), float(momentum), float(epsilon)

    def update(self, fb, var, value, g, lr, step):
        g = self._decayed(value, g)
        v_slot = self.slot(var, "rms")
        v = ops.add(ops.mul(fb.read(v_slot), self.rho), ops.mul(ops.square(g), 1.0 - self.rho))
        fb.assign(v_slot, v)
        d = ops.div(g, ops.add(ops.sqrt(v), self.epsilon))
        if self.momentum:
            buf = self.slot(var, "momentum")
            d = ops.add(ops.mul(fb.read(buf), self.momentum), d)
            fb.assign(buf, d)
        return ops.sub(value, ops.mul(d, lr))


class Adagrad(Optimizer):
    """Adagrad as torch.optim.Adagrad: sum += g^2; step g / (sqrt(sum) + eps)."""

    def __init__(self, learning_rate=0.01, initial_accumulator_value=0.0, epsilon=1e-10, **kw):
        super().__init__(learning_rate, **kw)
        self.initial, self.epsilon = float(initial_accumulator_value), float(epsilon)

    def update(self, fb, var, value, g, lr, step):
        g = self._decayed(value, g)
        acc = self.slot(var, "accumulator", self.initial)
        s = ops.add(fb.read(acc), ops.square(g))
        fb.assign(acc, s)
        return ops.sub(value, ops.mul(ops.div(g, ops.add(ops.sqrt(s), self.epsilon)), lr))
