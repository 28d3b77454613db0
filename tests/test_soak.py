"""Long training with a save and a restore every few hundred steps: the weights match an
uninterrupted run bit for bit at every checkpoint, and resident memory stays flat."""
from __future__ import annotations

import pytest

from tools.reliability.soak import run_soak


def test_soak_small():
    figures = run_soak(steps=1000, every=100, warmup=300)
    assert figures["matching_checkpoints"] == figures["save_restores"] == 10
    assert figures["final_matches_uninterrupted"]
    assert figures["rss_growth_percent"] < 5.0, figures


@pytest.mark.slow
def test_soak_20000_steps():
    figures = run_soak(steps=20_000, every=500)
    assert figures["matching_checkpoints"] == figures["save_restores"] == 40
    assert figures["final_matches_uninterrupted"]
    assert figures["rss_growth_percent"] < 5.0, figures
