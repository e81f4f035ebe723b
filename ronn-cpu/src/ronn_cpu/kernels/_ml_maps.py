"""Maps and label encodings (``ai.onnx.ml``): ZipMap, LabelEncoder (opsets 1, 2 and 4),
CategoryMapper and DictVectorizer.

Numeric keys are looked up with a binary search over the sorted keys; string keys through a
dict, once per distinct input string.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ronn.ir import TensorType
from ronn.kernel import KernelContext, KernelRun

from ._ml_common import class_labels, floats_attr, ints_attr, is_string_array, string_array, strings_attr
from .ml import KERNELS

Lookup = Callable[[np.ndarray], np.ndarray]


# --- ZipMap -------------------------------------------------------------------------------


@KERNELS.register("ZipMap", since=1)
def zip_map(ctx: KernelContext) -> KernelRun:
    """One dict per row of a [N, C] (or [C]) float tensor: class label -> score.

    Keys are Python ``int`` (``classlabels_int64s``) or ``str`` (``classlabels_strings``),
    values Python ``float``, as onnxruntime returns them.
    """
    labels = class_labels(ctx, "classlabels_int64s", "classlabels_strings")
    if labels is None:
        raise ctx.fail("set classlabels_int64s or classlabels_strings")
    keys = [str(k) for k in labels] if labels.dtype == object else [int(k) for k in labels]

    def run(x: Any) -> tuple[list[dict[Any, float]]]:
        x = np.asarray(x)
        if x.ndim == 1:
            x = x.reshape(1, -1)
        if x.ndim != 2:
            raise ValueError(f"ZipMap expects a [N, C] or [C] tensor, got shape {list(x.shape)}")
        if x.shape[1] != len(keys):
            raise ValueError(f"ZipMap: {x.shape[1]} columns for {len(keys)} class labels")
        return ([dict(zip(keys, row)) for row in x.astype(np.float64).tolist()],)

    return run


# --- lookups ------------------------------------------------------------------------------


def _string_lookup(keys: list[str], values: np.ndarray, default: Any) -> Lookup:
    """Map string tensors through ``keys -> values`` (the last of repeated keys wins)."""
    table = {key: i for i, key in enumerate(keys)}
    padded = np.concatenate([values, np.asarray([default], dtype=values.dtype)])

    def lookup(x: np.ndarray) -> np.ndarray:
        if not is_string_array(x):
            raise TypeError(f"expected a string tensor, got {x.dtype}")
        if x.size == 0:
            return np.empty(x.shape, dtype=values.dtype)
        distinct, inverse = np.unique(x.reshape(-1).astype(object), return_inverse=True)
        where = np.asarray([table.get(str(s), len(keys)) for s in distinct], dtype=np.int64)
        return padded[where[inverse]].reshape(x.shape)

    return lookup


def _numeric_lookup(keys: np.ndarray, values: np.ndarray, default: Any) -> Lookup:
    """Map numeric tensors through ``keys -> values``; a NaN key matches every NaN input."""
    keys = np.asarray(keys)
    nan_keys = np.isnan(keys) if keys.dtype.kind == "f" else np.zeros(keys.shape, bool)
    nan_value = values[np.flatnonzero(nan_keys)[-1]] if nan_keys.any() else None
    keys, values = keys[~nan_keys], values[~nan_keys]
    # the last of repeated keys wins: keep each key's first position in the reversed order
    distinct, first = np.unique(keys[::-1], return_index=True)
    distinct_values = values[::-1][first]
    default_array = np.asarray(default, dtype=values.dtype)

    def lookup(x: np.ndarray) -> np.ndarray:
        if is_string_array(x) or x.dtype == np.bool_:
            raise TypeError(f"expected a numeric tensor, got {x.dtype}")
        if distinct.size:
            probe = x.astype(distinct.dtype, copy=False)
            where = np.clip(np.searchsorted(distinct, probe), 0, distinct.size - 1)
            result = np.where(distinct[where] == probe, distinct_values[where], default_array)
        else:
            result = np.full(x.shape, default_array, dtype=values.dtype)
        if nan_value is not None and x.dtype.kind == "f":
            result = np.where(np.isnan(x), nan_value, result)
        return np.asarray(result, dtype=values.dtype)

    return lookup


def _lookup(keys: Any, values: np.ndarray, default: Any) -> Lookup:
    if isinstance(keys, list):
        return _string_lookup(keys, values, default)
    return _numeric_lookup(keys, values, default)


# --- LabelEncoder -------------------------------------------------------------------------


def _label_encoder_v1(ctx: KernelContext) -> KernelRun:
    """Strings to their index in ``classes_strings``, or indices to strings."""
    classes = strings_attr(ctx, "classes_strings") or []
    to_index = _string_lookup(classes, np.arange(len(classes), dtype=np.int64), int(ctx.attr("default_int64", -1)))
    to_string = _numeric_lookup(
        np.arange(len(classes), dtype=np.int64), string_array(classes), str(ctx.attr("default_string", "_Unused"))
    )

    def run(x: Any) -> tuple[np.ndarray]:
        x = np.asarray(x)
        return (to_index(x) if is_string_array(x) else to_string(x),)

    return run


def _tensor_attr(ctx: KernelContext, name: str) -> np.ndarray | None:
    value = ctx.attr(name, None)
    return None if value is None else np.asarray(value).reshape(-1)


def _encoder_keys(ctx: KernelContext) -> Any:
    """The keys: a list of ``str`` or a numeric array."""
    found = []
    strings = strings_attr(ctx, "keys_strings")
    if strings:
        found.append(strings)
    ints = ints_attr(ctx, "keys_int64s")
    if ints is not None and ints.size:
        found.append(ints)
    floats = floats_attr(ctx, "keys_floats")
    if floats is not None and floats.size:
        found.append(floats)
    tensor = _tensor_attr(ctx, "keys_tensor") if ctx.opset >= 4 else None
    if tensor is not None:
        found.append([str(s) for s in tensor] if tensor.dtype == object else tensor)
    if len(found) != 1:
        raise ctx.fail("set exactly one keys_* attribute")
    return found[0]


def _encoder_values(ctx: KernelContext) -> tuple[np.ndarray, str]:
    """The values as an array, and their kind: ``string``, ``int`` or ``float``."""
    found: list[tuple[np.ndarray, str]] = []
    strings = strings_attr(ctx, "values_strings")
    if strings:
        found.append((string_array(strings), "string"))
    ints = ints_attr(ctx, "values_int64s")
    if ints is not None and ints.size:
        found.append((ints, "int"))
    floats = floats_attr(ctx, "values_floats")
    if floats is not None and floats.size:
        found.append((floats, "float"))
    tensor = _tensor_attr(ctx, "values_tensor") if ctx.opset >= 4 else None
    if tensor is not None:
        kind = "string" if tensor.dtype == object else ("float" if tensor.dtype.kind == "f" else "int")
        found.append((string_array(tensor) if kind == "string" else tensor, kind))
    if len(found) != 1:
        raise ctx.fail("set exactly one values_* attribute")
    return found[0]


def _encoder_default(ctx: KernelContext, values: np.ndarray, kind: str) -> Any:
    tensor = _tensor_attr(ctx, "default_tensor") if ctx.opset >= 4 else None
    if tensor is not None:
        if tensor.size != 1:
            raise ctx.fail(f"default_tensor must hold one value, holds {tensor.size}")
        return str(tensor[0]) if kind == "string" else tensor.astype(values.dtype)[0]
    if kind == "string":
        return str(ctx.attr("default_string", "_Unused"))
    if kind == "int":
        return int(ctx.attr("default_int64", -1))
    return float(ctx.attr("default_float", -0.0))


@KERNELS.register("LabelEncoder", since=(1, 2, 4))
def label_encoder(ctx: KernelContext) -> KernelRun:
    """Map each element through ``keys_* -> values_*``, unknown ones to the default."""
    if ctx.opset < 2:
        return _label_encoder_v1(ctx)
    keys = _encoder_keys(ctx)
    values, kind = _encoder_values(ctx)
    if len(keys) != len(values):
        raise ctx.fail(f"{len(keys)} keys but {len(values)} values")
    if ctx.opset < 4:  # the first of repeated keys wins before opset 4 (onnxruntime), the last after
        keys, values = keys[::-1], values[::-1]
    lookup = _lookup(keys, values, _encoder_default(ctx, values, kind))

    def run(x: Any) -> tuple[np.ndarray]:
        return (lookup(np.asarray(x)),)

    return run


# --- CategoryMapper -----------------------------------------------------------------------


@KERNELS.register("CategoryMapper", since=1)
def category_mapper(ctx: KernelContext) -> KernelRun:
    """Strings to int64 and int64 to strings through the parallel ``cats_*`` lists."""
    strings = strings_attr(ctx, "cats_strings") or []
    ints = ints_attr(ctx, "cats_int64s")
    ints = np.zeros(0, np.int64) if ints is None else ints
    if len(strings) != len(ints):
        raise ctx.fail(f"cats_strings has {len(strings)} entries, cats_int64s {len(ints)}")
    # the first of repeated keys wins in each direction
    to_int = _string_lookup(strings[::-1], ints[::-1], int(ctx.attr("default_int64", -1)))
    to_string = _numeric_lookup(ints[::-1], string_array(strings[::-1]), str(ctx.attr("default_string", "_Unused")))

    def run(x: Any) -> tuple[np.ndarray]:
        x = np.asarray(x)
        return (to_int(x) if is_string_array(x) else to_string(x),)

    return run


# --- DictVectorizer -----------------------------------------------------------------------


def _declared_dtype(ctx: KernelContext) -> np.dtype | None:
    declared = ctx.output_types[0] if ctx.output_types else None
    return declared.dtype.np_dtype if isinstance(declared, TensorType) else None


def _value_dtype(values: list[Any]) -> np.dtype:
    if any(isinstance(v, str) for v in values):
        return np.dtype(object)
    if values and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        return np.dtype(np.int64)
    return np.dtype(np.float32)


@KERNELS.register("DictVectorizer", since=1)
def dict_vectorizer(ctx: KernelContext) -> KernelRun:
    """A map's values laid out in vocabulary order, [1, V] (absent keys are 0 or "").

    A sequence of maps gives one row per map; keys outside the vocabulary are ignored.
    """
    strings = strings_attr(ctx, "string_vocabulary") or []
    ints = ints_attr(ctx, "int64_vocabulary")
    ints = [] if ints is None else [int(i) for i in ints]
    if bool(strings) == bool(ints):
        raise ctx.fail("set exactly one of string_vocabulary and int64_vocabulary")
    vocabulary: dict[Any, int] = {k: i for i, k in enumerate(strings or ints)}
    declared = _declared_dtype(ctx)

    def run(x: Any) -> tuple[np.ndarray]:
        maps = [x] if isinstance(x, dict) else list(x)
        if not all(isinstance(m, dict) for m in maps):
            raise TypeError("DictVectorizer expects a map (dict) or a sequence of maps")
        dtype = declared or _value_dtype([v for m in maps for v in m.values()])
        result = np.full((len(maps), len(vocabulary)), "" if dtype == object else 0, dtype=dtype)
        for row, mapping in enumerate(maps):
            for key, value in mapping.items():
                column = vocabulary.get(str(key) if strings else _int_key(key))
                if column is not None:
                    result[row, column] = value
        return (result,)

    return run


def _int_key(key: Any) -> Any:
    try:
        return int(key)
    except (TypeError, ValueError):
        return None


_CAST_MAP_TARGETS = {"TO_FLOAT": np.float32, "TO_INT64": np.int64, "TO_STRING": object}


@KERNELS.register("CastMap", since=1)
def cast_map(ctx: KernelContext) -> KernelRun:
    """A map int64 -> float or string as a [1, N] tensor, by ascending key (DENSE) or at
    position key of a [1, max_map] tensor (SPARSE). Strings format as C's ``%f`` does."""
    cast_to = ctx.attr("cast_to", "TO_FLOAT")
    form = ctx.attr("map_form", "DENSE")
    if cast_to not in _CAST_MAP_TARGETS:
        raise ctx.fail(f"cast_to must be one of {sorted(_CAST_MAP_TARGETS)}, got {cast_to!r}")
    if form not in ("DENSE", "SPARSE"):
        raise ctx.fail(f"map_form must be DENSE or SPARSE, got {form!r}")
    max_map = int(ctx.attr("max_map", 1))
    if form == "SPARSE" and max_map < 1:
        raise ctx.fail(f"max_map must be positive for SPARSE, got {max_map}")

    def as_floats(values: list[Any]) -> np.ndarray:
        try:
            return np.array([float(v) for v in values], dtype=np.float64)
        except ValueError as exc:
            raise ValueError(f"CastMap: a map value is not a number: {exc}") from None

    def run(mapping: dict[Any, Any]) -> tuple[np.ndarray]:
        keys = sorted(int(k) for k in mapping)
        values = as_floats([mapping[k] for k in keys])
        if form == "SPARSE":
            dense = np.zeros(max_map, dtype=np.float64)
            if keys and (keys[0] < 0 or keys[-1] >= max_map):
                raise ValueError(f"CastMap: key outside [0, max_map={max_map}): {keys[0] if keys[0] < 0 else keys[-1]}")
            dense[keys] = values
            values = dense
        if cast_to == "TO_STRING":
            out = np.array(["%f" % v for v in values], dtype=object)
        elif cast_to == "TO_INT64":
            out = np.trunc(values).astype(np.int64)
        else:
            out = values.astype(np.float32)
        return (out.reshape(1, -1),)

    return run
