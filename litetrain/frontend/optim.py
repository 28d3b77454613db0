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
from ..core.trace import Tensor, TraceError, builder_of
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
NO_CLIPPING = float(np.finfo(np.float32).max)  # clip_norm's default when no clipping was converted


class UpdateControls:
    """What `convert` tells the optimizers of one traced signature (set on its FunctionBuilder as
    `update_controls`): whether updates are applied at all (`apply`: False for the ready-made
    get_gradients/evaluate, which only record what `minimize` was given), whether hyperparameters
    are run-time inputs, and the trainable groups whose bool inputs mask the updates."""

    def __init__(self, apply=True, runtime_hyperparameters=False, groups=None, taken=()):
        self.apply = apply
        self.runtime_hyperparameters = runtime_hyperparameters
        self.groups = groups            # a callable: variable path -> group name or None
        self.taken = set(taken)         # the author's input names
        self.inputs = {}                # input name -> (Tensor, default) added by library code
        self.captured = []              # (optimizer, loss, variables, gradients) of each minimize
        self.masked = []                # (group, variable path) of each masked update
        self._optimizers = []

    def input(self, fb, name, dtype, default):
        """The signature input `name` (created on first use, shared by later uses)."""
        if name not in self.inputs:
            if name in self.taken:
                raise TraceError(f"signature {fb.fn.name!r}: the input {name!r} that run-time optimizer "
                                 f"control adds clashes with an input of the same name; rename it")
            self.inputs[name] = (fb.input(name, dtype, ()), np.asarray(default, dtype))
        return self.inputs[name][0]

    def prefix(self, optimizer) -> str:
        """'' for the signature's first optimizer, '<its path>/' for any other (input names)."""
        if optimizer not in self._optimizers:
            self._optimizers.append(optimizer)
        return "" if self._optimizers[0] is optimizer else f"{optimizer.path or 'optimizer'}/"

    def group_of(self, var):
        return None if self.groups is None else self.groups(var.path)


class Optimizer(Module):
    """Base class: turns gradients into variable updates inside the traced signature.

    learning_rate: a float or a Schedule (computed from the step count in the graph); a call of
    `minimize`/`apply_gradients` may pass a tensor instead (e.g. a signature input) to set it at
    run time. weight_decay: L2 added to the gradient (decoupled in AdamW). clip_global_norm:
    rescale all gradients together so their global norm is at most this (as PyTorch's
    clip_grad_norm_). skip_nonfinite: when the loss or any gradient is not finite, the step
    changes no variable (weights, slots, step count) and the signature gets a bool output
    `step_skipped`; None (the default) follows `convert(..., nonfinite_guard=...)`.
    With `convert(..., runtime_hyperparameters=True)` every hyperparameter of `hyperparameters()`
    becomes an optional float32 input of the signature (its converted value the default); with
    `trainable_groups`, a bool input `trainable/<group>` per group skips the update of that
    group's variables and slots."""
    uses_step = False  # whether `update` reads the step count (then each trainable group keeps its own)

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

    def hyperparameters(self) -> dict:
        """The hyperparameters a call can set at run time, with their converted values (a
        Schedule's learning rate stays the schedule's)."""
        out = {} if isinstance(self.learning_rate, Schedule) else {"learning_rate": float(self.learning_rate)}
        out.update(self._own_hyperparameters())
        out["weight_decay"] = self.weight_decay
        out["clip_norm"] = NO_CLIPPING if self.clip_global_norm is None else float(self.clip_global_norm)
        return out

    def _own_hyperparameters(self) -> dict:
        return {}

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
        grads, variables = [g for g, _ in pairs], [v for _, v in pairs]
        fb = base = builder_of(grads)
        controls = getattr(base, "update_controls", None)
        if controls is not None and not controls.apply:
            controls.captured.append((self, loss, variables, grads))
            return
        guard = self.skip_nonfinite if self.skip_nonfinite is not None else fb.pb.options.nonfinite_guard
        if guard:
            fb = _GuardedUpdates(fb, grads + ([loss] if loss is not None else []))
        step_int = fb.read(self.iterations)
        step = ops.cast(step_int, "float32")
        hp = self._hyperparameter_values(base, controls, step, learning_rate)
        masks = [_mask(base, controls, v) for v in variables]
        if "clip_norm" in hp:
            grads = [g if m is None else ops.where(m, g, ops.zeros_like(g)) for g, m in zip(grads, masks)]
            grads = clip_by_global_norm(grads, hp["clip_norm"])
        group_steps = {}
        for g, var, mask in zip(grads, variables, masks):
            var_fb = fb if mask is None else _MaskedUpdates(fb, mask)
            var_step = step
            if mask is not None and self.uses_step:
                var_step = self._group_step(fb, controls.group_of(var), mask, group_steps)
            value = fb.read(var)
            if g.dtype != value.dtype:
                g = ops.cast(g, value.dtype)
            var_fb.assign(var, self.update(var_fb, var, value, g, hp, var_step))
        for state, count, mask in group_steps.values():
            _MaskedUpdates(fb, mask).assign(state, ops.add(count, 1))
        fb.assign(self.iterations, ops.add(step_int, 1))
        if guard:
            fb.finish()

    def _group_step(self, fb, group, mask, group_steps):
        """The step count of a trainable group (advanced only when the group is trained, as
        PyTorch counts each parameter's steps)."""
        if group not in group_steps:
            state = self.add_state(f"iterations/{group}", Buffer(np.int32(0)))
            count = fb.read(state)
            group_steps[group] = (state, count, mask)
        return ops.cast(group_steps[group][1], "float32")

    def _hyperparameter_values(self, fb, controls, step, override):
        """name -> a Python float (converted in) or a float32 scalar tensor (a run-time input)."""
        values = self.hyperparameters()
        if controls is not None and controls.runtime_hyperparameters:
            prefix = controls.prefix(self)
            for name, default in list(values.items()):
                if name == "learning_rate" and override is not None:
                    continue
                values[name] = controls.input(fb, prefix + name, "float32", default)
        elif self.clip_global_norm is None:
            del values["clip_norm"]
        values["learning_rate"] = self._learning_rate(fb, step, override, values.get("learning_rate"))
        return values

    def _learning_rate(self, fb, step, override, value):
        if override is not None:
            return fb.to_tensor(override, step)
        if isinstance(self.learning_rate, Schedule):
            return self.learning_rate(step)
        return value if isinstance(value, Tensor) else fb.const(float(value), "float32")

    @staticmethod
    def _decayed(value, g, weight_decay):
        if isinstance(weight_decay, Tensor) or weight_decay:
            return ops.add(g, ops.mul(value, weight_decay))
        return g

    def update(self, fb, var, value, g, hp, step):
        """The new value of `var` (and the slot updates); `hp` the hyperparameters by name
        (floats, or tensors when set at run time); `step` counts from 0."""
        raise NotImplementedError


def _mask(fb, controls, var):
    """The bool input that says whether `var`'s trainable group is trained (None: no group)."""
    group = None if controls is None else controls.group_of(var)
    if group is None:
        return None
    controls.masked.append((group, var.path))
    return controls.input(fb, f"trainable/{group}", "bool", True)


def _momentum_on(momentum):
    """Whether a momentum buffer is kept: always when momentum is a run-time input."""
    return isinstance(momentum, Tensor) or bool(momentum)


def _keep_when_zero(momentum, new, old):
    """A run-time momentum of 0 leaves the buffer as it was (PyTorch keeps no buffer then)."""
    return ops.where(ops.equal(momentum, 0.0), old, new) if isinstance(momentum, Tensor) else new


class _MaskedUpdates:
    """A FunctionBuilder whose assignments keep the old value unless `on` (a bool scalar tensor)
    is true: ASSIGN_VARIABLE(SELECT_V2(on, new, old)), builtin ops that LiteRT runs."""

    def __init__(self, fb, on):
        self._fb, self.on = fb, on

    def assign(self, state, value):
        old = self._fb.read(state)
        self._fb.assign(state, ops.where(self.on, self._fb.to_tensor(value, old), old))

    def __getattr__(self, name):
        return getattr(self._fb, name)


class _GuardedUpdates:
    """A FunctionBuilder whose assignments are made only when every checked tensor is finite: they
    are collected, and `finish` adds one IF whose then-branch makes them all and whose else-branch
    does nothing. Builtin ops that LiteRT runs; a good step pays for one sum per checked tensor and
    the IF, not for a select over every variable."""

    def __init__(self, fb, checked):
        self._fb = fb
        total = None  # a sum is an infinity or a NaN when a term is (or when it overflows float32)
        for t in checked:
            s = ops.cast(ops.reduce_sum(t), "float32")
            total = s if total is None else ops.add(total, s)
        self.ok = ops.equal(ops.mul(total, 0.0), 0.0)  # x * 0 is 0 for finite x, NaN otherwise (IEEE 754)
        skipped = ops.logical_not(self.ok)
        before = fb.reports.get("step_skipped")  # a second guarded update in the same signature
        fb.reports["step_skipped"] = skipped if before is None else ops.logical_not(
            ops.logical_and(ops.logical_not(before), self.ok))
        self._updates = []  # (state, new value), assigned by `finish`

    def assign(self, state, value):
        old = self._fb.read(state)
        self._updates.append((state, self._fb.to_tensor(value, old), old))

    def finish(self):
        """One IF picks the new values when the step is finite and the old ones otherwise (views
        either way); each variable is then assigned what it picked."""
        n = len(self._updates)
        picked = ops.cond(self.ok, lambda *v: list(v[:n]), lambda *v: list(v[n:]),
                          [new for _, new, _ in self._updates] + [old for _, _, old in self._updates],
                          name="finite_step")
        for (state, _, _), value in zip(self._updates, picked if n > 1 else [picked]):
            self._fb.assign(state, value)

    def __getattr__(self, name):
        return getattr(self._fb, name)


def clip_by_global_norm(grads, max_norm):
    """Scale gradients by min(1, max_norm / (global_norm + 1e-6)); max_norm a float or a tensor."""
    total = None
    for g in grads:
        s = ops.reduce_sum(ops.square(g))
        total = s if total is None else ops.add(total, s)
    norm = ops.add(ops.sqrt(total), 1e-6)
    if isinstance(max_norm, Tensor):  # max_norm / max(norm, max_norm): the same number, and no overflow
        scale = ops.div(max_norm, ops.maximum(norm, max_norm))  # for a huge max_norm (no clipping)
    else:
        scale = ops.minimum(ops.div(float(max_norm), norm), 1.0)
    return [ops.mul(g, scale) for g in grads]


def _one_minus(x):
    """1 - x for a float or a tensor (a run-time hyperparameter)."""
    return ops.sub(1.0, x) if isinstance(x, Tensor) else 1.0 - x


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as torch.optim.SGD."""

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, **kw):
        super().__init__(learning_rate, **kw)
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.momentum, self.nesterov = float(momentum), nesterov

    def _own_hyperparameters(self):
        return {"momentum": self.momentum}

    def update(self, fb, var, value, g, hp, step):
        g = self._decayed(value, g, hp["weight_decay"])
        momentum = hp["momentum"]
        if _momentum_on(momentum):
            buf = self.slot(var, "momentum")
            old = fb.read(buf)
            b = ops.add(ops.mul(old, momentum), g)
            fb.assign(buf, _keep_when_zero(momentum, b, old))
            g = ops.add(g, ops.mul(b, momentum)) if self.nesterov else b
        return ops.sub(value, ops.mul(g, hp["learning_rate"]))


class Adam(Optimizer):
    """Adam as torch.optim.Adam (bias-corrected moments; eps added to the corrected sqrt(v))."""
    decoupled = False
    uses_step = True

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-8, **kw):
        super().__init__(learning_rate, **kw)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)

    def _own_hyperparameters(self):
        return {"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}

    def update(self, fb, var, value, g, hp, step):
        lr, decay, beta_1, beta_2 = hp["learning_rate"], hp["weight_decay"], hp["beta_1"], hp["beta_2"]
        if self.decoupled and (isinstance(decay, Tensor) or decay):
            value = ops.mul(value, _one_minus(ops.mul(lr, decay)))
        elif not self.decoupled:
            g = self._decayed(value, g, decay)
        m_slot, v_slot = self.slot(var, "m"), self.slot(var, "v")
        m = ops.add(ops.mul(fb.read(m_slot), beta_1), ops.mul(g, _one_minus(beta_1)))
        v = ops.add(ops.mul(fb.read(v_slot), beta_2), ops.mul(ops.square(g), _one_minus(beta_2)))
        fb.assign(m_slot, m)
        fb.assign(v_slot, v)
        t = ops.add(step, 1.0)
        ones = ops.ones_like(t)
        bias1 = ops.sub(1.0, ops.pow_(ops.mul(ones, beta_1), t))
        bias2 = ops.sub(1.0, ops.pow_(ops.mul(ones, beta_2), t))
        denom = ops.add(ops.div(ops.sqrt(v), ops.sqrt(bias2)), hp["epsilon"])
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

    def _own_hyperparameters(self):
        return {"rho": self.rho, "momentum": self.momentum, "epsilon": self.epsilon}

    def update(self, fb, var, value, g, hp, step):
        g = self._decayed(value, g, hp["weight_decay"])
        rho, momentum = hp["rho"], hp["momentum"]
        v_slot = self.slot(var, "rms")
        v = ops.add(ops.mul(fb.read(v_slot), rho), ops.mul(ops.square(g), _one_minus(rho)))
        fb.assign(v_slot, v)
        d = ops.div(g, ops.add(ops.sqrt(v), hp["epsilon"]))
        if _momentum_on(momentum):
            buf = self.slot(var, "momentum")
            old = fb.read(buf)
            b = ops.add(ops.mul(old, momentum), d)
            fb.assign(buf, _keep_when_zero(momentum, b, old))
            d = _keep_when_zero(momentum, b, d)
        return ops.sub(value, ops.mul(d, hp["learning_rate"]))


class Adagrad(Optimizer):
    """Adagrad as torch.optim.Adagrad: sum += g^2; step g / (sqrt(sum) + eps)."""

    def __init__(self, learning_rate=0.01, initial_accumulator_value=0.0, epsilon=1e-10, **kw):
        super().__init__(learning_rate, **kw)
        self.initial, self.epsilon = float(initial_accumulator_value), float(epsilon)

    def _own_hyperparameters(self):
        return {"epsilon": self.epsilon}

    def update(self, fb, var, value, g, hp, step):
        g = self._decayed(value, g, hp["weight_decay"])
        acc = self.slot(var, "accumulator", self.initial)
        s = ops.add(fb.read(acc), ops.square(g))
        fb.assign(acc, s)
        return ops.sub(value, ops.mul(ops.div(g, ops.add(ops.sqrt(s), hp["epsilon"])), hp["learning_rate"]))
