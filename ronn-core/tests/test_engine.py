"""Sessions over a hand-built IR with an in-test plugin (no ronn-onnx, no ronn-cpu)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import ronn
from ronn.errors import (
    InputShapeError,
    InputTypeError,
    InvalidInputNameError,
    KernelError,
    MissingInputError,
    ProviderError,
    UnsupportedOperatorError,
)
from ronn.dtypes import DataType
from ronn.ir import Graph, Model, Node, TensorType, ValueInfo


def tensor(name: str, *shape) -> ValueInfo:
    return ValueInfo(name, TensorType(DataType.FLOAT, tuple(shape)))


def test_runs_and_fetches_intermediates(host, chain_model) -> None:
    session = ronn.InferenceSession(chain_model, plugin_host=host)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    (y,) = session.run(None, {"x": x})
    np.testing.assert_array_equal(y, np.zeros((2, 3), np.float32))
    n, y2 = session.run(["n", "y"], {"x": x})
    np.testing.assert_array_equal(n, -x)
    assert session.get_providers() == ["CPUExecutionProvider"]


def test_inputs_are_never_modified_and_outputs_are_owned(host) -> None:
    graph = Graph([Node("Neg", ["x"], ["y"])], [tensor("x", 3)], [tensor("x", 3), tensor("y", 3)])
    session = ronn.InferenceSession(Model(graph, {"": 17}), plugin_host=host)
    x = np.ones(3, np.float32)
    passthrough, _ = session.run(None, {"x": x})
    assert x.flags.writeable
    passthrough[0] = 5  # the caller owns what it gets back
    assert x[0] == 1


def test_input_errors_name_the_input(host, chain_model) -> None:
    session = ronn.InferenceSession(chain_model, plugin_host=host)
    good = np.zeros((2, 3), np.float32)
    with pytest.raises(InvalidInputNameError, match="'z' is not an input.*\\['x'\\]"):
        session.run(None, {"x": good, "z": good})
    with pytest.raises(MissingInputError, match=r"missing input\(s\) \['x'\]"):
        session.run(None, {})
    with pytest.raises(InputTypeError, match=r"'x' expects tensor\(float\) but got tensor\(double\)"):
        session.run(None, {"x": good.astype(np.float64)})
    with pytest.raises(InputShapeError, match="'x' expects rank 2"):
        session.run(None, {"x": np.zeros(3, np.float32)})
    with pytest.raises(InputShapeError, match="dimension 1 must be 3, is 4"):
        session.run(None, {"x": np.zeros((2, 4), np.float32)})
    with pytest.raises(InvalidInputNameError, match="cannot fetch 'nope'"):
        session.run(["nope"], {"x": good})


def test_kernel_failure_names_node_and_inputs(host) -> None:
    graph = Graph([Node("Fail", ["x"], ["y"], name="bad")], [tensor("x", 2)], [tensor("y", 2)])
    session = ronn.InferenceSession(Model(graph, {"": 17}), plugin_host=host)
    with pytest.raises(KernelError, match=r"node 'bad' \(Fail\) failed: ValueError: boom \(inputs: x: float32\[2\]\)"):
        session.run(None, {"x": np.zeros(2, np.float32)})


def test_unsupported_operators_are_listed_together(host) -> None:
    graph = Graph(
        [Node("Mystery", ["x"], ["a"]), Node("Enigma", ["a"], ["b"], domain="com.x"), Node("Mystery", ["b"], ["y"])],
        [tensor("x", 2)], [tensor("y", 2)],
    )
    with pytest.raises(UnsupportedOperatorError) as info:
        ronn.InferenceSession(Model(graph, {"": 13, "com.x": 2}), plugin_host=host)
    assert info.value.operators == [("", "Mystery", 13), ("com.x", "Enigma", 2)]
    assert "ai.onnx::Mystery (opset 13)" in str(info.value)


def test_unknown_and_duplicate_providers(host, chain_model) -> None:
    with pytest.raises(ProviderError, match="unknown execution provider 'CUDAExecutionProvider'"):
        ronn.InferenceSession(chain_model, providers=["CUDAExecutionProvider"], plugin_host=host)
    with pytest.raises(ProviderError, match="listed twice"):
        ronn.InferenceSession(chain_model, providers=["CPUExecutionProvider"] * 2, plugin_host=host)


def test_provider_tuples_and_options(host, chain_model) -> None:
    session = ronn.InferenceSession(
        chain_model, providers=[("TestExecutionProvider", {"knob": 1})], plugin_host=host
    )
    assert session.get_providers() == ["TestExecutionProvider", "CPUExecutionProvider"]
    assert session.get_provider_options()["TestExecutionProvider"] == {"knob": "1"}


def test_concurrent_runs_on_one_session(host, chain_model) -> None:
    session = ronn.InferenceSession(chain_model, plugin_host=host)
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(200):
            x = rng.standard_normal((4, 3)).astype(np.float32)
            n, y = session.run(["n", "y"], {"x": x})
            if not (np.array_equal(n, -x) and np.array_equal(y, np.zeros_like(x))):
                errors.append(AssertionError(f"wrong result in thread {seed}"))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_run_wrapper_hook_is_called_once_per_run(make_host, chain_model) -> None:
    calls = []

    class Tracer:
        @ronn.hookimpl
        def ronn_wrap_run(self, run, session):
            def wrapped(feeds, fetches, options):
                calls.append((session.input_names, tuple(fetches)))
                return run(feeds, fetches, options)

            return wrapped

    host = make_host(Tracer())
    session = ronn.InferenceSession(chain_model, plugin_host=host)
    session.run(None, {"x": np.zeros((1, 3), np.float32)})
    assert calls == [(("x",), ("y",))]


def test_select_provider_hook_overrides_placement(make_host, chain_model) -> None:
    class Placer:
        @ronn.hookimpl
        def ronn_select_provider(self, node, graph, candidates):
            return "CPUExecutionProvider" if node.op_type == "Add" else None

    host = make_host(Placer())
    session = ronn.InferenceSession(chain_model, providers=["TestExecutionProvider"], plugin_host=host)
    assert dict((n, p) for n, _, p in session.node_providers()) == {
        "neg": "TestExecutionProvider",
        "add": "CPUExecutionProvider",
    }


def test_strict_fallback(host, chain_model) -> None:
    options = ronn.SessionOptions()
    options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    session = ronn.InferenceSession(chain_model, options, providers=["TestExecutionProvider"], plugin_host=host)
    assert session.get_providers() == ["TestExecutionProvider"]


def test_optimizer_passes_run_by_level_and_can_be_disabled(make_host, chain_model) -> None:
    ran = []

    class Passes:
        @ronn.hookimpl
        def ronn_register_optimizers(self, registry):
            def basic(model, context):
                ran.append("basic")
                assert context.providers == ("CPUExecutionProvider",)
                assert context.has_kernel("", "Neg", 17) and not context.has_kernel("", "Nope", 17)
                return False

            def extended(model, context):
                ran.append("extended")
                return False

            registry.add("basic_pass", basic, level=ronn.GraphOptimizationLevel.ORT_ENABLE_BASIC)
            registry.add("extended_pass", extended, level=ronn.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)

    host = make_host(Passes())
    options = ronn.SessionOptions()
    options.graph_optimization_level = ronn.GraphOptimizationLevel.ORT_ENABLE_BASIC
    ronn.InferenceSession(chain_model, options, plugin_host=host)
    assert ran == ["basic"]
    ran.clear()
    options.graph_optimization_level = ronn.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("optimization.disabled_optimizers", "basic_pass")
    ronn.InferenceSession(chain_model, options, plugin_host=host)
    assert ran == ["extended"]
    ran.clear()
    options.graph_optimization_level = ronn.GraphOptimizationLevel.ORT_DISABLE_ALL
    ronn.InferenceSession(chain_model, options, plugin_host=host)
    assert ran == []


def test_an_optimizer_pass_rewrites_the_graph(make_host, chain_model) -> None:
    class AddToNeg:
        @ronn.hookimpl
        def ronn_register_optimizers(self, registry):
            def add_to_neg(model, context):
                for node in model.graph.nodes:
                    if node.op_type == "Add":
                        node.op_type = "Neg"
                        node.inputs = ["n"]
                return True

            registry.add("add_to_neg", add_to_neg)

    session = ronn.InferenceSession(chain_model, plugin_host=make_host(AddToNeg()))
    x = np.arange(3, dtype=np.float32).reshape(1, 3)
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], x)


def test_model_loader_plugin(make_host, chain_model) -> None:
    class MiniLoader:
        def can_load(self, source):
            return isinstance(source, str) and source.startswith("mini://")

        def load(self, source, options):
            return chain_model

    class LoaderPlugin:
        @ronn.hookimpl
        def ronn_register_model_loaders(self, registry):
            registry.add("mini", MiniLoader())

    session = ronn.InferenceSession("mini://chain", plugin_host=make_host(LoaderPlugin()))
    assert [i.name for i in session.get_inputs()] == ["x"]
    from ronn.errors import NoLoaderError

    with pytest.raises(NoLoaderError, match="no model loader accepts 'other://x'"):
        ronn.InferenceSession("other://x", plugin_host=make_host(LoaderPlugin()))


def test_allocator_plugin_reaches_the_kernels(make_host) -> None:
    made = []

    class CountingAllocator:
        def empty(self, shape, dtype):
            made.append(shape)
            return np.empty(shape, dtype)

    class AllocPlugin:
        @ronn.hookimpl
        def ronn_register_allocators(self, registry):
            registry.add("cpu", "counting", CountingAllocator)

        @ronn.hookimpl
        def ronn_register_kernels(self, registry):
            def alloc_neg(ctx):
                allocator = ctx.allocator

                def run(x):
                    out = allocator.empty(x.shape, x.dtype)
                    np.negative(x, out=out)
                    return (out,)

                return run

            registry.add("AllocNeg", alloc_neg, domain="com.alloc", provider="TestExecutionProvider")

    graph = Graph([Node("AllocNeg", ["x"], ["y"], domain="com.alloc")], [tensor("x", 2)], [tensor("y", 2)])
    model = Model(graph, {"": 17, "com.alloc": 1})
    session = ronn.InferenceSession(
        model, providers=[("TestExecutionProvider", {"allocator": "counting"})], plugin_host=make_host(AllocPlugin())
    )
    np.testing.assert_array_equal(session.run(None, {"x": np.ones(2, np.float32)})[0], -np.ones(2))
    assert made == [(2,)]
    with pytest.raises(ProviderError, match="no allocator 'nope'"):
        ronn.InferenceSession(
            model, providers=[("TestExecutionProvider", {"allocator": "nope"})], plugin_host=make_host(AllocPlugin())
        )


def test_strict_fallback_refuses_nodes_off_the_listed_providers(make_host, caplog) -> None:
    class CpuOnly:
        @ronn.hookimpl
        def ronn_register_kernels(self, registry):
            registry.add("CpuOnly", lambda ctx: (lambda x: (x,)), provider="CPUExecutionProvider")

    graph = Graph([Node("CpuOnly", ["x"], ["y"], name="c")], [tensor("x", 2)], [tensor("y", 2)])
    options = ronn.SessionOptions()
    options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    from ronn.errors import UnsupportedOperatorError

    with pytest.raises(UnsupportedOperatorError, match="CpuOnly"):
        ronn.InferenceSession(Model(graph, {"": 17}), options, providers=["TestExecutionProvider"], plugin_host=make_host(CpuOnly()))
    # without the switch the node falls back to the CPU provider, with a warning
    with caplog.at_level("WARNING", logger="ronn.session"):
        session = ronn.InferenceSession(Model(graph, {"": 17}), providers=["TestExecutionProvider"], plugin_host=make_host(CpuOnly()))
    assert session.node_providers() == [("c", "CpuOnly", "CPUExecutionProvider")]
    assert "1 node(s) to CPUExecutionProvider: node 'c' (CpuOnly)" in caplog.text
    caplog.clear()
    quiet = ronn.SessionOptions()
    quiet.log_severity_level = 3
    with caplog.at_level("WARNING", logger="ronn.session"):
        ronn.InferenceSession(Model(graph, {"": 17}), quiet, providers=["TestExecutionProvider"], plugin_host=make_host(CpuOnly()))
    assert "fall back" not in caplog.text


def test_model_local_functions_are_inlined(host) -> None:
    from ronn.ir import Function

    # NegAdd(a, b) = Neg(a) + b, called twice; the second call's output feeds the first's
    body = [Node("Neg", ["a"], ["t"]), Node("Add", ["t", "b"], ["out"])]
    fn = Function("com.f", "NegAdd", ["a", "b"], ["out"], body, opset_imports={"": 17})
    graph = Graph(
        [
            Node("NegAdd", ["x", "x"], ["m"], domain="com.f", name="call1"),
            Node("NegAdd", ["m", "x"], ["y"], domain="com.f", name="call2"),
        ],
        [tensor("x", 2)], [tensor("y", 2)],
    )
    model = Model(graph, {"": 17, "com.f": 1}, functions={("com.f", "NegAdd"): fn})
    session = ronn.InferenceSession(model, plugin_host=host)
    x = np.array([1.0, 2.0], np.float32)
    # m = -x + x = 0; y = -0 + x = x
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], x)
    assert len(session.model.graph.nodes) == 4
    assert fn.nodes[0].inputs == ["a"]  # the function itself is left as it was


def test_values_are_released_after_their_last_reader(make_host) -> None:
    import gc
    import weakref

    class Tracked(np.ndarray):
        pass

    released: list[str] = []
    seen_at_third: list[list[str]] = []

    class Tracking:
        @ronn.hookimpl
        def ronn_register_kernels(self, registry):
            def make(ctx):
                name = ctx.node.outputs[0]

                def run(x):
                    if name == "c":
                        gc.collect()
                        seen_at_third.append(list(released))
                    out = (np.asarray(x) + 1).view(Tracked)
                    weakref.finalize(out, released.append, name)
                    return (out,)

                return run

            registry.add("Step", make, domain="com.t", provider="CPUExecutionProvider")

    graph = Graph(
        [Node("Step", [i], [o], domain="com.t") for i, o in (("x", "a"), ("a", "b"), ("b", "c"))],
        [tensor("x", 2)], [tensor("c", 2)],
    )
    session = ronn.InferenceSession(Model(graph, {"": 17, "com.t": 1}), plugin_host=make_host(Tracking()))
    (c,) = session.run(None, {"x": np.zeros(2, np.float32)})
    # when the third step runs, "a" (last read by the second) is already gone
    assert seen_at_third == [["a"]]
    np.testing.assert_array_equal(c, [3, 3])


def test_kernels_see_initializer_inputs_at_creation(make_host) -> None:
    seen = []

    class Peek:
        @ronn.hookimpl
        def ronn_register_kernels(self, registry):
            def make(ctx):
                seen.append([None if c is None else c.tolist() for c in ctx.constant_inputs])
                return lambda x, w: (x + w,)

            registry.add("AddW", make, domain="com.t", provider="CPUExecutionProvider")

    graph = Graph([Node("AddW", ["x", "w"], ["y"], domain="com.t")], [tensor("x", 2)], [tensor("y", 2)],
                  initializers={"w": np.array([1.0, 2.0], np.float32)})
    ronn.InferenceSession(Model(graph, {"": 17, "com.t": 1}), plugin_host=make_host(Peek()))
    assert seen == [[None, [1.0, 2.0]]]
