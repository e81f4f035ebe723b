"""Element types: numpy mapping and type strings, against onnx's own table."""

from __future__ import annotations

import numpy as np
import pytest

from ronn.dtypes import DataType, from_numpy, parse_type_string, to_numpy, type_string

onnx = pytest.importorskip("onnx")


@pytest.mark.parametrize("code", [c for c in DataType if c not in (DataType.UNDEFINED,)])
def test_numpy_dtype_matches_onnx(code: DataType) -> None:
    expected = onnx.helper.tensor_dtype_to_np_dtype(int(code))
    assert to_numpy(code) == np.dtype(expected)
    assert from_numpy(to_numpy(code)) == code


def test_type_strings_are_onnxruntimes() -> None:
    assert type_string(DataType.FLOAT) == "tensor(float)"
    assert type_string(DataType.INT64) == "tensor(int64)"
    assert type_string(DataType.DOUBLE) == "tensor(double)"
    assert type_string(DataType.FLOAT16) == "tensor(float16)"
    assert parse_type_string("tensor(bool)") == DataType.BOOL


def test_strings_and_unknown_types() -> None:
    assert from_numpy(np.array(["a"]).dtype) == DataType.STRING
    with pytest.raises(TypeError, match="no ONNX element type"):
        from_numpy(np.dtype([("a", "i4")]))
