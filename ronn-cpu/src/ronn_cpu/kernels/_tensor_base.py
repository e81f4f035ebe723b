"""The tensor family's kernel table and the small helpers its modules share."""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np

from ronn.kernel import KernelTable

#: every tensor-family kernel registers here; ``tensor.KERNELS`` is this table
KERNELS = KernelTable()


#: 16-bit float types whose arithmetic is done in float32
HALF_TYPES = frozenset({np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)})


def normalize_axis(axis: int, rank: int, op: str) -> int:
    """``axis`` in ``[0, rank)``; a ValueError naming ``op`` when out of ``[-rank, rank)``."""
    if axis < -rank or axis >= rank:
        raise ValueError(f"{op}: axis {axis} is out of range for a tensor of rank {rank}")
    return axis + rank if axis < 0 else axis


def normalize_axes(axes: list[int], rank: int, op: str) -> list[int]:
    """Every axis normalised; a ValueError on duplicates."""
    result = [normalize_axis(a, rank, op) for a in axes]
    if len(set(result)) != len(result):
        raise ValueError(f"{op}: axes {axes} contain duplicates")
    return result


def int_list(values: Any) -> list[int]:
    """A 1-D (or scalar) integer tensor, or a list, as a list of Python ints."""
    if isinstance(values, (list, tuple)):
        return [int(v) for v in values]
    flat = np.asarray(values).reshape(-1)
    if flat.dtype.kind not in "iub":
        flat = flat.astype(np.int64)
    return flat.tolist()


def int_tuple(values: Any) -> tuple[int, ...]:
    """An integer tensor input (1-D, or leniently a scalar) as a tuple of Python ints."""
    listed = values.tolist()
    return (listed,) if type(listed) is int else tuple(listed)


def scalar_int(value: Any, op: str, what: str) -> int:
    """A scalar or one-element tensor as a Python int."""
    arr = np.asarray(value)
    if arr.size != 1:
        raise ValueError(f"{op}: {what} must hold a single value, got shape {arr.shape}")
    return int(arr.reshape(-1)[0])


def zero_value(dtype: np.dtype) -> Any:
    """The zero (``""`` for strings) of an element type, as a 0-d array."""
    if dtype.kind == "O":
        return np.array("", dtype=object)
    return np.zeros((), dtype=dtype)


def as_array(value: Any, dtype: np.dtype) -> np.ndarray:
    """``value`` as an ndarray of ``dtype`` (numpy indexing can hand back scalars)."""
    if type(value) is np.ndarray:
        return value
    return np.asarray(value, dtype=dtype)


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """The float type arithmetic on ``dtype`` runs in: float64 for double, else float32."""
    if dtype == np.float64:
        return dtype
    if dtype.kind == "c":
        return dtype
    return np.dtype(np.float32)


def cast_result(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float results back to ``dtype``: integers rounded half to even and saturated."""
    if values.dtype == dtype:
        return values
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    if dtype.kind == "b":
        return values != 0
    return values.astype(dtype)


#: how many per-shape plans a kernel memoises before starting over
PLAN_CACHE_SIZE = 64


def remember(cache: dict, key: Any, value: Any) -> Any:
    """Store ``value`` under ``key`` in a kernel's small plan cache and return it.

    Shape kernels run on the same shapes run after run; memoising the plan for a
    (shape, arguments) key keeps them to a dictionary lookup and a numpy view.
    """
    if len(cache) >= PLAN_CACHE_SIZE:
        cache.clear()
    cache[key] = value
    return value
