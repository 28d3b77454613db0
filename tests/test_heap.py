"""The allocator setting of runtime/heap.py: in a process that only loads a file and trains, a step's
arrays come back from the heap instead of being faulted in anew at every call."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import litetrain as lt

CHILD = """
import resource, sys
import numpy as np
import litetrain as lt
from litetrain.runtime import heap
train = lt.Interpreter(model_path=sys.argv[1]).get_signature_runner("train")
rng = np.random.default_rng(0)
x = rng.random((8, 784), dtype=np.float32)
y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 8)]
for _ in range(20):
    train(x=x, y=y)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    train(x=x, y=y)
print(heap._state["set"], (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 200)
"""


class MLP(lt.Module):
    def __init__(self):
        self.net = lt.nn.Sequential([lt.nn.Dense(128, activation="relu", input_dim=784), lt.nn.Dense(10, input_dim=128)])
        self.loss = lt.losses.CategoricalCrossentropy(from_logits=True)
        self.optimizer = lt.optim.SGD(0.01, momentum=0.9)

    @lt.signature(x=lt.TensorSpec([None, 784]), y=lt.TensorSpec([None, 10]))
    def train(self, x, y):
        loss = self.loss(y, self.net(x))
        self.optimizer.minimize(loss, self.net.trainable_variables)
        return {"loss": loss}


def _faults_per_step(path, **env):
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr[-2000:]
    was_set, faults = proc.stdout.split()
    return was_set == "True", float(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the setting is glibc's (Linux)")
def test_a_training_process_does_not_fault_its_arrays_in_at_every_step(tmp_path):
    path = tmp_path / "mlp.tflite"
    path.write_bytes(lt.convert(MLP(), ["train"]))
    was_set, tuned = _faults_per_step(path)
    if not was_set:
        pytest.skip("this C library has no glibc mallopt")
    left, untuned = _faults_per_step(path, LITETRAIN_KEEP_FREED_MEMORY="0")
    assert not left
    # a step frees and makes again a 784x128 weight, its momentum and its gradient (400 KB, 98 pages
    # each): faulted in anew they cost about a hundred page faults a step; kept, next to none
    assert tuned < 2 and untuned > 20 * max(tuned, 1), (tuned, untuned)
