"""Run onnx's node test cases through ronn (a thin wrapper over ronn_onnx.testing).

    python tests/conformance/harness.py            # every node case, a summary
    python tests/conformance/harness.py Conv Relu  # cases whose name contains a word
"""

from __future__ import annotations

import sys

from ronn_onnx.testing import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
