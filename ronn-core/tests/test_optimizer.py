"""The built-in optimizer passes on hand-built IR, with a throwaway numpy kernel plugin.

No ronn-cpu and no onnx here: the kernels below are just enough to fold constants and to run
the rewritten graphs, and the fused ``ronn`` kernels are registered (or not) per test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import ronn
from ronn import hookimpl
from ronn.dtypes import DataType
from ronn.functions import inline_functions
from ronn.ir import Function, Graph, Model, Node, TensorType, ValueInfo
from ronn.optimizer import plugin as optimizer_plugin
from ronn.plugins import PluginHost
from ronn.provider import ExecutionProvider
from ronn.registry import OptimizerContext

Level = ronn.GraphOptimizationLevel
CPU = "CPUExecutionProvider"


class Cpu(ExecutionProvider):
    name = CPU


def _unary(fn):
    return lambda ctx: (lambda x: (fn(ctx, x),))


def _binary(fn):
    return lambda ctx: (lambda a, b: (fn(a, b),))


def _axes(ctx, given):
    if "axes" in ctx.node.attributes:
        return [int(a) for a in ctx.node.attributes["axes"]]
    return [int(a) for a in given] if given is not None else None


def _unsqueeze(ctx):
    def run(x, axes=None):
        out = x
        for axis in sorted(a % (x.ndim + len(_axes(ctx, axes))) for a in _axes(ctx, axes)):
            out = np.expand_dims(out, axis)
        return (out,)

    return run


def _squeeze(ctx):
    def run(x, axes=None):
        given = _axes(ctx, axes)
        return (np.squeeze(x, axis=tuple(a % x.ndim for a in given)) if given else np.squeeze(x),)

    return run


def _reshape(ctx):
    def run(x, shape):
        target = [x.shape[i] if s == 0 else int(s) for i, s in enumerate(shape)]
        return (x.reshape(target),)

    return run


def _reduce_mean(ctx):
    def run(x, axes=None):
        return (x.mean(axis=tuple(_axes(ctx, axes)), keepdims=True),)

    return run


def _conv1x1(ctx):
    def run(x, w, b=None):
        y = np.einsum("oc,nchw->nohw", w[:, :, 0, 0], x)
        return (y + b.reshape(1, -1, 1, 1) if b is not None else y,)

    return run


def _batchnorm(ctx):
    eps = float(ctx.attr("epsilon", 1e-5))

    def run(x, scale, bias, mean, var):
        shape = (1, -1, 1, 1)
        y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * scale.reshape(shape) + bias.reshape(shape)
        return (y.astype(x.dtype),)

    return run


def _erf(x):
    return np.vectorize(math.erf, otypes=[x.dtype])(x)


KERNELS = {
    "Identity": _unary(lambda ctx, x: x),
    "Relu": _unary(lambda ctx, x: np.maximum(x, 0)),
    "Sigmoid": _unary(lambda ctx, x: 1 / (1 + np.exp(-x))),
    "Tanh": _unary(lambda ctx, x: np.tanh(x)),
    "Sqrt": _unary(lambda ctx, x: np.sqrt(x)),
    "Erf": _unary(lambda ctx, x: _erf(x)),
    "Sub": _binary(np.subtract),
    "Mul": _binary(np.multiply),
    "Div": _binary(np.divide),
    "Pow": _binary(lambda a, b: np.power(a, b).astype(a.dtype)),
    "MatMul": _binary(np.matmul),
    "Shape": _unary(lambda ctx, x: np.array(x.shape, dtype=np.int64)),
    "Gather": lambda ctx: (lambda x, i: (np.take(x, i, axis=int(ctx.attr("axis", 0))),)),
    "Concat": lambda ctx: (lambda *xs: (np.concatenate(xs, axis=int(ctx.attr("axis"))),)),
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Reshape": _reshape,
    "Transpose": _unary(lambda ctx, x: np.transpose(x, ctx.attr("perm", None))),
    "ConstantOfShape": lambda ctx: (lambda shape: (np.full(tuple(shape), 1.0, np.float32),)),
    "RandomNormal": lambda ctx: (lambda: (np.random.default_rng().standard_normal(ctx.attr("shape")).astype(np.float32),)),
    "Dropout": lambda ctx: (lambda x, ratio=None, training=None: (x,)),
    "ReduceMean": _reduce_mean,
    "Conv": _conv1x1,
    "BatchNormalization": _batchnorm,
    "Gemm": lambda ctx: (lambda a, b, c=None: (a @ b + (0 if c is None else c),)),
    "LayerNormalization": lambda ctx: (
        lambda x, s, b=None: (
            ((x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + ctx.attr("epsilon")) * s
             + (0 if b is None else b)).astype(x.dtype),
        )
    ),
}


class Kernels:
    """Numpy kernels for the standard operators the tests use (Neg and Add come from MiniPlugin)."""

    @hookimpl
    def ronn_register_providers(self, registry):
        registry.add("NoFusionExecutionProvider", lambda options: type("NoFusion", (Cpu,), {"name": "NoFusionExecutionProvider"})(options))

    @hookimpl
    def ronn_register_kernels(self, registry):
        for provider in (CPU, "NoFusionExecutionProvider"):
            for op, factory in KERNELS.items():
                registry.add(op, factory, since_version=1, provider=provider)
        registry.add("Neg", lambda ctx: (lambda x: (np.negative(x),)), provider="NoFusionExecutionProvider")
        registry.add("Add", lambda ctx: (lambda a, b: (np.add(a, b),)), provider="NoFusionExecutionProvider")


class FusedKernels:
    """The ``ronn`` operators, on the CPU provider only."""

    @hookimpl
    def ronn_register_kernels(self, registry):
        def fused_conv(ctx):
            conv = _conv1x1(ctx)
            act = ctx.attr("activation")

            def run(x, w, b=None, z=None):
                (y,) = conv(x, w, b)
                if z is not None:
                    y = y + z
                return (np.maximum(y, 0) if act == "Relu" else y,)

            return run

        def gelu(ctx):
            def run(x):
                if ctx.attr("approximate", "none") == "tanh":
                    return (0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),)
                return (0.5 * x * (1 + _erf(x / math.sqrt(2))),)

            return run

        registry.add("FusedConv", fused_conv, domain="ronn", provider=CPU)
        registry.add("Gelu", gelu, domain="ronn", provider=CPU)


def tensor(name: str, *shape, dtype: DataType = DataType.FLOAT) -> ValueInfo:
    return ValueInfo(name, TensorType(dtype, tuple(shape)))


@pytest.fixture
def host(make_host) -> PluginHost:
    return make_host(Kernels(), FusedKernels(), optimizer_plugin)


def optimize(model: Model, host: PluginHost, level: Level = Level.ORT_ENABLE_ALL, disabled: str = "", providers=(CPU,)):
    options = ronn.SessionOptions()
    options.graph_optimization_level = level
    if disabled:
        options.add_session_config_entry("optimization.disabled_optimizers", disabled)
    return ronn.InferenceSession(model, options, providers=list(providers), plugin_host=host)


def ops(session) -> list[str]:
    return [f"{n.domain}::{n.op_type}" if n.domain else n.op_type for n in session.model.graph.nodes]


def same_outputs(model_factory, host: PluginHost, feeds: dict, **kwargs) -> ronn.InferenceSession:
    """Run the model unoptimized and optimized; the outputs must agree. Returns the optimized session."""
    plain = optimize(model_factory(), host, Level.ORT_DISABLE_ALL)
    optimized = optimize(model_factory(), host, **kwargs)
    for expected, actual in zip(plain.run(None, feeds), optimized.run(None, feeds)):
        assert expected.shape == actual.shape and expected.dtype == actual.dtype
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
    return optimized


def const(value, dtype=np.float32) -> np.ndarray:
    array = np.array(value, dtype=dtype)
    array.flags.writeable = False
    return array


# --- registration ---------------------------------------------------------------------------


def test_every_pass_is_registered_by_level(host) -> None:
    passes = host.optimizers().passes(Level.ORT_ENABLE_ALL)
    names = [p.name for p in passes]
    assert names.index("constant_folding") < names.index("conv_bn_fusion")
    levels = {p.name: p.level for p in passes}
    assert levels["legacy_initializer_inputs"] == Level.ORT_DISABLE_ALL
    for name in ("identity_elimination", "constant_folding", "shape_folding", "dead_code_elimination",
                 "common_subexpression_elimination", "reshape_chain_elimination"):
        assert levels[name] == Level.ORT_ENABLE_BASIC, name
    for name in ("conv_bn_fusion", "conv_activation_fusion", "gemm_activation_fusion", "matmul_add_fusion",
                 "matmul_activation_fusion", "layer_norm_fusion", "gelu_fusion", "transpose_fusion", "reshape_fusion"):
        assert levels[name] == Level.ORT_ENABLE_EXTENDED, name


def test_the_plugin_module_imports_no_pass_module() -> None:
    import subprocess
    import sys

    code = (
        "import sys, ronn.optimizer.plugin; "
        "print(sorted(m for m in sys.modules if m.startswith('ronn.optimizer.') and m != 'ronn.optimizer.plugin'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- basic passes ---------------------------------------------------------------------------


def test_identity_elimination_keeps_graph_output_names(host) -> None:
    def model():
        graph = Graph(
            [
                Node("Identity", ["x"], ["a"]),
                Node("Neg", ["a"], ["b"]),
                Node("Identity", ["b"], ["y"]),
                Node("Identity", ["x"], ["z"]),  # input -> output: must stay
            ],
            [tensor("x", 2)],
            [tensor("y", 2), tensor("z", 2)],
        )
        return Model(graph, {"": 17}, ir_version=8)

    session = same_outputs(model, host, {"x": np.array([1, -2], np.float32)})
    assert ops(session) == ["Neg", "Identity"]
    assert session.model.graph.nodes[0].outputs == ["y"]
    assert [o.name for o in session.get_outputs()] == ["y", "z"]


def test_inference_dropout_goes_unless_its_mask_is_read(host) -> None:
    def model(mask_out: bool):
        graph = Graph(
            [Node("Dropout", ["x"], ["d", "mask"] if mask_out else ["d"]), Node("Neg", ["d"], ["y"])],
            [tensor("x", 2)],
            [tensor("y", 2)] + ([ValueInfo("mask")] if mask_out else []),
        )
        return Model(graph, {"": 13}, ir_version=8)

    assert ops(optimize(model(False), host)) == ["Neg"]
    assert "Dropout" in ops(optimize(model(True), host))


def test_constant_folding_evaluates_with_the_cpu_kernels(host) -> None:
    def model():
        graph = Graph(
            [
                Node("Add", ["c1", "c2"], ["s"]),
                Node("Mul", ["s", "c2"], ["p"]),
                Node("Add", ["x", "p"], ["y"]),
            ],
            [tensor("x", 2)],
            [tensor("y", 2)],
            initializers={"c1": const([1, 2]), "c2": const([3, 4])},
        )
        return Model(graph, {"": 17}, ir_version=8)

    session = same_outputs(model, host, {"x": np.zeros(2, np.float32)})
    assert ops(session) == ["Add"]
    graph = session.model.graph
    np.testing.assert_array_equal(graph.initializers[graph.nodes[0].inputs[1]], [12, 24])
    assert set(graph.initializers) == {"p"}  # c1, c2 and s are gone


def test_constant_folding_leaves_random_large_and_overridable_values(host) -> None:
    graph = Graph(
        [
            Node("RandomNormal", [], ["r"], attributes={"shape": [2]}),
            Node("ConstantOfShape", ["big_shape"], ["big"]),
            Node("Neg", ["w"], ["nw"]),
            Node("Add", ["r", "nw"], ["y"]),
            Node("Identity", ["big"], ["z"]),
        ],
        [tensor("w", 2)],  # an initializer that is also an input: a feed may override it
        [tensor("y", 2), ValueInfo("z")],
        initializers={"big_shape": const([5, 1024, 1024], np.int64), "w": const([1, 1])},
    )
    session = optimize(Model(graph, {"": 17}, ir_version=8), host)
    assert sorted(ops(session)) == ["Add", "ConstantOfShape", "Neg", "RandomNormal"]


def test_legacy_models_treat_initializer_inputs_as_constants(host) -> None:
    def model():
        graph = Graph(
            [Node("Neg", ["w"], ["nw"]), Node("Add", ["x", "nw"], ["y"])],
            [tensor("x", 2), tensor("w", 2)],
            [tensor("y", 2)],
            initializers={"w": const([1, 2])},
        )
        return Model(graph, {"": 9}, ir_version=3)

    session = same_outputs(model, host, {"x": np.zeros(2, np.float32)})
    assert ops(session) == ["Add"]
    assert session.get_overridable_initializers() == []
    assert [i.name for i in session.get_inputs()] == ["x"]


def test_dead_code_and_unused_initializers_go(host) -> None:
    graph = Graph(
        [Node("Neg", ["x"], ["unused"]), Node("Neg", ["x"], ["y"])],
        [tensor("x", 2)],
        [tensor("y", 2)],
        initializers={"spare": const([1.0])},
    )
    session = optimize(Model(graph, {"": 17}, ir_version=8), host, Level.ORT_ENABLE_BASIC)
    assert ops(session) == ["Neg"] and session.model.graph.initializers == {}


def test_common_subexpressions_are_computed_once(host) -> None:
    def model():
        graph = Graph(
            [
                Node("Neg", ["x"], ["a"]),
                Node("Neg", ["x"], ["b"]),
                Node("Mul", ["a", "one"], ["c"]),
                Node("Mul", ["b", "one_too"], ["d"]),  # the same once the constants merge
                Node("Add", ["c", "d"], ["y"]),
            ],
            [tensor("x", 2)],
            [tensor("y", 2)],
            initializers={"one": const([1, 1]), "one_too": const([1, 1])},
        )
        return Model(graph, {"": 17}, ir_version=8)

    session = same_outputs(model, host, {"x": np.array([1, 2], np.float32)})
    assert ops(session) == ["Neg", "Mul", "Add"]


def test_shapes_fold_where_static_and_stay_where_symbolic(host) -> None:
    def model():
        graph = Graph(
            [
                Node("Shape", ["x"], ["shape"]),
                Node("Gather", ["shape", "two"], ["last"], attributes={"axis": 0}),  # 3: static
                Node("Gather", ["shape", "zero"], ["batch"], attributes={"axis": 0}),  # N: symbolic
                Node("Unsqueeze", ["last"], ["last1"], attributes={"axes": [0]}),
                Node("Unsqueeze", ["batch"], ["batch1"], attributes={"axes": [0]}),
                Node("Concat", ["batch1", "minus_one"], ["target"], attributes={"axis": 0}),
                Node("Reshape", ["x", "target"], ["y"]),
                Node("Mul", ["last1", "minus_one"], ["z"]),
            ],
            [tensor("x", "N", 4, 3)],
            [tensor("y", "N", 12), ValueInfo("z")],
            initializers={"two": const(2, np.int64), "zero": const(0, np.int64), "minus_one": const([-1], np.int64)},
        )
        return Model(graph, {"": 11}, ir_version=8)

    x = np.arange(24, dtype=np.float32).reshape(2, 4, 3)
    basic = same_outputs(model, host, {"x": x}, level=Level.ORT_ENABLE_BASIC)
    assert "Shape" in ops(basic)
    init = basic.model.graph.initializers
    assert any(v.tolist() == [3] for v in init.values() if v.dtype == np.int64)  # Unsqueeze(3)
    full = same_outputs(model, host, {"x": x})
    reshape = next(n for n in full.model.graph.nodes if n.op_type == "Reshape")
    assert full.model.graph.initializers[reshape.inputs[1]].tolist() == [0, -1]
    assert "Shape" not in ops(full)


def test_squeeze_unsqueeze_and_reshape_chains_collapse(host) -> None:
    def model():
        graph = Graph(
            [
                Node("Unsqueeze", ["x"], ["u"], attributes={"axes": [0]}),
                Node("Squeeze", ["u"], ["s"], attributes={"axes": [0]}),
                Node("Reshape", ["s", "flat"], ["f"]),
                Node("Reshape", ["f", "square"], ["y"]),
            ],
            [tensor("x", 2, 2)],
            [tensor("y", 4, 1)],
            initializers={"flat": const([4], np.int64), "square": const([4, 1], np.int64)},
        )
        return Model(graph, {"": 11}, ir_version=8)

    session = same_outputs(model, host, {"x": np.arange(4, dtype=np.float32).reshape(2, 2)})
    assert ops(session) == ["Reshape"]
    assert session.model.graph.nodes[0].inputs[0] == "x"


def test_a_disabled_pass_does_not_run(host) -> None:
    graph = Graph([Node("Identity", ["x"], ["a"]), Node("Neg", ["a"], ["y"])], [tensor("x", 2)], [tensor("y", 2)])
    session = optimize(Model(graph, {"": 17}, ir_version=8), host, disabled="identity_elimination")
    assert ops(session) == ["Identity", "Neg"]


def test_subgraphs_are_optimized_and_keep_their_outputs(host) -> None:
    body = Graph(
        [Node("Identity", ["outer"], ["t"]), Node("Neg", ["t"], ["n"]), Node("Identity", ["n"], ["body_out"])],
        [],
        [tensor("body_out", 2)],
        name="then",
    )
    other = Graph([Node("Identity", ["outer"], ["else_out"])], [], [tensor("else_out", 2)], name="else")
    graph = Graph(
        [Node("Neg", ["x"], ["outer"]), Node("If", ["cond"], ["y"], attributes={"then_branch": body, "else_branch": other})],
        [tensor("x", 2), tensor("cond", dtype=DataType.BOOL)],
        [tensor("y", 2)],
    )
    model = Model(graph, {"": 17}, ir_version=8)
    run_passes(model, host)
    assert [n.op_type for n in body.nodes] == ["Neg"] and body.nodes[0].inputs == ["outer"]
    assert body.nodes[0].outputs == ["body_out"]
    assert [n.op_type for n in other.nodes] == ["Identity"]  # outer value -> output stays


def run_passes(model: Model, host: PluginHost, level: Level = Level.ORT_ENABLE_ALL, providers=(CPU,)) -> None:
    context = OptimizerContext(level=level, kernels=host.kernels(), providers=tuple(providers), config={})
    for opt_pass in host.optimizers().passes(level):
        opt_pass.run(model, context)


# --- extended passes ------------------------------------------------------------------------


def _conv_model(residual: bool = False, opset: int = 17) -> Model:
    rng = np.random.default_rng(0)
    nodes = [
        Node("Conv", ["x", "w", "b"], ["c"], attributes={"kernel_shape": [1, 1]}),
        Node("BatchNormalization", ["c", "scale", "shift", "mean", "var"], ["n"], attributes={"epsilon": 1e-3}),
        Node("Mul", ["n", "factor"], ["m"]),
        Node("Add", ["m", "offset"], ["a"]),
    ]
    if residual:
        nodes.append(Node("Add", ["a", "x"], ["r"]))
        nodes.append(Node("Relu", ["r"], ["y"]))
    else:
        nodes.append(Node("Relu", ["a"], ["y"]))
    inits = {
        "w": rng.standard_normal((3, 3, 1, 1)),
        "b": rng.standard_normal(3),
        "scale": rng.uniform(0.5, 1.5, 3),
        "shift": rng.standard_normal(3),
        "mean": rng.standard_normal(3),
        "var": rng.uniform(0.5, 1.5, 3),
        "factor": rng.uniform(0.5, 1.5, (3, 1, 1)),
        "offset": rng.standard_normal((1, 3, 1, 1)),
    }
    graph = Graph(nodes, [tensor("x", "N", 3, 4, 4)], [tensor("y", "N", 3, 4, 4)],
                  initializers={k: const(v) for k, v in inits.items()})
    return Model(graph, {"": opset}, ir_version=8)


def test_conv_batchnorm_mul_add_fold_into_the_weights(host) -> None:
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 4)).astype(np.float32)
    session = same_outputs(_conv_model, host, {"x": x}, disabled="conv_activation_fusion")
    assert ops(session) == ["Conv", "Relu"]


def test_conv_with_residual_and_activation_becomes_fused_conv(host) -> None:
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 4)).astype(np.float32)
    session = same_outputs(lambda: _conv_model(residual=True), host, {"x": x})
    assert ops(session) == ["ronn::FusedConv"]
    node = session.model.graph.nodes[0]
    assert node.inputs[0] == "x" and node.inputs[3] == "x" and node.attributes["activation"] == "Relu"
    model = session.model
    assert model.opset_imports["ronn"] == 1
    fn = model.function_for(node)
    assert fn is not None and fn.domain == "ronn" and fn.overload == node.overload == "Relu_residual"
    assert [n.op_type for n in fn.nodes] == ["Conv", "Add", "Relu"]


def test_a_provider_without_the_fused_kernel_keeps_standard_operators(host) -> None:
    session = optimize(_conv_model(), host, providers=("NoFusionExecutionProvider",))
    assert ops(session) == ["Conv", "Relu"]  # folded, but not fused
    assert "ronn" not in session.model.opset_imports


def test_levels_bound_the_rewrites(host) -> None:
    session = optimize(_conv_model(), host, Level.ORT_ENABLE_BASIC)
    assert ops(session) == ["Conv", "BatchNormalization", "Mul", "Add", "Relu"]


def test_transposes_cancel_and_merge(host) -> None:
    def model():
        graph = Graph(
            [
                Node("Transpose", ["x"], ["t1"], attributes={"perm": [1, 2, 0]}),
                Node("Transpose", ["t1"], ["a"], attributes={"perm": [2, 0, 1]}),  # cancels
                Node("Transpose", ["a"], ["t2"], attributes={"perm": [0, 2, 1]}),
                Node("Transpose", ["t2"], ["y"], attributes={"perm": [1, 0, 2]}),  # merges
            ],
            [tensor("x", 2, 3, 4)],
            [tensor("y", 4, 2, 3)],
        )
        return Model(graph, {"": 17}, ir_version=8)

    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    session = same_outputs(model, host, {"x": x})
    assert ops(session) == ["Transpose"] and session.model.graph.nodes[0].attributes["perm"] == [2, 0, 1]


def _layer_norm_model(opset: int) -> Model:
    rng = np.random.default_rng(2)
    axes = {"axes": [-1]}
    graph = Graph(
        [
            Node("ReduceMean", ["x"], ["mean"], attributes=axes),
            Node("Sub", ["x", "mean"], ["d"]),
            Node("Pow", ["d", "two"], ["d2"]),
            Node("ReduceMean", ["d2"], ["var"], attributes=axes),
            Node("Add", ["var", "eps"], ["ve"]),
            Node("Sqrt", ["ve"], ["std"]),
            Node("Div", ["d", "std"], ["n"]),
            Node("Mul", ["n", "gamma"], ["g"]),
            Node("Add", ["g", "beta"], ["y"]),
        ],
        [tensor("x", "N", 8)],
        [tensor("y", "N", 8)],
        initializers={
            "two": const(2.0), "eps": const(1e-5),
            "gamma": const(rng.standard_normal(8)), "beta": const(rng.standard_normal(8)),
        },
    )
    return Model(graph, {"": opset}, ir_version=8)


@pytest.mark.parametrize("opset, expected", [(17, "LayerNormalization"), (13, "ronn::LayerNormalization")])
def test_decomposed_layer_norm_is_fused(host, opset, expected) -> None:
    class RonnLayerNorm:
        @hookimpl
        def ronn_register_kernels(self, registry):
            registry.add("LayerNormalization", KERNELS["LayerNormalization"], domain="ronn", provider=CPU)

    host.register(RonnLayerNorm())
    x = np.random.default_rng(3).standard_normal((3, 8)).astype(np.float32)
    session = same_outputs(lambda: _layer_norm_model(opset), host, {"x": x})
    assert ops(session) == [expected]
    assert session.model.graph.nodes[0].attributes["axis"] == -1


def _gelu_model(opset: int, form: str) -> Model:
    if form == "erf":
        nodes = [
            Node("Div", ["x", "sqrt2"], ["t"]),
            Node("Erf", ["t"], ["e"]),
            Node("Add", ["e", "one"], ["a"]),
            Node("Mul", ["x", "a"], ["m"]),
            Node("Mul", ["m", "half"], ["y"]),
        ]
    else:
        nodes = [
            Node("Mul", ["x", "half"], ["hx"]),
            Node("Pow", ["x", "three"], ["x3"]),
            Node("Mul", ["x3", "c"], ["cx3"]),
            Node("Add", ["x", "cx3"], ["inner"]),
            Node("Mul", ["inner", "k"], ["scaled"]),
            Node("Tanh", ["scaled"], ["t"]),
            Node("Add", ["t", "one"], ["a"]),
            Node("Mul", ["hx", "a"], ["y"]),
        ]
    inits = {"sqrt2": math.sqrt(2), "one": 1.0, "half": 0.5, "three": 3.0, "c": 0.044715, "k": math.sqrt(2 / math.pi)}
    graph = Graph(nodes, [tensor("x", "N")], [tensor("y", "N")], initializers={k: const(v) for k, v in inits.items()})
    return Model(graph, {"": opset}, ir_version=8)


@pytest.mark.parametrize("form", ["erf", "tanh"])
def test_decomposed_gelu_is_fused(host, form) -> None:
    x = np.linspace(-4, 4, 17, dtype=np.float32)
    session = same_outputs(lambda: _gelu_model(13, form), host, {"x": x})
    assert ops(session) == ["ronn::Gelu"]
    node = session.model.graph.nodes[0]
    assert node.attributes["approximate"] == ("none" if form == "erf" else "tanh")
    assert session.model.function_for(node) is not None


def test_matmul_add_becomes_gemm_for_2d_inputs(host) -> None:
    rng = np.random.default_rng(4)
    w, b = const(rng.standard_normal((3, 2))), const(rng.standard_normal(2))

    def model():
        graph = Graph(
            [Node("MatMul", ["x", "w"], ["p"]), Node("Add", ["p", "b"], ["y"])],
            [tensor("x", "M", 3)],
            [tensor("y", "M", 2)],
            initializers={"w": w, "b": b},
        )
        return Model(graph, {"": 17}, ir_version=8)

    session = same_outputs(model, host, {"x": np.ones((4, 3), np.float32)})
    assert ops(session) == ["Gemm"]


# --- model-local functions ------------------------------------------------------------------


def test_functions_are_inlined_only_without_a_kernel() -> None:
    body = Function("ronn", "Twice", ["X"], ["Y"], [Node("Add", ["X", "X"], ["Y"])], opset_imports={"": 17})
    graph = Graph([Node("Twice", ["x"], ["y"], domain="ronn")], [tensor("x", 2)], [tensor("y", 2)])

    def fresh() -> Model:
        return Model(Graph(list(graph.nodes), graph.inputs, graph.outputs), {"": 17, "ronn": 1},
                     functions={body.key: body})

    kept = fresh()
    assert not inline_functions(kept, lambda domain, op, opset: (domain, op) == ("ronn", "Twice"))
    assert [n.op_type for n in kept.graph.nodes] == ["Twice"]
    inlined = fresh()
    assert inline_functions(inlined, lambda domain, op, opset: False)
    assert [n.op_type for n in inlined.graph.nodes] == ["Add"]


def test_function_overloads_are_told_apart() -> None:
    relu = Function("ronn", "Act", ["X"], ["Y"], [Node("Relu", ["X"], ["Y"])], overload="relu")
    neg = Function("ronn", "Act", ["X"], ["Y"], [Node("Neg", ["X"], ["Y"])], overload="neg")
    graph = Graph(
        [Node("Act", ["x"], ["a"], domain="ronn", overload="relu"), Node("Act", ["a"], ["y"], domain="ronn", overload="neg")],
        [tensor("x", 2)],
        [tensor("y", 2)],
    )
    model = Model(graph, {"": 17, "ronn": 1}, functions={relu.key: relu, neg.key: neg})
    assert relu.key == ("ronn", "Act", "relu")
    inline_functions(model)
    assert [n.op_type for n in model.graph.nodes] == ["Relu", "Neg"]


def test_a_saved_fused_node_runs_its_kernel_or_else_its_body(host) -> None:
    """What ronn reads back from optimized_model_filepath: the call stays a call where a
    provider has the kernel, and runs as its function body where none has."""
    optimized = optimize(_conv_model(residual=True), host)
    model = optimized.model
    (node,) = model.graph.nodes
    x = np.random.default_rng(5).standard_normal((1, 3, 4, 4)).astype(np.float32)
    expected = optimized.run(None, {"x": x})[0]

    def reloaded() -> Model:
        graph = Graph([Node(node.op_type, list(node.inputs), list(node.outputs), domain=node.domain,
                            attributes=dict(node.attributes), overload=node.overload)],
                      model.graph.inputs, model.graph.outputs, initializers=dict(model.graph.initializers))
        return Model(graph, dict(model.opset_imports), ir_version=10, functions=dict(model.functions))

    kept = ronn.InferenceSession(reloaded(), plugin_host=host)
    assert ops(kept) == ["ronn::FusedConv"]
    options = ronn.SessionOptions()
    options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    inlined = ronn.InferenceSession(reloaded(), options, providers=["NoFusionExecutionProvider"], plugin_host=host)
    assert ops(inlined) == ["Conv", "Add", "Relu"]
    for session in (kept, inlined):
        np.testing.assert_allclose(session.run(None, {"x": x})[0], expected, rtol=1e-5, atol=1e-6)
