"""The plugin host: fresh hosts, registrars, conflicts, switches, entry points on disk."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ronn import hookimpl
from ronn.errors import PluginLoadError, RegistrationConflictError, RonnWarning
from ronn.plugins import PluginHost


class KernelPlugin:
    def __init__(self, op: str = "Foo") -> None:
        self.op = op

    @hookimpl
    def ronn_register_kernels(self, registry):
        registry.add(self.op, lambda ctx: (lambda x: (x,)), domain="com.test", since_version=3)


def test_fresh_host_has_nothing_until_told() -> None:
    host = PluginHost(autoload=False)
    assert host.providers().names() == []
    assert len(host.kernels()) == 0


def test_registered_kernel_is_found_by_version() -> None:
    host = PluginHost(autoload=False, plugins=[KernelPlugin()])
    kernels = host.kernels()
    assert kernels.lookup("com.test", "Foo", 5, "CPUExecutionProvider") is not None
    assert kernels.lookup("com.test", "Foo", 2, "CPUExecutionProvider") is None
    assert kernels.lookup("com.test", "Bar", 5, "CPUExecutionProvider") is None


def test_registries_rebuild_after_register_and_unregister() -> None:
    host = PluginHost(autoload=False)
    assert len(host.kernels()) == 0
    host.register(KernelPlugin(), name="k")
    assert len(host.kernels()) == 1
    host.unregister("k")
    assert len(host.kernels()) == 0


def test_conflict_names_both_plugins() -> None:
    host = PluginHost(autoload=False)
    host.register(KernelPlugin(), name="first")
    host.register(KernelPlugin(), name="second")
    with pytest.raises(RegistrationConflictError, match="'first'.*'second'"):
        host.kernels()


def test_misspelled_hook_fails_at_registration() -> None:
    class Misspelled:
        @hookimpl
        def ronn_register_kernel(self, registry):  # missing "s"
            pass

    with pytest.raises(PluginLoadError, match="ronn_register_kernel"):
        PluginHost(autoload=False, plugins=[Misspelled()])


def test_hook_may_take_fewer_arguments() -> None:
    seen = []

    class Wrapper:
        @hookimpl
        def ronn_wrap_run(self, run):
            seen.append(run)
            return None

    host = PluginHost(autoload=False, plugins=[Wrapper()])
    def original(feeds, fetches, options):
        return {}

    assert host.wrap_run(original, None) is original
    assert seen == [original]


# --- entry points from distributions on disk ---------------------------------------------


def make_distribution(root: Path, dist: str, entry: str, module: str, source: str) -> None:
    """Write an installed distribution (module + dist-info with an entry point) under root."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[ronn]\n{entry} = {module}\n")


GOOD = """
from ronn import hookimpl

@hookimpl
def ronn_register_kernels(registry):
    registry.add("Good", lambda ctx: (lambda x: (x,)), domain="com.disk")
"""


def test_entry_points_load_with_switches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_distribution(tmp_path, "disk-good", "diskgood", "disk_good_mod", GOOD)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("RONN_PLUGINS", "diskgood")
    host = PluginHost()
    assert host.kernels().lookup("com.disk", "Good", 1, "CPUExecutionProvider") is not None
    info = {p.name: p for p in host.plugins()}
    assert info["diskgood"].distribution == "disk-good"
    assert info["diskgood"].hooks == ("ronn_register_kernels",)

    monkeypatch.setenv("RONN_BLOCK_PLUGINS", "diskgood")
    assert "diskgood" not in {p.name for p in PluginHost().plugins()}
    monkeypatch.delenv("RONN_BLOCK_PLUGINS")
    monkeypatch.setenv("RONN_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert PluginHost().plugins() == []
    monkeypatch.delenv("RONN_DISABLE_PLUGIN_AUTOLOAD")
    assert "diskgood" not in {p.name for p in PluginHost(allow=["other"]).plugins()}


def test_import_error_names_the_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_distribution(tmp_path, "disk-broken", "diskbroken", "disk_broken_mod", "import not_a_module_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("RONN_PLUGINS", "diskbroken")
    with pytest.raises(PluginLoadError, match="diskbroken.*disk-broken.*not_a_module_xyz") as info:
        PluginHost().kernels()
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_duplicate_entry_point_names_are_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    make_distribution(one, "disk-one", "same", "disk_one_mod", GOOD)
    make_distribution(two, "disk-two", "same", "disk_two_mod", GOOD.replace("Good", "Other"))
    monkeypatch.syspath_prepend(str(one))
    monkeypatch.syspath_prepend(str(two))
    monkeypatch.setenv("RONN_PLUGINS", "same")
    host = PluginHost()
    with pytest.warns(RonnWarning, match="'same' is provided by two distributions"):
        host.load()
    assert len(host.duplicates) == 1


def test_importing_ronn_loads_no_plugin() -> None:
    code = (
        "import sys, ronn, ronn.plugins\n"
        "assert ronn.plugins._default_host is None\n"
        "heavy = [m for m in ('ronn_cpu', 'ronn_onnx', 'onnx', 'ronn.session') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_hosts_do_not_leak_into_each_other() -> None:
    a = PluginHost(autoload=False, plugins=[KernelPlugin("A")])
    b = PluginHost(autoload=False)
    assert len(a.kernels()) == 1
    assert len(b.kernels()) == 0
