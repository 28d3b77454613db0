"""Pooling and depthwise convolution gradients fused at plan time (runtime/fusion/pool.py,
depthwise.py) against the op-by-op path (Interpreter(optimize=False)) on the same file: max pools
that tile the image and overlapping or padded ones, with ties, infinities and NaN; average pools;
depthwise convolutions with strides, both paddings, multipliers and dilations. Each step must be
in the plan, and its values the op-by-op values."""
from __future__ import annotations

import numpy as np
import pytest

import litetrain as lt
from litetrain import ops


def pair(content):
    """The planned interpreter and the op-by-op one on the same file."""
    return lt.Interpreter(model_content=content), lt.Interpreter(model_content=content, optimize=False)


def plan_steps(interp, signature):
    """The names of the steps of the signature's latest plan (fused steps as 'fused <pattern>')."""
    index = interp._program.signature(signature).function
    plan = next(reversed(interp._executor._plans[index].values()))
    return [s[5].op for s in plan.steps]


def run_both(module, **inputs):
    fast, slow = pair(lt.convert(module, ["grad"]))
    before = {k: v.copy() for k, v in inputs.items()}
    a, b = fast.get_signature_runner("grad")(**inputs), slow.get_signature_runner("grad")(**inputs)
    for k, v in inputs.items():
        np.testing.assert_array_equal(v, before[k])  # a caller's array is never written into
    return a, b, plan_steps(fast, "grad")


# -- pools -------------------------------------------------------------------------------------------------
def pool_module(kind, shape, size, strides, padding):
    """A module whose signature `grad` gives d/dx of sum(pool(x) * g)."""
    h, w, c = shape
    ho, wo = _out(h, size[0], strides[0], 1, padding), _out(w, size[1], strides[1], 1, padding)

    class Pool(lt.Module):
        @lt.signature(x=lt.TensorSpec([None, h, w, c]), g=lt.TensorSpec([None, ho, wo, c]))
        def grad(self, x, g):
            y = getattr(ops, kind)(x, size, strides, padding)
            return {"dx": lt.gradients(ops.reduce_sum(ops.mul(y, g)), [x])[0]}
    return Pool()


POOLS = [  # (input H, W, C), window, strides, padding
    ((6, 6, 3), (2, 2), (2, 2), "VALID"),   # windows tile the image
    ((7, 7, 2), (2, 2), (2, 2), "VALID"),   # tiles, the odd row and column left out
    ((5, 7, 2), (2, 3), (2, 3), "VALID"),   # rectangular tiles
    ((7, 7, 2), (3, 3), (2, 2), "SAME"),    # overlapping, padded
    ((6, 6, 2), (3, 3), (2, 2), "SAME"),    # overlapping, padded at the end only
    ((7, 7, 2), (3, 3), (2, 2), "VALID"),   # overlapping, no padding
    ((5, 6, 2), (2, 3), (1, 2), "SAME"),    # rectangular, stride 1 and 2
    ((6, 6, 2), (2, 2), (2, 2), "SAME"),    # tiles under SAME (no padding needed)
]


def _pool_inputs(shape, rng, batch=3):
    """x with many ties (few distinct values), -inf in places, and g."""
    x = rng.integers(-2, 3, (batch, *shape)).astype(np.float32)
    x[0, 0, :2] = -np.inf
    x[1] = -np.inf  # whole windows of -inf
    return x


@pytest.mark.parametrize("shape,size,strides,padding", POOLS)
def test_max_pool_gradients_are_fused_and_exact(shape, size, strides, padding):
    rng = np.random.default_rng(0)
    module = pool_module("max_pool_2d", shape, size, strides, padding)
    x = _pool_inputs(shape, rng)
    g = rng.standard_normal(pool_output(x, size, strides, padding)).astype(np.float32)
    a, b, names = run_both(module, x=x, g=g)
    np.testing.assert_array_equal(a["dx"], b["dx"])  # bit for bit
    assert "fused max pool gradient" in names
    assert not {"arg_max", "one_hot", "select_v2", "greater", "strided_slice"} & set(names)


@pytest.mark.parametrize("shape,size,strides,padding", POOLS[:1] + POOLS[3:4])
def test_max_pool_gradient_with_nan_and_infinite_values_is_the_op_by_op_one(shape, size, strides, padding):
    rng = np.random.default_rng(1)
    module = pool_module("max_pool_2d", shape, size, strides, padding)
    x = _pool_inputs(shape, rng)
    x[2, 1, 1] = np.nan
    x[2, 2, :, 0] = np.nan
    g = rng.standard_normal(pool_output(x, size, strides, padding)).astype(np.float32)
    g[0, 0, 0] = np.inf
    a, b, names = run_both(module, x=x, g=g)
    np.testing.assert_array_equal(a["dx"], b["dx"])  # NaN where the op-by-op gradient has NaN
    assert "fused max pool gradient" in names


@pytest.mark.parametrize("shape,size,strides,padding", [POOLS[0], POOLS[3], POOLS[5], POOLS[6]])
def test_average_pool_gradients_are_fused_and_exact(shape, size, strides, padding):
    rng = np.random.default_rng(2)
    module = pool_module("average_pool_2d", shape, size, strides, padding)
    x = rng.standard_normal((3, *shape)).astype(np.float32)
    g = rng.standard_normal(pool_output(x, size, strides, padding)).astype(np.float32)
    a, b, names = run_both(module, x=x, g=g)
    np.testing.assert_array_equal(a["dx"], b["dx"])
    assert "fused average pool gradient" in names and "depthwise_conv_2d" not in names


def pool_output(x, size, strides, padding):
    """The pool's output shape for input x."""
    return (x.shape[0], _out(x.shape[1], size[0], strides[0], 1, padding),
            _out(x.shape[2], size[1], strides[1], 1, padding), x.shape[3])


# -- depthwise convolutions --------------------------------------------------------------------------------
def depthwise_module(shape, kernel, multiplier, strides, padding, dilations):
    """A module whose signature `grad` gives y = depthwise(x, f) and d/dx, d/df of sum(y * g)."""
    (h, w, c), (kh, kw) = shape, kernel
    ho, wo = _out(h, kh, strides[0], dilations[0], padding), _out(w, kw, strides[1], dilations[1], padding)

    class Depthwise(lt.Module):
        @lt.signature(x=lt.TensorSpec([None, h, w, c]), f=lt.TensorSpec([1, kh, kw, c * multiplier]),
                      g=lt.TensorSpec([None, ho, wo, c * multiplier]))
        def grad(self, x, f, g):
            y = ops.depthwise_conv_2d(x, f, strides=strides, padding=padding, dilations=dilations,
                                      depth_multiplier=multiplier)
            dx, df = lt.gradients(ops.reduce_sum(ops.mul(y, g)), [x, f])
            return {"y": y, "dx": dx, "df": df}
    return Depthwise()


def _out(size, k, stride, dilation, padding):
    return -(-size // stride) if padding == "SAME" else (size - (k - 1) * dilation - 1) // stride + 1


DEPTHWISE = [  # (input H, W, C), kernel, multiplier, strides, padding, dilations
    ((9, 9, 4), (3, 3), 1, (1, 1), "SAME", (1, 1)),
    ((8, 8, 4), (3, 3), 1, (2, 2), "SAME", (1, 1)),     # even input: padding at the end only
    ((9, 9, 4), (3, 3), 1, (2, 2), "SAME", (1, 1)),
    ((9, 8, 3), (3, 3), 1, (1, 1), "VALID", (1, 1)),
    ((9, 9, 3), (3, 3), 1, (2, 2), "VALID", (1, 1)),
    ((8, 7, 2), (3, 3), 2, (1, 1), "SAME", (1, 1)),     # multiplier 2
    ((8, 8, 2), (3, 3), 2, (2, 2), "VALID", (1, 1)),
    ((9, 9, 3), (3, 3), 1, (1, 1), "SAME", (2, 2)),     # dilation
    ((11, 10, 2), (3, 2), 1, (1, 1), "VALID", (2, 3)),
    ((7, 8, 3), (2, 3), 1, (3, 2), "SAME", (1, 1)),     # rectangular kernel, stride 3
    ((4, 4, 3), (3, 3), 1, (1, 1), "SAME", (1, 1)),     # small images: the padding is most of it
    ((9, 9, 1), (3, 3), 1, (1, 1), "VALID", (1, 1)),    # one channel
    ((6, 6, 1), (3, 3), 3, (2, 2), "SAME", (1, 1)),
    ((26, 26, 48), (3, 3), 1, (1, 1), "SAME", (1, 1)),  # several blocks of rows
    ((24, 24, 24), (3, 3), 1, (2, 2), "SAME", (1, 1)),
]


@pytest.mark.parametrize("shape,kernel,multiplier,strides,padding,dilations", DEPTHWISE)
def test_depthwise_convolution_and_gradients_are_fused_and_match(shape, kernel, multiplier, strides, padding,
                                                                  dilations):
    rng = np.random.default_rng(3)
    module = depthwise_module(shape, kernel, multiplier, strides, padding, dilations)
    h, w, c = shape
    x = rng.standard_normal((3, h, w, c)).astype(np.float32)
    f = rng.standard_normal((1, *kernel, c * multiplier)).astype(np.float32)
    ho, wo = (_out(h, kernel[0], strides[0], dilations[0], padding), _out(w, kernel[1], strides[1], dilations[1],
                                                                          padding))
    g = rng.standard_normal((3, ho, wo, c * multiplier)).astype(np.float32)
    a, b, names = run_both(module, x=x, f=f, g=g)
    np.testing.assert_array_equal(a["y"], b["y"])
    np.testing.assert_array_equal(a["dx"], b["dx"])  # the same sums in the same order
    scale = np.einsum("nhwc->c", np.abs(x)).max() * np.abs(g).max()
    np.testing.assert_allclose(a["df"], b["df"], rtol=1e-6, atol=1e-6 * scale)  # (the same sums but for
    # one channel, where SUM adds pairwise)
    for step in ("depthwise convolution", "depthwise input gradient", "depthwise filter gradient"):
        assert f"fused {step}" in names
    assert not {"depthwise_conv_2d", "gather", "concatenation", "strided_slice"} & set(names)


def test_depthwise_kernel_keeps_its_buffers_between_calls_and_hands_out_new_arrays():
    module = depthwise_module((9, 9, 4), (3, 3), 1, (1, 1), "SAME", (1, 1))
    fast, slow = pair(lt.convert(module, ["grad"]))
    rng = np.random.default_rng(4)
    outputs = []
    for n in (2, 2, 1, 2):  # plans follow the batch size; buffers follow the plan
        x = rng.standard_normal((n, 9, 9, 4)).astype(np.float32)
        f = rng.standard_normal((1, 3, 3, 4)).astype(np.float32)
        g = rng.standard_normal((n, 9, 9, 4)).astype(np.float32)
        a, b = fast.get_signature_runner("grad")(x=x, f=f, g=g), slow.get_signature_runner("grad")(x=x, f=f, g=g)
        for k in ("y", "dx"):
            np.testing.assert_array_equal(a[k], b[k])
        outputs.append((a, b))
    for a, b in outputs:  # an earlier call's results are untouched by later calls
        np.testing.assert_array_equal(a["y"], b["y"])


@pytest.mark.parametrize("kind", ["max_pool_2d", "average_pool_2d"])
def test_a_window_larger_than_the_function_is_not_traced_at_plan_time(kind):
    """A file may declare any window (a fuzzed one held 10^6 taps): the planner traces a pool's
    gradient rule only when the function has as many nodes as the rule's taps at least, so such a
    file fails at its call, at once, instead of planning for minutes."""
    import time
    from litetrain.tflite import read_model, write_model
    program = read_model(lt.convert(pool_module(kind, (6, 6, 2), (2, 2), (2, 2), "VALID"), ["grad"]))
    node = next(n for f in program.functions for n in f.nodes if n.op == kind)
    node.attrs.update(filter_height=1000, filter_width=1000, padding="SAME")  # 3x3 out, as declared
    interp = lt.Interpreter(model_content=write_model(program))
    x, g = np.ones((1, 6, 6, 2), np.float32), np.ones((1, 3, 3, 2), np.float32)
    cpu = time.process_time()
    with pytest.raises(lt.ExecutionError):
        interp.get_signature_runner("grad")(x=x, g=g)
    assert time.process_time() - cpu < 1.0
