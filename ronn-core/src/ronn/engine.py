"""The session engine: partition a model over providers and compile graphs into flat plans.

A plan is a list of steps ``(run, input slots, output slots, slots to free)`` over a list of
numbered slots. Kernels are built once per node when the session is created; ``run`` is a
tight loop that calls them, so a run does no hook calls and no attribute parsing. A plan is
immutable: each run gets its own slot list, so concurrent runs on one plan are safe.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import (
    InvalidGraphError,
    KernelError,
    ProviderFallbackError,
    RonnError,
    RunCancelledError,
    UnsupportedOperatorError,
)
from .ir import Graph, Model, Node, TensorType, ValueType, tensor_type_of
from .kernel import KernelContext, KernelFactory, KernelRun

if TYPE_CHECKING:
    from .plugins import PluginHost
    from .provider import ExecutionProvider

logger = logging.getLogger("ronn.session")


@dataclass
class Placement:
    """Which provider runs a node, and the kernel factory it uses."""

    provider: ExecutionProvider
    factory: KernelFactory
    opset: int


@dataclass
class Partition:
    """Provider placements for every node of a model, subgraphs included."""

    placements: dict[int, Placement] = field(default_factory=dict)
    fallbacks: list[tuple[Node, str]] = field(default_factory=list)

    def of(self, node: Node) -> Placement:
        """The placement of ``node``."""
        return self.placements[id(node)]


def partition(
    model: Model,
    providers: Sequence[ExecutionProvider],
    host: PluginHost,
    *,
    preferred: int = 1,
) -> Partition:
    """Place every node on the first provider (in order of preference) that takes it.

    ``preferred`` is how many leading providers the user asked for; a node placed on a later
    one is a fallback. Raises :class:`UnsupportedOperatorError` listing every operator that no
    provider implements.
    """
    registry = host.kernels()
    result = Partition()
    missing: set[tuple[str, str, int]] = set()
    for graph, node in model.graph.walk():
        opset = model.opset(node.domain)
        if opset is None:
            raise InvalidGraphError(
                f"{node.label()} uses domain {node.domain!r}, which the model does not import "
                f"(opset imports: {model.opset_imports})"
            )
        candidates: list[tuple[ExecutionProvider, KernelFactory]] = []
        for provider in providers:
            factory = provider.find_kernel(registry, node, opset)
            if factory is not None and provider.claims(node, graph, factory):
                candidates.append((provider, factory))
        if not candidates:
            missing.add((node.domain, node.op_type, opset))
            continue
        chosen = candidates[0]
        if len(candidates) > 1:
            override = host.select_provider(node, graph, [p.name for p, _ in candidates])
            if override is not None:
                matches = [c for c in candidates if c[0].name == override]
                if not matches:
                    raise RonnError(
                        f"a plugin placed {node.label()} on {override!r}, which is not among "
                        f"the providers that can run it: {[p.name for p, _ in candidates]}"
                    )
                chosen = matches[0]
        result.placements[id(node)] = Placement(chosen[0], chosen[1], opset)
        if list(providers).index(chosen[0]) >= preferred:
            result.fallbacks.append((node, chosen[0].name))
    if missing:
        raise UnsupportedOperatorError(missing, [p.name for p in providers])
    return result


def report_fallbacks(
    part: Partition, requested: Sequence[str], *, strict: bool, severity: int = -1
) -> None:
    """Warn (or, when ``strict``, fail) about nodes that left the user's requested providers.

    ``severity`` is onnxruntime's log_severity_level: the warning is logged unless it is 3
    (errors only) or 4 (fatal only).
    """
    if not part.fallbacks:
        return
    by_provider: dict[str, list[str]] = {}
    for node, provider in part.fallbacks:
        by_provider.setdefault(provider, []).append(node.label())
    summary = "; ".join(
        f"{len(labels)} node(s) to {name}: {', '.join(labels[:8])}{' ...' if len(labels) > 8 else ''}"
        for name, labels in by_provider.items()
    )
    if strict:
        raise ProviderFallbackError(
            f"fallback is disabled but nodes cannot run on {list(requested)}: {summary}"
        )
    if severity < 3:
        logger.warning("nodes fall back from %s: %s", list(requested), summary)


def value_types(graph: Graph) -> dict[str, ValueType | None]:
    """Known types of a graph's values: inputs, outputs, value_info and initializers."""
    types: dict[str, ValueType | None] = {}
    for info in list(graph.inputs) + list(graph.value_info.values()) + list(graph.outputs):
        if info.type is not None:
            types[info.name] = info.type
    for name, value in graph.initializers.items():
        if isinstance(value, np.ndarray):
            types[name] = tensor_type_of(value)
    return types


def describe_value(value: Any) -> str:
    """``float32[1, 3, 224, 224]``-style description of a runtime value, for messages."""
    if value is None:
        return "None"
    if isinstance(value, list):
        return f"sequence of {len(value)}" + (f" x {describe_value(value[0])}" if value else "")
    dtype = getattr(value, "dtype", None)
    shape = getattr(value, "shape", None)
    if dtype is not None and shape is not None:
        return f"{dtype}{list(shape)}"
    return type(value).__name__


class Profiler:
    """Collects per-node timings as Chrome-trace events."""

    def __init__(self) -> None:
        self.start_ns = time.perf_counter_ns()
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def record(self, name: str, category: str, start_ns: int, end_ns: int, args: dict[str, Any]) -> None:
        """Add one complete event."""
        event = {
            "cat": category,
            "pid": 0,
            "tid": threading.get_ident() % 100000,
            "dur": (end_ns - start_ns) // 1000,
            "ts": (start_ns - self.start_ns) // 1000,
            "ph": "X",
            "name": name,
            "args": args,
        }
        with self._lock:
            self.events.append(event)


class CompiledGraph:
    """A graph compiled against a partition: callable as a :class:`ronn.kernel.SubgraphRunner`."""

    def __init__(
        self,
        graph: Graph,
        model: Model,
        part: Partition,
        *,
        outer_scope: Sequence[str] = (),
        host_provider: ExecutionProvider | None = None,
        kernel_cache: dict[int, KernelRun] | None = None,
    ) -> None:
        self.graph = graph
        self.model = model
        self.partition = part
        self.outer_scope = list(outer_scope)
        self.input_names = [v.name for v in graph.inputs]
        self.output_names = [v.name for v in graph.outputs]
        self.order = graph.topological_order(outer_scope)
        self._types = value_types(graph)
        self._kernels: dict[int, KernelRun] = kernel_cache if kernel_cache is not None else {}
        self._plans: dict[tuple[str, ...], _Plan] = {}
        self._plans_lock = threading.Lock()
        self._scope: list[str] | None = None  # names a subgraph may read (computed on first need)
        for node in self.order:
            self._kernel(node)
        self.default_plan = self.plan(tuple(self.output_names))

    # --- kernels --------------------------------------------------------------------------

    def _kernel(self, node: Node) -> KernelRun:
        run = self._kernels.get(id(node))
        if run is not None:
            return run
        placement = self.partition.of(node)
        implicit = sorted(
            {name for sub in node.subgraphs() for name in sub.free_variables()}
        )
        ctx = KernelContext(
            node=node,
            opset=placement.opset,
            xp=placement.provider.xp,
            provider=placement.provider.name,
            input_types=[self._types.get(i) if i else None for i in node.inputs],
            output_types=[self._types.get(o) if o else None for o in node.outputs],
            implicit_inputs=implicit,
            model=self.model,
            allocator=placement.provider.allocator,
            constant_inputs=[self.graph.initializers.get(i) if i else None for i in node.inputs],
            compile_subgraph_fn=weak_method(self, "_compile_subgraph"),
        )
        try:
            run = placement.provider.create_kernel(placement.factory, ctx)
        except RonnError:
            raise
        except Exception as exc:
            raise InvalidGraphError(
                f"{node.label()}: cannot build its {placement.provider.name} kernel: {exc}"
            ) from exc
        self._kernels[id(node)] = run
        return run

    def _compile_subgraph(self, sub: Graph) -> CompiledGraph:
        """A subgraph of one of this graph's nodes, which may read any name visible here."""
        if self._scope is None:
            self._scope = sorted(self.graph.defined_names() | set(self.outer_scope))
        return CompiledGraph(
            sub, self.model, self.partition, outer_scope=self._scope, kernel_cache=self._kernels
        )

    # --- plans ----------------------------------------------------------------------------

    def plan(self, fetches: tuple[str, ...]) -> _Plan:
        """The plan that computes ``fetches`` (cached; only needed nodes run)."""
        plan = self._plans.get(fetches)
        if plan is None:
            with self._plans_lock:
                plan = self._plans.get(fetches)
                if plan is None:
                    if len(self._plans) >= 64:  # stay bounded under many fetch sets
                        self._plans.pop(next(iter(self._plans)))
                    plan = _Plan.build(self, fetches)
                    self._plans[fetches] = plan
        return plan

    def __call__(self, inputs: Sequence[Any], outer: dict[str, Any]) -> list[Any]:
        """Run as a subgraph: positional inputs, outer-scope values by name."""
        feeds = dict(outer)
        feeds.update(zip(self.input_names, inputs))  # a subgraph's own inputs shadow outer names
        return self.default_plan.run(feeds)


def _copy_between(source: ExecutionProvider | None, target: ExecutionProvider | None) -> KernelRun:
    """A step that moves a value from one device to another through host memory."""

    def copy(value: Any) -> tuple[Any]:
        host = source.to_host(value) if source is not None else value
        return (target.from_host(host) if target is not None else host,)

    return copy


@dataclass
class _Step:
    run: KernelRun
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    frees: tuple[int, ...]
    node: Node
    provider: str = ""


class _Plan:
    """A flat list of steps computing one set of fetches."""

    def __init__(self, steps: list[_Step], slots: dict[str, int], template: list[Any], fetch_slots: list[int]):
        self.steps = steps
        self.slots = slots
        self.template = template
        self.fetch_slots = fetch_slots
        self._flat = [(s.run, s.inputs, s.outputs, s.frees) for s in steps]

    @classmethod
    def build(cls, compiled: CompiledGraph, fetches: tuple[str, ...]) -> _Plan:
        graph = compiled.graph
        producers = {o: n for n in compiled.order for o in n.outputs if o}
        # keep only the nodes the fetches need
        needed_nodes: set[int] = set()
        stack = [f for f in fetches]
        seen: set[str] = set()
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            node = producers.get(name)
            if node is None or id(node) in needed_nodes:
                continue
            needed_nodes.add(id(node))
            stack.extend(i for i in node.inputs if i)
            for sub in node.subgraphs():
                stack.extend(sub.free_variables())
        order = [n for n in compiled.order if id(n) in needed_nodes]

        slots: dict[str, int] = {"": 0}
        template: list[Any] = [None]

        def slot(name: str) -> int:
            index = slots.get(name)
            if index is None:
                index = slots[name] = len(template)
                template.append(None)
            return index

        for name in compiled.input_names:
            slot(name)
        for name in compiled.outer_scope:
            slot(name)
        for name, value in graph.initializers.items():
            template[slot(name)] = value

        raw_steps: list[tuple[KernelRun, tuple[int, ...], tuple[int, ...], Node, str]] = []
        # where each value lives: the provider that produced it (None: host memory)
        location: dict[str, ExecutionProvider | None] = {}
        copies: dict[tuple[str, str], str] = {}

        def on_device(name: str, consumer: ExecutionProvider | None, node: Node) -> int:
            source = location.get(name)
            source_device = source.device if source is not None else "cpu"
            target_device = consumer.device if consumer is not None else "cpu"
            if source_device == target_device:
                return slot(name)
            copied = copies.get((name, target_device))
            if copied is None:
                copied = copies[(name, target_device)] = f"{name}@{target_device}"
                raw_steps.append(
                    (_copy_between(source, consumer), (slot(name),), (slot(copied),), node, "copy")
                )
            return slot(copied)

        for node in order:
            run = compiled._kernel(node)
            provider = compiled.partition.of(node).provider
            implicit = sorted({v for sub in node.subgraphs() for v in sub.free_variables()})
            ins = tuple(on_device(i, provider, node) if i else 0 for i in node.inputs)
            ins += tuple(on_device(v, provider, node) for v in implicit)
            outs = tuple(slot(o) if o else 0 for o in node.outputs)
            raw_steps.append((run, ins, outs, node, provider.name))
            for o in node.outputs:
                location[o] = provider if provider.device != "cpu" else None
        # fetched values come back in host memory
        host_fetches = []
        for name in fetches:
            if location.get(name) is not None:
                on_device(name, None, raw_steps[-1][3])
                name = copies[(name, "cpu")]
            host_fetches.append(name)
        fetches = tuple(host_fetches)

        keep = {slots[f] for f in fetches if f in slots} | {0}
        keep |= {slots[name] for name in graph.initializers}
        last_use: dict[int, int] = {}
        for index, (_, ins, _, _, _) in enumerate(raw_steps):
            for s in ins:
                last_use[s] = index
        frees: dict[int, list[int]] = {}
        for s, index in last_use.items():
            if s not in keep:
                frees.setdefault(index, []).append(s)
        steps = [
            _Step(run, ins, outs, tuple(frees.get(i, ())), node, provider)
            for i, (run, ins, outs, node, provider) in enumerate(raw_steps)
        ]
        missing = [f for f in fetches if f not in slots]
        if missing:
            raise InvalidGraphError(f"graph {graph.name!r} has no value named {missing}")
        return cls(steps, slots, template, [slots[f] for f in fetches])

    def run(
        self,
        feeds: dict[str, Any],
        *,
        cancel: threading.Event | None = None,
        profiler: Profiler | None = None,
    ) -> list[Any]:
        """Execute the plan; ``feeds`` maps input and outer-scope names to values."""
        values = list(self.template)
        slots = self.slots
        for name, value in feeds.items():
            index = slots.get(name)
            if index is not None:
                values[index] = value
        if profiler is not None or cancel is not None:
            self._run_checked(values, cancel, profiler)
        else:
            step_index = 0
            try:
                for step_index, (run, ins, outs, frees) in enumerate(self._flat):
                    results = run(*[values[i] for i in ins])
                    for s, v in zip(outs, results):
                        values[s] = v
                    for s in frees:
                        values[s] = None
            except Exception as exc:
                error = self._failure(step_index, values, exc)
                if error is exc:
                    raise
                raise error from exc
        return [values[i] for i in self.fetch_slots]

    def _run_checked(
        self, values: list[Any], cancel: threading.Event | None, profiler: Profiler | None
    ) -> None:
        clock = time.perf_counter_ns
        for step_index, (run, ins, outs, frees) in enumerate(self._flat):
            if cancel is not None and cancel.is_set():
                raise RunCancelledError(
                    f"run terminated through RunOptions.terminate before {self.steps[step_index].node.label()}"
                )
            start = clock() if profiler is not None else 0
            try:
                results = run(*[values[i] for i in ins])
            except Exception as exc:
                error = self._failure(step_index, values, exc)
                if error is exc:
                    raise
                raise error from exc
            for s, v in zip(outs, results):
                values[s] = v
            if profiler is not None:
                step = self.steps[step_index]
                node = step.node
                profiler.record(
                    f"{node.name or node.outputs[0]}_kernel_time",
                    "Node",
                    start,
                    clock(),
                    {"op_name": node.op_type, "provider": step.provider},
                )
            for s in frees:
                values[s] = None

    def _failure(self, step_index: int, values: list[Any], exc: Exception) -> Exception:
        if isinstance(exc, (RonnError, KeyboardInterrupt)):
            return exc
        step = self.steps[step_index]
        node = step.node
        described = ", ".join(
            f"{name or '<omitted>'}: {describe_value(values[s])}"
            for name, s in zip(node.inputs, step.inputs)
        )
        return KernelError(
            f"{node.label()} failed: {type(exc).__name__}: {exc} (inputs: {described or 'none'})"
        )


def weak_method(owner: object, name: str) -> Callable[..., Any]:
    """``owner.name`` as a function that does not keep ``owner`` alive, for callables that
    ``owner`` itself stores (directly or through the kernels it builds): a session and its
    compiled graphs are freed when their last reference goes, not at the next garbage
    collection, and their weights with them."""
    ref = weakref.ref(owner)
    kind = type(owner).__name__

    def call(*args: Any, **kwargs: Any) -> Any:
        target = ref()
        if target is None:
            raise ReferenceError(f"the {kind} is gone")
        return getattr(target, name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call
