"""The built-in optimizer plugin: registers the passes by level (onnxruntime's names).

Cheap to import: each pass module loads when its pass first runs. Every pass can be switched
off by name through the session config entry ``optimization.disabled_optimizers``; see
docs/optimizer.md for what each one does.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from ronn.hookspecs import hookimpl
from ronn.options import GraphOptimizationLevel

if TYPE_CHECKING:
    from ronn.ir import Model
    from ronn.registry import OptimizerContext, OptimizerRegistry

BASIC = GraphOptimizationLevel.ORT_ENABLE_BASIC
EXTENDED = GraphOptimizationLevel.ORT_ENABLE_EXTENDED

#: (name, level, order, module, function): passes of one level run by order
PASSES = (
    # not an optimisation: IR < 4 initializers listed as inputs are constants (every level)
    ("legacy_initializer_inputs", GraphOptimizationLevel.ORT_DISABLE_ALL, -200, "cleanup", "legacy_initializer_inputs"),
    ("identity_elimination", BASIC, 10, "cleanup", "eliminate_identities"),
    ("constant_folding", BASIC, 20, "constant_folding", "fold_constants"),
    ("shape_folding", BASIC, 30, "shapes", "fold_shapes"),
    ("reshape_chain_elimination", BASIC, 40, "chains", "simplify_reshape_chains"),
    ("common_subexpression_elimination", BASIC, 50, "cleanup", "eliminate_common_subexpressions"),
    ("dead_code_elimination", BASIC, 90, "cleanup", "eliminate_dead_code"),
    ("conv_bn_fusion", EXTENDED, 10, "folding", "fuse_conv_batchnorm"),
    ("conv_mul_fusion", EXTENDED, 11, "folding", "fuse_conv_mul"),
    ("conv_add_fusion", EXTENDED, 12, "folding", "fuse_conv_add"),
    ("transpose_fusion", EXTENDED, 20, "chains", "fuse_transposes"),
    ("reshape_fusion", EXTENDED, 21, "shapes", "fuse_reshapes"),
    ("gemm_reshape_fusion", EXTENDED, 22, "shapes", "fuse_gemm_reshapes"),
    ("layer_norm_fusion", EXTENDED, 30, "normalization", "fuse_layer_norm"),
    ("gelu_fusion", EXTENDED, 31, "normalization", "fuse_gelu"),
    ("matmul_add_fusion", EXTENDED, 40, "fusions", "fuse_matmul_add"),
    ("attention_fusion", EXTENDED, 45, "attention", "fuse_attention"),
    ("conv_activation_fusion", EXTENDED, 50, "fusions", "fuse_conv_activation"),
    ("gemm_activation_fusion", EXTENDED, 51, "fusions", "fuse_gemm_activation"),
    ("batchnorm_activation_fusion", EXTENDED, 53, "fusions", "fuse_batchnorm_activation"),
    ("matmul_activation_fusion", EXTENDED, 52, "fusions", "fuse_matmul_activation"),
    ("channels_last_layout", GraphOptimizationLevel.ORT_ENABLE_LAYOUT, 10, "layout", "convert_to_channels_last"),
)


class LazyPass:
    """A pass whose module is imported the first time it runs."""

    def __init__(self, name: str, module: str, function: str) -> None:
        self.__name__ = name
        self._module = module
        self._function = function

    def __call__(self, model: Model, context: OptimizerContext) -> bool:
        if _names_values(model):
            return False
        run = getattr(import_module(f"ronn.optimizer.{self._module}"), self._function)
        return bool(run(model, context))

    def __repr__(self) -> str:
        return f"<pass {self.__name__}: ronn.optimizer.{self._module}.{self._function}>"


def _names_values(model: Model) -> bool:
    """Whether an operator refers to values by name in its attributes (training's Gradient):
    renaming or fusing values would break it, so such models are left as they are."""
    if "ai.onnx.preview.training" not in model.opset_imports:
        return False
    return any(
        node.op_type == "Gradient" and node.domain == "ai.onnx.preview.training"
        for _, node in model.graph.walk()
    )


@hookimpl
def ronn_register_optimizers(registry: OptimizerRegistry) -> None:
    """Register every built-in pass at its level."""
    for name, level, order, module, function in PASSES:
        registry.add(name, LazyPass(name, module, function), level=level, order=order)
