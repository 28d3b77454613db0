"""The core: the IR (ir.py), the op registry (registry.py), tracing (trace.py, subgraphs.py),
ahead-of-time differentiation (autodiff.py) and the cleanup passes (passes.py). It knows no op
family, no kernel and no file format: ops register themselves into it."""

VERSION = "0.1.0"  # the package's version (litetrain.__version__, `litetrain --version`)
