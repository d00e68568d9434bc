"""Pieces shared by the MoE kernels: the tile -> expert map of the grouped GEMMs, the MXFP4 decodes (the weight
tile of a tensor-core step; the weight stream of the decode GEMVs), SwiGLU, the bf16 dot, grid sizes.

Not a kernel: host helpers and ``@triton.jit`` device functions that the MoE kernels inline.

MXFP4 decode. The inner loops decode every weight element (at prefill, once per row tile), so their integer
work bounds them. Compiled bf16 tiles look the codes up as bf16 (``mx.decode_tile_bf16``); elsewhere
``mx.e2m1_low`` / ``e2m1_high`` (from the sign-extended byte) place the E2M1 bits straight into a float32 and
``mx.scale_factor`` uses the scale byte as float32's exponent field: exactly the values of ``mx.decode_mxfp4``
(tests/test_moe.py checks all 256 bytes x 256 scale bytes bitwise) at ~4 operations per element instead of ~27.
The GEMVs decode int32 words (``mx.word_block_sums``, in ``expert_rows_gemv``).

Grouped GEMM schedule. Rows are the (token, slot) pairs sorted by expert (``moe_sort``): expert e owns sorted rows
``[offset[e], offset[e] + count[e])``. Its rows are cut into ``ceil(count[e] / BLOCK_M)`` tiles, and the tiles of all
experts are numbered one after the other. The launch grid is fixed by sizes known on the host without reading the
counts -- at most ``ceil(pairs / BLOCK_M) + min(E, pairs)`` tiles exist -- and programs past the last real tile
exit at once. So no ``.item()``, no host sync: the whole MoE can be captured in a CUDA graph.
"""

from __future__ import annotations

import triton
import triton.language as tl

from mxfp4.spec import BYTES_PER_BLOCK

from .mx import SCALE_ONE, WORDS_PER_BLOCK, decode_tile, gemv_step, gemv_tma_step

BYTES_PER_SCALE = tl.constexpr(BYTES_PER_BLOCK)


def next_power_of_2_at_least(n: int, minimum: int) -> int:
    return max(minimum, triton.next_power_of_2(max(int(n), 1)))


def max_tiles(pairs: int, num_experts: int, block_m: int) -> int:
    """Upper bound on the grouped GEMM's row tiles: each non-empty expert wastes at most one partial tile."""
    return triton.cdiv(pairs, block_m) + min(num_experts, pairs)


@triton.jit
def expert_tile(counts_ptr, num_experts, tile, BLOCK_M: tl.constexpr, BLOCK_E: tl.constexpr):
    """Which expert row tile ``tile`` belongs to: ``(expert, first sorted row, valid rows)``.

    ``valid rows <= 0`` means the tile is past the last real one (the program has nothing to do). Empty experts
    own no tiles. Each program recomputes the prefix sums over the E counts: E <= a few hundred, cheaper than a
    launch.
    """
    expert_ids = tl.arange(0, BLOCK_E)
    counts = tl.load(counts_ptr + expert_ids, mask=expert_ids < num_experts, other=0)
    tiles = (counts + BLOCK_M - 1) // BLOCK_M
    tiles_end = tl.cumsum(tiles, axis=0)
    rows_end = tl.cumsum(counts, axis=0)
    # Experts whose tiles all end at or before this tile come before it.
    expert = tl.sum((tiles_end <= tile).to(tl.int32), axis=0)
    mine = expert_ids == expert
    first_tile = tl.sum(tl.where(mine, tiles_end - tiles, 0), axis=0)
    first_row_of_expert = tl.sum(tl.where(mine, rows_end - counts, 0), axis=0)
    count = tl.sum(tl.where(mine, counts, 0), axis=0)
    local = (tile - first_tile) * BLOCK_M
    return expert, first_row_of_expert + local, count - local


BLOCK_ELEMENTS = tl.constexpr(2 * BYTES_PER_BLOCK)


@triton.jit
def load_mxfp4_tile(blocks_ptr, scales_ptr, row, g0, num_groups, length, blocks_stride_n, scales_stride_n,
                    ROWS: tl.constexpr, BLOCK_K: tl.constexpr, MASKED: tl.constexpr, TABLE_DECODE: tl.constexpr):
    """``[ROWS, BLOCK_K]`` float32 (bf16 with ``TABLE_DECODE``): ``W[row, 32*g0 : 32*g0 + BLOCK_K]`` in natural
    K order, exactly (``TABLE_DECODE``: compiled bf16 dots decode by table lookup, ``mx.decode_tile_bf16``, exact
    wherever the weight is a normal bf16).

    The operand of one ``tl.dot`` per K step (tensor-core GEMMs): each row's ``BLOCK_K / 2`` bytes are one
    contiguous (vectorized) load, the two nibbles of a byte are decoded and put side by side again
    (``tl.join`` + ``tl.reshape``: elements 2i, 2i + 1), and each 32-element block is multiplied by its scale
    (exact: a power of two, unless the product leaves float32's range as it would in the reference).
    ``row`` must be in range (callers clamp it). ``MASKED`` (the last K step only): blocks past ``num_groups``
    read as 0, and elements past ``length`` are zeroed after scaling -- a huge scale times a padding code can be
    Inf there, and Inf * 0 from the masked activation would be NaN.
    """
    GROUPS: tl.constexpr = BLOCK_K // BLOCK_ELEMENTS
    byte = g0 * BYTES_PER_SCALE + tl.arange(0, BLOCK_K // 2)
    group = g0 + tl.arange(0, GROUPS)
    row_bytes = blocks_ptr + row[:, None] * blocks_stride_n
    row_scales = scales_ptr + row[:, None] * scales_stride_n
    if MASKED:
        packed = tl.load(row_bytes + byte[None, :], mask=(byte < num_groups * BYTES_PER_SCALE)[None, :], other=0)
        scale = tl.load(row_scales + group[None, :], mask=(group < num_groups)[None, :], other=SCALE_ONE)
    else:
        packed = tl.load(row_bytes + byte[None, :])
        scale = tl.load(row_scales + group[None, :])
    w = decode_tile(packed, scale, ROWS, BLOCK_K, TABLE_DECODE)
    if MASKED:
        element = g0 * BLOCK_ELEMENTS + tl.arange(0, BLOCK_K)
        w = tl.where((element < length)[None, :], w, 0.0)
    return w


@triton.jit
def expert_rows_gemv(blocks_ptr, scales_ptr, expert, w_row, x_row_ptr, length, blocks_stride_e, blocks_stride_n,
                     scales_stride_e, scales_stride_n, ROWS: tl.constexpr, BLOCK_G: tl.constexpr):
    """``[ROWS]`` float32: ``W[expert][w_row, :length] @ x[:length]`` for one activation row, as a weight stream on
    the CUDA cores (the decode GEMVs ``moe_gate_up_gemv`` / ``moe_down_gemv``).

    ``w_row`` ``[ROWS]`` in range (callers clamp it); ``x_row_ptr`` the row's first element (unit stride). Each step
    reads ``BLOCK_G`` whole MX blocks per row: each thread one 16-byte block as int32 words (a 128-bit load; the
    launcher keeps rows 4-byte aligned), decoded with integer bit moves (``mx.gemv_step``), multiplied in float32
    against the step's ``[BLOCK_G, 32]`` activations, each block's scale applied once to its sum. Steps of whole
    blocks inside ``length`` run unmasked; the last step masks blocks past the row and activations past ``length``
    (to 0: the unscaled code is finite, |v| <= 6, so those products are exactly 0).
    """
    group = tl.arange(0, BLOCK_G)
    word = tl.arange(0, WORDS_PER_BLOCK)
    words_ptr = blocks_ptr.to(tl.pointer_type(tl.int32))
    block_ptrs = (words_ptr + expert * (blocks_stride_e // 4) + w_row[:, None, None] * (blocks_stride_n // 4)
                  + group[None, :, None] * WORDS_PER_BLOCK + word[None, None, :])
    scale_ptrs = scales_ptr + expert * scales_stride_e + w_row[:, None] * scales_stride_n + group[None, :]
    x_ptrs = x_row_ptr + group[:, None] * BLOCK_ELEMENTS + tl.arange(0, BLOCK_ELEMENTS)[None, :]

    num_groups = (length + BLOCK_ELEMENTS - 1) // BLOCK_ELEMENTS
    full_groups = length // BLOCK_ELEMENTS // BLOCK_G * BLOCK_G
    acc = tl.zeros((ROWS, BLOCK_G), dtype=tl.float32)
    for g0 in range(0, full_groups, BLOCK_G):
        acc = gemv_step(acc, g0, block_ptrs, scale_ptrs, x_ptrs, length, num_groups, 1, 1, False)
    if full_groups < num_groups:  # at most one step: the remaining blocks, the last one maybe partial
        acc = gemv_step(acc, full_groups, block_ptrs, scale_ptrs, x_ptrs, length, num_groups, 1, 1, True)
    return tl.sum(acc, axis=1)


@triton.jit
def expert_rows_gemv_tma(blocks_desc, scales_ptr, expert, first_row, w_row, x_row_ptr, length, scales_stride_e,
                         scales_stride_n, ROWS: tl.constexpr, BLOCK_G: tl.constexpr, NUM_STAGES: tl.constexpr):
    """``expert_rows_gemv`` with the words read by TMA (sm_90), ``NUM_STAGES - 1`` steps ahead of the decode: Triton
    pipelines descriptor loads, not plain loads that feed no dot. ``blocks_desc``: ``launch.block_words_descriptor``
    of the experts' rows (``[E, R, 4G]`` words, ``[1, ROWS, 4 * BLOCK_G]`` per load; rows past R and words past the
    row read as 0, never another expert's); ``first_row`` the first of the ``ROWS`` rows, ``w_row`` those rows
    clamped into range (for the scales). Same products and order of sums as ``expert_rows_gemv``."""
    group = tl.arange(0, BLOCK_G)
    num_groups = (length + BLOCK_ELEMENTS - 1) // BLOCK_ELEMENTS
    scale_ptrs = scales_ptr + expert.to(tl.int64) * scales_stride_e + w_row[:, None] * scales_stride_n + group[None, :]
    x_ptrs = x_row_ptr + group[:, None] * BLOCK_ELEMENTS + tl.arange(0, BLOCK_ELEMENTS)[None, :]
    acc = tl.zeros((ROWS, BLOCK_G), dtype=tl.float32)
    for g0 in tl.range(0, num_groups, BLOCK_G, num_stages=NUM_STAGES):
        words = tl.reshape(blocks_desc.load([expert, first_row, g0 * WORDS_PER_BLOCK]),
                           [ROWS, BLOCK_G * WORDS_PER_BLOCK])
        acc = gemv_tma_step(acc, words, g0, scale_ptrs, x_ptrs, length, num_groups, 1, 1, False)
    return tl.sum(acc, axis=1)


@triton.jit
def swiglu(gate, up, alpha, limit):
    """GPT-OSS SwiGLU of float32 gate / up pre-activations (bias included): ``(up + 1) * gate * sigmoid(alpha * gate)``
    after clamping the gate from above and up on both sides. Written as selects so NaN propagates as in torch."""
    gate = tl.where(gate > limit, limit, gate)
    up = tl.where(up > limit, limit, tl.where(up < -limit, -limit, up))
    return (up + 1.0) * (gate / (1.0 + tl.exp(-alpha * gate)))


@triton.jit
def round_to_bf16(x):
    """float32 -> the nearest bfloat16 value (ties to even), still as float32; NaN stays NaN, overflow gives Inf.

    Only for the interpreter, whose float32 -> bf16 cast truncates (triton 3.9): the compiled cast already
    rounds to nearest even. Integer arithmetic on the bits: add half an ulp of bf16 (plus the tie-to-even bit),
    drop the low 16 bits.
    """
    bits = x.to(tl.int32, bitcast=True)
    rounded = bits + 0x7FFF + ((bits >> 16) & 1)
    rounded = (rounded >> 16) << 16
    return tl.where(x != x, x, rounded.to(tl.float32, bitcast=True))


@triton.jit
def cast(x, dtype: tl.constexpr, INTERPRETED: tl.constexpr):
    """``x.to(dtype)`` rounding to nearest even, also under the interpreter (see ``round_to_bf16``)."""
    if INTERPRETED and dtype == tl.bfloat16:
        out = round_to_bf16(x.to(tl.float32)).to(dtype)
    else:
        out = x.to(dtype)
    return out


@triton.jit
def dot_accumulate_nt(a, w, acc, FP32_DOT: tl.constexpr, INTERPRETED: tl.constexpr):
    """``acc + a @ w.T`` for ``w [N, K]`` (the decoded weight tile in its natural row-major order); operands as
    IEEE float32 on the fp32 path, bf16 tensor-core operands otherwise. The cast comes before the transpose so
    that the tensor-core operand is staged as bf16.

    Under TRITON_INTERPRET the interpreter stores bf16 as raw uint16 and ``tl.dot`` multiplies those integers
    (triton 3.9), so there the operands are rounded to bf16 but kept in float32 -- exact, since a product of two
    bf16 values fits float32 -- which is what the tensor cores compute, up to summation order.
    """
    if FP32_DOT:
        out = tl.dot(a.to(tl.float32), tl.trans(w.to(tl.float32)), acc, input_precision="ieee")
    elif INTERPRETED:
        out = tl.dot(round_to_bf16(a.to(tl.float32)), tl.trans(round_to_bf16(w.to(tl.float32))), acc,
                     input_precision="ieee")
    else:
        out = tl.dot(a.to(tl.bfloat16), tl.trans(w.to(tl.bfloat16)), acc)
    return out


@triton.jit
def expert_rows_dot(a_rows, stride_ak, expert_blocks, expert_scales, w_row, length, blocks_stride_n,
                    scales_stride_n, BLOCK_M: tl.constexpr, ROWS: tl.constexpr, BLOCK_K: tl.constexpr,
                    FP32_DOT: tl.constexpr, INTERPRETED: tl.constexpr):
    """``[BLOCK_M, ROWS]`` float32: ``a[:, :length] @ W[w_row, :length].T`` for one expert's MXFP4 rows ``w_row``.

    ``a_rows``: ``[BLOCK_M, 1]`` pointers to the activation rows (K stride ``stride_ak``); ``expert_blocks`` /
    ``expert_scales``: the expert's packed bytes and scales. Steps of ``BLOCK_K`` elements with every element inside
    ``length`` run unmasked; the last, partial step masks the activations past ``length`` to 0 (and
    ``load_mxfp4_tile`` zeroes the weights there).
    """
    GROUPS: tl.constexpr = BLOCK_K // BLOCK_ELEMENTS
    # The interpreter cannot run inline PTX; the fp32 path keeps float32 operands.
    TABLE_DECODE: tl.constexpr = not FP32_DOT and not INTERPRETED
    num_groups = (length + BLOCK_ELEMENTS - 1) // BLOCK_ELEMENTS
    full_groups = length // BLOCK_K * GROUPS
    acc = tl.zeros((BLOCK_M, ROWS), dtype=tl.float32)
    for g0 in range(0, full_groups, GROUPS):
        k = g0 * BLOCK_ELEMENTS + tl.arange(0, BLOCK_K)
        a = tl.load(a_rows + k[None, :] * stride_ak)
        w = load_mxfp4_tile(expert_blocks, expert_scales, w_row, g0, num_groups, length, blocks_stride_n,
                            scales_stride_n, ROWS, BLOCK_K, False, TABLE_DECODE)
        acc = dot_accumulate_nt(a, w, acc, FP32_DOT, INTERPRETED)
    if full_groups < num_groups:
        k = full_groups * BLOCK_ELEMENTS + tl.arange(0, BLOCK_K)
        a = tl.load(a_rows + k[None, :] * stride_ak, mask=(k < length)[None, :], other=0.0)
        w = load_mxfp4_tile(expert_blocks, expert_scales, w_row, full_groups, num_groups, length, blocks_stride_n,
                            scales_stride_n, ROWS, BLOCK_K, True, TABLE_DECODE)
        acc = dot_accumulate_nt(a, w, acc, FP32_DOT, INTERPRETED)
    return acc
