"""Quantized ops one at a time: a one-op .tflite file with quantized tensors (scales, zero points,
per-channel weights), run by litetrain and by LiteRT.

The reference is LiteRT's reference kernels (OpResolverType.BUILTIN_REF, TensorFlow Lite's written
definition of each integer kernel): integer outputs must be bit-identical, float outputs equal.
LiteRT's default kernels (optimized, XNNPACK) round some steps differently: they must agree within
one quantization step. Each file is also read back: the reader picks the quantized op from the
tensors' parameters and the result is the same; the planned executor and optimize=False agree.
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest

from litetrain.core.ir import Signature
from litetrain.core.trace import ProgramBuilder, TraceError
from litetrain.ops.quantization import QUANTIZED
from litetrain.runtime import Executor
from litetrain.tflite import read_model, write_model

litert = pytest.importorskip("ai_edge_litert.interpreter", reason="LiteRT's reference kernels are the oracle of "
                             "the quantized ops; ai-edge-litert is not installed")


def q(scale, zero=0, axis=0):
    """A quantization entry: per tensor (a number) or per channel (a sequence) along `axis`."""
    scales = tuple(float(np.float32(s)) for s in np.atleast_1d(scale))
    zeros = tuple(int(z) for z in np.broadcast_to(np.atleast_1d(zero), (len(scales),)))
    return (scales, zeros, axis)


class Op:
    """One quantized op: inputs as (array, is_constant), attributes, and each input's and the
    output's quantization entry (None for unquantized tensors such as shapes and paddings)."""

    def __init__(self, name, op, inputs, attrs, quant, default_tolerance=1):
        self.name, self.op, self.inputs, self.attrs, self.quant = name, op, inputs, attrs, quant
        self.default_tolerance = default_tolerance  # LiteRT's default kernels: quantization steps

    def __repr__(self):
        return self.name


def _rng(name):
    return np.random.default_rng(zlib.crc32(name.encode()))


def _ints(rng, shape, dtype="int8", lo=None, hi=None):
    info = np.iinfo(dtype)
    return rng.integers(info.min if lo is None else lo, (info.max if hi is None else hi) + 1, shape).astype(dtype)


def _conv_cases():
    out = []
    for name, (kh, kw, stride, dil, padding, act) in {
            "same-relu6": (3, 3, 1, 1, "SAME", "RELU6"), "valid-stride2": (3, 3, 2, 1, "VALID", "NONE"),
            "dilated-relu": (3, 3, 1, 2, "SAME", "RELU"), "1x1": (1, 1, 1, 1, "VALID", "NONE")}.items():
        rng = _rng(f"conv-{name}")
        cin, cout = 5, 6
        x = _ints(rng, (2, 9, 8, cin))
        w = _ints(rng, (cout, kh, kw, cin), lo=-127)
        b = rng.integers(-3000, 3000, cout).astype(np.int32)
        s_in, s_w = 0.04, rng.uniform(0.002, 0.01, cout)
        attrs = dict(padding=padding, stride_h=stride, stride_w=stride, dilation_h_factor=dil,
                     dilation_w_factor=dil, fused_activation_function=act)
        quant = (q(s_in, 5), q(s_w, 0, 0), q(s_in * s_w, 0, 0), q(0.15, -10))
        out.append(Op(f"conv_2d-{name}", "conv_2d", [(x, False), (w, True), (b, True)], attrs, quant))
    for name, (mult, stride, act) in {"m1-relu6": (1, 1, "RELU6"), "m2-stride2": (2, 2, "NONE")}.items():
        rng = _rng(f"dw-{name}")
        cin = 4
        x = _ints(rng, (2, 9, 9, cin))
        w = _ints(rng, (1, 3, 3, cin * mult), lo=-127)
        b = rng.integers(-2000, 2000, cin * mult).astype(np.int32)
        s_in, s_w = 0.03, rng.uniform(0.005, 0.02, cin * mult)
        attrs = dict(padding="SAME", stride_h=stride, stride_w=stride, depth_multiplier=mult,
                     fused_activation_function=act)
        quant = (q(s_in, -3), q(s_w, 0, 3), q(s_in * s_w, 0, 0), q(0.08, 7))
        out.append(Op(f"depthwise_conv_2d-{name}", "depthwise_conv_2d", [(x, False), (w, True), (b, True)],
                      attrs, quant))
    rng = _rng("fc")
    x = _ints(rng, (3, 20))
    w = _ints(rng, (7, 20), lo=-127)
    b = rng.integers(-5000, 5000, 7).astype(np.int32)
    out.append(Op("fully_connected-bias-relu", "fully_connected", [(x, False), (w, True), (b, True)],
                  dict(fused_activation_function="RELU"), (q(0.05, 2), q(0.01), q(0.0005), q(0.2, -5))))
    out.append(Op("fully_connected-no-bias", "fully_connected", [(x, False), (w, True)], {},
                  (q(0.05, 2), q(0.01), q(0.2, 3))))
    return out


def _elementwise_cases():
    rng = _rng("elementwise")
    a, c = _ints(rng, (2, 5, 6, 3)), _ints(rng, (2, 5, 6, 3))
    row = _ints(rng, (1, 1, 1, 3))
    out = [Op("add-relu", "add", [(a, False), (c, False)], dict(fused_activation_function="RELU"),
              (q(0.05, 3), q(0.02, -7), q(0.06, -20))),
           Op("add-broadcast", "add", [(a, False), (row, False)], {}, (q(0.05, 3), q(0.11, 1), q(0.1, 0))),
           Op("sub", "sub", [(a, False), (c, False)], {}, (q(0.05, 3), q(0.02, -7), q(0.07, 2))),
           Op("mul", "mul", [(a, False), (c, False)], {}, (q(0.05, 3), q(0.02, -7), q(0.03, 4))),
           Op("mul-gate", "mul", [(a, False), (row, False)], {}, (q(0.05, 3), q(1 / 256, -128), q(0.04, 1)))]
    x = _ints(rng, (2, 7, 6, 4))
    for padding in ("SAME", "VALID"):
        pool = dict(padding=padding, stride_h=2, stride_w=2, filter_height=3, filter_width=3)
        out.append(Op(f"average_pool_2d-{padding}", "average_pool_2d", [(x, False)], pool, (q(0.1, 4), q(0.1, 4))))
        out.append(Op(f"max_pool_2d-{padding}", "max_pool_2d", [(x, False)], pool, (q(0.1, 4), q(0.1, 4))))
    out.append(Op("mean-spatial", "mean", [(x, False), (np.array([1, 2], np.int32), True)], dict(keep_dims=True),
                  (q(0.1, 4), None, q(0.05, -2))))
    out.append(Op("mean-last", "mean", [(x, False), (np.array([3], np.int32), True)], dict(keep_dims=False),
                  (q(0.1, 4), None, q(0.1, 4))))
    return out


def _activation_cases():
    rng = _rng("activations")
    x = _ints(rng, (3, 10))
    img = _ints(rng, (2, 4, 5, 6))
    return [Op("softmax", "softmax", [(x, False)], dict(beta=1.0), (q(0.1, 5), q(1 / 256, -128))),
            Op("softmax-beta", "softmax", [(x, False)], dict(beta=0.5), (q(0.3, -2), q(1 / 256, -128))),
            Op("softmax-int16", "softmax", [(_ints(rng, (4, 12), "int16"), False)], dict(beta=1.0),
               (q(0.0004), q(1 / 32768))),
            Op("logistic", "logistic", [(x, False)], {}, (q(0.05, 1), q(1 / 256, -128))),
            Op("tanh", "tanh", [(x, False)], {}, (q(0.02, -4), q(1 / 128, 0))),
            Op("hard_swish", "hard_swish", [(img, False)], {}, (q(0.05, 10), q(0.04, -60))),
            Op("concatenation", "concatenation", [(img, False), (img[..., :2], False)], dict(axis=3),
               (q(0.05, 1), q(0.05, 1), q(0.05, 1))),
            Op("pad", "pad", [(img, False), (np.array([[0, 0], [1, 2], [2, 1], [0, 0]], np.int32), True)], {},
               (q(0.05, -9), None, q(0.05, -9))),
            Op("resize_bilinear", "resize_bilinear", [(img, False), (np.array([7, 9], np.int32), True)], {},
               (q(0.05, 2), None, q(0.05, 2))),
            Op("resize_bilinear-half-pixel", "resize_bilinear", [(img, False), (np.array([8, 10], np.int32), True)],
               dict(half_pixel_centers=True), (q(0.05, 2), None, q(0.05, 2))),
            Op("resize_bilinear-align-corners", "resize_bilinear",
               [(img, False), (np.array([7, 11], np.int32), True)], dict(align_corners=True),
               (q(0.05, 2), None, q(0.05, 2)))]


def _uint8_cases():
    """uint8 models (TensorFlow Lite's older quantization): asymmetric per-tensor weights too."""
    rng = _rng("uint8")
    x = _ints(rng, (2, 7, 6, 3), "uint8")
    w = _ints(rng, (4, 3, 3, 3), "uint8")
    b = rng.integers(-2000, 2000, 4).astype(np.int32)
    dw = _ints(rng, (1, 3, 3, 3), "uint8")
    fc_w, fc_x = _ints(rng, (5, 12), "uint8"), _ints(rng, (3, 12), "uint8")
    conv = dict(padding="SAME", stride_h=1, stride_w=1, fused_activation_function="RELU6")
    return [Op("uint8-conv_2d", "conv_2d", [(x, False), (w, True), (b, True)], conv,
               (q(0.02, 128), q(0.01, 120), q(0.0002), q(0.05, 100))),
            Op("uint8-depthwise_conv_2d", "depthwise_conv_2d", [(x, False), (dw, True), (b[:3], True)],
               dict(conv, depth_multiplier=1), (q(0.02, 128), q(0.01, 130), q(0.0002), q(0.03, 90))),
            Op("uint8-fully_connected", "fully_connected", [(fc_x, False), (fc_w, True), (np.resize(b, 5), True)], {},
               (q(0.02, 128), q(0.01, 125), q(0.0002), q(0.08, 130))),
            Op("uint8-add", "add", [(x, False), (x[::-1], False)], {}, (q(0.02, 128), q(0.03, 100), q(0.05, 120))),
            Op("uint8-average_pool_2d", "average_pool_2d", [(x, False)],
               dict(padding="SAME", stride_h=2, stride_w=2, filter_height=2, filter_width=2),
               (q(0.02, 128), q(0.02, 128))),
            Op("uint8-softmax", "softmax", [(fc_x, False)], dict(beta=1.0), (q(0.05, 128), q(1 / 256, 0))),
            Op("uint8-logistic", "logistic", [(fc_x, False)], {}, (q(0.05, 128), q(1 / 256, 0)))]


def _int16_cases():
    """16x8 quantization: int16 activations (zero point 0), int8 weights, int64 biases."""
    rng = _rng("int16")
    x = _ints(rng, (2, 6, 5, 3), "int16")
    w = _ints(rng, (4, 3, 3, 3), lo=-127)
    b = rng.integers(-200000, 200000, 4).astype(np.int64)
    s_w = rng.uniform(0.002, 0.01, 4)
    pool = dict(padding="SAME", stride_h=2, stride_w=2, filter_height=2, filter_width=2)
    return [Op("int16-conv_2d", "conv_2d", [(x, False), (w, True), (b, True)],
               dict(padding="SAME", stride_h=1, stride_w=1, fused_activation_function="RELU"),
               (q(0.0005), q(s_w, 0, 0), q(0.0005 * s_w, 0, 0), q(0.002))),
            Op("int16-fully_connected", "fully_connected",
               [(_ints(rng, (3, 10), "int16"), False), (w.reshape(4, -1)[:, :10].copy(), True), (b, True)], {},
               (q(0.0005), q(0.01), q(0.000005), q(0.003))),
            Op("int16-add", "add", [(x, False), (x[::-1], False)], {}, (q(0.0005), q(0.0003), q(0.001))),
            Op("int16-average_pool_2d", "average_pool_2d", [(x, False)], pool, (q(0.0005), q(0.0005))),
            Op("int16-max_pool_2d", "max_pool_2d", [(x, False)], pool, (q(0.0005), q(0.0005))),
            Op("int16-mean", "mean", [(x, False), (np.array([1, 2], np.int32), True)], dict(keep_dims=True),
               (q(0.0005), None, q(0.0002)))]


OPS = _conv_cases() + _elementwise_cases() + _activation_cases() + _uint8_cases() + _int16_cases()


def build(case: Op):
    """The one-op program, its file and its run-time feeds."""
    pb = ProgramBuilder()
    fb = pb.function("f")
    tensors, feeds = [], {}
    for k, (arr, constant) in enumerate(case.inputs):
        if constant:
            tensors.append(fb.const(arr, str(arr.dtype)))
        else:
            tensors.append(fb.input(f"x{k}", str(arr.dtype), arr.shape))
            feeds[f"x{k}"] = arr
    y = fb.emit(QUANTIZED[case.op], tensors, {**case.attrs, "quantization": case.quant})
    pb.add_function(fb)
    fb.fn.outputs = [y.index]
    pb.program.signatures.append(Signature("serving_default", 0, dict(zip(feeds, fb.fn.inputs)), {"y": y.index}))
    return pb.program, write_model(pb.program), feeds


def litert_run(data, feeds, resolver):
    kind = getattr(litert.OpResolverType, resolver)
    interp = litert.Interpreter(model_content=data, experimental_op_resolver_type=kind)
    return np.asarray(interp.get_signature_runner("serving_default")(**feeds)["y"])


@pytest.mark.parametrize("case", OPS, ids=repr)
def test_quantized_op_equals_litert_reference_kernels(case):
    program, data, feeds = build(case)
    ours, = Executor(program).run_function(0, list(feeds.values()))
    theirs = litert_run(data, feeds, "BUILTIN_REF")
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs, err_msg=f"{case}: ours vs LiteRT's reference kernels")
    assert len(np.unique(ours)) > 2, "the case should exercise more than the clamps"


@pytest.mark.parametrize("case", OPS, ids=repr)
def test_quantized_op_within_a_step_of_litert_default_kernels(case):
    program, data, feeds = build(case)
    ours, = Executor(program).run_function(0, list(feeds.values()))
    theirs = litert_run(data, feeds, "AUTO")
    diff = np.abs(ours.astype(np.int64) - theirs.astype(np.int64)).max()
    assert diff <= case.default_tolerance, f"{case}: {diff} steps from LiteRT's default kernels"


@pytest.mark.parametrize("case", OPS, ids=repr)
def test_quantized_file_reads_back_as_the_quantized_op(case):
    import litetrain as lt
    program, data, feeds = build(case)
    back = read_model(data)
    node, = back.functions[0].nodes
    assert node.op == QUANTIZED[case.op]
    ours, = Executor(program).run_function(0, list(feeds.values()))
    for optimize in (True, False):
        runner = lt.Interpreter(model_content=data, optimize=optimize).get_signature_runner()
        np.testing.assert_array_equal(runner(**feeds)["y"], ours)
    assert write_model(back) == data or read_model(write_model(back)).functions[0].nodes[0].op == node.op


# -- QUANTIZE, DEQUANTIZE ---------------------------------------------------------------------------------------
def _quantize_program(x, entries, out_dtype, op="quantize"):
    pb = ProgramBuilder()
    fb = pb.function("f")
    t = fb.input("x0", str(x.dtype), x.shape)
    attrs = {"quantization": entries} | ({"out_dtype": out_dtype} if op == "quantize" else {})
    y = fb.emit(op, [t], attrs)
    pb.add_function(fb)
    fb.fn.outputs = [y.index]
    pb.program.signatures.append(Signature("serving_default", 0, {"x0": t.index}, {"y": y.index}))
    return pb.program, write_model(pb.program)


QUANTIZE_CASES = {
    "float-int8": (np.linspace(-7, 7, 61, dtype=np.float32).reshape(61, 1), (None, q(0.05, 3)), "int8"),
    "float-uint8": (np.linspace(-2, 5, 40, dtype=np.float32), (None, q(0.03, 100)), "uint8"),
    "float-int16": (np.linspace(-2, 5, 40, dtype=np.float32), (None, q(0.0002, 0)), "int16"),
    "halves": (np.arange(-10, 11, dtype=np.float32) * 0.025, (None, q(0.05, 0)), "int8"),
    "int8-int8": (np.arange(-128, 128, dtype=np.int8), (q(0.05, 3), q(0.13, -9)), "int8"),
    "uint8-int8": (np.arange(0, 256).astype(np.uint8), (q(0.05, 128), q(0.05, 0)), "int8"),
}


@pytest.mark.parametrize("name", sorted(QUANTIZE_CASES))
def test_quantize_equals_litert(name):
    x, entries, out_dtype = QUANTIZE_CASES[name]
    program, data = _quantize_program(x, entries, out_dtype)
    ours, = Executor(program).run_function(0, [x])
    theirs = litert_run(data, {"x0": x}, "BUILTIN_REF")
    assert theirs.dtype == ours.dtype
    np.testing.assert_array_equal(ours, theirs, err_msg=f"{name} vs LiteRT's reference kernels")
    # the default kernels round halves to even: one step at exact halves
    theirs = litert_run(data, {"x0": x}, "AUTO")
    assert np.abs(ours.astype(np.int64) - theirs.astype(np.int64)).max() <= 1
    if x.dtype.kind == "f":  # the written definition: round half away from zero, clamp
        scale, zero = entries[1][0][0], entries[1][1][0]
        info = np.iinfo(out_dtype)
        v = x.astype(np.float32) / np.float32(scale)
        expected = np.clip(np.sign(v) * np.floor(np.abs(v) + 0.5) + zero, info.min, info.max)
        np.testing.assert_array_equal(ours, expected.astype(out_dtype))


@pytest.mark.parametrize("dtype,entry", [("int8", q(0.05, 3)), ("uint8", q(0.02, 128)), ("int16", q(0.001, 0))])
def test_dequantize_equals_litert(dtype, entry):
    info = np.iinfo(dtype)
    x = np.linspace(info.min, info.max, 50).astype(dtype)
    program, data = _quantize_program(x, (entry, None), None, op="dequantize")
    ours, = Executor(program).run_function(0, [x])
    for resolver in ("BUILTIN_REF", "AUTO"):
        np.testing.assert_array_equal(ours, litert_run(data, {"x0": x}, resolver))
    np.testing.assert_allclose(ours, entry[0][0] * (x.astype(np.float64) - entry[1][0]), rtol=1e-6)


# -- refusals -------------------------------------------------------------------------------------------------
def test_quantized_op_without_parameters_is_refused_at_trace_time():
    pb = ProgramBuilder()
    fb = pb.function("f")
    t = fb.input("x0", "int8", (2, 3))
    with pytest.raises(TraceError, match="quantization attribute"):
        fb.emit("quantized_softmax", [t], {"beta": 1.0})
    with pytest.raises(TraceError, match="dynamic-range"):
        fb.emit("quantized_softmax", [fb.input("x1", "float32", (2, 3))], {"quantization": (q(0.1), q(1 / 256))})
    with pytest.raises(TraceError, match="no quantization parameters"):
        fb.emit("quantize", [fb.input("x2", "float32", (2, 3))], {"quantization": (None, None), "out_dtype": "int8"})


def test_a_quantized_op_without_an_integer_kernel_is_refused_by_name_when_read():
    from litetrain.core.ir import Quantization
    from litetrain.tflite import UnsupportedOpError
    pb = ProgramBuilder()
    fb = pb.function("f")
    t = fb.input("x0", "int8", (2, 3))
    y = fb.emit("maximum", [t, t])
    pb.add_function(fb)
    fb.fn.outputs = [y.index]
    for index in (t.index, y.index):
        fb.fn.tensors[index].quant = Quantization((0.1,), (0,))
    pb.program.signatures.append(Signature("serving_default", 0, {"x0": t.index}, {"y": y.index}))
    with pytest.raises(UnsupportedOpError, match=r"quantized MAXIMUM \(int8\)"):
        read_model(write_model(pb.program))
