"""The layout pass (``channels_last_layout``) on hand-built IR, with throwaway numpy kernels.

No ronn-cpu and no onnx: a numpy Conv, a ``ronn::FusedConv`` kernel that declares
``supports_channels_last`` (and runs channels-last nodes between transposes), and the few
standard operators the graphs use. Every optimized graph must give the outputs of the graph
as stored.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import ronn
from ronn import hookimpl
from ronn.dtypes import DataType
from ronn.ir import Graph, Model, Node, TensorType, ValueInfo
from ronn.optimizer import plugin as optimizer_plugin
from ronn.provider import ExecutionProvider

Level = ronn.GraphOptimizationLevel
CPU = "CPUExecutionProvider"
RNG = np.random.default_rng(5)


class Cpu(ExecutionProvider):
    name = CPU


def conv2d(x, w, b=None, strides=(1, 1), pads=(0, 0, 0, 0), group=1):
    """A plain NCHW convolution (float64 inside)."""
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    padded = np.pad(x.astype(np.float64), [(0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])])
    oh = (padded.shape[2] - kh) // strides[0] + 1
    ow = (padded.shape[3] - kw) // strides[1] + 1
    y = np.zeros((n, m, oh, ow))
    per = m // group
    for g in range(group):
        xs = padded[:, g * cg : (g + 1) * cg]
        for i, j in itertools.product(range(kh), range(kw)):
            window = xs[:, :, i : i + (oh - 1) * strides[0] + 1 : strides[0], j : j + (ow - 1) * strides[1] + 1 : strides[1]]
            y[:, g * per : (g + 1) * per] += np.einsum("nchw,mc->nmhw", window, w[g * per : (g + 1) * per, :, i, j])
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y.astype(x.dtype)


def _conv_attrs(ctx):
    return dict(
        strides=tuple(ctx.attr("strides", (1, 1))),
        pads=tuple(ctx.attr("pads", (0, 0, 0, 0))),
        group=int(ctx.attr("group", 1)),
    )


ACT = {
    "Identity": lambda v: v,
    "Relu": lambda v: np.maximum(v, 0),
    "HardSigmoid": lambda v: np.clip(v * 0.2 + 0.5, 0, 1),
    "HardSwish": lambda v: v * np.clip(v / 6 + 0.5, 0, 1),
}


def conv_kernel(ctx):
    attrs = _conv_attrs(ctx)
    return lambda x, w, b=None: (conv2d(x, w, b, **attrs),)


def fused_conv_kernel(ctx):
    attrs = _conv_attrs(ctx)
    act = ACT[ctx.attr("activation", "Identity")]
    layout = int(ctx.attr("channels_last", 0))

    def run(x, w, b=None, z=None):
        if layout == 1:
            x = x.transpose(0, 3, 1, 2)
        y = conv2d(x, w, b, **attrs)
        if layout:
            y = np.ascontiguousarray(y.transpose(0, 2, 3, 1))
        return (act(y if z is None else y + z),)

    return run


fused_conv_kernel.supports_channels_last = True


def squeeze_kernel(ctx):
    first = ACT[ctx.attr("activation", "Identity")]
    gate = ACT[ctx.attr("gate_activation", "Identity")]

    def run(x, w1, b1, w2, b2):
        mean = x.mean(axis=(1, 2))
        hidden = first(mean @ w1[:, :, 0, 0].T + b1)
        return ((x * gate(hidden @ w2[:, :, 0, 0].T + b2)[:, None, None, :]).astype(x.dtype),)

    return run


def _reduce(fn):
    def factory(ctx):
        def run(x, axes=None):
            chosen = tuple(ctx.attr("axes")) if axes is None else tuple(int(a) for a in axes)
            return (fn(x, axis=chosen, keepdims=True),)

        return run

    return factory


KERNELS = {
    "Conv": conv_kernel,
    "Relu": lambda ctx: (lambda x: (np.maximum(x, 0),)),
    "HardSwish": lambda ctx: (lambda x: (x * np.clip(x / 6 + 0.5, 0, 1),)),
    "HardSigmoid": lambda ctx: (lambda x: (np.clip(x * 0.2 + 0.5, 0, 1),)),
    "Add": lambda ctx: (lambda a, b: (a + b,)),
    "Mul": lambda ctx: (lambda a, b: (a * b,)),
    "Transpose": lambda ctx: (lambda x: (np.ascontiguousarray(np.transpose(x, ctx.attr("perm"))),)),
    "GlobalAveragePool": lambda ctx: (lambda x: (x.mean(axis=(2, 3), keepdims=True),)),
    "ReduceMean": _reduce(np.mean),
    "MaxPool": lambda ctx: (lambda x: (x[:, :, ::2, ::2].copy(),)),  # stands in for any non-convertible op
    "Flatten": lambda ctx: (lambda x: (x.reshape(x.shape[0], -1),)),
}


class Kernels:
    @hookimpl
    def ronn_register_providers(self, registry):
        registry.add("PlainExecutionProvider", lambda options: type("Plain", (Cpu,), {"name": "PlainExecutionProvider"})(options))

    @hookimpl
    def ronn_register_kernels(self, registry):
        for provider in (CPU, "PlainExecutionProvider"):
            for op, factory in KERNELS.items():
                if op != "Add" or provider != CPU:  # the conftest's plugin has Add on the CPU
                    registry.add(op, factory, since_version=1, provider=provider)
        registry.add("FusedConv", fused_conv_kernel, domain="ronn", provider=CPU)
        registry.add("SqueezeExcitation", squeeze_kernel, domain="ronn", provider=CPU)

        def no_layout(ctx):  # a FusedConv that knows nothing of channels_last
            return fused_conv_kernel(ctx)

        registry.add("FusedConv", no_layout, domain="ronn", provider="PlainExecutionProvider")


@pytest.fixture
def host(make_host):
    return make_host(Kernels(), optimizer_plugin)


def tensor(name, *shape):
    return ValueInfo(name, TensorType(DataType.FLOAT, tuple(shape)))


_WEIGHTS: dict[tuple, np.ndarray] = {}


def weight(*shape, key: str = ""):
    """Random weights, the same for every call with the same shape and key (so that a model
    factory builds the same model twice)."""
    if (shape, key) not in _WEIGHTS:
        w = (RNG.standard_normal(shape) * 0.3).astype(np.float32)
        w.flags.writeable = False
        _WEIGHTS[(shape, key)] = w
    return _WEIGHTS[(shape, key)]


def session(model, host, level=Level.ORT_ENABLE_ALL, providers=(CPU,), disabled=""):
    options = ronn.SessionOptions()
    options.graph_optimization_level = level
    if disabled:
        options.add_session_config_entry("optimization.disabled_optimizers", disabled)
    return ronn.InferenceSession(model, options, providers=list(providers), plugin_host=host)


def ops(s):
    return [(f"{n.domain}::" if n.domain else "") + n.op_type for n in s.model.graph.nodes]


def check_same(factory, host, feeds, **kwargs):
    plain = session(factory(), host, Level.ORT_DISABLE_ALL)
    optimized = session(factory(), host, **kwargs)
    names = [o.name for o in plain.get_outputs()]
    for name, e, a in zip(names, plain.run(None, feeds), optimized.run(None, feeds)):
        assert e.shape == a.shape, name
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5, err_msg=name)
    return optimized


def mobile_block(opset: int = 17) -> Model:
    """Stem, pointwise expansion, depthwise, squeeze-and-excitation, projection + residual,
    global pooling; "block" is also a graph output."""
    nodes = [
        Node("Conv", ["x", "stem_w", "stem_b"], ["stem_pre"], attributes={"strides": [2, 2], "pads": [1, 1, 1, 1]}),
        Node("HardSwish", ["stem_pre"], ["stem"]),
        Node("Conv", ["stem", "expand_w"], ["expand_pre"]),
        Node("Relu", ["expand_pre"], ["expand"]),
        Node("Conv", ["expand", "dw_w", "dw_b"], ["dw_pre"], attributes={"pads": [1, 1, 1, 1], "group": 12}),
        Node("Relu", ["dw_pre"], ["dw"]),
        Node("GlobalAveragePool", ["dw"], ["mean"]),
        Node("Conv", ["mean", "fc1_w", "fc1_b"], ["fc1_pre"]),
        Node("Relu", ["fc1_pre"], ["fc1"]),
        Node("Conv", ["fc1", "fc2_w", "fc2_b"], ["fc2_pre"]),
        Node("HardSigmoid", ["fc2_pre"], ["gate"]),
        Node("Mul", ["dw", "gate"], ["scaled"]),
        Node("Conv", ["scaled", "project_w"], ["project"]),
        Node("Add", ["project", "stem"], ["block"]),
        Node("Mul", ["block", "scale"], ["affine"]),
        Node("GlobalAveragePool", ["affine"], ["pooled"]),
        Node("Flatten", ["pooled"], ["y"]),
    ]
    inits = {
        "stem_w": weight(4, 3, 3, 3), "stem_b": weight(4), "expand_w": weight(12, 4, 1, 1),
        "dw_w": weight(12, 1, 3, 3), "dw_b": weight(12, key="dw"), "fc1_w": weight(3, 12, 1, 1),
        "fc1_b": weight(3), "fc2_w": weight(12, 3, 1, 1), "fc2_b": weight(12, key="fc2"),
        "project_w": weight(4, 12, 1, 1), "scale": weight(4, 1, 1),
    }  # fmt: skip
    shapes = {
        "stem_pre": (1, 4, 5, 4), "stem": (1, 4, 5, 4), "expand_pre": (1, 12, 5, 4), "expand": (1, 12, 5, 4),
        "dw_pre": (1, 12, 5, 4), "dw": (1, 12, 5, 4), "mean": (1, 12, 1, 1), "fc1_pre": (1, 3, 1, 1),
        "fc1": (1, 3, 1, 1), "fc2_pre": (1, 12, 1, 1), "gate": (1, 12, 1, 1), "scaled": (1, 12, 5, 4),
        "project": (1, 4, 5, 4), "affine": (1, 4, 5, 4), "pooled": (1, 4, 1, 1),
    }  # fmt: skip
    graph = Graph(nodes, [tensor("x", 1, 3, 9, 7)], [tensor("y", 1, 4), tensor("block", 1, 4, 5, 4)], inits,
                  {name: tensor(name, *shape) for name, shape in shapes.items()})  # fmt: skip
    return Model(graph, {"": opset})


FEEDS = {"x": RNG.standard_normal((1, 3, 9, 7)).astype(np.float32)}


def test_the_pass_runs_at_the_layout_level(host):
    levels = {p.name: p.level for p in host.optimizers().passes(Level.ORT_ENABLE_ALL)}
    assert levels["channels_last_layout"] == Level.ORT_ENABLE_LAYOUT
    extended = session(mobile_block(), host, Level.ORT_ENABLE_EXTENDED)
    assert "Transpose" not in ops(extended)


@pytest.mark.parametrize("opset", [17, 18])
def test_a_mobile_block_goes_channels_last(host, opset):
    optimized = check_same(lambda: mobile_block(opset), host, FEEDS)
    got = ops(optimized)
    convs = [n for n in optimized.model.graph.nodes if n.op_type == "FusedConv"]
    assert [n.attributes["channels_last"] for n in convs] == [2, 1, 1, 1]  # the stem reads x as it is
    assert got.count("ronn::SqueezeExcitation") == 1 and "Mul" in got  # the per-channel Mul stays
    # "block" leaves as a graph output, "affine" for the pooling, which runs channels-first
    assert got.count("Transpose") == 2 and "GlobalAveragePool" in got and "ReduceMean" not in got
    scale = next(n for n in optimized.model.graph.nodes if n.op_type == "Mul").inputs[1]
    assert optimized.model.graph.initializers[scale].shape == (1, 1, 4)
    # values inside the region have fresh names; the originals are only graph outputs
    produced = {o for n in optimized.model.graph.nodes for o in n.outputs}
    assert {"stem", "dw", "scaled"}.isdisjoint(produced) and "block" in produced
    # a value the region renamed is still fetched with its original layout
    plain = session(mobile_block(opset), host, Level.ORT_DISABLE_ALL)
    for a, e in zip(optimized.run(["dw", "scaled"], FEEDS), plain.run(["dw", "scaled"], FEEDS)):
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5)


def test_nothing_changes_without_a_channels_last_kernel(host):
    optimized = session(mobile_block(), host, providers=("PlainExecutionProvider",))
    assert "Transpose" not in ops(optimized)
    assert all(not n.attributes.get("channels_last") for n in optimized.model.graph.nodes)


def test_the_pass_can_be_disabled(host):
    optimized = session(mobile_block(), host, disabled="channels_last_layout")
    assert "Transpose" not in ops(optimized)


def test_regions_without_depthwise_convolutions_stay(host):
    def model():
        nodes = [
            Node("Conv", ["x", "w1"], ["a"], attributes={"pads": [1, 1, 1, 1]}),
            Node("Relu", ["a"], ["b"]),
            Node("Conv", ["b", "w2"], ["y"]),
        ]
        graph = Graph(nodes, [tensor("x", 1, 3, 6, 6)], [tensor("y", 1, 2, 6, 6)],
                      {"w1": weight(5, 3, 3, 3), "w2": weight(2, 5, 1, 1)},
                      {"a": tensor("a", 1, 5, 6, 6), "b": tensor("b", 1, 5, 6, 6)})  # fmt: skip
        return Model(graph, {"": 17})

    optimized = check_same(model, host, {"x": RNG.standard_normal((1, 3, 6, 6)).astype(np.float32)})
    assert "Transpose" not in ops(optimized)


def test_a_region_that_does_not_pay_stays(host):
    """One depthwise convolution between operators that cannot go channels-last."""

    def model():
        nodes = [
            Node("MaxPool", ["x"], ["a"]),
            Node("Conv", ["a", "w"], ["b"], attributes={"pads": [1, 1, 1, 1], "group": 4}),
            Node("MaxPool", ["b"], ["y"]),
        ]
        graph = Graph(nodes, [tensor("x", 1, 4, 8, 8)], [tensor("y", 1, 4, 2, 2)], {"w": weight(4, 1, 3, 3)},
                      {"a": tensor("a", 1, 4, 4, 4), "b": tensor("b", 1, 4, 4, 4)})  # fmt: skip
        return Model(graph, {"": 17})

    optimized = check_same(model, host, {"x": RNG.standard_normal((1, 4, 8, 8)).astype(np.float32)})
    assert "Transpose" not in ops(optimized)


def test_transposes_around_a_region_cancel(host):
    """A channels-last input made channels-first for the convolutions, and their result made
    channels-last again: the region reads and writes channels-last, with no Transpose."""

    def model():
        nodes = [
            Node("Transpose", ["x"], ["x_first"], attributes={"perm": [0, 3, 1, 2]}),
            Node("Conv", ["x_first", "w1"], ["a"], attributes={"pads": [1, 1, 1, 1], "group": 6}),
            Node("Relu", ["a"], ["b"]),
            Node("Conv", ["b", "w2"], ["c"]),
            Node("Transpose", ["c"], ["y"], attributes={"perm": [0, 2, 3, 1]}),
        ]
        graph = Graph(nodes, [tensor("x", 2, 5, 4, 6)], [tensor("y", 2, 5, 4, 3)],
                      {"w1": weight(6, 1, 3, 3), "w2": weight(3, 6, 1, 1)},
                      {"x_first": tensor("x_first", 2, 6, 5, 4), "a": tensor("a", 2, 6, 5, 4),
                       "b": tensor("b", 2, 6, 5, 4), "c": tensor("c", 2, 3, 5, 4)})  # fmt: skip
        return Model(graph, {"": 17})

    optimized = check_same(model, host, {"x": RNG.standard_normal((2, 5, 4, 6)).astype(np.float32)})
    assert ops(optimized) == ["ronn::FusedConv", "ronn::FusedConv"]  # the Relu fused into the first
    assert optimized.model.graph.nodes[-1].outputs == ["y"]


def test_a_value_read_outside_leaves_through_one_transpose(host):
    """A region value also read by an operator outside it is transposed back once, under its
    own name, and both readers see the right values."""

    def model():
        nodes = [
            Node("Conv", ["x", "w1"], ["a"], attributes={"pads": [1, 1, 1, 1], "group": 4}),
            Node("Conv", ["a", "w2"], ["b"]),
            Node("Conv", ["b", "w3"], ["c"], attributes={"pads": [1, 1, 1, 1], "group": 4}),
            Node("Conv", ["c", "w4"], ["d"]),
            Node("MaxPool", ["b"], ["side"]),
            Node("Flatten", ["d"], ["y"]),
        ]
        graph = Graph(nodes, [tensor("x", 1, 4, 4, 4)], [tensor("y", 1, 64), tensor("side", 1, 4, 2, 2)],
                      {"w1": weight(4, 1, 3, 3), "w2": weight(4, 4, 1, 1), "w3": weight(4, 1, 3, 3, key="3"),
                       "w4": weight(4, 4, 1, 1, key="4")},
                      {v: tensor(v, 1, 4, 4, 4) for v in "abcd"})  # fmt: skip
        return Model(graph, {"": 17})

    optimized = check_same(model, host, {"x": RNG.standard_normal((1, 4, 4, 4)).astype(np.float32)})
    transposes = [n for n in optimized.model.graph.nodes if n.op_type == "Transpose"]
    assert sorted(n.outputs[0] for n in transposes) == ["b", "d"]
