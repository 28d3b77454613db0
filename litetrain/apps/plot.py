"""Loss curves as PNG pictures, for the demo, `litetrain personalize train` and the examples.
matplotlib is an optional extra (`pip install "litetrain[plot]"`), imported only when a plot is made."""
from __future__ import annotations

import numpy as np


class PlotError(RuntimeError):
    """A plot was asked for and cannot be made: says what to install."""


def save_curves(path, curves: dict, xlabel="epoch", ylabel="loss", title=""):
    """Draw each curve (label -> values per x step, or None to leave it out) and save a PNG at `path`."""
    try:
        import matplotlib
        matplotlib.use("Agg")  # no screen needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotError('a plot needs matplotlib: pip install "litetrain[plot]" (or pip install matplotlib)') from None
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    try:
        for label, values in curves.items():
            if values is not None and len(values):
                ax.plot(np.arange(1, len(values) + 1), np.asarray(values, np.float64), label=label, marker=".")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if title:
            ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


def per_epoch(step_values, steps_per_epoch: int):
    """Mean of each epoch's per-step values."""
    values = np.asarray(step_values, np.float64)
    return [float(values[i:i + steps_per_epoch].mean()) for i in range(0, len(values), steps_per_epoch)]
