"""ronn.InferenceSession behaves as onnxruntime's does: same program, same answers."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from onnx import TensorProto, helper

import ronn
import ronn_cpu.plugin
import ronn_onnx.plugin
from ronn.errors import RunCancelledError
from ronn_api.demo import DEMO_MODEL_PATH, demo_inputs


def ort_style_program(rt, path: str, x: np.ndarray) -> dict:
    """A program written for onnxruntime; `rt` is either module."""
    so = rt.SessionOptions()
    so.graph_optimization_level = rt.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = 2
    so.execution_mode = rt.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    sess = rt.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    out = sess.get_outputs()[0]
    (probs,) = sess.run([out.name], {inp.name: x})
    all_outputs = sess.run(None, {inp.name: x}, rt.RunOptions())
    meta = sess.get_modelmeta()
    return {
        "input": (inp.name, inp.type, inp.shape),
        "output": (out.name, out.type, out.shape),
        "probs": probs,
        "n_outputs": len(all_outputs),
        "meta": (meta.producer_name, meta.graph_name, meta.description, meta.version, meta.custom_metadata_map),
        "providers": sess.get_providers(),
        "available": "CPUExecutionProvider" in rt.get_available_providers(),
        "device": rt.get_device(),
    }


def test_a_program_written_for_onnxruntime_runs_on_ronn() -> None:
    x = demo_inputs()["image"]
    theirs = ort_style_program(onnxruntime, DEMO_MODEL_PATH, x)
    ours = ort_style_program(ronn, DEMO_MODEL_PATH, x)
    np.testing.assert_allclose(ours.pop("probs"), theirs.pop("probs"), rtol=1e-4, atol=1e-6)
    assert ours == theirs


def test_shapes_and_types_match_onnxruntime_for_symbolic_and_unknown_dims(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["a"], ["r"]), helper.make_node("Cast", ["r"], ["c"], to=TensorProto.INT64)],
        "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", None, 4])],
        [helper.make_tensor_value_info("c", TensorProto.INT64, None), helper.make_tensor_value_info("r", TensorProto.FLOAT, ["batch", None, 4])],
    )
    path = str(tmp_path / "m.onnx")
    import onnx

    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    ort = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    ours = ronn.InferenceSession(path)
    for mine, theirs in zip(ours.get_inputs() + ours.get_outputs(), ort.get_inputs() + ort.get_outputs()):
        assert (mine.name, mine.type) == (theirs.name, theirs.type)
        assert len(mine.shape) == len(theirs.shape) or theirs.shape == []
        for a, b in zip(mine.shape, theirs.shape):
            assert a == b or (a is None and isinstance(b, str) and b.startswith("unk__"))


def test_run_async_calls_back_with_results() -> None:
    session = ronn.InferenceSession(DEMO_MODEL_PATH)
    done = threading.Event()
    box: dict = {}

    def callback(results, user_data, error):
        box.update(results=results, user_data=user_data, error=error)
        done.set()

    session.run_async(None, demo_inputs(), callback, "token")
    assert done.wait(30)
    assert box["error"] == "" and box["user_data"] == "token"
    np.testing.assert_allclose(box["results"][0], session.run(None, demo_inputs())[0])

    done.clear()
    session.run_async(None, {"wrong": np.zeros(1)}, callback, None)
    assert done.wait(30)
    assert box["results"] is None and "'wrong' is not an input" in box["error"]


class SlowPlugin:
    """A kernel that sleeps, to have a run long enough to interrupt."""

    @ronn.hookimpl
    def ronn_register_kernels(self, registry):
        def slow(ctx):
            def run(x):
                time.sleep(0.05)
                return (x,)

            return run

        registry.add("Slow", slow, domain="com.test")


def slow_chain(n: int) -> bytes:
    nodes = [helper.make_node("Slow", [f"v{i}"], [f"v{i + 1}"], domain="com.test", name=f"slow{i}") for i in range(n)]
    graph = helper.make_graph(
        nodes, "slow",
        [helper.make_tensor_value_info("v0", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info(f"v{n}", TensorProto.FLOAT, [1])],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.test", 1)]
    return helper.make_model(graph, opset_imports=opsets).SerializeToString()


def test_terminate_from_another_thread_stops_the_run() -> None:
    host = ronn.PluginHost(autoload=False, plugins=[ronn_cpu.plugin, ronn_onnx.plugin, SlowPlugin()])
    session = ronn.InferenceSession(slow_chain(100), plugin_host=host)  # 5 s if not stopped
    options = ronn.RunOptions()
    threading.Timer(0.2, lambda: setattr(options, "terminate", True)).start()
    started = time.perf_counter()
    with pytest.raises(RunCancelledError, match="terminate"):
        session.run(None, {"v0": np.zeros(1, np.float32)}, options)
    assert time.perf_counter() - started < 2.0
    options.terminate = False
    assert session.run(["v3"], {"v0": np.ones(1, np.float32)}, options)[0][0] == 1


@pytest.mark.parametrize("level", [ronn.GraphOptimizationLevel.ORT_DISABLE_ALL, ronn.GraphOptimizationLevel.ORT_ENABLE_ALL])
def test_fetch_any_intermediate_by_name(level) -> None:
    options = ronn.SessionOptions()  # at ORT_ENABLE_ALL the optimizer fuses c1 (Conv + Relu) away
    options.graph_optimization_level = level
    session = ronn.InferenceSession(DEMO_MODEL_PATH, options)
    conv1, logits, probs = session.run(["c1", "logits", "probabilities"], demo_inputs())
    assert conv1.shape == (1, 8, 28, 28)
    np.testing.assert_allclose(np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True), probs, rtol=1e-5)
    (probs_again,) = session.run(None, demo_inputs())
    np.testing.assert_allclose(probs_again, probs, rtol=1e-5)


def test_profiling_writes_a_chrome_trace(tmp_path: Path) -> None:
    options = ronn.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp_path / "prof_")
    session = ronn.InferenceSession(DEMO_MODEL_PATH, options)
    session.run(None, demo_inputs())
    path = session.end_profiling()
    events = json.loads(Path(path).read_text())
    names = {e["args"]["op_name"] for e in events if e["cat"] == "Node"}
    assert {"FusedConv", "Softmax"} <= names  # Conv + Relu run fused
    assert all(e["ph"] == "X" and e["dur"] >= 0 for e in events)
    nodes = [e for e in events if e["cat"] == "Node"]
    assert nodes and all(e["args"]["provider"] == "CPUExecutionProvider" for e in nodes)
    assert {"model_loading", "session_initialization"} <= {e["name"] for e in events if e["cat"] == "Session"}


def test_optimized_model_file_loads_in_onnxruntime(tmp_path: Path) -> None:
    options = ronn.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ours = ronn.InferenceSession(DEMO_MODEL_PATH, options)
    theirs = onnxruntime.InferenceSession(options.optimized_model_filepath, providers=["CPUExecutionProvider"])
    x = demo_inputs()
    np.testing.assert_allclose(ours.run(None, x)[0], theirs.run(None, x)[0], rtol=1e-4, atol=1e-6)


def test_session_options_defaults_match_onnxruntime() -> None:
    mine, theirs = ronn.SessionOptions(), onnxruntime.SessionOptions()
    for name in (
        "intra_op_num_threads", "inter_op_num_threads", "log_severity_level", "log_verbosity_level",
        "logid", "optimized_model_filepath", "enable_profiling", "profile_file_prefix",
        "enable_mem_pattern", "enable_cpu_mem_arena", "use_deterministic_compute",
    ):
        assert getattr(mine, name) == getattr(theirs, name), name
    assert int(mine.graph_optimization_level) == int(theirs.graph_optimization_level)
    assert int(mine.execution_mode) == int(theirs.execution_mode)
    mine.add_session_config_entry("session.x", "1")
    assert mine.get_session_config_entry("session.x") == "1"
    run = ronn.RunOptions()
    assert run.terminate is False and run.log_severity_level == onnxruntime.RunOptions().log_severity_level
    assert [m.name for m in ronn.GraphOptimizationLevel] == [m for m in onnxruntime.GraphOptimizationLevel.__members__]


def test_providers_in_every_accepted_form() -> None:
    for providers in (None, ["CPUExecutionProvider"], [("CPUExecutionProvider", {})]):
        assert ronn.InferenceSession(DEMO_MODEL_PATH, providers=providers).get_providers() == ["CPUExecutionProvider"]
    session = ronn.InferenceSession(DEMO_MODEL_PATH, providers=["CPUExecutionProvider"], provider_options=[{}])
    assert session.get_provider_options() == {"CPUExecutionProvider": {}}


def test_bytes_and_pathlike_sources() -> None:
    data = Path(DEMO_MODEL_PATH).read_bytes()
    a = ronn.InferenceSession(data).run(None, demo_inputs())[0]
    b = ronn.InferenceSession(Path(DEMO_MODEL_PATH)).run(None, demo_inputs())[0]
    np.testing.assert_array_equal(a, b)


def test_session_threads_reach_the_cpu_provider() -> None:
    """SessionOptions.intra_op_num_threads sizes the CPU provider (BLAS and numba), as in onnxruntime."""
    from threadpoolctl import threadpool_info

    options = ronn.SessionOptions()
    options.intra_op_num_threads = 1
    session = ronn.InferenceSession(DEMO_MODEL_PATH, options)
    assert session.get_provider_options()["CPUExecutionProvider"]["intra_op_num_threads"] == "1"
    numpy_blas = [p for p in threadpool_info() if p["user_api"] == "blas" and "numpy" in p["filepath"]]
    assert numpy_blas and all(pool["num_threads"] == 1 for pool in numpy_blas), numpy_blas
    explicit = ronn.InferenceSession(
        DEMO_MODEL_PATH, options, providers=[("CPUExecutionProvider", {"intra_op_num_threads": "2"})]
    )
    assert explicit.get_provider_options()["CPUExecutionProvider"]["intra_op_num_threads"] == "2"
    from ronn_cpu.jit import cores

    options.intra_op_num_threads = cores()  # process-wide: give later tests every core back
    ronn.InferenceSession(DEMO_MODEL_PATH, options)
