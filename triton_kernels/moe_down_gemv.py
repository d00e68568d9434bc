"""Decode-sized MoE GEMM 2 with the combine fused: ``out[t] = sum over slots of w[t, s] * (act[t*k+s] @ W2[e].T + b2[e])``.

Twin of ``mxfp4.reference.moe_down.down`` followed by ``mxfp4.reference.moe_combine.combine``. The same weight stream
as ``moe_gate_up_gemv``: program ``(pair, feature block)`` streams ``BLOCK_N`` consecutive W2 rows of the pair's
expert through registers, ``BLOCK_G`` whole MX blocks per row per step (each thread one 16-byte block, decoded on
int32 words by ``mx.word_block_sums``), and multiplies them in float32 against the pair's activation row
(``moe_gate_up_gemv`` wrote it at row ``t * k + slot``). One activation row per program keeps a slot axis out of
the tile, so the word decode's activation reshape costs one small shared-memory exchange per step (4 barriers in
the sm_90 loop; word-decoding the former all-k-slots tile took 9); that former version decoded byte by byte
instead: 19.4 us at T = 1 on an H100, 0.9 TB/s (bench/RESULTS.md, session 5).

The combine happens in the same launch, by ``splitk.finish_tile`` with the k slots as the slices: each program
publishes its contribution ``(dot + b2[e]) * w[t, s]`` (float32, what ``moe_down`` writes) and bumps the counter of
its (token, feature block); the last of the token's k programs to arrive adds the k contributions in slot order
starting from 0 -- exactly ``moe_combine``'s sum -- rounds once to the output dtype and resets the counter (with
k = 1 the program stores directly). No atomics on the values, no memset, bitwise deterministic; the grid
``(T * k, ceil(H / BLOCK_N))`` runs pair-fastest, so the k programs of a feature block run at about the same time.

``down_combine_gemv_tma_kernel`` is the same program with the W2 words read by TMA, pipelined (sm_90; the MoE uses it
at up to 8 pairs once ``moe.TMA_DOWN_ON``): at equal ``BLOCK_G`` the same products and order of sums, bit for bit.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mxfp4.dispatch import triton_interpreter_enabled

from .launch import (block_words_descriptor, block_words_descriptor_type, current_stream, reduction_workspace,
                     word_aligned)
from .moe_common import expert_rows_gemv, expert_rows_gemv_tma
from .splitk import finish_tile

_WORKSPACES: dict = {}


def down_combine_gemv(act, expert_ids, routing_weights, w2_blocks, w2_scales, b2, config, out_dtype, tma=False):
    """``[T, H]`` in ``out_dtype``: each token's k down projections, weighted and summed in slot order.

    Args:
        act: ``[T * k, I]`` contiguous, row ``t * k + slot`` (``moe_gate_up_gemv``). expert_ids: ``int32 [T, k]``,
            routing_weights: ``float32 [T, k]``, both contiguous (``moe_routing.route``).
        w2_blocks: ``uint8 [E, H, G, 16]`` with contiguous ``[G, 16]`` rows; w2_scales: ``uint8 [E, H, G]`` with
            unit stride along G; b2: ``[E, H]`` contiguous. config: a :class:`mxfp4.triton_kernels.moe.GemvConfig`
            (``block_n`` W2 rows per program).
        tma: read the W2 words by TMA, ``config.num_stages`` deep (``down_combine_gemv_tma_kernel``; sm_90, and
            ``launch.tma_readable(w2_blocks)``).

    >>> y = down_combine_gemv(act, ids, weights, w2.blocks, w2.scales, b2, GemvConfig(8, 16, 4), torch.bfloat16)
    """
    tokens, top_k = expert_ids.shape
    intermediate = act.shape[1]
    hidden = w2_blocks.shape[1]
    out = torch.empty((tokens, hidden), dtype=out_dtype, device=act.device)
    if tokens == 0:
        return out
    w2_blocks = word_aligned(w2_blocks)
    feature_blocks = triton.cdiv(hidden, config.block_n)
    stream = current_stream(act.get_device()) if act.is_cuda else 0
    partials, counters = reduction_workspace(_WORKSPACES, act.device, stream,
                                             tokens * top_k * feature_blocks * config.block_n, tokens * feature_blocks)
    grid = (tokens * top_k, feature_blocks)
    if tma:
        down_combine_gemv_tma_kernel[grid](
            act, expert_ids, routing_weights, block_words_descriptor(w2_blocks, config.block_n, config.block_g),
            w2_scales, b2, out, partials, counters, hidden, intermediate, top_k, w2_scales.stride(0),
            w2_scales.stride(1), BLOCK_N=config.block_n, BLOCK_G=config.block_g, NUM_STAGES=config.num_stages,
            INTERPRETED=triton_interpreter_enabled(), num_warps=config.num_warps, num_stages=config.num_stages,
        )
        return out
    down_combine_gemv_kernel[grid](
        act, expert_ids, routing_weights, w2_blocks, w2_scales, b2, out, partials, counters,
        hidden, intermediate, top_k,
        w2_blocks.stride(0), w2_blocks.stride(1), w2_scales.stride(0), w2_scales.stride(1),
        BLOCK_N=config.block_n, BLOCK_G=config.block_g, INTERPRETED=triton_interpreter_enabled(),
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    return out


#: Integer arguments that are multiples of 16 at GPT-OSS sizes (H = I = 2880), as Triton's launcher specializes them.
GPT_OSS_DIVISIBLE_BY_16 = ["hidden", "intermediate", "blocks_stride_e", "blocks_stride_n", "scales_stride_e"]
GPT_OSS_CONSTEXPRS: dict = {}


def signature(activation: str, act: str) -> dict:
    return {
        "act_ptr": f"*{act}", "expert_ids_ptr": "*i32", "routing_weights_ptr": "*fp32",
        "blocks_ptr": "*u8", "scales_ptr": "*u8", "bias_ptr": f"*{activation}", "out_ptr": f"*{activation}",
        "partials_ptr": "*fp32", "counters_ptr": "*i32",
        "hidden": "i32", "intermediate": "i32", "top_k": "i32",
        "blocks_stride_e": "i32", "blocks_stride_n": "i32", "scales_stride_e": "i32", "scales_stride_n": "i32",
        "BLOCK_N": "constexpr", "BLOCK_G": "constexpr", "INTERPRETED": "constexpr",
    }


@triton.jit
def down_combine_gemv_kernel(
    act_ptr, expert_ids_ptr, routing_weights_ptr, blocks_ptr, scales_ptr, bias_ptr, out_ptr, partials_ptr,
    counters_ptr, hidden, intermediate, top_k,
    blocks_stride_e, blocks_stride_n, scales_stride_e, scales_stride_n,
    BLOCK_N: tl.constexpr, BLOCK_G: tl.constexpr, INTERPRETED: tl.constexpr,
):
    pair = tl.program_id(0)
    feature_block = tl.program_id(1)
    token = pair // top_k
    expert = tl.load(expert_ids_ptr + pair).to(tl.int64)
    feature = feature_block * BLOCK_N + tl.arange(0, BLOCK_N)
    w_row = tl.minimum(feature, hidden - 1)  # clamped (never stored) so loads need no mask
    dot = expert_rows_gemv(blocks_ptr, scales_ptr, expert, w_row, act_ptr + pair.to(tl.int64) * intermediate,
                           intermediate, blocks_stride_e, blocks_stride_n, scales_stride_e, scales_stride_n,
                           BLOCK_N, BLOCK_G)
    _combine(dot, pair, token, expert, feature_block, feature, w_row, routing_weights_ptr, bias_ptr, out_ptr,
             partials_ptr, counters_ptr, hidden, top_k, BLOCK_N, INTERPRETED)


def tma_signature(activation: str, act: str, block_n: int, block_g: int) -> dict:
    return {
        "act_ptr": f"*{act}", "expert_ids_ptr": "*i32", "routing_weights_ptr": "*fp32",
        "blocks_desc": block_words_descriptor_type(block_n, block_g, leading_dims=1), "scales_ptr": "*u8",
        "bias_ptr": f"*{activation}", "out_ptr": f"*{activation}", "partials_ptr": "*fp32", "counters_ptr": "*i32",
        "hidden": "i32", "intermediate": "i32", "top_k": "i32", "scales_stride_e": "i32", "scales_stride_n": "i32",
        "BLOCK_N": "constexpr", "BLOCK_G": "constexpr", "NUM_STAGES": "constexpr", "INTERPRETED": "constexpr",
    }


@triton.jit
def down_combine_gemv_tma_kernel(
    act_ptr, expert_ids_ptr, routing_weights_ptr, blocks_desc, scales_ptr, bias_ptr, out_ptr, partials_ptr,
    counters_ptr, hidden, intermediate, top_k, scales_stride_e, scales_stride_n,
    BLOCK_N: tl.constexpr, BLOCK_G: tl.constexpr, NUM_STAGES: tl.constexpr, INTERPRETED: tl.constexpr,
):
    """The kernel above with the W2 words read by TMA (``moe_common.expert_rows_gemv_tma``; sm_90).
    ``blocks_desc``: ``launch.block_words_descriptor(w2_blocks, BLOCK_N, BLOCK_G)``."""
    pair = tl.program_id(0)
    feature_block = tl.program_id(1)
    token = pair // top_k
    expert = tl.load(expert_ids_ptr + pair)
    first_row = feature_block * BLOCK_N
    feature = first_row + tl.arange(0, BLOCK_N)
    w_row = tl.minimum(feature, hidden - 1)
    dot = expert_rows_gemv_tma(blocks_desc, scales_ptr, expert, first_row, w_row,
                               act_ptr + pair.to(tl.int64) * intermediate, intermediate, scales_stride_e,
                               scales_stride_n, BLOCK_N, BLOCK_G, NUM_STAGES)
    _combine(dot, pair, token, expert.to(tl.int64), feature_block, feature, w_row, routing_weights_ptr, bias_ptr,
             out_ptr, partials_ptr, counters_ptr, hidden, top_k, BLOCK_N, INTERPRETED)


@triton.jit
def _combine(dot, pair, token, expert, feature_block, feature, w_row, routing_weights_ptr, bias_ptr, out_ptr,
             partials_ptr, counters_ptr, hidden, top_k, BLOCK_N: tl.constexpr, INTERPRETED: tl.constexpr):
    """Bias and routing weight on a pair's ``[BLOCK_N]`` down projection (as ``moe_down`` writes it), then the
    combine: the k slots of a token are splitk's slices of one ``[1, BLOCK_N]`` output tile, and the last to arrive
    adds them in slot order starting from 0 (``moe_combine``'s order) and rounds once."""
    bias = tl.load(bias_ptr + expert * hidden + w_row).to(tl.float32)
    contribution = (dot + bias) * tl.load(routing_weights_ptr + pair)
    slot = pair - token * top_k
    tile = token * tl.num_programs(1) + feature_block
    finish_tile(contribution[None, :], out_ptr, out_ptr, partials_ptr, counters_ptr, tile, slot, top_k,
                token + tl.arange(0, 1), feature, token + 1, hidden, hidden, 1, False, 1, BLOCK_N, INTERPRETED)
