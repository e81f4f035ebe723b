"""Element type conversion for Cast, CastLike, BitCast and the quantization kernels.

Numeric conversions follow numpy/ml_dtypes (C-style truncation for float -> int, wrap-around
for int -> narrower int) with ONNX's rules on top: float 8 saturation, float8e8m0 rounding
modes, and strings parsed and formatted the way onnxruntime does (``%.8g``, ``NaN``,
``INF``, ``-INF``; ``strtod``/``strtoll``-style prefix parsing).
"""

from __future__ import annotations

import math
import re

import ml_dtypes
import numpy as np

from ronn.dtypes import FLOAT8_DTYPES, DataType, to_numpy

STRING = np.dtype(object)
BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
FLOAT8 = FLOAT8_DTYPES
E8M0 = np.dtype(ml_dtypes.float8_e8m0fnu)
#: float types numpy has no native arithmetic for (computed in float32, then rounded)
NARROW_FLOATS = FLOAT8 | {
    BFLOAT16,
    E8M0,
    np.dtype(ml_dtypes.float4_e2m1fn),
    np.dtype(ml_dtypes.float6_e2m3fn),
    np.dtype(ml_dtypes.float6_e3m2fn),
}
NARROW_INTS = frozenset(
    np.dtype(t) for t in (ml_dtypes.int4, ml_dtypes.uint4, ml_dtypes.int2, ml_dtypes.uint2)
)
_BIT_WIDTHS = {
    np.dtype(ml_dtypes.int4): 4,
    np.dtype(ml_dtypes.uint4): 4,
    np.dtype(ml_dtypes.float4_e2m1fn): 4,
    np.dtype(ml_dtypes.int2): 2,
    np.dtype(ml_dtypes.uint2): 2,
    np.dtype(ml_dtypes.float6_e2m3fn): 6,
    np.dtype(ml_dtypes.float6_e3m2fn): 6,
}


def is_floating(dtype: np.dtype) -> bool:
    """Whether ``dtype`` is a float type, numpy's own or an ml_dtypes one."""
    return dtype.kind == "f" or dtype in NARROW_FLOATS


def is_integer(dtype: np.dtype) -> bool:
    """Whether ``dtype`` is an integer type, the 2- and 4-bit ones included."""
    return dtype.kind in "iu" or dtype in NARROW_INTS


def is_signed(dtype: np.dtype) -> bool:
    """Whether an integer type is signed."""
    return dtype.kind == "i" or dtype in (np.dtype(ml_dtypes.int4), np.dtype(ml_dtypes.int2))


def integer_range(dtype: np.dtype) -> tuple[int, int]:
    """The smallest and largest value of an integer type."""
    info = ml_dtypes.iinfo(dtype) if dtype in NARROW_INTS else np.iinfo(dtype)
    return int(info.min), int(info.max)


def float_max(dtype: np.dtype) -> float:
    """The largest finite value of a float type."""
    return float(ml_dtypes.finfo(dtype).max)


def onnx_dtype(code: int | str) -> np.dtype:
    """The numpy dtype of an ONNX type code (or, for Cast-1, a type name such as ``"FLOAT"``)."""
    if isinstance(code, (bytes, str)):
        name = code.decode() if isinstance(code, bytes) else code
        try:
            code = DataType[name.upper()]
        except KeyError:
            raise ValueError(f"unknown element type name {name!r}") from None
    return to_numpy(int(code))


# --- numeric conversions ---------------------------------------------------------------


def _wide_float(x: np.ndarray) -> np.ndarray:
    """``x`` as float32, or float64 where float32 would lose range or precision."""
    if x.dtype in (np.float64, np.int64, np.uint64, np.int32, np.uint32):
        return x.astype(np.float64)
    return x.astype(np.float32)


def astype(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Plain conversion, routed through int64 or a wide float where ml_dtypes lacks a direct cast."""
    with np.errstate(all="ignore"):
        try:
            return x.astype(dtype)
        except TypeError:
            pass
        if is_integer(x.dtype) and is_integer(dtype):
            return x.astype(np.int64).astype(dtype)
        if x.dtype == np.bool_ or dtype == np.bool_:
            return x.astype(np.float32).astype(dtype)
        return _wide_float(x).astype(dtype)


def saturate_float8(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round to a float 8 type, clamping out-of-range values and infinities to its max."""
    limit = float_max(dtype)
    wide = _wide_float(x)
    with np.errstate(all="ignore"):
        return np.asarray(np.clip(wide, -limit, limit)).astype(dtype)


def to_e8m0(x: np.ndarray, saturate: bool, round_mode: str) -> np.ndarray:
    """float8e8m0 (a bare power-of-two exponent) from any numeric array.

    ``round_mode``: ``up`` (any fraction rounds up), ``down`` (truncate), ``nearest``
    (ties up). With ``saturate``, +inf and overflow give the largest value and zero, tiny
    and negative values the smallest; without it they give NaN. NaN stays NaN.
    """
    bits = _wide_float(x).astype(np.float32).view(np.uint32)
    exponent = ((bits >> 23) & 0xFF).astype(np.int32)
    fraction = bits & 0x7FFFFF
    negative = (bits >> 31).astype(bool)
    beyond_max = (exponent == 0xFE) & (fraction != 0) & ~negative  # above 2**127
    nan = (exponent == 0xFF) & (fraction != 0)
    inf = (exponent == 0xFF) & (fraction == 0) & ~negative
    if round_mode == "up":
        exponent = exponent + (fraction != 0)
    elif round_mode == "nearest":
        exponent = exponent + ((fraction & 0x400000) != 0)
    elif round_mode != "down":
        raise ValueError(f"unknown round_mode {round_mode!r}")
    finite = ~nan & ~inf
    below = (((bits & 0x7F800000) == 0) | negative) & ~nan  # zero, subnormal, negative
    above = inf | beyond_max | (finite & (exponent >= 0xFF))
    if saturate:
        code = np.clip(exponent, 0, 0xFE)
        code = np.where(below, 0, code)
        code = np.where(above, 0xFE, code)
    else:
        code = np.where(below | above, 0xFF, exponent)
    code = np.where(nan, 0xFF, code)
    return np.asarray(code, dtype=np.uint8).view(E8M0)


def cast_numeric(x: np.ndarray, dtype: np.dtype, saturate: bool = True, round_mode: str = "up") -> np.ndarray:
    """Convert between numeric (and bool) types with ONNX Cast semantics."""
    if dtype == E8M0 and x.dtype != E8M0:
        return to_e8m0(x, saturate, round_mode)
    if dtype in FLOAT8 and saturate and x.dtype != np.bool_:
        return saturate_float8(x, dtype)  # infinities saturate even when dtype is unchanged
    if x.dtype == dtype:
        return x.copy()
    return astype(x, dtype)


# --- strings -----------------------------------------------------------------------------

_FLOAT_PREFIX = re.compile(
    r"\s*([+-]?)(?:(inf(?:inity)?)|(nan(?:\([0-9a-z_]*\))?)"
    r"|(0x(?:[0-9a-f]+\.?[0-9a-f]*|\.[0-9a-f]+)(?:p[+-]?\d+)?)"
    r"|((?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?))",
    re.IGNORECASE,
)
_INT_PREFIX = re.compile(r"\s*([+-]?\d+)")
_U64 = 1 << 64
_DOUBLE_TINY = 2.2250738585072014e-308  # smallest normal double: strtod reports underflow below
_NONZERO_DIGIT = re.compile(r"[1-9]")


def _parse_float(text: str) -> float:
    """The double a C ``strtod`` reads from the start of ``text``; an error if none."""
    match = _FLOAT_PREFIX.match(text)
    if match is None:
        raise ValueError(f"cannot parse {text!r} as a floating-point number")
    sign, inf, nan, hexa, dec = match.groups()
    if inf:
        value = float("inf")
    elif nan:
        value = float("nan")
    elif hexa:
        value = float.fromhex(hexa if "p" in hexa.lower() else hexa + "p0")
    else:
        value = float(dec)
        mantissa = re.split("[eE]", dec)[0]
        if math.isinf(value) or (abs(value) < _DOUBLE_TINY and _NONZERO_DIGIT.search(mantissa)):
            raise ValueError(f"{text!r} is out of the range of double")
    return -value if sign == "-" else value


def _parse_int(text: str, unsigned: bool) -> int:
    """The integer a C ``strtoll``/``strtoull`` reads from the start of ``text``."""
    match = _INT_PREFIX.match(text)
    if match is None:
        raise ValueError(f"cannot parse {text!r} as an integer")
    value = int(match.group(1))
    if unsigned:
        if value >= _U64 or value <= -_U64:
            raise ValueError(f"{text!r} is out of the range of uint64")
        return value % _U64
    if not -(1 << 63) <= value < (1 << 63):
        raise ValueError(f"{text!r} is out of the range of int64")
    return value


def parse_strings(
    x: np.ndarray, dtype: np.dtype, saturate: bool = True, round_mode: str = "up"
) -> np.ndarray:
    """Strings to numbers: integers (and bool) parse as integers, everything else as floats."""
    flat = [v.decode() if isinstance(v, bytes) else str(v) for v in x.ravel()]
    if is_integer(dtype) or dtype == np.bool_:
        unsigned = dtype == np.bool_ or not is_signed(dtype)
        values = np.array(
            [_parse_int(s, unsigned) for s in flat], dtype=np.uint64 if unsigned else np.int64
        ).reshape(x.shape)
        return cast_numeric(values, dtype)
    values = np.array([_parse_float(s) for s in flat], dtype=np.float64).reshape(x.shape)
    if dtype != np.float64:
        values = values.astype(np.float32)
    return cast_numeric(values, dtype, saturate, round_mode)


def format_strings(x: np.ndarray) -> np.ndarray:
    """Numbers to strings: floats as ``%.8g`` (``NaN``, ``INF``, ``-INF``), bools as 1/0."""
    if x.dtype == STRING:
        return x.copy()
    if x.dtype == np.bool_:
        return np.where(x, "1", "0").astype(object)
    if is_integer(x.dtype):
        return astype(x, np.int64 if is_signed(x.dtype) else np.uint64).astype(str).astype(object)
    values = astype(x, np.float64)
    text = np.char.mod("%.8g", values) if values.size else values.astype(str)
    text = np.where(np.isnan(values), "NaN", text)
    text = np.where(np.isposinf(values), "INF", text)
    text = np.where(np.isneginf(values), "-INF", text)
    return text.astype(object).reshape(x.shape)


def cast(x: np.ndarray, dtype: np.dtype, saturate: bool = True, round_mode: str = "up") -> np.ndarray:
    """ONNX Cast of ``x`` to ``dtype`` (object dtype: strings)."""
    if dtype == STRING:
        return format_strings(x)
    if x.dtype.kind in "OUS":
        return parse_strings(x, dtype, saturate, round_mode)
    return cast_numeric(x, dtype, saturate, round_mode)


# --- bit reinterpretation ----------------------------------------------------------------


def bit_width(dtype: np.dtype) -> int:
    """How many bits an element of ``dtype`` occupies in ONNX."""
    return _BIT_WIDTHS.get(dtype, dtype.itemsize * 8)


def _raw_bits(x: np.ndarray, width: int) -> np.ndarray:
    """The low ``width`` bits of each element of a sub-byte type, as uint8."""
    if is_integer(x.dtype):
        return (x.astype(np.int8).view(np.uint8) & ((1 << width) - 1)).astype(np.uint8)
    return x.view(np.uint8) & np.uint8((1 << width) - 1)


def _from_raw_bits(bits: np.ndarray, dtype: np.dtype, width: int) -> np.ndarray:
    """Sub-byte values of ``dtype`` whose encodings are ``bits``."""
    if is_integer(dtype):
        values = bits.astype(np.int8)
        if is_signed(dtype):
            sign = 1 << (width - 1)
            values = (values ^ sign) - sign
        return values.astype(dtype)
    return bits.view(dtype)


def bitcast(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Reinterpret each element's bits as ``dtype`` (same width; little-endian)."""
    if x.dtype == STRING or dtype == STRING:
        raise TypeError("BitCast does not support strings")
    width = bit_width(x.dtype)
    if width != bit_width(dtype):
        raise TypeError(
            f"BitCast needs equal bit widths, got {x.dtype} ({width}) and {dtype} ({bit_width(dtype)})"
        )
    if width < 8:
        return _from_raw_bits(_raw_bits(x, width), dtype, width)
    source = x if x.dtype.byteorder in "=|<" else x.astype(x.dtype.newbyteorder("<"))
    if dtype == np.bool_:
        return source.view(np.uint8) != 0
    return np.array(source, order="C").view(dtype)
