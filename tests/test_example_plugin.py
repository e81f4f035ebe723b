"""The third-party example plugin, built and installed as a real distribution."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(__file__)
PLUGIN = os.path.join(HERE, "plugins", "ronn-example-plugin")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Build the plugin's wheel and install it into a private folder."""
    target = str(tmp_path_factory.mktemp("site"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", target, PLUGIN],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return target


def _run(installed: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=installed + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("RONN_DISABLE_PLUGIN_AUTOLOAD", None)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=300)


def test_custom_op_and_toy_provider_with_fallback(installed: str) -> None:
    result = _run(installed, os.path.join(HERE, "plugins", "check_example_plugin.py"))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])

    x = np.array([[-1.0, 0.5, 2.0], [3.0, -4.0, 0.0]], dtype=np.float32)
    a = np.maximum(x, 0) + x
    expected = np.maximum(1 / (1 + np.exp(-(2.0 * np.tanh(0.5 * a)))), 0)
    np.testing.assert_allclose(report["y"], expected, rtol=1e-6)

    placement = {name: provider for name, _, provider in report["placement"]}
    assert placement == {
        "toy_relu": "ExampleToyExecutionProvider",
        "toy_add": "ExampleToyExecutionProvider",
        "custom": "CPUExecutionProvider",
        "cpu_sigmoid": "CPUExecutionProvider",
        "toy_relu2": "ExampleToyExecutionProvider",
    }
    assert report["providers"] == ["ExampleToyExecutionProvider", "CPUExecutionProvider"]
    assert "ExampleToyExecutionProvider" in report["available"]
    # x goes to the toy device once (read by two toy nodes); a comes back once; s goes over
    # once; y comes back once: copies only where neighbouring nodes sit on different devices.
    assert report["copies_to_device"] == 2
    assert report["copies_to_host"] == 2
    assert sorted(op for _, op in report["kernel_calls"]) == ["Add", "Relu", "Relu"]
    assert any("fall back" in w and "custom" in w for w in report["warnings"]), report["warnings"]
    assert ["example", "ronn-example-plugin", "1.0.0"] in report["plugins"]


def test_ronn_plugins_lists_the_distribution(installed: str) -> None:
    result = _run(installed, "-m", "ronn_api.cli", "plugins")
    assert result.returncode == 0, result.stderr
    assert "example  (ronn-example-plugin 1.0.0" in result.stdout
    assert "ronn_register_providers" in result.stdout
