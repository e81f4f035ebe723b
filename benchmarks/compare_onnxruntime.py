"""Latency of ronn and onnxruntime on the same models, in alternating rounds of one process.

    uv run python benchmarks/compare_onnxruntime.py [--rounds 5] [--runs 10] [MODEL.onnx ...]

Without models it measures the onnx wheel's light models and the exported models in
tests/models. Each round times `--runs` calls of each runtime back to back, alternating which
goes first; the report gives each runtime's median per-call latency and the ratio ronn/ort.
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import time

import numpy as np
import onnx
import onnxruntime

import ronn
from ronn_onnx.testing import data_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def feeds_for(path: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random inputs: batch 1 images, or batch 2 x 7 tokens for text models."""
    model = onnx.load(path, load_external_data=False)
    init = {t.name for t in model.graph.initializer}
    feeds = {}
    for value in model.graph.input:
        if value.name in init:
            continue
        t = value.type.tensor_type
        dims = [d.dim_value if d.dim_value else (2 if i == 0 else 7) for i, d in enumerate(t.shape.dim)]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)
        if np.issubdtype(dtype, np.integer):
            high = 2 if "mask" in value.name or "type" in value.name else 1000
            feeds[value.name] = rng.integers(0, high, size=dims).astype(dtype)
            if "mask" in value.name:
                feeds[value.name][:] = 1
        else:
            feeds[value.name] = rng.standard_normal(dims).astype(dtype)
    return feeds


def time_calls(fn, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def compare(path: str, rounds: int, runs: int, threads: int) -> tuple[float, float]:
    feeds = feeds_for(path, np.random.default_rng(0))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    ort = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    ours = ronn.InferenceSession(path)
    ours.run(None, feeds), ort.run(None, feeds)  # warm up
    ronn_times: list[float] = []
    ort_times: list[float] = []
    for r in range(rounds):
        order = [(ours, ronn_times), (ort, ort_times)]
        if r % 2:
            order.reverse()
        for session, sink in order:
            sink.extend(time_calls(lambda: session.run(None, feeds), runs))
    return statistics.median(ronn_times), statistics.median(ort_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra_op_num_threads")
    args = parser.parse_args()
    models = args.models or (
        sorted(glob.glob(os.path.join(data_dir(), "light", "*.onnx")))
        + sorted(glob.glob(os.path.join(ROOT, "tests", "models", "*.onnx")))
    )
    print(f"| model | ronn ms | onnxruntime ms | ratio |\n|---|---:|---:|---:|")
    ratios = []
    for path in models:
        mine, theirs = compare(path, args.rounds, args.runs, args.threads)
        ratios.append(mine / theirs)
        name = os.path.basename(path).removesuffix(".onnx")
        print(f"| {name} | {mine * 1e3:.2f} | {theirs * 1e3:.2f} | {mine / theirs:.2f} |", flush=True)
    print(f"\ngeometric mean of ratios: {float(np.exp(np.mean(np.log(ratios)))):.2f}")


if __name__ == "__main__":
    main()
