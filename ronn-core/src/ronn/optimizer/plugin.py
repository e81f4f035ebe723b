"""The built-in optimizer plugin: registers the passes by level (onnxruntime's names).

Cheap to import: each pass module loads when its pass first runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ronn.hookspecs import hookimpl

if TYPE_CHECKING:
    from ronn.registry import OptimizerRegistry


@hookimpl
def ronn_register_optimizers(registry: OptimizerRegistry) -> None:
    """No passes yet."""
