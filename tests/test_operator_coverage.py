"""Every operator version onnx defines has a CPU kernel (or runs as its onnx function body)."""

from __future__ import annotations

import onnx
import pytest

import ronn

DOMAINS = ("", "ai.onnx.ml", "ai.onnx.preview.training", "ai.onnx.preview")
SCHEMAS = [
    s for s in onnx.defs.get_all_schemas_with_history() if s.domain in DOMAINS and not s.deprecated
]


def test_every_operator_version_has_a_kernel() -> None:
    kernels = ronn.PluginHost().kernels()
    missing = sorted(
        (s.domain or "ai.onnx", s.name, s.since_version)
        for s in SCHEMAS
        if kernels.lookup(s.domain, s.name, s.since_version, "CPUExecutionProvider") is None
        and not (s.has_function or s.has_context_dependent_function)
    )
    assert not missing, missing


@pytest.mark.parametrize("domain", DOMAINS[:3])
def test_the_newest_opset_is_accepted(domain: str) -> None:
    newest = max(s.since_version for s in SCHEMAS if s.domain == domain)
    kernels = ronn.PluginHost().kernels()
    names = {s.name for s in SCHEMAS if s.domain == domain}
    assert all(kernels.lookup(domain, name, newest, "CPUExecutionProvider") for name in names)
