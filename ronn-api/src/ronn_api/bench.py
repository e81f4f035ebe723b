"""``ronn bench``: latency percentiles, throughput, session creation and peak memory.

With ``--compare onnxruntime`` both runtimes run in this process in alternating blocks (the
machine's speed drifts, so neither gets the fast minutes), and the report gives ratios. Each
block starts with ``--block-warmup`` untimed runs: right after one runtime's block, its idle
threads (onnxruntime's spinning intra-op pool, OpenBLAS's workers) still take the cores for a
while and would slow the other's first runs.
Peak memory is measured in a child process per runtime, where the peak is that runtime's own.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .bench_args import add_arguments

RUNTIMES = ("ronn", "onnxruntime")


@dataclass
class Result:
    """What one runtime measured."""

    runtime: str
    create_ms: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    peak_rss_mb: float | None = None

    def percentile(self, q: float) -> float:
        """A latency percentile in milliseconds."""
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    @property
    def throughput(self) -> float:
        """Runs per second at the median latency."""
        median = statistics.median(self.latencies_ms) if self.latencies_ms else 0.0
        return 1000.0 / median if median else float("nan")

    def summary(self) -> dict[str, float | None]:
        """The figures the report prints."""
        return {
            "create_ms": self.create_ms,
            "p50_ms": self.percentile(50),
            "p95_ms": self.percentile(95),
            "p99_ms": self.percentile(99),
            "throughput_per_s": self.throughput,
            "peak_rss_mb": self.peak_rss_mb,
        }


def make_feeds(model_path: str, dims: dict[str, int], seed: int) -> dict[str, np.ndarray]:
    """Random inputs matching the model's declared inputs (symbolic sizes from ``dims``)."""
    import ronn

    from .commands import random_input

    session = ronn.InferenceSession(model_path)
    rng = np.random.default_rng(seed)
    spec = {v.name: v.type for v in session.model.graph.inputs}
    return {arg.name: random_input(spec[arg.name], dims, rng) for arg in session.get_inputs()}


def create_session(runtime: str, model_path: str, threads: int) -> tuple[Any, float]:
    """A session of ``runtime`` and how long creating it took, in ms (imports not counted)."""
    if runtime == "onnxruntime":
        import onnxruntime as module
    else:
        import ronn as module

        module.get_plugin_host().kernels()  # plugins load once per process, not per session
    options = module.SessionOptions()
    options.intra_op_num_threads = threads
    if runtime == "onnxruntime":
        options.log_severity_level = 3
    started = time.perf_counter()
    session = module.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    return session, (time.perf_counter() - started) * 1e3


def time_block(run: Callable[[], Any], runs: int) -> list[float]:
    """Latencies of ``runs`` back-to-back calls, in ms."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1e3)
    return times


def measure(model_path: str, runtimes: list[str], feeds: dict[str, np.ndarray], args: argparse.Namespace) -> dict[str, Result]:
    """Latency in alternating blocks, in this process."""
    results = {name: Result(name) for name in runtimes}
    sessions = {}
    for name in runtimes:
        sessions[name], results[name].create_ms = create_session(name, model_path, args.threads)
        for _ in range(args.warmup):
            sessions[name].run(None, feeds)
    deadline = time.perf_counter() + args.max_seconds
    for block in range(args.blocks):
        order = runtimes if block % 2 == 0 else list(reversed(runtimes))
        for name in order:
            session = sessions[name]
            for _ in range(getattr(args, "block_warmup", 0) if len(runtimes) > 1 else 0):
                session.run(None, feeds)  # untimed: the other runtime's threads settle first
            results[name].latencies_ms += time_block(lambda: session.run(None, feeds), args.runs)
        if time.perf_counter() > deadline:
            break
    return results


def peak_memory(model_path: str, runtime: str, feeds: dict[str, np.ndarray], args: argparse.Namespace) -> float | None:
    """Peak RSS (MB) of a child process that imports only ``runtime``, creates the session and runs it."""
    with tempfile.TemporaryDirectory() as folder:
        feeds_path = os.path.join(folder, "feeds.npz")
        np.savez(feeds_path, **feeds)
        command = [
            sys.executable, "-m", "ronn_api.bench", "--child", runtime, model_path, "--feeds", feeds_path,
            "--threads", str(args.threads), "--runs", str(min(args.runs, 20)),
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        return None
    return float(json.loads(result.stdout.strip().splitlines()[-1])["peak_rss_mb"])


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB.

    Read from /proc (VmHWM): ``ru_maxrss`` carries the parent's peak across fork and exec.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(runtime: str, model_path: str, args: argparse.Namespace) -> None:
    """Inside the memory-measuring child: create, run, report the peak RSS."""
    with np.load(args.feeds, allow_pickle=False) as data:
        feeds = {name: data[name] for name in data.files}
    session, _ = create_session(runtime, model_path, args.threads)
    for _ in range(args.runs):
        session.run(None, feeds)
    print(json.dumps({"peak_rss_mb": peak_rss_mb()}))


def _dims(items: list[str]) -> dict[str, int]:
    dims = {}
    for item in items:
        name, _, value = item.partition("=")
        dims[name] = int(value)
    return dims


def format_report(model_path: str, results: dict[str, Result]) -> str:
    """A table of the figures, with ronn/onnxruntime ratios when both ran."""
    rows = [("session creation (ms)", "create_ms"), ("P50 latency (ms)", "p50_ms"), ("P95 latency (ms)", "p95_ms"),
            ("P99 latency (ms)", "p99_ms"), ("throughput (runs/s)", "throughput_per_s"), ("peak RSS (MB)", "peak_rss_mb")]
    summaries = {name: r.summary() for name, r in results.items()}
    names = list(results)
    compare = len(names) == 2
    header = f"{'':24}" + "".join(f"{n:>14}" for n in names) + (f"{'ratio':>10}" if compare else "")
    lines = [f"model: {model_path}", header]
    for label, key in rows:
        values = [summaries[n][key] for n in names]
        cells = "".join(f"{v:>14.2f}" if v is not None else f"{'n/a':>14}" for v in values)
        ratio = ""
        if compare and None not in values and values[1]:
            ratio = f"{values[0] / values[1]:>10.2f}"
        lines.append(f"{label:24}{cells}{ratio}")
    if compare:
        lines.append("ratio = ronn / onnxruntime (below 1: ronn is faster or smaller; throughput: above 1)")
    return "\n".join(lines)


def run_bench(args: argparse.Namespace) -> int:
    """``ronn bench``: measure and print the report."""
    runtimes = ["ronn"] + ([args.compare] if args.compare else [])
    feeds = make_feeds(args.model, _dims(args.dim), args.seed)
    results = measure(args.model, runtimes, feeds, args)
    if not args.no_memory:
        for name in runtimes:
            results[name].peak_rss_mb = peak_memory(args.model, name, feeds, args)
    if args.json:
        print(json.dumps({n: {**r.summary(), "latencies_ms": r.latencies_ms} for n, r in results.items()}))
    else:
        print(format_report(args.model, results))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point for the memory child (``python -m ronn_api.bench --child ...``) and direct use."""
    parser = argparse.ArgumentParser(prog="ronn bench")
    parser.add_argument("--child", choices=RUNTIMES)
    parser.add_argument("--feeds", help="(child) inputs saved by the parent as .npz")
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.model, args)
        return 0
    return run_bench(args)


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["Result", "format_report", "run_bench"]
