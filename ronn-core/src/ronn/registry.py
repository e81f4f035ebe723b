"""Typed registrars handed to the registration hooks, and the lookups built from them.

Each registrar records which plugin added what, so a conflict names both plugins.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from .errors import RegistrationConflictError
from .options import GraphOptimizationLevel

if TYPE_CHECKING:
    from .ir import Model
    from .kernel import KernelFactory
    from .provider import ExecutionProvider

DEFAULT_DOMAIN = ""
CPU = "CPUExecutionProvider"


def normalize_domain(domain: str) -> str:
    """``ai.onnx`` and ``""`` name the same domain."""
    return "" if domain == "ai.onnx" else domain


T = TypeVar("T")


class _Registry(Generic[T]):
    """Entries keyed by a tuple, each remembering the plugin that added it."""

    kind = "entry"

    def __init__(self) -> None:
        self._entries: dict[Any, tuple[T, str]] = {}
        self.plugin = "<direct>"

    def _put(self, key: Any, value: T, *, replace: bool = False) -> None:
        if key in self._entries and not replace:
            _, owner = self._entries[key]
            raise RegistrationConflictError(
                f"{self.kind} {key!r} registered twice: by plugin {owner!r} and by plugin "
                f"{self.plugin!r} (pass replace=True to override deliberately)"
            )
        self._entries[key] = (value, self.plugin)

    def owner(self, key: Any) -> str:
        """The plugin that registered ``key``."""
        return self._entries[key][1]

    def __contains__(self, key: Any) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)


# --- kernels ------------------------------------------------------------------------------


class KernelRegistry(_Registry["KernelFactory"]):
    """Kernels by (domain, op type, since_version, provider)."""

    kind = "kernel"

    def __init__(self) -> None:
        super().__init__()
        self._versions: dict[tuple[str, str, str], list[int]] = {}

    def add(
        self,
        op_type: str,
        factory: KernelFactory,
        *,
        domain: str = DEFAULT_DOMAIN,
        since_version: int = 1,
        provider: str = CPU,
        replace: bool = False,
    ) -> None:
        """Register ``factory`` for ``op_type`` from opset ``since_version`` on ``provider``.

        The kernel serves every opset from ``since_version`` until the next registration of
        the same operator; the factory reads ``ctx.opset`` where semantics differ.
        """
        domain = normalize_domain(domain)
        if not callable(factory):
            raise TypeError(f"kernel factory for {op_type!r} must be callable, got {factory!r}")
        self._put((domain, op_type, int(since_version), provider), factory, replace=replace)
        versions = self._versions.setdefault((domain, op_type, provider), [])
        if since_version not in versions:
            bisect.insort(versions, int(since_version))

    def lookup(self, domain: str, op_type: str, opset: int, provider: str) -> KernelFactory | None:
        """The factory with the highest since_version <= ``opset``, or None."""
        domain = normalize_domain(domain)
        versions = self._versions.get((domain, op_type, provider))
        if not versions:
            return None
        index = bisect.bisect_right(versions, opset) - 1
        if index < 0:
            return None
        return self._entries[(domain, op_type, versions[index], provider)][0]

    def operators(self, provider: str | None = None) -> Iterator[tuple[str, str, int, str]]:
        """Every registered (domain, op type, since_version, provider)."""
        for key in sorted(self._entries):
            if provider is None or key[3] == provider:
                yield key


# --- providers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ProviderSpec:
    """A registered execution provider."""

    name: str
    factory: Callable[[dict[str, str]], ExecutionProvider]
    device: str = "cpu"
    description: str = ""
    is_available: Callable[[], bool] = field(default=lambda: True)
    aliases: tuple[str, ...] = ()


class ProviderRegistry(_Registry[ProviderSpec]):
    """Execution providers by name."""

    kind = "provider"

    def add(
        self,
        name: str,
        factory: Callable[[dict[str, str]], ExecutionProvider],
        *,
        device: str = "cpu",
        description: str = "",
        is_available: Callable[[], bool] | None = None,
        aliases: tuple[str, ...] = (),
    ) -> None:
        """Register a provider; ``is_available()`` says whether it can run on this machine."""
        spec = ProviderSpec(
            name, factory, device, description, is_available or (lambda: True), tuple(aliases)
        )
        self._put(name, spec)

    def get(self, name: str) -> ProviderSpec | None:
        """The provider registered as ``name`` or with that alias."""
        if name in self._entries:
            return self._entries[name][0]
        for spec, _ in self._entries.values():
            if name in spec.aliases:
                return spec
        return None

    def names(self) -> list[str]:
        """Names of every registered provider."""
        return list(self._entries)

    def specs(self) -> list[ProviderSpec]:
        """Every registered provider."""
        return [spec for spec, _ in self._entries.values()]


# --- model loaders ------------------------------------------------------------------------


class ModelLoader(Protocol):
    """Turns a source into a :class:`ronn.ir.Model`."""

    def can_load(self, source: Any) -> bool:
        """Whether this loader understands ``source``."""

    def load(self, source: Any, options: dict[str, Any]) -> Model:
        """Load ``source``; raise a :class:`ronn.errors.ModelError` that names it on failure."""


class ModelSaver(Protocol):
    """A loader that can also write a model back to its format."""

    def save(self, model: Model, path: str) -> None:
        """Write ``model`` to ``path``."""


class LoaderRegistry(_Registry[ModelLoader]):
    """Model loaders by name, tried in registration order."""

    kind = "model loader"

    def add(self, name: str, loader: ModelLoader) -> None:
        """Register ``loader`` as ``name``."""
        for method in ("can_load", "load"):
            if not callable(getattr(loader, method, None)):
                raise TypeError(f"model loader {name!r} has no {method}() method")
        self._put(name, loader)

    def find(self, source: Any) -> ModelLoader | None:
        """The first loader that accepts ``source``."""
        for loader, _ in self._entries.values():
            if loader.can_load(source):
                return loader
        return None

    def get(self, name: str) -> ModelLoader | None:
        """The loader registered as ``name``."""
        entry = self._entries.get(name)
        return entry[0] if entry else None

    def names(self) -> list[str]:
        """Names of every loader."""
        return list(self._entries)


# --- optimizers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class OptimizerContext:
    """What an optimizer pass may consult besides the model."""

    level: GraphOptimizationLevel
    kernels: KernelRegistry
    providers: tuple[str, ...]
    config: dict[str, str]

    def has_kernel(self, domain: str, op_type: str, opset: int) -> bool:
        """Whether any of the session's providers registered a kernel for the operator."""
        return any(self.kernels.lookup(domain, op_type, opset, p) is not None for p in self.providers)


@dataclass(frozen=True)
class OptimizerPass:
    """A graph rewrite that runs at or above ``level``."""

    name: str
    run: Callable[[Model, OptimizerContext], bool]
    level: GraphOptimizationLevel
    order: int = 0


class OptimizerRegistry(_Registry[OptimizerPass]):
    """Optimizer passes by name."""

    kind = "optimizer pass"

    def add(
        self,
        name: str,
        pass_fn: Callable[[Model, OptimizerContext], bool],
        *,
        level: GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_BASIC,
        order: int = 0,
    ) -> None:
        """Register a pass; passes of one level run by ``order``, then by name."""
        self._put(name, OptimizerPass(name, pass_fn, GraphOptimizationLevel(level), order))

    def passes(self, level: GraphOptimizationLevel, disabled: set[str] = frozenset()) -> list[OptimizerPass]:
        """The passes to run at ``level``, in order, less the disabled ones."""
        chosen = [
            p for p, _ in self._entries.values() if p.level <= level and p.name not in disabled
        ]
        return sorted(chosen, key=lambda p: (p.level, p.order, p.name))


# --- allocators ---------------------------------------------------------------------------


class Allocator(Protocol):
    """Makes uninitialised arrays on one device."""

    def empty(self, shape: tuple[int, ...], dtype: Any) -> Any:
        """A new uninitialised array."""


class AllocatorRegistry(_Registry[Callable[[], Allocator]]):
    """Allocator factories by (device, name)."""

    kind = "allocator"

    def add(self, device: str, name: str, factory: Callable[[], Allocator]) -> None:
        """Register ``factory`` as the allocator ``name`` of ``device``."""
        self._put((device, name), factory)

    def create(self, device: str, name: str = "default") -> Allocator | None:
        """A new allocator, or None when none is registered."""
        entry = self._entries.get((device, name))
        return entry[0]() if entry else None
