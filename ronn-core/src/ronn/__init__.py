"""ronn: a Python runtime for ONNX models, extensible by plugins.

``ronn.InferenceSession`` is a drop-in for ``onnxruntime.InferenceSession``. Importing ronn
loads no plugin: plugins load on first use (see :mod:`ronn.plugins`).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "InferenceSession": "ronn.session",
    "NodeArg": "ronn.session",
    "ModelMetadata": "ronn.session",
    "get_available_providers": "ronn.session",
    "get_all_providers": "ronn.session",
    "get_device": "ronn.session",
    "load_model": "ronn.session",
    "SessionOptions": "ronn.options",
    "RunOptions": "ronn.options",
    "GraphOptimizationLevel": "ronn.options",
    "ExecutionMode": "ronn.options",
    "ExecutionOrder": "ronn.options",
    "PluginHost": "ronn.plugins",
    "get_plugin_host": "ronn.plugins",
    "hookimpl": "ronn.hookspecs",
    "ExecutionProvider": "ronn.provider",
    "KernelContext": "ronn.kernel",
    "DataType": "ronn.dtypes",
    "RonnError": "ronn.errors",
}

#: submodules reachable as attributes without an import of their own (``ronn.hub.download``)
_SUBMODULES = ("hub",)

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return import_module(f"ronn.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ronn' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__ + list(_SUBMODULES)


if TYPE_CHECKING:
    from .dtypes import DataType
    from .errors import RonnError
    from .hookspecs import hookimpl
    from .kernel import KernelContext
    from .options import (
        ExecutionMode,
        ExecutionOrder,
        GraphOptimizationLevel,
        RunOptions,
        SessionOptions,
    )
    from .plugins import PluginHost, get_plugin_host
    from .provider import ExecutionProvider
    from .session import (
        InferenceSession,
        ModelMetadata,
        NodeArg,
        get_all_providers,
        get_available_providers,
        get_device,
        load_model,
    )
