"""Personalization on an int8 base against the same network in float: each base's bottleneck
(`load`, the frozen backbone), the head's train step and the peak memory, in litetrain and in LiteRT
on the same personalization file.

    python benchmarks/bench_int8.py [--images 8] [--steps 20] [--threads 1]

The bases are fixtures/int8/mobilenet_v2_035_float_io.tflite (full-integer-quantized MobileNetV2
0.35, 96x96, float images in, int8 to the bottleneck) and mobilenet_v2_035_float16.tflite (the
same weights in float16, dequantized to float32 when read). Each is made a personalization file
(`BaseModel.from_tflite` + a 4-class softmax head, Adam) once; each engine then runs it in a fresh
process of its own: litetrain's interpreter, LiteRT's reference kernels (the arithmetic litetrain
reproduces bit for bit) and LiteRT's builtin optimized kernels (no delegate). Peak RSS: VmHWM of
that process, from the start, with the file loaded and the steps run.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from _common import error_text, median_ms, peak_rss_mb, render  # noqa: E402

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "int8"
BASES = {"int8": FIXTURES / "mobilenet_v2_035_float_io.tflite", "float": FIXTURES / "mobilenet_v2_035_float16.tflite"}
ENGINES = ["litetrain", "litert_ref", "litert"]
SIZE = 96


def personalization_file(path) -> bytes:
    import litetrain as lt
    from litetrain.apps.personalize import BaseModel, convert_personalization
    from litetrain.apps.personalize.base import Preprocessing
    base = BaseModel.from_tflite(str(path), Preprocessing((SIZE, SIZE), 3, (0.5,) * 3, (0.5,) * 3, 255.0), name="base")
    return convert_personalization(base, "softmax", num_classes=4, optimizer=lt.optim.Adam(0.003))


def interpreter(engine, data, threads):
    if engine == "litetrain":
        import litetrain as lt
        return lt.Interpreter(model_content=data, num_threads=threads), lt.__version__
    from ai_edge_litert import interpreter as litert
    resolver = {"litert_ref": "BUILTIN_REF", "litert": "BUILTIN_WITHOUT_DEFAULT_DELEGATES"}[engine]
    import importlib.metadata
    return (litert.Interpreter(model_content=data, num_threads=threads,
                               experimental_op_resolver_type=getattr(litert.OpResolverType, resolver)),
            importlib.metadata.version("ai-edge-litert"))


def worker(engine, path, images, steps, threads):
    """One engine on one file, in this process: the figures as a dict."""
    import numpy as np
    data = pathlib.Path(path).read_bytes()
    interp, version = interpreter(engine, data, threads)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (images, SIZE, SIZE, 3)).astype(np.float32)
    load = interp.get_signature_runner("load")
    bottleneck = load(images=x)["bottleneck"]
    train = interp.get_signature_runner("train")
    b = np.resize(bottleneck, (20, bottleneck.shape[1])).astype(np.float32)
    labels = (np.arange(20) % 4).astype(np.int32)
    lr = np.float32(0.003)
    return {"version": version, "load_ms_per_image": median_ms(lambda: load(images=x), steps, 2) / images,
            "train_ms": median_ms(lambda: train(bottlenecks=b, labels=labels, learning_rate=lr), steps * 5),
            "peak_rss_mb": peak_rss_mb(), "mean_bottleneck": float(np.abs(bottleneck).mean())}


def run_worker(engine, path, args):
    code = (f"import json, sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); "
            f"import bench_int8 as b; print(json.dumps(b.worker({engine!r}, {str(path)!r}, {args.images}, "
            f"{args.steps}, {args.threads})))")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:
        return {"error": error_text(RuntimeError((proc.stderr.strip().splitlines() or ["failed"])[-1]))}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8, help="images per `load` call")
    parser.add_argument("--steps", type=int, default=20, help="timed `load` calls (head steps: 5x)")
    parser.add_argument("--threads", type=int, default=1, help="threads of every engine")
    args = parser.parse_args()
    table = [["base", "engine", "bottleneck ms/image", "vs litetrain", "head step ms", "peak RSS MB", "vs litetrain",
              "file KiB"]]
    with tempfile.TemporaryDirectory() as tmp:
        for base, fixture in BASES.items():
            path = pathlib.Path(tmp) / f"{base}.tflite"
            path.write_bytes(personalization_file(fixture))
            rows = {e: run_worker(e, path, args) for e in ENGINES}
            ours = rows["litetrain"]
            for engine, r in rows.items():
                if "error" in r:
                    table.append([base, engine, r["error"], "", "", "", "", ""])
                    continue
                ratio = (lambda k: f"{r[k] / ours[k]:.2f}x" if "error" not in ours else "")
                table.append([base, f"{engine} {r['version']}", f"{r['load_ms_per_image']:.2f}", ratio("load_ms_per_image"),
                              f"{r['train_ms']:.3f}", f"{r['peak_rss_mb']:.0f}", ratio("peak_rss_mb"),
                              f"{path.stat().st_size / 1024:.0f}"])
    print(f"Personalization bases, MobileNetV2 0.35 96x96 -> 4-class softmax head (Adam); `load` on {args.images} "
          f"images, median of {args.steps} calls; head train step on 20 bottlenecks; {args.threads} thread(s)")
    print(render(table))


if __name__ == "__main__":
    main()
