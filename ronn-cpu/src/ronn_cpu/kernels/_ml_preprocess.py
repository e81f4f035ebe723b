"""Feature preprocessing (``ai.onnx.ml`` opset 1): Normalizer, Scaler, Binarizer, Imputer,
OneHotEncoder, ArrayFeatureExtractor and FeatureVectorizer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ronn.kernel import KernelContext, KernelRun

from ._ml_common import floats_attr, ints_attr, is_string_array, strings_attr
from .ml import KERNELS

_NORMS = ("MAX", "L1", "L2")


def _numeric(x: Any, op: str) -> np.ndarray:
    x = np.asarray(x)
    if is_string_array(x) or x.dtype == np.bool_:
        raise TypeError(f"{op} expects a numeric tensor, got {x.dtype}")
    return x


@KERNELS.register("Normalizer", since=1)
def normalizer(ctx: KernelContext) -> KernelRun:
    """Divide by the max, the L1 norm or the L2 norm along axis 1 (axis 0 of a 1-D input);
    a zero divisor leaves the values unchanged."""
    norm = ctx.attr("norm", "MAX")
    if norm not in _NORMS:
        raise ctx.fail(f"norm must be MAX, L1 or L2, got {norm!r}")

    def run(x: Any) -> tuple[np.ndarray]:
        x = _numeric(x, "Normalizer")
        if x.ndim == 0:
            raise ValueError("Normalizer expects at least a 1-D tensor")
        axis = 0 if x.ndim == 1 else 1
        values = x.astype(np.float32)
        if norm == "MAX":
            divisor = values.max(axis=axis, keepdims=True) if values.shape[axis] else np.zeros((), np.float32)
            result = values / np.where(divisor != 0, divisor, 1)
        elif norm == "L1":
            divisor = np.abs(values).sum(axis=axis, keepdims=True)
            result = values / np.where(divisor != 0, divisor, 1)
        else:
            squares = (x.astype(np.float64) ** 2).astype(np.float32)
            divisor = squares.sum(axis=axis, keepdims=True)
            magnitude = np.sqrt(squares / np.where(divisor != 0, divisor, 1))
            result = np.where(divisor != 0, np.where(values < 0, -magnitude, magnitude), values)
        return (result.astype(np.float32, copy=False),)

    return run


def _per_feature(values: np.ndarray, x: np.ndarray, name: str, op: str) -> np.ndarray:
    """An attribute of one value or one per feature (the last axis), ready to broadcast."""
    features = x.shape[-1] if x.ndim else 1
    if values.size not in (1, features):
        raise ValueError(f"{op}: {name} has {values.size} values for {features} features")
    return values


@KERNELS.register("Scaler", since=1)
def scaler(ctx: KernelContext) -> KernelRun:
    """``(X - offset) * scale`` per feature, in float32."""
    offset = floats_attr(ctx, "offset")
    scale = floats_attr(ctx, "scale")
    offset = np.zeros(1, np.float32) if offset is None or offset.size == 0 else offset.astype(np.float32)
    scale = np.ones(1, np.float32) if scale is None or scale.size == 0 else scale.astype(np.float32)

    def run(x: Any) -> tuple[np.ndarray]:
        x = _numeric(x, "Scaler").astype(np.float32)
        shift = _per_feature(offset, x, "offset", "Scaler")
        factor = _per_feature(scale, x, "scale", "Scaler")
        return (((x - shift) * factor).astype(np.float32, copy=False),)

    return run


@KERNELS.register("Binarizer", since=1)
def binarizer(ctx: KernelContext) -> KernelRun:
    """1 where ``X > threshold``, else 0, in the input's type (NaN stays NaN)."""
    threshold = float(ctx.attr("threshold", 0.0))

    def run(x: Any) -> tuple[np.ndarray]:
        x = _numeric(x, "Binarizer")
        result = (x > threshold).astype(x.dtype)
        if x.dtype.kind == "f":
            result = np.where(np.isnan(x), x, result)
        return (result,)

    return run


@KERNELS.register("Imputer", since=1)
def imputer(ctx: KernelContext) -> KernelRun:
    """Replace ``replaced_value_*`` (NaN included) by the imputed value of the feature."""
    float_values = floats_attr(ctx, "imputed_value_floats")
    int_values = ints_attr(ctx, "imputed_value_int64s")
    has_floats = float_values is not None and float_values.size > 0
    has_ints = int_values is not None and int_values.size > 0
    if has_floats == has_ints:
        raise ctx.fail("set exactly one of imputed_value_floats and imputed_value_int64s")
    replaced_float = float(ctx.attr("replaced_value_float", 0.0))
    replaced_int = int(ctx.attr("replaced_value_int64", 0))

    def run(x: Any) -> tuple[np.ndarray]:
        x = _numeric(x, "Imputer")
        if x.dtype.kind == "f":
            if not has_floats:
                raise TypeError(f"Imputer: a {x.dtype} input needs imputed_value_floats")
            imputed = _per_feature(float_values, x, "imputed_value_floats", "Imputer").astype(x.dtype)
            missing = np.isnan(x) if np.isnan(replaced_float) else x == x.dtype.type(replaced_float)
        else:
            if not has_ints:
                raise TypeError(f"Imputer: a {x.dtype} input needs imputed_value_int64s")
            imputed = _per_feature(int_values, x, "imputed_value_int64s", "Imputer").astype(x.dtype)
            missing = x == replaced_int
        return (np.where(missing, imputed, x).astype(x.dtype, copy=False),)

    return run


@KERNELS.register("OneHotEncoder", since=1)
def one_hot_encoder(ctx: KernelContext) -> KernelRun:
    """A one-hot float vector per element over the categories (a new last axis).

    Numeric inputs are truncated to int64 and looked up in ``cats_int64s``; an unknown
    category gives a row of zeros, or an error when ``zeros`` is 0.
    """
    cat_strings = strings_attr(ctx, "cats_strings") or []
    cat_ints = ints_attr(ctx, "cats_int64s")
    cat_ints = np.zeros(0, np.int64) if cat_ints is None else cat_ints
    if bool(cat_strings) == bool(cat_ints.size):
        raise ctx.fail("set exactly one of cats_strings and cats_int64s")
    allow_unknown = bool(ctx.attr("zeros", 1))
    string_index = {s: i for i, s in enumerate(cat_strings)}
    order = np.argsort(cat_ints, kind="stable")
    sorted_ints = cat_ints[order]

    def positions(x: np.ndarray) -> np.ndarray:
        """Each element's category index, -1 when unknown."""
        if is_string_array(x):
            if not cat_strings:
                raise TypeError("OneHotEncoder: a string input needs cats_strings")
            flat = [string_index.get(str(v), -1) for v in x.reshape(-1)]
            return np.asarray(flat, dtype=np.int64).reshape(x.shape)
        if not cat_ints.size:
            raise TypeError("OneHotEncoder: a numeric input needs cats_int64s")
        keys = x.astype(np.int64)
        where = np.clip(np.searchsorted(sorted_ints, keys), 0, sorted_ints.size - 1)
        return np.where(sorted_ints[where] == keys, order[where], -1)

    def run(x: Any) -> tuple[np.ndarray]:
        x = np.asarray(x)
        index = positions(x)
        if not allow_unknown and (index < 0).any():
            raise ValueError("OneHotEncoder: unknown category and zeros=0")
        count = len(cat_strings) or cat_ints.size
        return ((index[..., None] == np.arange(count)).astype(np.float32),)

    return run


@KERNELS.register("ArrayFeatureExtractor", since=1)
def array_feature_extractor(ctx: KernelContext) -> KernelRun:
    """``X[..., indices]``; a 1-D input gives a [1, len(indices)] output."""

    def run(x: Any, indices: Any) -> tuple[np.ndarray]:
        x = np.asarray(x)
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if x.ndim == 0:
            raise ValueError("ArrayFeatureExtractor expects at least a 1-D input")
        size = x.shape[-1]
        if indices.size == 0:
            raise ValueError("ArrayFeatureExtractor: the indices are empty")
        if ((indices < 0) | (indices >= size)).any():
            raise ValueError(f"ArrayFeatureExtractor: indices {indices.tolist()} out of range [0, {size})")
        result = np.take(x, indices, axis=-1)
        if x.ndim == 1:
            result = result.reshape(1, -1)
        return (result,)

    return run


@KERNELS.register("FeatureVectorizer", since=1)
def feature_vectorizer(ctx: KernelContext) -> KernelRun:
    """Concatenate the inputs' features as float32, each cut or zero-padded to its
    ``inputdimensions`` entry."""
    dims = ints_attr(ctx, "inputdimensions")
    dims = np.zeros(0, np.int64) if dims is None else dims
    if len(dims) != ctx.num_inputs:
        raise ctx.fail(f"inputdimensions has {len(dims)} entries for {ctx.num_inputs} inputs")

    def run(*inputs: Any) -> tuple[np.ndarray]:
        blocks = []
        rows = None
        for x, width in zip(inputs, dims):
            x = _numeric(x, "FeatureVectorizer")
            x = x.reshape(1, -1) if x.ndim <= 1 else x.reshape(x.shape[0], -1)
            if rows is None:
                rows = x.shape[0]
            elif x.shape[0] != rows:
                raise ValueError(f"FeatureVectorizer: inputs have {rows} and {x.shape[0]} rows")
            block = np.zeros((rows, int(width)), np.float32)
            keep = min(int(width), x.shape[1])
            block[:, :keep] = x[:, :keep]
            blocks.append(block)
        if not blocks:
            return (np.zeros((1, 0), np.float32),)
        return (np.concatenate(blocks, axis=1),)

    return run
