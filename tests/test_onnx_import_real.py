"""The ONNX importer on real models shipped in packages, against onnxruntime: openwakeword 0.5.1's audio
front end, speech-embedding CNN, wake-word classifiers and Silero VAD, read from the installed package
(never copied), and torchvision's pretrained MobileNetV2 and EfficientNet-Lite0 exported to ONNX."""
import importlib.util
import pathlib

import numpy as np
import pytest

import litetrain as lt

onnx = pytest.importorskip("onnx", reason="the onnx package reads the models (pip install 'litetrain[onnx]')")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is the oracle")
torch = pytest.importorskip("torch", reason="PyTorch exports the ImageNet models")

from litetrain.importers import from_onnx  # noqa: E402
from onnx_cases import close, export, infer, onnxruntime, wrap  # noqa: E402


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_lite0"])
def test_pretrained_imagenet_models_give_onnxruntimes_logits_and_top5(name):
    """torchvision's MobileNetV2 and EfficientNet-Lite0 with their ImageNet weights (pip packages, see
    test_torch_import.py), exported to ONNX, on scikit-image's photos."""
    from litetrain.importers.torch import zoo
    data = pytest.importorskip("skimage.data", reason="scikit-image provides the test photos")
    from skimage.transform import resize
    try:
        model = zoo.pretrained(name).eval()
    except ModuleNotFoundError as e:
        pytest.skip(str(e))
    pre = zoo.PREPROCESSING[name]
    size = pre["input_size"]
    photos = [(resize(getattr(data, p)()[..., :3], (size, size), order=1, anti_aliasing=True) * 255.0 - pre["mean"])
              / pre["std"] for p in ("chelsea", "coffee", "astronaut", "rocket")]
    x = np.ascontiguousarray(np.stack(photos).astype(np.float32).transpose(0, 3, 1, 2))
    proto = export(model, (3, size, size))
    (ref,) = onnxruntime(proto, {"x": x})
    (ours,) = infer(from_onnx(proto), {"x": x})
    assert close(ours, ref, 1e-5), float(np.abs(ours - ref).max())
    for i in range(len(x)):
        assert list(np.argsort(-ours[i])[:5]) == list(np.argsort(-ref[i])[:5])



# -- openwakeword -----------------------------------------------------------------------------
def openwakeword_models():
    """openwakeword's model folder, read from the installed package (never imported, never copied)."""
    spec = importlib.util.find_spec("openwakeword")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("openwakeword's models are the real ONNX models: pip install --no-deps openwakeword==0.5.1")
    folder = pathlib.Path(spec.submodule_search_locations[0]) / "resources" / "models"
    if not (folder / "melspectrogram.onnx").is_file():
        pytest.skip(f"no ONNX models in {folder}")
    return folder


def speech_like_audio(seconds=3.6, rate=16000):
    """Voiced-sounding audio at int16 scale: a falling pitch with harmonics, an amplitude envelope, noise."""
    rng = np.random.default_rng(7)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 180 - 40 * t / seconds
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2)
    return (3000 * voiced + 200 * rng.standard_normal(t.size)).astype(np.float32)[None]


def test_openwakeword_pipeline_gives_onnxruntimes_outputs():
    """openwakeword 0.5.1's audio front end (a PyTorch STFT-as-convolution mel spectrogram), its speech
    embedding CNN (converted from TensorFlow: NHWC input, LeakyRelu, Max, MaxPool) and its wake-word
    classifiers (Gemm and LayerNorm as ReduceMean/Pow/Sqrt; hey_jarvis with an If on its own score), each fed
    what the stage before gives, equal onnxruntime's."""
    folder = openwakeword_models()
    audio = np.concatenate([speech_like_audio(), speech_like_audio()[:, ::-1].copy()])
    mel_model = str(folder / "melspectrogram.onnx")
    (mel_ref,) = onnxruntime(mel_model, {"input": audio})
    (mel,) = infer(from_onnx(mel_model), {"input": audio})
    assert close(mel, mel_ref, 2e-6), float(np.abs(mel - mel_ref).max())
    frames = mel_ref[0, 0] / 10.0 + 2.0  # openwakeword's scaling of the spectrogram
    windows = np.stack([frames[i:i + 76] for i in range(0, frames.shape[0] - 75, 8)])[..., None]
    emb_model = str(folder / "embedding_model.onnx")
    (emb_ref,) = onnxruntime(emb_model, {"input_1": windows})
    (emb,) = infer(from_onnx(emb_model), {"input_1": windows})
    assert close(emb, emb_ref, 2e-6), float(np.abs(emb - emb_ref).max())
    for word in ("alexa_v0.1", "hey_mycroft_v0.1", "hey_rhasspy_v0.1", "timer_v0.1", "weather_v0.1"):
        path = str(folder / f"{word}.onnx")
        graph_input = onnx.load(path).graph.input[0]
        name, n = graph_input.name, graph_input.type.tensor_type.shape.dim[1].dim_value  # (embeddings it scores)
        features = emb_ref[:n, 0, 0][None]
        x = np.concatenate([features, features[:, ::-1] * 0.5])
        (ref,) = onnxruntime(path, {name: x})
        (ours,) = infer(from_onnx(path), {name: x})
        assert close(ours, ref), (word, float(np.abs(ours - ref).max()))


def test_hey_jarvis_if_takes_either_branch_as_onnxruntime_does():
    """hey_jarvis scores with one network and, when its score reaches 0.5, rescores with a verifier network
    (an If on a value computed at run time: litetrain's IF, both branches traced). One file, run on inputs
    that take each branch; the If's condition needs a batch of one."""
    path = str(openwakeword_models() / "hey_jarvis_v0.1.onnx")
    proto = onnx.load(path)
    name = proto.graph.input[0].name
    first_score = onnx.load(path)
    first_score.graph.node.pop()  # (the If: the score before it tells which branch runs)
    first_score.graph.output[0].name = proto.graph.node[-1].input[0]
    first_score.graph.output[0].type.tensor_type.elem_type = onnx.TensorProto.BOOL
    net = from_onnx(path)
    data = lt.convert(wrap(net, {"i0": lt.TensorSpec([None, 16, 96])}), signatures=["infer"])
    run = lt.Interpreter(model_content=data).get_signature_runner("infer")
    rng = np.random.default_rng(0)
    taken = set()
    for _ in range(6):
        x = rng.standard_normal((1, 16, 96)).astype(np.float32)
        (ref,) = onnxruntime(path, {name: x})
        assert close(run(i0=x)["y0"], ref), float(np.abs(run(i0=x)["y0"] - ref).max())
        taken.add(bool(onnxruntime(first_score, {name: x})[0].item()))
    assert taken == {True, False}


@pytest.mark.parametrize("rate", [16000, 8000])
def test_silero_vad_gives_onnxruntimes_outputs(rate):
    """Silero VAD (shipped in openwakeword): an If on the sample rate whose branches hold STFT convolutions,
    reflect padding, LSTMs and their state; the rate is an input, so both branches are traced."""
    folder = openwakeword_models()
    path = str(folder / "silero_vad.onnx")
    chunk = 512 if rate == 16000 else 256
    audio = speech_like_audio(chunk / rate * 2, rate)[:, :2 * chunk].reshape(2, chunk) / 32768.0
    rng = np.random.default_rng(4)
    feeds = {"input": audio.astype(np.float32), "sr": np.asarray(rate, np.int64),
             "h": (0.1 * rng.standard_normal((2, 2, 64))).astype(np.float32),
             "c": (0.1 * rng.standard_normal((2, 2, 64))).astype(np.float32)}
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    refs = sess.run(None, feeds)
    specs = {"input": lt.TensorSpec([None, chunk]), "sr": lt.TensorSpec([], "int64"),
             "h": lt.TensorSpec([2, None, 64]), "c": lt.TensorSpec([2, None, 64])}
    ours = infer(from_onnx(path), feeds, specs)
    for a, b in zip(ours, refs):
        assert close(a, b, 1e-5), float(np.abs(a - b).max())
