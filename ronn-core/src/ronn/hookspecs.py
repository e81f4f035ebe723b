"""Every hook a ronn plugin can implement.

Plugins are modules or objects exposed through the ``ronn`` entry-point group, with functions
decorated by :data:`ronn.hookimpl`. Registration hooks receive a typed registrar and call its
``add`` method; the core validates what they add and reports conflicts with the plugin's name.

All hooks run while a session is being built, never per node inside ``run``: a plugin decides
once and hands back plain callables.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .ir import Graph, Node
    from .registry import (
        AllocatorRegistry,
        KernelRegistry,
        LoaderRegistry,
        OptimizerRegistry,
        ProviderRegistry,
    )
    from .session_info import RunFunction, SessionInfo

hookspec = pluggy.HookspecMarker("ronn")
hookimpl = pluggy.HookimplMarker("ronn")


@hookspec
def ronn_register_providers(registry: ProviderRegistry) -> None:
    """Add execution providers with ``registry.add(name, factory, ...)``.

    ``factory(options: dict[str, str])`` returns an :class:`ronn.ExecutionProvider`.
    Called once per plugin host, the first time providers are needed.
    """


@hookspec
def ronn_register_kernels(registry: KernelRegistry) -> None:
    """Add operator kernels with ``registry.add(op_type, factory, domain=, since_version=, provider=)``.

    ``factory(ctx: KernelContext)`` is called once per node when a session is built and
    returns the function that computes the node's outputs from its inputs. Called once per
    plugin host.
    """


@hookspec
def ronn_register_model_loaders(registry: LoaderRegistry) -> None:
    """Add model loaders with ``registry.add(name, loader)``.

    A loader turns a source (a path, bytes, a URL-like reference) into a :class:`ronn.ir.Model`;
    the first loader whose ``can_load(source)`` is true loads it.
    """


@hookspec
def ronn_register_optimizers(registry: OptimizerRegistry) -> None:
    """Add graph optimizer passes with ``registry.add(name, pass_fn, level=...)``.

    ``pass_fn(model, context)`` (a :class:`ronn.registry.OptimizerContext`) rewrites the model's IR in place and returns whether it changed
    anything. Passes run at session creation for levels up to the session's
    ``graph_optimization_level``; ``disabled_optimizers`` names passes to skip.
    """


@hookspec
def ronn_register_allocators(registry: AllocatorRegistry) -> None:
    """Add memory allocators with ``registry.add(device, name, factory)``.

    Providers ask for their device's allocator by name; the ``default`` allocator of a device
    is used when none is named in the provider options.
    """


@hookspec(firstresult=True)
def ronn_select_provider(node: Node, graph: Graph, candidates: list[str]) -> str | None:
    """Override where a node runs: return one of ``candidates`` (provider names), or None.

    ``candidates`` are the session's providers that can run the node, in the user's order of
    preference. The first plugin that returns a name decides (``firstresult``); with no answer
    the first candidate takes the node. Called once per node at session creation.
    """


@hookspec
def ronn_wrap_run(run: RunFunction, session: SessionInfo) -> RunFunction | None:
    """Wrap a session's run function, e.g. for tracing or profiling; return the wrapper or None.

    Called once when a session is built; the wrapper is then called once per ``run``
    (never per node) as ``wrapper(feeds, fetches, run_options) -> dict``. Wrappers nest in
    registration order.
    """


__all__ = [
    "hookimpl",
    "hookspec",
    "ronn_register_allocators",
    "ronn_register_kernels",
    "ronn_register_model_loaders",
    "ronn_register_optimizers",
    "ronn_register_providers",
    "ronn_select_provider",
    "ronn_wrap_run",
]

