"""Models from the Hugging Face Hub (``hf://``), against a local Hub (``tests/hub_server.py``).

How the client is pointed at the local server
---------------------------------------------
huggingface_hub reads its environment once, when ``huggingface_hub.constants`` is imported:
``ENDPOINT`` (and the URL template built from it), ``HF_HUB_OFFLINE``, the cache and token
paths. Setting the environment in a test is therefore not enough for the client itself, so
the ``hf`` fixture does both:

* it sets ``HF_ENDPOINT``, ``HF_HOME`` and clears ``HF_TOKEN``/``HF_HUB_CACHE``/
  ``HF_HUB_OFFLINE`` with ``monkeypatch.setenv``/``delenv``; ronn reads these on every
  download (``ronn_onnx.hub.endpoint()``, ``resolve_cache_dir()``, ``is_offline()``) and
  passes ``endpoint=``, ``cache_dir=`` and ``local_files_only=`` to ``hf_hub_download``;
* it patches the matching ``huggingface_hub.constants`` attributes with
  ``monkeypatch.setattr`` (``ENDPOINT``, ``HUGGINGFACE_CO_URL_TEMPLATE``, ``HF_HOME``,
  ``HF_HUB_CACHE``, ``HF_TOKEN_PATH``, ``HF_STORED_TOKENS_PATH``, ``AGENT_HARNESSES_PATH``,
  ``HF_XET_CACHE``, ``HF_HUB_OFFLINE``), so that nothing the client does on its own (its
  once-a-process agent-registry request, token look-up, offline check) reaches the real Hub
  or the user's real cache and token.

``go_offline`` sets both ``HF_HUB_OFFLINE=1`` and ``constants.HF_HUB_OFFLINE``.
``test_environment_is_read_at_download_time`` leaves the constants pointing elsewhere and
shows that ronn follows the environment alone.

Every test gets a fresh cache in its own tmp folder; the server (module-scoped) records the
requests, so ``hub.downloads() == 0`` proves that a call was served from the cache.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

import ronn
from ronn.errors import HubError, HubNotFoundError, ModelError
from ronn_api.cli import main
from ronn_onnx import hub as onnx_hub


def _load_server_module():
    """``tests/`` is not a package and pytest runs with --import-mode=importlib: load by path."""
    name = "ronn_tests_hub_server"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("hub_server.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


HubServer = _load_server_module().HubServer

TOKEN = "hf_ronn_test_token"
X = np.array([1.0, -2.0, 0.5], np.float32)
XE = np.arange(6, dtype=np.float32).reshape(2, 3)


# --- models -------------------------------------------------------------------------------


def _tiny(scale: float) -> onnx.ModelProto:
    """y = x * W, W = scale * [1, 2, 3]."""
    w = numpy_helper.from_array(scale * np.array([1, 2, 3], np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "W"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _expected_tiny(scale: float) -> np.ndarray:
    return X * scale * np.array([1, 2, 3], np.float32)


W_EXT = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
B_EXT = np.arange(4, dtype=np.float32)
C_EXT = np.full((4,), 0.5, np.float32)


def _external(folder: Path) -> None:
    """onnx/model.onnx: y = (x @ W + B) * C, every tensor (C a Constant's attribute) in
    onnx/model.onnx.data."""
    nodes = [
        helper.make_node("Constant", [], ["C"], value=numpy_helper.from_array(C_EXT, "C")),
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "B"], ["z"]),
        helper.make_node("Mul", ["z", "C"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "external",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [numpy_helper.from_array(W_EXT, "W"), numpy_helper.from_array(B_EXT, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (folder / "onnx").mkdir(parents=True, exist_ok=True)
    onnx.save_model(
        model,
        str(folder / "onnx" / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx.data",
        size_threshold=0,
        convert_attribute=True,
    )


def _expected_external() -> np.ndarray:
    return (XE @ W_EXT + B_EXT) * C_EXT


def _escaping(folder: Path, location: str) -> None:
    """A model whose external data location points outside its folder."""
    folder.mkdir(parents=True, exist_ok=True)
    model = _tiny(1.0)
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "12")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(folder / "model.onnx"))


# --- the server and the environment ---------------------------------------------------------


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub-repos")
    v1, v2 = root / "v1", root / "v2"
    v1.mkdir()
    v2.mkdir()
    onnx.save(_tiny(1.0), str(v1 / "tiny.onnx"))
    onnx.save(_tiny(2.0), str(v2 / "tiny.onnx"))
    _external(v2)
    (v2 / "README.md").write_text("test repository\n")
    _escaping(root / "evil-parent", "../secret.data")
    _escaping(root / "evil-absolute", "/etc/passwd")

    with HubServer() as server:
        tiny = server.create_repo("ronn-test/tiny")
        old = tiny.commit(v1, message="first")
        new = tiny.commit(v2, message="second")
        tiny.tag("v1.0", old)
        private = server.create_repo("ronn-test/private", token=TOKEN)
        private.commit(v2)
        server.create_repo("ronn-test/evil-parent").commit(root / "evil-parent")
        server.create_repo("ronn-test/evil-absolute").commit(root / "evil-absolute")
        server.rename("ronn-test/old-name", "ronn-test/tiny")
        server.old_commit, server.new_commit = old, new
        yield server


def _patch_constants(monkeypatch, *, endpoint: str, home: Path) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(home / ".agent_harnesses.json"))
    monkeypatch.setattr(constants, "HF_XET_CACHE", str(home / "xet"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def hf(hub, tmp_path, monkeypatch):
    """The client and ronn pointed at the local Hub, with an empty cache of this test's own."""
    home = tmp_path / "hf-home"
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setenv("HF_HOME", str(home))
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    _patch_constants(monkeypatch, endpoint=hub.endpoint, home=home)
    hub.reset()
    return SimpleNamespace(server=hub, home=home, cache=home / "hub")


def go_offline(monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def run(source: str, feeds: dict) -> list[np.ndarray]:
    return ronn.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, feeds)


TINY = "hf://ronn-test/tiny/tiny.onnx"
EXTERNAL = "hf://ronn-test/tiny/onnx/model.onnx"


# --- references -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("hf://owner/repo/model.onnx", ("owner/repo", "model.onnx", None)),
        ("hf://owner/repo/path/to/model.onnx", ("owner/repo", "path/to/model.onnx", None)),
        ("hf://owner/repo@v1.0/onnx/model.onnx", ("owner/repo", "onnx/model.onnx", "v1.0")),
        ("hf://owner/repo@" + "a" * 40 + "/m.onnx", ("owner/repo", "m.onnx", "a" * 40)),
        ("hf://owner/repo@refs/pr/3/m.onnx", ("owner/repo", "m.onnx", "refs/pr/3")),
        ("hf://owner/repo@my%2Fbranch/m.onnx", ("owner/repo", "m.onnx", "my/branch")),
        ("hf://models/owner/repo/m.onnx", ("owner/repo", "m.onnx", None)),
    ],
)
def test_parse_hf_uri(uri: str, expected: tuple) -> None:
    assert tuple(onnx_hub.parse_hf_uri(uri)) == expected
    assert tuple(ronn.hub.parse_uri(uri)) == expected


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("hf://owner/repo", "names no file"),
        ("hf://owner/repo/", "names no file"),
        ("hf://owner/repo@main", "names no file"),
        ("hf://owner", "no owner/repo"),
        ("hf://", "no owner/repo"),
        ("hf://owner/repo@/m.onnx", "empty revision"),
        ("hf://owner/repo/../m.onnx", "malformed file path"),
        ("hf://datasets/owner/repo/m.onnx", "only model repositories"),
        ("owner/repo/m.onnx", "not a Hugging Face Hub reference"),
    ],
)
def test_malformed_references_say_the_expected_form(uri: str, says: str) -> None:
    with pytest.raises(HubError, match="expected hf://owner/repo/path/to/model.onnx") as info:
        onnx_hub.parse_hf_uri(uri)
    assert says in str(info.value)


def test_importing_ronn_onnx_imports_neither_huggingface_hub_nor_onnx() -> None:
    code = (
        "import sys, ronn, ronn.hub, ronn_onnx, ronn_onnx.plugin, ronn_onnx.hub\n"
        "assert 'huggingface_hub' not in sys.modules and 'onnx' not in sys.modules, "
        "sorted(m for m in sys.modules if m.split('.')[0] in ('huggingface_hub', 'onnx'))\n"
        "host = ronn.PluginHost()\n"
        "assert host.loaders().find('hf://o/r/m.onnx') is not None\n"
        "assert host.loaders().get('hf').can_load('hf://o/r/m.onnx')\n"
        "assert not host.loaders().get('onnx').can_load('hf://o/r/m.onnx')\n"
        "assert 'huggingface_hub' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# --- downloading and the cache --------------------------------------------------------------


def test_first_download_then_a_cache_hit_without_download(hf) -> None:
    path = ronn.hub.download("hf://ronn-test/tiny/tiny.onnx")
    assert Path(path).is_file()
    assert Path(path).is_relative_to(hf.cache)
    assert f"snapshots/{hf.server.new_commit}/tiny.onnx" in Path(path).as_posix()
    assert hf.server.downloads() == 1
    np.testing.assert_allclose(run(path, {"x": X})[0], _expected_tiny(2.0))

    hf.server.reset()
    assert ronn.hub.download(repo_id="ronn-test/tiny", filename="tiny.onnx") == path
    assert hf.server.downloads() == 0  # a HEAD to check `main` still points there, no GET
    assert hf.server.count("HEAD", contains="/resolve/main/tiny.onnx") == 1

    hf.server.reset()  # a commit hash is immutable: no request at all
    assert ronn.hub.download("ronn-test/tiny", "tiny.onnx", revision=hf.server.new_commit) == path
    assert hf.server.file_requests() == 0


def test_pinned_revision_gives_the_older_model(hf) -> None:
    old, new = hf.server.old_commit, hf.server.new_commit
    np.testing.assert_allclose(run(f"hf://ronn-test/tiny@{old}/tiny.onnx", {"x": X})[0], _expected_tiny(1.0))
    np.testing.assert_allclose(run("hf://ronn-test/tiny@v1.0/tiny.onnx", {"x": X})[0], _expected_tiny(1.0))
    np.testing.assert_allclose(run(TINY, {"x": X})[0], _expected_tiny(2.0))
    np.testing.assert_allclose(run(f"hf://ronn-test/tiny@{new}/tiny.onnx", {"x": X})[0], _expected_tiny(2.0))
    pinned = ronn.hub.download("ronn-test/tiny", "tiny.onnx", revision=old)
    assert f"snapshots/{old}/" in Path(pinned).as_posix()


def test_inference_session_on_hf_reference_matches_onnxruntime(hf) -> None:
    session = ronn.InferenceSession(TINY)
    assert [i.name for i in session.get_inputs()] == ["x"]
    path = ronn.hub.download(TINY)
    expected = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": X})[0]
    np.testing.assert_allclose(session.run(None, {"x": X})[0], expected)


def test_renamed_repository_redirects(hf) -> None:
    path = ronn.hub.download("hf://ronn-test/old-name/tiny.onnx")
    np.testing.assert_allclose(run(path, {"x": X})[0], _expected_tiny(2.0))
    assert hf.server.count("HEAD", contains="ronn-test/old-name/resolve/") == 1


def test_cache_dir_argument_and_hf_hub_cache(hf, tmp_path, monkeypatch) -> None:
    path = ronn.hub.download(TINY, cache_dir=tmp_path / "elsewhere")
    assert Path(path).is_relative_to(tmp_path / "elsewhere")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "from-env"))
    assert Path(ronn.hub.download(TINY)).is_relative_to(tmp_path / "from-env")


# --- offline --------------------------------------------------------------------------------


def test_offline_uses_the_cache(hf, monkeypatch) -> None:
    online = ronn.hub.download(TINY)
    external = ronn.hub.download(EXTERNAL)
    hf.server.reset()
    go_offline(monkeypatch)
    assert ronn.hub.download(TINY) == online
    np.testing.assert_allclose(run(TINY, {"x": X})[0], _expected_tiny(2.0))
    assert onnx_hub.fetch_uri(EXTERNAL).data_files == [str(Path(external).with_name("model.onnx.data"))]
    assert hf.server.file_requests() == 0


def test_local_files_only_uses_the_cache(hf) -> None:
    online = ronn.hub.download(TINY)
    hf.server.reset()
    assert ronn.hub.download(TINY, local_files_only=True) == online
    assert hf.server.file_requests() == 0


def test_offline_with_nothing_cached(hf, monkeypatch) -> None:
    with pytest.raises(HubNotFoundError, match="offline and not cached") as info:
        ronn.hub.download(TINY, local_files_only=True)
    message = str(info.value)
    assert "'tiny.onnx'" in message and "'ronn-test/tiny'" in message and "'main'" in message
    go_offline(monkeypatch)
    with pytest.raises(HubNotFoundError, match="offline and not cached"):
        ronn.InferenceSession(TINY)
    assert hf.server.file_requests() == 0


# --- errors ---------------------------------------------------------------------------------


def test_missing_repository(hf) -> None:
    with pytest.raises(HubNotFoundError) as info:
        ronn.hub.download("hf://ronn-test/no-such-repo/model.onnx")
    message = str(info.value)
    assert "repository 'ronn-test/no-such-repo' not found" in message
    assert hf.server.endpoint in message and "'model.onnx'" in message and "'main'" in message
    assert isinstance(info.value, FileNotFoundError)  # HubNotFoundError is a ModelNotFoundError


def test_missing_file(hf) -> None:
    with pytest.raises(HubNotFoundError) as info:
        ronn.InferenceSession("hf://ronn-test/tiny/no-such-file.onnx")
    message = str(info.value)
    assert "file 'no-such-file.onnx' not found in repository 'ronn-test/tiny'" in message
    assert "revision 'main'" in message and hf.server.endpoint in message


def test_wrong_revision(hf) -> None:
    with pytest.raises(HubNotFoundError) as info:
        ronn.hub.download(TINY, revision="no-such-branch")
    message = str(info.value)
    assert "revision 'no-such-branch' not found in repository 'ronn-test/tiny'" in message
    assert "'tiny.onnx'" in message and hf.server.endpoint in message
    with pytest.raises(HubNotFoundError, match="revision '0{40}' not found"):
        ronn.hub.download(f"hf://ronn-test/tiny@{'0' * 40}/tiny.onnx")
    with pytest.raises(HubError, match="names revision 'v1.0'"):
        ronn.hub.download("hf://ronn-test/tiny@v1.0/tiny.onnx", revision="main")


def test_private_repository_needs_its_token(hf, monkeypatch) -> None:
    uri = "hf://ronn-test/private/tiny.onnx"
    with pytest.raises(HubNotFoundError, match="if it is private, pass a token"):
        ronn.hub.download(uri)
    with pytest.raises(HubError, match=r"authentication failed \(HTTP 401\)") as info:
        ronn.hub.download(uri, token="hf_wrong")
    assert not isinstance(info.value, HubNotFoundError)
    assert "'ronn-test/private'" in str(info.value)
    path = ronn.hub.download(uri, token=TOKEN)
    np.testing.assert_allclose(run(path, {"x": X})[0], _expected_tiny(2.0))
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # the client's own token look-up
    np.testing.assert_allclose(run("hf://ronn-test/private/tiny.onnx", {"x": X})[0], _expected_tiny(2.0))


def test_the_token_does_not_leave_the_hub(hf) -> None:
    ronn.hub.download("hf://ronn-test/private/onnx/model.onnx", token=TOKEN)
    assert hf.server.count("GET", server="cdn") == 1
    assert all(r.authorization == f"Bearer {TOKEN}" for r in hf.server.requests if r.server == "hub" and "/resolve/" in r.path)
    assert all(r.authorization is None for r in hf.server.requests if r.server == "cdn")


def test_unreachable_endpoint_is_a_hub_error(hf, monkeypatch) -> None:
    """Connection refused: the client retries with back-off (its sleeps skipped here)."""
    from huggingface_hub.utils import _http

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setattr(_http, "time", SimpleNamespace(sleep=lambda seconds: None))
    with pytest.raises(HubError) as info:
        ronn.hub.download(TINY)
    assert not isinstance(info.value, HubNotFoundError)
    assert "http://127.0.0.1:9" in str(info.value) and "not in the cache" in str(info.value)


def test_errors_from_the_cli_are_messages(hf, capsys) -> None:
    assert main(["pull", "hf://ronn-test/no-such-repo/model.onnx"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ronn: error: repository 'ronn-test/no-such-repo' not found")
    assert "Traceback" not in err
    assert main(["run", "hf://ronn-test/tiny@nope/tiny.onnx"]) == 2
    assert "revision 'nope' not found" in capsys.readouterr().err
    assert main(["pull", "hf://ronn-test"]) == 2
    assert "expected hf://owner/repo" in capsys.readouterr().err


# --- external data --------------------------------------------------------------------------


def test_external_data_comes_along_and_matches_onnxruntime(hf) -> None:
    fetched = onnx_hub.fetch_uri(EXTERNAL)
    model = Path(fetched.path)
    data = model.with_name("model.onnx.data")
    assert model.as_posix().endswith(f"snapshots/{hf.server.new_commit}/onnx/model.onnx")
    assert fetched.data_files == [str(data)] and data.is_file()
    assert fetched.commit == hf.server.new_commit
    # the data file was fetched at the commit the model resolved to, through the CDN
    assert hf.server.count("HEAD", contains=f"/resolve/{hf.server.new_commit}/onnx/model.onnx.data") == 1
    assert hf.server.count("GET", server="cdn") == 1

    expected = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": XE})[0]
    np.testing.assert_allclose(expected, _expected_external(), rtol=1e-6)
    assert data.is_symlink()  # the client's cache links snapshots to blobs/: ronn follows it
    got = run(EXTERNAL, {"x": XE})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-6)

    hf.server.reset()  # all cached now
    assert ronn.hub.download(EXTERNAL) == str(model)
    assert hf.server.downloads() == 0


@pytest.mark.parametrize(("repo", "location"), [("evil-parent", "../secret.data"), ("evil-absolute", "/etc/passwd")])
def test_external_data_outside_the_model_folder_is_refused(hf, repo: str, location: str) -> None:
    with pytest.raises(HubError, match="only relative paths inside the model's folder") as info:
        ronn.hub.download(f"hf://ronn-test/{repo}/model.onnx")
    assert repr(location) in str(info.value)
    assert hf.server.count(contains="secret") == 0 and hf.server.count(contains="passwd") == 0


def test_external_locations_of_subgraphs_are_collected(tmp_path) -> None:
    inner_w = numpy_helper.from_array(np.ones(3, np.float32), "inner_w")
    inner_w.data_location = TensorProto.EXTERNAL
    entry = inner_w.external_data.add()
    entry.key, entry.value = "location", "weights/inner.bin"
    inner_w.ClearField("raw_data")
    then_branch = helper.make_graph(
        [helper.make_node("Identity", ["inner_w"], ["out"])],
        "then",
        [],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [3])],
        [inner_w],
    )
    else_branch = helper.make_graph(
        [helper.make_node("Constant", [], ["out"], value=numpy_helper.from_array(np.zeros(3, np.float32)))],
        "else",
        [],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [3])],
    )
    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["y"], then_branch=then_branch, else_branch=else_branch)],
        "g",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
    )
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph), str(path))
    assert onnx_hub.external_data_locations(str(path), "m") == {"weights/inner.bin": "inner_w"}


# --- the command line -----------------------------------------------------------------------


def test_ronn_pull_prints_the_model_and_its_data_files(hf, capsys) -> None:
    assert main(["pull", EXTERNAL]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].endswith(f"snapshots/{hf.server.new_commit}/onnx/model.onnx") and Path(lines[0]).is_file()
    assert lines[1:] == [str(Path(lines[0]).with_name("model.onnx.data"))]
    assert "with 1 external data file" in captured.err

    old = hf.server.old_commit
    assert main(["pull", TINY, "--revision", old, "--cache-dir", str(hf.home / "cli-cache")]) == 0
    out = capsys.readouterr().out.strip()
    assert out.endswith(f"snapshots/{old}/tiny.onnx") and Path(out).is_relative_to(hf.home / "cli-cache")

    hf.server.reset()
    assert main(["pull", TINY, "--revision", old, "--cache-dir", str(hf.home / "cli-cache"), "--offline"]) == 0
    assert capsys.readouterr().out.strip() == out and hf.server.file_requests() == 0


def test_ronn_pull_with_a_token(hf, capsys) -> None:
    assert main(["pull", "hf://ronn-test/private/tiny.onnx"]) == 2
    assert "if it is private" in capsys.readouterr().err
    assert main(["pull", "hf://ronn-test/private/tiny.onnx", "--token", TOKEN]) == 0
    assert capsys.readouterr().out.strip().endswith("tiny.onnx")


def test_ronn_run_and_info_on_hf_references(hf, capsys, tmp_path) -> None:
    np.save(tmp_path / "x.npy", X)
    old = hf.server.old_commit
    assert main(["run", f"hf://ronn-test/tiny@{old}/tiny.onnx", "-i", f"x={tmp_path / 'x.npy'}", "--save", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert f"model: hf://ronn-test/tiny@{old}/tiny.onnx" in out and "output y: float32[3]" in out
    np.testing.assert_allclose(np.load(tmp_path / "out" / "y.npy"), _expected_tiny(1.0))
    assert main(["info", TINY]) == 0
    out = capsys.readouterr().out
    assert "model: hf://ronn-test/tiny/tiny.onnx" in out and "x: tensor(float) [3]" in out


# --- the environment ------------------------------------------------------------------------


def test_environment_is_read_at_download_time(hub, tmp_path, monkeypatch) -> None:
    """The client's constants point at a dead endpoint and another cache; ronn follows the
    environment as it is when the download happens."""
    _patch_constants(monkeypatch, endpoint="http://127.0.0.1:9", home=tmp_path / "import-time-home")
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "call-time-home"))
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    hub.reset()
    path = ronn.hub.download(TINY)
    assert Path(path).is_relative_to(tmp_path / "call-time-home" / "hub")
    assert hub.downloads() == 1
    hub.reset()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the constant still says online
    assert ronn.hub.download(TINY) == path
    with pytest.raises(HubNotFoundError, match="offline and not cached"):
        ronn.hub.download("hf://ronn-test/tiny/onnx/model.onnx")
    assert hub.file_requests() == 0


def test_ronn_hub_without_ronn_onnx(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ronn_onnx", None)
    with pytest.raises(HubError, match="needs ronn-onnx"):
        ronn.hub.download("hf://owner/repo/model.onnx")
