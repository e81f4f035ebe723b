"""Kernels of the fused operators the optimizer creates (domain ``ronn``)."""

from __future__ import annotations

from ronn.kernel import KernelTable

KERNELS = KernelTable(domain="ronn")
