"""ronn runs scikit-learn models converted by skl2onnx as onnxruntime does.

Each test trains a small model on fixed-seed synthetic data, converts it (with and without
ZipMap), runs both runtimes on the same rows and compares every output: labels exactly,
scores and probabilities at rtol 1e-4 / atol 1e-5, ZipMap outputs dict by dict.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
skl2onnx = pytest.importorskip("skl2onnx")
onnxruntime = pytest.importorskip("onnxruntime")

from sklearn.compose import ColumnTransformer  # noqa: E402
from sklearn.datasets import make_classification, make_regression  # noqa: E402
from sklearn.ensemble import (  # noqa: E402
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer  # noqa: E402
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import (  # noqa: E402
    Binarizer,
    LabelEncoder,
    MinMaxScaler,
    Normalizer,
    OneHotEncoder,
    StandardScaler,
)
from sklearn.svm import SVC, SVR, LinearSVC, OneClassSVM  # noqa: E402
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor  # noqa: E402
from skl2onnx import convert_sklearn, to_onnx  # noqa: E402
from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType  # noqa: E402

import ronn  # noqa: E402

RTOL, ATOL = 1e-4, 1e-5
OPSETS = {"": 17, "ai.onnx.ml": 3}

# SVC(probability=True) is deprecated in recent scikit-learn; it still converts and runs
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")


# --- data ---------------------------------------------------------------------------------


def _classification(classes: int, seed: int = 0, rows: int = 120) -> tuple[np.ndarray, np.ndarray]:
    x, y = make_classification(
        n_samples=rows, n_features=5, n_informative=4, n_redundant=0, n_classes=classes,
        n_clusters_per_class=1, random_state=seed,
    )
    return x.astype(np.float32), y


def _regression(seed: int = 0, rows: int = 120) -> tuple[np.ndarray, np.ndarray]:
    x, y = make_regression(n_samples=rows, n_features=5, n_informative=4, noise=0.5, random_state=seed)
    return x.astype(np.float32), y.astype(np.float32)


def _iris_like(seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Three Gaussian clusters in four dimensions, labelled 0, 1, 2."""
    rng = np.random.default_rng(seed)
    centers = np.array([[5.0, 3.4, 1.5, 0.2], [5.9, 2.8, 4.3, 1.3], [6.6, 3.0, 5.5, 2.0]])
    x = np.concatenate([c + 0.35 * rng.standard_normal((40, 4)) for c in centers])
    y = np.repeat(np.arange(3), 40)
    return x.astype(np.float32), y


# --- comparison ---------------------------------------------------------------------------


def _assert_same(name: str, got: Any, want: Any) -> None:
    if isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{name}: {type(got)} vs {len(want)} rows"
        for row, (g, w) in enumerate(zip(got, want)):
            if isinstance(w, dict):
                assert isinstance(g, dict), f"{name}[{row}] is {type(g).__name__}, not dict"
                assert list(g) == list(w), f"{name}[{row}] keys {list(g)} != {list(w)}"
                assert all(type(a) is type(b) for a, b in zip(g, w)), f"{name}[{row}] key types differ"
                np.testing.assert_allclose(
                    [g[k] for k in w], [w[k] for k in w], rtol=RTOL, atol=ATOL, err_msg=f"{name}[{row}]"
                )
            else:
                _assert_same(f"{name}[{row}]", g, w)
        return
    want = np.asarray(want)
    got = np.asarray(got)
    assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
    if want.dtype.kind in "fc":
        assert got.dtype == want.dtype, f"{name}: dtype {got.dtype} != {want.dtype}"
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=name)
    else:
        if want.dtype == object:
            assert got.dtype == object, f"{name}: dtype {got.dtype} != object"
        else:
            assert got.dtype == want.dtype, f"{name}: dtype {got.dtype} != {want.dtype}"
        np.testing.assert_array_equal(got, want, err_msg=name)


def _check(onx: Any, feeds: dict[str, np.ndarray]) -> None:
    """Both runtimes give the same outputs on ``feeds``."""
    data = onx.SerializeToString()
    expected = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)
    session = ronn.InferenceSession(data)
    names = [o.name for o in session.get_outputs()]
    got = session.run(None, feeds)
    assert len(got) == len(expected)
    for name, g, w in zip(names, got, expected):
        _assert_same(name, g, w)


def _check_model(model: Any, x: np.ndarray, *, zipmap_too: bool = True, **kwargs: Any) -> None:
    """Convert ``model`` (with and without ZipMap when it is a classifier) and compare."""
    variants = [{}]
    if zipmap_too and hasattr(model, "predict_proba"):
        variants.append({"zipmap": False})
    for options in variants:
        onx = to_onnx(model, x[:1], target_opset=OPSETS, options={id(model): options} if options else None, **kwargs)
        _check(onx, {onx.graph.input[0].name: x})


# --- linear models ------------------------------------------------------------------------


@pytest.mark.parametrize("classes", [2, 3])
def test_logistic_regression(classes: int) -> None:
    x, y = _classification(classes)
    _check_model(LogisticRegression(max_iter=500).fit(x, y), x)


def test_logistic_regression_string_labels() -> None:
    x, y = _classification(3, seed=4)
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    _check_model(LogisticRegression(max_iter=500).fit(x, names), x)


@pytest.mark.parametrize("make", [LinearRegression, lambda: Ridge(alpha=0.5)], ids=["linear", "ridge"])
def test_linear_regressors(make: Callable[[], Any]) -> None:
    x, y = _regression()
    _check_model(make().fit(x, y), x)


def test_multi_target_ridge() -> None:
    x, y = _regression(seed=2)
    _check_model(Ridge().fit(x, np.stack([y, -2 * y + 1], axis=1)), x)


@pytest.mark.parametrize("classes", [2, 3])
def test_linear_svc(classes: int) -> None:
    x, y = _classification(classes, seed=5)
    _check_model(LinearSVC(max_iter=5000).fit(x, y), x)


# --- trees --------------------------------------------------------------------------------


@pytest.mark.parametrize("classes", [2, 3])
def test_decision_tree_classifier(classes: int) -> None:
    x, y = _classification(classes, seed=6)
    _check_model(DecisionTreeClassifier(max_depth=5, random_state=0).fit(x, y), x)


def test_decision_tree_regressor() -> None:
    x, y = _regression(seed=6)
    _check_model(DecisionTreeRegressor(max_depth=6, random_state=0).fit(x, y), x)


@pytest.mark.parametrize("classes", [2, 3])
def test_random_forest_classifier(classes: int) -> None:
    x, y = _classification(classes, seed=7)
    _check_model(RandomForestClassifier(n_estimators=12, max_depth=5, random_state=0).fit(x, y), x)


def test_random_forest_regressor() -> None:
    x, y = _regression(seed=7)
    _check_model(RandomForestRegressor(n_estimators=12, max_depth=5, random_state=0).fit(x, y), x)


def test_random_forest_multi_target_regressor() -> None:
    x, y = _regression(seed=8)
    model = RandomForestRegressor(n_estimators=6, max_depth=4, random_state=0)
    _check_model(model.fit(x, np.stack([y, y**2 / 100], axis=1)), x)


@pytest.mark.parametrize("classes", [2, 3])
def test_gradient_boosting_classifier(classes: int) -> None:
    x, y = _classification(classes, seed=9)
    _check_model(GradientBoostingClassifier(n_estimators=15, max_depth=3, random_state=0).fit(x, y), x)


def test_gradient_boosting_regressor() -> None:
    x, y = _regression(seed=9)
    _check_model(GradientBoostingRegressor(n_estimators=15, max_depth=3, random_state=0).fit(x, y), x)


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_hist_gradient_boosting(kind: str) -> None:
    if kind == "classifier":
        x, y = _classification(3, seed=10)
        model = HistGradientBoostingClassifier(max_iter=10, random_state=0)
    else:
        x, y = _regression(seed=10)
        model = HistGradientBoostingRegressor(max_iter=10, random_state=0)
    x = x.copy()
    x[::7, 1] = np.nan  # missing values take the learned branch
    model.fit(x, y)
    try:
        to_onnx(model, x[:1], target_opset=OPSETS)
    except Exception as exc:  # skl2onnx cannot convert it with this numpy/scikit-learn
        pytest.skip(f"skl2onnx does not convert {type(model).__name__}: {type(exc).__name__}")
    _check_model(model, x)


# --- support vector machines --------------------------------------------------------------


SVC_CASES = [
    (kernel, probability, classes)
    for kernel in ("rbf", "linear")
    for probability in (False, True)
    for classes in (2, 3)
] + [("poly", False, 3), ("sigmoid", False, 3), ("poly", True, 2)]


@pytest.mark.parametrize("kernel, probability, classes", SVC_CASES)
def test_svc(kernel: str, probability: bool, classes: int) -> None:
    x, y = _classification(classes, seed=11, rows=90)
    model = SVC(kernel=kernel, probability=probability, random_state=0, gamma="scale", coef0=0.5)
    _check_model(model.fit(x, y), x)


@pytest.mark.parametrize("kernel", ["rbf", "linear"])
def test_svr(kernel: str) -> None:
    x, y = _regression(seed=12, rows=90)
    _check_model(SVR(kernel=kernel, C=10.0).fit(x, y), x)


def test_one_class_svm() -> None:
    x, _ = _classification(2, seed=13, rows=80)
    model = OneClassSVM(nu=0.2, gamma="scale").fit(x)
    try:
        onx = to_onnx(model, x[:1], target_opset=OPSETS)
    except Exception as exc:
        pytest.skip(f"skl2onnx does not convert OneClassSVM: {type(exc).__name__}")
    _check(onx, {onx.graph.input[0].name: x})


# --- preprocessing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        StandardScaler,
        lambda: MinMaxScaler(feature_range=(-1, 2)),
        lambda: Normalizer(norm="l1"),
        lambda: Normalizer(norm="l2"),
        lambda: Normalizer(norm="max"),
        lambda: Binarizer(threshold=0.3),
    ],
    ids=["standard", "minmax", "norm-l1", "norm-l2", "norm-max", "binarizer"],
)
def test_scalers(make: Callable[[], Any]) -> None:
    x, _ = _iris_like()
    _check_model(make().fit(x), x)


@pytest.mark.parametrize("strategy", ["mean", "median", "constant"])
def test_simple_imputer(strategy: str) -> None:
    x, _ = _iris_like()
    x = x.copy()
    x[::5, 0] = np.nan
    x[::3, 2] = np.nan
    model = SimpleImputer(strategy=strategy, fill_value=-1.0).fit(x)
    _check_model(model, x)


def test_one_hot_encoder_strings() -> None:
    rng = np.random.default_rng(14)
    colors = rng.choice(["red", "green", "blue"], size=(30, 1))
    sizes = rng.choice(["S", "M", "L", "XL"], size=(30, 1))
    x = np.concatenate([colors, sizes], axis=1).astype(object)
    model = OneHotEncoder(handle_unknown="ignore").fit(x[:25])
    x[0, 0] = "purple"  # unknown: a row of zeros
    onx = convert_sklearn(model, initial_types=[("x", StringTensorType([None, 2]))], target_opset=OPSETS)
    _check(onx, {"x": x})


def test_one_hot_encoder_ints() -> None:
    rng = np.random.default_rng(15)
    x = rng.integers(0, 5, size=(30, 3)).astype(np.int64)
    model = OneHotEncoder(handle_unknown="ignore").fit(x)
    onx = convert_sklearn(model, initial_types=[("x", Int64TensorType([None, 3]))], target_opset=OPSETS)
    _check(onx, {"x": x})


def test_label_encoded_targets() -> None:
    """Labels encoded with LabelEncoder: a classifier over the encoded ints and the
    LabelEncoder's own conversion (strings -> ints)."""
    x, y = _iris_like(seed=16)
    names = np.array(["small", "medium", "large"])[y]
    encoder = LabelEncoder().fit(names)
    _check_model(DecisionTreeClassifier(max_depth=4, random_state=0).fit(x, encoder.transform(names)), x)
    onx = convert_sklearn(encoder, initial_types=[("y", StringTensorType([None]))], target_opset=OPSETS)
    probe = np.array([*names[:10], "huge"], dtype=object)  # "huge" is unknown
    _check(onx, {"y": probe})


# --- pipelines ----------------------------------------------------------------------------


def test_scaler_classifier_pipeline() -> None:
    x, y = _iris_like(seed=17)
    pipe = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=500))]).fit(x, y)
    for options in (None, {LogisticRegression: {"zipmap": False}}):
        onx = to_onnx(pipe, x[:1], target_opset=OPSETS, options=options)
        _check(onx, {onx.graph.input[0].name: x})


def test_column_transformer_pipeline() -> None:
    rng = np.random.default_rng(18)
    rows = 60
    numeric = rng.standard_normal((rows, 3)).astype(np.float32)
    city = rng.choice(["paris", "rome", "oslo"], size=(rows, 1)).astype(object)
    y = ((numeric[:, 0] > 0) ^ (city[:, 0] == "rome")).astype(np.int64)
    preprocess = ColumnTransformer(
        [("num", StandardScaler(), [0, 1, 2]), ("cat", OneHotEncoder(handle_unknown="ignore"), [3])]
    )
    forest = RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0)
    pipe = Pipeline([("prep", preprocess), ("clf", forest)])
    frame = np.concatenate([numeric.astype(object), city], axis=1)
    pipe.fit(frame, y)
    onx = convert_sklearn(
        pipe,
        initial_types=[("num", FloatTensorType([None, 3])), ("cat", StringTensorType([None, 1]))],
        target_opset=OPSETS,
    )
    # the column indices count over the inputs' columns laid side by side
    _check(onx, {"num": numeric, "cat": city})
