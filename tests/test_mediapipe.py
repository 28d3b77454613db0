"""Every .tflite model inside the mediapipe wheel runs in litetrain's interpreter with the outputs
Google's LiteRT (ai-edge-litert) gives on the same inputs.

The models (Apache-2.0) are read from the installed wheel, never copied here; CI installs it with
`pip install --no-deps mediapipe==0.10.21` (only the files are used; mediapipe is never imported).
They exercise what real float models contain: float16 weights behind DEQUANTIZE, sparse weights
behind DENSIFY, PRELU, RESIZE_BILINEAR, DEPTH_TO_SPACE, HARD_SWISH, STRIDED_SLICE, MediaPipe's
Convolution2DTransposeBias custom op, TFLITE_METADATA, fixed and unknown dims.

Tolerance: the difference to LiteRT's reference kernels (BUILTIN_REF) must be within 1e-4 of the
output's scale, or within twice the difference between LiteRT's own two kernel sets (AUTO, with
XNNPACK, vs BUILTIN_REF): deep float32 networks on random inputs amplify summation-order rounding,
and LiteRT's own kernels disagree by that much.
"""
from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest

import litetrain as lt

litert = pytest.importorskip("ai_edge_litert.interpreter", reason="LiteRT (ai-edge-litert) is the oracle")

_spec = importlib.util.find_spec("mediapipe")
ROOT = pathlib.Path(_spec.submodule_search_locations[0]) if _spec and _spec.submodule_search_locations else None
MODELS = sorted(ROOT.rglob("*.tflite")) if ROOT else []
# MediaPipe's own custom ops, which LiteRT cannot run either: nothing to compare with
LITERT_CANNOT_RUN = {"face_landmark_with_attention.tflite":
                     ("Landmarks2TransformMatrix", "TransformTensorBilinear", "TransformLandmarks")}

pytestmark = pytest.mark.skipif(not MODELS, reason="mediapipe is not installed (pip install --no-deps mediapipe==0.10.21)")


def _inputs(details):
    rng = np.random.default_rng(0)
    return {d["index"]: rng.uniform(-1, 1, d["shape"]).astype(d["dtype"]) for d in details}


def _run_litert(path, feeds, resolver):
    interp = litert.Interpreter(model_path=str(path),
                                experimental_op_resolver_type=getattr(litert.OpResolverType, resolver))
    interp.allocate_tensors()
    for index, value in feeds.items():
        interp.set_tensor(index, value)
    interp.invoke()
    return {d["name"]: interp.get_tensor(d["index"]) for d in interp.get_output_details()}


def test_the_wheel_has_the_fourteen_models():
    assert len(MODELS) == 14, [m.name for m in MODELS]


@pytest.mark.parametrize("path", [pytest.param(p, id=p.name) for p in MODELS])
def test_outputs_match_litert(path):
    if path.name in LITERT_CANNOT_RUN:
        ops = LITERT_CANNOT_RUN[path.name]
        with pytest.raises(lt.UnsupportedOpError) as err:  # refused at load time, by name
            lt.Interpreter(model_path=str(path))
        assert all(f"custom op '{op}'" in str(err.value) for op in ops)
        with pytest.raises(Exception, match="unresolved custom op"):
            _run_litert(path, {}, "AUTO")
        pytest.skip(f"{path.name}: MediaPipe's custom ops {', '.join(ops)}; LiteRT cannot run them either")
    ours = lt.Interpreter(model_path=str(path))
    ours.allocate_tensors()
    feeds = _inputs(ours.get_input_details())
    for index, value in feeds.items():
        ours.set_tensor(index, value)
    ours.invoke()
    got = {d["name"]: ours.get_tensor(d["index"]) for d in ours.get_output_details()}
    auto = _run_litert(path, feeds, "AUTO")
    try:
        ref = _run_litert(path, feeds, "BUILTIN_REF")
    except RuntimeError:  # a custom op only the default resolver has
        ref = auto
    assert got.keys() == auto.keys()
    lines = []
    for name, theirs in ref.items():
        assert got[name].shape == theirs.shape and got[name].dtype == theirs.dtype, name
        diff = float(np.abs(got[name] - theirs).max())
        spread = float(np.abs(auto[name] - theirs).max())
        scale = max(1.0, float(np.abs(theirs).max()))
        lines.append(f"{path.name} {name}{list(theirs.shape)}: max abs diff {diff:.3g} vs LiteRT reference "
                     f"({float(np.abs(got[name] - auto[name]).max()):.3g} vs LiteRT default; LiteRT's own "
                     f"spread {spread:.3g}; scale {scale:.3g})")
        assert diff <= max(1e-4 * scale, 2 * spread), lines[-1]
    print("\n".join(lines))


def test_inspect_describes_a_mediapipe_model():
    from litetrain.tflite.inspect import inspect_model
    info = inspect_model(next(p for p in MODELS if p.name == "selfie_segmentation.tflite"))
    assert info["custom_ops"] == ["Convolution2DTransposeBias"]
    assert info["metadata"] and info["litetrain_can_run"] == "yes"
    assert info["op_counts"]["DEQUANTIZE"] > 0
