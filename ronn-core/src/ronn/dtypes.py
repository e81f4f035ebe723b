"""Element types: every ONNX tensor type, its numpy dtype and its onnxruntime type string.

Narrow float and integer types (bfloat16, float8, float4, int4, int2 ...) come from
``ml_dtypes``; strings are numpy ``object`` arrays of ``str``, as onnxruntime returns them.
"""

from __future__ import annotations

import enum
from functools import lru_cache

import ml_dtypes
import numpy as np


class DataType(enum.IntEnum):
    """ONNX ``TensorProto.DataType`` codes."""

    UNDEFINED = 0
    FLOAT = 1
    UINT8 = 2
    INT8 = 3
    UINT16 = 4
    INT16 = 5
    INT32 = 6
    INT64 = 7
    STRING = 8
    BOOL = 9
    FLOAT16 = 10
    DOUBLE = 11
    UINT32 = 12
    UINT64 = 13
    COMPLEX64 = 14
    COMPLEX128 = 15
    BFLOAT16 = 16
    FLOAT8E4M3FN = 17
    FLOAT8E4M3FNUZ = 18
    FLOAT8E5M2 = 19
    FLOAT8E5M2FNUZ = 20
    UINT4 = 21
    INT4 = 22
    FLOAT4E2M1 = 23
    FLOAT8E8M0 = 24
    UINT2 = 25
    INT2 = 26
    FLOAT6E2M3 = 27
    FLOAT6E3M2 = 28

    @property
    def np_dtype(self) -> np.dtype:
        """The numpy dtype that holds this type."""
        return to_numpy(self)

    @property
    def type_string(self) -> str:
        """onnxruntime's element name, as in ``tensor(float)``."""
        return _TYPE_STRINGS[self]


_NUMPY: dict[DataType, np.dtype] = {
    DataType.FLOAT: np.dtype(np.float32),
    DataType.UINT8: np.dtype(np.uint8),
    DataType.INT8: np.dtype(np.int8),
    DataType.UINT16: np.dtype(np.uint16),
    DataType.INT16: np.dtype(np.int16),
    DataType.INT32: np.dtype(np.int32),
    DataType.INT64: np.dtype(np.int64),
    DataType.STRING: np.dtype(object),
    DataType.BOOL: np.dtype(np.bool_),
    DataType.FLOAT16: np.dtype(np.float16),
    DataType.DOUBLE: np.dtype(np.float64),
    DataType.UINT32: np.dtype(np.uint32),
    DataType.UINT64: np.dtype(np.uint64),
    DataType.COMPLEX64: np.dtype(np.complex64),
    DataType.COMPLEX128: np.dtype(np.complex128),
    DataType.BFLOAT16: np.dtype(ml_dtypes.bfloat16),
    DataType.FLOAT8E4M3FN: np.dtype(ml_dtypes.float8_e4m3fn),
    DataType.FLOAT8E4M3FNUZ: np.dtype(ml_dtypes.float8_e4m3fnuz),
    DataType.FLOAT8E5M2: np.dtype(ml_dtypes.float8_e5m2),
    DataType.FLOAT8E5M2FNUZ: np.dtype(ml_dtypes.float8_e5m2fnuz),
    DataType.UINT4: np.dtype(ml_dtypes.uint4),
    DataType.INT4: np.dtype(ml_dtypes.int4),
    DataType.FLOAT4E2M1: np.dtype(ml_dtypes.float4_e2m1fn),
    DataType.FLOAT8E8M0: np.dtype(ml_dtypes.float8_e8m0fnu),
    DataType.UINT2: np.dtype(ml_dtypes.uint2),
    DataType.INT2: np.dtype(ml_dtypes.int2),
    DataType.FLOAT6E2M3: np.dtype(ml_dtypes.float6_e2m3fn),
    DataType.FLOAT6E3M2: np.dtype(ml_dtypes.float6_e3m2fn),
}

_TYPE_STRINGS: dict[DataType, str] = {
    DataType.UNDEFINED: "undefined",
    DataType.FLOAT: "float",
    DataType.UINT8: "uint8",
    DataType.INT8: "int8",
    DataType.UINT16: "uint16",
    DataType.INT16: "int16",
    DataType.INT32: "int32",
    DataType.INT64: "int64",
    DataType.STRING: "string",
    DataType.BOOL: "bool",
    DataType.FLOAT16: "float16",
    DataType.DOUBLE: "double",
    DataType.UINT32: "uint32",
    DataType.UINT64: "uint64",
    DataType.COMPLEX64: "complex64",
    DataType.COMPLEX128: "complex128",
    DataType.BFLOAT16: "bfloat16",
    DataType.FLOAT8E4M3FN: "float8e4m3fn",
    DataType.FLOAT8E4M3FNUZ: "float8e4m3fnuz",
    DataType.FLOAT8E5M2: "float8e5m2",
    DataType.FLOAT8E5M2FNUZ: "float8e5m2fnuz",
    DataType.UINT4: "uint4",
    DataType.INT4: "int4",
    DataType.FLOAT4E2M1: "float4e2m1",
    DataType.FLOAT8E8M0: "float8e8m0",
    DataType.UINT2: "uint2",
    DataType.INT2: "int2",
    DataType.FLOAT6E2M3: "float6e2m3",
    DataType.FLOAT6E3M2: "float6e3m2",
}

_FROM_NUMPY: dict[np.dtype, DataType] = {v: k for k, v in _NUMPY.items()}

#: Types whose numpy form is an ``ml_dtypes`` extension type.
EXTENSION_TYPES = frozenset(
    t for t, d in _NUMPY.items() if d.type.__module__.startswith("ml_dtypes")
)


#: numpy dtypes of the four float8 types with sign, exponent and mantissa (e4m3fn, e4m3fnuz,
#: e5m2, e5m2fnuz; not the exponent-only e8m0)
FLOAT8_DTYPES = frozenset(
    _NUMPY[t]
    for t in (DataType.FLOAT8E4M3FN, DataType.FLOAT8E4M3FNUZ, DataType.FLOAT8E5M2, DataType.FLOAT8E5M2FNUZ)
)


def to_numpy(dtype: DataType | int) -> np.dtype:
    """The numpy dtype for an ONNX type code."""
    try:
        return _NUMPY[DataType(dtype)]
    except (KeyError, ValueError):
        raise TypeError(f"ONNX element type {dtype!r} has no numpy equivalent") from None


def from_numpy(dtype: np.dtype | type) -> DataType:
    """The ONNX type code of a numpy dtype (``str`` and ``bytes`` arrays are strings)."""
    dt = np.dtype(dtype)
    if dt.kind in "USO":
        return DataType.STRING
    try:
        return _FROM_NUMPY[dt]
    except KeyError:
        raise TypeError(f"numpy dtype {dt} has no ONNX element type") from None


@lru_cache(maxsize=None)
def type_string(dtype: DataType | int) -> str:
    """onnxruntime's type string of a tensor of this type, e.g. ``tensor(float)``."""
    return f"tensor({DataType(dtype).type_string})"


def parse_type_string(text: str) -> DataType:
    """Inverse of :func:`type_string` for tensor types (``tensor(float)`` -> FLOAT)."""
    inner = text.strip()
    if inner.startswith("tensor(") and inner.endswith(")"):
        inner = inner[len("tensor(") : -1]
    for dt, name in _TYPE_STRINGS.items():
        if name == inner:
            return dt
    raise TypeError(f"unknown tensor type string {text!r}")


def is_float(dtype: DataType) -> bool:
    """Whether the type is a floating-point type (any width)."""
    return dtype in _FLOATS


_FLOATS = frozenset(
    {
        DataType.FLOAT,
        DataType.DOUBLE,
        DataType.FLOAT16,
        DataType.BFLOAT16,
        DataType.FLOAT8E4M3FN,
        DataType.FLOAT8E4M3FNUZ,
        DataType.FLOAT8E5M2,
        DataType.FLOAT8E5M2FNUZ,
        DataType.FLOAT4E2M1,
        DataType.FLOAT8E8M0,
        DataType.FLOAT6E2M3,
        DataType.FLOAT6E3M2,
    }
)
