"""Models with external data are memory-mapped: loading one does not copy its weights.

The slow test builds a model over 2 GB (protobuf's limit) and records peak RSS while ronn
loads and runs it: `uv run pytest tests/test_large_models.py --run-slow -s`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

PROBE = os.path.join(os.path.dirname(__file__), "large_model_probe.py")
CHUNK_ROWS = 256


def write_model(folder: Path, k: int, n: int) -> tuple[Path, Path]:
    """y = x @ W with W (k x n float32) streamed to model.data in chunks of rows."""
    data = folder / "model.data"
    with open(data, "wb") as handle:
        for start in range(0, k, CHUNK_ROWS):
            rows = min(CHUNK_ROWS, k - start)
            chunk = np.random.default_rng(start).standard_normal((rows, n), dtype=np.float32)
            chunk.tofile(handle)
    weight = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[k, n])
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "model.data"), ("offset", "0"), ("length", str(k * n * 4))):
        weight.external_data.add(key=key, value=value)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
        initializer=[weight],
    )
    path = folder / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path, data


def expected_output(k: int, n: int) -> np.ndarray:
    """x @ W computed chunk by chunk from the same generator, independently of the file."""
    x = np.linspace(-1, 1, k, dtype=np.float32)
    y = np.zeros(n, np.float64)
    for start in range(0, k, CHUNK_ROWS):
        rows = min(CHUNK_ROWS, k - start)
        chunk = np.random.default_rng(start).standard_normal((rows, n), dtype=np.float32)
        y += x[start : start + rows].astype(np.float64) @ chunk.astype(np.float64)
    return y


def probe(path: Path, k: int) -> dict:
    result = subprocess.run([sys.executable, PROBE, str(path), str(k)], capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_loading_maps_the_weights_instead_of_copying_them(tmp_path: Path) -> None:
    k, n = 4096, 16384  # 256 MiB of weights
    path, data = write_model(tmp_path, k, n)
    size_mb = data.stat().st_size / 2**20
    report = probe(path, k)
    assert report["after_load_mb"] - report["baseline_mb"] < 0.2 * size_mb, report
    np.testing.assert_allclose(report["y"], expected_output(k, n)[:64], rtol=1e-3, atol=1e-2)


@pytest.mark.slow
def test_a_model_over_2gb_loads_within_1_3_times_its_size(tmp_path: Path) -> None:
    k, n = 24576, 24576  # 2.25 GiB of float32 weights
    path, data = write_model(tmp_path, k, n)
    size_mb = (data.stat().st_size + path.stat().st_size) / 2**20
    report = probe(path, k)
    report["size_mb"] = size_mb
    print(json.dumps({key: v for key, v in report.items() if key != "y"}))
    assert report["y_shape"] == [1, n]
    assert report["after_load_mb"] < 1.3 * size_mb, report
    np.testing.assert_allclose(report["y"], expected_output(k, n)[:64], rtol=1e-3, atol=5e-2)


@pytest.mark.slow
def test_a_model_over_2gb_saves_with_streamed_external_data(tmp_path: Path) -> None:
    from ronn_onnx import load_model, save_model

    k, n = 24576, 24576
    source = tmp_path / "source"
    source.mkdir()
    path, _ = write_model(source, k, n)
    model = load_model(str(path))
    target = tmp_path / "saved" / "model.onnx"
    target.parent.mkdir()
    save_model(model, str(target))  # over 2 GB: external data chosen automatically
    assert (target.parent / "model.onnx.data").stat().st_size >= k * n * 4
    assert target.stat().st_size < 1 << 20
    again = load_model(str(target))
    np.testing.assert_array_equal(again.graph.initializers["W"][-3:, -5:], model.graph.initializers["W"][-3:, -5:])
