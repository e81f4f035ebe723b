"""The options of ``ronn bench`` (no heavy imports: the CLI parser loads this)."""

from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``ronn bench``."""
    parser.add_argument("model", help="path of an .onnx model")
    parser.add_argument("--compare", choices=["onnxruntime"], help="also run onnxruntime, alternating blocks")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="intra-op threads for both runtimes")
    parser.add_argument("--runs", type=int, default=20, help="runs per block (default: %(default)s)")
    parser.add_argument("--blocks", type=int, default=6, help="alternating blocks (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first (default: %(default)s)")
    parser.add_argument(
        "--block-warmup", type=int, default=2,
        help="untimed runs at the start of each block, so the other runtime's idle threads "
        "(onnxruntime's spinning pool, BLAS workers) are settled (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument("--max-seconds", type=float, default=120.0, help="stop adding blocks after this long")
    parser.add_argument("--dim", action="append", default=[], metavar="NAME=SIZE", help="size of a symbolic dimension")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
