"""The execution-provider interface.

A provider owns a device (its array namespace ``xp`` and allocator), says which nodes it
takes, and builds kernels for them from the kernels registered under its name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .ir import Graph, Node
    from .kernel import KernelContext, KernelFactory, KernelRun
    from .registry import Allocator, KernelRegistry


class NumpyAllocator:
    """The host allocator: plain numpy arrays."""

    def empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A new uninitialised array."""
        return np.empty(shape, dtype)


class ExecutionProvider:
    """Base class of execution providers; subclasses set ``name`` and override what differs.

    ``kernel_provider`` names the registrations the provider draws kernels from (its own
    name by default), so a provider can reuse another provider's generic ``xp`` kernels.
    """

    name: str = "ExecutionProvider"
    device: str = "cpu"
    xp: Any = np

    def __init__(self, options: dict[str, str] | None = None) -> None:
        self.options: dict[str, str] = dict(options or {})
        self.allocator: Allocator = NumpyAllocator()

    @property
    def kernel_providers(self) -> tuple[str, ...]:
        """Registration names searched for kernels, first match wins."""
        return (self.name,)

    def find_kernel(
        self, registry: KernelRegistry, node: Node, opset: int
    ) -> KernelFactory | None:
        """The kernel factory this provider would use for ``node``, or None."""
        for provider in self.kernel_providers:
            factory = registry.lookup(node.domain, node.op_type, opset, provider)
            if factory is not None:
                return factory
        return None

    def claims(self, node: Node, graph: Graph, factory: KernelFactory) -> bool:
        """Whether the provider takes ``node`` given it has a kernel (override to refuse)."""
        return True

    def create_kernel(self, factory: KernelFactory, ctx: KernelContext) -> KernelRun:
        """Build the node's run function (override to wrap kernels, e.g. for a device)."""
        return factory(ctx)

    def to_host(self, value: Any) -> Any:
        """Copy a value from this provider's device to host numpy."""
        return value

    def from_host(self, value: Any) -> Any:
        """Copy a host numpy value onto this provider's device."""
        return value

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} on {self.device}>"
