"""What a kernel factory receives when a session is built.

A kernel is registered as a *factory*: ``factory(ctx) -> run``. The factory runs once per
node at session creation, reads the node's attributes from ``ctx``, and returns ``run``, a
plain function called on every ``InferenceSession.run`` with the node's inputs (``None`` for
omitted optional inputs, then the values of ``ctx.implicit_inputs``) that returns a tuple or
list of outputs, one per node output::

    def relu(ctx: KernelContext):
        xp = ctx.xp
        def run(x):
            return (xp.maximum(x, 0),)
        return run

Kernels must not write into their inputs: user feeds and initializers are read-only arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .errors import InvalidGraphError

if TYPE_CHECKING:
    from .ir import Graph, Model, Node, ValueType

KernelRun = Callable[..., Sequence[Any]]
KernelFactory = Callable[["KernelContext"], KernelRun]

_MISSING = object()


class SubgraphRunner(Protocol):
    """A compiled subgraph (If/Loop/Scan bodies), run with explicit and outer-scope values."""

    input_names: list[str]
    output_names: list[str]

    def __call__(self, inputs: Sequence[Any], outer: dict[str, Any]) -> list[Any]:
        """Run the subgraph; ``outer`` holds the values it reads from enclosing graphs."""


@dataclass
class KernelContext:
    """Everything a kernel factory may need about its node, fixed at session creation."""

    node: Node
    opset: int
    xp: Any
    provider: str
    input_types: list[ValueType | None] = field(default_factory=list)
    output_types: list[ValueType | None] = field(default_factory=list)
    #: outer-scope names the node's subgraphs read; their values follow the explicit inputs
    implicit_inputs: list[str] = field(default_factory=list)
    model: Model | None = None
    #: the provider's allocator, for kernels that want uninitialised output buffers
    allocator: Any = None
    #: per explicit input, its value when it is an initializer of the node's graph (weights a
    #: kernel may prepare once: transpose, pack, fold), else None. Treat as read-only.
    constant_inputs: list[Any] = field(default_factory=list)
    compile_subgraph_fn: Callable[[Graph], SubgraphRunner] | None = None

    def attr(self, name: str, default: Any = _MISSING) -> Any:
        """The attribute's value, ``default`` when absent; an error naming the node without one."""
        value = self.node.attributes.get(name, _MISSING)
        if value is _MISSING:
            if default is _MISSING:
                raise InvalidGraphError(f"{self.node.label()} lacks required attribute {name!r}")
            return default
        return value

    def has_attr(self, name: str) -> bool:
        """Whether the node sets ``name``."""
        return name in self.node.attributes

    @property
    def num_inputs(self) -> int:
        """How many explicit inputs the node has (omitted trailing ones excluded)."""
        return len(self.node.inputs)

    @property
    def num_outputs(self) -> int:
        """How many outputs the node declares."""
        return len(self.node.outputs)

    def constant(self, index: int) -> Any:
        """The value of input ``index`` if it is an initializer (known at session creation), else None."""
        return self.constant_inputs[index] if index < len(self.constant_inputs) else None

    def compile_subgraph(self, graph: Graph) -> SubgraphRunner:
        """Compile a subgraph attribute once, for the kernel to call from ``run``."""
        if self.compile_subgraph_fn is None:
            raise InvalidGraphError(f"{self.node.label()}: subgraphs cannot be compiled here")
        return self.compile_subgraph_fn(graph)

    def fail(self, message: str) -> InvalidGraphError:
        """An error about this node's attributes or types, raised at session creation."""
        return InvalidGraphError(f"{self.node.label()}: {message}")


class KernelTable:
    """A module's kernels, declared with a decorator and added to a registry in one call::

        KERNELS = KernelTable()

        @KERNELS.register("Relu", since=(6, 13, 14))
        def relu(ctx): ...

        # in the plugin's ronn_register_kernels hook:
        KERNELS.add_to(registry, provider="MyExecutionProvider")
    """

    def __init__(self, domain: str = "") -> None:
        self.domain = domain
        self.entries: list[tuple[str, str, int, KernelFactory]] = []

    def register(
        self, op_type: str, *, since: int | Sequence[int] = 1, domain: str | None = None
    ) -> Callable[[KernelFactory], KernelFactory]:
        """Declare the decorated factory as the kernel of ``op_type`` from each ``since`` version."""
        versions = [since] if isinstance(since, int) else list(since)

        def decorate(factory: KernelFactory) -> KernelFactory:
            for version in versions:
                self.entries.append((self.domain if domain is None else domain, op_type, version, factory))
            return factory

        return decorate

    def add_to(self, registry: Any, provider: str) -> None:
        """Add every declared kernel to a :class:`ronn.registry.KernelRegistry`."""
        for domain, op_type, version, factory in self.entries:
            registry.add(op_type, factory, domain=domain, since_version=version, provider=provider)
