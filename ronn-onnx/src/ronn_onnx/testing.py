"""A test kit: run ONNX's own test cases through ronn, compared the way onnx's runner does.

Third-party providers use it to run the same conformance checks ronn runs::

    from ronn_onnx.testing import node_cases, run_case
    for case in node_cases():
        run_case(case, providers=["MyExecutionProvider"])

``python -m ronn_onnx.testing WORD ...`` runs the node cases whose names contain a word.
"""

from __future__ import annotations

import glob
import os
import sys
import traceback
from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np
import onnx
from onnx import numpy_helper

import ronn

_NARROW = {
    np.dtype(t)
    for t in (
        ml_dtypes.bfloat16,
        ml_dtypes.float8_e4m3fn,
        ml_dtypes.float8_e4m3fnuz,
        ml_dtypes.float8_e5m2,
        ml_dtypes.float8_e5m2fnuz,
        ml_dtypes.float4_e2m1fn,
        ml_dtypes.float8_e8m0fnu,
    )
}
_NARROW_INTS = {np.dtype(t) for t in (ml_dtypes.int4, ml_dtypes.uint4, ml_dtypes.int2, ml_dtypes.uint2)}


@dataclass
class Case:
    """One test: a model and its data sets of (inputs, expected outputs)."""

    name: str
    model: onnx.ModelProto
    data_sets: list[tuple[list[Any], list[Any]]]
    rtol: float = 1e-3
    atol: float = 1e-7


def node_cases() -> list[Case]:
    """Every node test case onnx defines, generated in-process (cached per onnx version).

    Generating them takes ~10 s, so they are pickled under the temp folder, keyed by the
    onnx version; set RONN_NO_CASE_CACHE=1 to regenerate.
    """
    import pickle
    import tempfile

    cache = os.path.join(tempfile.gettempdir(), f"ronn-node-cases-onnx-{onnx.__version__}.pkl")
    if os.environ.get("RONN_NO_CASE_CACHE", "") in ("", "0") and os.path.exists(cache):
        try:
            with open(cache, "rb") as handle:
                return [Case(*fields) for fields in pickle.load(handle)]
        except Exception:
            pass
    from onnx.backend.test.case.node import collect_testcases

    cases = []
    for tc in collect_testcases(None):
        cases.append(Case(tc.name, tc.model, [(list(i), list(o)) for i, o in tc.data_sets], tc.rtol, tc.atol))
    tmp = f"{cache}.{os.getpid()}"
    with open(tmp, "wb") as handle:
        pickle.dump([(c.name, c.model, c.data_sets, c.rtol, c.atol) for c in cases], handle)
    os.replace(tmp, cache)
    return cases


def _read_pb(path: str, type_hint: Any) -> Any:
    data = open(path, "rb").read()
    kind = getattr(type_hint, "WhichOneof", lambda _: "tensor_type")("value") if type_hint is not None else "tensor_type"
    if kind == "sequence_type":
        proto = onnx.SequenceProto()
        proto.ParseFromString(data)
        return numpy_helper.to_list(proto)
    if kind == "optional_type":
        proto = onnx.OptionalProto()
        proto.ParseFromString(data)
        return numpy_helper.to_optional(proto)
    proto = onnx.TensorProto()
    proto.ParseFromString(data)
    return numpy_helper.to_array(proto)


def data_dir() -> str:
    """Where the onnx wheel keeps its backend test data."""
    return os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")


def model_cases(kind: str) -> list[Case]:
    """The onnx-shipped model tests of one set: simple, pytorch-converted, pytorch-operator."""
    cases = []
    for folder in sorted(glob.glob(os.path.join(data_dir(), kind, "*"))):
        model_path = os.path.join(folder, "model.onnx")
        if not os.path.exists(model_path):
            continue
        model = onnx.load(model_path)
        init = {t.name for t in model.graph.initializer}
        ins = [v for v in model.graph.input if v.name not in init]
        outs = list(model.graph.output)
        sets = []
        for ds in sorted(glob.glob(os.path.join(folder, "test_data_set_*"))):
            n_in = len(glob.glob(os.path.join(ds, "input_*.pb")))
            n_out = len(glob.glob(os.path.join(ds, "output_*.pb")))
            inputs = [_read_pb(os.path.join(ds, f"input_{i}.pb"), ins[i].type if i < len(ins) else None) for i in range(n_in)]
            outputs = [_read_pb(os.path.join(ds, f"output_{i}.pb"), outs[i].type if i < len(outs) else None) for i in range(n_out)]
            sets.append((inputs, outputs))
        cases.append(Case(os.path.basename(folder), model, sets))
    return cases


def assert_close(expected: Any, actual: Any, rtol: float, atol: float, where: str = "") -> None:
    """onnx's backend comparison: same type, dtype and shape; allclose; NaN equals NaN."""
    if isinstance(expected, list):
        assert isinstance(actual, list), f"{where}: expected a sequence, got {type(actual).__name__}"
        assert len(expected) == len(actual), f"{where}: sequence length {len(actual)} != {len(expected)}"
        for i, (e, a) in enumerate(zip(expected, actual)):
            assert_close(e, a, rtol, atol, f"{where}[{i}]")
        return
    if expected is None:
        assert actual is None, f"{where}: expected None (empty optional), got {type(actual).__name__}"
        return
    expected = np.asarray(expected)
    assert isinstance(actual, np.ndarray), f"{where}: expected an array, got {type(actual).__name__}"
    if expected.dtype.kind in "OUS":
        assert actual.dtype.kind in "OUS", f"{where}: dtype {actual.dtype} != {expected.dtype}"
        assert expected.shape == actual.shape, f"{where}: shape {actual.shape} != {expected.shape}"
        assert [str(v) for v in expected.ravel()] == [str(v) for v in actual.ravel()], f"{where}: strings differ"
        return
    assert expected.dtype == actual.dtype, f"{where}: dtype {actual.dtype} != {expected.dtype}"
    assert expected.shape == actual.shape, f"{where}: shape {actual.shape} != {expected.shape}"
    if expected.dtype in _NARROW:
        expected, actual = expected.astype(np.float32), actual.astype(np.float32)
    elif expected.dtype in _NARROW_INTS:
        expected, actual = expected.astype(np.int32), actual.astype(np.int32)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True, err_msg=where)


def as_value(value: Any) -> Any:
    """A data-set value as ronn takes it: TensorProtos become arrays, recursively."""
    if isinstance(value, onnx.TensorProto):
        from .convert import tensor_to_array

        return tensor_to_array(value)
    if isinstance(value, list):
        return [as_value(v) for v in value]
    return value


def run_case(case: Case, host: Any = None, providers: list[str] | None = None) -> None:
    """Run one case through ronn.InferenceSession; raise AssertionError on a mismatch."""
    session = ronn.InferenceSession(case.model.SerializeToString(), providers=providers, plugin_host=host)
    init = {t.name for t in case.model.graph.initializer}
    input_names = [v.name for v in case.model.graph.input if v.name not in init]
    output_names = [v.name for v in case.model.graph.output]
    for index, (inputs, expected) in enumerate(case.data_sets):
        feeds = {name: as_value(v) for name, v in zip(input_names, inputs)}
        expected = [as_value(v) for v in expected]
        actual = session.run(output_names[: len(expected)], feeds)
        for name, e, a in zip(output_names, expected, actual):
            assert_close(e, a, case.rtol, case.atol, f"{case.name} data set {index} output {name!r}")


def main(words: list[str]) -> int:
    cases = [c for c in node_cases() if not words or any(w.lower() in c.name.lower() for w in words)]
    passed, failures = 0, []
    for case in cases:
        try:
            run_case(case)
            passed += 1
        except Exception as exc:
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            failures.append((case.name, detail.splitlines()[0][:300] if detail else repr(exc)))
    for name, reason in failures:
        print(f"FAIL {name}: {reason}")
    print(f"{passed} passed, {len(failures)} failed of {len(cases)} node cases")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
