"""Grouped MXFP4 GEMM 2 of the MoE: ``weight * (act @ W2[e].T + b2[e])`` for every expert in one launch.

Twin of ``mxfp4.reference.moe_down.down``. Same tile -> expert schedule as ``moe_gate_up``; the input rows are the
SwiGLU activations in sorted order (contiguous per expert). The epilogue adds the bias, multiplies by the pair's
routing weight and writes the row back in token-major pair order (row ``t * k + slot``), float32, so that
``moe_combine`` sums each token's k contributions in slot order: deterministic, no atomics. As in ``moe_gate_up``,
each K step decodes one ``[BLOCK_N, BLOCK_K]`` weight tile in natural K order and issues one ``tl.dot``.
Decode-sized batches use ``moe_down_gemv`` (combine fused) instead.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mxfp4.dispatch import triton_interpreter_enabled

from .moe_common import expert_rows_dot, expert_tile, max_tiles


def down(act, sorted_pairs, counts, routing_weights, w2_blocks, w2_scales, b2, config):
    """``contributions float32 [P, H]``: row ``t * k + slot`` = weight * (act row @ W2[e].T + b2[e]).

    Args:
        act: ``[P, I]`` contiguous, rows in sorted order (``moe_gate_up``). sorted_pairs / counts: ``moe_sort``.
        routing_weights: ``float32 [T, k]`` contiguous. w2_blocks: ``uint8 [E, H, G, 16]`` (contiguous ``[G, 16]``
            rows); w2_scales: ``uint8 [E, H, G]``; b2: ``[E, H]`` contiguous.
    """
    pairs, intermediate = act.shape
    num_experts, hidden = w2_blocks.shape[0], w2_blocks.shape[1]
    contributions = torch.empty((pairs, hidden), dtype=torch.float32, device=act.device)
    grid = (max_tiles(pairs, num_experts, config.block_m), triton.cdiv(hidden, config.block_n))
    down_kernel[grid](
        act, sorted_pairs, counts, routing_weights, w2_blocks, w2_scales, b2, contributions,
        hidden, intermediate, num_experts,
        w2_blocks.stride(0), w2_blocks.stride(1), w2_scales.stride(0), w2_scales.stride(1),
        BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k, BLOCK_E=config.block_e,
        FP32_DOT=config.fp32_dot, INTERPRETED=triton_interpreter_enabled(),
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    return contributions


#: Integer arguments that are multiples of 16 at GPT-OSS sizes (H = I = 2880, E = 32 / 128, 90 blocks per row).
GPT_OSS_DIVISIBLE_BY_16 = ["hidden", "intermediate", "num_experts", "blocks_stride_e", "blocks_stride_n",
                           "scales_stride_e"]
GPT_OSS_CONSTEXPRS: dict = {}


def signature(activation: str, act: str) -> dict:
    return {
        "act_ptr": f"*{act}", "sorted_pairs_ptr": "*i32", "counts_ptr": "*i32", "routing_weights_ptr": "*fp32",
        "blocks_ptr": "*u8", "scales_ptr": "*u8", "bias_ptr": f"*{activation}", "out_ptr": "*fp32",
        "hidden": "i32", "intermediate": "i32", "num_experts": "i32",
        "blocks_stride_e": "i32", "blocks_stride_n": "i32", "scales_stride_e": "i32", "scales_stride_n": "i32",
        "BLOCK_M": "constexpr", "BLOCK_N": "constexpr", "BLOCK_K": "constexpr", "BLOCK_E": "constexpr",
        "FP32_DOT": "constexpr", "INTERPRETED": "constexpr",
    }


@triton.jit
def down_kernel(
    act_ptr, sorted_pairs_ptr, counts_ptr, routing_weights_ptr, blocks_ptr, scales_ptr, bias_ptr, out_ptr,
    hidden, intermediate, num_experts,
    blocks_stride_e, blocks_stride_n, scales_stride_e, scales_stride_n,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_E: tl.constexpr,
    FP32_DOT: tl.constexpr, INTERPRETED: tl.constexpr,
):
    expert, first_row, rows = expert_tile(counts_ptr, num_experts, tl.program_id(0), BLOCK_M, BLOCK_E)
    if rows <= 0:
        return
    local_row = tl.arange(0, BLOCK_M)
    row_ok = local_row < rows
    sorted_row = first_row + tl.minimum(local_row, rows - 1)  # clamped: unmasked loads, never stored
    pair = tl.load(sorted_pairs_ptr + sorted_row)

    feature = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    feature_ok = feature < hidden
    w_row = tl.minimum(feature, hidden - 1)
    expert_blocks = blocks_ptr + expert.to(tl.int64) * blocks_stride_e
    expert_scales = scales_ptr + expert.to(tl.int64) * scales_stride_e
    act_rows = act_ptr + sorted_row.to(tl.int64)[:, None] * intermediate

    acc = expert_rows_dot(act_rows, 1, expert_blocks, expert_scales, w_row, intermediate, blocks_stride_n,
                          scales_stride_n, BLOCK_M, BLOCK_N, BLOCK_K, FP32_DOT, INTERPRETED)

    acc += tl.load(bias_ptr + expert.to(tl.int64) * hidden + w_row).to(tl.float32)[None, :]
    weight = tl.load(routing_weights_ptr + pair)
    out = out_ptr + pair.to(tl.int64)[:, None] * hidden + feature[None, :]
    tl.store(out, acc * weight[:, None], mask=row_ok[:, None] & feature_ok[None, :])
