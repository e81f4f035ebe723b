"""Random kernels: RandomUniform(Like), RandomNormal(Like), Bernoulli, Multinomial.

Values come from ``numpy.random.Generator``. A node with a ``seed`` attribute draws from a
generator seeded afresh on every run, so its values are the same on every run of every
session; a node without one draws from a generator seeded from the OS once per session,
so every run draws fresh values. Values are drawn on the host and moved with ``xp``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import numpy as np

from ronn.dtypes import DataType, to_numpy
from ronn.kernel import KernelContext, KernelRun, KernelTable

KERNELS = KernelTable()

_FLOAT_OUTPUTS = frozenset(
    to_numpy(t) for t in (DataType.FLOAT, DataType.DOUBLE, DataType.FLOAT16, DataType.BFLOAT16)
)
_BERNOULLI_OUTPUTS = _FLOAT_OUTPUTS | frozenset(
    to_numpy(t)
    for t in (
        DataType.BOOL, DataType.INT8, DataType.INT16, DataType.INT32, DataType.INT64,
        DataType.UINT8, DataType.UINT16, DataType.UINT32, DataType.UINT64,
    )
)

Generators = Callable[[], np.random.Generator]


def _generators(ctx: KernelContext) -> Generators:
    """A callable giving the generator for one run, per the node's ``seed`` attribute."""
    seed = ctx.attr("seed", None)
    if seed is None:
        shared = np.random.default_rng()
        return lambda: shared
    # every float seed (fractional or negative too) maps to its own 64-bit entropy
    entropy = struct.unpack("<Q", struct.pack("<d", float(seed)))[0]
    return lambda: np.random.default_rng(np.random.SeedSequence(entropy))


def _dtype_attr(ctx: KernelContext, allowed: frozenset[np.dtype], default: Any = None) -> np.dtype | None:
    """The ``dtype`` attribute as a numpy dtype (``default`` when absent), validated."""
    code = ctx.attr("dtype", default)
    if code is None:
        return None
    try:
        dtype = to_numpy(int(code))
    except TypeError:
        raise ctx.fail(f"dtype {code!r} is not an ONNX element type") from None
    if dtype not in allowed:
        raise ctx.fail(f"dtype {DataType(int(code)).type_string} is not allowed here")
    return dtype


def _like_dtype(fixed: np.dtype | None, x: Any, allowed: frozenset[np.dtype], op: str) -> np.dtype:
    """The output dtype of a *Like op: the attribute's, else the input's."""
    dtype = fixed if fixed is not None else np.dtype(x.dtype)
    if dtype not in allowed:
        raise TypeError(f"{op} cannot produce {dtype} values: set its dtype attribute to a float type")
    return dtype


def _shape_attr(ctx: KernelContext) -> tuple[int, ...]:
    shape = tuple(int(v) for v in ctx.attr("shape"))
    if any(d < 0 for d in shape):
        raise ctx.fail(f"shape must not hold negative sizes, got {list(shape)}")
    return shape


def _uniform(rng: np.random.Generator, shape: tuple[int, ...], low: float, high: float, dtype: np.dtype) -> np.ndarray:
    values = rng.random(shape) * (high - low) + low
    return np.asarray(values).astype(dtype)


def _normal(rng: np.random.Generator, shape: tuple[int, ...], mean: float, scale: float, dtype: np.dtype) -> np.ndarray:
    values = rng.standard_normal(shape) * scale + mean
    return np.asarray(values).astype(dtype)


@KERNELS.register("RandomUniform", since=(1, 22))
def random_uniform(ctx: KernelContext) -> KernelRun:
    """Uniform values in [low, high) of the given shape and dtype."""
    xp = ctx.xp
    generator = _generators(ctx)
    shape = _shape_attr(ctx)
    dtype = _dtype_attr(ctx, _FLOAT_OUTPUTS, int(DataType.FLOAT))
    low, high = float(ctx.attr("low", 0.0)), float(ctx.attr("high", 1.0))

    def run() -> tuple[Any]:
        return (xp.asarray(_uniform(generator(), shape, low, high, dtype)),)

    return run


@KERNELS.register("RandomNormal", since=(1, 22))
def random_normal(ctx: KernelContext) -> KernelRun:
    """Normal values N(mean, scale^2) of the given shape and dtype."""
    xp = ctx.xp
    generator = _generators(ctx)
    shape = _shape_attr(ctx)
    dtype = _dtype_attr(ctx, _FLOAT_OUTPUTS, int(DataType.FLOAT))
    mean, scale = float(ctx.attr("mean", 0.0)), float(ctx.attr("scale", 1.0))

    def run() -> tuple[Any]:
        return (xp.asarray(_normal(generator(), shape, mean, scale, dtype)),)

    return run


@KERNELS.register("RandomUniformLike", since=(1, 22))
def random_uniform_like(ctx: KernelContext) -> KernelRun:
    """Uniform values in [low, high) shaped like the input."""
    xp = ctx.xp
    generator = _generators(ctx)
    fixed = _dtype_attr(ctx, _FLOAT_OUTPUTS)
    low, high = float(ctx.attr("low", 0.0)), float(ctx.attr("high", 1.0))

    def run(x: Any) -> tuple[Any]:
        dtype = _like_dtype(fixed, x, _FLOAT_OUTPUTS, "RandomUniformLike")
        return (xp.asarray(_uniform(generator(), tuple(x.shape), low, high, dtype)),)

    return run


@KERNELS.register("RandomNormalLike", since=(1, 22))
def random_normal_like(ctx: KernelContext) -> KernelRun:
    """Normal values N(mean, scale^2) shaped like the input."""
    xp = ctx.xp
    generator = _generators(ctx)
    fixed = _dtype_attr(ctx, _FLOAT_OUTPUTS)
    mean, scale = float(ctx.attr("mean", 0.0)), float(ctx.attr("scale", 1.0))

    def run(x: Any) -> tuple[Any]:
        dtype = _like_dtype(fixed, x, _FLOAT_OUTPUTS, "RandomNormalLike")
        return (xp.asarray(_normal(generator(), tuple(x.shape), mean, scale, dtype)),)

    return run


@KERNELS.register("Bernoulli", since=(15, 22))
def bernoulli(ctx: KernelContext) -> KernelRun:
    """1 with probability p (the input), else 0, in the dtype attribute or the input's dtype."""
    xp = ctx.xp
    generator = _generators(ctx)
    fixed = _dtype_attr(ctx, _BERNOULLI_OUTPUTS)

    def run(p: Any) -> tuple[Any]:
        dtype = _like_dtype(fixed, p, _BERNOULLI_OUTPUTS, "Bernoulli")
        probabilities = np.asarray(p, dtype=np.float64)
        draws = generator().random(probabilities.shape) < probabilities
        return (xp.asarray(draws.astype(dtype)),)

    return run


@KERNELS.register("Multinomial", since=(7, 22))
def multinomial(ctx: KernelContext) -> KernelRun:
    """``sample_size`` class indices per batch row, drawn from softmax of the row's logits."""
    xp = ctx.xp
    generator = _generators(ctx)
    dtype = _dtype_attr(ctx, frozenset({np.dtype(np.int32), np.dtype(np.int64)}), int(DataType.INT32))
    sample_size = int(ctx.attr("sample_size", 1))
    if sample_size < 0:
        raise ctx.fail(f"sample_size must be >= 0, got {sample_size}")

    def run(logits: Any) -> tuple[Any]:
        logits = np.asarray(logits, dtype=np.float64)
        if logits.ndim != 2:
            raise ValueError(f"Multinomial expects [batch, classes] logits, got shape {list(logits.shape)}")
        batch, classes = logits.shape
        if classes == 0:
            raise ValueError("Multinomial needs at least one class")
        with np.errstate(invalid="ignore", over="ignore"):
            weights = np.exp(logits - logits.max(axis=1, keepdims=True))
        cumulative = np.cumsum(weights, axis=1)
        targets = generator().random((batch, sample_size)) * cumulative[:, -1:]
        samples = np.empty((batch, sample_size), dtype=np.int64)
        for row in range(batch):
            samples[row] = np.searchsorted(cumulative[row], targets[row], side="right")
        return (xp.asarray(np.minimum(samples, classes - 1).astype(dtype)),)

    return run
