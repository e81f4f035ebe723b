"""Linear models: LinearClassifier and LinearRegressor (``ai.onnx.ml`` opset 1).

Scores are ``X @ coefficients.T + intercepts`` in float32, as onnxruntime computes them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ronn.kernel import KernelContext, KernelRun

from ._ml_common import (
    apply_post_transform,
    batch_matrix,
    class_labels,
    floats_attr,
    expand_binary,
    pick_labels,
    post_transform_attr,
    transform_regression,
)
from .ml import KERNELS


def _linear_scores(
    x: Any, coefficients: np.ndarray, intercepts: np.ndarray | None, n_targets: int | None, op: str
) -> np.ndarray:
    """[N, targets] scores of a [N, C] (or [C]) input."""
    x = batch_matrix(x, op).astype(np.float32, copy=False)
    features = x.shape[1]
    targets = n_targets if n_targets is not None else (coefficients.size // features if features else 0)
    if targets * features != coefficients.size:
        raise ValueError(
            f"{op}: {coefficients.size} coefficients do not make {targets} target(s) of "
            f"{features} features (input shape {list(x.shape)})"
        )
    scores = x @ coefficients.reshape(targets, features).T
    if intercepts is not None:
        scores = scores + intercepts
    return scores.astype(np.float32, copy=False)


@KERNELS.register("LinearClassifier", since=1)
def linear_classifier(ctx: KernelContext) -> KernelRun:
    """Scores per class, and the label of the best one.

    With one score column and two labels the scores become ``[1 - s, s]`` and the label is
    ``labels[1]`` when ``s > 0``, onnxruntime's convention.
    """
    coefficients = floats_attr(ctx, "coefficients")
    if coefficients is None or coefficients.size == 0:
        raise ctx.fail("needs coefficients")
    intercepts = floats_attr(ctx, "intercepts")
    if intercepts is not None and intercepts.size == 0:
        intercepts = None
    labels = class_labels(ctx, "classlabels_ints", "classlabels_strings")
    n_targets = None if intercepts is None else intercepts.size
    post = post_transform_attr(ctx)
    strings = labels is not None and labels.dtype == object
    if labels is not None and len(labels) == 2:
        negative, positive = labels[0], labels[1]
    else:
        negative, positive = ("0", "1") if strings else (0, 1)

    def run(x: Any) -> tuple[np.ndarray, np.ndarray]:
        scores = _linear_scores(x, coefficients, intercepts, n_targets, "LinearClassifier")
        if scores.shape[1] == 1:
            label = np.where(scores[:, 0] > 0, positive, negative).astype(object if strings else np.int64)
            if labels is not None and len(labels) == 2:
                return label, expand_binary(scores, "complement", post)
            return label, transform_regression(scores, post)
        best = np.argmax(scores, axis=1)
        if labels is not None and len(labels) != scores.shape[1]:
            raise ValueError(f"LinearClassifier: {scores.shape[1]} score columns but {len(labels)} class labels")
        return pick_labels(labels, best), apply_post_transform(scores, post)

    return run


@KERNELS.register("LinearRegressor", since=1)
def linear_regressor(ctx: KernelContext) -> KernelRun:
    """``targets`` regression outputs per row."""
    coefficients = floats_attr(ctx, "coefficients")
    if coefficients is None or coefficients.size == 0:
        raise ctx.fail("needs coefficients")
    intercepts = floats_attr(ctx, "intercepts")
    if intercepts is not None and intercepts.size == 0:
        intercepts = None
    targets = int(ctx.attr("targets", 1))
    if targets < 1:
        raise ctx.fail(f"targets must be positive, got {targets}")
    if intercepts is not None and intercepts.size not in (1, targets):
        raise ctx.fail(f"{intercepts.size} intercepts for {targets} target(s)")
    post = post_transform_attr(ctx)

    def run(x: Any) -> tuple[np.ndarray]:
        scores = _linear_scores(x, coefficients, intercepts, targets, "LinearRegressor")
        return (transform_regression(scores, post),)

    return run
