"""Decode-sized MoE GEMM 2 with the combine fused: ``out[t] = sum over slots of w[t, s] * (act[t*k+s] @ W2[e].T + b2[e])``.

Twin of ``mxfp4.reference.moe_down.down`` followed by ``mxfp4.reference.moe_combine.combine``. Program
``(feature block, token)`` owns ``BLOCK_N`` output features of one token and streams, in the same steps, the
``BLOCK_N`` W2 rows of each of the token's k experts: a ``[SLOTS, BLOCK_N, BLOCK_G, 16]`` byte tile per step
(128-bit loads, one MX block per thread), decoded byte by byte with integer bit moves (``moe_common.gemv_block_sums``;
the int32-word decode of ``moe_gate_up_gemv`` measured slower here, 23.8 vs 19.4 us at T = 1 on an H100: its
activation reshape over the extra slot axis costs shared-memory exchanges) and multiplied in float32 against the
slot's activation row (``moe_gate_up_gemv`` wrote it at row ``t * k + slot``). Streaming all k experts at once
gives each program k times the bytes in flight and the grid ``(ceil(H / BLOCK_N), T)`` enough programs at T = 1
(H = 2880, BLOCK_N = 4: 720 programs over 4 experts).

The epilogue computes each slot's contribution ``(dot + b2[e]) * w[t, s]`` in float32 and adds them in slot
order starting from 0 -- exactly ``moe_down``'s contributions summed by ``moe_combine`` -- then rounds once to
the output dtype. No atomics, no partial buffer, one launch instead of two; bitwise deterministic.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mxfp4.dispatch import triton_interpreter_enabled

from .moe_common import BLOCK_ELEMENTS, BYTES_PER_SCALE, SCALE_ONE, cast, gemv_block_sums


def down_combine_gemv(act, expert_ids, routing_weights, w2_blocks, w2_scales, b2, config, out_dtype):
    """``[T, H]`` in ``out_dtype``: each token's k down projections, weighted and summed in slot order.

    Args:
        act: ``[T * k, I]`` contiguous, row ``t * k + slot`` (``moe_gate_up_gemv``). expert_ids: ``int32 [T, k]``,
            routing_weights: ``float32 [T, k]``, both contiguous (``moe_routing.route``).
        w2_blocks: ``uint8 [E, H, G, 16]`` with contiguous ``[G, 16]`` rows; w2_scales: ``uint8 [E, H, G]`` with
            unit stride along G; b2: ``[E, H]`` contiguous. config: a :class:`mxfp4.triton_kernels.moe.GemvConfig`.

    >>> y = down_combine_gemv(act, ids, weights, w2.blocks, w2.scales, b2, GemvConfig(4, 16, 4), torch.bfloat16)
    """
    tokens, top_k = expert_ids.shape
    intermediate = act.shape[1]
    hidden = w2_blocks.shape[1]
    out = torch.empty((tokens, hidden), dtype=out_dtype, device=act.device)
    if tokens == 0:
        return out
    grid = (triton.cdiv(hidden, config.block_n), tokens)
    down_combine_gemv_kernel[grid](
        act, expert_ids, routing_weights, w2_blocks, w2_scales, b2, out,
        hidden, intermediate, top_k,
        w2_blocks.stride(0), w2_blocks.stride(1), w2_scales.stride(0), w2_scales.stride(1),
        SLOTS=slots(top_k), BLOCK_N=config.block_n, BLOCK_G=config.block_g, INTERPRETED=triton_interpreter_enabled(),
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    return out


def slots(top_k: int) -> int:
    """Slots held in one register tile: k rounded up to a power of two (padding slots are masked)."""
    return triton.next_power_of_2(max(int(top_k), 1))


#: Integer arguments that are multiples of 16 at GPT-OSS sizes (H = I = 2880), as Triton's launcher specializes them.
GPT_OSS_DIVISIBLE_BY_16 = ["hidden", "intermediate", "blocks_stride_e", "blocks_stride_n", "scales_stride_e"]
GPT_OSS_CONSTEXPRS = {"SLOTS": 4}  # top-4


def signature(activation: str, act: str) -> dict:
    return {
        "act_ptr": f"*{act}", "expert_ids_ptr": "*i32", "routing_weights_ptr": "*fp32",
        "blocks_ptr": "*u8", "scales_ptr": "*u8", "bias_ptr": f"*{activation}", "out_ptr": f"*{activation}",
        "hidden": "i32", "intermediate": "i32", "top_k": "i32",
        "blocks_stride_e": "i32", "blocks_stride_n": "i32", "scales_stride_e": "i32", "scales_stride_n": "i32",
        "SLOTS": "constexpr", "BLOCK_N": "constexpr", "BLOCK_G": "constexpr", "INTERPRETED": "constexpr",
    }


@triton.jit
def down_combine_gemv_kernel(
    act_ptr, expert_ids_ptr, routing_weights_ptr, blocks_ptr, scales_ptr, bias_ptr, out_ptr,
    hidden, intermediate, top_k,
    blocks_stride_e, blocks_stride_n, scales_stride_e, scales_stride_n,
    SLOTS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_G: tl.constexpr, INTERPRETED: tl.constexpr,
):
    token = tl.program_id(1)
    slot = tl.arange(0, SLOTS)
    pair = token * top_k + tl.minimum(slot, top_k - 1)  # padding slots alias the last real one, masked below
    expert = tl.load(expert_ids_ptr + pair).to(tl.int64)
    feature = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    w_row = tl.minimum(feature, hidden - 1)  # clamped: in bounds, never stored
    group = tl.arange(0, BLOCK_G)
    byte = tl.arange(0, BYTES_PER_SCALE)
    # [SLOTS, BLOCK_N, BLOCK_G, 16] bytes and [SLOTS, BLOCK_N, BLOCK_G] scales of step 0.
    row_blocks = blocks_ptr + expert[:, None] * blocks_stride_e + w_row[None, :] * blocks_stride_n
    block_ptrs = row_blocks[:, :, None, None] + (group[:, None] * BYTES_PER_SCALE + byte[None, :])[None, None, :, :]
    row_scales = scales_ptr + expert[:, None] * scales_stride_e + w_row[None, :] * scales_stride_n
    scale_ptrs = row_scales[:, :, None] + group[None, None, :]
    # [SLOTS, BLOCK_G, 32] activations of each step.
    act_ptrs = (act_ptr + pair.to(tl.int64)[:, None, None] * intermediate
                + (group[:, None] * BLOCK_ELEMENTS + tl.arange(0, BLOCK_ELEMENTS)[None, :])[None, :, :])

    num_groups = (intermediate + BLOCK_ELEMENTS - 1) // BLOCK_ELEMENTS
    full_groups = intermediate // BLOCK_ELEMENTS // BLOCK_G * BLOCK_G
    acc = tl.zeros((SLOTS, BLOCK_N, BLOCK_G), dtype=tl.float32)
    for g0 in range(0, full_groups, BLOCK_G):
        packed = tl.load(block_ptrs + g0 * BYTES_PER_SCALE)
        scale = tl.load(scale_ptrs + g0)
        a = tl.load(act_ptrs + g0 * BLOCK_ELEMENTS).to(tl.float32)
        a_even, a_odd = tl.split(tl.reshape(a, [SLOTS, BLOCK_G, BYTES_PER_SCALE, 2]))
        acc += gemv_block_sums(packed, scale, a_even[:, None, :, :], a_odd[:, None, :, :], 3)
    if full_groups < num_groups:  # at most one step: the remaining blocks, the last one maybe partial
        live = (full_groups + group < num_groups)[None, :]
        packed = tl.load(block_ptrs + full_groups * BYTES_PER_SCALE, mask=live[None, :, :, None], other=0)
        scale = tl.load(scale_ptrs + full_groups, mask=live[None, :, :], other=SCALE_ONE)
        element = full_groups * BLOCK_ELEMENTS + group[:, None] * BLOCK_ELEMENTS + tl.arange(0, BLOCK_ELEMENTS)[None, :]
        # Past I the activation is 0 and the unscaled code finite (|v| <= 6): those products are exactly 0.
        a = tl.load(act_ptrs + full_groups * BLOCK_ELEMENTS, mask=(element < intermediate)[None, :, :],
                    other=0.0).to(tl.float32)
        a_even, a_odd = tl.split(tl.reshape(a, [SLOTS, BLOCK_G, BYTES_PER_SCALE, 2]))
        acc += gemv_block_sums(packed, scale, a_even[:, None, :, :], a_odd[:, None, :, :], 3)

    bias = tl.load(bias_ptr + expert[:, None] * hidden + w_row[None, :]).to(tl.float32)
    weight = tl.load(routing_weights_ptr + pair)
    contribution = (tl.sum(acc, axis=2) + bias) * weight[:, None]  # [SLOTS, BLOCK_N], as moe_down writes them
    # moe_combine's order: 0 + slot 0 + slot 1 + ...; picking a row by a one-hot sum is exact (adds zeros).
    total = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for s in tl.static_range(SLOTS):
        if s < top_k:
            total += tl.sum(tl.where(slot[:, None] == s, contribution, 0.0), axis=0)
    tl.store(out_ptr + token.to(tl.int64) * hidden + feature, cast(total, out_ptr.dtype.element_ty, INTERPRETED),
             mask=feature < hidden)
