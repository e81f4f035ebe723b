"""String kernels: StringNormalizer, StringConcat, StringSplit, RegexFullMatch.

String tensors are numpy ``object`` arrays of ``str``. Per-element string work has no
vectorised numpy form, so these kernels loop over elements in Python; they run on the host.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from ronn.kernel import KernelContext, KernelRun, KernelTable

KERNELS = KernelTable()


def _strings(values: list[str], shape: tuple[int, ...]) -> np.ndarray:
    """An object array of ``str`` with the given shape."""
    result = np.empty(len(values), dtype=object)
    result[:] = values
    return result.reshape(shape)


def _check_strings(x: Any, op: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != object and x.dtype.kind not in "US":
        raise TypeError(f"{op} expects a string tensor, got {x.dtype}")
    return x


@KERNELS.register("StringNormalizer", since=10)
def string_normalizer(ctx: KernelContext) -> KernelRun:
    """Drop stop words from a [C] or [1, C] tensor, then change case."""
    action = ctx.attr("case_change_action", "NONE")
    if action not in ("NONE", "LOWER", "UPPER"):
        raise ctx.fail(f"case_change_action must be NONE, LOWER or UPPER, got {action!r}")
    case_sensitive = bool(ctx.attr("is_case_sensitive", 0))
    stopwords = list(ctx.attr("stopwords", []))
    stops = set(stopwords) if case_sensitive else {w.lower() for w in stopwords}
    change = {"LOWER": str.lower, "UPPER": str.upper}.get(action)

    def keep(word: str) -> bool:
        return (word if case_sensitive else word.lower()) not in stops

    def run(x: Any) -> tuple[np.ndarray]:
        x = _check_strings(x, "StringNormalizer")
        if x.ndim == 2 and x.shape[0] == 1:
            leading: tuple[int, ...] = (1,)
        elif x.ndim == 1:
            leading = ()
        else:
            raise ValueError(f"StringNormalizer expects shape [C] or [1, C], got {list(x.shape)}")
        words = [str(w) for w in x.ravel() if keep(str(w))]
        if change is not None:
            words = [change(w) for w in words]
        if not words:
            words = [""]
        return (_strings(words, leading + (len(words),)),)

    return run


@KERNELS.register("StringConcat", since=20)
def string_concat(ctx: KernelContext) -> KernelRun:
    """Elementwise concatenation with broadcasting."""

    def run(x: Any, y: Any) -> tuple[np.ndarray]:
        x = _check_strings(x, "StringConcat").astype(object)
        y = _check_strings(y, "StringConcat").astype(object)
        return (np.asarray(np.add(x, y), dtype=object),)

    return run


@KERNELS.register("StringSplit", since=20)
def string_split(ctx: KernelContext) -> KernelRun:
    """Split each string at ``delimiter`` (whitespace runs when empty), at most ``maxsplit`` times.

    Outputs the pieces, padded with "" to the largest count along a new last axis, and the
    number of pieces of each string.
    """
    delimiter = ctx.attr("delimiter", "") or None
    maxsplit = int(ctx.attr("maxsplit", -1))
    if maxsplit < 0:
        maxsplit = -1

    def run(x: Any) -> tuple[np.ndarray, np.ndarray]:
        x = _check_strings(x, "StringSplit")
        pieces = [str(s).split(delimiter, maxsplit) for s in x.ravel()]
        counts = np.array([len(p) for p in pieces], dtype=np.int64).reshape(x.shape)
        width = int(counts.max(initial=0))
        padded = [piece for p in pieces for piece in p + [""] * (width - len(p))]
        return _strings(padded, x.shape + (width,)), counts

    return run


@KERNELS.register("RegexFullMatch", since=20)
def regex_full_match(ctx: KernelContext) -> KernelRun:
    """Whether each string matches ``pattern`` entirely (RE2 syntax, read as Python's ``re``)."""
    source = ctx.attr("pattern", None)
    if source is None:
        raise ctx.fail("RegexFullMatch needs the attribute 'pattern'")
    try:
        pattern = re.compile(source)
    except re.error as exc:
        raise ctx.fail(f"invalid pattern {source!r}: {exc}") from None

    def run(x: Any) -> tuple[np.ndarray]:
        x = _check_strings(x, "RegexFullMatch")
        flat = np.fromiter((pattern.fullmatch(str(s)) is not None for s in x.ravel()), dtype=bool, count=x.size)
        return (flat.reshape(x.shape),)

    return run
