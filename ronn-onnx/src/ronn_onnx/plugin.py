"""ronn-onnx's plugin: registers the ONNX model loader and the loader of ``hf://`` references.

Cheap to import: onnx and huggingface_hub load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ronn.hookspecs import hookimpl

if TYPE_CHECKING:
    from ronn.ir import Model
    from ronn.registry import LoaderRegistry, OptimizerContext, OptimizerRegistry


class LazyOnnxLoader:
    """Defers importing onnx and protobuf until a model is actually loaded."""

    def _impl(self) -> Any:
        from .loader import OnnxLoader

        return OnnxLoader()

    def can_load(self, source: Any) -> bool:
        """Paths that are not URLs, raw bytes and ModelProto objects."""
        import os

        if isinstance(source, (bytes, bytearray, memoryview)):
            return True
        if type(source).__name__ == "ModelProto":
            return True
        if isinstance(source, (str, os.PathLike)):
            return "://" not in os.fspath(source)
        return False

    def load(self, source: Any, options: dict[str, Any]) -> Model:
        """Load an ONNX model into the IR."""
        return self._impl().load(source, options)

    def save(self, model: Model, path: str) -> None:
        """Save the IR as an ONNX file."""
        self._impl().save(model, path)


class LazyHubLoader:
    """``hf://owner/repo[@revision]/path/model.onnx``: downloads through huggingface_hub, then
    loads the local file as ONNX (see :mod:`ronn_onnx.hub`)."""

    def can_load(self, source: Any) -> bool:
        """Strings starting with ``hf://``."""
        return isinstance(source, str) and source.startswith("hf://")

    def load(self, source: Any, options: dict[str, str]) -> Model:
        """Download the model (and its external data) into the Hub cache and load it."""
        from .hub import HubLoader

        return HubLoader().load(source, options)


@hookimpl
def ronn_register_model_loaders(registry: LoaderRegistry) -> None:
    registry.add("onnx", LazyOnnxLoader())
    registry.add("hf", LazyHubLoader())


def expand_function_operators(model: Model, context: OptimizerContext) -> bool:
    """Run operators without a kernel as their onnx function body (see function_ops)."""
    from .function_ops import expand_function_operators as expand

    return expand(model, context)


@hookimpl
def ronn_register_optimizers(registry: OptimizerRegistry) -> None:
    from ronn.options import GraphOptimizationLevel

    # a legalisation, not an optimisation: it runs at every level, first
    registry.add(
        "expand_function_operators",
        expand_function_operators,
        level=GraphOptimizationLevel.ORT_DISABLE_ALL,
        order=-100,
    )
