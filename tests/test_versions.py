"""Versions move in lockstep and first-party pins are exact."""

from __future__ import annotations

import re
import tomllib
from importlib import import_module, metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MEMBERS = sorted(p.parent for p in ROOT.glob("ronn-*/pyproject.toml"))


def project(path: Path) -> dict:
    return tomllib.loads((path / "pyproject.toml").read_text())["project"]


def first_party(requirement: str) -> tuple[str, str] | None:
    match = re.match(r"^(ronn(?:-[a-z]+)?)(?:\[[a-z,]+\])?\s*(.*)$", requirement)
    return (match.group(1), match.group(2).strip()) if match else None


def test_every_member_is_in_the_workspace() -> None:
    workspace = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]
    assert sorted(workspace["members"]) == sorted(p.name for p in MEMBERS)


def test_versions_are_in_lockstep() -> None:
    version = project(ROOT)["version"]
    for member in MEMBERS:
        assert project(member)["version"] == version, member.name


@pytest.mark.parametrize("member", [ROOT, *MEMBERS], ids=lambda p: p.name)
def test_first_party_pins_are_exact(member: Path) -> None:
    version = project(ROOT)["version"]
    data = project(member)
    requirements = list(data.get("dependencies", []))
    for extra in data.get("optional-dependencies", {}).values():
        requirements += extra
    for requirement in requirements:
        parsed = first_party(requirement)
        if parsed:
            assert parsed[1] == f"=={version}", f"{member.name}: {requirement}"


def test_default_install_is_the_cpu_runtime_and_cli() -> None:
    deps = {first_party(r)[0] for r in project(ROOT)["dependencies"] if first_party(r)}
    assert deps == {"ronn-core", "ronn-onnx", "ronn-cpu", "ronn-api"}


@pytest.mark.parametrize(
    "dist, module", [("ronn-core", "ronn"), ("ronn-onnx", "ronn_onnx"), ("ronn-cpu", "ronn_cpu"), ("ronn-api", "ronn_api")]
)
def test_installed_versions_match(dist: str, module: str) -> None:
    version = project(ROOT)["version"]
    assert metadata.version(dist) == version
    assert import_module(module).__version__ == version


def test_entry_points_are_declared_and_cheap() -> None:
    names = {ep.name: ep.value for ep in metadata.entry_points(group="ronn")}
    assert names["cpu"] == "ronn_cpu.plugin"
    assert names["onnx"] == "ronn_onnx.plugin"


def test_plugin_modules_import_without_heavy_dependencies() -> None:
    import subprocess
    import sys

    code = (
        "import sys, ronn_cpu.plugin, ronn_onnx.plugin\n"
        "heavy = [m for m in ('onnx', 'google.protobuf', 'ronn_cpu.kernels', 'ronn_onnx.loader') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
