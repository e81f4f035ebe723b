"""``python -m ronn_cpu.native``: build every family's C module now (a container image, say),
print where each is cached, and fail if any cannot be built."""

from __future__ import annotations

import logging
import sys

from . import FAMILIES, enabled, extension


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if not enabled():
        print("native kernels are turned off (RONN_NATIVE=0)")
        return 1
    failed = 0
    for family in FAMILIES:
        module = extension(family)
        print(f"{family}: {module.__file__ if module else 'unavailable (numba serves it)'}")
        failed += module is None
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
