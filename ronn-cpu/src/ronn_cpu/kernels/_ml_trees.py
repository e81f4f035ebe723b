"""Tree ensembles: TreeEnsembleClassifier and TreeEnsembleRegressor (``ai.onnx.ml`` opsets 1
and 3, with the ``*_as_tensor`` attributes of opset 3) and TreeEnsemble (opset 5).

Every form is compiled into one flat node table (a :class:`_Forest`): interior nodes with a
feature, a threshold and a comparison, leaves holding (target, weight) pairs. Evaluation walks
all (row, tree) pairs one level at a time with numpy index arrays, then sums the reached
leaves' weights per row and target (through a dense [nodes, targets] table when it is small,
else with ``bincount``; MIN and MAX with ``ufunc.at``).

A comparison with a NaN feature is false (true for BRANCH_NEQ) unless the node's
``missing_value_tracks_true`` sends NaN to the true branch, as in onnxruntime.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ronn.kernel import KernelContext, KernelRun

from ._ml_common import (
    apply_post_transform,
    batch_matrix,
    class_labels,
    expand_binary,
    floats_attr,
    ints_attr,
    post_transform_attr,
    probit,
    strings_attr,
    transform_regression,
)
from .ml import KERNELS

# node modes, in TreeEnsemble's (opset 5) numbering; LEAF marks leaves of the flat table
LEQ, LT, GTE, GT, EQ, NEQ, MEMBER, LEAF = range(8)
_MODE_NAMES = {"BRANCH_LEQ": LEQ, "BRANCH_LT": LT, "BRANCH_GTE": GTE, "BRANCH_GT": GT,
               "BRANCH_EQ": EQ, "BRANCH_NEQ": NEQ, "LEAF": LEAF}
_AGGREGATES = ("AVERAGE", "SUM", "MIN", "MAX")

_DENSE_LIMIT = 1 << 22  # largest [nodes, targets] weight table kept dense
_DENSE_BLOCK = 1 << 23  # elements gathered at once from the dense table

# outcome of each mode given how the feature compares with the threshold:
# column = 1 * (x < t) + 2 * (x == t) + 4 * (x > t); column 0 is a NaN feature
_OUTCOMES = np.zeros((8, 8), dtype=bool)
_OUTCOMES[LEQ, [1, 2]] = True
_OUTCOMES[LT, 1] = True
_OUTCOMES[GTE, [2, 4]] = True
_OUTCOMES[GT, 4] = True
_OUTCOMES[EQ, 2] = True
_OUTCOMES[NEQ, [0, 1, 4]] = True


@dataclass
class _Forest:
    """A tree ensemble as flat arrays over all nodes (interior nodes and leaves)."""

    feature: np.ndarray  # int64, the feature each interior node tests
    threshold: np.ndarray  # float32 or float64
    mode: np.ndarray  # int8, LEQ ... LEAF
    missing_true: np.ndarray  # bool, NaN goes to the true branch
    true_next: np.ndarray  # int64 node index
    false_next: np.ndarray
    roots: np.ndarray  # int64 node index of each tree's root
    weight_start: np.ndarray  # int64, each node's first entry in weight_target/weight_value
    weight_count: np.ndarray  # int64, how many weights each node (leaf) holds
    weight_target: np.ndarray  # int64
    weight_value: np.ndarray  # float32 or float64
    n_targets: int
    member_start: np.ndarray | None = None  # BRANCH_MEMBER nodes' slices of member_values
    member_stop: np.ndarray | None = None
    member_values: np.ndarray | None = None  # each node's members, sorted

    def __post_init__(self) -> None:
        interior = self.mode != LEAF
        self.max_feature = int(self.feature[interior].max()) if interior.any() else -1
        modes = np.unique(self.mode[interior])
        self.single_mode = int(modes[0]) if modes.size == 1 and modes[0] != MEMBER else None
        self.has_members = bool((self.mode == MEMBER).any())
        self.has_missing = bool(self.missing_true[interior].any())
        self.dtype = np.result_type(self.threshold.dtype, self.weight_value.dtype, np.float32)
        self.one_weight_per_leaf = bool((self.weight_count[self.mode == LEAF] == 1).all())
        self.is_leaf = self.mode == LEAF
        self.children = np.stack([self.false_next, self.true_next], axis=1).reshape(-1)  # [2 * node + goes_true]
        self._build_dense_table()

    # --- evaluation ----------------------------------------------------------------------

    def prepare(self, x: Any, op: str) -> np.ndarray:
        """The input as a [N, C] float matrix in the forest's precision."""
        x = batch_matrix(x, op)
        if self.max_feature >= x.shape[1]:
            raise ValueError(f"{op}: a node reads feature {self.max_feature} but the input has {x.shape[1]} features")
        dtype = np.float64 if x.dtype == np.float64 else self.dtype
        return x.astype(dtype, copy=False)

    def leaves(self, x: np.ndarray) -> np.ndarray:
        """[N, trees] index of the leaf each row reaches in each tree.

        All (row, tree) walks advance together, one level per step; walks that reach a
        leaf are recorded and dropped, so each step only touches the walks still going.
        """
        rows, trees = x.shape[0], self.roots.size
        reached = np.empty(rows * trees, dtype=np.int64)
        walk = np.arange(rows * trees)  # which (row, tree) pair each live walk is
        node = np.tile(self.roots, rows)
        row_start = np.repeat(np.arange(rows) * x.shape[1], trees)  # the row's offset in x.ravel()
        flat_x = x.reshape(-1)
        for _ in range(self.mode.size + 1):
            done = self.is_leaf[node]
            if done.any():
                reached[walk[done]] = node[done]
                going = ~done
                walk, node, row_start = walk[going], node[going], row_start[going]
            if walk.size == 0:
                return reached.reshape(rows, trees)
            values = flat_x[row_start + self.feature[node]]
            goes_true = self._branch(node, values)
            node = self.children[2 * node + goes_true]
        raise ValueError("the tree ensemble has a cycle: a path never reaches a leaf")

    def _branch(self, nodes: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Whether each (node, feature value) takes the true branch."""
        thresholds = self.threshold[nodes].astype(values.dtype, copy=False)
        if self.single_mode is not None:
            result = _compare(self.single_mode, values, thresholds)
        else:
            code = (values < thresholds) * 1 + (values == thresholds) * 2 + (values > thresholds) * 4
            result = _OUTCOMES[self.mode[nodes], code]
            if self.has_members:
                member = self.mode[nodes] == MEMBER
                result[member] = self._is_member(nodes[member], values[member])
        if self.has_missing:
            result |= self.missing_true[nodes] & np.isnan(values)
        return result

    def _is_member(self, nodes: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Whether each value is in its BRANCH_MEMBER node's set (a binary search per node slice)."""
        low = self.member_start[nodes].copy()
        high = self.member_stop[nodes].copy()
        members = self.member_values
        while True:
            searching = low < high
            if not searching.any():
                break
            middle = (low + high) // 2
            probe = members[np.minimum(middle, members.size - 1)]
            go_right = searching & (probe < values)
            go_left = searching & ~go_right
            low = np.where(go_right, middle + 1, low)
            high = np.where(go_left, middle, high)
        found = low < self.member_stop[nodes]
        found[found] = members[low[found]] == values[found]
        return found

    def aggregate(self, x: np.ndarray, how: str) -> tuple[np.ndarray, np.ndarray]:
        """[N, targets] aggregated leaf weights and whether any leaf gave each a weight."""
        leaves = self.leaves(x)
        if how in ("SUM", "AVERAGE") and self.dense_weights is not None:
            return self._dense_sum(leaves)
        rows = x.shape[0]
        leaves = leaves.reshape(-1)
        row = np.repeat(np.arange(rows), self.roots.size)
        if self.one_weight_per_leaf:
            entry = self.weight_start[leaves]
        else:
            counts = self.weight_count[leaves]
            row = np.repeat(row, counts)
            first = np.repeat(self.weight_start[leaves], counts)
            offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
            entry = first + offsets
        cell = row * self.n_targets + self.weight_target[entry]
        size = rows * self.n_targets
        has = np.bincount(cell, minlength=size) > 0
        values = self.weight_value[entry]
        if how in ("SUM", "AVERAGE"):
            total = np.bincount(cell, weights=values, minlength=size)
        else:
            total = np.full(size, np.inf if how == "MIN" else -np.inf)
            (np.minimum if how == "MIN" else np.maximum).at(total, cell, values)
            total[~has] = 0
        shape = (rows, self.n_targets)
        return total.reshape(shape), has.reshape(shape)

    def _dense_sum(self, leaves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sums through the dense [nodes, targets] weight table, a block of trees at a time."""
        rows, trees = leaves.shape
        total = np.zeros((rows, self.n_targets))
        has = np.zeros((rows, self.n_targets), dtype=bool)
        step = max(1, _DENSE_BLOCK // max(1, rows * self.n_targets))
        for first in range(0, trees, step):
            block = leaves[:, first : first + step]
            total += self.dense_weights[block].sum(axis=1)
            has |= self.dense_has[block].any(axis=1)
        return total, has

    def _build_dense_table(self) -> None:
        """A [nodes, targets] table of summed leaf weights when it is small enough."""
        self.dense_weights = self.dense_has = None
        if self.mode.size * self.n_targets > _DENSE_LIMIT:
            return
        node = np.repeat(np.arange(self.mode.size), self.weight_count)
        cells = node * self.n_targets + self.weight_target
        size = self.mode.size * self.n_targets
        shape = (self.mode.size, self.n_targets)
        self.dense_weights = np.bincount(cells, weights=self.weight_value, minlength=size).reshape(shape)
        self.dense_has = (np.bincount(cells, minlength=size) > 0).reshape(shape)


def _compare(mode: int, values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    if mode == LEQ:
        return values <= thresholds
    if mode == LT:
        return values < thresholds
    if mode == GTE:
        return values >= thresholds
    if mode == GT:
        return values > thresholds
    if mode == EQ:
        return values == thresholds
    return values != thresholds


def _leaf_weights(mode: np.ndarray, node_of_weight: np.ndarray, targets: np.ndarray, values: np.ndarray):
    """CSR arrays (start, count, target, value) of the weights, grouped by node.

    Weights attached to interior nodes are ignored, as onnxruntime does.
    """
    keep = mode[node_of_weight] == LEAF
    node_of_weight, targets, values = node_of_weight[keep], targets[keep], values[keep]
    order = np.argsort(node_of_weight, kind="stable")
    count = np.bincount(node_of_weight, minlength=mode.size).astype(np.int64)
    start = np.cumsum(count) - count
    return start, count, targets[order].astype(np.int64), values[order]


# --- TreeEnsembleClassifier / TreeEnsembleRegressor (opsets 1 and 3) ----------------------


def _legacy_forest(ctx: KernelContext, prefix: str, n_targets: int) -> _Forest:
    """The flat forest of a TreeEnsembleClassifier/Regressor; ``prefix`` is ``class`` or ``target``."""
    tree_ids = ints_attr(ctx, "nodes_treeids")
    node_ids = ints_attr(ctx, "nodes_nodeids")
    if tree_ids is None or node_ids is None or tree_ids.size == 0:
        raise ctx.fail("needs nodes_treeids and nodes_nodeids")
    count = tree_ids.size
    names = strings_attr(ctx, "nodes_modes") or []
    unknown = sorted(set(names) - set(_MODE_NAMES))
    if unknown:
        raise ctx.fail(f"unknown node mode(s) {unknown}")
    mode = np.asarray([_MODE_NAMES[n] for n in names], dtype=np.int8)
    feature = _sized(ctx, ints_attr(ctx, "nodes_featureids"), count, "nodes_featureids")
    threshold = _sized(ctx, floats_attr(ctx, "nodes_values"), count, "nodes_values")
    true_ids = _sized(ctx, ints_attr(ctx, "nodes_truenodeids"), count, "nodes_truenodeids")
    false_ids = _sized(ctx, ints_attr(ctx, "nodes_falsenodeids"), count, "nodes_falsenodeids")
    _sized(ctx, mode, count, "nodes_modes")
    missing = ints_attr(ctx, "nodes_missing_value_tracks_true")
    missing_true = np.zeros(count, bool)
    if missing is not None and missing.size:
        missing_true[: min(count, missing.size)] = missing[:count] == 1

    span = int(node_ids.max()) + 1 if count else 1
    if (node_ids < 0).any():
        raise ctx.fail("node ids must be non-negative")
    keys = tree_ids * span + node_ids
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    if (np.diff(sorted_keys) == 0).any():
        raise ctx.fail("a (tree id, node id) pair appears twice")

    def locate(trees: np.ndarray, nodes: np.ndarray, what: str) -> np.ndarray:
        wanted = trees * span + nodes
        where = np.clip(np.searchsorted(sorted_keys, wanted), 0, count - 1)
        missing_nodes = (sorted_keys[where] != wanted) | (nodes < 0) | (nodes >= span)
        if missing_nodes.any():
            bad = int(np.flatnonzero(missing_nodes)[0])
            raise ctx.fail(f"{what} refers to node {int(nodes[bad])} of tree {int(trees[bad])}, which does not exist")
        return order[where]

    interior = mode != LEAF
    true_next = np.zeros(count, np.int64)
    false_next = np.zeros(count, np.int64)
    true_next[interior] = locate(tree_ids[interior], true_ids[interior], "nodes_truenodeids")
    false_next[interior] = locate(tree_ids[interior], false_ids[interior], "nodes_falsenodeids")
    distinct_trees, first_index = np.unique(tree_ids, return_index=True)
    roots = np.sort(first_index)

    w_trees = ints_attr(ctx, f"{prefix}_treeids")
    w_nodes = ints_attr(ctx, f"{prefix}_nodeids")
    w_ids = ints_attr(ctx, f"{prefix}_ids")
    w_values = floats_attr(ctx, f"{prefix}_weights")
    size = 0 if w_ids is None else w_ids.size
    w_trees = _sized(ctx, w_trees, size, f"{prefix}_treeids")
    w_nodes = _sized(ctx, w_nodes, size, f"{prefix}_nodeids")
    w_values = _sized(ctx, w_values, size, f"{prefix}_weights")
    w_ids = np.zeros(0, np.int64) if w_ids is None else w_ids
    if ((w_ids < 0) | (w_ids >= n_targets)).any():
        raise ctx.fail(f"{prefix}_ids must be in [0, {n_targets})")
    start, counts, targets, values = _leaf_weights(mode, locate(w_trees, w_nodes, f"{prefix}_nodeids"), w_ids, w_values)
    return _Forest(
        feature=feature, threshold=threshold, mode=mode, missing_true=missing_true,
        true_next=true_next, false_next=false_next, roots=roots,
        weight_start=start, weight_count=counts, weight_target=targets, weight_value=values,
        n_targets=n_targets,
    )


def _sized(ctx: KernelContext, values: np.ndarray | None, count: int, name: str) -> np.ndarray:
    """An attribute that must hold ``count`` values."""
    if values is None:
        if count == 0:
            return np.zeros(0, np.float32)
        raise ctx.fail(f"lacks {name}")
    if values.size != count:
        raise ctx.fail(f"{name} has {values.size} values, expected {count}")
    return values


def _base_values(ctx: KernelContext) -> np.ndarray:
    values = floats_attr(ctx, "base_values")
    return np.zeros(0, np.float32) if values is None else values


def _finish_regression(forest: _Forest, totals: np.ndarray, has: np.ndarray, how: str, base: np.ndarray) -> np.ndarray:
    """Averages divided by the number of trees, plus the base values when there is one per target.

    With several targets a target no leaf gave a weight to scores 0, base value or not, as in
    onnxruntime; a single target always gets its base value.
    """
    scores = np.where(has, totals, 0)
    if how == "AVERAGE":
        scores = scores / max(1, forest.roots.size)
    if base.size == forest.n_targets:
        scores = scores + base
    if forest.n_targets > 1:
        scores = np.where(has, scores, 0)
    return scores


@KERNELS.register("TreeEnsembleRegressor", since=(1, 3))
def tree_ensemble_regressor(ctx: KernelContext) -> KernelRun:
    """[N, n_targets] aggregated leaf weights (SUM, AVERAGE, MIN or MAX) plus base values."""
    n_targets = int(ctx.attr("n_targets", 1))
    if n_targets < 1:
        raise ctx.fail(f"n_targets must be positive, got {n_targets}")
    how = ctx.attr("aggregate_function", "SUM")
    if how not in _AGGREGATES:
        raise ctx.fail(f"aggregate_function must be one of {', '.join(_AGGREGATES)}, got {how!r}")
    forest = _legacy_forest(ctx, "target", n_targets)
    base = _base_values(ctx)
    post = post_transform_attr(ctx)

    def run(x: Any) -> tuple[np.ndarray]:
        x = forest.prepare(x, "TreeEnsembleRegressor")
        totals, has = forest.aggregate(x, how)
        scores = _finish_regression(forest, totals, has, how, base).astype(np.float32)
        return (transform_regression(scores, post),)

    return run


@KERNELS.register("TreeEnsembleClassifier", since=(1, 3))
def tree_ensemble_classifier(ctx: KernelContext) -> KernelRun:
    """Labels and [N, classes] scores: summed class weights, base values, a transform.

    Two classes whose weights all go to one class id (the usual binary encoding) follow
    onnxruntime: the label is the second class when the score is > 0.5 (all weights
    positive) or > 0 (mixed signs), and the scores become [1 - s, s], [-s, s] or
    [logistic(-s), logistic(s)] with LOGISTIC.
    """
    labels = class_labels(ctx, "classlabels_int64s", "classlabels_strings")
    if labels is None:
        raise ctx.fail("set classlabels_int64s or classlabels_strings")
    classes = len(labels)
    forest = _legacy_forest(ctx, "class", classes)
    base = _base_values(ctx)
    post = post_transform_attr(ctx)
    class_ids = ints_attr(ctx, "class_ids")
    class_ids = np.zeros(0, np.int64) if class_ids is None else class_ids
    binary_case = classes == 2 and np.unique(class_ids).size == 1
    class_weights = floats_attr(ctx, "class_weights")
    all_positive = class_weights is None or bool((class_weights >= 0).all())

    def run(x: Any) -> tuple[np.ndarray, np.ndarray]:
        x = forest.prepare(x, "TreeEnsembleClassifier")
        totals, has = forest.aggregate(x, "SUM")
        scores = np.where(has, totals, 0)
        if classes == 1:
            scores = scores + base[:1] if base.size == 1 else scores
            result = probit(scores) if post == "PROBIT" else scores
            return labels[np.zeros(len(scores), np.int64)], result.astype(np.float32)
        if classes == 2:
            best, result = _binary_scores(scores, has, base, post, binary_case, all_positive)
            return labels[best], result.astype(np.float32)
        count = min(base.size, classes)
        scores[:, :count] += base[:count]
        has = has.copy()
        has[:, :count] = True
        best = np.argmax(np.where(has, scores, -np.inf), axis=1)
        return labels[best], apply_post_transform(scores.astype(np.float32), post)

    return run


def _binary_scores(
    scores: np.ndarray, has: np.ndarray, base: np.ndarray, post: str, binary_case: bool, all_positive: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Label index and [N, 2] scores of a two-class tree ensemble, onnxruntime's way.

    A class no leaf gave a weight to scores 0 (its base value is dropped); a row with no
    weight for the second class has a single score, expanded to two columns.
    """
    s0, s1 = scores[:, 0].copy(), scores[:, 1].copy()
    h0, h1 = has[:, 0], has[:, 1].copy()
    two_columns = h1.copy()
    if base.size == 2:
        # with a score for the second class onnxruntime keeps only s0 + base[1] and its opposite
        positive_score = base[1] + s0
        s0 = np.where(h1, -positive_score, s0 + base[0])
        s1 = np.where(h1, positive_score, s1 + base[1])
        two_columns[:] = True
    elif base.size == 1:
        s0 = s0 + base[0]
    elif base.size > 2:
        two_columns[:] = True
    weight = np.where(two_columns & h1, s1, np.where(h0, s0, 0))
    if binary_case and all_positive:
        positive, expansion = weight > 0.5, "complement"
    elif binary_case:
        positive, expansion = weight > 0, "opposite"
    else:
        positive, expansion = weight > 0, "opposite" if base.size == 0 else "first"
    s0 = np.where(h0, s0, 0).astype(np.float32)
    s1 = np.where(h1, s1, 0).astype(np.float32)
    pair = apply_post_transform(np.stack([s0, s1], axis=1), post)
    if expansion == "first":  # onnxruntime writes the single score alone
        alone = np.stack([probit(s0) if post == "PROBIT" else s0, np.zeros_like(s0)], axis=1)
    else:
        alone = expand_binary(s0, expansion, post)
    return positive.astype(np.int64), np.where(two_columns[:, None], pair, alone)


# --- TreeEnsemble (opset 5) ---------------------------------------------------------------

_POST_CODES = ("NONE", "SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO", "PROBIT")


def _tensor(ctx: KernelContext, name: str, required: bool = True) -> np.ndarray | None:
    value = ctx.attr(name, None)
    if value is None:
        if required:
            raise ctx.fail(f"lacks {name}")
        return None
    return np.asarray(value).reshape(-1)


def _forest_v5(ctx: KernelContext) -> _Forest:
    """The flat forest of a TreeEnsemble node: interior nodes first, then the leaves."""
    feature = ints_attr(ctx, "nodes_featureids")
    if feature is None:
        raise ctx.fail("lacks nodes_featureids")
    count = feature.size
    splits = _sized(ctx, _tensor(ctx, "nodes_splits"), count, "nodes_splits")
    modes = _sized(ctx, _tensor(ctx, "nodes_modes"), count, "nodes_modes").astype(np.int64)
    if ((modes < LEQ) | (modes > MEMBER)).any():
        raise ctx.fail("nodes_modes must be in [0, 6]")
    true_ids = _sized(ctx, ints_attr(ctx, "nodes_truenodeids"), count, "nodes_truenodeids")
    false_ids = _sized(ctx, ints_attr(ctx, "nodes_falsenodeids"), count, "nodes_falsenodeids")
    true_leaf = _sized(ctx, ints_attr(ctx, "nodes_trueleafs"), count, "nodes_trueleafs").astype(bool)
    false_leaf = _sized(ctx, ints_attr(ctx, "nodes_falseleafs"), count, "nodes_falseleafs").astype(bool)
    targets = ints_attr(ctx, "leaf_targetids")
    if targets is None:
        raise ctx.fail("lacks leaf_targetids")
    leaf_count = targets.size
    weights = _sized(ctx, _tensor(ctx, "leaf_weights"), leaf_count, "leaf_weights")
    n_targets = int(ctx.attr("n_targets", int(targets.max()) + 1 if leaf_count else 1))
    if ((targets < 0) | (targets >= n_targets)).any():
        raise ctx.fail(f"leaf_targetids must be in [0, {n_targets})")
    roots = ints_attr(ctx, "tree_roots")
    if roots is None or ((roots < 0) | (roots >= count)).any():
        raise ctx.fail("tree_roots must index nodes_*")

    def child(ids: np.ndarray, is_leaf: np.ndarray, what: str) -> np.ndarray:
        limit = np.where(is_leaf, leaf_count, count)
        if ((ids < 0) | (ids >= limit)).any():
            raise ctx.fail(f"{what} has an index out of range")
        return np.where(is_leaf, ids + count, ids)

    missing = ints_attr(ctx, "nodes_missing_value_tracks_true")
    missing_true = np.zeros(count + leaf_count, bool)
    if missing is not None and missing.size:
        missing_true[: min(count, missing.size)] = missing[:count] == 1
    dtype = np.float64 if splits.dtype == np.float64 else np.float32
    mode = np.concatenate([modes, np.full(leaf_count, LEAF)]).astype(np.int8)
    forest = _Forest(
        feature=np.concatenate([feature, np.zeros(leaf_count, np.int64)]),
        threshold=np.concatenate([splits.astype(dtype), np.zeros(leaf_count, dtype)]),
        mode=mode,
        missing_true=missing_true,
        true_next=np.concatenate([child(true_ids, true_leaf, "nodes_truenodeids"), np.zeros(leaf_count, np.int64)]),
        false_next=np.concatenate([child(false_ids, false_leaf, "nodes_falsenodeids"), np.zeros(leaf_count, np.int64)]),
        roots=roots,
        weight_start=np.concatenate([np.zeros(count, np.int64), np.arange(leaf_count)]),
        weight_count=np.concatenate([np.zeros(count, np.int64), np.ones(leaf_count, np.int64)]),
        weight_target=targets,
        weight_value=weights.astype(np.float64 if weights.dtype == np.float64 else np.float32),
        n_targets=n_targets,
    )
    if (modes == MEMBER).any():
        _add_members(ctx, forest, modes)
    return forest


def _add_members(ctx: KernelContext, forest: _Forest, modes: np.ndarray) -> None:
    """Split ``membership_values`` (sets separated by NaN, in node order) into sorted slices."""
    values = _tensor(ctx, "membership_values", required=False)
    if values is None:
        raise ctx.fail("BRANCH_MEMBER nodes need membership_values")
    values = values.astype(forest.threshold.dtype)
    separators = np.flatnonzero(np.isnan(values))
    member_nodes = np.flatnonzero(modes == MEMBER)
    if separators.size < member_nodes.size - 1 or separators.size > member_nodes.size:
        raise ctx.fail(f"membership_values holds {separators.size + 1} sets for {member_nodes.size} member nodes")
    bounds = np.concatenate([[-1], separators, [values.size]])
    pieces, start, stop = [], np.zeros(forest.mode.size, np.int64), np.zeros(forest.mode.size, np.int64)
    offset = 0
    for index, node in enumerate(member_nodes):
        members = np.sort(values[bounds[index] + 1 : bounds[index + 1]])
        start[node], stop[node] = offset, offset + members.size
        pieces.append(members)
        offset += members.size
    forest.member_start, forest.member_stop = start, stop
    forest.member_values = np.concatenate(pieces) if pieces else np.zeros(0, forest.threshold.dtype)
    if forest.member_values.size == 0:
        forest.member_values = np.zeros(1, forest.threshold.dtype)  # keeps the binary search's probe in range


@KERNELS.register("TreeEnsemble", since=5)
def tree_ensemble(ctx: KernelContext) -> KernelRun:
    """[N, n_targets] aggregated leaf weights in the input's float type."""
    how_code = int(ctx.attr("aggregate_function", 1))
    post_code = int(ctx.attr("post_transform", 0))
    if not 0 <= how_code < len(_AGGREGATES):
        raise ctx.fail(f"aggregate_function must be in [0, 3], got {how_code}")
    if not 0 <= post_code < len(_POST_CODES):
        raise ctx.fail(f"post_transform must be in [0, 4], got {post_code}")
    how, post = _AGGREGATES[how_code], _POST_CODES[post_code]
    forest = _forest_v5(ctx)
    no_base = np.zeros(0, np.float32)

    def run(x: Any) -> tuple[np.ndarray]:
        x = np.asarray(x)
        out_dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float32)
        values = forest.prepare(x, "TreeEnsemble")
        totals, has = forest.aggregate(values, how)
        scores = _finish_regression(forest, totals, has, how, no_base)
        return (transform_regression(scores, post).astype(out_dtype),)

    return run
