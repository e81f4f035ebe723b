"""Measure peak RSS while ronn loads (then runs) a model with external data; prints JSON.

    python tests/large_model_probe.py MODEL.onnx K

Run in its own process so its peak RSS is the load's alone.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

import ronn
from ronn_api.bench import peak_rss_mb


def rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (VmHWM: not inherited from the parent)."""
    return peak_rss_mb()


def main(path: str, k: int) -> None:
    import ronn_cpu.kernels  # noqa: F401  (import everything before the baseline)
    import ronn_onnx.loader  # noqa: F401

    ronn.get_plugin_host().kernels()
    baseline = rss_mb()
    started = time.perf_counter()
    session = ronn.InferenceSession(path)
    load_seconds = time.perf_counter() - started
    after_load = rss_mb()
    x = np.linspace(-1, 1, k, dtype=np.float32).reshape(1, k)
    started = time.perf_counter()
    (y,) = session.run(None, {"x": x})
    run_seconds = time.perf_counter() - started
    print(json.dumps({
        "baseline_mb": baseline, "after_load_mb": after_load, "after_run_mb": rss_mb(),
        "load_seconds": load_seconds, "run_seconds": run_seconds, "y": y.ravel()[:64].tolist(),
        "y_shape": list(y.shape),
    }))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
