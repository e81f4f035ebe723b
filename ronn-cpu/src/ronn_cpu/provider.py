"""The CPU execution provider."""

from __future__ import annotations

import numpy as np

from ronn.provider import ExecutionProvider

NAME = "CPUExecutionProvider"


class CPUExecutionProvider(ExecutionProvider):
    """Runs nodes on the host with numpy kernels (numba where it pays)."""

    name = NAME
    device = "cpu"
    xp = np
