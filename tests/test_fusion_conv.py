"""CONV_2D's filter gradient fused at plan time (runtime/fusion/conv.py), and the conv_2d and
transpose_conv kernels (im2col, col2im), against the op-by-op path (Interpreter(optimize=False)) on
the same file: strides 1 and 2, SAME and VALID, dilations, 1x1 and 3x3 and rectangular windows,
odd sizes, one input channel and many, biases. The fused step must be in the plan, its values the
op-by-op values up to float rounding, and the kernels must agree with a direct sum over windows."""
from __future__ import annotations

import numpy as np
import pytest

import litetrain as lt
from litetrain import ops
from litetrain.ops import conv as conv_ops
from litetrain.ops.conv import geometry

RTOL = 1e-5  # float32 sums in another order, relative to the values' scale


def pair(content):
    """The planned interpreter and the op-by-op one on the same file."""
    return lt.Interpreter(model_content=content), lt.Interpreter(model_content=content, optimize=False)


def plan_steps(interp, signature):
    """The names of the steps of the signature's latest plan (fused steps as 'fused <pattern>')."""
    index = interp._program.signature(signature).function
    plan = next(reversed(interp._executor._plans[index].values()))
    return [s[5].op for s in plan.steps]


def assert_close(a, b, err_msg=""):
    """a equals b up to float32 rounding relative to b's scale."""
    scale = max(float(np.max(np.abs(b))), 1e-30) if np.size(b) else 1.0
    np.testing.assert_allclose(a, b, rtol=0, atol=RTOL * scale, err_msg=err_msg)


def conv_module(shape, filters, window, strides, padding, dilations, bias):
    """A module whose signature `grad` gives y = conv_2d(x, w (+ b)) and d/dx, d/dw of sum(y * g)."""
    h, w, c = shape
    ho = geometry(h, window[0], strides[0], dilations[0], padding)[0]
    wo = geometry(w, window[1], strides[1], dilations[1], padding)[0]
    rng = np.random.default_rng(sum(shape) + filters)
    kernel = rng.standard_normal((filters, *window, c)).astype(np.float32)
    offsets = rng.standard_normal(filters).astype(np.float32) if bias else None

    class Conv(lt.Module):
        def __init__(self):
            self.w = lt.Param(kernel)
            self.b = lt.Param(offsets) if bias else None

        @lt.signature(x=lt.TensorSpec([None, h, w, c]), g=lt.TensorSpec([None, ho, wo, filters]))
        def grad(self, x, g):
            wt = x.fb.read(self.w)
            y = ops.conv_2d(x, wt, None if self.b is None else x.fb.read(self.b), strides=strides,
                            padding=padding, dilations=dilations)
            dx, dw = lt.gradients(ops.reduce_sum(ops.mul(y, g)), [x, wt])
            return {"y": y, "dx": dx, "dw": dw}
    return Conv(), kernel, offsets, (ho, wo)


CONVS = [  # (input H, W, C), filters, window, strides, padding, dilations
    ((28, 28, 1), 8, (3, 3), (1, 1), "SAME", (1, 1)),     # the small CNN's first layer: one channel
    ((14, 14, 16), 12, (3, 3), (1, 1), "SAME", (1, 1)),   # many channels (pixel-major im2col)
    ((12, 12, 3), 6, (3, 3), (2, 2), "SAME", (1, 1)),     # stride 2, padded at the end only
    ((11, 13, 3), 5, (3, 3), (2, 2), "SAME", (1, 1)),     # odd sizes, padded on both sides
    ((9, 10, 8), 4, (3, 3), (1, 1), "VALID", (1, 1)),     # no padding
    ((11, 9, 2), 3, (3, 2), (2, 1), "VALID", (1, 1)),     # rectangular window, mixed strides
    ((12, 12, 4), 5, (3, 3), (1, 1), "SAME", (2, 2)),     # dilation 2, padded
    ((13, 12, 9), 3, (3, 3), (1, 1), "VALID", (2, 3)),    # mixed dilations, no padding (the input cut)
    ((10, 10, 3), 4, (5, 5), (2, 2), "SAME", (1, 1)),     # 5x5 stride 2
    ((9, 9, 5), 4, (1, 1), (2, 2), "SAME", (1, 1)),       # 1x1 stride 2 (the input cut)
    ((7, 7, 10), 6, (2, 2), (3, 3), "VALID", (1, 1)),     # strides longer than the window: rows skipped
    ((8, 8, 3), 4, (3, 3), (2, 2), "SAME", (1, 1)),       # stride 2, even input
    ((40, 40, 16), 8, (3, 3), (1, 1), "SAME", (1, 1)),    # an image's im2col fills the cache: a part per image
]


@pytest.mark.parametrize("bias,parts", [(False, "one"), (True, "one"), (False, "per image")])
@pytest.mark.parametrize("shape,filters,window,strides,padding,dilations", CONVS)
def test_filter_gradient_is_fused_and_matches_op_by_op(shape, filters, window, strides, padding, dilations, bias,
                                                       parts, monkeypatch):
    if parts == "per image":  # im2col and col2im made an image at a time, the products summed over the parts
        monkeypatch.setattr(conv_ops, "CACHED", 1)
    module, kernel, offsets, (ho, wo) = conv_module(shape, filters, window, strides, padding, dilations, bias)
    fast, slow = pair(lt.convert(module, ["grad"]))
    rng = np.random.default_rng(7)
    for n in (3, 1):
        x = rng.standard_normal((n, *shape)).astype(np.float32)
        g = rng.standard_normal((n, ho, wo, filters)).astype(np.float32)
        before = (x.copy(), g.copy())
        a, b = fast.get_signature_runner("grad")(x=x, g=g), slow.get_signature_runner("grad")(x=x, g=g)
        np.testing.assert_array_equal(x, before[0])
        np.testing.assert_array_equal(g, before[1])
        for key in ("y", "dx", "dw"):
            assert a[key].shape == b[key].shape and a[key].dtype == b[key].dtype, key
            assert_close(a[key], b[key], key)
        assert_close(b["y"], reference_conv(x, kernel, offsets, strides, padding, dilations), "y")
        assert_close(b["dw"], reference_filter_gradient(x, g, kernel.shape, strides, padding, dilations), "dw")
    names = plan_steps(fast, "grad")
    pointwise = window == (1, 1) and strides == (1, 1)
    assert ("fused conv filter gradient" in names) != pointwise
    if not pointwise:
        assert names.count("conv_2d") == 1  # the forward one only


def _padded(x, kh, kw, strides, padding, dilations):
    (ho, pt, pb), (wo, pl, pr) = (geometry(x.shape[1], kh, strides[0], dilations[0], padding),
                                  geometry(x.shape[2], kw, strides[1], dilations[1], padding))
    return np.pad(x.astype(np.float64), ((0, 0), (pt, pb), (pl, pr), (0, 0))), ho, wo


def reference_conv(x, w, b, strides, padding, dilations):
    """conv_2d as a sum over output pixels and taps, in float64."""
    o, kh, kw, _ = w.shape
    xp, ho, wo = _padded(x, kh, kw, strides, padding, dilations)
    y = np.zeros((x.shape[0], ho, wo, o))
    for p in range(ho):
        for q in range(wo):
            for i in range(kh):
                for j in range(kw):
                    pix = xp[:, p * strides[0] + i * dilations[0], q * strides[1] + j * dilations[1]]
                    y[:, p, q] += pix @ w[:, i, j].T.astype(np.float64)
    return y + (0 if b is None else b)


def reference_filter_gradient(x, g, w_shape, strides, padding, dilations):
    """d/dw of sum(conv_2d(x, w) * g), as a sum over output pixels and taps, in float64."""
    o, kh, kw, c = w_shape
    xp, ho, wo = _padded(x, kh, kw, strides, padding, dilations)
    dw = np.zeros(w_shape)
    for p in range(ho):
        for q in range(wo):
            for i in range(kh):
                for j in range(kw):
                    pix = xp[:, p * strides[0] + i * dilations[0], q * strides[1] + j * dilations[1]]
                    dw[:, i, j] += g[:, p, q].astype(np.float64).T @ pix
    return dw


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_edge_values_pass_through_like_op_by_op():
    """Infinities and NaN in the input or the output gradient give NaN/inf where the op-by-op sums do."""
    module, _, _, (ho, wo) = conv_module((6, 6, 2), 3, (3, 3), (1, 1), "SAME", (1, 1), False)
    fast, slow = pair(lt.convert(module, ["grad"]))
    x = np.zeros((2, 6, 6, 2), np.float32)
    g = np.ones((2, ho, wo, 3), np.float32)
    x[0, 2, 3, 1], x[1, 0, 0, 0] = np.inf, np.nan
    g[1, 5, 5, 2] = -np.inf
    a, b = fast.get_signature_runner("grad")(x=x, g=g), slow.get_signature_runner("grad")(x=x, g=g)
    for key in ("y", "dx", "dw"):
        np.testing.assert_array_equal(np.isnan(a[key]), np.isnan(b[key]), err_msg=key)
        np.testing.assert_array_equal(np.isinf(a[key]), np.isinf(b[key]), err_msg=key)
        finite = np.isfinite(b[key])
        np.testing.assert_allclose(a[key][finite], b[key][finite], rtol=1e-5, atol=1e-5, err_msg=key)


def test_the_small_cnn_train_step_fuses_both_filter_gradients_and_trains_like_op_by_op():
    from litetrain.models import SmallCNN, image_classifier
    model = image_classifier(SmallCNN(filters=(4, 6), hidden=8), (28, 28, 1), 10, lt.optim.SGD(0.1, momentum=0.9))
    content = lt.convert(model, signatures=["train"])
    fast, slow = pair(content)
    rng = np.random.default_rng(0)
    x = rng.random((5, 28, 28, 1), dtype=np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 5)]
    for _ in range(2):
        a, b = fast.get_signature_runner("train")(x=x, y=y), slow.get_signature_runner("train")(x=x, y=y)
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)
    va, vb = fast.get_variables(), slow.get_variables()
    for key in vb:
        assert_close(va[key], vb[key], key)
    assert plan_steps(fast, "train").count("fused conv filter gradient") == 2


# -- the kernels themselves ---------------------------------------------------------------------------------
KERNELS = [  # (input N, H, W, C), filter (O, kh, kw), strides, padding, dilations
    ((2, 9, 8, 1), (3, 3, 3), (1, 1), "SAME", (1, 1)),
    ((2, 9, 8, 12), (5, 3, 3), (2, 2), "SAME", (1, 1)),
    ((1, 7, 9, 3), (2, 2, 4), (1, 3), "VALID", (2, 1)),
    ((3, 5, 5, 9), (4, 1, 1), (1, 1), "VALID", (1, 1)),
    ((2, 6, 6, 2), (3, 7, 7), (1, 1), "SAME", (1, 1)),   # more taps than output pixels: tensordot
    ((1, 4, 4, 8), (2, 3, 3), (1, 1), "VALID", (1, 1)),  # 2x2 output, 3x3 window: tensordot
]


@pytest.mark.parametrize("x_shape,w_shape,strides,padding,dilations", KERNELS)
@pytest.mark.parametrize("bias,per_image", [(False, False), (True, False), (True, True)])
def test_conv_2d_kernel_matches_a_sum_over_windows(x_shape, w_shape, strides, padding, dilations, bias, per_image,
                                                   monkeypatch):
    if per_image:
        monkeypatch.setattr(conv_ops, "CACHED", 1)
    rng = np.random.default_rng(1)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal((*w_shape, x_shape[3])).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32) if bias else np.zeros(w_shape[0], np.float32)
    from litetrain.core.registry import get_op
    y = get_op("conv_2d").kernel(x, w, b, padding=padding, stride_h=strides[0], stride_w=strides[1],
                                 dilation_h_factor=dilations[0], dilation_w_factor=dilations[1])
    assert y.dtype == np.float32
    assert_close(y, reference_conv(x, w, b, strides, padding, dilations))


@pytest.mark.parametrize("stride,padding,out_hw", [(1, "SAME", (7, 6)), (2, "SAME", (8, 7)), (2, "VALID", (9, 9)),
                                                   (3, "VALID", (11, 10)), (2, "SAME", (9, 8))])
@pytest.mark.parametrize("bias,per_image", [(False, False), (True, False), (True, True)])
def test_transpose_conv_kernel_is_the_transpose_of_conv_2d(stride, padding, out_hw, bias, per_image, monkeypatch):
    """transpose_conv(g) is the adjoint of x -> conv_2d(x) applied to g (plus the bias)."""
    if per_image:
        monkeypatch.setattr(conv_ops, "CACHED", 1)
    from litetrain.core.registry import get_op
    rng = np.random.default_rng(2)
    n, c, o, kh, kw = 2, 3, 4, 3, 3
    h, wd = out_hw
    w = rng.standard_normal((o, kh, kw, c)).astype(np.float32)  # conv_2d's filter: c -> o
    ho, wo = geometry(h, kh, stride, 1, padding)[0], geometry(wd, kw, stride, 1, padding)[0]
    g = rng.standard_normal((n, ho, wo, o)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32) if bias else None
    shape = np.asarray([n, h, wd, c], np.int32)
    dx = get_op("transpose_conv").kernel(shape, w.transpose(3, 1, 2, 0).copy(), g, b, padding=padding,
                                         stride_h=stride, stride_w=stride)
    assert dx.shape == (n, h, wd, c) and dx.dtype == np.float32
    # the adjoint of the conv_2d linear map x -> y, as a dense matrix, applied to g
    eye = np.eye(h * wd * c, dtype=np.float64).reshape(-1, 1, h, wd, c)
    cols = np.stack([reference_conv(e, w, None, (stride, stride), padding, (1, 1))[0] for e in eye])
    expected = np.einsum("kpqo,npqo->nk", cols, g.astype(np.float64)).reshape(n, h, wd, c)
    assert_close(dx, expected + (0 if b is None else b))
