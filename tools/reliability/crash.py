"""The crash test: a training process that saves a checkpoint after every step is killed with
SIGKILL at random moments; after every kill the checkpoint on disk must pass its checksum, hold
exactly the state of the step it records (bit for bit, against an uninterrupted run in this
process), and the next process must resume from it; at the end the resumed training must have
reached the same weights as the uninterrupted run.

The model is an MLP of about 83,000 weights trained with Adam, so each checkpoint is about 1 MB
and a good share of the kills land while one is being written (they leave a temporary file
behind, which the next save removes).
"""
from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import tempfile
import time

from litetrain import Interpreter
from litetrain.ops import checkpoint
from tools.reliability import child_env, models

FEATURES = 64
STEP_VARIABLE = "optimizer/iterations"

WORKER = r'''
import os, sys
from litetrain import Interpreter
from tools.reliability.models import batch
model, ckpt, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
interp = Interpreter(model_path=model, strict_checkpoints=True)
train, save = interp.get_signature_runner("train"), interp.get_signature_runner("save")
step = 0
if os.path.exists(ckpt):
    interp.get_signature_runner("restore")(checkpoint_path=ckpt)
    step = int(interp.get_variables()["optimizer/iterations"])
print("READY", step, flush=True)
while step < total:
    x, y = batch(step, 16, 64)
    train(x=x, y=y)
    step += 1
    save(checkpoint_path=ckpt)
print("DONE", step, flush=True)
'''


class _Reference:
    """The uninterrupted run, advanced on demand: digest of every variable after each step."""

    def __init__(self, model: bytes):
        self.interp = Interpreter(model_content=model)
        self.train = self.interp.get_signature_runner("train")
        self.digests = [models.variables_digest(self.interp.get_variables())]

    def at(self, step: int) -> str:
        while len(self.digests) <= step:
            x, y = models.batch(len(self.digests) - 1, 16, FEATURES)
            self.train(x=x, y=y)
            self.digests.append(models.variables_digest(self.interp.get_variables()))
        return self.digests[step]


def _temporaries(directory: str, name: str) -> list[str]:
    return [f for f in os.listdir(directory) if f.startswith(f".{name}.") and f.endswith(".tmp")]


def _read_line(proc, timeout: float) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise TimeoutError(f"the training process said nothing for {timeout} s")
    return proc.stdout.readline().decode().strip()


def run_crash_test(kills: int = 200, max_delay: float = 0.25, seed: int = 0, progress=None) -> dict:
    """Kill a saving training process `kills` times; returns the figures. Raises AssertionError
    the moment a checkpoint fails its checksum, disagrees with the uninterrupted run, or a
    restarted process does not resume from the latest checkpoint."""
    rng = random.Random(seed)
    model = models.wide_mlp_file("adam")
    reference = _Reference(model)
    started = time.monotonic()
    figures = {"kills": 0, "kills_before_ready": 0, "kills_mid_write": 0, "checkpoints_verified": 0,
               "kills_before_first_checkpoint": 0,
               "max_step_reached": 0, "resumed_from_latest": 0}
    with tempfile.TemporaryDirectory(prefix="litetrain-crash-") as directory:
        model_path = os.path.join(directory, "model.tflite")
        with open(model_path, "wb") as f:
            f.write(model)
        ckpt = os.path.join(directory, "train.safetensors")
        latest = 0  # the step of the checkpoint on disk, as last verified
        for k in range(kills):
            before = set(_temporaries(directory, os.path.basename(ckpt)))
            proc = subprocess.Popen([sys.executable, "-c", WORKER, model_path, ckpt, str(10 ** 9)], env=child_env(),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                if k % 10 == 9:  # now and then, kill it while it starts and restores
                    time.sleep(rng.uniform(0.0, 0.4))
                    figures["kills_before_ready"] += 1
                else:
                    line = _read_line(proc, 120)
                    assert line.startswith("READY"), f"the training process said {line!r}: {proc.stderr.read()!r}"
                    resumed = int(line.split()[1])
                    assert resumed == latest, f"restarted at step {resumed}, the latest checkpoint is step {latest}"
                    figures["resumed_from_latest"] += 1
                    time.sleep(rng.uniform(0.0, max_delay))
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                proc.stdout.close()
                proc.stderr.close()
            figures["kills"] += 1
            figures["kills_mid_write"] += bool(set(_temporaries(directory, os.path.basename(ckpt))) - before)
            if os.path.exists(ckpt):
                tensors = checkpoint.load(ckpt, require_checksum=True)
                step = int(tensors[STEP_VARIABLE])
                assert step >= latest, f"the checkpoint went back from step {latest} to {step}"
                assert models.variables_digest(tensors) == reference.at(step), \
                    f"kill {k}: the checkpoint of step {step} differs from the uninterrupted run"
                figures["checkpoints_verified"] += 1
                latest = step
            else:  # killed before its first save completed: there is nothing to lose yet
                assert latest == 0, "the checkpoint disappeared"
                figures["kills_before_first_checkpoint"] += 1
            if progress:
                progress(k + 1, kills, latest)
        # let the last process run to the end and compare with the uninterrupted run
        target = latest + 20
        done = subprocess.run([sys.executable, "-c", WORKER, model_path, ckpt, str(target)], env=child_env(),
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0 and f"DONE {target}" in done.stdout, done.stderr[-2000:]
        final = checkpoint.load(ckpt, require_checksum=True)
        assert models.variables_digest(final) == reference.at(target), "the resumed run ends elsewhere"
        figures["max_step_reached"] = target
        figures["final_matches_uninterrupted"] = True
        figures["stale_temporaries_left"] = len(_temporaries(directory, os.path.basename(ckpt)))
        figures["checkpoint_bytes"] = os.path.getsize(ckpt)
    figures["wall_seconds"] = round(time.monotonic() - started, 1)
    return figures
