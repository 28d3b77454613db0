"""A .tflite file as the base of a personalization model: its serving function replayed into the
personalization file up to a chosen tensor. MediaPipe's face landmark model (real weights, stored as
float16 behind DEQUANTIZE, PReLU activations; from the mediapipe wheel) is the base: its features are
checked against LiteRT running the original file (an intermediate tensor), and fine-tuning one of its
layers against PyTorch autograd fed with LiteRT's activations. TensorFlow's Keras MobileNetV2
(fixtures/tf/mobilenet_v2.tflite) checks the defaults and the errors."""
import pathlib

import numpy as np
import pytest

import litetrain as lt
from litetrain.importers.tflite import TFLiteModule
from litetrain.apps.personalize import BaseModel, PersonalizeError, Preprocessing, convert_personalization
from tools.reliability.models import mediapipe_files

MODEL = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "tf" / "mobilenet_v2.tflite"
KERAS = Preprocessing((64, 64), 3, mean=0.5, std=0.5, scale=255.0)  # Keras' MobileNetV2 takes [-1, 1]
FACE = Preprocessing((192, 192), 3, mean=0.0, std=1.0, scale=255.0)  # the face model takes [0, 1]
FEATURES = "p_re_lu_20"  # [batch, 3, 3, 32], the last activation before the landmark heads


def face_model():
    data = mediapipe_files().get("mediapipe/face_landmark.tflite")
    if data is None:
        pytest.skip("MediaPipe's models are not installed (pip install --no-deps mediapipe==0.10.21)")
    return data


def images(n, seed=0):
    """Noisy images, each class tinted by its own colour (labels 0, 1, 2, 0, ...)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 128, (n, 192, 192, 3)).astype(np.float32)
    labels = (np.arange(n) % 3).astype(np.int32)
    x[np.arange(n), ..., labels] += 120
    return x, labels


def litert_tensors(model, x, names):
    """LiteRT's values of the named tensors of the original file on normalised images `x`."""
    litert = pytest.importorskip("ai_edge_litert.interpreter", reason="LiteRT is the reference for the file")
    interp = litert.Interpreter(model_content=model, experimental_preserve_all_tensors=True,
                                experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.resize_tensor_input(interp.get_input_details()[0]["index"], list(x.shape))
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    by_name = {d["name"]: d["index"] for d in interp.get_tensor_details()}
    return [interp.get_tensor(by_name[n]).copy() for n in names]


def test_features_of_a_tflite_base_are_litert_s():
    """`load` of the personalization file equals LiteRT's activation of the original file (averaged
    over space), for images the declared preprocessing normalises in the graph."""
    model = face_model()
    data = convert_personalization(BaseModel.from_tflite(model, FACE, output=FEATURES), "softmax", num_classes=3)
    x, _ = images(4)
    ours = lt.Interpreter(model_content=data).get_signature_runner("load")(images=x)["bottleneck"]
    theirs, = litert_tensors(model, x / 255, [FEATURES])
    assert ours.shape == (4, 32)
    assert theirs.mean(axis=(1, 2)).std(axis=0).mean() > 1e-2, "the features depend on the image"
    np.testing.assert_allclose(ours, theirs.mean(axis=(1, 2)), rtol=1e-4, atol=1e-5)


def test_finetuning_a_layer_of_a_tflite_base_matches_pytorch():
    """trainable="p_re_lu_20" makes that PReLU's slopes (float16 in the file, behind a DEQUANTIZE)
    a float32 Param; `train_finetune` trains it with the head. PyTorch takes the same steps from
    LiteRT's input to that PReLU: the same losses over 6 Adam steps, the same slopes after."""
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for the fine-tuning step")
    model = face_model()
    base = BaseModel.from_tflite(model, FACE, output=FEATURES, trainable=FEATURES)
    assert [[p.path.rsplit("/", 1)[-1] for p in stage] for stage in base.stages] == [["alpha"]]
    lr = 0.01
    data = convert_personalization(base, "softmax", num_classes=3, finetune="trainable", optimizer=lt.optim.Adam(lr))
    interp = lt.Interpreter(model_content=data)
    start = interp.get_variables()
    alpha_name = next(n for n in start if n.endswith("p_re_lu_20/alpha"))
    x, labels = images(6, seed=1)
    z, = litert_tensors(model, x / 255, ["add_18"])  # the PReLU's input
    alpha = torch.tensor(start[alpha_name], requires_grad=True)        # [1, 1, 32]
    head_k = torch.tensor(start["head/kernel"], requires_grad=True)    # [classes, 32]
    head_b = torch.tensor(start["head/bias"], requires_grad=True)
    opt = torch.optim.Adam([alpha, head_k, head_b], lr=lr)
    z_t, y_t = torch.from_numpy(z), torch.from_numpy(labels.astype(np.int64))
    step = interp.get_signature_runner("train_finetune")
    ours, theirs = [], []
    for _ in range(6):
        ours.append(float(step(images=x, labels=labels)["loss"]))
        opt.zero_grad()
        h = torch.where(z_t > 0, z_t, alpha * z_t).mean(dim=(1, 2))
        loss = torch.nn.functional.cross_entropy(h @ head_k.T + head_b, y_t)
        loss.backward()
        opt.step()
        theirs.append(loss.item())
    assert theirs[-1] < theirs[0] * 0.9, "the reference learns, so the comparison means something"
    np.testing.assert_allclose(ours, theirs, rtol=1e-4)
    np.testing.assert_allclose(interp.get_variables()[alpha_name], alpha.detach().numpy(), rtol=1e-4, atol=1e-6)


def test_frozen_tflite_base_stays_constants_and_names_its_choices():
    """Without `trainable` the base adds no variable (its weights stay constants of the file);
    a bad output name, a wrong input size and a layout the file cannot take are refused clearly."""
    data = convert_personalization(BaseModel.from_tflite(MODEL, KERAS), "softmax", num_classes=2)
    assert all(n.startswith(("head/", "optimizer/")) for n in lt.Interpreter(model_content=data).get_variables())
    with pytest.raises(PersonalizeError, match="no output or tensor named 'nope'"):
        BaseModel.from_tflite(MODEL, KERAS, output="nope")
    with pytest.raises(PersonalizeError, match=r"the file takes input \[None, 64, 64, 3\]"):
        BaseModel.from_tflite(MODEL, Preprocessing((96, 96), 3))
    with pytest.raises(PersonalizeError, match="takes NHWC images"):
        BaseModel.from_tflite(MODEL, Preprocessing((64, 64), 3, layout="NCHW"))
    with pytest.raises(PersonalizeError, match="no layer or weight matches"):
        BaseModel.from_tflite(MODEL, KERAS, trainable=["no_such_layer"])
    # the classifier of the file is not part of the base: its output is the bottleneck
    net = TFLiteModule(MODEL)
    assert net.layer_names[-1].endswith("Conv_1") and not any("predictions" in n for n in net.layer_names)
