"""Sequence and optional kernels.

A sequence is a Python ``list`` of arrays and an empty optional is ``None``. Kernels never
modify a sequence they receive: every operation that changes one builds a new list.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ronn.kernel import KernelContext, KernelRun, KernelTable

KERNELS = KernelTable()


def _position(value: Any, length: int, *, allow_end: bool, op: str) -> int:
    """A sequence position from a scalar tensor, negatives counted from the end, checked."""
    if value is None or getattr(value, "size", 1) != 1:
        raise ValueError(f"{op}: position must be a scalar, got {value!r}")
    position = int(value.reshape(()).item() if hasattr(value, "reshape") else value)
    upper = length if allow_end else length - 1
    if not -length <= position <= upper:
        raise ValueError(f"{op}: position {position} is out of range for a sequence of length {length}")
    return position + length if position < 0 else position


def _check_sequence(value: Any, op: str) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"{op} expects a sequence, got {type(value).__name__}")
    return value


@KERNELS.register("SequenceEmpty", since=11)
def sequence_empty(ctx: KernelContext) -> KernelRun:
    """An empty sequence (its ``dtype`` attribute only types the graph)."""

    def run() -> tuple[list[Any]]:
        return ([],)

    return run


@KERNELS.register("SequenceConstruct", since=11)
def sequence_construct(ctx: KernelContext) -> KernelRun:
    """A sequence of the inputs, in order."""

    def run(*tensors: Any) -> tuple[list[Any]]:
        return (list(tensors),)

    return run


@KERNELS.register("SequenceInsert", since=11)
def sequence_insert(ctx: KernelContext) -> KernelRun:
    """A new sequence with ``tensor`` inserted at ``position`` (default: the end)."""

    def run(sequence: list[Any], tensor: Any, position: Any = None) -> tuple[list[Any]]:
        result = list(_check_sequence(sequence, "SequenceInsert"))
        if position is None:
            result.append(tensor)
        else:
            result.insert(_position(position, len(result), allow_end=True, op="SequenceInsert"), tensor)
        return (result,)

    return run


@KERNELS.register("SequenceAt", since=11)
def sequence_at(ctx: KernelContext) -> KernelRun:
    """The element at ``position``."""

    def run(sequence: list[Any], position: Any) -> tuple[Any]:
        sequence = _check_sequence(sequence, "SequenceAt")
        return (sequence[_position(position, len(sequence), allow_end=False, op="SequenceAt")],)

    return run


@KERNELS.register("SequenceErase", since=11)
def sequence_erase(ctx: KernelContext) -> KernelRun:
    """A new sequence without the element at ``position`` (default: the last)."""

    def run(sequence: list[Any], position: Any = None) -> tuple[list[Any]]:
        result = list(_check_sequence(sequence, "SequenceErase"))
        if not result:
            raise ValueError("SequenceErase: the sequence is empty")
        index = -1 if position is None else _position(position, len(result), allow_end=False, op="SequenceErase")
        del result[index]
        return (result,)

    return run


@KERNELS.register("SequenceLength", since=11)
def sequence_length(ctx: KernelContext) -> KernelRun:
    """The number of elements, as an int64 scalar."""
    xp = ctx.xp

    def run(sequence: list[Any]) -> tuple[Any]:
        return (xp.asarray(len(_check_sequence(sequence, "SequenceLength")), dtype=np.int64),)

    return run


@KERNELS.register("SplitToSequence", since=(11, 24))
def split_to_sequence(ctx: KernelContext) -> KernelRun:
    """Split along ``axis`` into chunks of ``split`` (scalar or lengths); default size 1."""
    xp = ctx.xp
    axis = int(ctx.attr("axis", 0))
    keepdims = bool(ctx.attr("keepdims", 1))

    def run(data: Any, split: Any = None) -> tuple[list[Any]]:
        rank = data.ndim
        if not -rank <= axis < rank:
            raise ValueError(f"SplitToSequence: axis {axis} is out of range for rank {rank}")
        ax = axis % rank
        length = data.shape[ax]
        if split is None:
            parts = [data[(slice(None),) * ax + (i,)] for i in range(length)]
            if keepdims:
                parts = [xp.expand_dims(p, ax) for p in parts]
            return (parts,)
        sizes = split.ravel().tolist()
        if split.ndim == 0:
            chunk = int(sizes[0])
            if chunk <= 0:
                raise ValueError(f"SplitToSequence: split must be positive, got {chunk}")
            bounds = list(range(chunk, length, chunk))
        else:
            if any(s < 0 for s in sizes) or sum(sizes) != length:
                raise ValueError(
                    f"SplitToSequence: split {sizes} must be non-negative and sum to {length}"
                )
            bounds = np.cumsum(sizes[:-1]).tolist() if sizes else []
        return (list(xp.split(data, bounds, axis=ax)),)

    return run


@KERNELS.register("ConcatFromSequence", since=11)
def concat_from_sequence(ctx: KernelContext) -> KernelRun:
    """Concatenate the elements along ``axis``, or stack them on a new axis (new_axis=1)."""
    xp = ctx.xp
    axis = int(ctx.attr("axis"))
    new_axis = bool(ctx.attr("new_axis", 0))

    def run(sequence: list[Any]) -> tuple[Any]:
        sequence = _check_sequence(sequence, "ConcatFromSequence")
        if not sequence:
            raise ValueError("ConcatFromSequence: the sequence is empty")
        rank = sequence[0].ndim + (1 if new_axis else 0)
        if not -rank <= axis < rank:
            raise ValueError(f"ConcatFromSequence: axis {axis} is out of range for rank {rank}")
        if new_axis:
            return (xp.stack(sequence, axis=axis % rank),)
        return (xp.concatenate(sequence, axis=axis % rank),)

    return run


@KERNELS.register("SequenceMap", since=17)
def sequence_map(ctx: KernelContext) -> KernelRun:
    """Run ``body`` on each element (sequence inputs per element, tensors whole)."""
    body = ctx.attr("body")
    runner = ctx.compile_subgraph(body)
    explicit = ctx.num_inputs
    implicit = list(ctx.implicit_inputs)
    n_outputs = len(body.outputs)
    if len(body.inputs) != explicit:
        raise ctx.fail(f"body takes {len(body.inputs)} inputs but the node has {explicit}")

    def run(*args: Any) -> tuple[list[Any], ...]:
        inputs, outer = args[:explicit], dict(zip(implicit, args[explicit:]))
        length = len(_check_sequence(inputs[0], "SequenceMap"))
        for value in inputs[1:]:
            if isinstance(value, list) and len(value) != length:
                raise ValueError(f"SequenceMap: sequences of lengths {length} and {len(value)}")
        results: list[list[Any]] = [[] for _ in range(n_outputs)]
        for i in range(length):
            step = [v[i] if isinstance(v, list) else v for v in inputs]
            for collected, value in zip(results, runner(step, outer)):
                collected.append(value)
        return tuple(results)

    return run


# --- optionals ----------------------------------------------------------------------------


@KERNELS.register("Optional", since=(15, 28))
def optional(ctx: KernelContext) -> KernelRun:
    """An optional holding the input, or an empty one (None) without it."""

    def run(value: Any = None) -> tuple[Any]:
        return (value,)

    return run


@KERNELS.register("OptionalHasElement", since=(15, 18, 28))
def optional_has_element(ctx: KernelContext) -> KernelRun:
    """Whether the input is present (a tensor, a sequence or a non-empty optional)."""
    xp = ctx.xp

    def run(value: Any = None) -> tuple[Any]:
        return (xp.asarray(value is not None),)

    return run


@KERNELS.register("OptionalGetElement", since=(15, 18, 28))
def optional_get_element(ctx: KernelContext) -> KernelRun:
    """The optional's value (a plain tensor or sequence passes through); empty is an error."""

    def run(value: Any = None) -> tuple[Any]:
        if value is None:
            raise ValueError("OptionalGetElement: the optional is empty")
        return (value,)

    return run
