"""Meta-tests: every hook is typed, documented in docs/plugins.md and exercised by a test."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from ronn import hookspecs

ROOT = Path(__file__).resolve().parent.parent
HOOKS = [name for name in dir(hookspecs) if name.startswith("ronn_")]
TEST_FILES = [p for p in ROOT.glob("**/test_*.py") if ".venv" not in p.parts and p.name != Path(__file__).name]


def test_there_are_hooks() -> None:
    assert len(HOOKS) >= 7


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_typed_and_has_a_docstring(name: str) -> None:
    fn = getattr(hookspecs, name)
    assert inspect.getdoc(fn), f"{name} has no docstring"
    signature = inspect.signature(fn)
    for param in signature.parameters.values():
        assert param.annotation is not inspect.Parameter.empty, f"{name}({param.name}) has no type"
    assert signature.return_annotation is not inspect.Signature.empty, f"{name} has no return type"
    assert name in hookspecs.__all__


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_documented(name: str) -> None:
    docs = (ROOT / "docs" / "plugins.md").read_text()
    assert f"`{name}" in docs, f"{name} is not documented in docs/plugins.md"


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_exercised_by_a_test(name: str) -> None:
    sources = [p.read_text() for p in TEST_FILES]
    sources += [p.read_text() for p in (ROOT / "tests" / "plugins").glob("**/*.py")]
    assert any(f"def {name}(" in text for text in sources), f"no test implements {name}"
