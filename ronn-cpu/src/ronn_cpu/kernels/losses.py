"""Loss functions and the ``ai.onnx.preview.training`` optimizers.

NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss pick, for each sample of a
``(N, C, d1, ..., dk)`` input, the entry of the class its ``(N, d1, ..., dk)`` target names,
optionally weighted per class; targets equal to ``ignore_index`` contribute nothing, neither
to the loss nor to the denominator of the ``mean`` reduction. 16-bit floats are computed in
float32 and rounded once at the end.

Adagrad, Adam and Momentum take ``R`` (learning rate) and ``T`` (update count), then the
optimized tensors, their gradients and their accumulators as groups of equal length, and
update each tensor independently (the element-wise rules make the spec's "concatenated view"
of several tensors the same thing).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import ml_dtypes
import numpy as np

from ronn.kernel import KernelContext, KernelRun, KernelTable

KERNELS = KernelTable()

TRAINING = "ai.onnx.preview.training"
REDUCTIONS = ("none", "sum", "mean")
_HALF_FLOATS = (np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16))


# --------------------------------------------------------------------------- losses


def _reduction(ctx: KernelContext) -> str:
    """The node's ``reduction`` attribute, validated."""
    reduction = ctx.attr("reduction", "mean")
    if reduction not in REDUCTIONS:
        raise ctx.fail(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def _ignore_index(ctx: KernelContext) -> int | None:
    """The node's ``ignore_index`` attribute, ``None`` when absent."""
    return int(ctx.attr("ignore_index")) if ctx.has_attr("ignore_index") else None


def _compute_dtype(dtype: np.dtype) -> np.dtype:
    """float32 for 16-bit floats, the type itself otherwise."""
    return np.dtype(np.float32) if dtype in _HALF_FLOATS else dtype


def _check_shapes(scores: Any, target: Any, weight: Any) -> None:
    """Raise unless ``scores`` is (N, C, d...), ``target`` (N, d...) and ``weight`` (C,)."""
    if scores.ndim < 2:
        raise ValueError(f"the input must be at least 2-D (N, C, ...), got shape {scores.shape}")
    expected = scores.shape[:1] + scores.shape[2:]
    if tuple(target.shape) != expected:
        raise ValueError(f"target shape {target.shape} does not match input shape {scores.shape}")
    if weight is not None and tuple(weight.shape) != scores.shape[1:2]:
        raise ValueError(f"weight shape {weight.shape} must be ({scores.shape[1]},)")


def _class_indices(xp: Any, target: Any, classes: int, ignore_index: int | None) -> tuple[Any, Any]:
    """Safe gather indices (ignored samples point at class 0) and the mask of ignored samples."""
    ignored = None if ignore_index is None else target == ignore_index
    valid_range = (target >= 0) & (target < classes)
    if ignored is not None:
        valid_range |= ignored
    if not bool(xp.all(valid_range)):
        bad = target[~valid_range].ravel()[0]
        raise ValueError(f"target value {int(bad)} is outside the class range [0, {classes})")
    indices = target.astype(np.int64) if ignored is None else xp.where(ignored, 0, target).astype(np.int64)
    return indices, ignored


def _negative_log_likelihood(
    xp: Any,
    log_prob: Any,
    target: Any,
    weight: Any,
    reduction: str,
    ignore_index: int | None,
) -> Any:
    """The (reduced) loss from log-probabilities in the compute type."""
    indices, ignored = _class_indices(xp, target, log_prob.shape[1], ignore_index)
    picked = xp.take_along_axis(log_prob, xp.expand_dims(indices, 1), axis=1)
    loss = -xp.squeeze(picked, axis=1)
    if weight is not None:
        sample_weight = xp.take(weight.astype(log_prob.dtype), indices)
        if ignored is not None:
            sample_weight = xp.where(ignored, log_prob.dtype.type(0), sample_weight)
        loss = loss * sample_weight
    elif ignored is not None:
        sample_weight = (~ignored).astype(log_prob.dtype)
        loss = xp.where(ignored, log_prob.dtype.type(0), loss)
    else:
        sample_weight = None
    if reduction == "none":
        return loss
    total = xp.sum(loss)
    if reduction == "sum":
        return total
    denominator = xp.sum(sample_weight) if sample_weight is not None else loss.size
    with np.errstate(invalid="ignore", divide="ignore"):  # every sample ignored: NaN
        return total / denominator


def _log_softmax(xp: Any, scores: Any) -> Any:
    """log(softmax(scores)) along the class axis 1, stable."""
    shifted = scores - xp.max(scores, axis=1, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))


@KERNELS.register("NegativeLogLikelihoodLoss", since=(12, 13, 22))
def negative_log_likelihood_loss(ctx: KernelContext) -> KernelRun:
    """loss = -input[n, target[n, d...], d...] * weight[target], then reduced."""
    xp = ctx.xp
    reduction = _reduction(ctx)
    ignore_index = _ignore_index(ctx)

    def run(scores, target, weight=None):
        _check_shapes(scores, target, weight)
        compute = _compute_dtype(scores.dtype)
        loss = _negative_log_likelihood(
            xp, scores.astype(compute, copy=False), target, weight, reduction, ignore_index
        )
        return (xp.asarray(loss).astype(scores.dtype),)

    return run


@KERNELS.register("SoftmaxCrossEntropyLoss", since=(12, 13))
def softmax_cross_entropy_loss(ctx: KernelContext) -> KernelRun:
    """NegativeLogLikelihoodLoss of LogSoftmax over axis 1; optionally the log-probabilities."""
    xp = ctx.xp
    reduction = _reduction(ctx)
    ignore_index = _ignore_index(ctx)
    want_log_prob = ctx.num_outputs > 1

    def run(scores, labels, weight=None):
        _check_shapes(scores, labels, weight)
        compute = _compute_dtype(scores.dtype)
        with np.errstate(invalid="ignore", over="ignore"):
            log_prob = _log_softmax(xp, scores.astype(compute, copy=False))
        loss = _negative_log_likelihood(xp, log_prob, labels, weight, reduction, ignore_index)
        loss = xp.asarray(loss).astype(scores.dtype)
        if want_log_prob:
            return loss, log_prob.astype(scores.dtype, copy=False)
        return (loss,)

    return run


# --------------------------------------------------------------------------- optimizers

#: update(r, t, tensors of one group) -> the group's new tensors
Update = Callable[[Any, Any, Sequence[Any]], Sequence[Any]]


def _optimizer(ctx: KernelContext, name: str, state_count: int, update: Update) -> KernelRun:
    """A kernel running ``update`` for each (X, G, state...) group of the node's inputs.

    Inputs are ``R, T, X_1..X_n, G_1..G_n`` then ``state_count`` groups of ``n``; outputs are
    ``X_new_1..n`` then the new state groups.
    """
    groups = 2 + state_count
    tensors = ctx.num_inputs - 2
    if tensors <= 0 or tensors % groups:
        raise ctx.fail(f"{name} takes R, T and {groups} groups of equally many tensors, got {ctx.num_inputs} inputs")
    count = tensors // groups
    if ctx.num_outputs != count * (groups - 1):
        raise ctx.fail(f"{name} optimizing {count} tensor(s) has {count * (groups - 1)} outputs, got {ctx.num_outputs}")

    def run(r, t, *values):
        r = r.reshape(())
        t = t.reshape(())
        results: list[list[Any]] = [[] for _ in range(groups - 1)]
        for i in range(count):
            group = [values[k * count + i] for k in range(groups)]
            x = group[0]
            if any(v.shape != x.shape for v in group[1:]):
                shapes = ", ".join(str(v.shape) for v in group)
                raise ValueError(f"{name}: tensor {i} and its gradient/state differ in shape: {shapes}")
            for k, new in enumerate(update(r, t, group)):
                results[k].append(new.astype(group[0 if k == 0 else k + 1].dtype, copy=False))
        return [value for kind in results for value in kind]

    return run


@KERNELS.register("Adagrad", since=1, domain=TRAINING)
def adagrad(ctx: KernelContext) -> KernelRun:
    """X_new = X - r * G' / (sqrt(H + G'^2) + epsilon), r = R / (1 + T * decay_factor)."""
    xp = ctx.xp
    norm = float(ctx.attr("norm_coefficient", 0.0))
    epsilon = float(ctx.attr("epsilon", 1e-6))
    decay = float(ctx.attr("decay_factor", 0.0))

    def update(r, t, group):
        x, g, h = group
        rate = (r / (1 + t * decay)).astype(x.dtype)
        g_reg = norm * x + g
        h_new = h + g_reg * g_reg
        return x - rate * g_reg / (xp.sqrt(h_new) + epsilon), h_new

    return _optimizer(ctx, "Adagrad", 1, update)


@KERNELS.register("Adam", since=1, domain=TRAINING)
def adam(ctx: KernelContext) -> KernelRun:
    """Adam with optional bias correction (T > 0), L2 term and post-update decay."""
    xp = ctx.xp
    alpha = float(ctx.attr("alpha", 0.9))
    beta = float(ctx.attr("beta", 0.999))
    epsilon = float(ctx.attr("epsilon", 1e-6))
    norm = float(ctx.attr("norm_coefficient", 0.0))
    norm_post = float(ctx.attr("norm_coefficient_post", 0.0))

    def update(r, t, group):
        x, g, v, h = group
        g_reg = norm * x + g
        v_new = alpha * v + (1 - alpha) * g_reg
        h_new = beta * h + (1 - beta) * (g_reg * g_reg)
        steps = t.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):  # the T == 0 branch is unused
            corrected = r * xp.sqrt(1 - beta**steps) / (1 - alpha**steps)
        rate = xp.where(t > 0, corrected, r).astype(x.dtype)
        x_new = x - rate * (v_new / (xp.sqrt(h_new) + epsilon))
        return (1 - norm_post) * x_new, v_new, h_new

    return _optimizer(ctx, "Adam", 2, update)


@KERNELS.register("Momentum", since=1, domain=TRAINING)
def momentum(ctx: KernelContext) -> KernelRun:
    """SGD with standard or Nesterov momentum; the gradient's scale is 1 at T == 0."""
    xp = ctx.xp
    alpha = float(ctx.attr("alpha"))
    beta = float(ctx.attr("beta"))
    norm = float(ctx.attr("norm_coefficient"))
    mode = ctx.attr("mode")
    if mode not in ("standard", "nesterov"):
        raise ctx.fail(f"mode must be 'standard' or 'nesterov', got {mode!r}")
    nesterov = mode == "nesterov"

    def update(r, t, group):
        x, g, v = group
        rate = r.astype(x.dtype)
        scale = xp.where(t > 0, beta, 1.0).astype(x.dtype)
        g_reg = norm * x + g
        v_new = alpha * v + scale * g_reg
        step = g_reg + alpha * v_new if nesterov else v_new
        return x - rate * step, v_new

    return _optimizer(ctx, "Momentum", 1, update)
