"""Every onnx node test case through ronn.InferenceSession on the CPU provider.

Cases that do not pass yet are listed, each with its reason, in expected_failures.txt; the
list can only shrink (strict xfail: a listed case that starts passing fails the run until it
leaves the list).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ronn_onnx.testing import node_cases, run_case

HERE = Path(__file__).parent
RANDOM = "test_bernoulli"  # outputs depend on the random generator: not comparable


def expected_failures() -> dict[str, str]:
    listed: dict[str, str] = {}
    for line in (HERE / "expected_failures.txt").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, reason = line.partition(" ")
            listed[name] = reason.strip() or "no reason given"
    return listed


CASES = node_cases()
XFAIL = expected_failures()


def params():
    for case in CASES:
        marks = []
        if case.name.startswith(RANDOM):
            marks.append(pytest.mark.skip(reason="random outputs: compared by distribution elsewhere"))
        elif case.name in XFAIL:
            marks.append(pytest.mark.xfail(reason=XFAIL[case.name], strict=True))
        yield pytest.param(case, id=case.name, marks=marks)


def test_expected_failures_name_real_cases() -> None:
    names = {c.name for c in CASES}
    assert not set(XFAIL) - names, sorted(set(XFAIL) - names)


@pytest.mark.parametrize("case", list(params()))
def test_node_case(case) -> None:
    run_case(case)
