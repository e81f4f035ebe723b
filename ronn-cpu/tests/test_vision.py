"""Vision and text kernels beyond the node suite: GridSample, AffineGrid, RoiAlign, MaxRoiPool,
NonMaxSuppression, ImageDecoder, RotaryEmbedding, SwiGLU and TfIdfVectorizer.

Results are compared with onnxruntime where it implements the case, otherwise with onnx's
reference evaluator or an independent numpy computation.
"""

from __future__ import annotations

import io
import sys

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import ronn
from ronn.errors import InvalidGraphError, KernelError

FLOAT, DOUBLE, FLOAT16 = TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16
INT64, INT32, STRING, UINT8 = TensorProto.INT64, TensorProto.INT32, TensorProto.STRING, TensorProto.UINT8


def _model(op: str, inputs: list[tuple[str, int]], outputs: list[tuple[str, int]], opset: int,
           **attrs) -> onnx.ModelProto:
    node = helper.make_node(op, [n for n, _ in inputs], [n for n, _ in outputs], **attrs)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(name, dtype, None) for name, dtype in inputs],
        [helper.make_tensor_value_info(name, dtype, None) for name, dtype in outputs],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 10)
    return model


def _ronn(model: onnx.ModelProto, feeds: dict) -> list:
    return ronn.InferenceSession(model.SerializeToString()).run(None, feeds)


def _ort(model: onnx.ModelProto, feeds: dict) -> list:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, feeds)


def _same(got: list, want: list, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        w = np.asarray(w)
        assert isinstance(g, np.ndarray)
        assert g.dtype == w.dtype, (g.dtype, w.dtype)
        assert g.shape == w.shape, (g.shape, w.shape)
        np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), rtol=rtol, atol=atol)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --- GridSample ---------------------------------------------------------------------------

_TIES = np.array([-1, 1, 0, 0.5, -0.5, 0.25, -0.25, 1.25, -1.25, 0.75], np.float32)


def _grid_inputs(ndim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = _rng(seed)
    x_shape = (2, 3, 5, 4) if ndim == 2 else (2, 2, 4, 3, 5)
    g_shape = (2, 6, 7, 2) if ndim == 2 else (2, 3, 4, 5, 3)
    x = rng.standard_normal(x_shape).astype(np.float32)
    grid = rng.uniform(-1.7, 1.7, g_shape).astype(np.float32)
    grid.reshape(-1)[: _TIES.size] = _TIES  # exact ties for rounding, points on the borders
    return x, grid


@pytest.mark.parametrize("align_corners", [0, 1])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("mode", ["linear", "nearest", "cubic"])
def test_grid_sample_2d_matches_onnxruntime(mode: str, padding: str, align_corners: int) -> None:
    x, grid = _grid_inputs(2, seed=1)
    model = _model("GridSample", [("x", FLOAT), ("g", FLOAT)], [("y", FLOAT)], 20,
                   mode=mode, padding_mode=padding, align_corners=align_corners)
    _same(_ronn(model, {"x": x, "g": grid}), _ort(model, {"x": x, "g": grid}))


@pytest.mark.parametrize("align_corners", [0, 1])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("mode", ["linear", "nearest"])
def test_grid_sample_3d_matches_onnxruntime(mode: str, padding: str, align_corners: int) -> None:
    x, grid = _grid_inputs(3, seed=2)
    model = _model("GridSample", [("x", FLOAT), ("g", FLOAT)], [("y", FLOAT)], 20,
                   mode=mode, padding_mode=padding, align_corners=align_corners)
    _same(_ronn(model, {"x": x, "g": grid}), _ort(model, {"x": x, "g": grid}))


@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
def test_grid_sample_opset16_mode_names(mode: str) -> None:
    x, grid = _grid_inputs(2, seed=3)
    model = _model("GridSample", [("x", FLOAT), ("g", FLOAT)], [("y", FLOAT)], 16,
                   mode=mode, padding_mode="reflection")
    _same(_ronn(model, {"x": x, "g": grid}), _ort(model, {"x": x, "g": grid}))


def test_grid_sample_rejects_mode_names_of_other_opsets() -> None:
    for opset, mode in ((16, "linear"), (20, "bilinear")):
        model = _model("GridSample", [("x", FLOAT), ("g", FLOAT)], [("y", FLOAT)], opset, mode=mode)
        with pytest.raises(InvalidGraphError, match="mode"):
            ronn.InferenceSession(model.SerializeToString())


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_grid_sample_dtypes(dtype) -> None:
    x, grid = _grid_inputs(2, seed=4)
    x, grid = x.astype(dtype), grid.astype(dtype)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    model = _model("GridSample", [("x", elem), ("g", elem)], [("y", elem)], 20, mode="cubic")
    tol = 5e-3 if dtype == np.float16 else 1e-10
    _same(_ronn(model, {"x": x, "g": grid}), _ort(model, {"x": x, "g": grid}), rtol=tol, atol=tol)


def test_grid_sample_nearest_integer_and_string_data() -> None:
    x, grid = _grid_inputs(2, seed=5)
    ints = (x * 10).astype(np.int32)
    model = _model("GridSample", [("x", INT32), ("g", FLOAT)], [("y", INT32)], 20, mode="nearest")
    (got,) = _ronn(model, {"x": ints, "g": grid})
    float_model = _model("GridSample", [("x", FLOAT), ("g", FLOAT)], [("y", FLOAT)], 20, mode="nearest")
    (want,) = _ort(float_model, {"x": ints.astype(np.float32), "g": grid})
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want.astype(np.int32))
    words = np.array([f"w{v}" for v in ints.ravel()], dtype=object).reshape(ints.shape)
    model = _model("GridSample", [("x", STRING), ("g", FLOAT)], [("y", STRING)], 20,
                   mode="nearest", padding_mode="border")
    float_model = _model("GridSample", [("x", FLOAT), ("g", FLOAT)], [("y", FLOAT)], 20,
                         mode="nearest", padding_mode="border")
    (got,) = _ronn(model, {"x": words, "g": grid})
    (want,) = _ort(float_model, {"x": ints.astype(np.float32), "g": grid})
    assert got.shape == want.shape
    assert [str(v) for v in got.ravel()] == [f"w{int(v)}" for v in want.ravel()]


def test_grid_sample_linear_integer_data_rounds() -> None:
    x = np.array([[[[0, 10], [20, 30]]]], dtype=np.int64)
    grid = np.array([[[[0.0, 0.0], [-0.5, -0.5]]]], dtype=np.float32)
    model = _model("GridSample", [("x", INT64), ("g", FLOAT)], [("y", INT64)], 20, align_corners=1)
    (got,) = _ronn(model, {"x": x, "g": grid})
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, [[[[15, 8]]]])  # 15 and 7.5 rounded half to even


def test_grid_sample_empty_grid() -> None:
    x, _ = _grid_inputs(2, seed=6)
    grid = np.zeros((2, 0, 3, 2), np.float32)
    model = _model("GridSample", [("x", FLOAT), ("g", FLOAT)], [("y", FLOAT)], 20)
    (got,) = _ronn(model, {"x": x, "g": grid})
    assert got.shape == (2, 3, 0, 3) and got.dtype == np.float32


# --- AffineGrid ---------------------------------------------------------------------------


@pytest.mark.parametrize("align_corners", [0, 1])
@pytest.mark.parametrize("size", [[2, 3, 4, 5], [1, 1, 1, 6], [1, 2, 3, 1], [2, 1, 3, 4, 5], [1, 1, 1, 2, 1]])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_affine_grid_matches_onnxruntime(dtype, size: list[int], align_corners: int) -> None:
    ndim = len(size) - 2
    theta = _rng(7).standard_normal((size[0], ndim, ndim + 1)).astype(dtype)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    model = _model("AffineGrid", [("t", elem), ("s", INT64)], [("g", elem)], 20, align_corners=align_corners)
    feeds = {"t": theta, "s": np.array(size, np.int64)}
    _same(_ronn(model, feeds), _ort(model, feeds), rtol=1e-5, atol=1e-6)


def test_affine_grid_float16() -> None:
    theta = _rng(8).standard_normal((2, 2, 3)).astype(np.float16)
    model = _model("AffineGrid", [("t", FLOAT16), ("s", INT64)], [("g", FLOAT16)], 20)
    model32 = _model("AffineGrid", [("t", FLOAT), ("s", INT64)], [("g", FLOAT)], 20)
    size = np.array([2, 1, 4, 3], np.int64)
    (got,) = _ronn(model, {"t": theta, "s": size})
    (want,) = _ort(model32, {"t": theta.astype(np.float32), "s": size})
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), want, rtol=2e-3, atol=2e-3)


# --- RoiAlign and MaxRoiPool --------------------------------------------------------------


def _rois(count: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = _rng(seed)
    x = rng.standard_normal((2, 3, 12, 10)).astype(np.float32)
    x1, y1 = rng.uniform(-3, 11, count), rng.uniform(-3, 13, count)
    rois = np.stack([x1, y1, x1 + rng.uniform(-1, 9, count), y1 + rng.uniform(-1, 9, count)], 1)
    rois = rois.astype(np.float32)
    rois[0] = [0, 0, 0, 0]  # empty and malformed boxes
    rois[1] = [2, 2, 2.3, 2.1]
    rois[2] = [5, 5, 3, 4]
    batch = rng.integers(0, 2, count).astype(np.int64)
    return x, rois, batch


@pytest.mark.parametrize("sampling_ratio", [0, 1, 3])
@pytest.mark.parametrize("transform", ["half_pixel", "output_half_pixel"])
@pytest.mark.parametrize("mode", ["avg", "max"])
def test_roi_align_matches_onnxruntime(mode: str, transform: str, sampling_ratio: int) -> None:
    x, rois, batch = _rois(30, seed=9)
    model = _model("RoiAlign", [("x", FLOAT), ("r", FLOAT), ("b", INT64)], [("y", FLOAT)], 16,
                   mode=mode, coordinate_transformation_mode=transform, sampling_ratio=sampling_ratio,
                   spatial_scale=0.7, output_height=3, output_width=4)
    feeds = {"x": x, "r": rois, "b": batch}
    _same(_ronn(model, feeds), _ort(model, feeds))


def test_roi_align_opset10_is_output_half_pixel() -> None:
    x, rois, batch = _rois(12, seed=10)
    model = _model("RoiAlign", [("x", FLOAT), ("r", FLOAT), ("b", INT64)], [("y", FLOAT)], 10,
                   output_height=2, output_width=2)
    feeds = {"x": x, "r": rois, "b": batch}
    _same(_ronn(model, feeds), _ort(model, feeds))


def test_roi_align_opset22_float16_and_double() -> None:
    x, rois, batch = _rois(10, seed=11)
    model16 = _model("RoiAlign", [("x", FLOAT), ("r", FLOAT), ("b", INT64)], [("y", FLOAT)], 16,
                     output_height=2, output_width=3)
    (want,) = _ort(model16, {"x": x, "r": rois, "b": batch})
    for dtype in (np.float16, np.float64, ml_dtypes.bfloat16):
        elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        model = _model("RoiAlign", [("x", elem), ("r", elem), ("b", INT64)], [("y", elem)], 22,
                       output_height=2, output_width=3)
        (got,) = _ronn(model, {"x": x.astype(dtype), "r": rois.astype(dtype), "b": batch})
        assert got.dtype == dtype
        tol = 1e-6 if dtype == np.float64 else 0.1
        np.testing.assert_allclose(got.astype(np.float32), want, rtol=tol, atol=tol)


def test_roi_align_many_rois_in_chunks() -> None:
    x, rois, batch = _rois(400, seed=12)
    x = np.repeat(x, 20, axis=1)  # 60 channels: the gathered blocks split into chunks
    model = _model("RoiAlign", [("x", FLOAT), ("r", FLOAT), ("b", INT64)], [("y", FLOAT)], 16,
                   output_height=7, output_width=7, sampling_ratio=2)
    feeds = {"x": x, "r": rois, "b": batch}
    _same(_ronn(model, feeds), _ort(model, feeds))


def test_roi_align_no_rois_and_bad_batch_index() -> None:
    x, _, _ = _rois(3, seed=13)
    model = _model("RoiAlign", [("x", FLOAT), ("r", FLOAT), ("b", INT64)], [("y", FLOAT)], 16)
    (got,) = _ronn(model, {"x": x, "r": np.zeros((0, 4), np.float32), "b": np.zeros(0, np.int64)})
    assert got.shape == (0, 3, 1, 1)
    with pytest.raises(KernelError, match="batch indices"):
        _ronn(model, {"x": x, "r": np.ones((1, 4), np.float32), "b": np.array([5], np.int64)})


@pytest.mark.parametrize("pooled", [[3, 4], [2, 2], [5, 7], [1, 1]])
@pytest.mark.parametrize("scale", [1.0, 0.5, 0.3])
def test_max_roi_pool_matches_onnxruntime(scale: float, pooled: list[int]) -> None:
    x, rois, batch = _rois(25, seed=14)
    rois5 = np.concatenate([batch[:, None].astype(np.float32), rois], axis=1)
    model = _model("MaxRoiPool", [("x", FLOAT), ("r", FLOAT)], [("y", FLOAT)], 7,
                   pooled_shape=pooled, spatial_scale=scale)
    feeds = {"x": x, "r": rois5}
    _same(_ronn(model, feeds), _ort(model, feeds), rtol=0, atol=0)


def test_max_roi_pool_opset22_double() -> None:
    x, rois, batch = _rois(6, seed=15)
    rois5 = np.concatenate([batch[:, None].astype(np.float32), rois], axis=1)
    model32 = _model("MaxRoiPool", [("x", FLOAT), ("r", FLOAT)], [("y", FLOAT)], 7, pooled_shape=[2, 3])
    (want,) = _ort(model32, {"x": x, "r": rois5})
    model = _model("MaxRoiPool", [("x", DOUBLE), ("r", DOUBLE)], [("y", DOUBLE)], 22, pooled_shape=[2, 3])
    (got,) = _ronn(model, {"x": x.astype(np.float64), "r": rois5.astype(np.float64)})
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, want.astype(np.float64))


# --- NonMaxSuppression --------------------------------------------------------------------


@pytest.mark.parametrize("trial", range(12))
def test_non_max_suppression_matches_onnxruntime(trial: int) -> None:
    rng = _rng(100 + trial)
    batches, classes, count = int(rng.integers(1, 3)), int(rng.integers(1, 4)), int(rng.integers(1, 40))
    corner = rng.uniform(0, 10, (batches, count, 2))
    extent = rng.uniform(-2, 4, (batches, count, 2))  # negative: flipped corners
    boxes = np.concatenate([corner, corner + extent], -1).astype(np.float32)
    if trial % 3 == 0:
        boxes[:, ::2] = boxes[:, :1]  # identical boxes
    scores = np.round(rng.uniform(0, 1, (batches, classes, count)), 1).astype(np.float32)  # ties
    values = [boxes, scores, np.array([rng.integers(0, 8)], np.int64),
              np.array([rng.choice([0.0, 0.3, 0.5, 1.0])], np.float32),
              np.array([rng.choice([0.0, 0.2, 0.5])], np.float32)]
    names = [("boxes", FLOAT), ("scores", FLOAT), ("max", INT64), ("iou", FLOAT), ("score", FLOAT)]
    for opset in (10, 11):
        for given in (2, 3, 4, 5):
            model = _model("NonMaxSuppression", names[:given], [("y", INT64)], opset,
                           center_point_box=trial % 2)
            feeds = {name: value for (name, _), value in zip(names[:given], values)}
            (got,), (want,) = _ronn(model, feeds), _ort(model, feeds)
            assert got.dtype == np.int64 and got.shape == want.shape
            np.testing.assert_array_equal(got, want)


def test_non_max_suppression_many_boxes_limit() -> None:
    rng = _rng(16)
    corner = rng.uniform(0, 100, (1, 2000, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(1, 10, (1, 2000, 2))], -1).astype(np.float32)
    scores = rng.uniform(0, 1, (1, 2, 2000)).astype(np.float32)
    names = [("boxes", FLOAT), ("scores", FLOAT), ("max", INT64), ("iou", FLOAT)]
    feeds = {"boxes": boxes, "scores": scores, "max": np.array([500], np.int64), "iou": np.array([0.4], np.float32)}
    model = _model("NonMaxSuppression", names, [("y", INT64)], 11)
    (got,), (want,) = _ronn(model, feeds), _ort(model, feeds)
    np.testing.assert_array_equal(got, want)


# --- ImageDecoder -------------------------------------------------------------------------


def _encode(pixels: np.ndarray, fmt: str, mode: str | None = None) -> np.ndarray:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels, mode=mode).save(buffer, format=fmt)
    return np.frombuffer(buffer.getvalue(), dtype=np.uint8)


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "PPM"])
def test_image_decoder_lossless_formats(fmt: str) -> None:
    pixels = _rng(17).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    data = _encode(pixels, fmt)
    for pixel_format, want in (("RGB", pixels), ("BGR", pixels[:, :, ::-1])):
        model = _model("ImageDecoder", [("x", UINT8)], [("y", UINT8)], 20, pixel_format=pixel_format)
        (got,) = _ronn(model, {"x": data})
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, want)


def test_image_decoder_grayscale_and_alpha() -> None:
    rgba = _rng(18).integers(0, 256, (4, 6, 4), dtype=np.uint8)
    data = _encode(rgba, "PNG")
    model = _model("ImageDecoder", [("x", UINT8)], [("y", UINT8)], 20)
    (got,) = _ronn(model, {"x": data})
    np.testing.assert_array_equal(got, rgba[:, :, :3])
    model = _model("ImageDecoder", [("x", UINT8)], [("y", UINT8)], 20, pixel_format="Grayscale")
    (gray,) = _ronn(model, {"x": data})
    assert gray.shape == (4, 6, 1) and gray.dtype == np.uint8
    rgb = rgba[:, :, :3].astype(np.float64)
    luma = rgb[:, :, 0] * 0.299 + rgb[:, :, 1] * 0.587 + rgb[:, :, 2] * 0.114  # ITU-R 601-2
    assert np.abs(gray[:, :, 0].astype(np.float64) - luma).max() <= 1


def test_image_decoder_jpeg_close_to_source() -> None:
    pixels = np.zeros((16, 16, 3), np.uint8)
    pixels[:, :8] = (200, 40, 90)
    pixels[:, 8:] = (20, 180, 240)
    data = _encode(pixels, "JPEG")
    model = _model("ImageDecoder", [("x", UINT8)], [("y", UINT8)], 20)
    (got,) = _ronn(model, {"x": data})
    assert got.shape == (16, 16, 3)
    assert np.abs(got.astype(int) - pixels.astype(int)).mean() < 8
    (want,) = ReferenceEvaluator(model).run(None, {"x": data})
    np.testing.assert_array_equal(got, want)


def test_image_decoder_bad_data_and_attribute() -> None:
    model = _model("ImageDecoder", [("x", UINT8)], [("y", UINT8)], 20)
    with pytest.raises(KernelError, match="could not decode"):
        _ronn(model, {"x": np.arange(20, dtype=np.uint8)})
    model = _model("ImageDecoder", [("x", UINT8)], [("y", UINT8)], 20, pixel_format="RGBA")
    with pytest.raises(InvalidGraphError, match="pixel_format"):
        ronn.InferenceSession(model.SerializeToString())


def test_image_decoder_without_pillow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "PIL", None)
    model = _model("ImageDecoder", [("x", UINT8)], [("y", UINT8)], 20)
    with pytest.raises(InvalidGraphError, match=r"ronn\[image\]"):
        ronn.InferenceSession(model.SerializeToString())


# --- RotaryEmbedding ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("with_positions", [True, False])
@pytest.mark.parametrize("four_d", [True, False])
@pytest.mark.parametrize("rotary_dim", [0, 4])
@pytest.mark.parametrize("interleaved", [0, 1])
def test_rotary_embedding_matches_onnxruntime(interleaved: int, rotary_dim: int, four_d: bool,
                                             with_positions: bool, dtype) -> None:
    rng = _rng(19)
    batch, seq, heads, head_size = 2, 5, 3, 8
    shape = (batch, heads, seq, head_size) if four_d else (batch, seq, heads * head_size)
    x = rng.standard_normal(shape).astype(dtype)
    half = (rotary_dim or head_size) // 2
    cache_shape = (20, half) if with_positions else (batch, seq, half)
    feeds = {"x": x, "cos": rng.standard_normal(cache_shape).astype(dtype),
             "sin": rng.standard_normal(cache_shape).astype(dtype)}
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    inputs = [("x", elem), ("cos", elem), ("sin", elem)]
    if with_positions:
        inputs.append(("pos", INT64))
        feeds["pos"] = rng.integers(0, 20, (batch, seq)).astype(np.int64)
    attrs = {"interleaved": interleaved, "rotary_embedding_dim": rotary_dim}
    if not four_d:
        attrs["num_heads"] = heads
    model = _model("RotaryEmbedding", inputs, [("y", elem)], 23, **attrs)
    tol = 1e-2 if dtype == np.float16 else 1e-5
    _same(_ronn(model, feeds), _ort(model, feeds), rtol=tol, atol=tol)


def test_rotary_embedding_bad_cache_width() -> None:
    model = _model("RotaryEmbedding", [("x", FLOAT), ("cos", FLOAT), ("sin", FLOAT)], [("y", FLOAT)], 23)
    feeds = {"x": np.zeros((1, 2, 3, 8), np.float32), "cos": np.zeros((1, 3, 3), np.float32),
             "sin": np.zeros((1, 3, 3), np.float32)}
    with pytest.raises(KernelError, match="cache"):
        _ronn(model, feeds)


# --- SwiGLU -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, ml_dtypes.bfloat16])
def test_swiglu(dtype) -> None:
    rng = _rng(20)
    a = (rng.standard_normal((3, 5)) * 4).astype(dtype)
    b = rng.standard_normal((3, 5)).astype(dtype)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    model = _model("SwiGLU", [("a", elem), ("b", elem)], [("y", elem)], 28, alpha=1.7)
    (got,) = _ronn(model, {"a": a, "b": b})
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    alpha = float(np.float32(1.7))  # attributes are stored as float32
    want = a64 / (1 + np.exp(-alpha * a64)) * b64
    assert got.dtype == dtype and got.shape == a.shape
    tol = 1e-12 if dtype == np.float64 else (1e-6 if dtype == np.float32 else 1e-2)
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=tol, atol=tol)


def test_swiglu_rejects_different_shapes() -> None:
    model = _model("SwiGLU", [("a", FLOAT), ("b", FLOAT)], [("y", FLOAT)], 28)
    with pytest.raises(KernelError, match="one shape"):
        _ronn(model, {"a": np.zeros((2, 3), np.float32), "b": np.zeros((1, 3), np.float32)})


# --- TfIdfVectorizer (the text family) -----------------------------------------------------


def _tfidf_case(trial: int) -> tuple[onnx.ModelProto, dict]:
    """A random pool (no duplicate n-grams), mode, gram lengths, skips and input."""
    rng = _rng(200 + trial)
    vocab = 6
    pool: list[int] = []
    counts: list[int] = []
    for size, how_many in enumerate(rng.integers(0, 5, 3), start=1):
        counts.append(len(pool))
        grams: set[tuple[int, ...]] = set()
        while len(grams) < max(how_many, size == 1):
            grams.add(tuple(int(v) for v in rng.integers(0, vocab, size)))
        for gram in sorted(grams):
            pool.extend(gram)
    total = sum(((counts[i + 1] if i + 1 < 3 else len(pool)) - counts[i]) // (i + 1) for i in range(3))
    indexes = rng.permutation(total + int(rng.integers(0, 3)))[:total].tolist()
    low = int(rng.integers(1, 4))
    attrs = {"mode": ["TF", "IDF", "TFIDF"][trial % 3], "min_gram_length": low,
             "max_gram_length": int(rng.integers(low, 4)), "max_skip_count": int(rng.integers(0, 4)),
             "ngram_counts": counts, "ngram_indexes": indexes}
    if trial % 2:
        attrs["weights"] = rng.uniform(0.1, 2, total).round(2).tolist()
    shape = (int(rng.integers(1, 4)), int(rng.integers(1, 12))) if trial % 2 else (int(rng.integers(1, 12)),)
    tokens = rng.integers(0, vocab + 1, shape)
    if trial % 4 == 0:
        attrs["pool_strings"] = [f"w{t}" for t in pool]
        x = np.array([f"w{t}" for t in tokens.ravel()], dtype=object).reshape(shape)
        elem = STRING
    else:
        attrs["pool_int64s"] = pool
        elem = INT64 if trial % 4 == 1 else INT32
        x = tokens.astype(np.int64 if elem == INT64 else np.int32)
    return _model("TfIdfVectorizer", [("x", elem)], [("y", FLOAT)], 9, **attrs), {"x": x}


@pytest.mark.parametrize("trial", range(40))
def test_tfidf_matches_onnxruntime(trial: int) -> None:
    model, feeds = _tfidf_case(trial)
    _same(_ronn(model, feeds), _ort(model, feeds), rtol=1e-6, atol=1e-6)


def test_tfidf_long_ngrams_overflowing_int64_codes() -> None:
    # 10-grams over a 100-token vocabulary: their codes overflow int64 (the Python-int path)
    unigrams = list(range(100))
    long_gram = [5, 17, 99, 1, 2, 3, 5, 17, 99, 0]
    counts = [0] + [100] * 8 + [100]
    attrs = {"mode": "TF", "min_gram_length": 1, "max_gram_length": 10, "max_skip_count": 1,
             "ngram_counts": counts, "ngram_indexes": list(range(101)), "pool_int64s": unigrams + long_gram}
    model = _model("TfIdfVectorizer", [("x", INT64)], [("y", FLOAT)], 9, **attrs)
    x = np.array([long_gram + [7] + long_gram[::-1],
                  [v for t in long_gram for v in (t, 50)] + [1]], np.int64)
    (got,) = _ronn(model, {"x": x})
    assert got[0, 100] == 1 and got[1, 100] == 1  # once contiguous, once with a skip of one
    _same([got], _ort(model, {"x": x}), rtol=0, atol=0)


def test_tfidf_type_mismatch_and_bad_attributes() -> None:
    attrs = {"mode": "TF", "min_gram_length": 1, "max_gram_length": 1, "max_skip_count": 0,
             "ngram_counts": [0], "ngram_indexes": [0, 1], "pool_int64s": [3, 4]}
    model = _model("TfIdfVectorizer", [("x", STRING)], [("y", FLOAT)], 9, **attrs)
    with pytest.raises(KernelError, match="integer"):
        _ronn(model, {"x": np.array(["a"], dtype=object)})
    bad = dict(attrs, pool_int64s=[3, 3])
    model = _model("TfIdfVectorizer", [("x", INT64)], [("y", FLOAT)], 9, **bad)
    with pytest.raises(InvalidGraphError, match="twice"):
        ronn.InferenceSession(model.SerializeToString())
    bad = dict(attrs, mode="BM25")
    model = _model("TfIdfVectorizer", [("x", INT64)], [("y", FLOAT)], 9, **bad)
    with pytest.raises(InvalidGraphError, match="mode"):
        ronn.InferenceSession(model.SerializeToString())


def test_tfidf_empty_input() -> None:
    attrs = {"mode": "TF", "min_gram_length": 1, "max_gram_length": 2, "max_skip_count": 0,
             "ngram_counts": [0, 2], "ngram_indexes": [0, 1, 2], "pool_strings": ["a", "b", "a", "b"]}
    model = _model("TfIdfVectorizer", [("x", STRING)], [("y", FLOAT)], 9, **attrs)
    (got,) = _ronn(model, {"x": np.zeros((0,), dtype=object)})
    assert got.shape == (3,) and got.dtype == np.float32 and not got.any()
