"""Memory stays flat over many runs with varying input shapes (no unbounded per-shape caches)."""

from __future__ import annotations

import os

import numpy as np

import ronn

MODEL = os.path.join(os.path.dirname(__file__), "models", "gpt2_tiny.onnx")


def rss_mb() -> float:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_rss_is_flat_over_a_thousand_shapes() -> None:
    session = ronn.InferenceSession(MODEL)
    rng = np.random.default_rng(0)

    def run_many(count: int) -> None:
        for _ in range(count):
            batch, seq = int(rng.integers(1, 4)), int(rng.integers(1, 100))
            feeds = {
                "input_ids": rng.integers(0, 1000, size=(batch, seq), dtype=np.int64),
                "attention_mask": np.ones((batch, seq), dtype=np.int64),
            }
            session.run(None, feeds)

    run_many(200)  # warm: every cache filled to its bound
    before = rss_mb()
    run_many(400)
    growth = rss_mb() - before
    assert growth < 25, f"RSS grew by {growth:.1f} MB over 400 runs with varying shapes"
