"""Helpers shared by the ``ai.onnx.ml`` kernels: attribute readers, input reshaping and the
score transforms (``post_transform``) of the classifiers and regressors.

The transforms follow onnxruntime's formulas (its logistic, its erf-inverse approximation for
PROBIT, its SOFTMAX_ZERO) so scores agree with it to float precision.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ronn.kernel import KernelContext

POST_TRANSFORMS = ("NONE", "SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO", "PROBIT")


def ints_attr(ctx: KernelContext, name: str) -> np.ndarray | None:
    """An INTS attribute as an int64 array, ``None`` when absent."""
    value = ctx.attr(name, None)
    if value is None:
        return None
    return np.asarray(value, dtype=np.int64).reshape(-1)


def floats_attr(ctx: KernelContext, name: str) -> np.ndarray | None:
    """A FLOATS attribute, or its ``<name>_as_tensor`` twin (opset 3), as an array.

    FLOATS become float32; a tensor keeps its own float type (float64 thresholds and weights
    make the tree ensembles compute in double precision, like onnxruntime).
    """
    value = ctx.attr(name, None)
    tensor = ctx.attr(f"{name}_as_tensor", None)
    if value is not None and tensor is not None and len(value) and np.asarray(tensor).size:
        raise ctx.fail(f"set only one of {name!r} and {name + '_as_tensor'!r}")
    if tensor is not None and np.asarray(tensor).size:
        array = np.asarray(tensor).reshape(-1)
        return array if array.dtype == np.float64 else array.astype(np.float32)
    if value is None:
        return None
    return np.asarray(value, dtype=np.float32).reshape(-1)


def strings_attr(ctx: KernelContext, name: str) -> list[str] | None:
    """A STRINGS attribute as a list of ``str``, ``None`` when absent."""
    value = ctx.attr(name, None)
    return None if value is None else [str(v) for v in value]


def post_transform_attr(ctx: KernelContext) -> str:
    """The ``post_transform`` attribute, validated."""
    value = ctx.attr("post_transform", "NONE")
    if value not in POST_TRANSFORMS:
        raise ctx.fail(f"post_transform must be one of {', '.join(POST_TRANSFORMS)}, got {value!r}")
    return value


def class_labels(ctx: KernelContext, ints_name: str, strings_name: str) -> np.ndarray | None:
    """The class labels: an int64 array or an object array of ``str``, ``None`` when absent."""
    strings = strings_attr(ctx, strings_name)
    if strings:
        return string_array(strings)
    ints = ints_attr(ctx, ints_name)
    if ints is not None and ints.size:
        return ints
    return None


def string_array(values: Any, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """An object array of ``str`` (numpy would otherwise make fixed-width unicode)."""
    values = list(values)
    result = np.empty(len(values), dtype=object)
    result[:] = values
    return result if shape is None else result.reshape(shape)


def is_string_array(x: np.ndarray) -> bool:
    """Whether ``x`` holds strings (object or unicode dtype)."""
    return x.dtype == object or x.dtype.kind in "US"


def batch_matrix(x: Any, op: str) -> np.ndarray:
    """A [N, C] view of a classifier's or regressor's input ([C] counts as one row)."""
    x = np.asarray(x)
    if is_string_array(x) or x.dtype == np.bool_:
        raise TypeError(f"{op} expects a numeric tensor, got {x.dtype}")
    if x.ndim == 1:
        return x.reshape(1, -1)
    if x.ndim != 2:
        raise ValueError(f"{op} expects a [N, C] or [C] tensor, got shape {list(x.shape)}")
    return x


def as_compute_float(x: np.ndarray) -> np.ndarray:
    """Doubles stay double; every other numeric type computes in float32."""
    return x if x.dtype == np.float64 else x.astype(np.float32)


# --- score transforms ---------------------------------------------------------------------


def logistic(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), computed from |x| so it never overflows."""
    with np.errstate(over="ignore"):
        v = 1 / (1 + np.exp(-np.abs(x)))
    return np.where(x < 0, 1 - v, v).astype(x.dtype, copy=False)


def probit(x: np.ndarray) -> np.ndarray:
    """sqrt(2) * erfinv(2x - 1), with the closed-form erfinv approximation (a = 0.147) that
    onnxruntime and the onnx reference use, step by step in the input's precision like
    onnxruntime (near x = 0.5 the float32 rounding is visible)."""
    t = x.dtype.type
    y = t(2) * x - t(1)
    sign = np.where(y < 0, t(-1), t(1))
    with np.errstate(divide="ignore", invalid="ignore"):
        log = np.log((t(1) - y) * (t(1) + y))
        a = t(2) / (t(3.14159) * t(0.147)) + t(0.5) * log
        b = t(1) / t(0.147) * log
        erfinv = sign * np.sqrt(-a + np.sqrt(a * a - b))
    return (t(np.sqrt(2.0)) * erfinv).astype(x.dtype, copy=False)


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(x.dtype, copy=False)


def softmax_zero(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis that leaves (near-)zero scores at zero.

    Scores within 1e-7 of zero are scaled by exp(-max) instead of exponentiated and do not
    count in the sum, as onnxruntime does; a row of zeros stays zeros.
    """
    top = x.max(axis=-1, keepdims=True)
    nonzero = np.abs(x) > 1e-7
    with np.errstate(over="ignore"):
        e = np.where(nonzero, np.exp(x - top), x * np.exp(-top))
    total = np.where(nonzero, e, 0).sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        result = np.where(total != 0, e / np.where(total != 0, total, 1), e)
    return result.astype(x.dtype, copy=False)


def apply_post_transform(scores: np.ndarray, kind: str) -> np.ndarray:
    """``post_transform`` applied to every score of a [N, K] array (a new array)."""
    if kind == "LOGISTIC":
        return logistic(scores)
    if kind == "SOFTMAX":
        return softmax(scores)
    if kind == "SOFTMAX_ZERO":
        return softmax_zero(scores)
    if kind == "PROBIT":
        return probit(scores)
    return scores.copy()


def transform_regression(scores: np.ndarray, kind: str) -> np.ndarray:
    """A regressor's transform: with a single target only PROBIT applies (onnxruntime's rule);
    with several targets every transform applies."""
    if scores.shape[1] == 1:
        return probit(scores) if kind == "PROBIT" else scores.copy()
    return apply_post_transform(scores, kind)


def expand_binary(score: np.ndarray, kind: str, post: str) -> np.ndarray:
    """Two score columns from a binary classifier's single score ``s`` (a [N] array).

    ``kind`` is ``complement`` ([1 - s, s]) or ``opposite`` ([-s, s]); LOGISTIC gives
    [logistic(-s), logistic(s)] either way and PROBIT transforms both columns. Other
    transforms do not apply, as in onnxruntime.
    """
    score = score.reshape(-1)
    if post == "LOGISTIC":
        return np.stack([logistic(-score), logistic(score)], axis=1)
    pair = np.stack([1 - score if kind == "complement" else -score, score], axis=1)
    return probit(pair) if post == "PROBIT" else pair


def pick_labels(labels: np.ndarray | None, index: np.ndarray) -> np.ndarray:
    """``labels[index]`` as a label tensor (``index`` itself, as int64, without labels)."""
    if labels is None:
        return index.astype(np.int64)
    picked = labels[index]
    return picked if picked.dtype == object else picked.astype(np.int64)
