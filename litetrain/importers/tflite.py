"""make_trainable: turn an inference-only .tflite file into a trainable one.

The file's serving function is replayed, op by op, into litetrain's tracer: the weights you choose
(all, the last N layers, by name, biases only) become trainable variables, every other weight
stays a constant, a loss on a chosen output and an optimizer are added, and the usual converter
passes write one file with `train`, `infer`, `save` and `restore` signatures. Gradients come from
litetrain's own rules, so they are builtin ops: with `portable_checkpoints=True` (save/restore
pass tensors instead of reading a file) the result needs no custom op and stock LiteRT trains it
too. Fused activations on the path of a gradient are split into their own ops (the same numbers;
a rule then differentiates the activation by itself). float16 weights behind DEQUANTIZE become
float32 variables when trained. In a full-integer-quantized file, a trained layer's int8 weights
and int32 bias become float32 variables (their dequantized values); that layer and everything after
it run as float ops, and the layers before it stay int8 (`_Replay`).

    content = make_trainable(open("model.tflite", "rb").read(), trainable="last:1",
                             loss="sparse_categorical_crossentropy", optimizer="sgd", learning_rate=0.01)
"""
from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field

import numpy as np

from .. import ops
from ..core.ir import Node, Program
from ..core.subgraphs import copy_node
from ..frontend import losses, optim
from ..frontend.convert import trace_program
from ..tflite import read_model, write_model
from ..frontend.module import Module, Param, TensorSpec

# op -> {input position: role} of the inputs that hold a layer's weights
WEIGHT_INPUTS = {
    "fully_connected": {1: "kernel", 2: "bias"},
    "conv_2d": {1: "kernel", 2: "bias"},
    "depthwise_conv_2d": {1: "kernel", 2: "bias"},
    "transpose_conv": {1: "kernel", 3: "bias"},
    "prelu": {1: "alpha"},
}
WEIGHT_INPUTS.update({f"quantized_{op}": WEIGHT_INPUTS[op]  # int8 layers: their dequantized weights train
                      for op in ("fully_connected", "conv_2d", "depthwise_conv_2d")})
ACTIVATION_OPS = {"RELU": "relu", "RELU6": "relu6", "TANH": "tanh"}
LOSSES = ("sparse_categorical_crossentropy", "categorical_crossentropy", "binary_crossentropy",
          "mean_squared_error")
_STRIP = re.compile(r"/(Conv2D|BiasAdd|MatMul|depthwise|Conv2D_bias|Relu6?|FusedBatchNormV3|Add|conv2d_transpose)\d*$")


class MakeTrainableError(ValueError):
    """The file, the choice of weights, the output or the loss do not fit; the message says how."""


@dataclass
class Weight:
    layer: str       # the layer's name
    role: str        # kernel, bias or alpha
    tensor: int      # the constant tensor in the serving function
    value: np.ndarray
    via: int | None = None  # the DEQUANTIZE/DENSIFY node that reads the stored constant, if any

    @property
    def name(self) -> str:
        return f"{self.layer}/{self.role}"


@dataclass
class Layer:
    name: str
    op: str
    node: int
    weights: list = field(default_factory=list)


def _producers(fn):
    return {o: k for k, n in enumerate(fn.nodes) for o in n.outputs}


def find_layers(program: Program, signature: str | None = None) -> list[Layer]:
    """The layers (nodes with constant weights) of the serving function, in execution order."""
    sig = _serving(program, signature)
    fn = program.functions[sig.function]
    made_by = _producers(fn)
    layers, taken = [], {}
    for k, node in enumerate(fn.nodes):
        roles = WEIGHT_INPUTS.get(node.op)
        if not roles:
            continue
        weights = []
        for pos, role in roles.items():
            if pos >= len(node.inputs) or node.inputs[pos] < 0:
                continue
            t = node.inputs[pos]
            via = None
            if fn.tensors[t].data is None and t in made_by and fn.nodes[made_by[t]].op in ("dequantize", "densify"):
                via = made_by[t]
                src = fn.nodes[via].inputs[0]
                if fn.tensors[src].data is None:
                    continue
                value = np.asarray(fn.tensors[src].data).astype(np.float32)
            elif fn.tensors[t].data is not None and fn.tensors[t].quant is not None:
                value = _dequantized(fn.tensors[t])  # an int8 weight, int32 bias: trained as float32
            elif fn.tensors[t].data is not None:
                value = np.array(fn.tensors[t].data)
            else:
                continue  # computed at run time: not a weight
            weights.append((role, t, value, via))
        if not weights:
            continue
        base = _STRIP.sub("", fn.tensors[node.outputs[0]].name.split(";")[-1])
        if "/" not in base and not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", base) or \
                base.startswith(("StatefulPartitionedCall", "PartitionedCall", "Identity")):
            base = node.op  # e.g. "StatefulPartitionedCall:0", "Identity": no layer name in the file
        n = taken.get(base, 0)
        taken[base] = n + 1
        name = base if n == 0 else f"{base}_{n}"
        layers.append(Layer(name, node.op, k, [Weight(name, r, t, v, via) for r, t, v, via in weights]))
    return layers


def select_weights(layers: list[Layer], trainable) -> list[Weight]:
    """The weights `trainable` chooses: "all", "biases", "last:N" or an int N (the last N layers),
    a name or glob pattern or a list of them (matching layer or weight names), or a callable
    taking a Weight."""
    every = [w for layer in layers for w in layer.weights]
    if callable(trainable):
        chosen = [w for w in every if trainable(w)]
    elif trainable == "all":
        chosen = every
    elif trainable in ("biases", "bias"):
        chosen = [w for w in every if w.role == "bias"]
    elif isinstance(trainable, int) or (isinstance(trainable, str) and trainable.startswith("last:")):
        n = trainable if isinstance(trainable, int) else int(trainable.split(":", 1)[1])
        if not 1 <= n <= len(layers):
            raise MakeTrainableError(f"the model has {len(layers)} layers with weights; cannot train the last {n}")
        chosen = [w for layer in layers[-n:] for w in layer.weights]
    else:
        patterns = [trainable] if isinstance(trainable, str) else list(trainable)
        chosen = [w for w in every if any(fnmatch.fnmatchcase(w.name, p) or fnmatch.fnmatchcase(w.layer, p)
                                          for p in patterns)]
        unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(w.name, p) or fnmatch.fnmatchcase(w.layer, p)
                                                    for w in every)]
        if unmatched:
            raise MakeTrainableError(f"no layer or weight matches {unmatched}; the layers are: "
                                     + ", ".join(layer.name for layer in layers))
    if not chosen:
        raise MakeTrainableError(f"trainable={trainable!r} chooses no weight")
    return chosen


def _serving(program, signature):
    if signature is not None:
        try:
            return program.signature(signature)
        except KeyError as e:
            raise MakeTrainableError(str(e.args[0])) from None
    if len(program.signatures) != 1:
        raise MakeTrainableError("the file has several signatures; name the one to train with signature=: "
                                 + ", ".join(s.key for s in program.signatures))
    return program.signatures[0]


def _loss(loss, from_logits):
    if isinstance(loss, losses.Loss):
        return loss
    table = {"sparse_categorical_crossentropy": lambda: losses.SparseCategoricalCrossentropy(from_logits),
             "categorical_crossentropy": lambda: losses.CategoricalCrossentropy(from_logits),
             "binary_crossentropy": lambda: losses.BinaryCrossentropy(from_logits),
             "mean_squared_error": losses.MeanSquaredError, "mse": losses.MeanSquaredError}
    if loss not in table:
        raise MakeTrainableError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)} or pass a litetrain Loss")
    return table[loss]()


def _optimizer(optimizer, learning_rate):
    if isinstance(optimizer, optim.Optimizer):
        return optimizer
    table = {"sgd": optim.SGD, "adam": optim.Adam, "adamw": optim.AdamW, "rmsprop": optim.RMSProp,
             "adagrad": optim.Adagrad}
    if str(optimizer).lower() not in table:
        raise MakeTrainableError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(table)}")
    return table[str(optimizer).lower()](learning_rate=learning_rate)


def _check_loss_fits(loss_name, output, info):
    """A classification loss on an output of one value per example is a regression by mistake."""
    classes = info.shape[-1] if info.shape else 1
    if loss_name in ("sparse_categorical_crossentropy", "categorical_crossentropy") and classes == 1:
        raise MakeTrainableError(f"output {output!r} has one value per example ({list(info.shape)}), but "
                                 f"{loss_name} needs one per class; for a regression choose loss=mean_squared_error")


def _label_spec(loss_name, out_info):
    shape = tuple(out_info.shape)
    if loss_name == "sparse_categorical_crossentropy":
        return TensorSpec(shape[:-1], "int32")
    return TensorSpec(shape, "float32" if out_info.quant is not None else out_info.dtype)  # a quantized output: float


def _dequantized(info) -> np.ndarray:
    from ..ops.quantization import dequantized
    return dequantized(np.asarray(info.data), info.quant.as_attr(), info.name)


def _is_quantized(info) -> bool:
    return info.quant is not None and info.dtype in ("int8", "uint8", "int16", "int32")


class _Replay:
    """Re-emits the serving function's nodes into a FunctionBuilder, with chosen weights read
    from Params and, when `split` is set, fused activations on gradient paths split off.

    In a quantized file, a layer whose weights train runs as its float op, and so does everything
    after it (gradients flow through float ops only): its quantized inputs are dequantized with the
    file's parameters, QUANTIZE/DEQUANTIZE on those float values become no-ops; the layers before
    stay quantized ops on integers."""

    def __init__(self, program, fn, params: dict[int, Param], via_nodes: set[int]):
        self.program, self.fn, self.params, self.via_nodes = program, fn, params, via_nodes

    def _as_float(self, fb, node, env, floating, k):
        """A quantized node on float values (a trained weight or a float input): (op, inputs, attrs),
        or None when it passes its input on (QUANTIZE, DEQUANTIZE of a float value)."""
        from ..ops.quantization import QUANTIZED
        if node.op in ("quantize", "dequantize"):
            return None
        op = next((f for f, name in QUANTIZED.items() if name == node.op), node.op)
        ins = []
        for i in node.inputs:
            info = None if i < 0 else self.fn.tensors[i]
            if i < 0:
                ins.append(None)
            elif i in env and (i in floating or not _is_quantized(info)):
                ins.append(env[i])
            elif i in env:
                ins.append(fb.emit("dequantize", [env[i]], {"quantization": (info.quant.as_attr(), None)}))
            elif info.data is not None:
                ins.append(fb.const(_dequantized(info) if _is_quantized(info) else info.data,
                                    "float32" if _is_quantized(info) else info.dtype))
            else:
                raise MakeTrainableError(f"node {k} ({node.op}) reads tensor {i} before it is computed")
        attrs = {key: v for key, v in node.attrs.items() if key not in ("quantization", "out_dtype")}
        return op, ins, attrs

    def run(self, fb, inputs: dict, split: bool, stop: int | None = None):
        """Emit the nodes (all, or until tensor `stop` is computed); returns tensor -> traced value."""
        env = dict(inputs)
        tainted = set()
        for t, param in self.params.items():
            env[t] = fb.read(param)
            tainted.add(t)
        floating = {t for t in env if _is_quantized(self.fn.tensors[t]) and env[t].dtype in ("float32", "float16")}
        for k, node in enumerate(self.fn.nodes):
            if node.op == "call_once":
                continue
            if k in self.via_nodes and all(o in env for o in node.outputs):
                continue  # a DEQUANTIZE/DENSIFY whose output is a trained variable now
            if node.op in ("var_handle", "read_variable", "assign_variable"):
                raise MakeTrainableError("the file already has variables; make_trainable takes inference-only files")
            op, ins, attrs = node.op, None, dict(node.attrs)
            if any(i in floating for i in node.inputs):  # float values reach a quantized part: it runs in float
                lowered = self._as_float(fb, node, env, floating, k)
                if lowered is None:
                    env[node.outputs[0]] = env[node.inputs[0]]
                    floating.add(node.outputs[0])
                    tainted.update(node.outputs if node.inputs[0] in tainted else ())
                    continue
                op, ins, attrs = lowered
                floating.update(o for o in node.outputs if _is_quantized(self.fn.tensors[o]))
            ins = ins if ins is not None else self._inputs(fb, node, env, k)
            act = attrs.get("fused_activation_function", "NONE")
            on_path = any(i in tainted for i in node.inputs if i >= 0)
            if split and on_path and act != "NONE":
                if act not in ACTIVATION_OPS and act != "RELU_N1_TO_1":
                    raise MakeTrainableError(f"node {k} ({node.op}) has fused activation {act}, which has no gradient")
                attrs["fused_activation_function"] = "NONE"
            if any(key.endswith("subgraph_index") for key in attrs):  # WHILE, IF: their functions are copied
                outs = copy_node(fb, Node(node.op, node.inputs, node.outputs, attrs, node.where or f"node {k}"), ins,
                                 [self.fn.tensors[o] for o in node.outputs], self.program.functions)
            else:
                out = fb.emit(op, ins, attrs, where=node.where or f"node {k}")
                outs = out if isinstance(out, tuple) else (out,)
            if split and on_path and act != "NONE":
                y = outs[0]
                outs = (getattr(ops, ACTIVATION_OPS[act])(y) if act in ACTIVATION_OPS
                        else ops.minimum(ops.maximum(y, -1.0), 1.0),) + outs[1:]
            for o, t in zip(node.outputs, outs):
                env[o] = t
                if on_path:
                    tainted.add(o)
            if stop is not None and stop in env:
                break
        return env

    def _inputs(self, fb, node, env, k):
        ins = []
        for i in node.inputs:
            if i < 0:
                ins.append(None)
            elif i in env:
                ins.append(env[i])
            elif self.fn.tensors[i].data is not None:
                ins.append(fb.const(self.fn.tensors[i].data, self.fn.tensors[i].dtype))
            else:
                raise MakeTrainableError(f"node {k} ({node.op}) reads tensor {i} before it is computed")
        return ins


class TFLiteModule(Module):
    """An inference .tflite file's serving function as a litetrain layer, `net(x, training=False)`:
    its nodes are replayed into whatever function calls it (a base model for transfer learning, say).

    output: "bottleneck" (default: the input of the serving function's last FULLY_CONNECTED, the
    features a classifier reads; the only output when there is none), a serving output's name, or
    the name of any tensor of the serving function. trainable: None (every weight stays a constant
    of the file) or a choice of `select_weights` ("last:N", "biases", names or patterns): those
    weights become Params (trainable) named "<layer>/<role>". `stages` lists, per layer that has
    Params, its Params in execution order (what fine-tuning "the last N stages" counts)."""

    def __init__(self, model, output="bottleneck", trainable=None, signature=None, name=None):
        if isinstance(model, (str, os.PathLike)):
            with open(model, "rb") as f:
                model = f.read()
        program = read_model(bytes(model)) if not isinstance(model, Program) else model
        sig = _serving(program, signature)
        if len(sig.inputs) != 1:
            raise MakeTrainableError(f"a base model takes one input; signature {sig.key!r} has {sorted(sig.inputs)}")
        fn = program.functions[sig.function]
        self.name = name
        self._input = next(iter(sig.inputs.values()))
        self.input_shape = tuple(fn.tensors[self._input].shape)
        self._output = self._find_output(fn, sig, output)
        layers = find_layers(program, sig.key)
        made_by = _producers(fn)
        needed = self._ancestors(fn, made_by, self._output)
        layers = [layer for layer in layers if layer.node in needed]
        chosen = select_weights(layers, trainable) if trainable is not None else []
        params = {}
        for w in chosen:
            params[w.tensor] = self.add_state(w.name, Param(np.array(w.value, np.float32 if w.via is not None else None)))
        self.stages = [[params[w.tensor] for w in layer.weights if w.tensor in params] for layer in layers]
        self.stages = [stage for stage in self.stages if stage]
        self.layer_names = [layer.name for layer in layers]
        self._replay = _Replay(program, fn, params, {w.via for w in chosen if w.via is not None})

    @staticmethod
    def _find_output(fn, sig, output) -> int:
        if output == "bottleneck":
            fcs = [n for n in fn.nodes if n.op in ("fully_connected", "quantized_fully_connected")]
            if fcs:
                return fcs[-1].inputs[0]
            if len(sig.outputs) == 1:
                return next(iter(sig.outputs.values()))
            raise MakeTrainableError(f"the file has no FULLY_CONNECTED classifier and several outputs "
                                     f"{sorted(sig.outputs)}: name the output to use")
        if output in sig.outputs:
            return sig.outputs[output]
        named = [i for i, t in enumerate(fn.tensors) if t.name == output]
        if len(named) == 1:
            return named[0]
        raise MakeTrainableError(f"no output or tensor named {output!r}; the serving outputs are {sorted(sig.outputs)} "
                                 "(or give the name of a tensor of the serving function)")

    @staticmethod
    def _ancestors(fn, made_by, tensor) -> set:
        """The nodes `tensor` depends on."""
        nodes, todo = set(), [tensor]
        while todo:
            k = made_by.get(todo.pop())
            if k is None or k in nodes:
                continue
            nodes.add(k)
            todo.extend(i for i in fn.nodes[k].inputs if i >= 0)
        return nodes

    def __call__(self, x, training=False):
        """Float input and output: a quantized file's integer input is quantized from `x`, a quantized
        output (an int8 bottleneck, say) is dequantized with the file's parameters."""
        given = self._replay.fn.tensors[self._input]
        if given.quant is not None and given.dtype != x.dtype and x.dtype in ("float32", "float16"):
            x = x.fb.emit("quantize", [x], {"quantization": (None, given.quant.as_attr()), "out_dtype": given.dtype})
        env = self._replay.run(x.fb, {self._input: x}, split=bool(self._replay.params), stop=self._output)
        y = env[self._output]
        made = self._replay.fn.tensors[self._output]
        if made.quant is not None and y.dtype in ("int8", "uint8", "int16"):
            y = y.fb.emit("dequantize", [y], {"quantization": (made.quant.as_attr(), None)})
        return y


def make_trainable(model, trainable="last:1", *, output=None, loss="sparse_categorical_crossentropy",
                   from_logits=None, optimizer="sgd", learning_rate=0.01, signature=None,
                   portable_checkpoints=False) -> bytes:
    """An inference .tflite file (bytes or a path) -> the bytes of a trainable one.

    trainable: which weights train (see `select_weights`); the others stay constants.
    output: the serving output the loss is computed on (default: the only output).
    loss: a name in LOSSES or a litetrain Loss; from_logits: whether that output is logits
    (default: True unless the output comes from a SOFTMAX or LOGISTIC op).
    optimizer: "sgd", "adam", ... or a litetrain Optimizer; learning_rate for a named one.
    portable_checkpoints: save/restore pass tensors (builtins only: stock LiteRT runs the file)
    instead of reading and writing a checkpoint file with two custom ops.
    The result has signatures train(<inputs>, labels) -> loss, infer(<inputs>) -> the serving
    outputs, save and restore."""
    if isinstance(model, (str, os.PathLike)):
        with open(model, "rb") as f:
            model = f.read()
    program = read_model(bytes(model)) if not isinstance(model, Program) else model
    sig = _serving(program, signature)
    fn = program.functions[sig.function]
    layers = find_layers(program, sig.key)
    if not layers:
        raise MakeTrainableError("the serving function has no layer with constant weights to train")
    chosen = select_weights(layers, trainable)
    if output is None:
        if len(sig.outputs) != 1:
            raise MakeTrainableError(f"the signature has outputs {sorted(sig.outputs)}; name one with output=")
        output = next(iter(sig.outputs))
    if output not in sig.outputs:
        raise MakeTrainableError(f"no output {output!r}; the signature has {sorted(sig.outputs)}")
    out_index = sig.outputs[output]
    if from_logits is None:
        made_by = _producers(fn)
        last = fn.nodes[made_by[out_index]].op if out_index in made_by else None
        from_logits = last not in ("softmax", "logistic")
    loss_name = loss if isinstance(loss, str) else None
    _check_loss_fits(loss_name, output, fn.tensors[out_index])
    loss_fn = _loss(loss, from_logits)
    label_spec = _label_spec(loss_name, fn.tensors[out_index])
    in_specs = {name: TensorSpec(fn.tensors[i].shape, fn.tensors[i].dtype) for name, i in sig.inputs.items()}
    if "labels" in in_specs:
        raise MakeTrainableError("the serving signature already has an input named 'labels'")

    def infer(self, **kwargs):
        fb = next(iter(kwargs.values())).fb
        env = replay.run(fb, {sig.inputs[name]: t for name, t in kwargs.items()}, split=False)
        return {name: env[i] for name, i in sig.outputs.items()}

    def train(self, **kwargs):
        labels = kwargs.pop("labels")
        env = replay.run(labels.fb, {sig.inputs[name]: t for name, t in kwargs.items()}, split=True)
        value = loss_fn(labels, env[out_index])
        self.optimizer.minimize(value, list(params.values()))
        return {"loss": value}

    infer._litetrain_signature = dict(in_specs)
    train._litetrain_signature = {**in_specs, "labels": label_spec}
    imported = type("ImportedModel", (Module,), {"train": train, "infer": infer})()
    # a trained weight stands for its tensor (for float16/sparse weights: the DEQUANTIZE/DENSIFY output)
    params = {w.tensor: imported.add_state(w.name, Param(np.array(w.value, np.float32 if w.via is not None else None)))
              for w in chosen}
    imported.optimizer = _optimizer(optimizer, learning_rate)
    replay = _Replay(program, fn, params, {w.via for w in chosen if w.via is not None})
    new = trace_program(imported, ["train", "infer", "save", "restore"], portable_checkpoints=portable_checkpoints)
    new.metadata.update({k: v for k, v in program.metadata.items() if k not in new.metadata})
    return write_model(new)
