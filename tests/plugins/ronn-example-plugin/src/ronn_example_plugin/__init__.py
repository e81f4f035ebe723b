"""A third-party ronn plugin: registered through the ``ronn`` entry-point group.

Cheap to import: kernels are factories that do their work when a session is built.
"""

from __future__ import annotations

from typing import Any

from ronn import hookimpl
from ronn.kernel import KernelContext, KernelTable
from ronn.provider import ExecutionProvider

DOMAIN = "com.example"
TOY = "ExampleToyExecutionProvider"

CUSTOM_OPS = KernelTable(domain=DOMAIN)
TOY_KERNELS = KernelTable()


@CUSTOM_OPS.register("ScaledTanh", since=1)
def scaled_tanh(ctx: KernelContext):
    """y = alpha * tanh(beta * x)."""
    xp = ctx.xp
    alpha = float(ctx.attr("alpha", 1.0))
    beta = float(ctx.attr("beta", 1.0))

    def run(x):
        dtype = x.dtype.type
        return (dtype(alpha) * xp.tanh(dtype(beta) * x),)

    return run


@TOY_KERNELS.register("Relu", since=1)
def toy_relu(ctx: KernelContext):
    """Relu on the toy device."""
    def run(x):
        ToyExecutionProvider.kernel_calls.append((ctx.provider, "Relu"))
        return (ctx.xp.maximum(x, x.dtype.type(0)),)

    return run


@TOY_KERNELS.register("Add", since=1)
def toy_add(ctx: KernelContext):
    """Add on the toy device."""

    def run(a, b):
        ToyExecutionProvider.kernel_calls.append((ctx.provider, "Add"))
        return (ctx.xp.add(a, b),)

    return run


class ToyExecutionProvider(ExecutionProvider):
    """A provider on its own (pretend) device that takes float32 Relu and Add only."""

    name = TOY
    device = "example-toy"
    copies_to_device = 0
    copies_to_host = 0
    kernel_calls: list[tuple[str, str]] = []

    def claims(self, node: Any, graph: Any, factory: Any) -> bool:
        """Only float32 nodes (as far as the graph's declared types tell)."""
        declared = {v.name: v.type for v in list(graph.inputs) + list(graph.value_info.values())}
        for name in node.inputs:
            value_type = declared.get(name)
            if value_type is not None and getattr(value_type, "dtype", 1) != 1:
                return False
        return True

    def from_host(self, value: Any) -> Any:
        """Copy onto the toy device."""
        type(self).copies_to_device += 1
        return value.copy()

    def to_host(self, value: Any) -> Any:
        """Copy back to host memory."""
        type(self).copies_to_host += 1
        return value.copy()


@hookimpl
def ronn_register_kernels(registry: Any) -> None:
    CUSTOM_OPS.add_to(registry, provider="CPUExecutionProvider")
    TOY_KERNELS.add_to(registry, provider=TOY)


@hookimpl
def ronn_register_providers(registry: Any) -> None:
    registry.add(TOY, ToyExecutionProvider, device="example-toy", description="a toy provider (example plugin)")
