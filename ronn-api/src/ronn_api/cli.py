"""The ``ronn`` command: run, inspect, pull from the Hugging Face Hub, list what is installed.

Heavy modules (numpy, onnx, the kernels) load only inside the sub-command that needs them,
so ``ronn --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from .bench_args import add_arguments as add_bench_arguments


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``ronn`` command."""
    parser = argparse.ArgumentParser(
        prog="ronn", description="ronn: a Python runtime for ONNX models."
    )
    parser.add_argument("--version", action="version", version=f"ronn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run a model and print or save its outputs",
        description="Run MODEL (an .onnx file or an hf://owner/repo[@revision]/model.onnx "
        "reference; without one, the embedded demo model) on inputs "
        "from .npy files, or on random inputs for the inputs not given.",
    )
    run.add_argument(
        "model", nargs="?", help="an .onnx file or hf://owner/repo/model.onnx (default: embedded demo)"
    )
    run.add_argument(
        "-i", "--input", action="append", default=[], metavar="NAME=FILE.npy",
        help="an input from a .npy file (repeatable)",
    )
    run.add_argument(
        "-o", "--output", action="append", default=[], metavar="NAME",
        help="fetch this output or intermediate value (repeatable; default: all outputs)",
    )
    run.add_argument("--save", metavar="DIR", help="save each output to DIR/NAME.npy")
    run.add_argument(
        "--providers", default="CPUExecutionProvider",
        help="comma-separated providers in order of preference (default: %(default)s)",
    )
    run.add_argument("--seed", type=int, default=0, help="seed for random inputs (default: 0)")
    run.add_argument(
        "--dim", action="append", default=[], metavar="NAME=SIZE",
        help="size of a symbolic dimension for random inputs (default: 1)",
    )
    run.add_argument("--full", action="store_true", help="print whole arrays, not summaries")

    info = sub.add_parser(
        "info", help="describe a model: inputs, outputs, opsets, operators, placement"
    )
    info.add_argument(
        "model", nargs="?", help="an .onnx file or hf://owner/repo/model.onnx (default: embedded demo)"
    )
    info.add_argument(
        "--providers", default="CPUExecutionProvider",
        help="comma-separated providers in order of preference (default: %(default)s)",
    )
    info.add_argument("--nodes", action="store_true", help="list every node with its provider")

    pull = sub.add_parser(
        "pull",
        help="download a model (and its external data) from the Hugging Face Hub",
        description="Download MODEL, an hf://owner/repo[@revision]/path/model.onnx reference, "
        "with the external data files it needs, into the Hugging Face cache; print the local "
        "path of the model, then of each data file. HF_ENDPOINT, HF_TOKEN, HF_HOME and "
        "HF_HUB_OFFLINE apply.",
    )
    pull.add_argument("model", help="hf://owner/repo[@revision]/path/model.onnx")
    pull.add_argument("--revision", help="branch, tag or commit hash (default: main)")
    pull.add_argument("--token", help="Hugging Face token (default: HF_TOKEN or the saved login)")
    pull.add_argument("--cache-dir", metavar="DIR", help="cache folder (default: HF_HUB_CACHE or HF_HOME/hub)")
    pull.add_argument("--offline", action="store_true", help="use the cache only, download nothing")

    bench = sub.add_parser(
        "bench",
        help="measure latency, throughput, session creation and peak memory",
        description="Benchmark MODEL on random inputs: session creation, P50/P95/P99 latency, "
        "throughput and peak RSS; with --compare onnxruntime, both in alternating blocks.",
    )
    add_bench_arguments(bench)

    sub.add_parser("providers", help="list execution providers and whether they can run here")
    sub.add_parser("plugins", help="list loaded plugins, their distributions and hooks")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ronn`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from ronn.errors import RonnError

    from . import commands

    try:
        return int(getattr(commands, f"cmd_{args.command}")(args) or 0)
    except RonnError as exc:
        print(f"ronn: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `ronn info model.onnx | head`
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
