"""Recurrent cells in loop bodies as one step each: the LSTM, GRU and SimpleRNN steps and their gradients.

frontend/nn/recurrent.py traces an LSTM step as FULLY_CONNECTED(h, U) + x W, four SLICEs, three
LOGISTICs and two TANHs and the state update (and, with a mask, SELECT_V2s that keep the state over
padded steps); the gradient of the loop (ops/control.py) recomputes that step in the backward body
and applies each op's gradient rule: some forty steps, four PADs among them, every iteration (a GRU
step is much the same). Each subgraph is written below as a spec (`Spec`: ops, wiring, attributes
and constants), matched node for node; its kernel runs the same NumPy operations on the same
operands (the gates' activations over one contiguous [gates, batch, units] array: element by element
the same), so that the values are the op-by-op values bit for bit. An input that the body reads
from a tensor list's slot (GATHER_ND) is read by the step itself, without a copy. Anything else runs
op by op.
"""
from __future__ import annotations

import functools

import numpy as np

from ...core.registry import get_op
from . import lists
from .graph import Fused

FLOATS = ("float32", "float64")


# -- specs and the matcher ----------------------------------------------------------------------------
class Spec:
    """A subgraph: `entries` maps a value's name to (op, args[, attrs]); an arg is another entry's
    name, "$name" for an input of the fused step, or a constant (a number or a nested list).
    `root` is the entry matching starts from; `outputs` are the entries the step gives out, and
    `inputs` the order in which the kernel takes its inputs."""

    def __init__(self, entries, root, outputs, inputs):
        """See the class."""
        self.entries, self.root, self.outputs, self.inputs = entries, root, outputs, inputs


class Match:
    """One attempt to match a Spec: the node of each entry and the tensor of each input so far."""

    def __init__(self, graph, spec):
        """Nothing matched yet."""
        self.graph, self.spec = graph, spec
        self.nodes, self.inputs = {}, {}

    def unify(self, name, tensor) -> bool:
        """Whether `tensor` can be the value `name` stands for (binding entries and inputs on the way)."""
        graph = self.graph
        if tensor < 0:
            return False
        if not isinstance(name, str):
            data = graph.constant(tensor)
            return data is not None and _same_constant(data, name, graph.dtype(tensor))
        if name.startswith("$"):
            return self.inputs.setdefault(name[1:], tensor) == tensor
        k = graph.made_by(tensor)
        if k is None:
            return False
        if name in self.nodes:
            return self.nodes[name] == k
        op, args, *rest = self.spec.entries[name]
        node = graph.node(k)
        if node.op != op or len(node.inputs) != len(args) or len(node.outputs) != 1 or not _attrs_agree(node, rest):
            return False
        self.nodes[name] = k
        return all(self.unify(a, t) for a, t in zip(args, node.inputs))

    def extend(self) -> bool:
        """Find the entries that matching from the root did not reach among the users of the values
        found (a step's other outputs); False when one of them is not there."""
        while True:
            todo = [n for n in self.spec.entries if n not in self.nodes]
            if not todo:
                return True
            if not any(self._find(name) for name in todo):
                return False

    def _find(self, name) -> bool:
        """Match entry `name` at a user of a value already matched; False when none fits."""
        op, args, *_ = self.spec.entries[name]
        for a in args:
            known = self.inputs.get(a[1:]) if isinstance(a, str) and a.startswith("$") else (
                self.graph.node(self.nodes[a]).outputs[0] if isinstance(a, str) and a in self.nodes else None)
            if known is None:
                continue
            for k in self.graph.consumers.get(known, []):
                if self.graph.op(k) != op or k in self.nodes.values():
                    continue
                saved = dict(self.nodes), dict(self.inputs)
                if self.unify(name, self.graph.node(k).outputs[0]):
                    return True
                self.nodes, self.inputs = saved
        return False

    def tensor(self, name):
        """The tensor an entry or ("$name") an input was matched to."""
        return self.inputs[name[1:]] if name.startswith("$") else self.graph.node(self.nodes[name]).outputs[0]


def _fusable(graph, nodes, outputs) -> bool:
    """graph.fusable, where a user that only takes a value's shape does not count: a layer that returns
    sequences recomputes h' in the backward body only for the shape of the zeros of its gradient, which
    lists.py's "zeros of a shape" step makes without it."""
    steps = getattr(graph, "shape_only_steps", None)
    if steps is None:
        found = (lists.match(graph, k) for k in range(len(graph.nodes)) if graph.op(k) == "zeros_like")
        steps = graph.shape_only_steps = [set(f.nodes) for f in found if f is not None]
    members, last = set(nodes), max(nodes)
    shape_only = set().union(*[s for s in steps if not s & members])
    for k in nodes:
        for o in graph.node(k).outputs:
            users = set(graph.consumers.get(o, [])) - members
            if o in outputs:
                if any(u <= last for u in users):
                    return False
            elif users - shape_only or o in graph.function_outputs:
                return False
    return True


def _same_constant(data, want, dtype) -> bool:
    """Whether a constant is the spec's: a float scalar of the subgraph's dtype, or integers."""
    data = np.asarray(data)
    if isinstance(want, float):  # a float scalar of the subgraph's own dtype
        return dtype in FLOATS and data.size == 1 and float(data.reshape(())) == want
    return data.dtype.kind == "i" and data.tolist() == want


def _attrs_agree(node, rest) -> bool:
    """Whether the node's attributes are the spec's (no fused activation, plain FULLY_CONNECTED weights)."""
    attrs = node.attrs
    if attrs.get("fused_activation_function", "NONE") != "NONE":
        return False
    if node.op == "fully_connected" and (attrs.get("weights_format", "DEFAULT") != "DEFAULT"
                                         or attrs.get("keep_num_dims", False)):
        return False
    want = rest[0] if rest else {}
    if node.op == "batch_matmul":
        want = {"adj_x": False, "adj_y": False, **want}
    return all(attrs.get(key, False) == value for key, value in want.items())


def fuse(graph, k, spec, name, kernel):
    """The Fused step of `spec` matched with its root at node k, or None."""
    m = Match(graph, spec)
    if not m.unify(spec.root, graph.node(k).outputs[0]) or not m.extend():
        return None
    inputs = [m.tensor(f"${n}") for n in spec.inputs]
    outputs = [m.tensor(n) for n in spec.outputs]
    nodes = sorted(set(m.nodes.values()))
    values = inputs + outputs + [graph.node(n).outputs[0] for n in nodes]
    if any(None in graph.shape(t) for t in values) or not _fusable(graph, nodes, outputs):
        return None
    dtype = graph.dtype(outputs[0])
    if dtype not in FLOATS or any(graph.dtype(t) != ("bool" if n == "keep" else dtype)
                                  for n, t in zip(spec.inputs + spec.outputs, inputs + outputs)):
        return None
    reads = [_slot_read(graph, t, nodes, outputs) for t in inputs]
    if any(reads):  # inputs read from a tensor list's slot: the step reads them itself
        nodes = sorted(set(nodes).union(r[0] for r in reads if r))
        inputs = [x for t, r in zip(inputs, reads) for x in (r[1:] if r else [t])]
        kernel = SlotReads(kernel, [bool(r) for r in reads])
    return Fused(name, kernel, nodes, inputs, outputs)


def _slot_read(graph, tensor, nodes, outputs):
    """(the node, the list, the index) when `tensor` is GATHER_ND(list, index) of one slot of a list that
    only the step's nodes use, else None."""
    k = graph.made_by(tensor, "gather_nd")
    if k is None:
        return None
    lst, index = graph.node(k).inputs
    if tuple(graph.shape(index)) != (1,) or graph.dtype(index) not in ("int32", "int64") or len(graph.shape(lst)) < 2:
        return None
    if tensor in graph.function_outputs or not set(graph.consumers.get(tensor, [])) <= set(nodes):
        return None
    return k, lst, index


class SlotReads:
    """A step's kernel, with some of its inputs given as (list, index) and read as GATHER_ND reads one
    slot (a view here: the kernels never give an input's memory out)."""

    def __init__(self, kernel, read):
        """`read`: for each input of the kernel, whether it comes as a (list, index) pair."""
        self.kernel, self.read = kernel, read

    def __call__(self, *args):
        """The kernel on the inputs, the slots read."""
        values, at = [], 0
        for read in self.read:
            if read:
                lst, index = args[at], args[at + 1]
                i = int(index[0])
                if not 0 <= i < lst.shape[0]:
                    raise IndexError(f"gather_nd index [{i}] is out of range for params {list(lst.shape)}")
                values.append(lst[i])
                at += 2
            else:
                values.append(args[at])
                at += 1
        return self.kernel(*values)


# -- the kernels' shared parts ------------------------------------------------------------------------------
def _gate_major(a, gates, u):
    """A [batch, gates * units] array's gate blocks as a [gates, batch, units] view (what a contiguous
    copy of it is laid out as: ufuncs on contiguous blocks cost a fraction of those on strided ones)."""
    return a.reshape(a.shape[0], gates, u).transpose(1, 0, 2)


def _logistic(x):
    """LOGISTIC as its kernel computes it, 0.5 * (1 + tanh(0.5 x)), into a new contiguous array."""
    s = np.multiply(x, 0.5)
    np.tanh(s, out=s)
    np.add(s, 1, out=s)
    return np.multiply(s, 0.5, out=s)


def _all(keep, a) -> bool:
    """Whether every row of `a` [batch, units] is kept (a step before the shortest sequence ends) by
    `keep` ([batch, 1] or [batch, units], so that SELECT_V2 gives a's shape)."""
    return (keep.ndim == a.ndim == 2 and keep.shape[0] == a.shape[0] and keep.shape[1] in (1, a.shape[1])
            and np.count_nonzero(keep) == keep.size)


def _kept(g, keep):
    """SELECT_V2(keep, g, 0) and SELECT_V2(keep, 0, g): the gradient taken by the step and passed on
    (g itself and zeros when every row is kept: the same values)."""
    if _all(keep, g):
        return g, np.zeros_like(g)
    zero = np.zeros((), g.dtype)
    return np.where(keep, g, zero), np.where(keep, zero, g)


def _select(keep, new, old):
    """SELECT_V2(keep, new, old) of a step's new state (`new` itself when every row is kept)."""
    return new if _all(keep, new) and old.shape == new.shape else np.where(keep, new, old)


def _sigmoid_slope(s):
    """s * (1 - s), as MUL(s, SUB(1, s))."""
    return np.multiply(s, np.subtract(1, s))


# -- LSTM ---------------------------------------------------------------------------------------------
def _lstm_step(u):
    """The LSTM step of frontend/nn/recurrent.py: gates (i, f, g, o) of z = xw + FC(h, U)."""
    size = [-1, u]
    return {
        "y": ("fully_connected", ["$h", "$U"]), "z": ("add", ["$xw", "y"]),
        "zi": ("slice", ["z", [0, 0], size]), "zf": ("slice", ["z", [0, u], size]),
        "zg": ("slice", ["z", [0, 2 * u], size]), "zo": ("slice", ["z", [0, 3 * u], size]),
        "sf": ("logistic", ["zf"]), "fc": ("mul", ["sf", "$c"]),
        "si": ("logistic", ["zi"]), "tg": ("tanh", ["zg"]), "ig": ("mul", ["si", "tg"]),
        "nc": ("add", ["fc", "ig"]), "so": ("logistic", ["zo"]), "tc": ("tanh", ["nc"]),
    }


@functools.lru_cache(maxsize=64)
def lstm_forward_spec(u, masked):
    """The LSTM step: (c', h'), with a mask the state kept over padded steps."""
    entries = {**_lstm_step(u), "nh": ("mul", ["so", "tc"])}
    if not masked:
        return Spec(entries, "nh", ["nc", "nh"], ["xw", "h", "U", "c"])
    entries.update({"h_out": ("select_v2", ["$keep", "nh", "$h"]), "c_out": ("select_v2", ["$keep", "nc", "$c"])})
    return Spec(entries, "h_out", ["c_out", "h_out"], ["xw", "h", "U", "c", "keep"])


@functools.lru_cache(maxsize=64)
def lstm_backward_spec(u, masked):
    """The LSTM step recomputed and its vector-Jacobian product, as ops/control.py's while_vjp
    generates it: dz (the gates' gradient), dh, dc and dU (this step's part of U's gradient)."""
    e = _lstm_step(u)
    gh, gc = ("gh1", "gc1") if masked else ("$gh", "$gc")
    if masked:
        e.update({"zc": ("zeros_like", ["$gc"]), "gc1": ("select_v2", ["$keep", "$gc", "zc"]),
                  "gc0": ("select_v2", ["$keep", "zc", "$gc"]),
                  "zh": ("zeros_like", ["$gh"]), "gh1": ("select_v2", ["$keep", "$gh", "zh"]),
                  "gh0": ("select_v2", ["$keep", "zh", "$gh"]),
                  "dc": ("add", ["gc0", "dcf"]), "dh": ("add", ["gh0", "dhm"])})
    e.update({
        "dso": ("mul", [gh, "tc"]), "dtc": ("mul", [gh, "so"]), "tc2": ("square", ["tc"]),
        "dtanh_c": ("sub", [1.0, "tc2"]), "dnc_h": ("mul", ["dtc", "dtanh_c"]), "dnc": ("add", [gc, "dnc_h"]),
        "oso": ("sub", [1.0, "so"]), "dso_f": ("mul", ["so", "oso"]), "dzo": ("mul", ["dso", "dso_f"]),
        "dsi": ("mul", ["dnc", "tg"]), "dtg": ("mul", ["dnc", "si"]), "tg2": ("square", ["tg"]),
        "dtanh_g": ("sub", [1.0, "tg2"]), "dzg": ("mul", ["dtg", "dtanh_g"]),
        "osi": ("sub", [1.0, "si"]), "dsi_f": ("mul", ["si", "osi"]), "dzi": ("mul", ["dsi", "dsi_f"]),
        "dsf": ("mul", ["dnc", "$c"]), "dcf": ("mul", ["dnc", "sf"]),
        "osf": ("sub", [1.0, "sf"]), "dsf_f": ("mul", ["sf", "osf"]), "dzf": ("mul", ["dsf", "dsf_f"]),
        "po": ("pad", ["dzo", [[0, 0], [3 * u, 0]]]), "pg": ("pad", ["dzg", [[0, 0], [2 * u, u]]]),
        "pog": ("add", ["po", "pg"]), "pf": ("pad", ["dzf", [[0, 0], [u, 2 * u]]]),
        "pogf": ("add", ["pog", "pf"]), "pi": ("pad", ["dzi", [[0, 0], [0, 3 * u]]]),
        "dz": ("add", ["pogf", "pi"]),
        "dhm": ("batch_matmul", ["dz", "$U"]), "dU": ("batch_matmul", ["dz", "$h"], {"adj_x": True}),
    })
    outputs = ["dz", "dh", "dc", "dU"] if masked else ["dz", "dhm", "dcf", "dU"]
    return Spec(e, "dz", outputs, ["xw", "h", "U", "c", "gh", "gc"] + (["keep"] if masked else []))


def _lstm_gates(xw, h, U, u):
    """The gates' activations (i, f, g, o) [4, batch, units] of z = xw + FC(h, U), computed as ADD,
    FULLY_CONNECTED, LOGISTIC and TANH compute them, element by element."""
    z = _gate_major(np.add(xw, np.dot(h, U.T)), 4, u)
    act = _logistic(z)  # contiguous [4, batch, units]; g's block is then replaced
    np.tanh(z[2], out=act[2])
    return act


def lstm_forward(xw, h, U, c, keep=None):
    """The LSTM step: (c', h'), or with `keep`, the state kept where keep is false."""
    si, sf, tg, so = _lstm_gates(xw, h, U, h.shape[-1])
    nc = np.add(np.multiply(sf, c), np.multiply(si, tg))
    nh = np.multiply(so, np.tanh(nc))
    if keep is None:
        return nc, nh
    return _select(keep, nc, c), _select(keep, nh, h)


def lstm_backward(xw, h, U, c, gh, gc, keep=None):
    """The LSTM step's vector-Jacobian product: (dz, dh, dc, dU) for the gradients gh, gc of the
    step's (h', c') (taken where keep is true, passed on where it is false)."""
    u = h.shape[-1]
    act = _lstm_gates(xw, h, U, u)
    si, sf, tg, so = act
    nc = np.add(np.multiply(sf, c), np.multiply(si, tg))
    tc = np.tanh(nc)
    if keep is not None:
        (gh, gh0), (gc, gc0) = _kept(gh, keep), _kept(gc, keep)
    dtc = np.multiply(gh, so)
    dnc = np.add(gc, np.multiply(dtc, np.subtract(1, np.square(tc))))
    grads = np.empty_like(act)  # the gradient at each gate's output: (dsi, dsf, dtg, dso)
    np.multiply(dnc, tg, out=grads[0])
    np.multiply(dnc, c, out=grads[1])
    np.multiply(dnc, si, out=grads[2])
    np.multiply(gh, tc, out=grads[3])
    slope = _sigmoid_slope(act)  # each gate's derivative: s (1 - s), and 1 - t^2 for g
    np.subtract(1, np.square(tg), out=slope[2])
    np.multiply(grads, slope, out=grads)
    dz = np.empty_like(xw)
    np.add(grads, 0, out=_gate_major(dz, 4, u))  # the PADs' zeros added in: -0 becomes +0, as ADD makes it
    dh, dc = np.dot(dz, U), np.multiply(dnc, sf)
    if keep is not None:
        dh, dc = np.add(gh0, dh), np.add(gc0, dc)
    return dz, dh, dc, np.dot(dz.T, h)


# -- GRU ----------------------------------------------------------------------------------------------
def _gru_step(u, blocks):
    """The GRU step of frontend/nn/recurrent.py: gates (z, r, n) from xw and hw = FC(h, U, b), gate g
    in block blocks[g] of the weights (GRU.gate_blocks)."""
    size = [-1, u]
    e = {"hw": ("fully_connected", ["$h", "$U", "$b"])}
    for gate, block in zip("zrn", blocks):
        e[f"x{gate}"] = ("slice", ["$xw", [0, block * u], size])
        e[f"h{gate}"] = ("slice", ["hw", [0, block * u], size])
    e.update({"az": ("add", ["xz", "hz"]), "z": ("logistic", ["az"]), "ar": ("add", ["xr", "hr"]),
              "r": ("logistic", ["ar"]), "rh": ("mul", ["r", "hn"]), "an": ("add", ["xn", "rh"]),
              "n": ("tanh", ["an"])})
    return e


@functools.lru_cache(maxsize=64)
def gru_forward_spec(u, masked, blocks):
    """The GRU step: h', with a mask the state kept over padded steps."""
    e = {**_gru_step(u, blocks), "d": ("sub", ["$h", "n"]), "zd": ("mul", ["z", "d"]), "nh": ("add", ["n", "zd"])}
    if not masked:
        return Spec(e, "nh", ["nh"], ["xw", "h", "U", "b"])
    e["h_out"] = ("select_v2", ["$keep", "nh", "$h"])
    return Spec(e, "h_out", ["h_out"], ["xw", "h", "U", "b", "keep"])


@functools.lru_cache(maxsize=64)
def gru_backward_spec(u, masked, blocks):
    """The GRU step recomputed and its vector-Jacobian product: dxw, dh, dU and db (the recurrent bias)."""
    e = _gru_step(u, blocks)
    iz, ir, in_ = blocks
    g = "g1" if masked else "$gh"
    if masked:
        e.update({"zg": ("zeros_like", ["$gh"]), "g1": ("select_v2", ["$keep", "$gh", "zg"]),
                  "g0": ("select_v2", ["$keep", "zg", "$gh"]), "dh1": ("add", ["g0", "dd"]),
                  "dh": ("add", ["dh1", "dhm"])})
    else:
        e["dh"] = ("add", ["dd", "dhm"])
    e.update({
        "hmn": ("sub", ["$h", "n"]), "dzz": ("mul", [g, "hmn"]), "dd": ("mul", [g, "z"]), "ndd": ("neg", ["dd"]),
        "dn": ("add", [g, "ndd"]), "n2": ("square", ["n"]), "sn": ("sub", [1.0, "n2"]), "dan": ("mul", ["dn", "sn"]),
        "dr": ("mul", ["dan", "hn"]), "dhn": ("mul", ["dan", "r"]),
        "phn": ("pad", ["dhn", _padding(in_, u)]), "pxn": ("pad", ["dan", _padding(in_, u)]),
        "sr": ("sub", [1.0, "r"]), "rr": ("mul", ["r", "sr"]), "dar": ("mul", ["dr", "rr"]),
        "pr": ("pad", ["dar", _padding(ir, u)]), "phr": ("add", ["phn", "pr"]), "pxr": ("add", ["pxn", "pr"]),
        "sz": ("sub", [1.0, "z"]), "zz": ("mul", ["z", "sz"]), "daz": ("mul", ["dzz", "zz"]),
        "pz": ("pad", ["daz", _padding(iz, u)]), "dhw": ("add", ["phr", "pz"]), "dxw": ("add", ["pxr", "pz"]),
        "dhm": ("batch_matmul", ["dhw", "$U"]), "dU": ("batch_matmul", ["dhw", "$h"], {"adj_x": True}),
        "db": ("sum", ["dhw", [0]], {"keep_dims": False}),
    })
    return Spec(e, "dxw", ["dxw", "dh", "dU", "db"], ["xw", "h", "U", "b", "gh"] + (["keep"] if masked else []))


def _padding(block, u, gates=3):
    """PAD's paddings that put a [batch, units] gradient at gate block `block` of [batch, gates * units]."""
    return [[0, 0], [block * u, (gates - 1 - block) * u]]


def _gru_gates(xw, h, U, b, u, blocks):
    """(the logistic of z and r as one [2, batch, units] array, z's and r's places in it, n, hw's n block)
    of the GRU step, as FULLY_CONNECTED (its bias added in place), ADD, MUL, LOGISTIC, TANH compute them."""
    iz, ir, in_ = blocks
    hw = np.dot(h, U.T)
    hw += b
    xg, hg = _gate_major(xw, 3, u), _gate_major(hw, 3, u)
    lo = min(iz, ir)  # z and r are next to each other in every order of GRU_BLOCKS
    at = (iz - lo, ir - lo)
    zr = _logistic(np.add(xg[lo:lo + 2], hg[lo:lo + 2]))
    n = np.tanh(np.add(xg[in_], np.multiply(zr[at[1]], hg[in_])))
    return zr, at, n, hg[in_]


def gru_forward(xw, h, U, b, keep=None, blocks=(0, 1, 2)):
    """The GRU step: h' = n + z (h - n), or with `keep`, h where keep is false."""
    zr, at, n, _ = _gru_gates(xw, h, U, b, h.shape[-1], blocks)
    nh = np.add(n, np.multiply(zr[at[0]], np.subtract(h, n)))
    return nh if keep is None else _select(keep, nh, h)


def gru_backward(xw, h, U, b, gh, keep=None, blocks=(0, 1, 2)):
    """The GRU step's vector-Jacobian product: (dxw, dh, dU, db) for the gradient gh of the step's h'."""
    u, (iz, ir, in_) = h.shape[-1], blocks
    zr, (at_z, at_r), n, hn = _gru_gates(xw, h, U, b, u, blocks)
    if keep is not None:
        gh, gh0 = _kept(gh, keep)
    dzz, dd = np.multiply(gh, np.subtract(h, n)), np.multiply(gh, zr[at_z])
    dan = np.multiply(np.add(gh, np.negative(dd)), np.subtract(1, np.square(n)))
    slope = _sigmoid_slope(zr)
    dhw, dxw = np.empty_like(xw), np.empty_like(xw)
    hw_g, xw_g = _gate_major(dhw, 3, u), _gate_major(dxw, 3, u)
    np.multiply(dzz, slope[at_z], out=hw_g[iz])
    np.multiply(np.multiply(dan, hn), slope[at_r], out=hw_g[ir])
    np.multiply(dan, zr[at_r], out=hw_g[in_])
    np.add(dhw, 0, out=dhw)  # the PADs' zeros added in: -0 becomes +0, as ADD makes it
    np.copyto(xw_g[iz], hw_g[iz])
    np.copyto(xw_g[ir], hw_g[ir])
    np.add(dan, 0, out=xw_g[in_])
    dh = np.add(np.add(gh0, dd) if keep is not None else dd, np.dot(dhw, U))
    return dxw, dh, np.dot(dhw.T, h), get_op("sum").kernel(dhw, AXIS_0, keep_dims=False)


AXIS_0 = np.zeros(1, np.int32)


# -- SimpleRNN (tanh) -----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def rnn_forward_spec(u, masked):
    """The SimpleRNN step (tanh): h', with a mask the state kept over padded steps."""
    e = {"y": ("fully_connected", ["$h", "$U"]), "z": ("add", ["$xw", "y"]), "nh": ("tanh", ["z"])}
    if not masked:
        return Spec(e, "nh", ["nh"], ["xw", "h", "U"])
    e["h_out"] = ("select_v2", ["$keep", "nh", "$h"])
    return Spec(e, "h_out", ["h_out"], ["xw", "h", "U", "keep"])


@functools.lru_cache(maxsize=64)
def rnn_backward_spec(u, masked):
    """The SimpleRNN step recomputed and its vector-Jacobian product: dz, dh and dU."""
    e = {"y": ("fully_connected", ["$h", "$U"]), "z": ("add", ["$xw", "y"]), "nh": ("tanh", ["z"]),
         "n2": ("square", ["nh"]), "sn": ("sub", [1.0, "n2"]), "dz": ("mul", ["g1" if masked else "$gh", "sn"]),
         "dhm": ("batch_matmul", ["dz", "$U"]), "dU": ("batch_matmul", ["dz", "$h"], {"adj_x": True})}
    if not masked:
        return Spec(e, "dz", ["dz", "dhm", "dU"], ["xw", "h", "U", "gh"])
    e.update({"zg": ("zeros_like", ["$gh"]), "g1": ("select_v2", ["$keep", "$gh", "zg"]),
              "g0": ("select_v2", ["$keep", "zg", "$gh"]), "dh": ("add", ["g0", "dhm"])})
    return Spec(e, "dz", ["dz", "dh", "dU"], ["xw", "h", "U", "gh", "keep"])


def rnn_forward(xw, h, U, keep=None):
    """The SimpleRNN step: h' = tanh(xw + FC(h, U)), or with `keep`, h where keep is false."""
    nh = np.tanh(np.add(xw, np.dot(h, U.T)))
    return nh if keep is None else _select(keep, nh, h)


def rnn_backward(xw, h, U, gh, keep=None):
    """The SimpleRNN step's vector-Jacobian product: (dz, dh, dU) for the gradient gh of its h'."""
    nh = np.tanh(np.add(xw, np.dot(h, U.T)))
    if keep is not None:
        gh, gh0 = _kept(gh, keep)
    dz = np.multiply(gh, np.subtract(1, np.square(nh)))
    dh = np.dot(dz, U)
    return dz, dh if keep is None else np.add(gh0, dh), np.dot(dz.T, h)


GRU_BLOCKS = ((0, 1, 2), (1, 0, 2))  # GRU.gate_blocks: Keras's order of (z, r, n), and PyTorch's


# -- the patterns ---------------------------------------------------------------------------------------
def _candidates(op, width):
    """(spec, step name, kernel) that may have their root at a node of `op` giving [batch, width]."""
    for masked in (True, False):
        if op == ("select_v2" if masked else "mul"):
            yield lstm_forward_spec(width, masked), "lstm step", lstm_forward
        for blocks in GRU_BLOCKS if op == ("select_v2" if masked else "add") else ():
            yield gru_forward_spec(width, masked, blocks), "gru step", functools.partial(gru_forward, blocks=blocks)
        if op == ("select_v2" if masked else "tanh"):
            yield rnn_forward_spec(width, masked), "simple rnn step", rnn_forward
        if op == "add" and width % 4 == 0:
            yield lstm_backward_spec(width // 4, masked), "lstm step gradient", lstm_backward
        for blocks in GRU_BLOCKS if op == "add" and width % 3 == 0 else ():
            yield (gru_backward_spec(width // 3, masked, blocks), "gru step gradient",
                   functools.partial(gru_backward, blocks=blocks))
        if op == "mul":
            yield rnn_backward_spec(width, masked), "simple rnn step gradient", rnn_backward


def match(graph, k):
    """The cell step (or step gradient) chosen for this function whose first node is node k, or None."""
    chosen = getattr(graph, "recurrent_steps", None)
    if chosen is None:
        chosen = graph.recurrent_steps = _choose(graph)
    return chosen.get(k)


def _choose(graph) -> dict:
    """Every match in the function, the largest first where two overlap (a step's gradient over the
    step recomputed in it, a masked step over the step it masks), by the first node of each."""
    found = []
    for k in range(len(graph.nodes)):
        if graph.op(k) not in ("select_v2", "mul", "add", "tanh"):
            continue
        shape = graph.shape(graph.node(k).outputs[0])
        if len(shape) != 2 or not shape[1]:
            continue
        for spec, name, kernel in _candidates(graph.op(k), shape[1]):
            step = fuse(graph, k, spec, name, kernel)
            if step is not None:
                found.append(step)
    # the "zeros of a shape" steps that _fusable counted on keep their nodes
    chosen, taken = {}, set().union(*getattr(graph, "shape_only_steps", []))
    for step in sorted(found, key=lambda f: -len(f.nodes)):
        if not taken & set(step.nodes):
            taken.update(step.nodes)
            chosen[min(step.nodes)] = step
    return chosen
