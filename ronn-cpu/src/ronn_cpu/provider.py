"""The CPU execution provider."""

from __future__ import annotations

import numpy as np

from ronn.errors import ProviderError
from ronn.provider import ExecutionProvider

from . import jit  # sets OMP_WAIT_POLICY before numba can start a thread pool

NAME = "CPUExecutionProvider"

#: provider option: threads for BLAS and numba kernels ("0" or absent: leave the defaults,
#: every core the process may use)
INTRA_OP_NUM_THREADS = "intra_op_num_threads"


class CPUExecutionProvider(ExecutionProvider):
    """Runs nodes on the host with numpy kernels (numba where it pays).

    Options: ``intra_op_num_threads`` (an int >= 0) sets how many threads BLAS and the numba
    kernels use. Both are process-wide, so the last session created with a nonzero count
    decides for every session of the process.
    """

    name = NAME
    device = "cpu"
    xp = np

    def __init__(self, options: dict[str, str] | None = None) -> None:
        super().__init__(options)
        self.intra_op_num_threads = _thread_count(self.options.get(INTRA_OP_NUM_THREADS))
        if self.intra_op_num_threads:
            jit.set_threads(self.intra_op_num_threads)


def _thread_count(value: str | None) -> int:
    if value is None or str(value).strip() == "":
        return 0
    try:
        count = int(str(value).strip())
    except ValueError:
        count = -1
    if count < 0:
        raise ProviderError(f"{INTRA_OP_NUM_THREADS} must be an int >= 0, got {value!r}")
    return count
