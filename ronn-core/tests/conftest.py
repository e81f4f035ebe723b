"""Fixtures for ronn-core's own tests: a fresh plugin host with an in-test plugin."""

from __future__ import annotations

import numpy as np
import pytest

from ronn import hookimpl
from ronn.ir import Graph, Model, Node, TensorType, ValueInfo
from ronn.dtypes import DataType
from ronn.plugins import PluginHost
from ronn.provider import ExecutionProvider


class HostProvider(ExecutionProvider):
    """A provider for core tests, independent of ronn-cpu."""

    name = "TestExecutionProvider"


class MiniPlugin:
    """Registers a provider, a loader for IR models, and three numpy kernels."""

    @hookimpl
    def ronn_register_providers(self, registry):
        registry.add("TestExecutionProvider", HostProvider)
        registry.add("CPUExecutionProvider", lambda options: type("Cpu", (HostProvider,), {"name": "CPUExecutionProvider"})(options))

    @hookimpl
    def ronn_register_kernels(self, registry):
        def neg(ctx):
            return lambda x: (np.negative(x),)

        def add(ctx):
            return lambda a, b: (np.add(a, b),)

        def fail(ctx):
            def run(x):
                raise ValueError("boom")

            return run

        for provider in ("TestExecutionProvider", "CPUExecutionProvider"):
            registry.add("Neg", neg, since_version=1, provider=provider)
            registry.add("Add", add, since_version=1, provider=provider)
            registry.add("Fail", fail, since_version=1, provider=provider)


@pytest.fixture
def make_host():
    """Build a fresh host holding the mini plugin and any extra plugins."""

    def make(*extra) -> PluginHost:
        return PluginHost(autoload=False, plugins=[MiniPlugin(), *extra])

    return make


@pytest.fixture
def host(make_host) -> PluginHost:
    return make_host()


def tensor(name: str, *shape) -> ValueInfo:
    return ValueInfo(name, TensorType(DataType.FLOAT, tuple(shape)))


@pytest.fixture
def chain_model() -> Model:
    """x -> Neg -> n; n + x -> y."""
    graph = Graph(
        nodes=[Node("Neg", ["x"], ["n"], name="neg"), Node("Add", ["n", "x"], ["y"], name="add")],
        inputs=[tensor("x", "N", 3)],
        outputs=[tensor("y", "N", 3)],
        name="chain",
    )
    return Model(graph, {"": 17}, ir_version=8, source="chain")
