"""LiteRT in a child process with a time limit: for checks whose regression would be a LiteRT kernel
that never returns (its optimized depthwise convolution above 4832 channels), so that the test fails
instead of hanging the suite."""
import subprocess
import sys

import numpy as np

_RUN = ("import sys, numpy as np; from ai_edge_litert.interpreter import Interpreter, OpResolverType\n"
        "d = np.load(sys.argv[3]); r = Interpreter(model_path=sys.argv[1], experimental_op_resolver_type="
        "OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES).get_signature_runner(sys.argv[2])\n"
        "np.savez(sys.argv[4], **r(**{k: d[k] for k in d.files}))")


def run_signature(data: bytes, signature: str, inputs: dict, tmp_path, timeout=60) -> dict:
    """The outputs of `signature` of the .tflite `data` on `inputs`, computed by LiteRT's builtin
    kernels (no delegate) in a child process that must finish within `timeout` seconds."""
    model, given, out = tmp_path / "model.tflite", tmp_path / "inputs.npz", tmp_path / "outputs.npz"
    model.write_bytes(data)
    np.savez(given, **inputs)
    subprocess.run([sys.executable, "-c", _RUN, str(model), signature, str(given), str(out)], check=True,
                   timeout=timeout)
    with np.load(out) as z:
        return {k: z[k] for k in z.files}
