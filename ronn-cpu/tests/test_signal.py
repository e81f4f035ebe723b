"""DFT, STFT, the window functions and MelWeightMatrix beyond the node suite.

Checked against onnxruntime: both DFT versions with every kind of axis, real and complex
inputs, onesided/inverse combinations and dft_length padding or truncation; STFT with and
without window/frame_length; the windows in several output types; mel filterbanks.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper

from onnx.reference import ReferenceEvaluator

import ronn


def _model(node: onnx.NodeProto, feeds: dict[str, np.ndarray], opset: int, out_type: int) -> bytes:
    inputs = [
        helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype), value.shape)
        for name, value in feeds.items()
    ]
    outputs = [helper.make_tensor_value_info(node.output[0], out_type, None)]
    graph = helper.make_graph([node], "g", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model.SerializeToString()


def _run_both(node: onnx.NodeProto, feeds: dict[str, np.ndarray], opset: int, out_type: int):
    model = _model(node, feeds, opset, out_type)
    expected = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    actual = ronn.InferenceSession(model).run(None, feeds)[0]
    return expected, actual


def _compare(
    node: onnx.NodeProto,
    feeds: dict[str, np.ndarray],
    opset: int,
    out_type: int,
    tol: float = 1e-4,
    reference: bool = False,
) -> None:
    """ronn against onnxruntime (or onnx's reference evaluator where onnxruntime deviates)."""
    if reference:
        model = _model(node, feeds, opset, out_type)
        expected = ReferenceEvaluator(onnx.load_from_string(model)).run(None, feeds)[0]
        actual = ronn.InferenceSession(model).run(None, feeds)[0]
    else:
        expected, actual = _run_both(node, feeds, opset, out_type)
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    np.testing.assert_allclose(actual.astype(np.float64), expected.astype(np.float64), rtol=tol, atol=tol)


def _signal(shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)


# --- DFT -----------------------------------------------------------------------------------

DFT_MODES = [(0, 0), (0, 1), (1, 0), (1, 1)]  # (inverse, onesided)


def _irfft_resized(inverse: int, onesided: int, length: int | None) -> bool:
    """An IRFFT with an explicit dft_length: onnxruntime's differs from onnx (numpy.fft.irfft)."""
    return bool(inverse and onesided and length is not None)


#: (inverse, onesided, components): onesided forward takes real input, onesided inverse complex
DFT_INPUTS = [(0, 0, 1), (0, 0, 2), (0, 1, 1), (1, 0, 1), (1, 0, 2), (1, 1, 2)]


@pytest.mark.parametrize(("inverse", "onesided", "components"), DFT_INPUTS)
@pytest.mark.parametrize("axis", [0, 1, 2, -2, -3, -4])
def test_dft_20_axes(inverse: int, onesided: int, axis: int, components: int) -> None:
    x = _signal((3, 4, 6, components))
    feeds = {"x": x, "axis": np.array(axis, dtype=np.int64)}
    node = helper.make_node("DFT", ["x", "", "axis"], ["y"], inverse=inverse, onesided=onesided)
    _compare(node, feeds, 20, TensorProto.FLOAT)


@pytest.mark.parametrize(("inverse", "onesided"), DFT_MODES)
@pytest.mark.parametrize("length", [3, 6, 8, 11])
@pytest.mark.parametrize("axis", [1, 2])
def test_dft_20_lengths(inverse: int, onesided: int, length: int, axis: int) -> None:
    components = 2 if inverse else 1
    x = _signal((2, 6, 5, components), np.float64)
    feeds = {"x": x, "n": np.array(length, dtype=np.int32), "axis": np.array(axis, dtype=np.int64)}
    node = helper.make_node("DFT", ["x", "n", "axis"], ["y"], inverse=inverse, onesided=onesided)
    _compare(node, feeds, 20, TensorProto.DOUBLE, 1e-6, reference=_irfft_resized(inverse, onesided, length))


@pytest.mark.parametrize(("inverse", "onesided"), DFT_MODES)
@pytest.mark.parametrize("axis", [None, 1, 2, -2])
@pytest.mark.parametrize("length", [None, 4, 9])
def test_dft_17(inverse: int, onesided: int, axis: int | None, length: int | None) -> None:
    components = 2 if inverse else 1
    x = _signal((2, 6, 5, components))
    feeds = {"x": x}
    inputs = ["x"]
    if length is not None:
        feeds["n"] = np.array(length, dtype=np.int64)
        inputs.append("n")
    attrs = {} if axis is None else {"axis": axis}
    node = helper.make_node("DFT", inputs, ["y"], inverse=inverse, onesided=onesided, **attrs)
    _compare(node, feeds, 17, TensorProto.FLOAT, reference=_irfft_resized(inverse, onesided, length))


def test_dft_default_axis_is_last_signal_axis_from_opset_20() -> None:
    x = _signal((2, 3, 5, 2))
    node = helper.make_node("DFT", ["x"], ["y"])
    model = _model(node, {"x": x}, 20, TensorProto.FLOAT)
    actual = ronn.InferenceSession(model).run(None, {"x": x})[0]
    spectrum = np.fft.fft(x[..., 0] + 1j * x[..., 1], axis=2)
    np.testing.assert_allclose(actual[..., 0] + 1j * actual[..., 1], spectrum, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16])
def test_dft_half_precision(dtype: type) -> None:
    x = _signal((2, 8, 1))
    node = helper.make_node("DFT", ["x"], ["y"], onesided=1)
    half = x.astype(dtype)
    model = _model(node, {"x": half}, 20, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))
    actual = ronn.InferenceSession(model).run(None, {"x": half})[0]
    assert actual.dtype == np.dtype(dtype) and actual.shape == (2, 5, 2)
    spectrum = np.fft.rfft(half.astype(np.float32)[..., 0], axis=1)
    np.testing.assert_allclose(actual[..., 0].astype(np.float32), spectrum.real, atol=0.05)
    np.testing.assert_allclose(actual[..., 1].astype(np.float32), spectrum.imag, atol=0.05)


def test_dft_rejects_complex_axis() -> None:
    x = _signal((2, 4, 2))
    feeds = {"x": x, "axis": np.array(-1, dtype=np.int64)}
    model = _model(helper.make_node("DFT", ["x", "", "axis"], ["y"]), feeds, 20, TensorProto.FLOAT)
    with pytest.raises(Exception, match="axis"):
        ronn.InferenceSession(model).run(None, feeds)


# --- STFT ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("onesided", "components"), [(0, 1), (0, 2), (1, 1)])
@pytest.mark.parametrize(("step", "frame", "with_window", "with_length"), [
    (4, 16, True, False),
    (3, 10, True, True),
    (5, 12, False, True),
    (7, 64, False, False),
])
def test_stft(onesided: int, components: int, step: int, frame: int, with_window: bool, with_length: bool) -> None:
    feeds = {"signal": _signal((2, 64, components)), "step": np.array(step, dtype=np.int64)}
    inputs = ["signal", "step", "", ""]
    if with_window:
        feeds["window"] = np.hanning(frame).astype(np.float32)
        inputs[2] = "window"
    if with_length:
        feeds["length"] = np.array(frame, dtype=np.int64)
        inputs[3] = "length"
    while not inputs[-1]:
        inputs.pop()
    node = helper.make_node("STFT", inputs, ["y"], onesided=onesided)
    # onnxruntime fails without both window and frame_length
    _compare(node, feeds, 17, TensorProto.FLOAT, reference=not (with_window or with_length))


def test_stft_float64() -> None:
    feeds = {"signal": _signal((1, 40, 1), np.float64), "step": np.array(8, dtype=np.int32),
             "window": np.hamming(16)}
    node = helper.make_node("STFT", ["signal", "step", "window"], ["y"])
    _compare(node, feeds, 17, TensorProto.DOUBLE, 1e-6)


# --- windows and mel -----------------------------------------------------------------------

WINDOW_TYPES = [TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.INT32, TensorProto.INT64, TensorProto.UINT8]


@pytest.mark.parametrize("op", ["HannWindow", "HammingWindow", "BlackmanWindow"])
@pytest.mark.parametrize("periodic", [0, 1])
@pytest.mark.parametrize("size", [2, 7, 16])
@pytest.mark.parametrize("out_type", WINDOW_TYPES)
def test_windows(op: str, periodic: int, size: int, out_type: int) -> None:
    feeds = {"size": np.array(size, dtype=np.int32)}
    node = helper.make_node(op, ["size"], ["y"], periodic=periodic, output_datatype=out_type)
    _compare(node, feeds, 17, out_type, 1e-6)


@pytest.mark.parametrize("op", ["HannWindow", "HammingWindow", "BlackmanWindow"])
def test_window_half_precision(op: str) -> None:
    feeds = {"size": np.array(10, dtype=np.int64)}
    full = helper.make_node(op, ["size"], ["y"])
    half = helper.make_node(op, ["size"], ["y"], output_datatype=TensorProto.FLOAT16)
    expected = ronn.InferenceSession(_model(full, feeds, 17, TensorProto.FLOAT)).run(None, feeds)[0]
    actual = ronn.InferenceSession(_model(half, feeds, 17, TensorProto.FLOAT16)).run(None, feeds)[0]
    assert actual.dtype == np.float16
    np.testing.assert_allclose(actual.astype(np.float32), expected, atol=1e-3)


def test_window_rejects_bad_output_type() -> None:
    node = helper.make_node("HannWindow", ["size"], ["y"], output_datatype=TensorProto.BOOL)
    with pytest.raises(Exception, match="output_datatype"):
        ronn.InferenceSession(_model(node, {"size": np.array(4, dtype=np.int64)}, 17, TensorProto.BOOL))


@pytest.mark.parametrize(("bins", "length", "rate", "low", "high"), [
    (8, 16, 8000, 0.0, 4000.0),
    (10, 64, 16000, 20.0, 8000.0),
    (40, 512, 16000, 125.0, 7600.0),
    (3, 9, 100, 5.0, 40.0),
])
@pytest.mark.parametrize("out_type", [TensorProto.FLOAT, TensorProto.DOUBLE])
def test_mel_weight_matrix(bins: int, length: int, rate: int, low: float, high: float, out_type: int) -> None:
    feeds = {
        "bins": np.array(bins, dtype=np.int64),
        "length": np.array(length, dtype=np.int64),
        "rate": np.array(rate, dtype=np.int64),
        "low": np.array(low, dtype=np.float32),
        "high": np.array(high, dtype=np.float32),
    }
    node = helper.make_node("MelWeightMatrix", list(feeds), ["y"], output_datatype=out_type)
    _compare(node, feeds, 17, out_type, 1e-6)
