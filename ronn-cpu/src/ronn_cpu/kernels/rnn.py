"""Recurrent kernels: RNN, GRU and LSTM, every direction, layout and optional input/output.

The input projection ``X W^T + Wb`` of every time step and direction is one matmul before the
time loop; each step then does one batched matmul of the hidden state against ``R`` for all
directions at once. Directions run in lockstep: step ``s`` of the reverse direction reads
time ``len - 1 - s`` of each sequence, so with ``sequence_lens`` every sequence is reversed
within its own length (as onnxruntime does). Past a sequence's end the state stops changing
and ``Y`` is zero; a sequence of length 0 ends in zero states (not the initial ones), like
onnxruntime. Half-precision tensors are computed in float32 and cast back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ronn.kernel import KernelContext, KernelRun, KernelTable

KERNELS = KernelTable()

#: an activation as (lower-case name, alpha, beta), hashable so directions can share a call
Activation = tuple[str, float, float]
Step = Callable[..., tuple[Any, Any]]

#: name -> (default alpha, default beta); None where the function takes no such parameter.
#: The defaults are those of the ONNX operators of the same name, as the spec asks
#: (onnxruntime instead uses 0 for Affine, ScaledTanh and ThresholdedRelu).
_ACTIVATION_PARAMETERS: dict[str, tuple[float | None, float | None]] = {
    "relu": (None, None),
    "tanh": (None, None),
    "sigmoid": (None, None),
    "affine": (1.0, 0.0),
    "leakyrelu": (0.01, None),
    "thresholdedrelu": (1.0, None),
    "scaledtanh": (1.0, 1.0),
    "hardsigmoid": (0.2, 0.5),
    "elu": (1.0, None),
    "softsign": (None, None),
    "softplus": (None, None),
}


def _evaluate(xp: Any, activation: Activation, x: Any) -> Any:
    """``activation`` applied to ``x``."""
    name, alpha, beta = activation
    if name == "sigmoid":
        return 0.5 * xp.tanh(0.5 * x) + 0.5
    if name == "tanh":
        return xp.tanh(x)
    if name == "relu":
        return xp.maximum(x, 0)
    if name == "affine":
        return alpha * x + beta
    if name == "leakyrelu":
        return xp.where(x >= 0, x, alpha * x)
    if name == "thresholdedrelu":
        return xp.where(x > alpha, x, 0).astype(x.dtype, copy=False)
    if name == "scaledtanh":
        return alpha * xp.tanh(beta * x)
    if name == "hardsigmoid":
        return xp.clip(alpha * x + beta, 0, 1)
    if name == "elu":
        return xp.where(x >= 0, x, alpha * xp.expm1(xp.minimum(x, 0)))
    if name == "softsign":
        return x / (1 + xp.abs(x))
    return xp.logaddexp(0, x)  # softplus


def _parse_activations(ctx: KernelContext, defaults: list[str], directions: int) -> list[list[Activation]]:
    """Per direction, the node's activations with their alpha/beta resolved.

    ``activation_alpha``/``activation_beta`` are consumed in order by the functions that take
    such a parameter; the others keep their defaults.
    """
    per_direction = len(defaults)
    names = [str(n) for n in ctx.attr("activations", [])] or defaults * directions
    if len(names) == per_direction and directions == 2:
        names = names * 2
    if len(names) < per_direction * directions:
        raise ctx.fail(f"expected {per_direction * directions} activations, got {len(names)}")
    alphas = [float(a) for a in ctx.attr("activation_alpha", [])]
    betas = [float(b) for b in ctx.attr("activation_beta", [])]
    parsed: list[Activation] = []
    for name in names[: per_direction * directions]:
        key = name.lower()
        if key not in _ACTIVATION_PARAMETERS:
            raise ctx.fail(f"unsupported activation {name!r}")
        default_alpha, default_beta = _ACTIVATION_PARAMETERS[key]
        alpha = alphas.pop(0) if default_alpha is not None and alphas else default_alpha
        beta = betas.pop(0) if default_beta is not None and betas else default_beta
        parsed.append((key, alpha or 0.0, beta or 0.0))
    return [parsed[d * per_direction : (d + 1) * per_direction] for d in range(directions)]


@dataclass
class _Config:
    """A recurrent node's attributes, fixed at session creation."""

    gates: int
    directions: int
    reverse: tuple[bool, ...]
    hidden_size: int | None
    layout: int
    clip: float | None
    #: per activation slot, one activation per direction
    activations: list[tuple[Activation, ...]]
    linear_before_reset: bool = False
    input_forget: bool = False


def _config(ctx: KernelContext, gates: int, defaults: list[str]) -> _Config:
    direction = ctx.attr("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ctx.fail(f"direction must be forward, reverse or bidirectional, got {direction!r}")
    directions = 2 if direction == "bidirectional" else 1
    reverse = (False, True) if directions == 2 else (direction == "reverse",)
    layout = int(ctx.attr("layout", 0)) if ctx.opset >= 14 else 0
    if layout not in (0, 1):
        raise ctx.fail(f"layout must be 0 or 1, got {layout}")
    clip = ctx.attr("clip", None)
    if clip is not None and not float(clip) > 0:
        raise ctx.fail(f"clip must be positive, got {clip}")
    hidden_size = ctx.attr("hidden_size", None)
    per_direction = _parse_activations(ctx, defaults, directions)
    slots = [tuple(per_direction[d][i] for d in range(directions)) for i in range(len(defaults))]
    return _Config(
        gates=gates,
        directions=directions,
        reverse=reverse,
        hidden_size=None if hidden_size is None else int(hidden_size),
        layout=layout,
        clip=None if clip is None else float(clip),
        activations=slots,
        linear_before_reset=bool(ctx.attr("linear_before_reset", 0)),
        input_forget=bool(ctx.attr("input_forget", 0)),
    )


def _apply_slot(xp: Any, config: _Config, slot: int, x: Any) -> Any:
    """Each direction's activation of ``slot`` on ``x`` (directions first), one call if they agree."""
    per_direction = config.activations[slot]
    if all(a == per_direction[0] for a in per_direction):
        return _evaluate(xp, per_direction[0], x)
    return xp.stack([_evaluate(xp, a, x[d]) for d, a in enumerate(per_direction)])


def _activate(xp: Any, config: _Config, slot: int, x: Any) -> Any:
    """A gate's activation: ``clip`` bounds its input first."""
    if config.clip is not None:
        x = xp.clip(x, -config.clip, config.clip)
    return _apply_slot(xp, config, slot, x)


# --- step functions: (config, gx, h, c, weights) -> (h, c); gx is this step's input projection


def _rnn_step(xp: Any, config: _Config, gx: Any, h: Any, c: Any, weights: dict[str, Any]) -> tuple[Any, Any]:
    return _activate(xp, config, 0, gx + xp.matmul(h, weights["r"])), c


def _gru_step(xp: Any, config: _Config, gx: Any, h: Any, c: Any, weights: dict[str, Any]) -> tuple[Any, Any]:
    size = h.shape[-1]
    r_t = weights["r"]
    if config.linear_before_reset:
        recurrent = xp.matmul(h, r_t)
        update = _activate(xp, config, 0, gx[..., : 2 * size] + recurrent[..., : 2 * size])
        z, reset = update[..., :size], update[..., size:]
        candidate = gx[..., 2 * size :] + reset * (recurrent[..., 2 * size :] + weights["rb_h"])
    else:
        update = _activate(xp, config, 0, gx[..., : 2 * size] + xp.matmul(h, r_t[..., : 2 * size]))
        z, reset = update[..., :size], update[..., size:]
        candidate = gx[..., 2 * size :] + xp.matmul(reset * h, r_t[..., 2 * size :])
    candidate = _activate(xp, config, 1, candidate)
    return (1 - z) * candidate + z * h, c


def _lstm_step(xp: Any, config: _Config, gx: Any, h: Any, c: Any, weights: dict[str, Any]) -> tuple[Any, Any]:
    size = h.shape[-1]
    gates = gx + xp.matmul(h, weights["r"])
    i, o, f, g = (gates[..., k * size : (k + 1) * size] for k in range(4))
    peepholes = weights.get("p")
    if peepholes is not None:
        i = i + peepholes[0] * c
    i = _activate(xp, config, 0, i)
    if config.input_forget:
        f = 1 - i
    else:
        if peepholes is not None:
            f = f + peepholes[2] * c
        f = _activate(xp, config, 0, f)
    cell = f * c + i * _activate(xp, config, 1, g)
    if peepholes is not None:
        o = o + peepholes[1] * cell
    o = _activate(xp, config, 0, o)
    hidden = o * _apply_slot(xp, config, 2, cell)  # h acts on the cell state, unclipped
    return hidden, cell


# --- the shared driver ---------------------------------------------------------------------


def _work_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)


def _step_order(xp: Any, config: _Config, steps: int, batch: int, lengths: Any) -> Any:
    """[directions, steps, batch]: the time each direction reads (and writes ``Y``) at each step."""
    step = xp.arange(steps)[:, None]
    forward = xp.broadcast_to(step, (steps, batch))
    if lengths is None:
        backward = xp.broadcast_to(steps - 1 - step, (steps, batch))
    else:  # reverse within each length; the padding past it stays in place
        backward = xp.where(step < lengths[None, :], lengths[None, :] - 1 - step, step)
    return xp.stack([backward if rev else forward for rev in config.reverse])


def _check_shapes(config: _Config, x: Any, w: Any, r: Any) -> int:
    """The hidden size, after checking X, W and R agree with each other and the attributes."""
    if x.ndim != 3 or w.ndim != 3 or r.ndim != 3:
        raise ValueError(f"X, W and R must have rank 3, got shapes {x.shape}, {w.shape}, {r.shape}")
    size = r.shape[-1]
    if config.hidden_size is not None and config.hidden_size != size:
        raise ValueError(f"hidden_size {config.hidden_size} disagrees with R of shape {r.shape}")
    expected = (config.directions, config.gates * size)
    if w.shape[:2] != expected or r.shape[:2] != expected or w.shape[2] != x.shape[2]:
        raise ValueError(f"W {w.shape} / R {r.shape} do not fit X {x.shape} with {config.directions} direction(s)")
    return size


def _initial_state(xp: Any, value: Any, shape: tuple[int, ...], layout: int, dtype: np.dtype, what: str) -> Any:
    if value is None:
        return xp.zeros(shape, dtype=dtype)
    state = xp.swapaxes(value, 0, 1) if layout else value
    if tuple(state.shape) != shape:
        raise ValueError(f"{what} has shape {value.shape}, expected {shape} (layout {layout})")
    return state.astype(dtype)


def _run_recurrent(xp: Any, config: _Config, step: Step, outputs: tuple[bool, ...], inputs: dict[str, Any]):
    """Run the time loop; return (Y, Y_h, Y_c) in the node's layout and dtype."""
    x, w, r = inputs["X"], inputs["W"], inputs["R"]
    if config.layout:
        x = xp.swapaxes(x, 0, 1)
    size = _check_shapes(config, x, w, r)
    steps, batch, _ = x.shape
    dirs, width = config.directions, config.gates * size
    work = _work_dtype(x.dtype)

    bias = inputs.get("B")
    bias = xp.zeros((dirs, 2 * width), dtype=work) if bias is None else bias.astype(work)
    wb, rb = bias[:, :width], bias[:, width:]
    weights: dict[str, Any] = {"r": xp.swapaxes(r.astype(work), 1, 2)}
    if config.linear_before_reset:
        weights["rb_h"] = rb[:, None, 2 * size :]
        rb = xp.concatenate([rb[:, : 2 * size], xp.zeros_like(rb[:, 2 * size :])], axis=1)
    peepholes = inputs.get("P")
    if peepholes is not None:
        p = peepholes.astype(work)
        weights["p"] = [p[:, None, k * size : (k + 1) * size] for k in range(3)]

    lengths = inputs.get("sequence_lens")
    if lengths is not None:
        lengths = lengths.astype(np.int64)
        if lengths.shape != (batch,) or bool(xp.any(lengths < 0)) or bool(xp.any(lengths > steps)):
            raise ValueError(f"sequence_lens must hold {batch} values in [0, {steps}], got {lengths}")

    projection = xp.matmul(x.astype(work).reshape(1, steps * batch, -1), xp.swapaxes(w.astype(work), 1, 2))
    projection = (projection + (wb + rb)[:, None, :]).reshape(dirs, steps, batch, width)
    order = _step_order(xp, config, steps, batch, lengths)
    direction_index, batch_index = xp.arange(dirs)[:, None], xp.arange(batch)[None, :]

    h = _initial_state(xp, inputs.get("initial_h"), (dirs, batch, size), config.layout, work, "initial_h")
    c = _initial_state(xp, inputs.get("initial_c"), (dirs, batch, size), config.layout, work, "initial_c")
    want_y = outputs[0]
    y = xp.zeros((steps, dirs, batch, size), dtype=work) if want_y else None
    last = steps if lengths is None else int(xp.max(lengths)) if batch else 0
    for s in range(last):
        times = order[:, s]
        gx = projection[direction_index, times, batch_index]
        h_next, c_next = step(xp, config, gx, h, c, weights)
        if lengths is None:
            h, c = h_next, c_next
        else:
            valid = (s < lengths)[None, :, None]
            h, c = xp.where(valid, h_next, h), xp.where(valid, c_next, c)
            h_next = xp.where(valid, h_next, 0)
        if want_y:
            y[times, direction_index, batch_index] = h_next

    if lengths is not None:  # as in onnxruntime, empty sequences end in a zero state
        started = (lengths > 0)[None, :, None]
        h, c = xp.where(started, h, 0), xp.where(started, c, 0)
    dtype = inputs["X"].dtype
    results: list[Any] = []
    if want_y:
        y = xp.transpose(y, (2, 0, 1, 3)) if config.layout else y
        results.append(xp.ascontiguousarray(y).astype(dtype, copy=False))
    else:
        results.append(None)
    for state in (h, c):
        results.append(xp.ascontiguousarray(xp.swapaxes(state, 0, 1) if config.layout else state).astype(dtype))
    return results


_INPUT_NAMES = ("X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P")


def _recurrent_kernel(ctx: KernelContext, gates: int, defaults: list[str], step: Step) -> KernelRun:
    xp = ctx.xp
    config = _config(ctx, gates, defaults)
    count = ctx.num_outputs
    wanted = tuple(i < count and bool(ctx.node.outputs[i]) for i in range(3))

    def run(*values: Any) -> list[Any]:
        inputs = dict(zip(_INPUT_NAMES, values))
        return _run_recurrent(xp, config, step, wanted, inputs)[:count]

    return run


@KERNELS.register("RNN", since=(1, 7, 14, 22))
def rnn(ctx: KernelContext) -> KernelRun:
    """Elman RNN: ``H = f(X W^T + H R^T + Wb + Rb)``."""
    return _recurrent_kernel(ctx, 1, ["Tanh"], _rnn_step)


@KERNELS.register("GRU", since=(1, 3, 7, 14, 22))
def gru(ctx: KernelContext) -> KernelRun:
    """GRU with gates z, r, h; ``linear_before_reset`` applies R_h before the reset gate."""
    if ctx.opset < 3 and ctx.has_attr("linear_before_reset"):
        raise ctx.fail("linear_before_reset exists from opset 3")
    return _recurrent_kernel(ctx, 3, ["Sigmoid", "Tanh"], _gru_step)


@KERNELS.register("LSTM", since=(1, 7, 14, 22))
def lstm(ctx: KernelContext) -> KernelRun:
    """LSTM with gates i, o, f, c, optional peepholes and coupled input/forget gates."""
    return _recurrent_kernel(ctx, 4, ["Sigmoid", "Tanh", "Tanh"], _lstm_step)
