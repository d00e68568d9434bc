"""Grouped-query attention with sinks for many new tokens at once (prefill, chunked prefill): one flash-attention
launch per layer. Twin of ``mxfp4.reference.prefill_attention``.

As torch ops (``gpt_oss.visible_keys`` + ``attention_with_sinks``) a 2k-token prefill materializes every head's
``[T, S]`` scores in float32 (2 GB per layer against a 4k-slot cache) and spends over half of gpt-oss-20b's prefill
time in the softmax kernels. Here each program owns ``BLOCK_M`` queries of one head and streams the keys of its KV
head in ``BLOCK_N`` blocks (online softmax, float32 running max / sum, tensor-core dots); nothing of size T x S
exists. A key block no query of the program may see is skipped before its K / V are loaded (future columns, empty
slots, padding, outside the window), so a causal prefill does about half the work of the full square.

Which keys a query sees is ``gpt_oss.visible_keys``'s rule, from the columns the keys carry (a ring cache holds
them out of order): key column ``kc <= qc``, ``kc >= pad[b]`` and, on sliding layers, ``kc > qc - window``. The
sink logit joins the softmax at the end, as in ``decode_attention.py``.

Numerics: scores on the tensor cores from the model-dtype q and k (float32 accumulation; IEEE float32 dots for a
float32 model), scaled in float32; softmax in float32; the probabilities are rounded to the model dtype for the
``p @ v`` dot, as the torch path's ``probs.to(v.dtype) @ v``; one rounding of the output.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mxfp4.dispatch import Backend

from .attention_common import ATTENTION_DTYPES, DOT_MIN, dot_operand, online_softmax_step, sink_weight
from .launch import check_launchable, next_pow2, on_device
from .moe_common import cast

__all__ = ["prefill_attention", "compile_specs"]

# 64 queries x 64 keys per step, 4 warps, 2 stages: validated on an H100 (bench/RESULTS.md, session 4). A full layer
# of a 2k prefill over a 4096-slot cache: 389 us (the torch ops it replaced: 6 353). bench/tune.py prefill-attention
# (8 shapes, full layer only; the sliding case was not reached): 128 x 64, 4 warps 351 us, the rest 454-797 us.
BLOCK_M = 64
BLOCK_N = 64
NUM_WARPS = 4
NUM_STAGES = 2
_GRID_Y_LIMIT = 65535


def prefill_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, query_columns: torch.Tensor,
                      key_columns: torch.Tensor, pad: torch.Tensor, sinks: torch.Tensor, *, scale: float,
                      window: int | None) -> torch.Tensor:
    """Attention of ``q`` over ``k, v`` with GPT-OSS's visibility rules and sinks; ``[B, T, H, D]`` in q's dtype.

    Args:
        q: ``[B, H, T, D]`` rotated queries (unit stride along D, any other strides: e.g. a transposed view of the
            projection output); bf16, fp16 or fp32.
        k, v: ``[B, KV, S, D]`` keys (rotated) and values of q's dtype (unit stride along D): the cache buffers, a
            ring's concatenation with the new entries, or the new entries alone.
        query_columns: int64 ``[T]``; key_columns: int64 ``[S]`` (-1: an empty slot); pad: int64 ``[B]`` left
            padding. sinks: ``[H]`` sink logits. scale: the logit scale. window: sliding window, or None.

    Returns ``[B, T, H, D]`` (contiguous: ``.view(B, T, H * D)`` feeds the o projection). A query that sees no key
    (a padding column) gets 0, the sink having taken all the mass.

    >>> out = prefill_attention(q, keys, values, columns, key_columns, pad, sinks, scale=0.125, window=128)
    """
    _validate(q, k, v, query_columns, key_columns, pad, sinks, window)
    batch, heads, length, dim = q.shape
    kv_heads, slots = k.shape[1], k.shape[2]
    out = torch.empty((batch, length, heads, dim), dtype=q.dtype, device=q.device)
    if out.numel() == 0:
        return out
    dim_p = max(DOT_MIN, next_pow2(dim))
    with on_device(q):
        prefill_attention_kernel[(batch * heads, triton.cdiv(length, BLOCK_M))](
            q, k, v, query_columns, key_columns, pad, sinks, out,
            heads, heads // kv_heads, length, slots, dim, 0 if window is None else int(window), float(scale),
            q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2), query_columns.stride(0), key_columns.stride(0),
            out.stride(0), out.stride(1), out.stride(2),
            DIM_P=dim_p, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, WINDOWED=window is not None,
            INTERPRETED=not q.is_cuda, num_warps=NUM_WARPS, num_stages=NUM_STAGES,
        )  # fmt: skip
    return out


def _validate(q, k, v, query_columns, key_columns, pad, sinks, window) -> None:
    for name, t in (("q", q), ("k", k), ("v", v), ("query_columns", query_columns), ("key_columns", key_columns),
                    ("pad", pad), ("sinks", sinks)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"prefill_attention: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.device != q.device:
            raise ValueError(f"prefill_attention: {name} is on {t.device} but q is on {q.device}")
    if q.dtype not in ATTENTION_DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"prefill_attention: q, k, v must share one of bfloat16 / float16 / float32, got {q.dtype}, "
                        f"{k.dtype}, {v.dtype}")
    if q.dim() != 4 or k.dim() != 4 or v.shape != k.shape:
        raise ValueError(f"prefill_attention: q {tuple(q.shape)} must be [B, H, T, D], k {tuple(k.shape)} and v "
                         f"{tuple(v.shape)} both [B, KV, S, D]")
    batch, heads, length, dim = q.shape
    if k.shape[0] != batch or k.shape[3] != dim or k.shape[1] == 0 or heads % k.shape[1]:
        raise ValueError(f"prefill_attention: k {tuple(k.shape)} must be [B, KV, S, D] with B = {batch}, D = {dim} "
                         f"and KV dividing the {heads} query heads of q {tuple(q.shape)}")
    if query_columns.shape != (length,) or query_columns.dtype != torch.int64:
        raise ValueError(f"prefill_attention: query_columns must be int64 [T] = [{length}], got {query_columns.dtype} "
                         f"{tuple(query_columns.shape)}")
    if key_columns.shape != (k.shape[2],) or key_columns.dtype != torch.int64:
        raise ValueError(f"prefill_attention: key_columns must be int64 [S] = [{k.shape[2]}], got "
                         f"{key_columns.dtype} {tuple(key_columns.shape)}")
    if pad.shape != (batch,) or pad.dtype != torch.int64:
        raise ValueError(f"prefill_attention: pad must be int64 [B] = [{batch}], got {pad.dtype} {tuple(pad.shape)}")
    if sinks.shape != (heads,) or not sinks.is_floating_point():
        raise ValueError(f"prefill_attention: sinks must be a float [H] = [{heads}] tensor, got {tuple(sinks.shape)}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.stride(-1) != 1:
            raise ValueError(f"prefill_attention: {name} needs unit stride along D (pass .contiguous())")
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
        raise ValueError(f"prefill_attention: window must be a positive int or None, got {window!r}")
    if triton.cdiv(length, BLOCK_M) > _GRID_Y_LIMIT:
        raise ValueError(f"prefill_attention: T = {length} queries make more than {_GRID_Y_LIMIT} blocks of "
                         f"{BLOCK_M} (CUDA's grid limit); run them in chunks")
    check_launchable(q, "prefill_attention")


@triton.jit
def prefill_attention_kernel(
    q_ptr, k_ptr, v_ptr, qcol_ptr, kcol_ptr, pad_ptr, sinks_ptr, out_ptr,
    heads, group, length, slots, dim, window, scale,
    stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_ks, stride_vb, stride_vh, stride_vs,
    stride_qcol, stride_kcol, stride_ob, stride_ot, stride_oh,
    DIM_P: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, WINDOWED: tl.constexpr,
    INTERPRETED: tl.constexpr,
):
    """Program (b * H + h, query block): see the module docstring."""
    bh = tl.program_id(0)
    block = tl.program_id(1)
    b = bh // heads
    h = bh % heads
    g = h // group
    DOT_DTYPE: tl.constexpr = k_ptr.dtype.element_ty
    offs_m = block * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, DIM_P)
    m_live = offs_m < length
    d_live = offs_d < dim
    pad = tl.load(pad_ptr + b)
    query_column = tl.load(qcol_ptr + offs_m * stride_qcol, mask=m_live, other=-1)
    # Padding rows of the block (past T) see nothing: their column -1 is below every pad.
    q = tl.load(q_ptr + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
                + offs_m.to(tl.int64)[:, None] * stride_qt + offs_d[None, :],
                mask=m_live[:, None] & d_live[None, :], other=0.0)
    if INTERPRETED:
        q = q.to(tl.float32)
    k_head = k_ptr + b.to(tl.int64) * stride_kb + g.to(tl.int64) * stride_kh
    v_head = v_ptr + b.to(tl.int64) * stride_vb + g.to(tl.int64) * stride_vh
    newest = tl.max(query_column, axis=0)
    oldest = tl.min(tl.where(m_live, query_column, newest), axis=0)

    m = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, DIM_P], tl.float32)
    for n0 in range(0, slots, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        n_live = offs_n < slots
        key_column = tl.load(kcol_ptr + offs_n * stride_kcol, mask=n_live, other=-1)
        # Keys no query of this block can see: past its newest column, empty or padding, before its oldest one's
        # window (a cheap test first, so a causal prefill skips the future half without loading it).
        useful = n_live & (key_column <= newest) & (key_column >= pad)
        if WINDOWED:
            useful = useful & (key_column > oldest - window)
        if tl.max(useful.to(tl.int32), axis=0) > 0:
            visible = useful[None, :] & (key_column[None, :] <= query_column[:, None])
            if WINDOWED:
                visible = visible & (key_column[None, :] > query_column[:, None] - window)
            kv_mask = n_live[:, None] & d_live[None, :]
            keys = tl.load(k_head + offs_n.to(tl.int64)[:, None] * stride_ks + offs_d[None, :], mask=kv_mask,
                           other=0.0)
            values = tl.load(v_head + offs_n.to(tl.int64)[:, None] * stride_vs + offs_d[None, :], mask=kv_mask,
                             other=0.0)
            if INTERPRETED:
                keys, values = keys.to(tl.float32), values.to(tl.float32)
            scores = tl.dot(q, tl.trans(keys), input_precision="ieee") * scale
            scores = tl.where(visible, scores, float("-inf"))
            m, alpha, p, l = online_softmax_step(m, l, scores)
            acc = tl.dot(dot_operand(p, DOT_DTYPE, INTERPRETED), values, acc * alpha[:, None], input_precision="ieee")

    out = acc * sink_weight(m, l, tl.load(sinks_ptr + h).to(tl.float32))[:, None]
    out_ptrs = (out_ptr + b.to(tl.int64) * stride_ob + offs_m.to(tl.int64)[:, None] * stride_ot
                + h.to(tl.int64) * stride_oh + offs_d[None, :])
    tl.store(out_ptrs, cast(out, out_ptr.dtype.element_ty, INTERPRETED), mask=m_live[:, None] & d_live[None, :])


# --- ahead-of-time compilation ----------------------------------------------------------------------------------
def compile_specs(backend) -> list[dict]:
    """GPT-OSS's variants (head_dim 64; full and sliding layers) in the dtype the path serves, for ``aot.py``."""
    dtype = "fp32" if Backend(backend) is Backend.FP32 else "bf16"
    signature = {
        "q_ptr": f"*{dtype}", "k_ptr": f"*{dtype}", "v_ptr": f"*{dtype}", "qcol_ptr": "*i64", "kcol_ptr": "*i64",
        "pad_ptr": "*i64", "sinks_ptr": f"*{dtype}", "out_ptr": f"*{dtype}",
        "heads": "i32", "group": "i32", "length": "i32", "slots": "i32", "dim": "i32", "window": "i32",
        "scale": "fp32",
    }
    for name in prefill_attention_kernel.arg_names[len(signature):]:
        signature[name] = "i32"
    specs = []
    for windowed in (True, False):
        constexprs = {"DIM_P": 64, "BLOCK_M": BLOCK_M, "BLOCK_N": BLOCK_N, "WINDOWED": windowed,
                      "INTERPRETED": False, "stride_qcol": 1, "stride_kcol": 1}
        for name in constexprs:
            signature[name] = "constexpr"
        specs.append({"name": f"prefill_attention_{dtype}_{'sliding' if windowed else 'full'}",
                      "fn": prefill_attention_kernel, "signature": dict(signature), "constexprs": constexprs,
                      "num_warps": NUM_WARPS, "num_stages": NUM_STAGES, "divisible_by_16": []})
    return specs
