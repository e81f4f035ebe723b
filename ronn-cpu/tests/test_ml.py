"""``ai.onnx.ml`` kernels beyond the node suite, compared with onnxruntime (and with onnx's
reference evaluator for TreeEnsemble): random tree ensembles with every node mode and
missing-value tracks, the binary-classifier conventions, SVMs, linear models, encoders.
"""

from __future__ import annotations

import time
import zlib
from typing import Any

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import ronn

F, D, I64, STR = TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.INT64, TensorProto.STRING
ML = "ai.onnx.ml"
MODES = ["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ"]


def _model(nodes: list, inputs: list, outputs: list, ml_opset: int = 3) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(ML, ml_opset)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=10)


def _node_model(op: str, inputs: list, outputs: list, ml_opset: int = 3, **attrs: Any) -> onnx.ModelProto:
    node = helper.make_node(op, [i.name for i in inputs], [o.name for o in outputs], domain=ML, **attrs)
    return _model([node], inputs, outputs, ml_opset)


def _vi(name: str, elem: int = F, shape: Any = None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _run(model: onnx.ModelProto, feeds: dict) -> list:
    return ronn.InferenceSession(model.SerializeToString()).run(None, feeds)


def _ort(model: onnx.ModelProto, feeds: dict) -> list:
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _same(got: Any, want: Any, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    if want.dtype.kind == "f":
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=True)
    else:
        np.testing.assert_array_equal(got, want)


def _like_ort(model: onnx.ModelProto, feeds: dict, **tolerance: float) -> list:
    got, want = _run(model, feeds), _ort(model, feeds)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        _same(g, w, **tolerance)
    return got


# --- random tree ensembles ----------------------------------------------------------------

GRID = np.arange(-2, 2.5, 0.5, dtype=np.float32)  # thresholds and inputs share it: EQ/NEQ matter


def _random_trees(rng: np.random.Generator, trees: int, depth: int, features: int, modes: list[str],
                  missing: bool) -> tuple[dict[str, list], list[tuple[int, int]]]:
    """Node attributes of random trees (tree ids 10, 11, ...; node ids shuffled, root first)
    and the (tree id, node id) of every leaf."""
    attrs: dict[str, list] = {k: [] for k in (
        "nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_modes", "nodes_values",
        "nodes_truenodeids", "nodes_falsenodeids", "nodes_missing_value_tracks_true", "nodes_hitrates")}
    leaves = []
    for t in range(trees):
        tree_id = 10 + t
        ids = iter(rng.permutation(2 ** (depth + 1)).tolist())
        pending = [(next(ids), 0)]
        while pending:
            node_id, level = pending.pop(0)
            leaf = level == depth or (level > 0 and rng.random() < 0.2)
            attrs["nodes_treeids"].append(tree_id)
            attrs["nodes_nodeids"].append(node_id)
            attrs["nodes_hitrates"].append(1.0)
            if leaf:
                attrs["nodes_featureids"].append(0)
                attrs["nodes_modes"].append("LEAF")
                attrs["nodes_values"].append(0.0)
                attrs["nodes_truenodeids"].append(0)
                attrs["nodes_falsenodeids"].append(0)
                attrs["nodes_missing_value_tracks_true"].append(0)
                leaves.append((tree_id, node_id))
                continue
            true_id, false_id = next(ids), next(ids)
            attrs["nodes_featureids"].append(int(rng.integers(features)))
            attrs["nodes_modes"].append(str(rng.choice(modes)))
            attrs["nodes_values"].append(float(rng.choice(GRID)))
            attrs["nodes_truenodeids"].append(true_id)
            attrs["nodes_falsenodeids"].append(false_id)
            attrs["nodes_missing_value_tracks_true"].append(int(missing and rng.random() < 0.5))
            pending += [(true_id, level + 1), (false_id, level + 1)]
    return attrs, leaves


def _grid_inputs(rng: np.random.Generator, rows: int, features: int, nan: bool) -> np.ndarray:
    x = rng.choice(GRID, size=(rows, features)) + rng.choice([0, 0, 0.25], size=(rows, features))
    if nan:
        x[rng.random((rows, features)) < 0.15] = np.nan
    return x.astype(np.float32)


def _regressor(rng, *, trees=5, depth=4, features=4, n_targets=1, modes=MODES, missing=True,
               weights_per_leaf=1, **attrs) -> onnx.ModelProto:
    nodes, leaves = _random_trees(rng, trees, depth, features, modes, missing)
    weights: dict[str, list] = {"target_treeids": [], "target_nodeids": [], "target_ids": [], "target_weights": []}
    for tree_id, node_id in leaves:
        for target in rng.choice(n_targets, size=min(weights_per_leaf, n_targets), replace=False):
            weights["target_treeids"].append(tree_id)
            weights["target_nodeids"].append(node_id)
            weights["target_ids"].append(int(target))
            weights["target_weights"].append(float(np.float32(rng.uniform(-1, 1))))
    return _node_model("TreeEnsembleRegressor", [_vi("X")], [_vi("Y")], n_targets=n_targets,
                       **nodes, **weights, **attrs)


@pytest.mark.parametrize("aggregate", ["SUM", "AVERAGE", "MIN", "MAX"])
@pytest.mark.parametrize("n_targets", [1, 3])
def test_tree_regressor_modes_and_missing_values(aggregate: str, n_targets: int) -> None:
    rng = np.random.default_rng(zlib.crc32(f"{aggregate}{n_targets}".encode()))
    base = [0.5, -0.25, 1.0][:n_targets]
    model = _regressor(rng, n_targets=n_targets, weights_per_leaf=2, aggregate_function=aggregate,
                       base_values=base) if n_targets > 1 else _regressor(rng, aggregate_function=aggregate,
                                                                           base_values=base)
    _like_ort(model, {"X": _grid_inputs(rng, 300, 4, nan=True)})


@pytest.mark.parametrize("post", ["NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO", "PROBIT"])
@pytest.mark.parametrize("n_targets", [1, 3])
def test_tree_regressor_post_transforms(post: str, n_targets: int) -> None:
    rng = np.random.default_rng(7)
    model = _regressor(rng, n_targets=n_targets, weights_per_leaf=n_targets, post_transform=post)
    _like_ort(model, {"X": _grid_inputs(rng, 100, 4, nan=False)}, rtol=1e-5, atol=1e-5)


def test_tree_regressor_double_tensors_opset3() -> None:
    rng = np.random.default_rng(8)
    nodes, leaves = _random_trees(rng, 4, 5, 3, ["BRANCH_LEQ"], missing=False)
    values = np.asarray(nodes.pop("nodes_values"), np.float64) + 1e-9  # only double separates these
    nodes.pop("nodes_hitrates")
    weights = rng.standard_normal(len(leaves))
    model = _node_model(
        "TreeEnsembleRegressor", [_vi("X", D)], [_vi("Y", D)], **nodes,
        nodes_values_as_tensor=helper.make_tensor("v", D, [values.size], values),
        target_treeids=[t for t, _ in leaves], target_nodeids=[n for _, n in leaves],
        target_ids=[0] * len(leaves),
        target_weights_as_tensor=helper.make_tensor("w", D, [len(leaves)], weights),
        base_values_as_tensor=helper.make_tensor("b", D, [1], [0.125]),
    )
    x = _grid_inputs(rng, 200, 3, nan=False).astype(np.float64)
    x[::3] = values[0]  # exactly on a threshold in double, above it in float
    (got,) = _run(model, {"X": x})
    assert got.dtype == np.float32
    nodes["nodes_values"] = values
    leaf_weight = {leaf: w for leaf, w in zip(leaves, weights)}
    want = [0.125 + sum(leaf_weight[leaf] for leaf in _walk(nodes, row)) for row in x]
    np.testing.assert_allclose(got[:, 0], want, rtol=1e-6)


def _walk(nodes: dict, row: np.ndarray) -> list[tuple[int, int]]:
    """The (tree id, node id) of the leaf ``row`` reaches in each tree (BRANCH_LEQ trees only)."""
    index = {(t, n): i for i, (t, n) in enumerate(zip(nodes["nodes_treeids"], nodes["nodes_nodeids"]))}
    reached = []
    for tree in dict.fromkeys(nodes["nodes_treeids"]):
        i = nodes["nodes_treeids"].index(tree)
        while nodes["nodes_modes"][i] != "LEAF":
            goes_true = row[nodes["nodes_featureids"][i]] <= nodes["nodes_values"][i]
            following = nodes["nodes_truenodeids" if goes_true else "nodes_falsenodeids"][i]
            i = index[tree, following]
        reached.append((tree, nodes["nodes_nodeids"][i]))
    return reached


def test_tree_regressor_int_inputs_and_1d() -> None:
    rng = np.random.default_rng(9)
    model = _regressor(rng, modes=["BRANCH_LT", "BRANCH_GTE"], missing=False)
    x = rng.integers(-2, 3, size=(50, 4)).astype(np.int64)
    want = _ort(model, {"X": x.astype(np.float32)})[0]  # onnxruntime has no int64 kernel
    model.graph.input[0].type.tensor_type.elem_type = I64
    _same(_run(model, {"X": x})[0], want)
    _same(_run(model, {"X": x[0]})[0], want[:1])


def _classifier(rng, labels, *, class_ids_for=lambda leaf, rng: [0], weight=lambda rng: rng.uniform(-1, 1),
                trees=4, depth=3, features=3, **attrs) -> onnx.ModelProto:
    nodes, leaves = _random_trees(rng, trees, depth, features, MODES, missing=True)
    weights: dict[str, list] = {"class_treeids": [], "class_nodeids": [], "class_ids": [], "class_weights": []}
    for leaf in leaves:
        for class_id in class_ids_for(leaf, rng):
            weights["class_treeids"].append(leaf[0])
            weights["class_nodeids"].append(leaf[1])
            weights["class_ids"].append(int(class_id))
            weights["class_weights"].append(float(np.float32(weight(rng))))
    key = "classlabels_strings" if isinstance(labels[0], str) else "classlabels_int64s"
    label_type = STR if isinstance(labels[0], str) else I64
    return _node_model("TreeEnsembleClassifier", [_vi("X")], [_vi("Y", label_type), _vi("Z")],
                       **{key: labels}, **nodes, **weights, **attrs)


BINARY_CASES = {
    # name: (class ids of a leaf, weight, attributes)
    # weights on both class ids: onnxruntime returns 1 or 0 instead of the label, ronn the label
    "probabilities": (lambda leaf, rng: [0], lambda rng: rng.uniform(0, 1), {}),
    "probabilities-logistic": (lambda leaf, rng: [0], lambda rng: rng.uniform(0, 1), {"post_transform": "LOGISTIC"}),
    "margins-logistic-base1": (lambda leaf, rng: [0], lambda rng: rng.uniform(-1, 1),
                               {"post_transform": "LOGISTIC", "base_values": [0.3]}),
    "margins-none": (lambda leaf, rng: [0], lambda rng: rng.uniform(-1, 1), {}),
    "margins-softmax": (lambda leaf, rng: [0], lambda rng: rng.uniform(-1, 1), {"post_transform": "SOFTMAX"}),
    "second-class-ids": (lambda leaf, rng: [1], lambda rng: rng.uniform(-1, 1), {}),
    "both-classes": (lambda leaf, rng: [0, 1], lambda rng: rng.uniform(0, 1), {}),
    "both-classes-base2": (lambda leaf, rng: [0, 1], lambda rng: rng.uniform(-1, 1), {"base_values": [0.2, 0.2]}),
    "some-leaves-one-class": (lambda leaf, rng: [0] if leaf[1] % 2 else [0, 1], lambda rng: rng.uniform(-1, 1),
                              {"post_transform": "LOGISTIC"}),
    "margins-base2": (lambda leaf, rng: [0], lambda rng: rng.uniform(-1, 1),
                      {"base_values": [0.1, 0.1], "post_transform": "LOGISTIC"}),
}


@pytest.mark.parametrize("case", sorted(BINARY_CASES))
def test_tree_binary_classifier_conventions(case: str) -> None:
    class_ids, weight, attrs = BINARY_CASES[case]
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    model = _classifier(rng, [4, 9], class_ids_for=class_ids, weight=weight, **attrs)
    x = _grid_inputs(rng, 200, 3, nan=True)
    (label, scores), (want_label, want_scores) = _run(model, {"X": x}), _ort(model, {"X": x})
    if case.startswith(("both", "some")):
        want_label = np.array([4, 9])[want_label]
    _same(label, want_label)
    _same(scores, want_scores)


@pytest.mark.parametrize("post", ["NONE", "SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO", "PROBIT"])
def test_tree_multiclass_classifier(post: str) -> None:
    rng = np.random.default_rng(11)
    model = _classifier(rng, ["a", "b", "c", "d"], class_ids_for=lambda leaf, rng: rng.choice(4, 2, replace=False),
                        weight=lambda rng: rng.uniform(0, 1), post_transform=post, base_values=[0.1, 0.0, 0.2, -0.1])
    _like_ort(model, {"X": _grid_inputs(rng, 200, 3, nan=True)}, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("ml_opset", [1, 3])
def test_tree_classifier_leaf_only_tree_and_unused_class(ml_opset: int) -> None:
    """A tree that is a single leaf; class 2 never gets a weight (it cannot win)."""
    model = _node_model(
        "TreeEnsembleClassifier", [_vi("X")], [_vi("Y", I64), _vi("Z")], ml_opset=ml_opset,
        classlabels_int64s=[0, 1, 2],
        nodes_treeids=[0, 0, 0, 1], nodes_nodeids=[0, 1, 2, 0], nodes_featureids=[0, 0, 0, 0],
        nodes_modes=["BRANCH_LEQ", "LEAF", "LEAF", "LEAF"], nodes_values=[0.0, 0, 0, 0],
        nodes_truenodeids=[1, 0, 0, 0], nodes_falsenodeids=[2, 0, 0, 0],
        class_treeids=[0, 0, 1], class_nodeids=[1, 2, 0], class_ids=[0, 1, 0],
        class_weights=[-1.0, -2.0, -0.5],
    )
    _like_ort(model, {"X": np.array([[-1.0], [1.0]], np.float32)})


def test_tree_evaluation_is_vectorised() -> None:
    rng = np.random.default_rng(12)
    model = _regressor(rng, trees=100, depth=8, features=10, modes=["BRANCH_LEQ"], missing=False)
    x = rng.standard_normal((20000, 10)).astype(np.float32)
    session = ronn.InferenceSession(model.SerializeToString())
    start = time.perf_counter()
    (got,) = session.run(None, {"X": x})
    assert time.perf_counter() - start < 5.0
    _same(got, _ort(model, {"X": x})[0], rtol=1e-5, atol=1e-5)


# --- TreeEnsemble (opset 5) ---------------------------------------------------------------


def _tree_ensemble_v5(**attrs: Any) -> onnx.ModelProto:
    for name in ("nodes_splits", "leaf_weights", "membership_values"):
        if name in attrs:
            values = np.asarray(attrs[name], np.float32)
            attrs[name] = helper.make_tensor(name, F, [values.size], values)
    modes = np.asarray(attrs["nodes_modes"], np.uint8)
    attrs["nodes_modes"] = helper.make_tensor("nodes_modes", TensorProto.UINT8, [modes.size], modes)
    return _node_model("TreeEnsemble", [_vi("X")], [_vi("Y")], ml_opset=5, **attrs)


def _membership_model(aggregate: int, second_set: list[float]) -> onnx.ModelProto:
    # tree 0: x0 in {1, 3, 5} ? (x1 <= 0.5 ? L0 : L1) : L2
    # tree 1: x1 != 2 ? L3 : (x0 in second_set ? L4 : L5)
    return _tree_ensemble_v5(
        nodes_featureids=[0, 1, 1, 0], nodes_modes=[6, 0, 5, 6], nodes_splits=[0, 0.5, 2, 0],
        nodes_truenodeids=[1, 0, 3, 4], nodes_trueleafs=[0, 1, 1, 1],
        nodes_falsenodeids=[2, 1, 3, 5], nodes_falseleafs=[1, 1, 0, 1],
        nodes_missing_value_tracks_true=[1, 0, 0, 0],
        membership_values=[5, 1, 3, np.nan, *second_set, np.nan],
        leaf_targetids=[0, 1, 0, 1, 0, 1], leaf_weights=[1, 10, 100, 1000, 10000, 100000],
        tree_roots=[0, 2], n_targets=2, aggregate_function=aggregate,
    )


MEMBERSHIP_X = np.array([[1, 0], [3, 1], [2, 0], [np.nan, 2], [5, 2], [4, np.nan], [0, 2], [7, 2]], np.float32)


@pytest.mark.parametrize("aggregate", [0, 1, 2, 3])
def test_tree_ensemble_v5_membership(aggregate: int) -> None:
    model = _membership_model(aggregate, [7.0, -2.0])  # onnxruntime wants integral members
    _like_ort(model, {"X": MEMBERSHIP_X})
    # an empty set (onnxruntime refuses it): compare with onnx's reference, whose MIN/MAX
    # leave a target no leaf reached at the float extremes where ronn and onnxruntime give 0
    empty = _membership_model(aggregate, [])
    (got,) = _run(empty, {"X": MEMBERSHIP_X})
    want = ReferenceEvaluator(empty).run(None, {"X": MEMBERSHIP_X})[0]
    want[np.abs(want) == np.finfo(np.float32).max] = 0
    np.testing.assert_allclose(got, want)


def test_tree_ensemble_v5_float16_and_post_transform() -> None:
    model = _tree_ensemble_v5(
        nodes_featureids=[0], nodes_modes=[0], nodes_splits=[0.0], nodes_truenodeids=[0],
        nodes_trueleafs=[1], nodes_falsenodeids=[1], nodes_falseleafs=[1],
        leaf_targetids=[0, 1], leaf_weights=[2.0, -1.0], tree_roots=[0], n_targets=2, post_transform=2,
    )
    x = np.array([[-1.0], [1.0]], np.float32)
    (got,) = _run(model, {"X": x})
    # onnxruntime reads post_transform 2 as SOFTMAX; the specification says LOGISTIC
    np.testing.assert_allclose(got, [[1 / (1 + np.exp(-2)), 0.5], [0.5, 1 / (1 + np.exp(1))]], rtol=1e-6)
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT16
    model.graph.output[0].type.tensor_type.elem_type = TensorProto.FLOAT16
    model.graph.node[0].attribute[-1].t.data_type = TensorProto.FLOAT16  # nodes_splits stays 0
    (half,) = _run(model, {"X": x.astype(np.float16)})
    assert half.dtype == np.float16
    np.testing.assert_allclose(half, got, rtol=1e-3)


# --- SVMs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("post", ["NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO", "PROBIT"])
@pytest.mark.parametrize("classes", [2, 3])
def test_svm_classifier_liblinear(post: str, classes: int) -> None:
    rng = np.random.default_rng(20)
    labels = ["x", "y", "z"][:classes]
    model = _node_model(
        "SVMClassifier", [_vi("X")], [_vi("Y", STR), _vi("Z")], classlabels_strings=labels,
        coefficients=rng.standard_normal(classes * 4).astype(np.float32).tolist(), rho=[0.1],
        kernel_type="LINEAR", kernel_params=[0.0, 0.0, 0.0], post_transform=post,
    )
    x = rng.standard_normal((60, 4)).astype(np.float32)
    _like_ort(model, {"X": x}, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("post", ["NONE", "LOGISTIC", "SOFTMAX"])
@pytest.mark.parametrize("kernel", ["POLY", "SIGMOID", "RBF"])
def test_svm_classifier_binary_libsvm(post: str, kernel: str) -> None:
    rng = np.random.default_rng(21)
    model = _node_model(
        "SVMClassifier", [_vi("X")], [_vi("Y", I64), _vi("Z")], classlabels_ints=[3, 7],
        vectors_per_class=[3, 2], support_vectors=rng.standard_normal(15).astype(np.float32).tolist(),
        coefficients=[0.5, -0.25, 1.0, -0.75, -0.5], rho=[0.05], kernel_type=kernel,
        kernel_params=[0.4, 0.3, 3.0], post_transform=post,
    )
    _like_ort(model, {"X": rng.standard_normal((40, 3)).astype(np.float32)}, rtol=1e-4, atol=1e-5)


def test_svm_classifier_probabilities_four_classes() -> None:
    rng = np.random.default_rng(22)
    pairs = 6
    model = _node_model(
        "SVMClassifier", [_vi("X")], [_vi("Y", I64), _vi("Z")], classlabels_ints=[0, 1, 2, 3],
        vectors_per_class=[2, 3, 2, 2], support_vectors=rng.standard_normal(9 * 3).astype(np.float32).tolist(),
        coefficients=rng.uniform(-1, 1, 3 * 9).astype(np.float32).tolist(),
        rho=rng.uniform(-0.5, 0.5, pairs).astype(np.float32).tolist(),
        prob_a=rng.uniform(-3, -1, pairs).astype(np.float32).tolist(),
        prob_b=rng.uniform(-0.2, 0.2, pairs).astype(np.float32).tolist(),
        kernel_type="RBF", kernel_params=[0.5, 0.0, 3.0],
    )
    got = _like_ort(model, {"X": rng.standard_normal((80, 3)).astype(np.float32)}, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[1].sum(axis=1), 1, rtol=1e-4)


@pytest.mark.parametrize("one_class", [0, 1])
def test_svm_regressor(one_class: int) -> None:
    rng = np.random.default_rng(23)
    model = _node_model(
        "SVMRegressor", [_vi("X")], [_vi("Y")], n_supports=4,
        support_vectors=rng.standard_normal(12).astype(np.float32).tolist(),
        coefficients=[0.5, -1.0, 0.25, 0.75], rho=[0.1], kernel_type="POLY", kernel_params=[0.5, 1.0, 2.0],
        one_class=one_class,
    )
    _like_ort(model, {"X": rng.standard_normal((30, 3)).astype(np.float32)}, rtol=1e-4, atol=1e-5)
    linear = _node_model("SVMRegressor", [_vi("X")], [_vi("Y")], coefficients=[1.0, -2.0, 0.5], rho=[0.25],
                          kernel_params=[0.1, 0.0, 1.0])
    _like_ort(linear, {"X": rng.standard_normal((30, 3)).astype(np.float32)})


# --- linear models ------------------------------------------------------------------------


@pytest.mark.parametrize("post", ["NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO", "PROBIT"])
def test_linear_classifier_multiclass(post: str) -> None:
    rng = np.random.default_rng(30)
    model = _node_model(
        "LinearClassifier", [_vi("X")], [_vi("Y", STR), _vi("Z")], classlabels_strings=["a", "b", "c"],
        coefficients=rng.standard_normal(12).astype(np.float32).tolist(), intercepts=[0.1, -0.2, 0.0],
        post_transform=post,
    )
    _like_ort(model, {"X": rng.standard_normal((40, 4)).astype(np.float32)}, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("post", ["NONE", "LOGISTIC"])
def test_linear_classifier_one_score_column(post: str) -> None:
    rng = np.random.default_rng(31)
    model = _node_model(
        "LinearClassifier", [_vi("X", D)], [_vi("Y", I64), _vi("Z")], coefficients=[0.5, -1.0, 2.0],
        intercepts=[0.25], post_transform=post, classlabels_ints=[5, 8],
    )
    _like_ort(model, {"X": rng.standard_normal((40, 3))})


def test_linear_classifier_one_score_column_one_label() -> None:
    model = _node_model(
        "LinearClassifier", [_vi("X")], [_vi("Y", STR), _vi("Z")], coefficients=[1.0, -1.0],
        classlabels_strings=["only"], post_transform="LOGISTIC",
    )
    label, scores = _run(model, {"X": np.array([[2.0, 1.0], [0.0, 1.0]], np.float32)})
    _same(label, np.array(["1", "0"], dtype=object))  # onnxruntime's convention without two labels
    _same(scores, np.array([[1.0], [-1.0]], np.float32))  # one column: only PROBIT would apply


@pytest.mark.parametrize("post", ["NONE", "PROBIT", "SOFTMAX"])
@pytest.mark.parametrize("targets", [1, 2])
def test_linear_regressor(post: str, targets: int) -> None:
    rng = np.random.default_rng(32)
    model = _node_model(
        "LinearRegressor", [_vi("X")], [_vi("Y")], coefficients=(rng.uniform(-0.1, 0.1, 3 * targets)).tolist(),
        intercepts=[0.5] * targets, targets=targets, post_transform=post,
    )
    # PROBIT's float32 erf-inverse amplifies rounding differences near 0.5
    _like_ort(model, {"X": rng.standard_normal((20, 3)).astype(np.float32)}, rtol=1e-5, atol=1e-4)


# --- preprocessing ------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["MAX", "L1", "L2"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.int32])
def test_normalizer(norm: str, dtype: type) -> None:
    x = np.array([[-1, -2, 0], [0, 0, 0], [1, -3, 2], [4, 4, 2]]).astype(dtype)
    elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    model = _node_model("Normalizer", [_vi("X", elem)], [_vi("Y")], norm=norm)
    _like_ort(model, {"X": x})
    _like_ort(model, {"X": x[2]})


def test_scaler_binarizer_imputer() -> None:
    x = np.array([[1.0, np.nan, 3.0], [np.nan, 5.0, -1.0]], np.float32)
    scaler = _node_model("Scaler", [_vi("X", D)], [_vi("Y")], offset=[1.0, 2.0, 3.0], scale=[0.5, 2.0, -1.0])
    _like_ort(scaler, {"X": np.nan_to_num(x).astype(np.float64)})
    one_scale = _node_model("Scaler", [_vi("X")], [_vi("Y")], offset=[1.0, 2.0, 3.0], scale=[0.5])
    _same(_run(one_scale, {"X": np.ones((2, 3), np.float32)})[0], np.array([[0, -0.5, -1]] * 2, np.float32))
    imputer = _node_model("Imputer", [_vi("X")], [_vi("Y")], imputed_value_floats=[9.0, 8.0, 7.0],
                          replaced_value_float=float("nan"))
    _like_ort(imputer, {"X": x})
    ints = _node_model("Imputer", [_vi("X", I64)], [_vi("Y", I64)], imputed_value_int64s=[42], replaced_value_int64=-1)
    _like_ort(ints, {"X": np.array([[-1, 2], [3, -1]], np.int64)})
    binarizer = _node_model("Binarizer", [_vi("X")], [_vi("Y")], threshold=0.5)
    _like_ort(binarizer, {"X": np.array([[0.5, 0.6], [-1.0, 2.0]], np.float32)})
    (got,) = _run(binarizer, {"X": np.array([np.nan, 1.0], np.float32)})  # onnxruntime refuses NaN
    np.testing.assert_array_equal(got, [np.nan, 1.0])
    doubles = _node_model("Binarizer", [_vi("X", D)], [_vi("Y", D)], threshold=0.5)
    _same(_run(doubles, {"X": np.array([0.5, 0.75])})[0], np.array([0.0, 1.0]))


def test_one_hot_encoder() -> None:
    ints = _node_model("OneHotEncoder", [_vi("X", D)], [_vi("Y")], cats_int64s=[7, 2, 5], zeros=1)
    _like_ort(ints, {"X": np.array([[2.0, 7.9], [3.0, 5.0]])})
    strings = _node_model("OneHotEncoder", [_vi("X", STR)], [_vi("Y")], cats_strings=["a", "b"], zeros=0)
    _like_ort(strings, {"X": np.array([["a"], ["b"]], dtype=object)})
    with pytest.raises(Exception, match="category"):
        _run(strings, {"X": np.array([["c"]], dtype=object)})


def test_array_feature_extractor_and_feature_vectorizer() -> None:
    afe = _node_model("ArrayFeatureExtractor", [_vi("X", STR), _vi("I", I64)], [_vi("Y", STR)])
    x = np.array([["a", "b", "c"], ["d", "e", "f"]], dtype=object)
    _like_ort(afe, {"X": x, "I": np.array([2, 0])})
    _like_ort(afe, {"X": x[0], "I": np.array([1])})
    with pytest.raises(Exception, match="out of range"):
        _run(afe, {"X": x, "I": np.array([3])})
    fv = _node_model("FeatureVectorizer", [_vi("A", D), _vi("B", D)], [_vi("Y")], inputdimensions=[1, 3])
    _like_ort(fv, {"A": np.array([[1, 9], [2, 9]], np.float64), "B": np.array([[0.5], [1.5]])})
    mixed = _node_model("FeatureVectorizer", [_vi("A", I64), _vi("B", D)], [_vi("Y")], inputdimensions=[1, 3])
    (got,) = _run(mixed, {"A": np.array([[1, 9], [2, 9]], np.int64), "B": np.array([[0.5], [1.5]])})
    _same(got, np.array([[1, 0.5, 0, 0], [2, 1.5, 0, 0]], np.float32))


# --- encoders and maps --------------------------------------------------------------------


def test_label_encoder_v1() -> None:
    to_int = _node_model("LabelEncoder", [_vi("X", STR)], [_vi("Y", I64)], ml_opset=1,
                         classes_strings=["a", "b", "c"], default_int64=-7)
    _like_ort(to_int, {"X": np.array(["c", "a", "zz"], dtype=object)})
    to_str = _node_model("LabelEncoder", [_vi("X", I64)], [_vi("Y", STR)], ml_opset=1,
                         classes_strings=["a", "b", "c"], default_string="?")
    _like_ort(to_str, {"X": np.array([[2, 0], [5, -1]], np.int64)})


@pytest.mark.parametrize("opset", [2, 4])
def test_label_encoder_float_keys(opset: int) -> None:
    model = _node_model("LabelEncoder", [_vi("X")], [_vi("Y", STR)], ml_opset=opset,
                        keys_floats=[0.5, float("nan"), 2.0], values_strings=["half", "nan", "two"])
    x = np.array([[0.5, np.nan], [3.0, 2.0]], np.float32)
    (got,) = _run(model, {"X": x})
    _same(got, np.array([["half", "nan"], ["_Unused", "two"]], dtype=object))
    if opset == 4:  # onnxruntime's opset-2 kernel never matches NaN keys
        _like_ort(model, {"X": x})


@pytest.mark.parametrize("opset", [2, 4])
def test_label_encoder_repeated_keys(opset: int) -> None:
    ints = _node_model("LabelEncoder", [_vi("X", I64)], [_vi("Y")], ml_opset=opset,
                       keys_int64s=[3, 1, 3], values_floats=[0.5, 1.5, 2.5], default_float=-1.0)
    x = np.array([3, 1, 0], np.int64)
    if opset == 2:  # the first wins, as in onnxruntime
        got = _like_ort(ints, {"X": x})
    else:  # the specification says the last wins (onnxruntime keeps the first)
        got = _run(ints, {"X": x})
        _same(got[0], ReferenceEvaluator(ints).run(None, {"X": x})[0])
    assert got[0][0] == (0.5 if opset == 2 else 2.5)


def test_label_encoder_v4_tensors() -> None:
    keys = helper.make_tensor("k", TensorProto.INT32, [3], [1, 2, 3])
    values = helper.make_tensor("v", TensorProto.INT16, [3], [10, 20, 30])
    default = helper.make_tensor("d", TensorProto.INT16, [1], [-5])
    model = _node_model("LabelEncoder", [_vi("X", TensorProto.INT32)], [_vi("Y", TensorProto.INT16)], ml_opset=4,
                        keys_tensor=keys, values_tensor=values, default_tensor=default)
    (got,) = _run(model, {"X": np.array([3, 4, 1], np.int32)})
    _same(got, np.array([30, -5, 10], np.int16))
    doubles = _node_model("LabelEncoder", [_vi("X", STR)], [_vi("Y", D)], ml_opset=4,
                          keys_strings=["x", "y"],
                          values_tensor=helper.make_tensor("v", D, [2], [0.25, 0.5]))
    (got,) = _run(doubles, {"X": np.array(["y", "w"], dtype=object)})
    _same(got, np.array([0.5, -0.0]))


def test_category_mapper() -> None:
    attrs = {"cats_strings": ["cat", "dog"], "cats_int64s": [1, 2], "default_int64": 99, "default_string": "none"}
    to_int = _node_model("CategoryMapper", [_vi("X", STR)], [_vi("Y", I64)], **attrs)
    _like_ort(to_int, {"X": np.array([["dog", "cow"]], dtype=object)})
    to_str = _node_model("CategoryMapper", [_vi("X", I64)], [_vi("Y", STR)], **attrs)
    _like_ort(to_str, {"X": np.array([1, 3, 2], np.int64)})


def test_zip_map_and_dict_vectorizer() -> None:
    seq_map = helper.make_sequence_type_proto(helper.make_map_type_proto(STR, helper.make_tensor_type_proto(F, None)))
    zip_map = _node_model("ZipMap", [_vi("X")], [helper.make_value_info("Z", seq_map)], classlabels_strings=["p", "q"])
    x = np.array([[0.25, 0.75], [0.1, 0.9]], np.float32)
    got, want = _run(zip_map, {"X": x})[0], _ort(zip_map, {"X": x})[0]
    assert got == want and isinstance(got, list) and all(type(k) is str for k in got[0])

    map_type = helper.make_map_type_proto(STR, helper.make_tensor_type_proto(F, None))
    vectorizer = _node_model("DictVectorizer", [helper.make_value_info("X", map_type)], [_vi("Y")],
                             string_vocabulary=["a", "b", "c"])
    _like_ort(vectorizer, {"X": {"c": 3.0, "a": 1.5}})
    (rows,) = _run(vectorizer, {"X": {"b": 2.0}})
    _same(rows, np.array([[0, 2.0, 0]], np.float32))


@pytest.mark.parametrize("form, extra", [("DENSE", {}), ("SPARSE", {"max_map": 6})])
@pytest.mark.parametrize("cast_to, out_type", [("TO_FLOAT", 1), ("TO_INT64", 7), ("TO_STRING", 8)])
def test_cast_map_matches_onnxruntime(form, extra, cast_to, out_type) -> None:
    node = helper.make_node("CastMap", ["m"], ["y"], domain="ai.onnx.ml", cast_to=cast_to, map_form=form, **extra)
    map_type = helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, None))
    graph = helper.make_graph([node], "g", [helper.make_value_info("m", map_type)], [helper.make_tensor_value_info("y", out_type, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 1)]).SerializeToString()
    feed = {"m": {3: 1.5, 1: 2.25, 4: -1.75}}
    (expected,) = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, feed)
    (actual,) = ronn.InferenceSession(model).run(None, feed)
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    if cast_to == "TO_STRING":  # onnxruntime pads sparse strings with "0.f"; zero is "0.000000"
        expected = np.where(expected == "0.f", "0.000000", expected)
    np.testing.assert_array_equal(actual, expected)
