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
