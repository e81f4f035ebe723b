"""The `ronn` command, in process and as the installed console script."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from ronn_api.cli import main
from ronn_api.demo import DEMO_MODEL_PATH, build_demo_model, demo_inputs


def test_the_committed_demo_model_is_what_the_builder_makes() -> None:
    assert Path(DEMO_MODEL_PATH).read_bytes() == build_demo_model().SerializeToString()


def test_run_without_a_model_runs_the_embedded_demo(capsys) -> None:
    assert main(["run"]) == 0
    out = capsys.readouterr().out
    assert "model: embedded demo" in out
    assert "output probabilities: float32[1, 10]" in out


def test_run_with_inputs_saves_outputs_matching_onnxruntime(tmp_path: Path, capsys) -> None:
    x = np.random.default_rng(3).random((2, 1, 28, 28)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code = main(["run", DEMO_MODEL_PATH, "--input", f"image={tmp_path / 'x.npy'}", "-o", "probabilities", "-o", "c1", "--save", str(tmp_path / "out")])
    assert code == 0
    saved = np.load(tmp_path / "out" / "probabilities.npy")
    expected = onnxruntime.InferenceSession(DEMO_MODEL_PATH, providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    np.testing.assert_allclose(saved, expected, rtol=1e-4, atol=1e-6)
    assert np.load(tmp_path / "out" / "c1.npy").shape == (2, 8, 28, 28)


def test_run_fills_missing_inputs_with_random_values(capsys) -> None:
    assert main(["run", DEMO_MODEL_PATH, "--dim", "batch=3"]) == 0
    out = capsys.readouterr().out
    assert "input image: random float32[3, 1, 28, 28]" in out
    assert "float32[3, 10]" in out


def test_info_lists_operators_and_placement(capsys) -> None:
    assert main(["info", DEMO_MODEL_PATH, "--nodes"]) == 0
    out = capsys.readouterr().out
    assert "image: tensor(float) ['batch', 1, 28, 28]" in out
    assert "opsets: ai.onnx=17" in out
    assert "       2  Conv" in out
    assert "CPUExecutionProvider: 9 node(s)" in out
    assert "conv1 (Conv) -> CPUExecutionProvider" in out


def test_providers_and_plugins(capsys) -> None:
    assert main(["providers"]) == 0
    assert "CPUExecutionProvider  [cpu] available" in capsys.readouterr().out
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "cpu  (ronn-cpu 0.1.0" in out and "onnx  (ronn-onnx 0.1.0)" in out


def test_errors_are_messages_not_tracebacks(tmp_path: Path, capsys) -> None:
    assert main(["run", str(tmp_path / "missing.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ronn: error: model file not found:") and "Traceback" not in err
    assert main(["run", DEMO_MODEL_PATH, "--input", "image"]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err


def test_console_script_is_installed() -> None:
    exe = shutil.which("ronn")
    if exe is None:
        pytest.skip("the ronn script is not on PATH (run the tests through `uv run`)")
    result = subprocess.run([exe, "run"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "output probabilities" in result.stdout
