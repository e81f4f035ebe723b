"""The native (C) kernel modules: built once into the cache, loaded instead of numba's, and
numba serving every call when they cannot be built or are turned off. Processes are real
subprocesses with their own environment, so nothing here leaks into other tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from ronn_cpu import native

pytestmark = pytest.mark.skipif(native.extension("epilogue") is None, reason="no C compiler here")


def _python(code: str, **env: str) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON line, returned here."""
    environment = {**os.environ, **env}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], check=False, capture_output=True, text=True, env=environment, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


_RUN_EPILOGUE = """
    import json, sys
    import numpy as np
    from ronn_cpu import jit
    from ronn_cpu.kernels._epilogue import epilogue
    y = np.arange(-6, 6, dtype=np.float32).reshape(1, 3, 4)
    out = epilogue(y, bias=np.array([1, 0, -1], np.float32), activation="Relu")
    print(json.dumps({
        "module": jit.load("epilogue").__name__,
        "out": out.ravel().tolist(),
        "numba": "numba" in sys.modules,
    }))
"""
_EXPECTED = [0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4]  # max(y + bias, 0), by hand


def test_a_fresh_cache_builds_then_loads_without_compiling(tmp_path):
    first = _python(_RUN_EPILOGUE, RONN_CACHE_DIR=str(tmp_path))
    assert first == {"module": "ronn_cpu.native.epilogue", "out": _EXPECTED, "numba": False}
    built = sorted(p.name for p in (tmp_path / "native").iterdir())
    assert len(built) == 1 and built[0].startswith("ronn_native_epilogue-")  # no scratch files left
    # a compiler that cannot run is not needed any more: the cached module loads
    again = _python(_RUN_EPILOGUE, RONN_CACHE_DIR=str(tmp_path), CC="/nonexistent/cc")
    assert again == first


def test_without_a_compiler_numba_serves_and_a_warning_says_why(tmp_path):
    code = _RUN_EPILOGUE.replace("import json, sys", "import json, sys, logging; logging.basicConfig()")
    environment = {**os.environ, "RONN_CACHE_DIR": str(tmp_path), "CC": "/nonexistent/cc"}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], check=False, capture_output=True, text=True, env=environment)
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got == {"module": "ronn_cpu.jit.epilogue", "out": _EXPECTED, "numba": True}
    assert "native epilogue kernels unavailable" in result.stderr and "using numba" in result.stderr
    assert not list((tmp_path / "native").iterdir())  # no half-written module


def test_ronn_native_0_turns_them_off(tmp_path):
    got = _python(_RUN_EPILOGUE, RONN_CACHE_DIR=str(tmp_path), RONN_NATIVE="0")
    assert got == {"module": "ronn_cpu.jit.epilogue", "out": _EXPECTED, "numba": True}
    assert not (tmp_path / "native").exists()


def test_concurrent_first_builds_all_succeed(tmp_path):
    environment = {**os.environ, "RONN_CACHE_DIR": str(tmp_path)}
    processes = [
        subprocess.Popen([sys.executable, "-c", textwrap.dedent(_RUN_EPILOGUE)], stdout=subprocess.PIPE, env=environment)
        for _ in range(3)
    ]
    for process in processes:
        out, _ = process.communicate(timeout=300)
        assert process.returncode == 0
        assert json.loads(out.decode().strip().splitlines()[-1])["out"] == _EXPECTED
    assert len(list((tmp_path / "native").iterdir())) == 1


def test_arguments_it_does_not_take_fall_back_to_numba():
    import numpy as np
    from ronn_cpu.kernels._epilogue import kernel_params

    module = native.facade("epilogue")
    c = native.extension("epilogue")
    base = np.arange(48, dtype=np.float32) - 24
    strided = base[::2]  # (1, 3, 8) flat, not contiguous: the C function declines
    shift = np.array([1, 2, 3], np.float32)
    params = kernel_params(np.dtype(np.float32), 0.01, 0.0)
    assert c.bias(1, 1, strided, shift, strided, False, 3, 8, params) is NotImplemented
    assert c.bias(1, 1, base.astype(np.int32), shift, base, False, 3, 16, params) is NotImplemented
    assert c.bias(1, 1, base, shift[:2], base, False, 3, 16, params) is NotImplemented  # too few channels
    expected = np.maximum(strided.reshape(3, 8) + shift.reshape(3, 1), 0).ravel()
    module.BIAS[1](strided, shift, strided, False, 3, 8, params)  # numba takes any layout
    np.testing.assert_array_equal(strided, expected)
    with pytest.raises(TypeError, match="takes 9 arguments"):
        c.bias(1, 1, base)


def test_kinds_match_the_numba_module():
    from ronn_cpu.jit import load_numba

    assert native.facade("epilogue").KINDS == load_numba("epilogue").KINDS


def test_sources_ship_inside_the_package():
    sources = Path(native.__file__).with_name("csrc")
    assert (sources / "common.h").is_file()
    for family in native.FAMILIES:
        assert (sources / f"{family}.c").is_file(), family


def test_the_numba_twins_pass_the_kernel_tests():
    """With ``RONN_NATIVE=0`` numba serves every kernel: the kernel tests again, through it."""
    here = Path(__file__).parent
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-n", "0"]
    command += [str(here / "test_fast_kernels.py"), str(here / "test_channels_last.py")]
    environment = {**os.environ, "RONN_NATIVE": "0"}
    result = subprocess.run(command, check=False, capture_output=True, text=True, env=environment, cwd=here.parents[1])
    assert result.returncode == 0, result.stdout[-4000:]
    assert " passed" in result.stdout and "failed" not in result.stdout


def _small_cnn() -> bytes:
    """Stem, depthwise and pointwise convolutions, BatchNormalization, pools, a classifier."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)

    def weight(name: str, *shape: int) -> object:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("HardSwish", ["c1"], ["h1"]),
        helper.make_node("Conv", ["h1", "w2", "b2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=16),
        helper.make_node("BatchNormalization", ["c2", "s", "t", "m", "v"], ["n2"]),
        helper.make_node("Relu", ["n2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], kernel_shape=[1, 1]),
        helper.make_node("Relu", ["c3"], ["r3"]),
        helper.make_node("MaxPool", ["r3"], ["p3"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["p3", "w4"], ["c4"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("AveragePool", ["c4"], ["p4"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["p4"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "w5", "b5"], ["y"], transB=1),
    ]
    initializers = [
        weight("w1", 16, 3, 3, 3), weight("b1", 16), weight("w2", 16, 1, 3, 3), weight("b2", 16),
        weight("s", 16), weight("t", 16), weight("m", 16),
        numpy_helper.from_array(rng.uniform(0.5, 2, 16).astype(np.float32), "v"),
        weight("w3", 64, 16, 1, 1), weight("b3", 64), weight("w4", 16, 64, 3, 3), weight("w5", 10, 16), weight("b5", 10),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], initializers,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_a_cnn_runs_without_numba_in_the_process(tmp_path):
    """The point of the C kernels: no LLVM in a process that runs a CNN; onnxruntime agrees."""
    ort = pytest.importorskip("onnxruntime")
    import numpy as np

    path = tmp_path / "cnn.onnx"
    path.write_bytes(_small_cnn())
    x = np.random.default_rng(3).standard_normal((1, 3, 64, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    got = _python(
        f"""
        import json, sys
        import numpy as np
        import ronn
        session = ronn.InferenceSession({str(path)!r})
        (y,) = session.run(None, {{"x": np.load({str(tmp_path / "x.npy")!r})}})
        ops = sorted({{n.op_type for n in session.model.graph.nodes}})
        print(json.dumps({{"y": y.tolist(), "ops": ops, "numba": "numba" in sys.modules,
                          "llvmlite": "llvmlite" in sys.modules}}))
        """
    )
    assert {"FusedConv", "MaxPool", "AveragePool", "GlobalAveragePool"} <= set(got["ops"]), got["ops"]
    assert not got["numba"] and not got["llvmlite"]
    (expected,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(np.array(got["y"], np.float32), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX permissions")
def test_an_unwritable_cache_falls_back_to_a_private_temporary_folder(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    got = _python(_RUN_EPILOGUE, RONN_CACHE_DIR=str(blocker / "cache"), TMPDIR=str(temporary))
    assert got["module"] == "ronn_cpu.native.epilogue" and got["out"] == _EXPECTED
    folder = temporary / f"ronn-{os.getuid()}"
    assert folder.stat().st_mode & 0o777 == 0o700
    assert [p.name.split("-")[0] for p in (folder / "native").iterdir()] == ["ronn_native_epilogue"]


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX permissions")
def test_a_temporary_folder_others_can_write_is_refused(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    temporary = tmp_path / "tmp"
    (temporary / f"ronn-{os.getuid()}").mkdir(parents=True)
    (temporary / f"ronn-{os.getuid()}").chmod(0o777)  # as another user could have made it
    got = _python(_RUN_EPILOGUE, RONN_CACHE_DIR=str(blocker / "cache"), TMPDIR=str(temporary))
    assert got == {"module": "ronn_cpu.jit.epilogue", "out": _EXPECTED, "numba": True}
    assert not (temporary / f"ronn-{os.getuid()}" / "native").exists()


def test_python_m_builds_every_family(tmp_path):
    environment = {**os.environ, "RONN_CACHE_DIR": str(tmp_path)}
    command = [sys.executable, "-m", "ronn_cpu.native"]
    result = subprocess.run(command, check=False, capture_output=True, text=True, env=environment, timeout=600)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == list(native.FAMILIES)
    assert len(list((tmp_path / "native").iterdir())) == len(native.FAMILIES)
    off = subprocess.run(command, check=False, capture_output=True, text=True, env={**environment, "RONN_NATIVE": "0"})
    assert off.returncode == 1 and "turned off" in off.stdout
