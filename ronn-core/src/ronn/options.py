"""Session and run options, with onnxruntime's names and defaults."""

from __future__ import annotations

import enum
import threading

from .errors import OptionError


class GraphOptimizationLevel(enum.IntEnum):
    """How much the graph optimizer may rewrite (onnxruntime's levels)."""

    ORT_DISABLE_ALL = 0
    ORT_ENABLE_BASIC = 1
    ORT_ENABLE_EXTENDED = 2
    ORT_ENABLE_LAYOUT = 3
    ORT_ENABLE_ALL = 99


class ExecutionMode(enum.IntEnum):
    """Whether independent nodes may run in parallel."""

    ORT_SEQUENTIAL = 0
    ORT_PARALLEL = 1


class ExecutionOrder(enum.IntEnum):
    """Node ordering strategy (accepted for compatibility; ronn orders topologically)."""

    DEFAULT = 0
    PRIORITY_BASED = 1
    MEMORY_EFFICIENT = 2


#: Session config keys that ronn reads (onnxruntime's where one exists).
DISABLE_CPU_FALLBACK = "session.disable_cpu_ep_fallback"
DISABLED_OPTIMIZERS = "optimization.disabled_optimizers"


class SessionOptions:
    """Options for building an :class:`ronn.InferenceSession` (onnxruntime-compatible)."""

    def __init__(self) -> None:
        self.graph_optimization_level = GraphOptimizationLevel.ORT_ENABLE_ALL
        self.intra_op_num_threads = 0
        self.inter_op_num_threads = 0
        self.execution_mode = ExecutionMode.ORT_SEQUENTIAL
        self.execution_order = ExecutionOrder.DEFAULT
        self.log_severity_level = -1  # -1: the process default (warnings), as in onnxruntime
        self.log_verbosity_level = 0
        self.logid = ""
        self.optimized_model_filepath = ""
        self.enable_profiling = False
        self.profile_file_prefix = "onnxruntime_profile_"
        self.enable_mem_pattern = True
        self.enable_mem_reuse = True
        self.enable_cpu_mem_arena = True
        self.use_deterministic_compute = False
        self.use_per_session_threads = True
        self._config: dict[str, str] = {}
        self._free_dimensions: dict[str, int] = {}
        self._initializers: dict[str, object] = {}

    def __setattr__(self, name: str, value: object) -> None:
        if name == "graph_optimization_level":
            value = _enum(GraphOptimizationLevel, value, name)
        elif name == "execution_mode":
            value = _enum(ExecutionMode, value, name)
        elif name in ("intra_op_num_threads", "inter_op_num_threads"):
            if not isinstance(value, int) or value < 0:
                raise OptionError(f"{name} must be an int >= 0, got {value!r}")
        elif name == "log_severity_level" and value not in (-1, 0, 1, 2, 3, 4):
            raise OptionError(f"log_severity_level must be -1..4, got {value!r}")
        object.__setattr__(self, name, value)

    def add_session_config_entry(self, key: str, value: str) -> None:
        """Set a free-form config entry (e.g. ``session.disable_cpu_ep_fallback``)."""
        self._config[str(key)] = str(value)

    def get_session_config_entry(self, key: str) -> str:
        """A config entry; raises :class:`OptionError` when unset, as onnxruntime does."""
        try:
            return self._config[key]
        except KeyError:
            raise OptionError(f"session config entry {key!r} is not set") from None

    def config(self, key: str, default: str = "") -> str:
        """A config entry or ``default``."""
        return self._config.get(key, default)

    def add_free_dimension_override_by_name(self, name: str, value: int) -> None:
        """Fix a symbolic input dimension to a size."""
        self._free_dimensions[str(name)] = int(value)

    def add_initializer(self, name: str, value: object) -> None:
        """Replace an initializer's value for this session."""
        self._initializers[str(name)] = value

    def register_custom_ops_library(self, path: str) -> None:
        """Native custom-op libraries are onnxruntime's; ronn takes custom ops as plugins."""
        raise OptionError(
            f"cannot load native custom-op library {path!r}: ronn takes custom operators as "
            "Python plugins (entry-point group 'ronn', hook ronn_register_kernels)"
        )


class RunOptions:
    """Options for one ``run`` call; ``terminate = True`` from another thread stops it."""

    def __init__(self) -> None:
        self.log_severity_level = -1
        self.log_verbosity_level = 0
        self.logid = ""
        self.only_execute_path_to_fetches = False
        self._terminate = threading.Event()
        self._config: dict[str, str] = {}

    @property
    def terminate(self) -> bool:
        """Set to True to stop runs that use these options as soon as the current node ends."""
        return self._terminate.is_set()

    @terminate.setter
    def terminate(self, value: bool) -> None:
        if value:
            self._terminate.set()
        else:
            self._terminate.clear()

    def add_run_config_entry(self, key: str, value: str) -> None:
        """Set a free-form run config entry."""
        self._config[str(key)] = str(value)

    def get_run_config_entry(self, key: str) -> str:
        """A run config entry; raises :class:`OptionError` when unset."""
        try:
            return self._config[key]
        except KeyError:
            raise OptionError(f"run config entry {key!r} is not set") from None


def _enum(kind: type[enum.IntEnum], value: object, name: str) -> enum.IntEnum:
    try:
        return kind(int(value))  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise OptionError(f"{name} must be one of {[m.name for m in kind]}, got {value!r}") from None
