"""Support vector machines (``ai.onnx.ml`` opset 1): SVMClassifier and SVMRegressor.

With support vectors (libsvm models) the classifier runs one-vs-one: each pair of classes
votes, and with ``prob_a``/``prob_b`` the pairwise Platt probabilities are coupled into class
probabilities (Wu, Lin and Weng's method, as libsvm and onnxruntime do, in float32). Without
support vectors (liblinear models) the coefficients hold one row per class.
Kernel values and decision sums are computed in float64; scores come out as float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ronn.kernel import KernelContext, KernelRun

from ._ml_common import (
    apply_post_transform,
    batch_matrix,
    class_labels,
    expand_binary,
    floats_attr,
    ints_attr,
    logistic,
    post_transform_attr,
    probit,
)
from .ml import KERNELS

_KERNELS = ("LINEAR", "POLY", "RBF", "SIGMOID")


@dataclass(frozen=True)
class _Kernel:
    """A kernel function with its parameters (``kernel_params``: gamma, coef0, degree)."""

    kind: str
    gamma: float = 0.0
    coef0: float = 0.0
    degree: float = 0.0

    def __call__(self, x: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        """[N, V] kernel values between the rows of ``x`` and the support vectors."""
        dot = x @ vectors.T
        if self.kind == "LINEAR":
            return dot
        if self.kind == "RBF":
            squared = (x * x).sum(axis=1)[:, None] + (vectors * vectors).sum(axis=1)[None, :] - 2 * dot
            return np.exp(-self.gamma * np.maximum(squared, 0))
        scaled = self.gamma * dot + self.coef0
        if self.kind == "POLY":
            return scaled**self.degree
        return np.tanh(scaled)


def _kernel(ctx: KernelContext) -> _Kernel:
    kind = ctx.attr("kernel_type", "LINEAR")
    if kind not in _KERNELS:
        raise ctx.fail(f"kernel_type must be one of {', '.join(_KERNELS)}, got {kind!r}")
    params = ctx.attr("kernel_params", None) or []
    if params and len(params) != 3:
        raise ctx.fail(f"kernel_params must hold gamma, coef0 and degree, got {len(params)} values")
    if not params:
        return _Kernel(kind)
    return _Kernel(kind, float(np.float32(params[0])), float(np.float32(params[1])), float(np.float32(params[2])))


def _inputs(x: Any, features: int, op: str) -> np.ndarray:
    x = batch_matrix(x, op).astype(np.float64)
    if x.shape[1] != features:
        raise ValueError(f"{op}: the model expects {features} features, the input has {x.shape[1]}")
    return x


# --- SVMClassifier ------------------------------------------------------------------------


def _couple_probabilities(pairwise: np.ndarray) -> np.ndarray:
    """Class probabilities [N, K] from pairwise probabilities r[n, i, j] = P(i | i or j).

    The fixed-point iteration of libsvm's ``multiclass_probability``, run on every row at
    once in float32; a row stops when its error drops below 0.005 / K (at most 100 rounds).
    """
    rows, k = pairwise.shape[0], pairwise.shape[1]
    r = pairwise.astype(np.float32)
    q = -r.transpose(0, 2, 1) * r
    diagonal = (r * r).sum(axis=1) - np.einsum("nii->ni", r * r)
    idx = np.arange(k)
    q[:, idx, idx] = diagonal
    p = np.full((rows, k), 1 / k, dtype=np.float32)
    eps = np.float32(0.005 / k)
    active = np.arange(rows)
    for _ in range(100):
        if active.size == 0:
            break
        qa, pa = q[active], p[active]
        qp = np.einsum("nij,nj->ni", qa, pa)
        pqp = (pa * qp).sum(axis=1)
        going = np.abs(qp - pqp[:, None]).max(axis=1) >= eps
        active, qa, pa, qp, pqp = active[going], qa[going], pa[going], qp[going], pqp[going]
        for t in range(k):
            qtt = qa[:, t, t]
            diff = (pqp - qp[:, t]) / qtt
            pa[:, t] += diff
            grow = 1 + diff
            pqp = (pqp + diff * (diff * qtt + 2 * qp[:, t])) / grow / grow
            qp = (qp + diff[:, None] * qa[:, t, :]) / grow[:, None]
            pa /= grow[:, None]
        p[active] = pa
    return p


@KERNELS.register("SVMClassifier", since=1)
def svm_classifier(ctx: KernelContext) -> KernelRun:
    """Labels and scores of a libsvm (one-vs-one) or liblinear (one row per class) model."""
    labels = class_labels(ctx, "classlabels_ints", "classlabels_strings")
    if labels is None:
        raise ctx.fail("set classlabels_ints or classlabels_strings")
    classes = len(labels)
    coefficients = floats_attr(ctx, "coefficients")
    rho = floats_attr(ctx, "rho")
    if coefficients is None or coefficients.size == 0 or rho is None or rho.size == 0:
        raise ctx.fail("needs coefficients and rho")
    prob_a = floats_attr(ctx, "prob_a")
    prob_b = floats_attr(ctx, "prob_b")
    prob_a = np.zeros(0, np.float32) if prob_a is None else prob_a
    prob_b = np.zeros(0, np.float32) if prob_b is None else prob_b
    if prob_a.size != prob_b.size:
        raise ctx.fail("prob_a and prob_b must have the same length")
    per_class = ints_attr(ctx, "vectors_per_class")
    per_class = np.zeros(0, np.int64) if per_class is None else per_class
    post = post_transform_attr(ctx)
    all_positive = bool((coefficients >= 0).all())
    vector_count = int(per_class.sum())
    if vector_count > 0:
        return _svc_classifier(ctx, labels, coefficients, rho, prob_a, prob_b, per_class, post)
    if coefficients.size % classes:
        raise ctx.fail(f"{coefficients.size} coefficients for {classes} classes")
    weights = coefficients.astype(np.float64).reshape(classes, -1)
    have_proba = prob_a.size > 0

    def run(x: Any) -> tuple[np.ndarray, np.ndarray]:
        x = _inputs(x, weights.shape[1], "SVMClassifier")
        scores = (x @ weights.T + float(rho[0])).astype(np.float32)
        best = np.argmax(scores, axis=1)
        if classes == 2 and not have_proba:
            top = scores[np.arange(len(best)), best]
            positive = (top >= 0.5) if all_positive else (top > 0)
            best = np.where(positive, 1, best)
        if classes == 1:
            return labels[best], (probit(scores) if post == "PROBIT" else scores)
        return labels[best], apply_post_transform(scores, post)

    return run


def _svc_classifier(
    ctx: KernelContext,
    labels: np.ndarray,
    coefficients: np.ndarray,
    rho: np.ndarray,
    prob_a: np.ndarray,
    prob_b: np.ndarray,
    per_class: np.ndarray,
    post: str,
) -> KernelRun:
    """The one-vs-one classifier over support vectors."""
    classes = len(labels)
    if per_class.size != classes:
        raise ctx.fail(f"vectors_per_class has {per_class.size} entries for {classes} classes")
    vector_count = int(per_class.sum())
    pairs = [(i, j) for i in range(classes) for j in range(i + 1, classes)]
    if coefficients.size < (classes - 1) * vector_count:
        raise ctx.fail(f"{coefficients.size} coefficients, expected {(classes - 1) * vector_count}")
    if rho.size < len(pairs) or (prob_a.size and prob_a.size < len(pairs)):
        raise ctx.fail(f"rho (and prob_a/prob_b) need one value per pair of classes ({len(pairs)})")
    vectors = floats_attr(ctx, "support_vectors")
    if vectors is None or vectors.size % vector_count:
        raise ctx.fail(f"support_vectors does not hold {vector_count} vectors")
    vectors = vectors.astype(np.float64).reshape(vector_count, -1)
    dual = coefficients[: (classes - 1) * vector_count].astype(np.float64).reshape(classes - 1, vector_count)
    starts = np.concatenate([[0], np.cumsum(per_class)])
    kernel = _kernel(ctx)
    have_proba = prob_a.size > 0

    def decisions(kernels: np.ndarray) -> np.ndarray:
        """[N, pairs] decision values of each pair of classes."""
        out = np.empty((kernels.shape[0], len(pairs)), dtype=np.float64)
        for index, (i, j) in enumerate(pairs):
            block_i = slice(starts[i], starts[i + 1])
            block_j = slice(starts[j], starts[j + 1])
            out[:, index] = kernels[:, block_i] @ dual[j - 1, block_i] + kernels[:, block_j] @ dual[i, block_j]
        return out + rho[: len(pairs)].astype(np.float64)

    def votes_of(values: np.ndarray) -> np.ndarray:
        votes = np.zeros((values.shape[0], classes), dtype=np.int64)
        for index, (i, j) in enumerate(pairs):
            positive = values[:, index] > 0
            votes[:, i] += positive
            votes[:, j] += ~positive
        return votes

    def probabilities(values: np.ndarray) -> np.ndarray:
        scores = values.astype(np.float32)
        pairwise = np.zeros((scores.shape[0], classes, classes), dtype=np.float32)
        for index, (i, j) in enumerate(pairs):
            platt = 1 - logistic(scores[:, index] * prob_a[index] + prob_b[index])
            platt = np.clip(platt, np.float32(1e-7), np.float32(1 - 1e-7))
            pairwise[:, i, j] = platt
            pairwise[:, j, i] = 1 - platt
        return _couple_probabilities(pairwise)

    def run(x: Any) -> tuple[np.ndarray, np.ndarray]:
        x = _inputs(x, vectors.shape[1], "SVMClassifier")
        values = decisions(kernel(x, vectors))
        label = labels[np.argmax(votes_of(values), axis=1)]
        if have_proba:
            return label, apply_post_transform(probabilities(values), post)
        scores = values.astype(np.float32)
        if len(pairs) > 1:
            return label, apply_post_transform(scores, post)
        # one pair: onnxruntime writes [-s, s] without a transform, else [1 - s, s]
        return label, expand_binary(scores, "opposite" if post == "NONE" else "complement", post)

    return run


# --- SVMRegressor -------------------------------------------------------------------------


@KERNELS.register("SVMRegressor", since=1)
def svm_regressor(ctx: KernelContext) -> KernelRun:
    """A [N, 1] regression (or the +1/-1 decision of a one-class SVM)."""
    coefficients = floats_attr(ctx, "coefficients")
    rho = floats_attr(ctx, "rho")
    if coefficients is None or coefficients.size == 0 or rho is None or rho.size == 0:
        raise ctx.fail("needs coefficients and rho")
    supports = int(ctx.attr("n_supports", 0))
    one_class = bool(ctx.attr("one_class", 0))
    post = post_transform_attr(ctx)
    bias = float(rho[0])
    if supports > 0:
        vectors = floats_attr(ctx, "support_vectors")
        if vectors is None or vectors.size % supports:
            raise ctx.fail(f"support_vectors does not hold {supports} vectors")
        if coefficients.size < supports:
            raise ctx.fail(f"{coefficients.size} coefficients for {supports} support vectors")
        vectors = vectors.astype(np.float64).reshape(supports, -1)
        dual = coefficients[:supports].astype(np.float64)
        kernel = _kernel(ctx)
    else:
        vectors = coefficients.astype(np.float64).reshape(1, -1)
        dual = np.ones(1)
        kernel = _Kernel("LINEAR")

    def run(x: Any) -> tuple[np.ndarray]:
        x = _inputs(x, vectors.shape[1], "SVMRegressor")
        values = (kernel(x, vectors) @ dual + bias)[:, None]
        if one_class:
            return (np.where(values > 0, 1, -1).astype(np.float32),)
        scores = values.astype(np.float32)
        return (probit(scores) if post == "PROBIT" else scores,)

    return run
