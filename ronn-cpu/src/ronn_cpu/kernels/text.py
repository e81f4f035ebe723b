"""Text kernels: TfIdfVectorizer.

Tokens are mapped to their index in the pool's vocabulary, each n-gram window of indices is
encoded as one integer, and windows are matched against the pool's encoded n-grams with a
sorted search: the counting is vectorised over the rows and positions of the input.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ronn.kernel import KernelContext, KernelRun, KernelTable

KERNELS = KernelTable()


class _NgramPool:
    """The pool's n-grams of the counted lengths, each with its output column."""

    def __init__(self, tokens: list[Any], is_string: bool, counts: list[int], columns: list[int],
                 min_len: int, max_len: int) -> None:
        self.is_string = is_string
        vocab = sorted(set(tokens))
        self.vocab = vocab
        self.vocab_index = {token: i for i, token in enumerate(vocab)}
        self.sorted_ints = None if self.is_string else np.asarray(vocab, dtype=np.int64)
        self.base = len(vocab) + 1  # index 0 stands for a token outside the pool
        # by length: encoded n-gram -> output column
        self.by_length: dict[int, dict[int, int]] = {}
        ngram_id = 0
        for size in range(1, len(counts) + 1):
            start = counts[size - 1]
            end = counts[size] if size < len(counts) else len(tokens)
            if end < start or start < 0 or end > len(tokens):
                raise ValueError(f"ngram_counts {counts} do not fit a pool of {len(tokens)} items")
            n_grams = (end - start) // size
            for g in range(n_grams):
                if min_len <= size <= max_len:
                    if ngram_id >= len(columns):
                        raise ValueError("ngram_indexes has fewer entries than the pool has n-grams")
                    gram = tokens[start + g * size : start + (g + 1) * size]
                    code = self._encode([self.vocab_index[t] + 1 for t in gram])
                    table = self.by_length.setdefault(size, {})
                    if code in table:
                        raise ValueError(f"the pool holds the {size}-gram {gram} twice")
                    table[code] = columns[ngram_id]
                ngram_id += 1
        self.lookup = {
            size: (np.asarray(sorted(table), dtype=object if self._wide(size) else np.int64),
                   np.asarray([table[k] for k in sorted(table)], dtype=np.int64))
            for size, table in self.by_length.items()
        }

    def _wide(self, size: int) -> bool:
        """Whether codes of n-grams of ``size`` overflow int64 (then Python ints are used)."""
        return self.base ** size >= 2**62

    def _encode(self, indices: list[int]) -> int:
        code = 0
        for index in indices:
            code = code * self.base + index
        return code

    def token_indices(self, x: np.ndarray) -> np.ndarray:
        """1 + each token's vocabulary index, 0 for tokens outside the pool."""
        if self.is_string:
            flat = [self.vocab_index.get(str(t), -1) + 1 for t in x.ravel()]
            return np.asarray(flat, dtype=np.int64).reshape(x.shape)
        if not self.vocab:
            return np.zeros(x.shape, dtype=np.int64)
        values = x.astype(np.int64)
        position = np.searchsorted(self.sorted_ints, values)
        position = np.minimum(position, len(self.vocab) - 1)
        return np.where(self.sorted_ints[position] == values, position + 1, 0)


def _count(pool: _NgramPool, tokens: np.ndarray, size: int, skip: int, freq: np.ndarray) -> None:
    """Add the counts of pool n-grams of ``size`` found with gap ``skip`` in every row."""
    keys, columns = pool.lookup[size]
    rows, length = tokens.shape
    span = skip * (size - 1)
    starts = length - span
    if starts <= 0:
        return
    wide = keys.dtype == object
    code = np.zeros((rows, starts), dtype=object if wide else np.int64)
    known = np.ones((rows, starts), dtype=bool)
    for k in range(size):
        part = tokens[:, k * skip : k * skip + starts]
        known &= part > 0
        code = code * pool.base + (part.astype(object) if wide else part)
    row_index, start_index = np.nonzero(known)
    found = code[row_index, start_index]
    position = np.searchsorted(keys, found)
    position = np.minimum(position, len(keys) - 1)
    hit = keys[position] == found
    np.add.at(freq, (row_index[hit], columns[position[hit]]), 1)


@KERNELS.register("TfIdfVectorizer", since=9)
def tfidf_vectorizer(ctx: KernelContext) -> KernelRun:
    """Counts (TF), presence weights (IDF) or weighted counts (TFIDF) of pool n-grams."""
    mode = ctx.attr("mode")
    if isinstance(mode, bytes):
        mode = mode.decode()
    if mode not in ("TF", "IDF", "TFIDF"):
        raise ctx.fail(f"mode must be TF, IDF or TFIDF, got {mode!r}")
    min_len = int(ctx.attr("min_gram_length"))
    max_len = int(ctx.attr("max_gram_length"))
    max_skip = int(ctx.attr("max_skip_count"))
    if min_len < 1 or max_len < min_len or max_skip < 0:
        raise ctx.fail(
            f"need 1 <= min_gram_length <= max_gram_length and max_skip_count >= 0, "
            f"got {min_len}, {max_len}, {max_skip}"
        )
    counts = [int(v) for v in ctx.attr("ngram_counts")]
    columns = [int(v) for v in ctx.attr("ngram_indexes")]
    if not columns or min(columns) < 0:
        raise ctx.fail("ngram_indexes must be a non-empty list of non-negative ints")
    pool_ints = ctx.attr("pool_int64s", None)
    pool_strings = ctx.attr("pool_strings", None)
    if (pool_ints is None) == (pool_strings is None):
        raise ctx.fail("exactly one of pool_int64s and pool_strings must be set")
    if pool_strings is not None:
        tokens: list[Any] = [t.decode() if isinstance(t, bytes) else str(t) for t in pool_strings]
    else:
        tokens = [int(t) for t in pool_ints]
    width = max(columns) + 1
    weights = ctx.attr("weights", None)
    if weights is None or len(weights) == 0:
        column_weights = None
    elif len(weights) != len(columns):
        raise ctx.fail(f"weights has {len(weights)} entries, ngram_indexes {len(columns)}: they must match")
    else:
        # the i-th n-gram's weight scales its output column ngram_indexes[i]
        column_weights = np.zeros(width, dtype=np.float32)
        column_weights[columns] = np.asarray(weights, dtype=np.float32)
    try:
        pool = _NgramPool(tokens, pool_strings is not None, counts, columns, min_len, max_len)
    except ValueError as exc:
        raise ctx.fail(str(exc)) from None
    strings_expected = pool_strings is not None
    xp = ctx.xp

    def run(x: Any) -> tuple[Any]:
        x = np.asarray(x)
        is_string = x.dtype == object or x.dtype.kind in "US"
        if is_string != strings_expected:
            kind = "string" if strings_expected else "integer"
            raise TypeError(f"TfIdfVectorizer expects {kind} input for its pool, got {x.dtype}")
        if x.ndim > 2:
            raise ValueError(f"TfIdfVectorizer expects [C] or [B, C] input, got shape {list(x.shape)}")
        batched = x.ndim == 2
        rows = x.reshape(x.shape[0] if batched else 1, -1)
        freq = np.zeros((rows.shape[0], width), dtype=np.int64)
        if rows.size:
            token_index = pool.token_indices(rows)
            for size in range(min_len, max_len + 1):
                if size not in pool.lookup:
                    continue
                skips = [0] if size == 1 else range(max_skip + 1)
                for skip in skips:
                    _count(pool, token_index, size, skip + 1, freq)
        result = _weigh(freq, mode, column_weights)
        return (xp.asarray(result if batched else result[0]),)

    return run


def _weigh(freq: np.ndarray, mode: str, weights: np.ndarray | None) -> np.ndarray:
    """The output values of the counts per column, as float32."""
    if mode == "TF":
        return freq.astype(np.float32)
    if mode == "IDF":
        present = (freq > 0).astype(np.float32)
        return present if weights is None else present * weights
    counts = freq.astype(np.float32)
    return counts if weights is None else counts * weights
