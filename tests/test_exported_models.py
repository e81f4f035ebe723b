"""ronn runs real torch.onnx exports (ResNet, MobileNetV3, BERT, GPT-2) as onnxruntime does.

The models lie in tests/models/ (random weights, reduced widths; see its README.md and
make_models.py, which needs torch and is not run here).  Each test feeds the same
random inputs to onnxruntime and to ronn and compares every output.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime
import pytest

import ronn

MODELS_DIR = os.path.join(os.path.dirname(__file__), "models")
BATCH, SEQ = 2, 7
VOCAB = 1000
RTOL, ATOL = 1e-3, 1e-4


def _image_feeds(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"input": rng.standard_normal((BATCH, 3, 64, 64)).astype(np.float32)}


def _text_feeds(rng: np.random.Generator, token_types: bool) -> dict[str, np.ndarray]:
    ids = rng.integers(0, VOCAB, size=(BATCH, SEQ), dtype=np.int64)
    # Row 0 is full; row 1 is right-padded to length 4 (every row keeps real tokens).
    mask = np.ones((BATCH, SEQ), dtype=np.int64)
    mask[1, 4:] = 0
    feeds = {"input_ids": ids, "attention_mask": mask}
    if token_types:
        tt = np.zeros((BATCH, SEQ), dtype=np.int64)
        tt[:, 3:] = 1
        feeds["token_type_ids"] = tt
    return feeds


# file, seed, feeds builder
CASES = {
    "resnet": ("resnet_tiny.onnx", 10, _image_feeds),
    "mobilenetv3": ("mobilenetv3_tiny.onnx", 11, _image_feeds),
    "bert": ("bert_tiny.onnx", 12, lambda rng: _text_feeds(rng, token_types=True)),
    "gpt2": ("gpt2_tiny.onnx", 13, lambda rng: _text_feeds(rng, token_types=False)),
}


def test_models_are_committed_and_small() -> None:
    total = 0
    for fname, _, _ in CASES.values():
        path = os.path.join(MODELS_DIR, fname)
        assert os.path.isfile(path), f"{fname} is missing: run tests/models/make_models.py"
        onnx.checker.check_model(path)
        total += os.path.getsize(path)
    assert total < 6 * 1024 * 1024, total


@pytest.mark.parametrize("name", list(CASES))
def test_matches_onnxruntime(name: str) -> None:
    fname, seed, make_feeds = CASES[name]
    path = os.path.join(MODELS_DIR, fname)
    feeds = make_feeds(np.random.default_rng(seed))

    ref_sess = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert sorted(i.name for i in ref_sess.get_inputs()) == sorted(feeds)
    ref_names = [o.name for o in ref_sess.get_outputs()]
    expected = ref_sess.run(None, feeds)

    sess = ronn.InferenceSession(path)
    names = [o.name for o in sess.get_outputs()]
    assert names == ref_names
    assert [i.name for i in sess.get_inputs()] == [i.name for i in ref_sess.get_inputs()]
    got = sess.run(None, feeds)

    assert len(got) == len(expected)
    for out_name, g, e in zip(ref_names, got, expected):
        g = np.asarray(g)
        assert g.shape == e.shape, f"{name}:{out_name} shape {g.shape} != {e.shape}"
        assert g.dtype == e.dtype, f"{name}:{out_name} dtype {g.dtype} != {e.dtype}"
        assert np.all(np.isfinite(e)), f"{name}:{out_name}: onnxruntime output not finite"
        np.testing.assert_allclose(g, e, rtol=RTOL, atol=ATOL, err_msg=f"{name}:{out_name}")
