"""``ronn.InferenceSession``: a drop-in for ``onnxruntime.InferenceSession``."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .dtypes import DataType, from_numpy
from .engine import CompiledGraph, Profiler, partition, report_fallbacks, weak_method
from .errors import (
    InputShapeError,
    InputTypeError,
    InvalidInputNameError,
    MissingInputError,
    NoLoaderError,
    OptionError,
    ProviderError,
    RonnError,
)
from .functions import inline_functions
from .ir import Graph, MapType, Model, OptionalType, SequenceType, TensorType, ValueInfo, ValueType
from .options import (
    DISABLE_CPU_FALLBACK,
    DISABLED_OPTIMIZERS,
    GraphOptimizationLevel,
    RunOptions,
    SessionOptions,
)
from .plugins import PluginHost, get_plugin_host
from .provider import ExecutionProvider
from .registry import OptimizerContext
from .session_info import RunFunction, SessionInfo

logger = logging.getLogger("ronn.session")
CPU_PROVIDER = "CPUExecutionProvider"


@dataclass(frozen=True)
class NodeArg:
    """A model input or output as onnxruntime describes it."""

    name: str
    type: str
    shape: list[int | str | None]

    def __repr__(self) -> str:
        return f"NodeArg(name={self.name!r}, type={self.type!r}, shape={self.shape!r})"


@dataclass(frozen=True)
class ModelMetadata:
    """The model's metadata as onnxruntime reports it."""

    producer_name: str
    graph_name: str
    domain: str
    description: str
    graph_description: str
    version: int
    custom_metadata_map: dict[str, str] = field(default_factory=dict)


def _type_string(value_type: ValueType | None) -> str:
    return str(value_type) if value_type is not None else "unknown"


def _shape_of(value_type: ValueType | None) -> list[int | str | None]:
    if isinstance(value_type, TensorType) and value_type.shape is not None:
        return list(value_type.shape)
    return []


def _node_arg(info: ValueInfo) -> NodeArg:
    return NodeArg(info.name, _type_string(info.type), _shape_of(info.type))


def load_model(source: Any, host: PluginHost, options: dict[str, Any] | None = None) -> Model:
    """Load a model from any source a registered loader accepts."""
    if isinstance(source, Model):
        return copy_model(source)  # sessions rewrite their model: never the caller's
    loader = host.loaders().find(source)
    if loader is None:
        shown = f"<{len(source)} bytes>" if isinstance(source, (bytes, bytearray)) else repr(source)
        raise NoLoaderError(
            f"no model loader accepts {shown}; installed loaders: {host.loaders().names() or 'none'}"
            " (is ronn-onnx installed?)"
        )
    return loader.load(source, dict(options or {}))


def copy_model(model: Model) -> Model:
    """A copy of ``model`` to rewrite, sharing its immutable arrays (weights are never written
    into: passes replace them), so copying a model costs no second copy of its weights."""
    return copy.deepcopy(model, _immutable_arrays(model))


def _immutable_arrays(model: Model) -> dict[int, Any]:
    """``{id(array): array}`` for the model's read-only arrays that nothing can write into: a
    deepcopy memo that makes them shared."""
    shared: dict[int, Any] = {}

    def value(item: Any) -> None:
        if isinstance(item, np.ndarray):
            if _immutable(item):
                shared[id(item)] = item
        elif isinstance(item, Graph):
            graph(item)
        elif isinstance(item, list):
            for element in item:
                value(element)

    def graph(g: Graph) -> None:
        for array in g.initializers.values():
            value(array)
        for node in g.nodes:
            value(list(node.attributes.values()))

    graph(model.graph)
    for function in model.functions.values():
        value(list(function.attribute_defaults.values()))
        for node in function.nodes:
            value(list(node.attributes.values()))
    return shared


def _immutable(array: np.ndarray) -> bool:
    """Whether neither ``array`` nor any array or buffer it views is writable."""
    base: Any = array
    while isinstance(base, np.ndarray):
        if base.flags.writeable:
            return False
        base = base.base
    if base is None:
        return True
    try:
        return memoryview(base).readonly
    except TypeError:
        return False


#: the provider option through which a session passes ``SessionOptions.intra_op_num_threads``
INTRA_OP_NUM_THREADS = "intra_op_num_threads"


class InferenceSession:
    """Loads a model and runs it; same constructor and methods as onnxruntime's session.

    Beyond onnxruntime: ``run`` can fetch intermediate values by name (all of them with
    ``ORT_DISABLE_ALL``; the optimizer fuses some away otherwise); ``plugin_host``
    selects the plugins (tests pass a fresh :class:`ronn.PluginHost`); ``weights`` names
    safetensors files whose tensors fill the model's initializers (or weight inputs).
    """

    def __init__(
        self,
        path_or_bytes: str | bytes | os.PathLike[str] | Model,
        sess_options: SessionOptions | None = None,
        providers: Sequence[str | tuple[str, dict[str, Any]]] | None = None,
        provider_options: Sequence[dict[str, Any]] | None = None,
        *,
        plugin_host: PluginHost | None = None,
        weights: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
        **kwargs: Any,
    ) -> None:
        started = time.perf_counter()
        self._host = plugin_host or get_plugin_host()
        self._sess_options = sess_options or SessionOptions()
        self._profiler: Profiler | None = Profiler() if self._sess_options.enable_profiling else None
        source = os.fspath(path_or_bytes) if isinstance(path_or_bytes, os.PathLike) else path_or_bytes
        load_options: dict[str, Any] = {}
        if weights is not None:
            paths = [weights] if isinstance(weights, (str, os.PathLike)) else list(weights)
            load_options["weights"] = [os.fspath(p) for p in paths]
        loading_ns = time.perf_counter_ns()
        self._model = load_model(source, self._host, load_options)
        if self._profiler is not None:
            self._profiler.record("model_loading", "Session", loading_ns, time.perf_counter_ns(), {})
        self._source, self._load_options = source, load_options
        self._stored_values = self._model.graph.defined_names()
        self._unoptimized: InferenceSession | None = None
        self._unoptimized_lock = threading.Lock()
        self._model_path = source if isinstance(source, str) else None
        self._apply_initializer_overrides()
        self._provider_names, self._provider_options = self._resolve_provider_names(
            providers, provider_options
        )
        context = self._optimizer_context()
        # a call of a model-local function stays a call when a provider implements the operator
        inline_functions(self._model, context.has_kernel)
        self._optimize(context)
        self._build()
        self._build_seconds = time.perf_counter() - started
        if self._profiler is not None:
            end_ns = time.perf_counter_ns()
            self._profiler.record(
                "session_initialization", "Session", end_ns - int(self._build_seconds * 1e9), end_ns, {}
            )
        if self._sess_options.optimized_model_filepath:
            self._save_optimized(self._sess_options.optimized_model_filepath)

    # --- building -------------------------------------------------------------------------

    def _apply_initializer_overrides(self) -> None:
        graph = self._model.graph
        for name, value in self._sess_options._initializers.items():
            if name not in graph.initializers:
                raise OptionError(f"add_initializer: the model has no initializer {name!r}")
            graph.initializers[name] = _readonly(np.asarray(value))
        overrides = self._sess_options._free_dimensions
        if overrides:
            for info in graph.inputs:
                if isinstance(info.type, TensorType) and info.type.shape is not None:
                    shape = tuple(overrides.get(d, d) if isinstance(d, str) else d for d in info.type.shape)
                    info.type = TensorType(info.type.dtype, shape)

    def _optimizer_context(self) -> OptimizerContext:
        """What passes (and function inlining) may consult: level, kernels, providers, config."""
        names = list(self._provider_names)
        if CPU_PROVIDER not in names and self._sess_options.config(DISABLE_CPU_FALLBACK) != "1":
            names.append(CPU_PROVIDER)
        return OptimizerContext(
            level=self._sess_options.graph_optimization_level,
            kernels=self._host.kernels(),
            providers=tuple(names),
            config=dict(self._sess_options._config),
        )

    def _optimize(self, context: OptimizerContext) -> None:
        disabled = {
            name.strip()
            for name in self._sess_options.config(DISABLED_OPTIMIZERS).split(",")
            if name.strip()
        }
        for opt_pass in self._host.optimizers().passes(context.level, disabled):
            opt_pass.run(self._model, context)

    def _resolve_provider_names(
        self,
        providers: Sequence[str | tuple[str, dict[str, Any]]] | None,
        provider_options: Sequence[dict[str, Any]] | None,
    ) -> tuple[list[str], list[dict[str, str]]]:
        names: list[str] = []
        options: list[dict[str, str]] = []
        for entry in providers or [CPU_PROVIDER]:
            if isinstance(entry, tuple):
                if len(entry) != 2 or not isinstance(entry[1], dict):
                    raise ProviderError(f"a provider tuple must be (name, options dict), got {entry!r}")
                names.append(str(entry[0]))
                options.append({str(k): str(v) for k, v in entry[1].items()})
            elif isinstance(entry, str):
                names.append(entry)
                options.append({})
            else:
                raise ProviderError(f"providers must be names or (name, options) tuples, got {entry!r}")
        if provider_options is not None:
            if len(provider_options) != len(names):
                raise ProviderError(
                    f"provider_options has {len(provider_options)} entries for {len(names)} providers"
                )
            for index, extra in enumerate(provider_options):
                options[index].update({str(k): str(v) for k, v in extra.items()})
        if len(set(names)) != len(names):
            raise ProviderError(f"a provider is listed twice: {names}")
        return names, options

    def _with_threads(self, options: dict[str, Any]) -> dict[str, Any]:
        """A provider's options plus the session's ``intra_op_num_threads`` (when set, and the
        provider options don't set it themselves), as onnxruntime applies it to its CPU provider."""
        threads = int(self._sess_options.intra_op_num_threads or 0)
        if threads <= 0 or INTRA_OP_NUM_THREADS in options:
            return options
        return {**options, INTRA_OP_NUM_THREADS: str(threads)}

    def _build(self) -> None:
        registry = self._host.providers()
        instances: list[ExecutionProvider] = []
        for name, options in zip(self._provider_names, self._provider_options):
            spec = registry.get(name)
            if spec is None:
                raise ProviderError(
                    f"unknown execution provider {name!r}; available: {get_available_providers(self._host)}"
                )
            if not spec.is_available():
                raise ProviderError(
                    f"execution provider {name!r} is installed but cannot run on this machine"
                )
            instances.append(self._with_allocator(spec.factory(self._with_threads(options)), options))
        requested = len(instances)
        strict = self._sess_options.config(DISABLE_CPU_FALLBACK) == "1"
        if not strict and CPU_PROVIDER not in self._provider_names:
            cpu = registry.get(CPU_PROVIDER)
            if cpu is not None:
                instances.append(self._with_allocator(cpu.factory(self._with_threads({})), {}))
        self._providers = instances
        part = partition(self._model, instances, self._host, preferred=requested)
        report_fallbacks(
            part, self._provider_names, strict=strict, severity=self._sess_options.log_severity_level
        )
        self._partition = part
        self._graph = CompiledGraph(self._model.graph, self._model, part)
        graph = self._model.graph
        initializer_names = set(graph.initializers)
        self._inputs = [v for v in graph.inputs if v.name not in initializer_names]
        self._overridable = [v for v in graph.inputs if v.name in initializer_names]
        self._outputs = list(graph.outputs)
        self._input_specs = {v.name: v.type for v in graph.inputs}
        self._output_names = [v.name for v in self._outputs]
        self._known_values = graph.defined_names()
        info = SessionInfo(
            model_source=self._model.source,
            providers=tuple(p.name for p in instances),
            input_names=tuple(v.name for v in self._inputs),
            output_names=tuple(self._output_names),
            node_count=sum(1 for _ in graph.walk()),
        )
        self._run_fn: RunFunction = self._host.wrap_run(weak_method(self, "_run_plan"), info)

    def _with_allocator(self, provider: ExecutionProvider, options: dict[str, str]) -> ExecutionProvider:
        """Give the provider the allocator its options name (or its device's default), if any."""
        name = options.get("allocator", "default")
        allocator = self._host.allocators().create(provider.device, name)
        if allocator is not None:
            provider.allocator = allocator
        elif "allocator" in options:
            raise ProviderError(f"no allocator {name!r} is registered for device {provider.device!r}")
        return provider

    def _save_optimized(self, path: str) -> None:
        saver = None
        for name in self._host.loaders().names():
            loader = self._host.loaders().get(name)
            if hasattr(loader, "save"):
                saver = loader
                break
        if saver is None:
            raise OptionError("optimized_model_filepath is set but no loader can save models")
        model = self._model
        # calls of function overloads (the fused operators' bodies) need ONNX IR 10
        overloaded = any(fn.overload for fn in model.functions.values()) or any(
            node.overload for _, node in model.graph.walk()
        )
        if overloaded and model.ir_version < 10:
            model = dataclasses.replace(model, ir_version=10)
        saver.save(model, path)  # type: ignore[union-attr]

    # --- running --------------------------------------------------------------------------

    def run(
        self,
        output_names: Sequence[str] | None,
        input_feed: dict[str, Any],
        run_options: RunOptions | None = None,
    ) -> list[Any]:
        """Compute ``output_names`` (None: every model output) from ``input_feed``.

        Any intermediate value of the main graph can be fetched by name as well; one that the
        graph optimizer fused away is computed by a twin session that runs the model as stored
        (built on first need).
        """
        fetches = list(output_names) if output_names else list(self._output_names)
        feeds = self._check_feeds(input_feed)
        for name in fetches:
            if name not in self._known_values:
                if name in self._stored_values:
                    # the optimizer fused this value away: run the model as stored
                    return self._as_stored().run(fetches, input_feed, run_options)
                raise InvalidInputNameError(
                    f"cannot fetch {name!r}: the model has no value of that name "
                    f"(outputs: {self._output_names})"
                )
        result = self._run_fn(feeds, fetches, run_options)
        return [result[name] for name in fetches]

    def _as_stored(self) -> InferenceSession:
        """A twin session without graph optimizations, built on first need, for fetching
        values the optimizer removed."""
        with self._unoptimized_lock:
            if self._unoptimized is None:
                options = copy.copy(self._sess_options)
                options.graph_optimization_level = GraphOptimizationLevel.ORT_DISABLE_ALL
                options.optimized_model_filepath = ""
                options.enable_profiling = False
                self._unoptimized = InferenceSession(
                    self._source,
                    options,
                    providers=list(zip(self._provider_names, self._provider_options)),
                    plugin_host=self._host,
                    weights=self._load_options.get("weights"),
                )
            return self._unoptimized

    def _run_plan(
        self, feeds: dict[str, Any], fetches: Sequence[str] | None, run_options: RunOptions | None
    ) -> dict[str, Any]:
        names = tuple(fetches) if fetches else tuple(self._output_names)
        plan = self._graph.plan(names)
        cancel = run_options._terminate if run_options is not None else None
        if cancel is not None and cancel.is_set():
            from .errors import RunCancelledError

            raise RunCancelledError("run terminated through RunOptions.terminate before it started")
        values = plan.run(feeds, cancel=cancel, profiler=self._profiler)
        return {name: _owned(value) for name, value in zip(names, values)}

    def run_async(
        self,
        output_names: Sequence[str] | None,
        input_feed: dict[str, Any],
        callback: Callable[[list[Any] | None, Any, str], None],
        user_data: Any = None,
        run_options: RunOptions | None = None,
    ) -> None:
        """Run on a worker thread; ``callback(results, user_data, error_message)`` gets the result."""

        def work() -> None:
            try:
                results = self.run(output_names, input_feed, run_options)
            except Exception as exc:  # reported through the callback, as onnxruntime does
                callback(None, user_data, f"{type(exc).__name__}: {exc}")
                return
            callback(results, user_data, "")

        threading.Thread(target=work, name="ronn-run-async", daemon=True).start()

    def _check_feeds(self, input_feed: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(input_feed, dict):
            raise InputTypeError(f"input_feed must be a dict of name -> array, got {type(input_feed).__name__}")
        feeds: dict[str, Any] = {}
        for name, value in input_feed.items():
            if name not in self._input_specs:
                raise InvalidInputNameError(
                    f"{name!r} is not an input of the model; inputs: {[v.name for v in self._inputs]}"
                )
            feeds[name] = _check_value(name, value, self._input_specs[name])
        missing = [v.name for v in self._inputs if v.name not in feeds]
        if missing:
            raise MissingInputError(
                f"missing input(s) {missing}; the model needs "
                + ", ".join(f"{v.name}: {_type_string(v.type)}{_shape_of(v.type)}" for v in self._inputs)
            )
        return feeds

    # --- introspection (onnxruntime's methods) --------------------------------------------

    def get_inputs(self) -> list[NodeArg]:
        """The model's inputs (initializers excluded)."""
        return [_node_arg(v) for v in self._inputs]

    def get_outputs(self) -> list[NodeArg]:
        """The model's outputs."""
        return [_node_arg(v) for v in self._outputs]

    def get_overridable_initializers(self) -> list[NodeArg]:
        """Initializers that are also graph inputs, and so may be fed."""
        return [_node_arg(v) for v in self._overridable]

    def get_modelmeta(self) -> ModelMetadata:
        """The model's metadata."""
        m = self._model
        return ModelMetadata(
            producer_name=m.producer_name,
            graph_name=m.graph.name,
            domain=m.domain,
            description=m.doc_string,
            graph_description=m.graph.doc_string,
            version=m.model_version if m.model_version is not None else 2**63 - 1,
            custom_metadata_map=dict(m.metadata),
        )

    def get_providers(self) -> list[str]:
        """The providers the session uses, in order of preference."""
        return [p.name for p in self._providers]

    def get_provider_options(self) -> dict[str, dict[str, str]]:
        """The options each provider was created with."""
        return {p.name: dict(p.options) for p in self._providers}

    def get_session_options(self) -> SessionOptions:
        """The options the session was built with."""
        return self._sess_options

    def set_providers(
        self,
        providers: Sequence[str | tuple[str, dict[str, Any]]] | None = None,
        provider_options: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        """Rebuild the session on other providers."""
        self._provider_names, self._provider_options = self._resolve_provider_names(
            providers, provider_options
        )
        self._build()

    def disable_fallback(self) -> None:
        """Accepted for compatibility: ronn never silently retries on another provider."""

    def enable_fallback(self) -> None:
        """Accepted for compatibility: ronn never silently retries on another provider."""

    def end_profiling(self) -> str:
        """Write the Chrome-trace profile and return its file name ("" when not profiling)."""
        if self._profiler is None:
            return ""
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
        path = f"{self._sess_options.profile_file_prefix}{stamp}.json"
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(self._profiler.events, handle)
        self._profiler = Profiler()
        return path

    def get_profiling_start_time_ns(self) -> int:
        """When profiling started, on the ``time.perf_counter_ns`` clock."""
        return self._profiler.start_ns if self._profiler else 0

    def node_providers(self) -> list[tuple[str, str, str]]:
        """(node label, op type, provider name) for every node of the main graph."""
        return [
            (node.name, node.op_type, self._partition.of(node).provider.name)
            for node in self._model.graph.nodes
        ]

    @property
    def model(self) -> Model:
        """The model's IR after optimization."""
        return self._model


def _readonly(array: np.ndarray) -> np.ndarray:
    if array.flags.writeable:
        array = array.view()
        array.flags.writeable = False
    return array


def _owned(value: Any) -> Any:
    """A result the caller may keep and modify: read-only views become copies."""
    if isinstance(value, np.ndarray):
        return value if value.flags.writeable else value.copy()
    if isinstance(value, list):
        return [_owned(v) for v in value]
    if isinstance(value, np.generic):
        return np.asarray(value)
    return value


def _check_value(name: str, value: Any, spec: ValueType | None) -> Any:
    """Check a feed against the model's declared type; return a read-only view of it."""
    if isinstance(spec, (SequenceType,)):
        if not isinstance(value, (list, tuple)):
            raise InputTypeError(f"input {name!r} expects {spec}, got {type(value).__name__}")
        return [_check_value(name, v, spec.elem) for v in value]
    if isinstance(spec, OptionalType):
        return None if value is None else _check_value(name, value, spec.elem)
    if isinstance(spec, MapType):
        if not isinstance(value, dict):
            raise InputTypeError(f"input {name!r} expects {spec}, got {type(value).__name__}")
        return value
    if not isinstance(value, np.ndarray):
        if value is None:
            raise InputTypeError(f"input {name!r} is None; it expects {_type_string(spec)}")
        value = np.asarray(value)
    if not isinstance(spec, TensorType):
        return _readonly(value)
    try:
        actual = from_numpy(value.dtype)
    except TypeError:
        raise InputTypeError(
            f"input {name!r} has dtype {value.dtype}, which ONNX cannot hold; expected {spec}"
        ) from None
    if actual != spec.dtype:
        raise InputTypeError(
            f"input {name!r} expects {spec} but got tensor({actual.type_string}) (numpy {value.dtype})"
        )
    if actual == DataType.STRING and value.dtype != object:
        value = value.astype(object)
    if spec.shape is not None:
        if value.ndim != len(spec.shape):
            raise InputShapeError(
                f"input {name!r} expects rank {len(spec.shape)} {list(spec.shape)}, "
                f"got rank {value.ndim} {list(value.shape)}"
            )
        for axis, (want, got) in enumerate(zip(spec.shape, value.shape)):
            if isinstance(want, int) and want >= 0 and want != got:
                raise InputShapeError(
                    f"input {name!r} expects shape {list(spec.shape)}, got {list(value.shape)} "
                    f"(dimension {axis} must be {want}, is {got})"
                )
    return _readonly(value)


def get_available_providers(host: PluginHost | None = None) -> list[str]:
    """Providers installed and able to run on this machine, best first (CPU last)."""
    registry = (host or get_plugin_host()).providers()
    names = [spec.name for spec in registry.specs() if spec.is_available()]
    return sorted(names, key=lambda n: (n == CPU_PROVIDER, n))


def get_all_providers(host: PluginHost | None = None) -> list[str]:
    """Every installed provider, available here or not."""
    return (host or get_plugin_host()).providers().names()


def get_device(host: PluginHost | None = None) -> str:
    """``GPU`` when a GPU provider is available here, else ``CPU`` (onnxruntime's convention)."""
    registry = (host or get_plugin_host()).providers()
    devices = {spec.device for spec in registry.specs() if spec.is_available()}
    return "GPU" if devices & {"cuda", "gpu"} else "CPU"


__all__ = [
    "InferenceSession",
    "ModelMetadata",
    "NodeArg",
    "RonnError",
    "get_all_providers",
    "get_available_providers",
    "get_device",
    "load_model",
]

