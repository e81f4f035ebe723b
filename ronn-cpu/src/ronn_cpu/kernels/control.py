"""Control-flow kernels with subgraphs: If, Loop, Scan.

Each body is compiled once, in the factory, with ``ctx.compile_subgraph``. The values the
bodies read from enclosing scopes arrive after the node's explicit inputs, in the order of
``ctx.implicit_inputs``; each body gets the ones it reads as its ``outer`` mapping.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ronn.ir import Graph, TensorType
from ronn.kernel import KernelContext, KernelRun, KernelTable, SubgraphRunner

KERNELS = KernelTable()

_CONTROL_VERSIONS = (1, 11, 13, 16, 19, 21, 23, 24, 25)


class _Body:
    """A compiled subgraph and the outer-scope names it reads."""

    def __init__(self, ctx: KernelContext, graph: Graph) -> None:
        self.graph = graph
        self.runner: SubgraphRunner = ctx.compile_subgraph(graph)
        self.reads = graph.free_variables()

    def __call__(self, inputs: Sequence[Any], outer: dict[str, Any]) -> list[Any]:
        return self.runner(inputs, {k: v for k, v in outer.items() if k in self.reads})

    def empty_output(self, xp: Any, index: int, leading: tuple[int, ...]) -> Any:
        """An empty scan output for body output ``index``: zero steps of its declared type."""
        value_type = self.graph.outputs[index].type
        dtype, shape = np.dtype(np.float32), ()
        if isinstance(value_type, TensorType):
            dtype = value_type.dtype.np_dtype
            if value_type.shape is not None and all(isinstance(d, int) for d in value_type.shape):
                shape = tuple(value_type.shape)
        return xp.zeros(leading + shape, dtype=dtype)


def _split_args(ctx: KernelContext, args: Sequence[Any]) -> tuple[Sequence[Any], dict[str, Any]]:
    """The node's explicit inputs and its outer-scope values by name."""
    explicit = ctx.num_inputs
    return args[:explicit], dict(zip(ctx.implicit_inputs, args[explicit:]))


def _truth(value: Any, what: str) -> bool:
    if value is None or getattr(value, "size", 0) != 1:
        raise ValueError(f"{what} must be a single boolean, got {value!r}")
    return bool(value.reshape(()).item())


@KERNELS.register("If", since=_CONTROL_VERSIONS)
def if_(ctx: KernelContext) -> KernelRun:
    """Run ``then_branch`` or ``else_branch`` depending on ``cond``."""
    then_body = _Body(ctx, ctx.attr("then_branch"))
    else_body = _Body(ctx, ctx.attr("else_branch"))
    for name, body in (("then_branch", then_body), ("else_branch", else_body)):
        if len(body.graph.outputs) != ctx.num_outputs:
            raise ctx.fail(f"{name} has {len(body.graph.outputs)} outputs, the node {ctx.num_outputs}")

    def run(*args: Any) -> list[Any]:
        (cond,), outer = _split_args(ctx, args)
        body = then_body if _truth(cond, "If condition") else else_body
        return body([], outer)

    return run


@KERNELS.register("Loop", since=_CONTROL_VERSIONS)
def loop(ctx: KernelContext) -> KernelRun:
    """Run ``body`` while ``cond`` holds and fewer than ``M`` trips have run."""
    xp = ctx.xp
    body = _Body(ctx, ctx.attr("body"))
    n_carried = ctx.num_inputs - 2
    if n_carried < 0:
        raise ctx.fail("Loop needs the inputs M and cond (either may be empty)")
    if len(body.graph.inputs) != n_carried + 2:
        raise ctx.fail(f"body takes {len(body.graph.inputs)} inputs, expected {n_carried + 2}")
    n_scan = len(body.graph.outputs) - 1 - n_carried
    if n_scan < 0:
        raise ctx.fail(f"body has {len(body.graph.outputs)} outputs, expected at least {n_carried + 1}")

    def run(*args: Any) -> list[Any]:
        (trip_limit, cond, *carried), outer = _split_args(ctx, args)
        limit = None if trip_limit is None else int(trip_limit.reshape(()).item())
        keep_going = True if cond is None else _truth(cond, "Loop condition")
        scans: list[list[Any]] = [[] for _ in range(n_scan)]
        trip = 0
        while keep_going and (limit is None or trip < limit):
            outputs = body(
                [xp.asarray(trip, dtype=np.int64), xp.asarray(keep_going), *carried], outer
            )
            keep_going = _truth(outputs[0], "Loop body condition")
            carried = outputs[1 : 1 + n_carried]
            for collected, value in zip(scans, outputs[1 + n_carried :]):
                collected.append(value)
            trip += 1
        stacked = [
            xp.stack(values) if values else body.empty_output(xp, 1 + n_carried + k, (0,))
            for k, values in enumerate(scans)
        ]
        return [*carried, *stacked]

    return run


def _element(value: Any, axis: int, index: int) -> Any:
    """The slice ``index`` of ``value`` along ``axis`` (a view)."""
    return value[(slice(None),) * axis + (index,)]


def _scan_steps(
    body: _Body,
    states: list[Any],
    scan_inputs: list[Any],
    axes: list[int],
    reverse: list[bool],
    length: int,
    outer: dict[str, Any],
) -> tuple[list[Any], list[list[Any]]]:
    """Run ``length`` steps; the final states and each scan output's per-step values."""
    n_state = len(states)
    collected: list[list[Any]] = [[] for _ in range(len(body.graph.outputs) - n_state)]
    for t in range(length):
        elements = [
            _element(x, ax, length - 1 - t if back else t)
            for x, ax, back in zip(scan_inputs, axes, reverse)
        ]
        outputs = body([*states, *elements], outer)
        states = list(outputs[:n_state])
        for values, value in zip(collected, outputs[n_state:]):
            values.append(value)
    return states, collected


@KERNELS.register("Scan", since=(9, 11, 16, 19, 21, 23, 24, 25))
def scan(ctx: KernelContext) -> KernelRun:
    """Scan (opset 9+): iterate the body over slices of the scan inputs, carrying states."""
    xp = ctx.xp
    body = _Body(ctx, ctx.attr("body"))
    n_scan_in = int(ctx.attr("num_scan_inputs"))
    n_state = ctx.num_inputs - n_scan_in
    n_scan_out = len(body.graph.outputs) - n_state
    if n_state < 0 or n_scan_out < 0:
        raise ctx.fail("num_scan_inputs does not match the node's inputs and the body's outputs")
    in_dirs = [bool(d) for d in ctx.attr("scan_input_directions", [0] * n_scan_in)]
    in_axes = [int(a) for a in ctx.attr("scan_input_axes", [0] * n_scan_in)]
    out_dirs = [bool(d) for d in ctx.attr("scan_output_directions", [0] * n_scan_out)]
    out_axes = [int(a) for a in ctx.attr("scan_output_axes", [0] * n_scan_out)]
    if len(in_dirs) != n_scan_in or len(in_axes) != n_scan_in:
        raise ctx.fail("scan_input_directions/axes must have num_scan_inputs entries")
    if len(out_dirs) != n_scan_out or len(out_axes) != n_scan_out:
        raise ctx.fail("scan_output_directions/axes must have one entry per scan output")

    def run(*args: Any) -> list[Any]:
        explicit, outer = _split_args(ctx, args)
        states, scan_inputs = list(explicit[:n_state]), list(explicit[n_state:])
        axes = []
        for x, axis in zip(scan_inputs, in_axes):
            if not -x.ndim <= axis < x.ndim:
                raise ValueError(f"Scan: axis {axis} is out of range for a scan input of rank {x.ndim}")
            axes.append(axis % x.ndim)
        lengths = {x.shape[ax] for x, ax in zip(scan_inputs, axes)}
        if len(lengths) > 1:
            raise ValueError(f"Scan: scan inputs have different lengths {sorted(lengths)}")
        length = lengths.pop() if lengths else 0
        states, collected = _scan_steps(body, states, scan_inputs, axes, in_dirs, length, outer)
        outputs = []
        for k, (values, back, axis) in enumerate(zip(collected, out_dirs, out_axes)):
            if not values:
                outputs.append(body.empty_output(xp, n_state + k, (0,)))
                continue
            rank = values[0].ndim + 1
            if not -rank <= axis < rank:
                raise ValueError(f"Scan: output axis {axis} is out of range for rank {rank}")
            outputs.append(xp.stack(values[::-1] if back else values, axis=axis % rank))
        return [*states, *outputs]

    return run


@KERNELS.register("Scan", since=8)
def scan_8(ctx: KernelContext) -> KernelRun:
    """Scan (opset 8): a leading batch axis, optional per-batch sequence lengths."""
    xp = ctx.xp
    body = _Body(ctx, ctx.attr("body"))
    n_scan_in = int(ctx.attr("num_scan_inputs"))
    n_state = ctx.num_inputs - 1 - n_scan_in
    n_scan_out = len(body.graph.outputs) - n_state
    if n_state < 0 or n_scan_out < 0:
        raise ctx.fail("num_scan_inputs does not match the node's inputs and the body's outputs")
    in_dirs = [bool(d) for d in ctx.attr("directions", [0] * n_scan_in)]
    if len(in_dirs) != n_scan_in:
        raise ctx.fail("directions must have num_scan_inputs entries")

    def run(*args: Any) -> list[Any]:
        (lengths_in, *explicit), outer = _split_args(ctx, args)
        states, scan_inputs = explicit[:n_state], explicit[n_state:]
        batch = (states or scan_inputs)[0].shape[0]
        max_len = scan_inputs[0].shape[1] if scan_inputs else 0
        lengths = [max_len] * batch if lengths_in is None else [int(v) for v in lengths_in.ravel().tolist()]
        if len(lengths) != batch or any(not 0 <= n <= max_len for n in lengths):
            raise ValueError(f"Scan: sequence_lens {lengths} do not fit batch {batch}, length {max_len}")
        final_states: list[list[Any]] = [[] for _ in range(n_state)]
        outputs: list[list[Any]] = [[] for _ in range(n_scan_out)]
        for b in range(batch):
            length = lengths[b]
            per_batch = [x[b, :length] for x in scan_inputs]
            ends, collected = _scan_steps(
                body, [s[b] for s in states], per_batch, [0] * n_scan_in, in_dirs, length, outer
            )
            for gathered, value in zip(final_states, ends):
                gathered.append(value)
            for k, (gathered, values) in enumerate(zip(outputs, collected)):
                gathered.append(_pad_steps(xp, body, n_state + k, values, max_len))
        return [*(xp.stack(s) for s in final_states), *(xp.stack(o) for o in outputs)]

    return run


def _pad_steps(xp: Any, body: _Body, index: int, values: list[Any], steps: int) -> Any:
    """One batch entry's scan output: its steps stacked and zero-padded to ``steps``."""
    if not values:
        return body.empty_output(xp, index, (steps,))
    stacked = xp.stack(values)
    if len(values) == steps:
        return stacked
    padding = xp.zeros((steps - len(values),) + stacked.shape[1:], dtype=stacked.dtype)
    return xp.concatenate([stacked, padding])
