"""Operators without a kernel run as their onnx function body."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
from onnx import TensorProto, helper

import ronn
import ronn_onnx.plugin
from ronn.errors import UnsupportedOperatorError
from ronn.registry import KernelRegistry
from ronn_cpu.kernels import register_all

MISSING = {"Celu", "LayerNormalization", "HardSwish"}


class CpuWithout:
    """The CPU provider's kernels less a few operators that onnx defines by functions."""

    @ronn.hookimpl
    def ronn_register_kernels(self, registry):
        everything = KernelRegistry()
        register_all(everything, "CPUExecutionProvider")
        for domain, op, version, provider in everything.operators():
            if op not in MISSING:
                registry.add(op, everything.lookup(domain, op, version, provider), domain=domain, since_version=version)

    @ronn.hookimpl
    def ronn_register_providers(self, registry):
        from ronn_cpu.plugin import _create

        registry.add("CPUExecutionProvider", _create)


def model() -> bytes:
    nodes = [
        helper.make_node("Celu", ["x"], ["c"], alpha=0.7),
        helper.make_node("HardSwish", ["c"], ["h"]),
        helper.make_node("LayerNormalization", ["h", "scale", "bias"], ["y"], axis=-1, epsilon=1e-5),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in (("x", [2, 5]), ("scale", [5]), ("bias", [5]))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()


def test_function_bodies_stand_in_for_missing_kernels() -> None:
    host = ronn.PluginHost(autoload=False, plugins=[ronn_onnx.plugin, CpuWithout()])
    session = ronn.InferenceSession(model(), plugin_host=host)
    assert not {op for _, op, _ in session.node_providers()} & MISSING
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((2, 5)).astype(np.float32), "scale": rng.random(5).astype(np.float32), "bias": rng.random(5).astype(np.float32)}
    expected = onnxruntime.InferenceSession(model(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(session.run(None, feeds)[0], expected, rtol=1e-4, atol=1e-5)


def test_the_pass_can_be_disabled() -> None:
    host = ronn.PluginHost(autoload=False, plugins=[ronn_onnx.plugin, CpuWithout()])
    options = ronn.SessionOptions()
    options.add_session_config_entry("optimization.disabled_optimizers", "expand_function_operators")
    with pytest.raises(UnsupportedOperatorError, match="Celu"):
        ronn.InferenceSession(model(), options, plugin_host=host)
