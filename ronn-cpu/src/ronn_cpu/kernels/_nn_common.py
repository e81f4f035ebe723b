"""Shared pieces of the neural-network family: its kernel table and small helpers.

The family's modules (``_conv``, ``_pool``, ``_norm``, ``_linalg``, ``_softmax``) register
into :data:`KERNELS`; :mod:`ronn_cpu.kernels.nn` imports them and re-exports the table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import ml_dtypes
import numpy as np

from ronn.dtypes import FLOAT8_DTYPES
from ronn.kernel import KernelContext, KernelTable

KERNELS = KernelTable()

#: Float types numpy cannot compute with quickly (or at all): computed in float32.
_WIDEN_TO_FLOAT32 = FLOAT8_DTYPES | {np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)}


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype to compute in for inputs of ``dtype``: float32 for narrow floats."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype in _WIDEN_TO_FLOAT32 else dtype


def widen(x: Any) -> Any:
    """``x`` in its compute dtype (narrow floats become float32; others unchanged)."""
    target = compute_dtype(x.dtype)
    return x if x.dtype == target else x.astype(target)


def ints(value: Any, count: int, default: int) -> list[int]:
    """A per-spatial-axis attribute as a list of ``count`` ints (``default`` when absent)."""
    if value is None:
        return [default] * count
    values = [int(v) for v in value]
    if len(values) != count:
        raise ValueError(f"expected {count} values, got {values}")
    return values


def auto_pad_attr(ctx: KernelContext) -> str:
    """The node's ``auto_pad`` attribute, validated."""
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    if auto_pad not in ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"):
        raise ctx.fail(f"unsupported auto_pad {auto_pad!r}")
    return auto_pad


def same_pads(
    auto_pad: str, in_size: int, stride: int, window: int
) -> tuple[int, int, int]:
    """(output size, pad begin, pad end) of one axis under SAME_UPPER / SAME_LOWER."""
    out = -(-in_size // stride)
    total = max(0, (out - 1) * stride + window - in_size)
    small, large = total // 2, total - total // 2
    return (out, small, large) if auto_pad == "SAME_UPPER" else (out, large, small)


def resolve_pads(
    auto_pad: str,
    in_shape: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    pads: Sequence[int] | None,
) -> tuple[list[int], list[int]]:
    """Begin and end pads per spatial axis, from explicit ``pads`` or ``auto_pad``."""
    rank = len(in_shape)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begins, ends = [], []
        for size, k, s, d in zip(in_shape, kernel, strides, dilations):
            _, begin, end = same_pads(auto_pad, size, s, (k - 1) * d + 1)
            begins.append(begin)
            ends.append(end)
        return begins, ends
    if auto_pad == "VALID" or pads is None:
        return [0] * rank, [0] * rank
    pads = [int(p) for p in pads]
    if len(pads) != 2 * rank:
        raise ValueError(f"pads {pads} do not match {rank} spatial axes")
    return pads[:rank], pads[rank:]


def tap_slices(
    tap: Sequence[int],
    out_shape: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
) -> tuple[slice, ...]:
    """Slices of a padded array's spatial axes that one kernel tap reads for every output."""
    return tuple(
        slice(t * d, t * d + (o - 1) * s + 1, s)
        for t, o, s, d in zip(tap, out_shape, strides, dilations)
    )


def pad_spatial(xp: Any, x: Any, begins: Sequence[int], ends: Sequence[int], value: Any) -> Any:
    """``x`` with its spatial axes (2 on) padded by ``value``; negative ends crop."""
    if not any(begins) and not any(ends):
        return x
    spatial = x.shape[2:]
    sizes = [b + n + max(e, 0) for b, n, e in zip(begins, spatial, ends)]
    out = xp.full(x.shape[:2] + tuple(sizes), value, dtype=x.dtype)
    crop = tuple(slice(0, n + min(e, 0)) for n, e in zip(spatial, ends))
    place = tuple(slice(b, b + n + min(e, 0)) for b, n, e in zip(begins, spatial, ends))
    out[(slice(None), slice(None)) + place] = x[(slice(None), slice(None)) + crop]
    return out


def rounded_to(values: Any, dtype: np.dtype) -> Any:
    """Float ``values`` rounded half to even and saturated into integer ``dtype``."""
    info = np.iinfo(dtype)
    return np.clip(np.rint(values), info.min, info.max).astype(dtype)


def constant_input(ctx: KernelContext, index: int) -> bool:
    """Whether the node's input ``index`` is an initializer of the model's main graph."""
    if ctx.model is None or index >= len(ctx.node.inputs) or not ctx.node.inputs[index]:
        return False
    graph = ctx.model.graph
    name = ctx.node.inputs[index]
    return name in graph.initializers and name not in {v.name for v in graph.inputs}


def derived(ctx: KernelContext, index: int, derive: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``derive`` applied to input ``index``; cached across runs when the input is a constant.

    Kernels use it to reshape or widen weights once instead of on every run.
    """
    if not constant_input(ctx, index):
        return derive
    slot: list[tuple[Any, Any] | None] = [None]

    def cached(source: Any) -> Any:
        entry = slot[0]
        if entry is not None and entry[0] is source:
            return entry[1]
        value = derive(source)
        slot[0] = (source, value)  # one assignment: safe under concurrent runs
        return value

    return cached
