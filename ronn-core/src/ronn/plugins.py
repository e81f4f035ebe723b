"""The plugin host: a typed facade over ``pluggy.PluginManager("ronn")``.

Nothing loads at import. A host loads the ``ronn`` entry points on first use (unless told not
to) and builds its registries once. Tests create their own host, so nothing leaks between them::

    host = PluginHost(autoload=False)
    host.register(my_plugin)
    session = ronn.InferenceSession(model, plugin_host=host)

Environment switches, read when a host loads its entry points:

* ``RONN_DISABLE_PLUGIN_AUTOLOAD=1``: load no entry points (register plugins by hand);
* ``RONN_PLUGINS=a,b``: load only these entry-point names;
* ``RONN_BLOCK_PLUGINS=a,b``: never load these;
* ``RONN_TRACE_PLUGINS=1``: log every hook call to the ``ronn.plugins`` logger.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

import pluggy

from . import hookspecs
from .errors import PluginLoadError, RonnWarning
from .registry import (
    AllocatorRegistry,
    KernelRegistry,
    LoaderRegistry,
    OptimizerRegistry,
    ProviderRegistry,
)

if TYPE_CHECKING:
    from .ir import Graph, Node
    from .session_info import RunFunction, SessionInfo

ENTRY_POINT_GROUP = "ronn"
logger = logging.getLogger("ronn.plugins")


@dataclass(frozen=True)
class PluginInfo:
    """A loaded plugin: its name, the distribution it came from, and the hooks it implements."""

    name: str
    distribution: str | None
    version: str | None
    hooks: tuple[str, ...]


def _call(impl: Any, **kwargs: Any) -> Any:
    """Call one hook implementation with the arguments it declares (pluggy's convention)."""
    return impl.function(*[kwargs[name] for name in impl.argnames])


def _env_list(name: str) -> set[str] | None:
    raw = os.environ.get(name, "").strip()
    return {part.strip() for part in raw.split(",") if part.strip()} if raw else None


class PluginHost:
    """Loads plugins and answers, through typed methods, what they registered."""

    def __init__(
        self,
        *,
        autoload: bool | None = None,
        allow: Iterable[str] | None = None,
        block: Iterable[str] | None = None,
        plugins: Iterable[Any] = (),
    ) -> None:
        self._pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self._pm.add_hookspecs(hookspecs)
        self._autoload = autoload
        self._allow = set(allow) if allow is not None else None
        self._block = set(block) if block is not None else None
        self._loaded = False
        self._lock = threading.RLock()
        self._distributions: dict[str, tuple[str | None, str | None]] = {}
        self._registries: dict[str, Any] = {}
        self.duplicates: list[str] = []
        for plugin in plugins:
            self.register(plugin)

    # --- loading --------------------------------------------------------------------------

    def register(self, plugin: Any, name: str | None = None) -> str:
        """Register a plugin object or module by hand; registries are rebuilt on next use."""
        with self._lock:
            try:
                registered = self._pm.register(plugin, name=name)
                self._check_pending()
            except pluggy.PluginValidationError as exc:
                if self._pm.is_registered(plugin):
                    self._pm.unregister(plugin)
                raise PluginLoadError(f"plugin {name or plugin!r} is invalid: {exc}") from exc
            if registered is None:
                raise PluginLoadError(f"plugin {name or plugin!r} is blocked or already registered")
            self._registries.clear()
            return registered

    def _check_pending(self) -> None:
        """Fail on hook implementations that match no hook (a misspelled ``ronn_`` name)."""
        self._pm.check_pending()

    def unregister(self, name: str) -> None:
        """Remove a plugin by name; registries are rebuilt on next use."""
        with self._lock:
            self._pm.unregister(name=name)
            self._registries.clear()

    def load(self) -> None:
        """Load the ``ronn`` entry points once, honouring the switches."""
        with self._lock:
            if self._loaded:
                return
            self._loaded = True
            autoload = self._autoload
            if autoload is None:
                autoload = os.environ.get("RONN_DISABLE_PLUGIN_AUTOLOAD", "") in ("", "0")
            if os.environ.get("RONN_TRACE_PLUGINS", "") not in ("", "0"):
                self._pm.trace.root.setwriter(lambda text: logger.debug(text.rstrip()))
                self._pm.enable_tracing()
            if autoload:
                self._load_entry_points()
            try:
                self._check_pending()
            except pluggy.PluginValidationError as exc:
                raise PluginLoadError(f"a ronn plugin implements an unknown hook: {exc}") from exc

    def _load_entry_points(self) -> None:
        allow = self._allow if self._allow is not None else _env_list("RONN_PLUGINS")
        block = (self._block or set()) | (_env_list("RONN_BLOCK_PLUGINS") or set())
        seen: dict[str, str] = {}
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist else None
            version = ep.dist.version if ep.dist else None
            if ep.name in seen:
                if seen[ep.name] != (dist or "?"):
                    message = (
                        f"ronn plugin name {ep.name!r} is provided by two distributions, "
                        f"{seen[ep.name]!r} and {dist!r}; only the first is loaded"
                    )
                    self.duplicates.append(message)
                    warnings.warn(message, RonnWarning, stacklevel=3)
                continue
            seen[ep.name] = dist or "?"
            if ep.name in block or (allow is not None and ep.name not in allow):
                logger.debug("plugin %s from %s not loaded (switched off)", ep.name, dist)
                continue
            if self._pm.get_plugin(ep.name) is not None:
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginLoadError(
                    f"ronn plugin {ep.name!r} ({ep.value}) from distribution "
                    f"{dist or 'unknown'} {version or ''} failed to import: {exc}"
                ) from exc
            try:
                self._pm.register(plugin, name=ep.name)
            except pluggy.PluginValidationError as exc:
                raise PluginLoadError(
                    f"ronn plugin {ep.name!r} from distribution {dist or 'unknown'} is invalid: {exc}"
                ) from exc
            self._distributions[ep.name] = (dist, version)

    # --- registries -----------------------------------------------------------------------

    def _collect(self, key: str, registry: Any, hook_name: str) -> Any:
        with self._lock:
            cached = self._registries.get(key)
            if cached is not None:
                return cached
            self.load()
            hook = getattr(self._pm.hook, hook_name)
            # Call each implementation with the registrar tagged by its plugin's name, so a
            # conflict names both plugins. Earlier-registered plugins register first.
            for impl in hook.get_hookimpls():
                registry.plugin = impl.plugin_name
                _call(impl, registry=registry)
            registry.plugin = "<direct>"
            self._registries[key] = registry
            return registry

    def kernels(self) -> KernelRegistry:
        """Every kernel the plugins registered."""
        return self._collect("kernels", KernelRegistry(), "ronn_register_kernels")

    def providers(self) -> ProviderRegistry:
        """Every execution provider the plugins registered."""
        return self._collect("providers", ProviderRegistry(), "ronn_register_providers")

    def loaders(self) -> LoaderRegistry:
        """Every model loader the plugins registered."""
        return self._collect("loaders", LoaderRegistry(), "ronn_register_model_loaders")

    def optimizers(self) -> OptimizerRegistry:
        """Every optimizer pass the plugins registered."""
        return self._collect("optimizers", OptimizerRegistry(), "ronn_register_optimizers")

    def allocators(self) -> AllocatorRegistry:
        """Every allocator the plugins registered."""
        return self._collect("allocators", AllocatorRegistry(), "ronn_register_allocators")

    # --- decisions ------------------------------------------------------------------------

    def select_provider(self, node: Node, graph: Graph, candidates: list[str]) -> str | None:
        """A plugin's placement override for ``node``, if any."""
        self.load()
        return self._pm.hook.ronn_select_provider(node=node, graph=graph, candidates=candidates)

    def wrap_run(self, run: RunFunction, session: SessionInfo) -> RunFunction:
        """``run`` wrapped by every plugin that asks to, in registration order."""
        self.load()
        for impl in self._pm.hook.ronn_wrap_run.get_hookimpls():
            wrapped = _call(impl, run=run, session=session)
            if wrapped is not None:
                run = wrapped
        return run

    # --- introspection --------------------------------------------------------------------

    def plugins(self) -> list[PluginInfo]:
        """What is loaded, with distributions and implemented hooks."""
        self.load()
        infos = []
        for name, plugin in self._pm.list_name_plugin():
            if name is None or plugin is None:
                continue
            hooks = tuple(sorted(c.name for c in self._pm.get_hookcallers(plugin) or ()))
            dist, version = self._distributions.get(name, (None, None))
            infos.append(PluginInfo(name, dist, version, hooks))
        return infos

    @property
    def plugin_manager(self) -> pluggy.PluginManager:
        """The underlying pluggy manager (for advanced use and tests)."""
        return self._pm


_default_host: PluginHost | None = None
_default_lock = threading.Lock()


def get_plugin_host() -> PluginHost:
    """The process-wide host used when a session is given none; created on first call."""
    global _default_host
    with _default_lock:
        if _default_host is None:
            _default_host = PluginHost()
        return _default_host


def reset_plugin_host() -> None:
    """Forget the process-wide host (the next call to :func:`get_plugin_host` makes a new one)."""
    global _default_host
    with _default_lock:
        _default_host = None


def load_builtin(module_name: str) -> Any:
    """Import a plugin module by name (for hosts built by hand in tests)."""
    return importlib.import_module(module_name)
