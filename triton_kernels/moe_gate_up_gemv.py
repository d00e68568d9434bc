"""Decode-sized MoE GEMM 1: ``swiglu(x[t] @ W1[e].T + b1[e])`` for every (token, slot) pair, as a weight stream.

Twin of ``mxfp4.reference.moe_gate_up.gate_up_swiglu`` (rows in pair order instead of sorted order). At decode
(a few pairs) the GEMM is a matrix-vector product per pair, bound by reading the hit experts' weights once, so
it runs on the CUDA cores: program ``(pair, feature block)`` streams the ``2 * BLOCK_N`` consecutive W1 rows
``2j`` (gate) / ``2j + 1`` (up) of its features through registers, ``BLOCK_G`` whole MX blocks per row per step
(each thread one 16-byte block: 128-bit loads, the block's 32 products summed inside the thread), decodes the
codes with integer bit moves on int32 words (``mx.word_block_sums``), multiplies in float32 against the pair's token
row and applies each block's scale once to the block sum. The gate / up rows of a feature meet in registers,
so bias and SwiGLU are fused and only ``act [P, I]`` is written.

No sort: the pair's expert is read from the router's output, and ``pair = t * k + slot`` is the output row, which
``moe_down_gemv`` reads back per token. The grid ``(T * k, ceil(I / BLOCK_N))`` depends on sizes only (CUDA
graphs); with 4 pairs and I = 2880 it is 4 * 360 programs, ~11 per H100 SM. Pairs that share an expert read
its rows again (from L2: the grid runs pair-fastest, so they stream the same rows at about the same time).

Numerics: float32 products and accumulation on every path (activations as given, not rounded to bf16: the FMA
units take float32), bias added in float32, one rounding to ``act``'s dtype.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mxfp4.dispatch import triton_interpreter_enabled

from .launch import block_words_descriptor, block_words_descriptor_type, word_aligned
from .moe_common import cast, expert_rows_gemv, expert_rows_gemv_tma, swiglu


def gate_up_swiglu_gemv(x, expert_ids, w1_blocks, w1_scales, b1, alpha, limit, config, act_dtype, tma=False):
    """``act [T * k, I]`` in ``act_dtype``: row ``t * k + slot`` = SwiGLU of token t through expert
    ``expert_ids[t, slot]``.

    Args:
        x: ``[T, H]`` (unit stride along H). expert_ids: ``int32 [T, k]`` contiguous (``moe_routing.route``).
        w1_blocks: ``uint8 [E, 2I, G, 16]`` with contiguous ``[G, 16]`` rows; w1_scales: ``uint8 [E, 2I, G]`` with
            unit stride along G. b1: ``[E, 2I]`` contiguous. config: a :class:`mxfp4.triton_kernels.moe.GemvConfig`.
        act_dtype: torch.bfloat16 (tensor-core paths) or torch.float32 (fp32 path).
        tma: read the W1 words by TMA, ``config.num_stages`` deep (``gate_up_swiglu_gemv_tma_kernel``; sm_90, and
            ``launch.tma_readable(w1_blocks)``).

    >>> act = gate_up_swiglu_gemv(x, ids, w1.blocks, w1.scales, b1, 1.702, 7.0, GemvConfig(8, 16, 4), torch.bfloat16)
    """
    if x.stride(1) != 1:
        x = x.contiguous()
    w1_blocks = word_aligned(w1_blocks)
    tokens, hidden = x.shape
    top_k = expert_ids.shape[1]
    intermediate = w1_blocks.shape[1] // 2
    pairs = tokens * top_k
    act = torch.empty((pairs, intermediate), dtype=act_dtype, device=x.device)
    if pairs == 0:
        return act
    grid = (pairs, triton.cdiv(intermediate, config.block_n))
    if tma:
        gate_up_swiglu_gemv_tma_kernel[grid](
            x, expert_ids, block_words_descriptor(w1_blocks, 2 * config.block_n, config.block_g), w1_scales, b1, act,
            hidden, intermediate, top_k, x.stride(0), w1_scales.stride(0), w1_scales.stride(1), alpha, limit,
            BLOCK_N=config.block_n, BLOCK_G=config.block_g, NUM_STAGES=config.num_stages,
            INTERPRETED=triton_interpreter_enabled(), num_warps=config.num_warps, num_stages=config.num_stages,
        )
        return act
    gate_up_swiglu_gemv_kernel[grid](
        x, expert_ids, w1_blocks, w1_scales, b1, act,
        hidden, intermediate, top_k, x.stride(0),
        w1_blocks.stride(0), w1_blocks.stride(1), w1_scales.stride(0), w1_scales.stride(1),
        alpha, limit,
        BLOCK_N=config.block_n, BLOCK_G=config.block_g, INTERPRETED=triton_interpreter_enabled(),
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    return act


#: Integer arguments that are multiples of 16 at GPT-OSS sizes (H = I = 2880), as Triton's launcher specializes them.
GPT_OSS_DIVISIBLE_BY_16 = ["hidden", "intermediate", "stride_xt", "blocks_stride_e", "blocks_stride_n",
                           "scales_stride_e"]
GPT_OSS_CONSTEXPRS: dict = {}


def signature(activation: str, act: str) -> dict:
    return {
        "x_ptr": f"*{activation}", "expert_ids_ptr": "*i32",
        "blocks_ptr": "*u8", "scales_ptr": "*u8", "bias_ptr": f"*{activation}", "act_ptr": f"*{act}",
        "hidden": "i32", "intermediate": "i32", "top_k": "i32", "stride_xt": "i32",
        "blocks_stride_e": "i32", "blocks_stride_n": "i32", "scales_stride_e": "i32", "scales_stride_n": "i32",
        "alpha": "fp32", "limit": "fp32",
        "BLOCK_N": "constexpr", "BLOCK_G": "constexpr", "INTERPRETED": "constexpr",
    }


@triton.jit
def gate_up_swiglu_gemv_kernel(
    x_ptr, expert_ids_ptr, blocks_ptr, scales_ptr, bias_ptr, act_ptr,
    hidden, intermediate, top_k, stride_xt,
    blocks_stride_e, blocks_stride_n, scales_stride_e, scales_stride_n,
    alpha, limit,
    BLOCK_N: tl.constexpr, BLOCK_G: tl.constexpr, INTERPRETED: tl.constexpr,
):
    pair = tl.program_id(0)
    token = pair // top_k
    expert = tl.load(expert_ids_ptr + pair).to(tl.int64)
    ROWS: tl.constexpr = 2 * BLOCK_N
    # W1 rows 2j / 2j + 1 of features j in this block, consecutive; clamped (never stored) so loads need no mask.
    w_row = tl.minimum(tl.program_id(1) * ROWS + tl.arange(0, ROWS), 2 * intermediate - 1)
    dot = expert_rows_gemv(blocks_ptr, scales_ptr, expert, w_row, x_ptr + token.to(tl.int64) * stride_xt, hidden,
                           blocks_stride_e, blocks_stride_n, scales_stride_e, scales_stride_n, ROWS, BLOCK_G)
    pre = dot + tl.load(bias_ptr + expert * (2 * intermediate) + w_row).to(tl.float32)
    gate, up = tl.split(tl.reshape(pre, [BLOCK_N, 2]))
    act = swiglu(gate, up, alpha, limit)
    feature = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    tl.store(act_ptr + pair.to(tl.int64) * intermediate + feature, cast(act, act_ptr.dtype.element_ty, INTERPRETED),
             mask=feature < intermediate)


def tma_signature(activation: str, act: str, block_n: int, block_g: int) -> dict:
    return {
        "x_ptr": f"*{activation}", "expert_ids_ptr": "*i32",
        "blocks_desc": block_words_descriptor_type(2 * block_n, block_g, leading_dims=1), "scales_ptr": "*u8",
        "bias_ptr": f"*{activation}", "act_ptr": f"*{act}",
        "hidden": "i32", "intermediate": "i32", "top_k": "i32", "stride_xt": "i32",
        "scales_stride_e": "i32", "scales_stride_n": "i32", "alpha": "fp32", "limit": "fp32",
        "BLOCK_N": "constexpr", "BLOCK_G": "constexpr", "NUM_STAGES": "constexpr", "INTERPRETED": "constexpr",
    }


@triton.jit
def gate_up_swiglu_gemv_tma_kernel(
    x_ptr, expert_ids_ptr, blocks_desc, scales_ptr, bias_ptr, act_ptr,
    hidden, intermediate, top_k, stride_xt, scales_stride_e, scales_stride_n, alpha, limit,
    BLOCK_N: tl.constexpr, BLOCK_G: tl.constexpr, NUM_STAGES: tl.constexpr, INTERPRETED: tl.constexpr,
):
    """The kernel above with the W1 words read by TMA (``moe_common.expert_rows_gemv_tma``; sm_90).
    ``blocks_desc``: ``launch.block_words_descriptor(w1_blocks, 2 * BLOCK_N, BLOCK_G)``."""
    pair = tl.program_id(0)
    token = pair // top_k
    expert = tl.load(expert_ids_ptr + pair)
    ROWS: tl.constexpr = 2 * BLOCK_N
    first_row = tl.program_id(1) * ROWS
    w_row = tl.minimum(first_row + tl.arange(0, ROWS), 2 * intermediate - 1)
    dot = expert_rows_gemv_tma(blocks_desc, scales_ptr, expert, first_row, w_row,
                               x_ptr + token.to(tl.int64) * stride_xt, hidden, scales_stride_e, scales_stride_n,
                               ROWS, BLOCK_G, NUM_STAGES)
    pre = dot + tl.load(bias_ptr + expert.to(tl.int64) * (2 * intermediate) + w_row).to(tl.float32)
    gate, up = tl.split(tl.reshape(pre, [BLOCK_N, 2]))
    act = swiglu(gate, up, alpha, limit)
    feature = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    tl.store(act_ptr + pair.to(tl.int64) * intermediate + feature, cast(act, act_ptr.dtype.element_ty, INTERPRETED),
             mask=feature < intermediate)
