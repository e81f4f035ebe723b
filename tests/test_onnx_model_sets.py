"""The model data shipped in the onnx wheel: light models against onnxruntime, the simple,
pytorch-converted and pytorch-operator sets against their shipped expected outputs."""

from __future__ import annotations

import glob
import os

import numpy as np
import onnx
import onnxruntime
import pytest

import ronn
from ronn_onnx.testing import data_dir, model_cases, run_case

SETS = ("simple", "pytorch-converted", "pytorch-operator")
CASES = [(kind, case) for kind in SETS for case in model_cases(kind)]


@pytest.mark.parametrize("kind, case", CASES, ids=[f"{k}/{c.name}" for k, c in CASES])
def test_matches_shipped_outputs(kind: str, case) -> None:
    run_case(case)


LIGHT = sorted(glob.glob(os.path.join(data_dir(), "light", "*.onnx")))


def random_feeds(model: onnx.ModelProto, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    init = {t.name for t in model.graph.initializer}
    feeds = {}
    for value in model.graph.input:
        if value.name in init:
            continue
        shape = [d.dim_value or 1 for d in value.type.tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        feeds[value.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def test_there_are_nine_light_models() -> None:
    assert len(LIGHT) == 9


@pytest.mark.parametrize("path", LIGHT, ids=[os.path.basename(p)[6:-5] for p in LIGHT])
def test_light_model_agrees_with_onnxruntime(path: str) -> None:
    model = onnx.load(path)
    ours = ronn.InferenceSession(path)
    theirs = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    for seed in (0, 1):
        feeds = random_feeds(model, seed)
        expected = theirs.run(None, feeds)
        actual = ours.run(None, feeds)
        for e, a, out in zip(expected, actual, theirs.get_outputs()):
            assert a.dtype == e.dtype and a.shape == e.shape, out.name
            np.testing.assert_allclose(a, e, rtol=1e-3, atol=1e-5, err_msg=f"{path} {out.name}")
