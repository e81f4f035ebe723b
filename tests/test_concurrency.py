"""Concurrent runs on one session, with real models and real threads, give the serial answers."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

import ronn

MODELS = os.path.join(os.path.dirname(__file__), "models")


def text_feeds(seed: int, batch: int, seq: int, token_types: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {
        "input_ids": rng.integers(0, 1000, size=(batch, seq), dtype=np.int64),
        "attention_mask": np.ones((batch, seq), dtype=np.int64),
    }
    if token_types:
        feeds["token_type_ids"] = np.zeros((batch, seq), dtype=np.int64)
    return feeds


CASES = {
    "gpt2_tiny.onnx": lambda seed: text_feeds(seed, 1 + seed % 3, 3 + seed % 9, False),
    "bert_tiny.onnx": lambda seed: text_feeds(seed, 1 + seed % 3, 3 + seed % 9, True),
    "mobilenetv3_tiny.onnx": lambda seed: {
        "input": np.random.default_rng(seed).standard_normal((1 + seed % 2, 3, 64, 64)).astype(np.float32)
    },
}


@pytest.mark.parametrize("name", list(CASES))
def test_threads_share_a_session(name: str) -> None:
    session = ronn.InferenceSession(os.path.join(MODELS, name))
    make = CASES[name]
    expected = {seed: session.run(None, make(seed)) for seed in range(12)}
    failures: list[str] = []

    def work(offset: int) -> None:
        for step in range(12):
            seed = (offset + step) % 12
            got = session.run(None, make(seed))
            for a, b in zip(got, expected[seed]):
                if a.shape != b.shape or not np.array_equal(a, b):
                    failures.append(f"thread {offset} seed {seed}")

    threads = [threading.Thread(target=work, args=(i * 5,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:5]
