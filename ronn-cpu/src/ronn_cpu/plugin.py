"""ronn-cpu's plugin: the CPU provider and its kernels, registered like any third party's.

Cheap to import: kernel modules load when the host first asks for kernels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ronn.hookspecs import hookimpl

if TYPE_CHECKING:
    from ronn.registry import AllocatorRegistry, KernelRegistry, ProviderRegistry

PROVIDER = "CPUExecutionProvider"


def _create(options: dict[str, str]):  # noqa: ANN202
    from .provider import CPUExecutionProvider

    return CPUExecutionProvider(options)


@hookimpl
def ronn_register_providers(registry: ProviderRegistry) -> None:
    registry.add(PROVIDER, _create, device="cpu", description="numpy kernels on the host")


@hookimpl
def ronn_register_kernels(registry: KernelRegistry) -> None:
    from .kernels import register_all

    register_all(registry, PROVIDER)


@hookimpl
def ronn_register_allocators(registry: AllocatorRegistry) -> None:
    from ronn.provider import NumpyAllocator

    registry.add("cpu", "default", NumpyAllocator)
