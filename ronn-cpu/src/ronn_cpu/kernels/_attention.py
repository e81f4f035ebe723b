"""Attention operators: Attention (opsets 23-25), FlexAttention (ai.onnx.preview) and
LinearAttention (opset 27).

Grouped-query heads are handled by reshaping the query heads into (kv head, group) rather
than repeating keys and values.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ronn.dtypes import to_numpy
from ronn.kernel import KernelContext, KernelRun

from ._nn_common import KERNELS, compute_dtype


def _split_heads(x: Any, heads: int | None, name: str) -> Any:
    """(B, S, H * D) -> (B, H, S, D)."""
    if heads is None or heads < 1 or x.shape[2] % heads:
        raise ValueError(f"3-D {name} of shape {x.shape} needs a num_heads attribute that divides {x.shape[2]}")
    batch, length, hidden = x.shape
    return x.reshape(batch, length, heads, hidden // heads).transpose(0, 2, 1, 3)


def _additive(xp: Any, allowed: Any, dtype: np.dtype) -> Any:
    """0 where ``allowed``, -inf elsewhere."""
    return xp.where(allowed, dtype.type(0), dtype.type(-np.inf))


def _offsets(past: Any, nonpad: Any, q_len: int) -> Any:
    """How many valid keys precede the query block: an int, or per batch (B, 1, 1, 1)."""
    if past is not None:
        return past.shape[2]
    if nonpad is not None:
        return np.asarray(nonpad, dtype=np.int64).reshape(-1, 1, 1, 1) - q_len
    return 0


def _attention_bias(
    xp: Any,
    attn_mask: Any,
    causal: bool,
    window: tuple[int, int],
    offset: Any,
    nonpad_kv_seqlen: Any,
    q_len: int,
    kv_len: int,
    dtype: np.dtype,
) -> Any:
    """The additive bias (0 or -inf, plus a float mask) from every masking input; None if none.

    The terms broadcast against (batch, heads, q_len, kv_len): a mask by its own shape, the
    causal and window terms by (q_len, kv_len) or per batch when ``offset`` is.
    """
    terms = []
    rows = np.arange(q_len).reshape(q_len, 1)
    cols = np.arange(kv_len).reshape(1, kv_len)
    if attn_mask is not None:
        mask = attn_mask
        if mask.shape[-1] < kv_len:  # a short mask leaves the remaining keys out
            fill = False if mask.dtype == np.bool_ else -np.inf
            widths = [(0, 0)] * (mask.ndim - 1) + [(0, kv_len - mask.shape[-1])]
            mask = xp.pad(mask, widths, constant_values=fill)
        terms.append(_additive(xp, mask, dtype) if mask.dtype == np.bool_ else mask.astype(dtype, copy=False))
    if causal:
        terms.append(xp.asarray(_additive(np, cols <= rows + offset, dtype)))
    left, right = window
    if left >= 0 or right >= 0:
        distance = rows + offset - cols  # how far each key lies before the query
        allowed = np.ones(np.shape(distance), dtype=bool)
        if left >= 0:
            allowed &= distance <= left
        if right >= 0:
            allowed &= -distance <= right
        terms.append(xp.asarray(_additive(np, allowed, dtype)))
    if nonpad_kv_seqlen is not None:
        lengths = np.asarray(nonpad_kv_seqlen, dtype=np.int64).reshape(-1, 1, 1, 1)
        terms.append(xp.asarray(_additive(np, np.arange(kv_len) < lengths, dtype)))
    if not terms:
        return None
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


@KERNELS.register("Attention", since=(23, 24, 25))
def attention(ctx: KernelContext) -> KernelRun:
    """Attention: softmax(Q K^T * scale + bias) V, with optional KV cache and debug output.

    Float16 / bfloat16 inputs compute in float32 with each step rounded to the input type,
    which is what computing in the input type (as the definition does) yields.
    """
    xp = ctx.xp
    causal = bool(ctx.attr("is_causal", 0))
    q_heads_attr = ctx.attr("q_num_heads", None)
    kv_heads_attr = ctx.attr("kv_num_heads", None)
    mode = int(ctx.attr("qk_matmul_output_mode", 0))
    scale_attr = ctx.attr("scale", None)
    softcap = float(ctx.attr("softcap", 0.0))
    precision = ctx.attr("softmax_precision", None)
    left = int(ctx.attr("left_window_size", -1))
    right = int(ctx.attr("right_window_size", -1))
    if mode not in (0, 1, 2, 3):
        raise ctx.fail(f"qk_matmul_output_mode must be 0-3, got {mode}")
    if left < -1 or right < -1:
        raise ctx.fail("window sizes must be -1 or nonnegative")
    softmax_dtype = None if precision is None else compute_dtype(to_numpy(int(precision)))
    want_scores = ctx.num_outputs > 3 and bool(ctx.node.outputs[3])

    def run(q, k, v, attn_mask=None, past_key=None, past_value=None, nonpad_kv_seqlen=None):
        if not q.ndim == k.ndim == v.ndim or q.ndim not in (3, 4):
            raise ValueError(f"Q, K and V must all be 3-D or 4-D, got {q.shape}, {k.shape}, {v.shape}")
        if (past_key is None) != (past_value is None):
            raise ValueError("past_key and past_value must be given together")
        three_d = q.ndim == 3
        if three_d:
            q = _split_heads(q, q_heads_attr, "Q")
            k = _split_heads(k, kv_heads_attr, "K")
            v = _split_heads(v, kv_heads_attr, "V")
        present_key = k if past_key is None else xp.concatenate([past_key, k], axis=2)
        present_value = v if past_value is None else xp.concatenate([past_value, v], axis=2)
        batch, q_heads, q_len, head = q.shape
        kv_heads, kv_len = present_key.shape[1], present_key.shape[2]
        if q_heads % kv_heads or present_value.shape[1] != kv_heads:
            raise ValueError(f"{q_heads} query heads do not group over {kv_heads} key/value heads")
        group = q_heads // kv_heads
        work = compute_dtype(q.dtype)

        def rounded(x: Any) -> Any:
            """``x`` rounded to the input's precision, as each step of the definition is."""
            return x if work == q.dtype else x.astype(q.dtype).astype(work)

        # scores: Q and K each scaled by sqrt(scale), as the operator's definition does
        scale = 1 / math.sqrt(head) if scale_attr is None else float(scale_attr)
        root = work.type(q.dtype.type(math.sqrt(scale)))
        queries = rounded(q.astype(work, copy=False) * root).reshape(batch, kv_heads, group, q_len, head)
        keys = rounded(present_key.astype(work, copy=False) * root)[:, :, None].swapaxes(-1, -2)
        raw = rounded(xp.matmul(queries, keys).reshape(batch, q_heads, q_len, kv_len))
        capped = raw
        if softcap > 0:
            capped = rounded(rounded(xp.tanh(rounded(raw / work.type(softcap)))) * work.type(softcap))

        offset = _offsets(past_key, nonpad_kv_seqlen, q_len)
        bias = _attention_bias(
            xp, attn_mask, causal, (left, right), offset, nonpad_kv_seqlen, q_len, kv_len, work
        )
        logits = capped if bias is None else rounded(capped + bias)
        if softmax_dtype is None:
            probs = _guarded_softmax(xp, logits, bias, None if work == q.dtype else q.dtype)
        else:
            probs = _guarded_softmax(xp, logits.astype(softmax_dtype), bias, None)
        probs = rounded(probs.astype(work, copy=False))
        values = present_value.astype(work, copy=False)[:, :, None]
        y = rounded(xp.matmul(probs.reshape(batch, kv_heads, group, q_len, kv_len), values))
        y = y.reshape(batch, q_heads, q_len, -1)
        if three_d:
            y = y.transpose(0, 2, 1, 3).reshape(batch, q_len, -1)
        outputs = [y.astype(q.dtype, copy=False), present_key, present_value]
        if want_scores:
            chosen = (raw, capped, logits, probs)[mode]
            outputs.append(xp.broadcast_to(chosen, raw.shape).astype(q.dtype))
        return tuple(outputs[: max(1, ctx.num_outputs)])

    return run


def _guarded_softmax(xp: Any, logits: Any, bias: Any, narrow: np.dtype | None) -> Any:
    """Softmax over the last axis; rows whose bias masks every key become zeros, not NaN.

    With ``narrow`` (a float16 / bfloat16 input), each step is rounded to that precision
    and the sum accumulates in it, as computing in the input type does.
    """

    def rounded(x: Any) -> Any:
        return x if narrow is None else x.astype(narrow).astype(x.dtype)

    top = xp.max(logits, axis=-1, keepdims=True)
    top = xp.where(xp.isneginf(top), logits.dtype.type(0), top)
    exp = rounded(xp.exp(rounded(logits - top)))
    if narrow is None:
        total = xp.sum(exp, axis=-1, keepdims=True)
    else:
        total = xp.sum(exp.astype(narrow), axis=-1, keepdims=True).astype(exp.dtype)
    exp = rounded(exp / xp.where(total == 0, logits.dtype.type(1), total))
    if bias is not None:
        masked = xp.isneginf(xp.max(bias, axis=-1, keepdims=True))
        exp = xp.where(masked, exp.dtype.type(0), exp)
    return exp


# --- FlexAttention (ai.onnx.preview) ------------------------------------------------------


def _modifier(ctx: KernelContext, name: str) -> Any:
    """A compiled score_mod / prob_mod subgraph as ``fn(tensor, outer) -> tensor``, or None."""
    graph = ctx.attr(name, None)
    if graph is None:
        return None
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise ctx.fail(f"{name} must have exactly one input and one output")
    runner = ctx.compile_subgraph(graph)
    reads = graph.free_variables()

    def apply(tensor: Any, outer: dict[str, Any]) -> Any:
        (result,) = runner([tensor], {k: v for k, v in outer.items() if k in reads})
        return result

    return apply


@KERNELS.register("FlexAttention", since=1, domain="ai.onnx.preview")
def flex_attention(ctx: KernelContext) -> KernelRun:
    """FlexAttention: attention whose scores and probabilities pass through subgraphs."""
    xp = ctx.xp
    scale_attr = ctx.attr("scale", None)
    precision = ctx.attr("softmax_precision", None)
    score_mod = _modifier(ctx, "score_mod")
    prob_mod = _modifier(ctx, "prob_mod")
    explicit = ctx.num_inputs

    def run(q, k, v, *outer_values):
        outer = dict(zip(ctx.implicit_inputs, outer_values[max(0, explicit - 3):]))
        if not q.ndim == k.ndim == v.ndim == 4:
            raise ValueError(f"FlexAttention needs 4-D Q, K, V, got {q.shape}, {k.shape}, {v.shape}")
        batch, q_heads, q_len, head = q.shape
        kv_heads, kv_len = k.shape[1], k.shape[2]
        if q_heads % kv_heads or v.shape[1] != kv_heads or v.shape[2] != kv_len or k.shape[3] != head:
            raise ValueError(f"Q {q.shape}, K {k.shape} and V {v.shape} do not fit together")
        group = q_heads // kv_heads
        if precision is not None:
            work = np.dtype(to_numpy(int(precision)))
        else:
            work = np.dtype(np.float64) if q.dtype == np.float64 else np.dtype(np.float32)
        wide = compute_dtype(q.dtype)

        def rounded(x: Any) -> Any:
            return x if wide == q.dtype else x.astype(q.dtype).astype(wide)

        scale = 1 / math.sqrt(head) if scale_attr is None else float(scale_attr)
        root = wide.type(q.dtype.type(np.sqrt(np.float32(scale))))
        queries = rounded(q.astype(wide, copy=False) * root).reshape(batch, kv_heads, group, q_len, head)
        keys = rounded(k.astype(wide, copy=False) * root)[:, :, None].swapaxes(-1, -2)
        scores = rounded(xp.matmul(queries, keys)).reshape(batch, q_heads, q_len, kv_len).astype(work)
        if score_mod is not None:
            scores = xp.asarray(score_mod(scores, outer)).astype(work, copy=False)
        probs = scores - xp.max(scores, axis=-1, keepdims=True)
        xp.exp(probs, out=probs)
        probs /= xp.sum(probs, axis=-1, keepdims=True)
        if prob_mod is not None:
            probs = xp.asarray(prob_mod(probs, outer)).astype(work, copy=False)
        values = v.astype(work)[:, :, None]
        y = xp.matmul(probs.reshape(batch, kv_heads, group, q_len, kv_len), values)
        return (y.reshape(batch, q_heads, q_len, -1).astype(v.dtype),)

    return run


# --- LinearAttention ----------------------------------------------------------------------

_UPDATE_RULES = ("linear", "gated", "delta", "gated_delta")


def _per_head(x: Any, heads: int, name: str) -> Any:
    """(B, T, H * D) -> (B, H, T, D)."""
    if x.ndim != 3 or x.shape[2] % heads:
        raise ValueError(f"{name} of shape {x.shape} is not (batch, time, {heads} * size)")
    return x.reshape(x.shape[0], x.shape[1], heads, -1).transpose(0, 2, 1, 3)


@KERNELS.register("LinearAttention", since=27)
def linear_attention(ctx: KernelContext) -> KernelRun:
    """LinearAttention: a recurrent state updated token by token (linear/gated/delta rules).

    The recurrence is inherently sequential, so the kernel steps over the time axis, each
    step a handful of batched operations over (batch, heads, d_k, d_v).
    """
    xp = ctx.xp
    rule = ctx.attr("update_rule", "gated_delta")
    if isinstance(rule, bytes):
        rule = rule.decode()
    if rule not in _UPDATE_RULES:
        raise ctx.fail(f"update_rule must be one of {_UPDATE_RULES}, got {rule!r}")
    q_heads, kv_heads = int(ctx.attr("q_num_heads")), int(ctx.attr("kv_num_heads"))
    if q_heads < 1 or kv_heads < 1 or q_heads % kv_heads:
        raise ctx.fail(f"q_num_heads {q_heads} must be a positive multiple of kv_num_heads {kv_heads}")
    scale_attr = float(ctx.attr("scale", 0.0))
    gated, delta = rule in ("gated", "gated_delta"), rule in ("delta", "gated_delta")

    def run(query, key, value, past_state=None, decay=None, beta=None):
        if gated != (decay is not None) or delta != (beta is not None):
            raise ValueError(f"update_rule {rule!r} needs decay {'with' if gated else 'without'} and "
                             f"beta {'with' if delta else 'without'}")
        batch, steps = query.shape[:2]
        work = np.promote_types(compute_dtype(query.dtype), np.float32)
        q = _per_head(query, q_heads, "query").astype(work)
        k = _per_head(key, kv_heads, "key").astype(work)
        v = _per_head(value, kv_heads, "value").astype(work)
        d_k, d_v = k.shape[3], v.shape[3]
        if q.shape[3] != d_k:
            raise ValueError(f"query head size {q.shape[3]} differs from key head size {d_k}")
        group = q_heads // kv_heads
        if gated:
            if decay.ndim != 3 or decay.shape[2] not in (kv_heads, kv_heads * d_k):
                raise ValueError(f"decay of shape {decay.shape} is neither per head nor per key dimension")
            log_decay = _per_head(decay, kv_heads, "decay").astype(work)  # (B, H, T, 1 or d_k)
        if delta:
            if beta.ndim != 3 or beta.shape[2] not in (kv_heads, 1):
                raise ValueError(f"beta of shape {beta.shape} is neither per head nor shared")
            rate = beta.reshape(batch, steps, beta.shape[2], 1).transpose(0, 2, 1, 3).astype(work)
        if past_state is not None:
            if past_state.shape != (batch, kv_heads, d_k, d_v):
                raise ValueError(f"past_state shape {past_state.shape} is not {(batch, kv_heads, d_k, d_v)}")
            state = past_state.astype(work)
        else:
            state = xp.zeros((batch, kv_heads, d_k, d_v), dtype=work)
        scale = work.type(scale_attr if scale_attr != 0 else 1 / math.sqrt(d_k))
        out = xp.empty((batch, kv_heads, group, steps, d_v), dtype=work)
        grouped_q = q.reshape(batch, kv_heads, group, steps, d_k)
        for t in range(steps):
            k_t, v_t = k[:, :, t], v[:, :, t]
            if gated:
                state = state * xp.exp(log_decay[:, :, t])[..., None]
            if delta:
                recalled = xp.matmul(k_t[:, :, None], state)[:, :, 0]  # S^T k: (B, H, d_v)
                v_t = rate[:, :, t] * (v_t - recalled)
            state = state + k_t[..., :, None] * v_t[..., None, :]
            out[:, :, :, t] = xp.matmul(grouped_q[:, :, :, t], state) * scale
        y = out.reshape(batch, q_heads, steps, d_v).transpose(0, 2, 1, 3).reshape(batch, steps, -1)
        state_dtype = query.dtype if past_state is None else past_state.dtype
        return (y.astype(query.dtype), state.astype(state_dtype))

    return run
