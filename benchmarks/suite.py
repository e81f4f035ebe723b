"""The benchmark table of docs/PERFORMANCE.md: ronn against onnxruntime on the five benchmark models.

    /tmp/export-venv/bin/python benchmarks/make_models.py     # once: the exported models
    uv run python benchmarks/suite.py [--threads 2] [--blocks 8] [--runs 5] [--only NAME ...]

For each model, in one process: session creation (fresh sessions, alternating runtimes, the
median of ``--creations``; measured before the model has run), then median latency over
alternating blocks of runs (both runtimes
warmed up first); peak RSS in separate child processes (``ronn bench``'s, VmHWM: create, run).
Ratios are ronn / onnxruntime; the last line is the geometric mean of the latency ratios.
numba's cache is warm for creation times once any run has happened (the kernels compile on
first use and are cached in ``__pycache__``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
from dataclasses import dataclass

import numpy as np

from ronn_api.bench import create_session, make_feeds, measure, peak_memory
from ronn_onnx.testing import data_dir

HERE = os.path.dirname(os.path.abspath(__file__))


@dataclass(frozen=True)
class Case:
    """A benchmark model and the sizes of its symbolic dimensions."""

    name: str
    path: str
    dims: dict[str, int]
    shape: str


def cases() -> list[Case]:
    """The five benchmark models of the performance issue."""
    light = os.path.join(data_dir(), "light")
    models = os.path.join(HERE, "models")
    return [
        Case("ResNet-50", os.path.join(light, "light_resnet50.onnx"), {}, "1x3x224x224"),
        Case("DenseNet-121", os.path.join(light, "light_densenet121.onnx"), {}, "1x3x224x224"),
        Case("MobileNetV3-small", os.path.join(models, "mobilenetv3_small.onnx"), {"batch": 1}, "1x3x224x224"),
        Case("MiniLM-L6 encoder", os.path.join(models, "minilm_l6.onnx"), {"batch": 2, "sequence": 14}, "2x14 tokens"),
        Case("GPT-2 4 layers", os.path.join(models, "gpt2_4layer.onnx"), {"batch": 2, "sequence": 32}, "2x32 tokens"),
    ]


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _blas() -> str:
    """numpy's BLAS as threadpoolctl sees it: library, version, kernel architecture."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown"
    found = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    return ", ".join(f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')})" for i in found) or "none"


def creation_ms(path: str, threads: int, repeats: int) -> dict[str, float]:
    """Median session-creation time per runtime, creating fresh sessions in alternation."""
    times: dict[str, list[float]] = {"ronn": [], "onnxruntime": []}
    for repeat in range(repeats):
        order = ["ronn", "onnxruntime"] if repeat % 2 == 0 else ["onnxruntime", "ronn"]
        for runtime in order:
            session, ms = create_session(runtime, path, threads)
            del session
            times[runtime].append(ms)
    return {runtime: statistics.median(values) for runtime, values in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--block-warmup", type=int, default=2)
    parser.add_argument("--creations", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=1,
                        help="repeat the latency measurement (fresh sessions); the table gives the median "
                        "repeat and the range of the ratios")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--only", nargs="*", help="model names (as in the table) to run")
    args = parser.parse_args()
    args.max_seconds = 600.0
    selected = [c for c in cases() if not args.only or c.name in args.only]
    missing = [c.path for c in selected if not os.path.exists(c.path)]
    if missing:
        sys.exit(f"missing models (run benchmarks/make_models.py first): {', '.join(missing)}")
    print(f"machine: {_cpu_name()}, {os.cpu_count()} cores; threads {args.threads}; BLAS: {_blas()}")
    if os.environ.get("OPENBLAS_CORETYPE"):
        print(f"note: OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']} pins numpy's OpenBLAS kernels (unset it to measure what users get)")
    print(
        "| model | input | ronn ms | onnxruntime ms | latency ratio | creation ms (ronn / ort) | creation ratio "
        "| peak RSS MB (ronn / ort) | RSS ratio |\n|---|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    ratios = []
    for case in selected:
        feeds = make_feeds(case.path, case.dims, 0)
        creation = creation_ms(case.path, args.threads, args.creations)  # before any run: a fresh process's case
        repeats = []
        for _ in range(max(1, args.repeat)):
            results = measure(case.path, ["ronn", "onnxruntime"], feeds, args)
            pair = (statistics.median(results["ronn"].latencies_ms), statistics.median(results["onnxruntime"].latencies_ms))
            repeats.append((pair[0] / pair[1], pair))
        repeats.sort()
        ratio, (mine, theirs) = repeats[len(repeats) // 2]
        ratios.append(ratio)
        spread = f" ({repeats[0][0]:.2f}-{repeats[-1][0]:.2f})" if len(repeats) > 1 else ""
        memory = "n/a | n/a"
        if not args.no_memory:
            rss = {runtime: peak_memory(case.path, runtime, feeds, args) for runtime in ("ronn", "onnxruntime")}
            if None not in rss.values():
                memory = f"{rss['ronn']:.0f} / {rss['onnxruntime']:.0f} | {rss['ronn'] / rss['onnxruntime']:.2f}"
        print(
            f"| {case.name} | {case.shape} | {mine:.2f} | {theirs:.2f} | {ratio:.2f}{spread} "
            f"| {creation['ronn']:.0f} / {creation['onnxruntime']:.0f} | {creation['ronn'] / creation['onnxruntime']:.2f} "
            f"| {memory} |",
            flush=True,
        )
    print(f"\ngeometric mean of the latency ratios: {float(np.exp(np.mean(np.log(ratios)))):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
