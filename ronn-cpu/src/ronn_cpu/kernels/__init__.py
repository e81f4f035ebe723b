"""The CPU provider's kernels, one module per operator family.

Every module defines ``KERNELS = KernelTable()``. Kernels take the array namespace from
``ctx.xp`` so other providers (CuPy) can reuse them.
"""

from __future__ import annotations

from importlib import import_module

from ronn.registry import KernelRegistry

FAMILIES = (
    "elementwise",
    "nn",
    "tensor",
    "reduce",
    "sequence",
    "control",
    "strings",
    "training",
    "losses",
    "signal",
    "rnn",
    "vision",
    "random",
    "text",
    "ml",
    "fused",
    "fused_attention",
)


def register_all(registry: KernelRegistry, provider: str) -> None:
    """Add every family's kernels to ``registry`` under ``provider``."""
    for family in FAMILIES:
        import_module(f"{__name__}.{family}").KERNELS.add_to(registry, provider)
