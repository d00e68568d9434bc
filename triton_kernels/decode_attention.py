"""One decode step of GPT-OSS attention in one launch: RoPE on the new query and key, the new key and value written
into the KV cache, and grouped-query attention with the learned sink over the cache. Twin of
``mxfp4.reference.decode_attention``.

As torch ops a batch-1 decode step of attention is ~15 launches per layer (RoPE, three ``index_copy`` into the
cache, the ring's concatenations, the mask, two small GEMMs and the pieces of the sink softmax): ~27 us of kernel
time per layer on an H100 and as many launch gaps, for a few hundred KB of K/V. Here it is one launch.

Grid ``(B * KV, SPLITS)``: program ``(b, g, s)`` owns batch row b, KV head g with its ``GROUP = H / KV`` query
heads, and the s-th range of cache slots (flash-decoding: long caches spread over many SMs). It scores its slots
against the group's rotated queries with a running max / sum / weighted sum of values (online softmax, float32)
and publishes them; the last program of ``(b, g)`` to arrive merges the ranges in split order with the sink logit
and writes the output -- the counter pattern of ``splitk.py``: deterministic, self-resetting counters, no memset,
capturable in a CUDA graph. Split 0 also scores the new key (not in the cache yet) and stores it, the value and
the column into the cache.

Which slots a query at column ``c`` sees (``gpt_oss.visible_keys``): key column ``kc <= c``, ``kc >= pad[b]`` (left
padding; empty slots hold -1) and, on sliding layers, ``kc > c - window``. The slot the new entry overwrites is
skipped: on a full cache it is empty (or stale from an earlier sequence), on a ring its old column ``c - slots`` is
outside the window, so scoring the new key in its place is what writing first and reading after would give. On a
full cache (slot = column) the slots at and past ``c`` are never read. A column past a full cache stores nothing
and returns NaN (``decode_step`` does not validate; ``generate`` checks before its loop).

Numerics: RoPE and the softmax in float32. The cached keys are scored and the values weighted on the tensor cores
(``tl.dot``, float32 accumulation) with the rotated query and the probabilities rounded to the model dtype, as the
torch path's ``q @ k.T`` and ``probs.to(v.dtype) @ v`` round them; a float32 model gets IEEE float32 dots. The new
key and value are stored in the cache's dtype (one rounding each, as the torch path stores them); one rounding of
the output.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mxfp4.dispatch import Backend

from .attention_common import ATTENTION_DTYPES, DOT_MIN, dot_operand, online_softmax_step, sink_weight
from .launch import check_launchable, current_stream, next_pow2, on_device, reduction_workspace
from .moe_common import cast

__all__ = ["decode_attention", "num_splits", "compile_specs"]

# Launch shape from bench/tune.py decode-attention on an H100 (batch 1, GPT-OSS heads; bench/RESULTS.md, session 4):
# 128-slot ring 6.2 us, 144-slot full cache 6.4, 4096-slot cache at column 4000 13.6 (the torch ops it replaces:
# 29.3 / 22.9 / 50.0). 72 shapes tried (32/64/128 slots per split x BLOCK_S 16/32/64 x 4/8 warps, at most 16 or
# 64 splits): 5.6-9.5 / 6.4-8.9 / 13.4-34.6 us; the best per case is within 0.7 us of this one.
# The first version scored on the CUDA cores ([8, BLOCK_S, 32] products and reductions): 12.6 / 13.3 / 58.8 us.
#: Cache slots per program: one split per this many slots, at most MAX_SPLITS (a 128-slot ring: 2 programs per
#: KV head, a 4096-slot cache: 16). A program's steps are dependent memory round trips: short ranges, short launch.
SLOTS_PER_SPLIT = 64
MAX_SPLITS = 16
#: Slots scored per step (two tensor-core dots: [16, D/2] x [D/2, BLOCK_S], then [16, BLOCK_S] x [BLOCK_S, D/2]).
BLOCK_S = 64
NUM_WARPS = 4
_WORKSPACES: dict = {}


def num_splits(slots: int) -> int:
    """Programs per (row, KV head) for a cache of ``slots`` slots."""
    return max(1, min(MAX_SPLITS, triton.cdiv(slots, SLOTS_PER_SPLIT)))


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                     keys: torch.Tensor, values: torch.Tensor, columns: torch.Tensor, column: torch.Tensor,
                     pad: torch.Tensor, sinks: torch.Tensor, *, scale: float, ring: bool,
                     window: int | None) -> torch.Tensor:
    """Attention of one new token per row over the KV cache, which it also updates; ``[B, H * D]`` in q's dtype.

    Args:
        q: ``[B, H * D]``, k and v: ``[B, KV * D]``: the new token's projected query, key and value heads (unit
            stride along features, any row stride: e.g. views of one q/k/v projection output); bf16, fp16, fp32.
        cos, sin: ``[B, D / 2]`` RoPE tables at each row's position (unit stride along features), any float dtype.
        keys, values: ``[B, KV, S, D]`` cache tensors of q's dtype (unit stride along D); the new key (rotated)
            and value are written at slot ``column % S`` (``ring``) or ``column``.
        columns: int64 ``[S]``: the column each slot holds (-1: empty); the new slot gets ``column``.
        column: int64 ``[1]`` on the device: the new token's column. pad: int64 ``[B]``: each row's left padding.
        sinks: ``[H]`` sink logits. scale: the logit scale (``D ** -0.5``).
        ring: the cache is a sliding layer's ring. window: that layer's window (None on full-attention layers).

    >>> out = decode_attention(q, k, v, cos, sin, cache.keys, cache.values, cache.columns, column, pad, sinks,
    ...                        scale=0.125, ring=True, window=128)                  # [B, 4096]
    """
    _validate(q, k, v, cos, sin, keys, values, columns, column, pad, sinks, window)
    batch, kv_heads, slots, dim = keys.shape
    heads = q.shape[1] // dim
    group = heads // kv_heads
    out = torch.empty((batch, heads * dim), dtype=q.dtype, device=q.device)
    splits = num_splits(slots)
    # tl.dot's smallest dimension: GPT-OSS's 8 query heads per KV head are padded to 16 rows.
    group_p, half_p = max(DOT_MIN, next_pow2(group)), max(DOT_MIN, next_pow2(dim // 2))
    per_program = group_p * (2 * half_p + 2)  # published running max, sum and weighted values
    interpreted = not q.is_cuda
    stream = current_stream(q.get_device())
    partials, counters = reduction_workspace(_WORKSPACES, q.device, stream,
                                             batch * kv_heads * splits * per_program if splits > 1 else 0,
                                             batch * kv_heads if splits > 1 else 0)
    with on_device(q):
        decode_attention_kernel[(batch * kv_heads, splits)](
            q, k, v, cos, sin, keys, values, columns, column, pad, sinks, out, partials, counters,
            kv_heads, slots, triton.cdiv(slots, splits), 0 if window is None else int(window), float(scale),
            q.stride(0), k.stride(0), v.stride(0), cos.stride(0), sin.stride(0),
            keys.stride(0), keys.stride(1), keys.stride(2), values.stride(0), values.stride(1), values.stride(2),
            columns.stride(0), out.stride(0),
            GROUP=group, HALF=dim // 2, GROUP_P=group_p, HALF_P=half_p, BLOCK_S=BLOCK_S, RING=bool(ring),
            WINDOWED=window is not None, INTERPRETED=interpreted, num_warps=NUM_WARPS,
        )  # fmt: skip
    return out


def _validate(q, k, v, cos, sin, keys, values, columns, column, pad, sinks, window) -> None:
    for name, t in (("q", q), ("k", k), ("v", v), ("cos", cos), ("sin", sin), ("keys", keys), ("values", values),
                    ("columns", columns), ("column", column), ("pad", pad), ("sinks", sinks)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"decode_attention: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.device != q.device:
            raise ValueError(f"decode_attention: {name} is on {t.device} but q is on {q.device}")
    if q.dtype not in ATTENTION_DTYPES:
        raise TypeError(f"decode_attention: q must be bfloat16, float16 or float32, got {q.dtype}")
    if keys.dim() != 4 or values.shape != keys.shape:
        raise ValueError(f"decode_attention: keys {tuple(keys.shape)} and values {tuple(values.shape)} must both be "
                         "[B, KV, S, D]")
    for name, t in (("k", k), ("v", v), ("keys", keys), ("values", values)):
        if t.dtype != q.dtype:
            raise TypeError(f"decode_attention: {name} is {t.dtype}; q, k, v and the cache must share one dtype "
                            f"(q: {q.dtype})")
    batch, kv_heads, slots, dim = keys.shape
    if kv_heads == 0 or slots == 0 or dim == 0 or dim % 2:
        raise ValueError(f"decode_attention: cache {tuple(keys.shape)} needs KV, S >= 1 and an even D >= 2")
    for name, t in (("k", k), ("v", v)):
        if t.shape != (batch, kv_heads * dim):
            raise ValueError(f"decode_attention: {name} {tuple(t.shape)} must be [B, KV * D] = [{batch}, "
                             f"{kv_heads * dim}] for the cache {tuple(keys.shape)}")
    if q.dim() != 2 or q.shape[0] != batch or q.shape[1] == 0 or q.shape[1] % (kv_heads * dim):
        raise ValueError(f"decode_attention: q {tuple(q.shape)} must be [B, H * D] with B = {batch} and H a multiple "
                         f"of the cache's {kv_heads} KV heads of D = {dim}")
    for name, t in (("cos", cos), ("sin", sin)):
        if t.shape != (batch, dim // 2) or not t.is_floating_point():
            raise ValueError(f"decode_attention: {name} must be a float [B, D/2] = [{batch}, {dim // 2}] tensor, got "
                             f"{t.dtype} {tuple(t.shape)}")
    if columns.shape != (slots,) or columns.dtype != torch.int64:
        raise ValueError(f"decode_attention: columns must be int64 [S] = [{slots}], got {columns.dtype} "
                         f"{tuple(columns.shape)}")
    if column.shape != (1,) or column.dtype != torch.int64:
        raise ValueError(f"decode_attention: column must be int64 [1] (one new token per row), got {column.dtype} "
                         f"{tuple(column.shape)}")
    if pad.shape != (batch,) or pad.dtype != torch.int64:
        raise ValueError(f"decode_attention: pad must be int64 [B] = [{batch}], got {pad.dtype} {tuple(pad.shape)}")
    heads = q.shape[1] // dim
    if sinks.shape != (heads,) or not sinks.is_floating_point():
        raise ValueError(f"decode_attention: sinks must be a float [H] = [{heads}] tensor, got {tuple(sinks.shape)}")
    for name, t in (("q", q), ("k", k), ("v", v), ("cos", cos), ("sin", sin), ("keys", keys), ("values", values)):
        if t.stride(-1) != 1:
            raise ValueError(f"decode_attention: {name} needs unit stride on its last axis (pass .contiguous())")
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
        raise ValueError(f"decode_attention: window must be a positive int or None, got {window!r}")
    check_launchable(q, "decode_attention")


# --- the kernel ---------------------------------------------------------------------------------------------------
@triton.jit
def _rotate(first, second, cos, sin):
    """RoPE on pairs (i, i + D/2), given as the two halves."""
    return first * cos - second * sin, second * cos + first * sin


@triton.jit
def _merge(m, l, acc1, acc2, scores, v1, v2, DOT_DTYPE: tl.constexpr, INTERPRETED: tl.constexpr):
    """Fold scores ``[ROWS, S]`` (-inf where masked) and their values ``[S, D/2]`` x 2 into the running softmax; the
    probabilities meet the values on the tensor cores in the model dtype, as the torch path's ``probs @ v``."""
    m, alpha, p, l = online_softmax_step(m, l, scores)
    p = dot_operand(p, DOT_DTYPE, INTERPRETED)
    acc1 = tl.dot(p, v1, acc1 * alpha[:, None], input_precision="ieee")
    acc2 = tl.dot(p, v2, acc2 * alpha[:, None], input_precision="ieee")
    return m, l, acc1, acc2


@triton.jit
def decode_attention_kernel(
    q_ptr, k_ptr, v_ptr, cos_ptr, sin_ptr, keys_ptr, values_ptr, columns_ptr, column_ptr, pad_ptr, sinks_ptr, out_ptr,
    partials_ptr, counters_ptr,
    kv_heads, slots, slots_per_split, window, scale,
    stride_q, stride_k, stride_v, stride_cos, stride_sin,
    stride_kb, stride_kh, stride_ks, stride_vb, stride_vh, stride_vs, stride_col, stride_out,
    GROUP: tl.constexpr, HALF: tl.constexpr, GROUP_P: tl.constexpr, HALF_P: tl.constexpr, BLOCK_S: tl.constexpr,
    RING: tl.constexpr, WINDOWED: tl.constexpr, INTERPRETED: tl.constexpr,
):
    """Program (b * KV + g, split): see the module docstring. Halves of D are kept apart (RoPE pairs i, i + D/2)."""
    bg = tl.program_id(0)
    split = tl.program_id(1)
    num_splits = tl.num_programs(1)
    b = bg // kv_heads
    g = bg % kv_heads
    dim = 2 * HALF
    column = tl.load(column_ptr)
    pad = tl.load(pad_ptr + b)
    if RING:
        new_slot = column % slots
        valid = column >= 0
    else:
        new_slot = column
        valid = (column >= 0) & (column < slots)
    safe_slot = tl.minimum(tl.maximum(new_slot, 0), slots - 1).to(tl.int64)

    offs_h = tl.arange(0, GROUP_P)
    offs_d = tl.arange(0, HALF_P)
    h_live = offs_h < GROUP
    d_live = offs_d < HALF
    cos = tl.load(cos_ptr + b * stride_cos + offs_d, mask=d_live, other=0.0).to(tl.float32)
    sin = tl.load(sin_ptr + b * stride_sin + offs_d, mask=d_live, other=0.0).to(tl.float32)

    # The group's queries, rotated: [GROUP_P, HALF_P] per half (rows past GROUP and columns past D/2 are 0; the
    # tensor-core dots need >= 16 of each). The cached keys are scored on the tensor cores with the rotated query
    # rounded to the model dtype, as the torch path rounds RoPE's output; the new key in float32.
    DOT_DTYPE: tl.constexpr = keys_ptr.dtype.element_ty
    q_ptrs = q_ptr + b.to(tl.int64) * stride_q + (g * GROUP + offs_h)[:, None] * dim + offs_d[None, :]
    q_mask = h_live[:, None] & d_live[None, :]
    q1, q2 = _rotate(tl.load(q_ptrs, mask=q_mask, other=0.0).to(tl.float32),
                     tl.load(q_ptrs + HALF, mask=q_mask, other=0.0).to(tl.float32), cos[None, :], sin[None, :])
    q1_op = dot_operand(q1, DOT_DTYPE, INTERPRETED)
    q2_op = dot_operand(q2, DOT_DTYPE, INTERPRETED)

    # The new key (rotated, rounded to the cache dtype as it will be stored) and value.
    k_ptrs = k_ptr + b.to(tl.int64) * stride_k + g * dim + offs_d
    k1, k2 = _rotate(tl.load(k_ptrs, mask=d_live, other=0.0).to(tl.float32),
                     tl.load(k_ptrs + HALF, mask=d_live, other=0.0).to(tl.float32), cos, sin)
    k1 = cast(k1, keys_ptr.dtype.element_ty, INTERPRETED)
    k2 = cast(k2, keys_ptr.dtype.element_ty, INTERPRETED)
    v_ptrs = v_ptr + b.to(tl.int64) * stride_v + g * dim + offs_d
    v1 = tl.load(v_ptrs, mask=d_live, other=0.0)
    v2 = tl.load(v_ptrs + HALF, mask=d_live, other=0.0)

    # Split 0 starts from the new key alone (visible unless its own column is padding); the others from nothing.
    new_seen = (split == 0) & (column >= pad)
    new_score = tl.sum(q1 * k1.to(tl.float32)[None, :] + q2 * k2.to(tl.float32)[None, :], axis=1) * scale
    m = tl.where(new_seen, new_score, float("-inf"))
    l = tl.where(new_seen, 1.0, 0.0) + tl.zeros([GROUP_P], tl.float32)
    seen = tl.where(new_seen, 1.0, 0.0)
    acc1 = seen * v1.to(tl.float32)[None, :] + tl.zeros([GROUP_P, HALF_P], tl.float32)
    acc2 = seen * v2.to(tl.float32)[None, :] + tl.zeros([GROUP_P, HALF_P], tl.float32)

    # This split's slots of the cache as it was before this token.
    if RING:
        last = slots
    else:
        last = tl.minimum(column, slots)
    lo = split * slots_per_split
    hi = tl.minimum(lo + slots_per_split, last)
    k_head = keys_ptr + b.to(tl.int64) * stride_kb + g.to(tl.int64) * stride_kh
    v_head = values_ptr + b.to(tl.int64) * stride_vb + g.to(tl.int64) * stride_vh
    for s0 in range(lo, hi, BLOCK_S):
        offs_s = s0 + tl.arange(0, BLOCK_S)
        in_range = offs_s < hi
        slot_offs = offs_s.to(tl.int64)[:, None]
        tile_mask = in_range[:, None] & d_live[None, :]
        # Every load of the step is issued at once (a step is one memory round trip: this loop is latency-bound);
        # visibility is applied after, to the scores and to the values (an unseen slot may hold anything, e.g. the
        # new entry half-written by split 0, and 0 * Inf would be NaN).
        key_column = tl.load(columns_ptr + offs_s * stride_col, mask=in_range, other=-1)
        kt1 = tl.load(k_head + slot_offs * stride_ks + offs_d[None, :], mask=tile_mask, other=0.0)
        kt2 = tl.load(k_head + slot_offs * stride_ks + HALF + offs_d[None, :], mask=tile_mask, other=0.0)
        vt1 = tl.load(v_head + slot_offs * stride_vs + offs_d[None, :], mask=tile_mask, other=0.0)
        vt2 = tl.load(v_head + slot_offs * stride_vs + HALF + offs_d[None, :], mask=tile_mask, other=0.0)
        visible = in_range & (offs_s != new_slot) & (key_column <= column) & (key_column >= pad)
        if WINDOWED:
            visible = visible & (key_column > column - window)
        if INTERPRETED:
            kt1, kt2, vt1, vt2 = kt1.to(tl.float32), kt2.to(tl.float32), vt1.to(tl.float32), vt2.to(tl.float32)
        scores = tl.dot(q1_op, tl.trans(kt1), input_precision="ieee")
        scores = tl.dot(q2_op, tl.trans(kt2), scores, input_precision="ieee") * scale
        scores = tl.where(visible[None, :], scores, float("-inf"))
        vt1 = tl.where(visible[:, None], vt1, 0.0)
        vt2 = tl.where(visible[:, None], vt2, 0.0)
        m, l, acc1, acc2 = _merge(m, l, acc1, acc2, scores, vt1, vt2, DOT_DTYPE, INTERPRETED)

    # The new entry goes into the cache (after every read of this launch that could see its slot is masked).
    # (Masks as index < bound: the interpreter rejects a scalar flag broadcast into a block mask.)
    store = (split == 0) & valid
    store_d = offs_d < tl.where(store, HALF, 0)
    tl.store(k_head + safe_slot * stride_ks + offs_d, k1, mask=store_d)
    tl.store(k_head + safe_slot * stride_ks + HALF + offs_d, k2, mask=store_d)
    tl.store(v_head + safe_slot * stride_vs + offs_d, v1, mask=store_d)
    tl.store(v_head + safe_slot * stride_vs + HALF + offs_d, v2, mask=store_d)
    one = tl.arange(0, 1)
    tl.store(columns_ptr + safe_slot * stride_col + one, column + one, mask=one < tl.where(store, 1, 0))

    sink = tl.load(sinks_ptr + g * GROUP + offs_h, mask=h_live, other=0.0).to(tl.float32)
    out_ptrs = out_ptr + b.to(tl.int64) * stride_out + (g * GROUP + offs_h)[:, None] * dim + offs_d[None, :]
    if num_splits == 1:
        _finish(m, l, acc1, acc2, sink, valid, out_ptrs, q_mask, HALF, INTERPRETED)
    else:
        # Publish (m, l, acc) of this split; the last of (b, g) to arrive merges them in split order.
        width = 2 * HALF_P + 2
        mine = partials_ptr + (bg * num_splits + split) * (GROUP_P * width) + offs_h * width
        tl.store(mine, m)
        tl.store(mine + 1, l)
        tl.store(mine[:, None] + 2 + offs_d[None, :], acc1)
        tl.store(mine[:, None] + 2 + HALF_P + offs_d[None, :], acc2)
        tl.debug_barrier()
        arrived = tl.atomic_add(counters_ptr + bg, 1, sem="acq_rel", scope="gpu")
        if arrived == num_splits - 1:
            m = tl.full([GROUP_P], float("-inf"), tl.float32)
            l = tl.zeros([GROUP_P], tl.float32)
            acc1 = tl.zeros([GROUP_P, HALF_P], tl.float32)
            acc2 = tl.zeros([GROUP_P, HALF_P], tl.float32)
            for s in range(0, num_splits):
                theirs = partials_ptr + (bg * num_splits + s) * (GROUP_P * width) + offs_h * width
                m_s = tl.load(theirs, cache_modifier=".cg")
                l_s = tl.load(theirs + 1, cache_modifier=".cg")
                a1 = tl.load(theirs[:, None] + 2 + offs_d[None, :], cache_modifier=".cg")
                a2 = tl.load(theirs[:, None] + 2 + HALF_P + offs_d[None, :], cache_modifier=".cg")
                m_new = tl.maximum(m, m_s)
                m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
                mine_w = tl.exp(m - m_safe)
                theirs_w = tl.exp(m_s - m_safe)
                l = l * mine_w + l_s * theirs_w
                acc1 = acc1 * mine_w[:, None] + a1 * theirs_w[:, None]
                acc2 = acc2 * mine_w[:, None] + a2 * theirs_w[:, None]
                m = m_new
            tl.atomic_xchg(counters_ptr + bg, 0)  # ready for the next launch: no memset between calls
            _finish(m, l, acc1, acc2, sink, valid, out_ptrs, q_mask, HALF, INTERPRETED)


@triton.jit
def _finish(m, l, acc1, acc2, sink, valid, out_ptrs, q_mask, HALF: tl.constexpr, INTERPRETED: tl.constexpr):
    """Add the sink to the softmax (mass, no value), normalize, store; NaN for a column the cache cannot hold."""
    weight = tl.where(valid, sink_weight(m, l, sink), float("nan"))
    dtype = out_ptrs.dtype.element_ty
    tl.store(out_ptrs, cast(acc1 * weight[:, None], dtype, INTERPRETED), mask=q_mask)
    tl.store(out_ptrs + HALF, cast(acc2 * weight[:, None], dtype, INTERPRETED), mask=q_mask)


# --- ahead-of-time compilation ----------------------------------------------------------------------------------
def compile_specs(backend) -> list[dict]:
    """GPT-OSS's variants (64 heads on 8 KV heads of 64; full and sliding layers) in the model dtype the path serves
    (fp32 on the fp32 path, bf16 otherwise), for ``aot.py``."""
    dtype = "fp32" if Backend(backend) is Backend.FP32 else "bf16"
    signature = {
        "q_ptr": f"*{dtype}", "k_ptr": f"*{dtype}", "v_ptr": f"*{dtype}", "cos_ptr": f"*{dtype}",
        "sin_ptr": f"*{dtype}", "keys_ptr": f"*{dtype}", "values_ptr": f"*{dtype}", "columns_ptr": "*i64",
        "column_ptr": "*i64", "pad_ptr": "*i64",
        "sinks_ptr": f"*{dtype}", "out_ptr": f"*{dtype}", "partials_ptr": "*fp32", "counters_ptr": "*i32",
        "kv_heads": "i32", "slots": "i32", "slots_per_split": "i32", "window": "i32", "scale": "fp32",
    }
    for name in decode_attention_kernel.arg_names[len(signature):]:
        signature[name] = "i32"
    specs = []
    for ring in (True, False):
        constexprs = {"GROUP": 8, "HALF": 32, "GROUP_P": DOT_MIN, "HALF_P": 32, "BLOCK_S": BLOCK_S, "RING": ring,
                      "WINDOWED": ring, "INTERPRETED": False, "stride_col": 1}
        for name in constexprs:
            signature[name] = "constexpr"
        specs.append({"name": f"decode_attention_{dtype}_{'ring' if ring else 'full'}", "fn": decode_attention_kernel,
                      "signature": dict(signature), "constexprs": constexprs, "num_warps": NUM_WARPS,
                      "num_stages": 1, "divisible_by_16": []})
    return specs
