"""Elementwise kernels beyond the node suite: every float width, integers, scalars, old
opsets (broadcast/axis attributes, Clip attributes, Cast-1), casts between all types,
strings, float 8 saturation, float8e8m0 rounding, BitCast and linear quantization."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import ronn
from ronn.dtypes import DataType, from_numpy, to_numpy
from ronn.errors import KernelError
from ronn_cpu.kernels import _cast

# the reference implementation warns about the undefined conversions it is asked to do
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning:onnx.*")

RNG = np.random.default_rng(0)
BF16 = np.dtype(ml_dtypes.bfloat16)
FLOATS = [np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16), BF16]
INTS = [np.dtype(t) for t in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64)]


def _elem_type(value: np.ndarray) -> int:
    if value.dtype.kind in "OUS":
        return TensorProto.STRING
    return int(DataType[_dtype_name(value.dtype)])


def _dtype_name(dtype: np.dtype) -> str:
    return from_numpy(dtype).name


def _model(op: str, feeds: dict, opset: int, outputs: int = 1, **attrs) -> onnx.ModelProto:
    node = helper.make_node(op, list(feeds), [f"y{i}" for i in range(outputs)], **attrs)
    inputs = [helper.make_tensor_value_info(n, _elem_type(v), None) for n, v in feeds.items()]
    outs = [helper.make_tensor_value_info(f"y{i}", TensorProto.UNDEFINED, None) for i in range(outputs)]
    model = helper.make_model(helper.make_graph([node], "g", inputs, outs), opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset < 21 else 11
    return model


def _run(op: str, feeds: dict, opset: int, outputs: int = 1, **attrs) -> list:
    model = _model(op, feeds, opset, outputs, **attrs)
    feeds = {k: _readonly(v) for k, v in feeds.items()}
    return ronn.InferenceSession(model.SerializeToString()).run(None, feeds)


def _reference(op: str, feeds: dict, opset: int, outputs: int = 1, **attrs) -> list:
    return ReferenceEvaluator(_model(op, feeds, opset, outputs, **attrs)).run(None, feeds)


def _readonly(value: np.ndarray) -> np.ndarray:
    value = np.array(value)
    value.flags.writeable = False
    return value


def _same(got, want, rtol: float = 1e-6, atol: float = 1e-7) -> None:
    want = np.asarray(want)
    assert isinstance(got, np.ndarray), type(got)
    assert got.shape == want.shape, (got.shape, want.shape)
    if want.dtype.kind in "OUS":
        assert got.dtype == object
        assert got.tolist() == want.astype(object).tolist()
        return
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    if got.dtype == np.bool_:
        np.testing.assert_array_equal(got, want)
        return
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol, equal_nan=True)


def _floats(dtype: np.dtype, shape=(3, 4), low: float = -3.0, high: float = 3.0) -> np.ndarray:
    return RNG.uniform(low, high, size=shape).astype(dtype)


def _ints(dtype: np.dtype, shape=(3, 4), low: int = -50, high: int = 50) -> np.ndarray:
    info = np.iinfo(dtype)
    return RNG.integers(max(info.min, low), min(info.max, high), size=shape, endpoint=True).astype(dtype)


def _tolerance(dtype: np.dtype) -> float:
    return 1e-2 if dtype in (np.dtype(np.float16), BF16) else 1e-5


# --- unary ops and activations against the reference, every float width ------------------

UNARY = {
    "Abs": 13, "Neg": 13, "Sign": 13, "Ceil": 13, "Floor": 13, "Round": 22, "Exp": 13, "Log": 13,
    "Sqrt": 13, "Reciprocal": 13, "Sin": 22, "Cos": 22, "Tan": 22, "Asin": 22, "Acos": 22,
    "Atan": 22, "Sinh": 22, "Cosh": 22, "Asinh": 22, "Acosh": 22, "Atanh": 22, "Erf": 13,
    "Tanh": 13, "Sigmoid": 13, "Softplus": 22, "Softsign": 22, "Mish": 22, "Relu": 14,
    "LeakyRelu": 16, "Elu": 22, "Selu": 22, "Celu": 28, "HardSigmoid": 22, "HardSwish": 22,
    "ThresholdedRelu": 22, "Swish": 24, "Shrink": 9, "IsNaN": 20, "IsInf": 20,
}  # fmt: skip


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("op", sorted(UNARY))
def test_unary_matches_reference(op: str, dtype: np.dtype) -> None:
    x = _floats(dtype)
    if op in ("Log", "Sqrt", "Acosh"):
        x = (np.abs(x.astype(np.float32)) + 1).astype(dtype)
    if op in ("Asin", "Acos", "Atanh"):
        x = (x.astype(np.float32) / 4).astype(dtype)
    if op in ("IsNaN", "IsInf"):
        x = np.array([0, np.nan, np.inf, -np.inf, 1.5], np.float32).astype(dtype)
    _same(_run(op, {"x": x}, UNARY[op])[0], _reference(op, {"x": x}, UNARY[op])[0], rtol=_tolerance(dtype))


@pytest.mark.parametrize("dtype", INTS, ids=str)
@pytest.mark.parametrize("op", ["Abs", "Neg", "Sign", "Relu", "Shrink"])
def test_integer_unary(op: str, dtype: np.dtype) -> None:
    if op == "Neg" and dtype.kind == "u":
        pytest.skip("Neg takes signed types only")
    x = _ints(dtype)
    _same(_run(op, {"x": x}, 14)[0], _reference(op, {"x": x}, 14)[0])


def test_gelu_is_accurate_in_narrow_floats() -> None:
    x = np.linspace(-6, 6, 97).astype(np.float32)
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(np.float64)])
    for dtype in (np.dtype(np.float16), BF16, np.dtype(np.float32)):
        got = _run("Gelu", {"x": x.astype(dtype)}, 20)[0]
        assert got.dtype == dtype
        want = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(dtype).astype(np.float64)])
        np.testing.assert_allclose(got.astype(np.float64), want, rtol=1e-2 if dtype != np.float32 else 1e-6, atol=1e-6)
    tanh = _run("Gelu", {"x": x}, 20, approximate="tanh")[0]
    np.testing.assert_allclose(tanh, exact, atol=1e-3)


def test_erf_precision() -> None:
    x = np.concatenate([np.linspace(-7, 7, 2001), np.logspace(-30, 0.8, 200), [0.0, -0.0, np.inf, -np.inf, np.nan]])
    got = _run("Erf", {"x": x}, 13)[0]
    want = np.array([math.erf(v) for v in x])
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=0)
    assert math.copysign(1, got[-5 + 1]) == -1  # erf(-0) is -0


def test_activations_with_attributes() -> None:
    x = _floats(np.dtype(np.float32))
    for op, attrs in (
        ("LeakyRelu", {"alpha": 0.2}), ("Elu", {"alpha": 0.5}), ("Selu", {"alpha": 1.5, "gamma": 2.0}),
        ("Celu", {"alpha": 2.0}), ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}),
        ("ThresholdedRelu", {"alpha": 0.5}), ("Shrink", {"lambd": 1.0, "bias": 0.5}), ("Swish", {"alpha": 0.7}),
    ):  # fmt: skip
        opset = 24 if op == "Swish" else 22 if op != "Shrink" else 9
        _same(_run(op, {"x": x}, opset, **attrs)[0], _reference(op, {"x": x}, opset, **attrs)[0], rtol=1e-6)


def test_sigmoid_softplus_are_stable() -> None:
    x = np.array([-1000, -100, -30, 0, 30, 100, 1000], np.float32)
    sig = _run("Sigmoid", {"x": x}, 13)[0]
    assert np.all(np.isfinite(sig)) and sig[0] == 0 and sig[-1] == 1
    np.testing.assert_allclose(sig[2], 1 / (1 + math.exp(30)), rtol=1e-6)
    soft = _run("Softplus", {"x": x}, 1)[0]
    np.testing.assert_allclose(soft, np.logaddexp(0, x.astype(np.float64)), rtol=1e-6, atol=1e-40)
    mish = _run("Mish", {"x": x}, 18)[0]
    assert np.all(np.isfinite(mish))


def test_isinf_detection_flags() -> None:
    x = np.array([np.inf, -np.inf, 0, np.nan], np.float32)
    assert _run("IsInf", {"x": x}, 10, detect_negative=0)[0].tolist() == [True, False, False, False]
    assert _run("IsInf", {"x": x}, 10, detect_positive=0)[0].tolist() == [False, True, False, False]
    assert _run("IsInf", {"x": x}, 10, detect_positive=0, detect_negative=0)[0].tolist() == [False] * 4


def test_float8_isnan_isinf() -> None:
    x = np.array([0, np.nan, np.inf, -np.inf, 3], np.float32).astype(ml_dtypes.float8_e5m2)
    assert _run("IsNaN", {"x": x}, 20)[0].tolist() == [False, True, False, False, False]
    assert _run("IsInf", {"x": x}, 20)[0].tolist() == [False, False, True, True, False]


def test_round_half_to_even() -> None:
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4, 2.6], np.float32)
    assert _run("Round", {"x": x}, 11)[0].tolist() == [0, 2, 2, -0.0, -2, -2, 2, 3]


# --- binary and variadic ----------------------------------------------------------------------

BINARY = {
    "Add": 14, "Sub": 14, "Mul": 14, "Div": 14, "Pow": 15, "Mod": 13, "Max": 13, "Min": 13,
    "Sum": 13, "Mean": 13, "Equal": 19, "Less": 13, "Greater": 13, "LessOrEqual": 16, "GreaterOrEqual": 16,
}  # fmt: skip


@pytest.mark.parametrize("dtype", FLOATS + INTS, ids=str)
@pytest.mark.parametrize("op", sorted(BINARY))
def test_binary_matches_reference(op: str, dtype: np.dtype) -> None:
    if op in ("Sum", "Mean") and dtype in INTS:
        pytest.skip("float only")
    if dtype in FLOATS:
        a, b = _floats(dtype, (2, 3, 4)), _floats(dtype, (3, 1))
        if op == "Pow":
            a = np.abs(a.astype(np.float32)).astype(dtype)
    else:
        a, b = _ints(dtype, (2, 3, 4)), _ints(dtype, (3, 1))
        if op in ("Div", "Mod"):
            b = np.where(b == 0, 1, b).astype(dtype)
        if op == "Pow":
            b = (np.abs(b.astype(np.int64)) % 4).astype(dtype)
    attrs = {"fmod": 1} if op == "Mod" and dtype in FLOATS else {}
    feeds = {"a": a, "b": b}
    want = _reference(op, feeds, BINARY[op], **attrs)[0]
    _same(_run(op, feeds, BINARY[op], **attrs)[0], want, rtol=_tolerance(dtype))


def test_integer_division_truncates() -> None:
    a = np.array([7, -7, 7, -7, 6, -6, 0], np.int32)
    b = np.array([2, 2, -2, -2, 3, -3, 5], np.int32)
    assert _run("Div", {"a": a, "b": b}, 14)[0].tolist() == [3, -3, -3, 3, 2, 2, 0]
    big = np.array([np.iinfo(np.int64).min + 1, 9], np.int64)
    assert _run("Div", {"a": big, "b": np.array([-3, -4], np.int64)}, 14)[0].tolist() == [
        (np.iinfo(np.int64).max) // 3,
        -2,
    ]


def test_mod_signs() -> None:
    a = np.array([-7, 7, -7, 7], np.int32)
    b = np.array([3, -3, -3, 3], np.int32)
    assert _run("Mod", {"a": a, "b": b}, 13)[0].tolist() == [2, -2, -1, 1]
    assert _run("Mod", {"a": a, "b": b}, 13, fmod=1)[0].tolist() == [-1, 1, -1, 1]
    f = np.array([-0.0, 0.0, np.inf, 3, -3, 5], np.float64)
    g = np.array([2.0, -2.0, 2.0, np.inf, np.inf, 0.0], np.float64)
    got = _run("Mod", {"a": f, "b": g}, 28)[0]
    assert math.copysign(1, got[0]) == 1 and math.copysign(1, got[1]) == -1
    assert np.isnan(got[2]) and got[3] == 3 and got[4] == np.inf and np.isnan(got[5])


def test_pow_keeps_base_type() -> None:
    base = np.array([2, -2, 3, 1, -1, -1, 5], np.int64)
    exponent = np.array([10, 3, 0, -4, -3, -2, -1], np.int64)
    got = _run("Pow", {"a": base, "b": exponent}, 15)[0]
    assert got.dtype == np.int64 and got.tolist() == [1024, -8, 1, 1, -1, 1, 0]
    assert _run("Pow", {"a": np.array([3], np.int64), "b": np.array([39], np.int64)}, 15)[0].tolist() == [3**39]
    got = _run("Pow", {"a": np.array([2, 3], np.int32), "b": np.array([0.5, 2.0], np.float32)}, 15)[0]
    assert got.dtype == np.int32 and got.tolist() == [1, 9]
    got = _run("Pow", {"a": np.array([2.0, 9.0], np.float32), "b": np.array([3, -1], np.int64)}, 15)[0]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, [8, 1 / 9], rtol=1e-7)
    got = _run("Pow", {"a": np.array([4, 2], np.uint64), "b": np.array([3, 63], np.uint64)}, 15)[0]
    assert got.tolist() == [64, 2**63]


@pytest.mark.parametrize("dtype", INTS, ids=str)
def test_bitshift_edges(dtype: np.dtype) -> None:
    bits = dtype.itemsize * 8
    x = np.array([1, 5, 3, 2], dtype)
    amounts = np.array([1, 2, bits, bits + 3], dtype)
    assert _run("BitShift", {"x": x, "y": amounts}, 28, direction="LEFT")[0].tolist() == [2, 20, 0, 0]
    assert _run("BitShift", {"x": x, "y": amounts}, 28, direction="RIGHT")[0].tolist() == [0, 1, 0, 0]
    if dtype.kind == "i":
        x = np.array([-8, -8, -8, 8], dtype)
        amounts = np.array([1, -1, bits, -2], dtype)
        assert _run("BitShift", {"x": x, "y": amounts}, 28, direction="RIGHT")[0].tolist() == [-4, -1, -1, 0]
        assert _run("BitShift", {"x": x, "y": amounts}, 28, direction="LEFT")[0].tolist() == [-16, 0, 0, 0]


def test_bitwise_and_logic() -> None:
    a, b = _ints(np.dtype(np.int16)), _ints(np.dtype(np.int16))
    assert _run("BitwiseAnd", {"a": a, "b": b}, 18)[0].tolist() == (a & b).tolist()
    assert _run("BitwiseOr", {"a": a, "b": b}, 18)[0].tolist() == (a | b).tolist()
    assert _run("BitwiseXor", {"a": a, "b": b}, 18)[0].tolist() == (a ^ b).tolist()
    assert _run("BitwiseNot", {"a": a}, 18)[0].tolist() == (~a).tolist()
    p, q = RNG.integers(0, 2, (3, 4)).astype(bool), RNG.integers(0, 2, (4,)).astype(bool)
    assert _run("And", {"a": p, "b": q}, 7)[0].tolist() == (p & q).tolist()
    assert _run("Or", {"a": p, "b": q}, 7)[0].tolist() == (p | q).tolist()
    assert _run("Xor", {"a": p, "b": q}, 7)[0].tolist() == (p ^ q).tolist()
    assert _run("Not", {"a": p}, 1)[0].tolist() == (~p).tolist()


def test_variadic_broadcast_and_single_input() -> None:
    a, b, c = _floats(np.dtype(np.float32), (2, 1, 4)), _floats(np.dtype(np.float32), (3, 1)), _floats(np.dtype(np.float32), (4,))
    feeds = {"a": a, "b": b, "c": c}
    expected = {
        "Max": np.maximum(np.maximum(a, b), c),
        "Min": np.minimum(np.minimum(a, b), c),
        "Sum": a + b + c,
        "Mean": (a + b + c) / np.float32(3),
    }
    for op, want in expected.items():
        _same(_run(op, feeds, 13)[0], want)
        single = _run(op, {"a": a}, 13)[0]
        _same(single, a)
        assert single.flags.writeable  # a fresh array, not the read-only feed
    halves = {"a": a.astype(np.float16), "b": b.astype(np.float16)}
    assert _run("Mean", halves, 13)[0].dtype == np.float16
    nan = np.array([np.nan, 1], np.float32)
    assert np.isnan(_run("Max", {"a": nan, "b": np.array([0, 0], np.float32)}, 13)[0][0])


def test_where_strings_and_broadcast() -> None:
    condition = np.array([[True, False], [False, True]])
    x = np.array(["a", "b"], dtype=object)
    y = np.array([["c"], ["d"]], dtype=object)
    got = _run("Where", {"c": condition, "x": x, "y": y}, 16)[0]
    assert got.tolist() == [["a", "c"], ["d", "b"]]
    assert _run("Equal", {"a": x, "b": np.array(["a"], dtype=object)}, 19)[0].tolist() == [True, False]


def test_prelu_broadcast_and_legacy_channels() -> None:
    x = _floats(np.dtype(np.float32), (2, 3, 4, 5))
    slope = _floats(np.dtype(np.float32), (3, 1, 1))
    want = np.where(x < 0, x * slope, x)
    _same(_run("PRelu", {"x": x, "s": slope}, 16)[0], want)
    _same(_run("PRelu", {"x": x, "s": slope.reshape(3)}, 6)[0], want)  # opset 6: one slope per channel
    _same(_run("PRelu", {"x": x, "s": np.array([0.1], np.float32)}, 6)[0], np.where(x < 0, x * np.float32(0.1), x))
    ints = _ints(np.dtype(np.int32), (2, 3))
    _same(_run("PRelu", {"x": ints, "s": np.array([2], np.int32)}, 16)[0], np.where(ints < 0, ints * 2, ints))


# --- old opsets ---------------------------------------------------------------------------------


def test_legacy_broadcast_attributes() -> None:
    a = _floats(np.dtype(np.float32), (2, 3, 4, 5))
    b = _floats(np.dtype(np.float32), (3, 4))
    got = _run("Add", {"a": a, "b": b}, 6, broadcast=1, axis=1)[0]
    _same(got, a + b.reshape(3, 4, 1))
    got = _run("Mul", {"a": a, "b": b[0, :1].reshape(())}, 6, broadcast=1)[0]
    _same(got, a * b[0, 0])
    suffix = _floats(np.dtype(np.float32), (4, 5))
    _same(_run("Sub", {"a": a, "b": suffix}, 6, broadcast=1)[0], a - suffix)
    _same(_run("Div", {"a": a, "b": a + 10}, 1)[0], a / (a + 10))
    assert _run("Less", {"a": a, "b": b}, 1, broadcast=1, axis=-3)[0].tolist() == (a < b.reshape(3, 4, 1)).tolist()
    with pytest.raises(KernelError):
        _run("Add", {"a": a, "b": b}, 6)  # broadcast=0 needs equal shapes
    mask = np.array([True, False, True])
    other = np.zeros((2, 3), bool)
    assert _run("Or", {"a": other, "b": mask}, 1, broadcast=1)[0].tolist() == [[True, False, True]] * 2


def test_legacy_clip_attributes() -> None:
    x = _floats(np.dtype(np.float32))
    _same(_run("Clip", {"x": x}, 6, min=-1.0, max=0.5)[0], np.clip(x, -1, 0.5))
    _same(_run("Clip", {"x": x}, 6, max=0.5)[0], np.minimum(x, 0.5))
    _same(_run("Clip", {"x": x}, 1)[0], x)


def test_clip_inputs() -> None:
    x = _ints(np.dtype(np.int8))
    low, high = np.array(-5, np.int8), np.array(7, np.int8)
    _same(_run("Clip", {"x": x, "lo": low, "hi": high}, 13)[0], np.clip(x, -5, 7))
    _same(_run("Clip", {"x": x, "lo": low}, 13)[0], np.maximum(x, -5))
    _same(_run("Clip", {"x": x}, 13)[0], x)
    f = _floats(np.dtype(np.float16))
    got = _run("Clip", {"x": f, "lo": np.array(1, np.float16), "hi": np.array(0, np.float16)}, 13)[0]
    assert got.dtype == np.float16 and np.all(got == 0)  # min > max gives max


def test_cast_1_takes_type_names() -> None:
    x = np.array([1.7, -2.2], np.float32)
    got = _run("Cast", {"x": x}, 1, to="INT32")[0]
    assert got.dtype == np.int32 and got.tolist() == [1, -2]
    assert _run("Cast", {"x": x}, 6, to=TensorProto.DOUBLE)[0].dtype == np.float64


# --- scalars, read-only inputs ------------------------------------------------------------------

SCALAR_CASES = [
    ("Abs", 13, {}), ("Exp", 13, {}), ("Erf", 13, {}), ("Gelu", 20, {}), ("Relu", 14, {}), ("Sigmoid", 13, {}),
    ("IsNaN", 13, {}), ("IsInf", 10, {}), ("Round", 11, {}), ("Clip", 13, {}), ("Softplus", 1, {}), ("Mish", 18, {}),
    ("Elu", 6, {}), ("Celu", 12, {}), ("Swish", 24, {}), ("HardSwish", 14, {}), ("Cast", 21, {"to": TensorProto.FLOAT8E4M3FN}),
    ("Cast", 21, {"to": TensorProto.STRING}), ("Cast", 21, {"to": TensorProto.INT4}), ("DynamicQuantizeLinear", 11, {}),
]  # fmt: skip


@pytest.mark.parametrize(("op", "opset", "attrs"), SCALAR_CASES, ids=lambda v: str(v))
def test_scalar_inputs_give_arrays(op: str, opset: int, attrs: dict) -> None:
    x = np.array(1.25, np.float32)
    outputs = 3 if op == "DynamicQuantizeLinear" else 1
    for value in _run(op, {"x": x}, opset, outputs, **attrs):
        assert isinstance(value, np.ndarray)
        assert value.shape == ()


@pytest.mark.parametrize("op", ["Add", "Div", "Pow", "Mod", "Max", "Equal", "BitShift", "Where", "QuantizeLinear"])
def test_scalar_binary_give_arrays(op: str) -> None:
    if op in ("BitShift", "Mod"):
        feeds = {"a": np.array(12, np.uint8), "b": np.array(2, np.uint8)}
    elif op == "Where":
        feeds = {"c": np.array(True), "a": np.array(1.0, np.float32), "b": np.array(2.0, np.float32)}
    else:
        feeds = {"a": np.array(3.0, np.float32), "b": np.array(2.0, np.float32)}
    attrs = {"direction": "LEFT"} if op == "BitShift" else {}
    got = _run(op, feeds, 19, **attrs)[0]
    assert isinstance(got, np.ndarray) and got.shape == ()


# --- casts ------------------------------------------------------------------------------------------

_CAST_VALUES = np.array(
    [0, -0.0, 0.3, 1, 1.5, 2.5, -2.5, 3.7, -7.9, 12, 100, -100, 1e6, -1e6, np.nan, np.inf, -np.inf, 1e-7, 448, 500]
)
_NUMERIC = [
    d for d in DataType
    if d not in (DataType.UNDEFINED, DataType.STRING, DataType.COMPLEX64, DataType.COMPLEX128, DataType.FLOAT8E8M0)
]  # fmt: skip
_SUB_BYTE = {DataType.INT4, DataType.UINT4, DataType.INT2, DataType.UINT2}


def _cast_input(dtype: DataType) -> np.ndarray:
    """Values the source type holds without undefined behaviour on the way in."""
    with np.errstate(all="ignore"):
        if dtype in _SUB_BYTE:
            return np.array([0, 1, -1, 2, -2, 1, 0, 3], np.int8).astype(to_numpy(dtype))
        values = _CAST_VALUES.astype(np.float32) if dtype != DataType.DOUBLE else _CAST_VALUES
        if to_numpy(dtype).kind in "iub":
            values = np.nan_to_num(values, posinf=0, neginf=0)
            values = values[np.abs(values) < 100]
        return values.astype(to_numpy(dtype))


def _defined(x: np.ndarray, target: np.dtype) -> np.ndarray:
    """Where a float -> integer conversion is defined (in range, not NaN)."""
    if not (_cast.is_floating(x.dtype) and _cast.is_integer(target)):
        return np.ones(x.shape, bool)
    low, high = _cast.integer_range(target)
    values = x.astype(np.float64)
    return (values > low - 1) & (values < high + 1)


@pytest.mark.parametrize("source", _NUMERIC, ids=lambda d: d.name)
def test_cast_every_numeric_pair(source: DataType) -> None:
    x = _cast_input(source)
    for target in _NUMERIC:
        try:
            want = _reference("Cast", {"x": x}, 25, to=int(target))[0]
        except Exception:  # pairs ml_dtypes cannot convert directly: through int64 or float32
            via = np.int64 if target in _SUB_BYTE and source in _SUB_BYTE else np.float32
            want = x.astype(via).astype(to_numpy(target))
        got = _run("Cast", {"x": x}, 25, to=int(target))[0]
        assert got.dtype == want.dtype, (source.name, target.name)
        keep = _defined(x, got.dtype)
        np.testing.assert_array_equal(
            got.astype(np.float64)[keep], want.astype(np.float64)[keep], err_msg=f"{source.name} -> {target.name}"
        )


def test_cast_float8_saturation() -> None:
    x = np.array([1e6, -1e6, np.inf, -np.inf, np.nan, 0.3, -0.0, 61440], np.float32)
    for dtype, limit in (
        (ml_dtypes.float8_e4m3fn, 448), (ml_dtypes.float8_e4m3fnuz, 240),
        (ml_dtypes.float8_e5m2, 57344), (ml_dtypes.float8_e5m2fnuz, 57344),
    ):  # fmt: skip
        code = int(DataType[_dtype_name(np.dtype(dtype))])
        got = _run("Cast", {"x": x}, 19, to=code)[0].astype(np.float32)
        assert got[:4].tolist() == [limit, -limit, limit, -limit] and np.isnan(got[4])
        raw = _run("Cast", {"x": x}, 19, to=code, saturate=0)[0].astype(np.float32)
        if dtype == ml_dtypes.float8_e5m2:
            assert raw[:4].tolist() == [np.inf, -np.inf, np.inf, -np.inf] and raw[7] == np.inf
        else:
            assert np.all(np.isnan(raw[:5]))
        like = _run("CastLike", {"x": x, "y": np.zeros(1, dtype)}, 19, saturate=0)[0]
        np.testing.assert_array_equal(like.astype(np.float32), raw)


def test_cast_e8m0_rounding_and_saturation() -> None:
    x = np.array([0.75, 1.5, 1.0, 3.0, 0.0, np.inf, np.nan, 3e38, 1e-40], np.float32)
    e8m0 = TensorProto.FLOAT8E8M0

    def cast(**attrs):
        return _run("Cast", {"x": x}, 25, to=e8m0, **attrs)[0].astype(np.float32)

    up, down, nearest = cast(round_mode="up"), cast(round_mode="down"), cast(round_mode="nearest")
    assert up[:4].tolist() == [1, 2, 1, 4] and down[:4].tolist() == [0.5, 1, 1, 2] and nearest[:4].tolist() == [1, 2, 1, 4]
    tiny, top = 2.0**-127, 2.0**127
    assert up[4] == tiny and up[5] == top and np.isnan(up[6]) and up[7] == top and up[8] == tiny
    raw = cast(saturate=0, round_mode="nearest")
    assert raw[:4].tolist() == [1, 2, 1, 4] and np.all(np.isnan(raw[4:]))
    back = _run("Cast", {"x": np.array([1, 2, 0.5], np.float32).astype(ml_dtypes.float8_e8m0fnu)}, 25, to=TensorProto.FLOAT16)[0]
    assert back.dtype == np.float16 and back.tolist() == [1, 2, 0.5]


def test_cast_sub_byte_types_wrap() -> None:
    x = np.arange(-9, 16).astype(np.float32)
    got = _run("Cast", {"x": x}, 21, to=TensorProto.INT4)[0]
    assert got.dtype == ml_dtypes.int4
    assert got.astype(np.int8).tolist() == [((v + 8) % 16) - 8 for v in range(-9, 16)]
    got = _run("Cast", {"x": np.array([5, 8, 15], np.uint8).astype(ml_dtypes.uint4)}, 21, to=TensorProto.INT4)[0]
    assert got.astype(np.int8).tolist() == [5, -8, -1]
    got = _run("Cast", {"x": np.array([200, -200], np.int32)}, 25, to=TensorProto.INT2)[0]
    assert got.astype(np.int8).tolist() == [0, 0]


def test_cast_to_strings() -> None:
    x = np.array([0.47892547, 1e-7, 1e20, 3.0, -0.0, np.nan, np.inf, -np.inf, 1 / 3, 1e-5], np.float32)
    got = _run("Cast", {"x": x}, 21, to=TensorProto.STRING)[0]
    assert got.dtype == object
    assert got.tolist() == ["0.47892547", "1e-07", "1e+20", "3", "-0", "NaN", "INF", "-INF", "0.33333334", "9.9999997e-06"]
    assert _run("Cast", {"x": np.array(0.1)}, 21, to=TensorProto.STRING)[0].tolist() == "0.1"
    ints = np.array([-5, 0, 7], np.int8)
    assert _run("Cast", {"x": ints}, 21, to=TensorProto.STRING)[0].tolist() == ["-5", "0", "7"]
    assert _run("Cast", {"x": np.array([np.iinfo(np.uint64).max], np.uint64)}, 21, to=TensorProto.STRING)[0].tolist() == [
        "18446744073709551615"
    ]
    assert _run("Cast", {"x": np.array([True, False])}, 21, to=TensorProto.STRING)[0].tolist() == ["1", "0"]
    half = _run("Cast", {"x": np.array([1e-5, 65504], np.float16)}, 21, to=TensorProto.STRING)[0]
    assert half.tolist() == ["1.001358e-05", "65504"]
    assert _run("Cast", {"x": np.zeros((0, 2), np.float32)}, 21, to=TensorProto.STRING)[0].shape == (0, 2)


def test_cast_from_strings() -> None:
    text = np.array(["3.14", " 1e-5", "1E8", "INF", "+INF", "-inf", "NaN", "infinity", "0x10", "12abc", ".5"], dtype=object)
    got = _run("Cast", {"x": text}, 21, to=TensorProto.FLOAT)[0]
    want = np.array([3.14, 1e-5, 1e8, np.inf, np.inf, -np.inf, np.nan, np.inf, 16, 12, 0.5], np.float32)
    np.testing.assert_array_equal(got, want)
    got = _run("Cast", {"x": np.array(["1", "-7", "300", " +5", "100.5", "1e3"], dtype=object)}, 21, to=TensorProto.INT8)[0]
    assert got.tolist() == [1, -7, 44, 5, 100, 1]
    got = _run("Cast", {"x": np.array(["18446744073709551615", "-1"], dtype=object)}, 21, to=TensorProto.UINT64)[0]
    assert got.tolist() == [2**64 - 1, 2**64 - 1]
    assert _run("Cast", {"x": np.array(["1", "0", "2"], dtype=object)}, 21, to=TensorProto.BOOL)[0].tolist() == [True, False, True]
    got = _run("Cast", {"x": np.array(["1000", "-INF"], dtype=object)}, 21, to=TensorProto.FLOAT8E4M3FN)[0]
    assert got.astype(np.float32).tolist() == [448, -448]
    got = _run("Cast", {"x": np.array(["2.5", "1e-3"], dtype=object)}, 21, to=TensorProto.BFLOAT16)[0]
    assert got.dtype == BF16
    like = _run("CastLike", {"x": np.array(["7"], dtype=object), "y": np.zeros(1, np.int16)}, 15)[0]
    assert like.dtype == np.int16 and like.tolist() == [7]
    for bad, target in (("abc", TensorProto.FLOAT), ("abc", TensorProto.INT32), ("1e400", TensorProto.DOUBLE)):
        with pytest.raises(KernelError):
            _run("Cast", {"x": np.array([bad], dtype=object)}, 21, to=target)


def test_string_round_trip_through_castlike() -> None:
    x = np.array([1.5, -2.25], np.float64)
    text = _run("CastLike", {"x": x, "y": np.array(["a"], dtype=object)}, 15)[0]
    assert text.tolist() == ["1.5", "-2.25"]


def test_bitcast() -> None:
    x = np.array([1.0, -2.5, np.inf], np.float32)
    got = _run("BitCast", {"x": x}, 26, to=TensorProto.INT32)[0]
    assert got.tolist() == x.view(np.int32).tolist()
    nibbles = np.array([-1, 7, -8, 0], np.int8).astype(ml_dtypes.int4)
    got = _run("BitCast", {"x": nibbles}, 26, to=TensorProto.UINT4)[0]
    assert got.dtype == ml_dtypes.uint4 and got.astype(np.int32).tolist() == [15, 7, 8, 0]
    back = _run("BitCast", {"x": got}, 26, to=TensorProto.INT4)[0]
    assert back.astype(np.int32).tolist() == [-1, 7, -8, 0]
    floats = _run("BitCast", {"x": got}, 26, to=TensorProto.FLOAT4E2M1)[0]
    assert floats.astype(np.float32).tolist() == [-6, 6, -0.0, 0]
    assert _run("BitCast", {"x": np.array([True, False])}, 26, to=TensorProto.UINT8)[0].tolist() == [1, 0]
    with pytest.raises(Exception):
        _run("BitCast", {"x": x}, 26, to=TensorProto.INT64)


# --- quantization ---------------------------------------------------------------------------------

_QUANT_TARGETS = [
    TensorProto.UINT8, TensorProto.INT8, TensorProto.UINT16, TensorProto.INT16, TensorProto.UINT4, TensorProto.INT4,
    TensorProto.UINT2, TensorProto.INT2, TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E4M3FNUZ, TensorProto.FLOAT8E5M2,
    TensorProto.FLOAT8E5M2FNUZ, TensorProto.FLOAT4E2M1,
]  # fmt: skip


def _scales(mode: str, dtype: np.dtype) -> tuple[np.ndarray, dict]:
    if mode == "tensor":
        return np.array(2.5, dtype), {}
    if mode == "axis":
        return RNG.uniform(0.5, 3, size=6).astype(dtype), {"axis": 1}
    if mode == "negative_axis":
        return RNG.uniform(0.5, 3, size=5).astype(dtype), {"axis": -1}
    return RNG.uniform(0.5, 3, size=(2, 6, 3)).astype(dtype), {"axis": 2, "block_size": 2}


@pytest.mark.parametrize("mode", ["tensor", "axis", "negative_axis", "blocked"])
@pytest.mark.parametrize("target", _QUANT_TARGETS, ids=lambda t: TensorProto.DataType.Name(t))
def test_quantize_dequantize_match_reference(target: int, mode: str) -> None:
    qtype = to_numpy(target)
    for dtype in (np.dtype(np.float32), np.dtype(np.float16), BF16):
        x = (RNG.normal(size=(2, 6, 5)) * 300).astype(dtype)
        scale, attrs = _scales(mode, dtype)
        if _cast.is_integer(qtype):
            zero = np.asarray(RNG.integers(0, 2, size=scale.shape)).astype(qtype)
        else:
            zero = np.zeros(scale.shape, np.float32).astype(qtype)
        for feeds, extra in (
            ({"x": x, "s": scale, "z": zero}, {}),
            ({"x": x, "s": scale}, {"output_dtype": target}),
        ):
            for saturate in ((1, 0) if qtype in _cast.FLOAT8 else (None,)):
                more = dict(attrs, **extra)
                if saturate is not None:
                    more["saturate"] = saturate
                _same(_run("QuantizeLinear", feeds, 25, **more)[0], _reference("QuantizeLinear", feeds, 25, **more)[0])
        q = (RNG.uniform(-3, 3, size=x.shape)).astype(qtype)
        for feeds, extra in (({"x": q, "s": scale, "z": zero}, {}), ({"x": q, "s": scale}, {"output_dtype": TensorProto.FLOAT})):
            more = dict(attrs, **extra)
            _same(_run("DequantizeLinear", feeds, 25, **more)[0], _reference("DequantizeLinear", feeds, 25, **more)[0], rtol=1e-3)


def test_quantize_old_opsets_and_rounding() -> None:
    x = np.array([-1.25, -0.75, 0.5, 1.5, 2.5, 1000, -1000], np.float32)
    got = _run("QuantizeLinear", {"x": x, "s": np.array(1.0, np.float32)}, 10)[0]
    assert got.dtype == np.uint8 and got.tolist() == [0, 0, 0, 2, 2, 255, 0]
    got = _run("QuantizeLinear", {"x": x, "s": np.array(0.5, np.float32), "z": np.array(-3, np.int8)}, 13)[0]
    assert got.tolist() == [-5, -5, -2, 0, 2, 127, -128]
    matrix = _floats(np.dtype(np.float32), (3, 2)) * 10
    per_row = np.array([0.5, 1, 2], np.float32)
    got = _run("QuantizeLinear", {"x": matrix, "s": per_row, "z": np.array([1, 2, 3], np.uint8)}, 13, axis=0)[0]
    np.testing.assert_array_equal(got, np.clip(np.rint(matrix / per_row[:, None]) + [[1], [2], [3]], 0, 255).astype(np.uint8))
    back = _run("DequantizeLinear", {"x": got, "s": per_row, "z": np.array([1, 2, 3], np.uint8)}, 13, axis=0)[0]
    _same(back, (got.astype(np.float32) - np.array([[1], [2], [3]], np.float32)) * per_row[:, None])
    ints = np.array([-(2**31), 2**31 - 1, 5], np.int32)
    _same(_run("DequantizeLinear", {"x": ints, "s": np.array(2.0, np.float32)}, 10)[0], ints.astype(np.float32) * 2)


def test_quantize_precision_and_errors() -> None:
    x = np.array([733.5, 216.4, -561.0], np.float32)
    scale = np.array(2.5, np.float16)
    zero = np.array(0, np.int16)
    by_scale = _run("QuantizeLinear", {"x": x, "s": scale, "z": zero}, 23)[0]
    assert by_scale.tolist() == [294, 87, -224]  # divided in float16, the scale's type
    by_float = _run("QuantizeLinear", {"x": x, "s": scale, "z": zero}, 23, precision=TensorProto.FLOAT)[0]
    assert by_float.tolist() == [293, 87, -224]
    with pytest.raises(KernelError):
        _run("QuantizeLinear", {"x": x, "s": np.array([1, 2], np.float32)}, 21, axis=0)
    with pytest.raises(KernelError):
        _run("QuantizeLinear", {"x": x, "s": scale, "z": zero}, 21, output_dtype=TensorProto.INT8)
    blocked = _floats(np.dtype(np.float32), (4, 5))
    with pytest.raises(KernelError):
        _run("QuantizeLinear", {"x": blocked, "s": np.ones((4, 2), np.float32)}, 21, axis=1, block_size=2)


def test_dynamic_quantize_linear() -> None:
    x = RNG.normal(size=(50, 20)).astype(np.float32) * 3
    got = _run("DynamicQuantizeLinear", {"x": x}, 11, outputs=3)
    want = _reference("DynamicQuantizeLinear", {"x": x}, 11, outputs=3)
    for g, w in zip(got, want):
        _same(g, w)
    zeros = _run("DynamicQuantizeLinear", {"x": np.zeros(4, np.float32)}, 11, outputs=3)
    assert zeros[0].tolist() == [0] * 4 and zeros[1] == 1.0 and zeros[2] == 0  # onnxruntime's scale for an all-zero input
