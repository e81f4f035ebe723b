"""The ``ronn`` sub-commands (imported only when one runs)."""

from __future__ import annotations

import argparse
import collections
import os
import sys
from typing import Any

import numpy as np

import ronn
from ronn.dtypes import DataType
from ronn.errors import InputError, ModelNotFoundError
from ronn.ir import TensorType

from .demo import DEMO_MODEL_PATH, demo_inputs


def _providers(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _parse_pairs(items: list[str], what: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise InputError(f"{what} must look like NAME=VALUE, got {item!r}")
        pairs[name] = value
    return pairs


def _load_inputs(items: list[str]) -> dict[str, Any]:
    feeds = {}
    for name, path in _parse_pairs(items, "--input").items():
        if not os.path.exists(path):
            raise ModelNotFoundError(f"input file for {name!r} not found: {path}")
        try:
            feeds[name] = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise InputError(f"cannot read input {name!r} from {path}: {exc}") from None
    return feeds


def random_input(value_type: Any, dims: dict[str, int], rng: np.random.Generator) -> np.ndarray:
    """A random array matching a model input's declared type (symbolic sizes from ``dims``)."""
    if not isinstance(value_type, TensorType):
        raise InputError(f"cannot make a random value of type {value_type}; pass it with --input")
    shape = tuple(
        d if isinstance(d, int) and d >= 0 else dims.get(d, 1) if isinstance(d, str) else 1
        for d in (value_type.shape or ())
    )
    dtype = value_type.dtype
    if dtype == DataType.BOOL:
        return rng.random(shape) < 0.5
    if dtype == DataType.STRING:
        return np.array(rng.choice(["a", "b", "c"], size=shape), dtype=object)
    np_dtype = dtype.np_dtype
    if np.issubdtype(np_dtype, np.integer):
        return rng.integers(0, 2, size=shape).astype(np_dtype)  # 0 and 1: valid ids, masks, types
    return rng.standard_normal(shape).astype(np_dtype)


def _summary(value: Any, full: bool) -> str:
    if isinstance(value, list):
        return f"sequence of {len(value)}: [" + ", ".join(_summary(v, full) for v in value) + "]"
    if value is None:
        return "None"
    array = np.asarray(value)
    head = f"{array.dtype}{list(array.shape)}"
    if full or array.size <= 16:
        with np.printoptions(threshold=sys.maxsize if full else 1000, precision=5, suppress=True):
            return f"{head}\n{array}"
    stats = ""
    if array.dtype.kind in "fiu":
        flat = array.astype(np.float64).ravel()
        stats = f" min={flat.min():.5g} max={flat.max():.5g} mean={flat.mean():.5g}"
    with np.printoptions(precision=5, suppress=True, threshold=16, edgeitems=3):
        return f"{head}{stats}\n{array}"


def cmd_run(args: argparse.Namespace) -> int:
    """``ronn run``: run a model on given or random inputs."""
    model = args.model or DEMO_MODEL_PATH
    session = ronn.InferenceSession(model, providers=_providers(args.providers))
    feeds = _load_inputs(args.input)
    if args.model is None and not feeds:
        feeds = demo_inputs()
        print(f"model: embedded demo ({DEMO_MODEL_PATH})")
    else:
        print(f"model: {model}")
    dims = {k: int(v) for k, v in _parse_pairs(args.dim, "--dim").items()}
    rng = np.random.default_rng(args.seed)
    spec = {info.name: info.type for info in session.model.graph.inputs}
    for arg in session.get_inputs():
        if arg.name not in feeds:
            feeds[arg.name] = random_input(spec[arg.name], dims, rng)
            print(f"input {arg.name}: random {feeds[arg.name].dtype}{list(feeds[arg.name].shape)}")
    names = args.output or [o.name for o in session.get_outputs()]
    outputs = session.run(names, feeds)
    for name, value in zip(names, outputs):
        print(f"output {name}: {_summary(value, args.full)}")
        if args.save:
            os.makedirs(args.save, exist_ok=True)
            path = os.path.join(args.save, f"{_safe(name)}.npy")
            np.save(path, np.asarray(value), allow_pickle=False)
            print(f"  saved to {path}")
    return 0


def _unoptimized() -> ronn.SessionOptions:
    options = ronn.SessionOptions()
    options.graph_optimization_level = ronn.GraphOptimizationLevel.ORT_DISABLE_ALL
    return options


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "output"


def cmd_info(args: argparse.Namespace) -> int:
    """``ronn info``: what a model holds and where its nodes run."""
    model_path = args.model or DEMO_MODEL_PATH
    # the model as stored (the graph optimizer would show its fused operators instead)
    session = ronn.InferenceSession(model_path, _unoptimized(), providers=_providers(args.providers))
    model = session.model
    meta = session.get_modelmeta()
    print(f"model: {model_path}")
    print(f"  producer: {meta.producer_name} {model.producer_version}".rstrip())
    print(f"  ir_version: {model.ir_version}")
    print("  opsets: " + ", ".join(f"{d or 'ai.onnx'}={v}" for d, v in sorted(model.opset_imports.items())))
    print("inputs:")
    for arg in session.get_inputs():
        print(f"  {arg.name}: {arg.type} {arg.shape}")
    print("outputs:")
    for arg in session.get_outputs():
        print(f"  {arg.name}: {arg.type} {arg.shape}")
    placement = session.node_providers()
    ops = collections.Counter()
    by_provider = collections.Counter()
    for _, node in model.graph.walk():
        ops[(node.domain or "ai.onnx", node.op_type)] += 1
    for _, _, provider in placement:
        by_provider[provider] += 1
    total = sum(ops.values())
    print(f"operators ({total} nodes, {len(ops)} kinds):")
    for (domain, op), count in sorted(ops.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {count:6d}  {op}" + (f" ({domain})" if domain != "ai.onnx" else ""))
    print("providers:")
    for provider, count in by_provider.items():
        print(f"  {provider}: {count} node(s)")
    if args.nodes:
        print("nodes:")
        for name, op, provider in placement:
            print(f"  {name or '<unnamed>'} ({op}) -> {provider}")
    n_init = len(model.graph.initializers)
    size = sum(getattr(v, "nbytes", 0) for v in model.graph.initializers.values())
    print(f"initializers: {n_init} ({size / 1e6:.2f} MB)")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    """``ronn pull``: download a model and its external data from the Hugging Face Hub."""
    from ronn_onnx.hub import fetch_uri

    fetched = fetch_uri(
        args.model,
        revision=args.revision,
        token=args.token,
        cache_dir=args.cache_dir,
        local_files_only=True if args.offline else None,
    )
    print(fetched.path)
    for path in fetched.data_files:
        print(path)
    commit = f" (commit {fetched.commit})" if fetched.commit else ""
    files = len(fetched.data_files)
    data = f", with {files} external data file{'s' if files != 1 else ''}" if files else ""
    print(f"pulled {fetched.repo_id}/{fetched.filename}{commit}{data}", file=sys.stderr)
    return 0


def cmd_providers(args: argparse.Namespace) -> int:
    """``ronn providers``: every provider and whether it can run here."""
    host = ronn.get_plugin_host()
    registry = host.providers()
    available = set(ronn.get_available_providers())
    for spec in registry.specs():
        state = "available" if spec.name in available else "not available here"
        plugin = registry.owner(spec.name)
        print(f"{spec.name}  [{spec.device}] {state}  (plugin {plugin}) {spec.description}".rstrip())
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    """``ronn plugins``: loaded plugins with distributions and hooks."""
    host = ronn.get_plugin_host()
    kernels = host.kernels()
    counts = collections.Counter(kernels.owner(key) for key in kernels.operators())
    for info in host.plugins():
        dist = f"{info.distribution} {info.version}" if info.distribution else "registered in code"
        extra = f", {counts[info.name]} kernels" if counts.get(info.name) else ""
        print(f"{info.name}  ({dist}{extra})")
        for hook in info.hooks:
            print(f"    {hook}")
    for message in host.duplicates:
        print(f"warning: {message}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """``ronn bench``: see :mod:`ronn_api.bench`."""
    from .bench import run_bench

    return run_bench(args)
