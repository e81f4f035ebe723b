"""What run-wrapping plugins see of a session."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: ``run(feeds, fetches, run_options) -> {name: value}``: one whole inference.
RunFunction = Callable[[dict[str, Any], "list[str] | None", Any], dict[str, Any]]


@dataclass(frozen=True)
class SessionInfo:
    """A read-only description of a built session."""

    model_source: str
    providers: tuple[str, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    node_count: int
