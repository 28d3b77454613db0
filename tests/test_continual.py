"""Continual learning on the device: the reservoir replay buffer, EWC and L2-SP as terms of the train
graph, the Fisher diagonal computed by a signature, the growing head; against PyTorch (the twin in
litetrain.apps.continual.reference) and LiteRT, and the Split Animal-MNIST comparison (slow)."""
import numpy as np
import pytest

import litetrain as lt
from litetrain.apps.continual.model import continual_file, mlp
from litetrain.apps.continual.replay import ReplayBuffer, reservoir_slots
from litetrain.tflite import read_model

HIDDEN = 16


def test_reservoir_keeps_every_example_with_the_same_chance():
    """Algorithm R: after a stream of 40 items into 10 slots, each item is kept with chance 1/4."""
    kept = np.zeros(40)
    rng = np.random.default_rng(0)
    for _ in range(2000):
        buffer = ReplayBuffer(10, (), dtype="int64", seed=int(rng.integers(1 << 30)))
        for start in range(0, 40, 7):  # batches of 7 (the last one short)
            items = np.arange(start, min(start + 7, 40))
            buffer.add(items, items)
        kept[buffer.examples] += 1
        assert len(buffer) == 10 and buffer.seen == 40
        np.testing.assert_array_equal(buffer.examples, buffer.labels)
    share = kept / 2000
    assert np.all(np.abs(share - 0.25) < 0.045), share  # binomial sd 0.0097: 4.6 sd


def test_replay_buffer_memory_is_fixed_and_sampling_has_no_repeats():
    buffer = ReplayBuffer(5, (28, 28))
    assert buffer.nbytes == 5 * 28 * 28 * 4 + 5 * 4
    assert reservoir_slots(0, 3, 5, np.random.default_rng(0)).tolist() == [0, 1, 2]
    x = np.random.default_rng(1).random((12, 28, 28), dtype=np.float32)
    buffer.add(x[:3], np.arange(3))
    sx, sy = buffer.sample(10)
    assert len(sy) == 3 and sorted(sy.tolist()) == [0, 1, 2]
    np.testing.assert_array_equal(sx, x[sy])
    buffer.add(x[3:], np.arange(3, 12))
    assert len(buffer) == 5 and buffer.nbytes == 5 * 28 * 28 * 4 + 5 * 4
    sx, sy = buffer.sample(5)
    assert len(set(sy.tolist())) == 5
    np.testing.assert_array_equal(sx, x[sy])
    with pytest.raises(ValueError, match="shape"):
        buffer.add(x[:2, :14], np.arange(2))


def _data(n=24, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 28, 28), dtype=np.float32), rng.integers(0, 4, n).astype(np.int32)


def _sequence(learner, x, labels):
    """grow 2 -> train -> fisher on 3 examples -> consolidate -> grow 2 -> train with EWC and L2-SP."""
    learner.grow(2)
    first = labels % 2
    learner.step(x[:12], first[:12])
    for k in range(3):
        learner.add_fisher(x[k:k + 1], first[k:k + 1])
    learner.consolidate()
    learner.grow(2)
    return [learner.step(x[12:], labels[12:], ewc=30.0, l2sp=0.5), learner.step(x[:12], labels[:12], ewc=30.0, l2sp=0.5)]


def test_ewc_l2sp_fisher_and_growing_head_equal_pytorch():
    torch = pytest.importorskip("torch", reason="PyTorch is the reference")
    from litetrain.apps.continual.benchmark import LitetrainLearner
    from litetrain.apps.continual.reference import TorchLearner
    ours = LitetrainLearner(continual_file(mlp(HIDDEN), learning_rate=0.1))
    twin = TorchLearner(ours.weights(), 0.1)
    x, labels = _data()
    np.testing.assert_allclose(_sequence(ours, x, labels), _sequence(twin, x, labels), rtol=1e-5)
    state = ours._run("save")
    for name, f in zip(("net/dense/kernel", "net/dense/bias", "net/dense_1/kernel", "net/dense_1/bias"), twin.fisher):
        np.testing.assert_allclose(state[f"fisher/{name}"], f.numpy(), rtol=1e-4, atol=1e-9, err_msg=name)
    for name, p in zip(("net/dense/kernel", "net/dense/bias", "net/dense_1/kernel", "net/dense_1/bias"), twin.params):
        np.testing.assert_allclose(state[name], p.detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
    assert int(state["active_classes"]) == 4 and float(state["fisher_sum/batches"]) == 0.0
    probs = ours._run("infer", x=x[:3])["probabilities"]
    assert np.all(probs[:, 4:] == 0) and np.allclose(probs.sum(-1), 1)  # rows not in use: probability 0
    del torch


def test_litert_runs_the_continual_file_the_same():
    litert = pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert is the TFLite oracle")
    content = continual_file(mlp(HIDDEN), learning_rate=0.1)
    defaults = {s.key: s.defaults for s in read_model(content).signatures}
    ours, theirs = lt.Interpreter(model_content=content), litert.Interpreter(model_content=content)
    x, labels = _data(seed=2)

    def both(name, **inputs):
        inputs = {**{k: np.asarray(v) for k, v in defaults[name].items()}, **inputs}
        a, b = ours.get_signature_runner(name)(**inputs), theirs.get_signature_runner(name)(**inputs)
        for k in a:
            np.testing.assert_allclose(np.asarray(b[k]).reshape(np.shape(a[k])), a[k], rtol=1e-4, atol=1e-6,
                                       err_msg=f"{name}: {k}")
        return a

    both("grow", classes=np.int32(2))
    both("train", x=x[:12], labels=labels[:12] % 2)
    both("accumulate_fisher", x=x[:1], labels=labels[:1] % 2)
    both("consolidate")
    both("grow")
    both("train", x=x[12:], labels=labels[12:], ewc=np.float32(30.0), l2sp=np.float32(0.5))
    both("infer", x=x[:4])
    both("save")


def test_personalizer_keeps_a_bounded_reservoir_of_samples():
    """bound_samples: the Personalizer's samples become the same reservoir sample a ReplayBuffer keeps
    of the same stream, and training uses exactly those."""
    from test_personalize import images_of, tiny_base

    from litetrain.apps.personalize import Personalizer
    p = Personalizer.create(tiny_base(), head="softmax", num_classes=1)
    first = images_of(0, 6, seed=1)
    p.add_samples(first, "red")
    p.bound_samples(8, seed=5)
    stream = [(images_of(1, 5, seed=2), "green"), (images_of(2, 7, seed=3), "blue"), (images_of(0, 4, seed=4), "red")]
    for images, label in stream:
        p.add_samples(images, label)
    assert p.num_samples == 8
    twin = ReplayBuffer(8, (1,), dtype="int64", seed=5)  # the same draws over stream positions
    twin.add(np.arange(6).reshape(-1, 1), np.zeros(6))
    position = 6
    for images, _ in stream:
        twin.add(np.arange(position, position + len(images)).reshape(-1, 1), np.zeros(len(images)))
        position += len(images)
    every = np.concatenate([first] + [images for images, _ in stream])
    expected = p.bottlenecks(every[twin.examples[:, 0]])
    np.testing.assert_allclose(np.stack(p._samples.bottlenecks), expected, rtol=1e-5, atol=1e-6)
    assert len(p.train(epochs=1, batch_size=4)) == 1


@pytest.mark.slow
def test_split_animal_mnist_replay_and_ewc_beat_finetuning_and_match_pytorch():
    """The example's comparison (10 to 20 s on 2 cores): replay and EWC end with a higher
    class-incremental average accuracy than plain fine-tuning, and every method's accuracy and
    forgetting are within one point of its PyTorch twin's."""
    pytest.importorskip("torch", reason="PyTorch is the reference")
    from litetrain.apps.demo.data import DataError
    try:
        from examples.continual_split_mnist import compare
        from litetrain.apps.continual.benchmark import Protocol, format_table
        results = compare(["finetune", "replay", "ewc", "l2sp"], Protocol())
    except DataError as e:
        pytest.skip(f"Animal MNIST is not installed: {e}")
    print(format_table(results))
    by = {(r["method"], r["framework"]): r for r in results}
    for method in ("finetune", "replay", "ewc", "l2sp"):
        ours, twin = by[method, "litetrain"], by[method, "PyTorch"]
        for key in ("class_il_accuracy", "class_il_forgetting", "task_aware_accuracy", "task_aware_forgetting"):
            assert abs(ours[key] - twin[key]) <= 0.01, (method, key, ours[key], twin[key])
    finetune = by["finetune", "litetrain"]["class_il_accuracy"]
    assert by["replay", "litetrain"]["class_il_accuracy"] > finetune + 0.2
    assert by["ewc", "litetrain"]["class_il_accuracy"] > finetune + 0.01
    assert by["replay", "litetrain"]["class_il_forgetting"] < by["finetune", "litetrain"]["class_il_forgetting"]
