"""The soak: many training steps with a save and a restore every few hundred, in a process of its
own, watching resident memory; and the same steps uninterrupted in another process. The two
must agree bit for bit at every checkpoint, and memory must not grow after warm-up.

Every other checkpoint is restored into a fresh interpreter of the same file (the old one is
dropped), the others into the interpreter that saved it, so both paths are soaked.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from litetrain import Interpreter
from tools.reliability import child_env, models

WARMUP_STEPS = 1000


def resident_kb() -> int:
    """This process's resident memory now (Linux /proc), else its peak (getrusage)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def soak(steps: int, every: int, save_restore: bool, directory: str, units: int = 32) -> dict:
    """Train `steps` steps; every `every` steps save and restore (when `save_restore`) and record
    the variables' digest, resident memory and time."""
    model = models.mlp_file("adam", units=units)
    interp = Interpreter(model_content=model, strict_checkpoints=True)
    ckpt = os.path.join(directory, "soak.safetensors")
    marks = []
    started = time.perf_counter()
    for step in range(steps):
        x, y = models.batch(step, 32)
        interp.get_signature_runner("train")(x=x, y=y)
        if (step + 1) % every == 0:
            if save_restore:
                interp.get_signature_runner("save")(checkpoint_path=ckpt)
                if (step + 1) // every % 2 == 0:
                    interp = Interpreter(model_content=model, strict_checkpoints=True)
                interp.get_signature_runner("restore")(checkpoint_path=ckpt)
            marks.append({"step": step + 1, "digest": models.variables_digest(interp.get_variables()),
                          "rss_kb": resident_kb(), "seconds": time.perf_counter() - started})
    return {"marks": marks, "seconds": time.perf_counter() - started}


def _in_subprocess(steps: int, every: int, save_restore: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="litetrain-soak-") as directory:
        code = ("import json, sys; from tools.reliability.soak import soak; "
                f"print(json.dumps(soak({steps}, {every}, {save_restore}, sys.argv[1])))")
        proc = subprocess.run([sys.executable, "-c", code, directory], capture_output=True, text=True,
                              env=child_env())
    if proc.returncode != 0:
        raise RuntimeError(f"the soak process failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_soak(steps: int = 20_000, every: int = 500, warmup: int = WARMUP_STEPS) -> dict:
    """Both runs, each in a fresh process; returns the figures (no assertion: the caller decides).
    Memory growth is measured from the first mark at or after `warmup` steps to the highest later one."""
    soaked = _in_subprocess(steps, every, True)
    plain = _in_subprocess(steps, every, False)
    marks = soaked["marks"]
    warm = [m for m in marks if m["step"] >= warmup]
    base, peak = warm[0]["rss_kb"], max(m["rss_kb"] for m in warm)
    at = {m["step"]: m["seconds"] for m in marks}
    window = min(1000, steps // 2) // every * every
    return {
        "steps": steps, "save_restore_every": every, "save_restores": len(marks),
        "matching_checkpoints": sum(a["digest"] == b["digest"] for a, b in zip(marks, plain["marks"])),
        "final_matches_uninterrupted": marks[-1]["digest"] == plain["marks"][-1]["digest"],
        "warmup_steps": warm[0]["step"],
        "rss_after_warmup_mb": round(base / 1024, 1), "rss_peak_after_warmup_mb": round(peak / 1024, 1),
        "rss_end_mb": round(marks[-1]["rss_kb"] / 1024, 1),
        "rss_growth_percent": round(100.0 * (peak - base) / base, 2),
        "steps_per_second_first": round(window / at[window], 1),
        "steps_per_second_last": round(window / (at[steps] - at[steps - window]), 1),
        "seconds_with_save_restore": round(soaked["seconds"], 1), "seconds_uninterrupted": round(plain["seconds"], 1),
    }
