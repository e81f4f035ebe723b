"""Where the time goes, node by node: ronn's and onnxruntime's profiles of one model.

    uv run python benchmarks/profile_nodes.py MODEL [--dim NAME=SIZE ...] [--runs 50] [--top 25]

Each runtime runs the model with ``SessionOptions.enable_profiling`` (Chrome-trace JSON, per
node); the report gives each runtime's total and its slowest nodes (median microseconds over
the runs after the first tenth), then the time per operator type. Node names differ between
the runtimes (fusions rename nodes), so the lists are side by side, not matched.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections import defaultdict
from typing import Any

from ronn_api.bench import make_feeds


def node_times(runtime: str, path: str, feeds: dict[str, Any], runs: int, threads: int) -> dict[str, tuple[float, str]]:
    """Median microseconds and operator type per node, from the runtime's profile."""
    if runtime == "onnxruntime":
        import onnxruntime as module
    else:
        import ronn as module
    options = module.SessionOptions()
    options.intra_op_num_threads = threads
    if runtime == "onnxruntime":
        options.log_severity_level = 3
    warm = module.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    for _ in range(3):
        warm.run(None, feeds)  # numba's kernels load, caches fill: not in the profile
    del warm
    options.enable_profiling = True
    session = module.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    for _ in range(runs):
        session.run(None, feeds)
    trace = session.end_profiling()
    with open(trace, encoding="utf-8") as handle:
        events = json.load(handle)
    os.remove(trace)
    durations: dict[str, list[float]] = defaultdict(list)
    ops: dict[str, str] = {}
    for event in events:
        name = event.get("name", "")
        if event.get("cat") == "Node" and name.endswith("_kernel_time"):
            node = name[: -len("_kernel_time")]
            durations[node].append(float(event["dur"]))
            ops[node] = event.get("args", {}).get("op_name", "?")
    skip = max(1, runs // 10)
    return {node: (statistics.median(values[skip:] or values), ops[node]) for node, values in durations.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--dim", action="append", default=[], metavar="NAME=SIZE")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    dims = {name: int(size) for name, _, size in (item.partition("=") for item in args.dim)}
    feeds = make_feeds(args.model, dims, 0)
    for runtime in ("ronn", "onnxruntime"):
        times = node_times(runtime, args.model, feeds, args.runs, args.threads)
        total = sum(t for t, _ in times.values())
        print(f"\n{runtime}: {total:.0f} us in {len(times)} nodes")
        for node, (us, op) in sorted(times.items(), key=lambda item: -item[1][0])[: args.top]:
            print(f"  {us:9.1f} us  {op:26s} {node[-60:]}")
        by_op: dict[str, float] = defaultdict(float)
        for us, op in times.values():
            by_op[op] += us
        print("  by operator: " + ", ".join(f"{op} {us:.0f}" for op, us in sorted(by_op.items(), key=lambda i: -i[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
