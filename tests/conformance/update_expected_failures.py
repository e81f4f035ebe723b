"""Rewrite expected_failures.txt from a fresh run of every node case (a maintainer's tool).

    uv run python tests/conformance/update_expected_failures.py

The list may only shrink: review the diff; a case that appears in it is a regression.
"""

from __future__ import annotations

import re
from pathlib import Path

from ronn.errors import UnsupportedOperatorError
from ronn_onnx.testing import node_cases, run_case

HERE = Path(__file__).parent


def reason_for(exc: Exception) -> str:
    if isinstance(exc, UnsupportedOperatorError):
        ops = ", ".join(f"{d or 'ai.onnx'}::{op}-{v}" for d, op, v in exc.operators)
        return f"not implemented: {ops}"
    text = re.sub(r"\s+", " ", f"{type(exc).__name__}: {exc}")
    return text[:160]


def main() -> None:
    lines = ["# case-name reason  (one per line; this list may only shrink)"]
    for case in node_cases():
        if case.name.startswith("test_bernoulli"):
            continue
        try:
            run_case(case)
        except Exception as exc:
            lines.append(f"{case.name} {reason_for(exc)}")
    (HERE / "expected_failures.txt").write_text("\n".join(lines) + "\n")
    print(f"{len(lines) - 1} expected failures written")


if __name__ == "__main__":
    main()
