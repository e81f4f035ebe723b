"""Neural-network kernels: convolutions, pooling, normalizations, matmuls, softmax, dropout
and attention.

The operators live in private modules by kind; importing them fills :data:`KERNELS`.
"""

from __future__ import annotations

from . import _attention, _conv, _linalg, _norm, _pool, _softmax  # noqa: F401  (they register kernels)
from ._nn_common import KERNELS

__all__ = ["KERNELS"]
