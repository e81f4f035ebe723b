"""Elementwise kernels: unary math, activations, binary arithmetic, comparison, logic."""

from __future__ import annotations

from ronn.kernel import KernelContext, KernelRun, KernelTable

KERNELS = KernelTable()


@KERNELS.register("Relu", since=(1, 6, 13, 14))
def relu(ctx: KernelContext) -> KernelRun:
    xp = ctx.xp

    def run(x):
        return (xp.maximum(x, x.dtype.type(0)),)

    return run


@KERNELS.register("Add", since=(1, 6, 7, 13, 14))
def add(ctx: KernelContext) -> KernelRun:
    xp = ctx.xp

    def run(a, b):
        return (xp.add(a, b),)

    return run
