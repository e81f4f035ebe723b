"""`ronn bench` measures both runtimes and reports ratios."""

from __future__ import annotations

import json

from ronn_api.cli import main
from ronn_api.demo import DEMO_MODEL_PATH


def test_bench_json_has_every_figure_for_both_runtimes(capsys) -> None:
    code = main(["bench", DEMO_MODEL_PATH, "--compare", "onnxruntime", "--runs", "3", "--blocks", "2", "--threads", "1", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(report) == {"ronn", "onnxruntime"}
    for figures in report.values():
        assert len(figures["latencies_ms"]) == 6
        assert 0 < figures["p50_ms"] <= figures["p95_ms"] <= figures["p99_ms"]
        assert figures["create_ms"] > 0 and figures["throughput_per_s"] > 0
        assert figures["peak_rss_mb"] > 10


def test_bench_table_prints_ratios(capsys) -> None:
    assert main(["bench", DEMO_MODEL_PATH, "--compare", "onnxruntime", "--runs", "2", "--blocks", "2", "--no-memory"]) == 0
    out = capsys.readouterr().out
    assert "P99 latency (ms)" in out and "ratio" in out and "peak RSS (MB)" in out
