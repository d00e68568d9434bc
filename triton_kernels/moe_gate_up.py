"""Grouped MXFP4 GEMM 1 of the MoE: ``x @ W1[e].T + b1[e]`` for every expert in one launch, GPT-OSS SwiGLU fused.

Twin of ``mxfp4.reference.moe_gate_up.gate_up_swiglu``. Rows are the (token, slot) pairs sorted by expert; a
program owns ``BLOCK_M`` rows of one expert (``moe_common.expert_tile``) and ``BLOCK_N`` activation features, i.e.
the ``2 * BLOCK_N`` consecutive interleaved W1 rows ``2j`` (gate) and ``2j + 1`` (up). Each K step decodes that
``[2 * BLOCK_N, BLOCK_K]`` weight tile once, in natural K order (``moe_common.load_mxfp4_tile``), and issues ONE
``tl.dot`` against the ``[BLOCK_M, BLOCK_K]`` activations (wgmma on sm_90, mma.sync on sm_80-89); the accumulator's
columns alternate gate / up, so the epilogue splits them in registers and writes
``(up + 1) * gate * sigmoid(alpha * gate)`` directly -- the ``[rows, 2I]`` pre-activation never reaches memory.
MXFP4 values are exact in bf16, so the hopper / bf16 paths' tensor-core operands round only the activations.
Decode-sized batches use ``moe_gate_up_gemv`` instead.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mxfp4.dispatch import triton_interpreter_enabled

from .moe_common import cast, expert_rows_dot, expert_tile, max_tiles, swiglu


def gate_up_swiglu(x, sorted_pairs, counts, top_k, w1_blocks, w1_scales, b1, alpha, limit, config, act_dtype):
    """``act [P, I]`` in ``act_dtype``, row r = SwiGLU of token ``sorted_pairs[r] // top_k`` through its expert.

    Args:
        x: ``[T, H]`` activations (any strides). sorted_pairs: ``int32 [P]``; counts: ``int32 [E]`` (``moe_sort``).
        w1_blocks: ``uint8 [E, 2I, G, 16]`` with contiguous ``[G, 16]`` rows; w1_scales: ``uint8 [E, 2I, G]``.
        b1: ``[E, 2I]`` contiguous. config: a :class:`mxfp4.triton_kernels.moe.GemmConfig`.
        act_dtype: torch.bfloat16 (tensor-core paths) or torch.float32 (fp32 path).
    """
    hidden = x.shape[1]
    num_experts, two_i = w1_blocks.shape[0], w1_blocks.shape[1]
    intermediate = two_i // 2
    pairs = sorted_pairs.numel()
    act = torch.empty((pairs, intermediate), dtype=act_dtype, device=x.device)
    grid = (max_tiles(pairs, num_experts, config.block_m), triton.cdiv(intermediate, config.block_n))
    gate_up_swiglu_kernel[grid](
        x, sorted_pairs, counts, w1_blocks, w1_scales, b1, act,
        hidden, intermediate, num_experts, top_k,
        x.stride(0), x.stride(1),
        w1_blocks.stride(0), w1_blocks.stride(1), w1_scales.stride(0), w1_scales.stride(1),
        alpha, limit,
        BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k, BLOCK_E=config.block_e,
        FP32_DOT=config.fp32_dot, INTERPRETED=triton_interpreter_enabled(),
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    return act


#: Integer arguments that are multiples of 16 at GPT-OSS sizes (H = I = 2880, E = 32 / 128, 90 blocks per row),
#: as Triton's launcher specializes them; ``stride_xh`` is 1 (contiguous activations) and specialized to a constexpr.
GPT_OSS_DIVISIBLE_BY_16 = ["hidden", "intermediate", "num_experts", "stride_xt", "blocks_stride_e", "blocks_stride_n",
                           "scales_stride_e"]
GPT_OSS_CONSTEXPRS = {"stride_xh": 1}


def signature(activation: str, act: str) -> dict:
    return {
        "x_ptr": f"*{activation}", "sorted_pairs_ptr": "*i32", "counts_ptr": "*i32",
        "blocks_ptr": "*u8", "scales_ptr": "*u8", "bias_ptr": f"*{activation}", "act_ptr": f"*{act}",
        "hidden": "i32", "intermediate": "i32", "num_experts": "i32", "top_k": "i32",
        "stride_xt": "i32", "stride_xh": "constexpr",
        "blocks_stride_e": "i32", "blocks_stride_n": "i32", "scales_stride_e": "i32", "scales_stride_n": "i32",
        "alpha": "fp32", "limit": "fp32",
        "BLOCK_M": "constexpr", "BLOCK_N": "constexpr", "BLOCK_K": "constexpr", "BLOCK_E": "constexpr",
        "FP32_DOT": "constexpr", "INTERPRETED": "constexpr",
    }


@triton.jit
def gate_up_swiglu_kernel(
    x_ptr, sorted_pairs_ptr, counts_ptr, blocks_ptr, scales_ptr, bias_ptr, act_ptr,
    hidden, intermediate, num_experts, top_k,
    stride_xt, stride_xh,
    blocks_stride_e, blocks_stride_n, scales_stride_e, scales_stride_n,
    alpha, limit,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_E: tl.constexpr,
    FP32_DOT: tl.constexpr, INTERPRETED: tl.constexpr,
):
    expert, first_row, rows = expert_tile(counts_ptr, num_experts, tl.program_id(0), BLOCK_M, BLOCK_E)
    if rows <= 0:
        return
    local_row = tl.arange(0, BLOCK_M)
    row_ok = local_row < rows
    # Rows past the tile's end are clamped onto its last row: every load stays in bounds without a mask (so the
    # activation loads stay vectorized); their results are never stored.
    sorted_row = first_row + tl.minimum(local_row, rows - 1)
    token = tl.load(sorted_pairs_ptr + sorted_row) // top_k

    feature = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    feature_ok = feature < intermediate
    # W1 rows 2j (gate) and 2j + 1 (up) of this program's features: 2 * BLOCK_N consecutive rows, clamped.
    w_row = tl.minimum(2 * tl.program_id(1) * BLOCK_N + tl.arange(0, 2 * BLOCK_N), 2 * intermediate - 1)
    expert_blocks = blocks_ptr + expert.to(tl.int64) * blocks_stride_e
    expert_scales = scales_ptr + expert.to(tl.int64) * scales_stride_e
    x_rows = x_ptr + token.to(tl.int64)[:, None] * stride_xt

    acc = expert_rows_dot(x_rows, stride_xh, expert_blocks, expert_scales, w_row, hidden, blocks_stride_n,
                          scales_stride_n, BLOCK_M, 2 * BLOCK_N, BLOCK_K, FP32_DOT, INTERPRETED)

    acc += tl.load(bias_ptr + expert.to(tl.int64) * (2 * intermediate) + w_row).to(tl.float32)[None, :]
    gate, up = tl.split(tl.reshape(acc, [BLOCK_M, BLOCK_N, 2]))
    act = swiglu(gate, up, alpha, limit)
    out = act_ptr + sorted_row.to(tl.int64)[:, None] * intermediate + feature[None, :]
    tl.store(out, cast(act, act_ptr.dtype.element_ty, INTERPRETED), mask=row_ok[:, None] & feature_ok[None, :])
