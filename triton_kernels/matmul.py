"""``y = a @ W.T (+ bias)`` with an MXFP4 weight ``W [N, K]``. Twin of ``mxfp4.reference.matmul``.

Two schedules, both reading the packed weight straight from its checkpoint layout (``blocks uint8 [N, G, 16]``,
``scales uint8 [N, G]``) and decoding it in registers, so the weight never exists in bf16 in global memory:

* GEMV (decode-sized M): a split-K stream over the weight. Program ``(n, s)`` owns ``BLOCK_N`` rows and the
  ``s``-th slice of K; every thread loads whole 16-byte MX blocks (one 128-bit load each, coalesced along the row),
  decodes them with integer bit moves and float32 FMAs on the CUDA cores, and multiplies the block's scale in once
  per 32 elements (the E8M0 scale is a power of two, so ``scale * sum(v * a) == sum(scale * v * a)`` up to
  over/underflow). Enough slices are launched to give every SM several programs even at N = 2880. The slices are
  reduced inside the same launch: each program writes its fp32 partial tile, bumps a per-tile counter, and the
  last to arrive sums all partials in split order (deterministic), adds the bias once and writes the output. The
  counters reset themselves, so the cached workspace needs no memset launch: one launch per call. On sm_90, for
  weights of at least ``TMA_GEMV_MIN_ELEMENTS``, the words are read by TMA into shared memory a few K steps ahead
  (``_mxfp4_gemv_tma_kernel``: Triton pipelines descriptor loads, not plain loads that feed no dot).
* Dequantize + cuBLAS (M >= ``DEQUANT_GEMM_MIN_M`` with 16-bit activations): the weight is decoded once into a
  ``[rows, K]`` buffer of a's dtype (``dequantize.py``, ~95% of copy bandwidth) and multiplied by torch's GEMM,
  in row chunks of at most ``DEQUANT_CHUNK_BYTES``. At that M the decode is a few percent of the GEMM (8192^2 at
  M = 2048: 64 of 420 us on H100), and cuBLAS's bf16 GEMM runs at ~720 TFLOP/s where the fused tiles below reach
  ~370 (the decode and one warpgroup's wgmma do not overlap there): 91% of torch bf16 instead of 52%.
* Tiled (large M, and M <= 16 with 16-bit activations where tensor cores beat CUDA-core FMAs):
  ``[BLOCK_M, BLOCK_N, BLOCK_K]`` tiles in grouped (swizzled) order for L2 reuse; the weight tile is decoded and
  scaled in registers right before ``tl.dot`` (Hopper has no FP4 tensor cores; compiled bf16 dots look the codes up
  as bf16 bytes and scale them in bf16, ``mx.decode_tile_bf16``), activations and packed bytes are
  software-pipelined (``num_stages``). The same split-K reduction fills the GPU when there are few output tiles.

Numerics: float32 accumulation everywhere; bias added in float32 in the epilogue; one rounding to ``a.dtype`` at the
end. ``hopper`` / ``bf16``: the dot's operands are the activation dtype (bf16 / fp16; decoded MXFP4 values are exact
in bf16), an fp32 ``a`` gets an exact fp32 dot (``input_precision="ieee"``). ``fp32`` (sm_75 and GPUs without
bf16): everything is upcast to float32, fp32 dot and accumulation, no 16-bit intermediate (GPT-OSS activations
overflow fp16). Elements past K contribute exactly 0 (activations masked to 0; weights there are finite before
their scale is applied, or explicitly zeroed), and nothing past the end of ``a``, ``blocks``, ``scales`` or
``bias`` is ever read.

The dequantize + cuBLAS schedule computes what torch's GEMM computes on the decoded weight (fp32 accumulation;
cuBLAS may use reduced-precision split-K reductions if ``torch.backends.cuda.matmul.allow_bf16/fp16_reduced_
precision_reduction`` allow it), with a bias of a's dtype added in the GEMM's epilogue before its one rounding.

Limits of the tiled and dequantize schedules, which decode each weight with its scale applied: the decoded value
``v * 2**(s-127)`` must fit the dot operand (fp32 / bf16: scale bytes <= 252; fp16: |w| <= 65504, i.e. scale bytes
<= 140, and values below 2**-24 flush to 0; on GPUs, bf16 tensor cores may also flush weights below 2**-126).
The GEMV applies the scale to 32-element block sums in fp32 and has none of these limits.

The workspace for split-K (fp32 partials and int32 counters) is cached per (device, stream), so concurrent calls
on different streams never share counters.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from mxfp4.dispatch import Backend, BackendUnavailableError, triton_interpreter_enabled
from mxfp4.spec import BLOCK_SIZE, BYTES_PER_BLOCK, num_blocks

from .dequantize import dequantize
from .launch import (TRITON_TYPES, block_words_descriptor, block_words_descriptor_type, current_stream,
                     reduction_workspace, sm_count, tma_readable, word_aligned)
from .splitk import SplitPolicy, finish_tile, split_k, split_range
from .mx import SCALE_ONE, WORDS_PER_BLOCK, decode_tile, gemv_step, gemv_tma_step

__all__ = ["matmul", "compile_specs", "GemvConfig", "TileConfig", "choose_plan", "uses_dequant_gemm"]

# --- the decode in the hot loops --------------------------------------------------------------------------------
# At decode-sized M the GEMV is memory-bound only if decoding costs about as much as the load (H100: ~24
# elements/clock/SM at 3 TB/s, i.e. ~5 issue slots per element), so the loops place E2M1 bits straight into a
# float32 (the GEMV: mx.word_block_sums on int32 words, ~3 integer ops per element; the tiles: mx.e2m1_low /
# e2m1_high on bytes) and apply each block's scale once, through mx.scale_factor (byte 0 is 2**-127 and byte 255
# is NaN, as everywhere else).
_BYTES_PER_BLOCK = tl.constexpr(BYTES_PER_BLOCK)
_BLOCK_SIZE = tl.constexpr(BLOCK_SIZE)


# --- GEMV / split-K schedule ---------------------------------------------------------------------------------------
@triton.jit
def _gemv_program(N, BLOCK_N: tl.constexpr):
    """``(pid_n, split, row, offs_n, w_rows)`` of a GEMV program on grid (cdiv(N, BLOCK_N), num_splits, M). Rows past
    N are clamped in ``w_rows``, which keeps every load in bounds without a mask; they are never stored."""
    pid_n = tl.program_id(0)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    return pid_n, tl.program_id(1), tl.program_id(2), offs_n, tl.minimum(offs_n, N - 1).to(tl.int64)


@triton.jit
def _gemv_finish(acc, pid_n, split, row, offs_n, out_ptr, bias_ptr, partials_ptr, counters_ptr, M, N, stride_om,
                 stride_on, HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr):
    """Reduce the ``[BLOCK_N, BLOCK_G]`` block sums over G and hand the row's tile to the split-K reduction."""
    tile = row * tl.num_programs(0) + pid_n
    finish_tile(tl.sum(acc, axis=1)[None, :], out_ptr, bias_ptr, partials_ptr, counters_ptr, tile, split,
                 tl.num_programs(1), row + tl.arange(0, 1), offs_n, M, N, stride_om, stride_on, HAS_BIAS, 1, BLOCK_N)


@triton.jit
def _mxfp4_gemv_kernel(
    a_ptr, blocks_ptr, scales_ptr, bias_ptr, out_ptr, partials_ptr, counters_ptr,
    M, N, K, num_groups, groups_per_split,
    stride_am, stride_ak, stride_bn, stride_sn, stride_sg, stride_om, stride_on,
    BLOCK_N: tl.constexpr, BLOCK_G: tl.constexpr, HAS_BIAS: tl.constexpr,
):
    """out[m, n] = sum_k a[m, k] * W[n, k] (+ bias[n]) for a [M, K], blocks [N, G, 16] (byte stride 1, block
    stride 16), scales [N, G]; grid (cdiv(N, BLOCK_N), num_splits, M): one activation row per program (the
    programs of the other rows read the same weight bytes from L2)."""
    # (The clamped rows also keep the weight loads unmasked, so they stay 128-bit.)
    pid_n, split, row, offs_n, w_rows = _gemv_program(N, BLOCK_N)
    offs_g = tl.arange(0, BLOCK_G)
    offs_word = tl.arange(0, WORDS_PER_BLOCK)
    # The packed bytes as little-endian int32 words, 4 per block (the launcher keeps rows 4-byte aligned).
    words_ptr = blocks_ptr.to(tl.pointer_type(tl.int32))
    w_ptrs = (words_ptr + w_rows[:, None, None] * (stride_bn // 4) + offs_g[None, :, None] * WORDS_PER_BLOCK
              + offs_word[None, None, :])
    s_ptrs = scales_ptr + w_rows[:, None] * stride_sn + offs_g[None, :] * stride_sg
    a_ptrs = (a_ptr + row.to(tl.int64) * stride_am
              + (offs_g[:, None] * _BLOCK_SIZE + tl.arange(0, _BLOCK_SIZE)[None, :]) * stride_ak)

    begin, end, full_end = split_range(split, groups_per_split, num_groups, K // _BLOCK_SIZE, BLOCK_G)
    acc = tl.zeros([BLOCK_N, BLOCK_G], dtype=tl.float32)
    # (Measured on H100 without gain: register double buffering of the next step's loads, and 10-25% fewer loop
    # instructions with the activations loaded in the words' layout. ncu: long-scoreboard stalls lead at 48%
    # achieved occupancy and 35% of DRAM peak -- too few bytes in flight, bench/RESULTS.md session 6. Nor does
    # a PTX prefetch.global.L2 of the steps ahead: 27.2 -> 35.2 us at 8192^2, session 9; not profiled,
    # presumably the extra requests compete for the memory-request slots the loads wait on.)
    for g0 in range(begin, full_end, BLOCK_G):
        acc = gemv_step(acc, g0, w_ptrs, s_ptrs, a_ptrs, K, end, stride_sg, stride_ak, False)
    if full_end < end:  # at most one step: the slice's remainder and the partial last block
        acc = gemv_step(acc, full_end, w_ptrs, s_ptrs, a_ptrs, K, end, stride_sg, stride_ak, True)
    _gemv_finish(acc, pid_n, split, row, offs_n, out_ptr, bias_ptr, partials_ptr, counters_ptr, M, N, stride_om,
                 stride_on, HAS_BIAS, BLOCK_N)


@triton.jit
def _mxfp4_gemv_tma_kernel(
    a_ptr, blocks_desc, scales_ptr, bias_ptr, out_ptr, partials_ptr, counters_ptr,
    M, N, K, num_groups, groups_per_split,
    stride_am, stride_ak, stride_bn, stride_sn, stride_sg, stride_om, stride_on,
    BLOCK_N: tl.constexpr, BLOCK_G: tl.constexpr, HAS_BIAS: tl.constexpr, NUM_STAGES: tl.constexpr,
):
    """The GEMV above with the weight words read by TMA (sm_90) into shared memory, ``NUM_STAGES - 1`` K steps
    ahead of the decode: Triton software-pipelines descriptor loads (it does not pipeline plain loads that feed
    no dot), so each program keeps several steps of weight bytes in flight without holding them in registers.
    ``blocks_desc``: ``launch.block_words_descriptor`` of the weight, ``[BLOCK_N, 4 * BLOCK_G]`` words per load;
    rows past N and words past the row read as 0 (never stored / times 0). Same decode, order of sums and split-K
    reduction as the register GEMV, so the two give the same bits for the same launch shape."""
    pid_n, split, row, offs_n, w_rows = _gemv_program(N, BLOCK_N)
    offs_g = tl.arange(0, BLOCK_G)
    s_ptrs = scales_ptr + w_rows[:, None] * stride_sn + offs_g[None, :] * stride_sg
    a_ptrs = (a_ptr + row.to(tl.int64) * stride_am
              + (offs_g[:, None] * _BLOCK_SIZE + tl.arange(0, _BLOCK_SIZE)[None, :]) * stride_ak)

    begin, end, _ = split_range(split, groups_per_split, num_groups, K // _BLOCK_SIZE, BLOCK_G)
    acc = tl.zeros([BLOCK_N, BLOCK_G], dtype=tl.float32)
    # One loop, every step masked (a slice may end inside a step): the masks cost a few instructions per block,
    # where a separate tail step would end the pipeline early.
    for g0 in tl.range(begin, end, BLOCK_G, num_stages=NUM_STAGES):
        words = blocks_desc.load([pid_n * BLOCK_N, g0 * WORDS_PER_BLOCK])
        acc = gemv_tma_step(acc, words, g0, s_ptrs, a_ptrs, K, end, stride_sg, stride_ak, True)
    _gemv_finish(acc, pid_n, split, row, offs_n, out_ptr, bias_ptr, partials_ptr, counters_ptr, M, N, stride_om,
                 stride_on, HAS_BIAS, BLOCK_N)


# --- tiled (tensor-core) schedule ------------------------------------------------------------------------------------
@triton.jit
def _tile_step(acc, g0, a_ptrs, w_ptrs, s_ptrs, offs_k, offs_g, K, g_end, stride_ak, stride_sg,
               MASKED: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, DOT_DTYPE: tl.constexpr,
               DOT_IN_FP32: tl.constexpr, TABLE_DECODE: tl.constexpr):
    """acc += a[:, k0:k0+BLOCK_K] @ W[:, k0:k0+BLOCK_K].T, the weight decoded in registers (k0 = 32 * g0)."""
    k = g0 * _BLOCK_SIZE + offs_k
    w_offs = g0 * _BYTES_PER_BLOCK + tl.arange(0, BLOCK_K // 2)
    if MASKED:
        a = tl.load(a_ptrs + k[None, :] * stride_ak, mask=(k < K)[None, :], other=0.0)
        packed = tl.load(w_ptrs + w_offs[None, :], mask=(w_offs < g_end * _BYTES_PER_BLOCK)[None, :], other=0)
        scale = tl.load(s_ptrs + (g0 + offs_g)[None, :] * stride_sg, mask=(g0 + offs_g < g_end)[None, :],
                        other=SCALE_ONE)
    else:
        a = tl.load(a_ptrs + k[None, :] * stride_ak)
        packed = tl.load(w_ptrs + w_offs[None, :])
        scale = tl.load(s_ptrs + (g0 + offs_g)[None, :] * stride_sg)
    w = decode_tile(packed, scale, BLOCK_N, BLOCK_K, TABLE_DECODE)
    if MASKED:  # past K a scaled weight may be Inf (huge scale) and Inf * 0 is NaN: zero it instead
        w = tl.where((k < K)[None, :], w, 0.0)
    a = a.to(DOT_DTYPE)
    w = w.to(DOT_DTYPE)
    if DOT_IN_FP32:  # the same products (16-bit operands are exact in fp32), for interpreters that lack the dtype
        a = a.to(tl.float32)
        w = w.to(tl.float32)
    return tl.dot(a, tl.trans(w), acc, input_precision="ieee")


@triton.jit
def _mxfp4_matmul_kernel(
    a_ptr, blocks_ptr, scales_ptr, bias_ptr, out_ptr, partials_ptr, counters_ptr,
    M, N, K, num_groups, groups_per_split,
    stride_am, stride_ak, stride_bn, stride_sn, stride_sg, stride_om, stride_on,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    HAS_BIAS: tl.constexpr, DOT_DTYPE: tl.constexpr, DOT_IN_FP32: tl.constexpr = False,
    TABLE_DECODE: tl.constexpr = False,
):
    """out = a @ W.T (+ bias) over [BLOCK_M, BLOCK_N] tiles; grid (tiles, num_splits). Layouts as the GEMV's."""
    pid = tl.program_id(0)
    split = tl.program_id(1)
    num_splits = tl.num_programs(1)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    # Grouped order: GROUP_M row-tiles share each weight column-tile while it is in L2.
    per_group = GROUP_M * num_pid_n
    first_m = (pid // per_group) * GROUP_M
    group_rows = tl.minimum(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % group_rows
    pid_n = (pid % per_group) // group_rows

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    offs_g = tl.arange(0, BLOCK_K // _BLOCK_SIZE)
    a_rows = tl.minimum(offs_m, M - 1)
    w_rows = tl.minimum(offs_n, N - 1)
    a_ptrs = a_ptr + a_rows.to(tl.int64)[:, None] * stride_am
    w_ptrs = blocks_ptr + w_rows.to(tl.int64)[:, None] * stride_bn
    s_ptrs = scales_ptr + w_rows.to(tl.int64)[:, None] * stride_sn

    begin, end, full_end = split_range(split, groups_per_split, num_groups, K // _BLOCK_SIZE,
                                         BLOCK_K // _BLOCK_SIZE)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for g0 in range(begin, full_end, BLOCK_K // _BLOCK_SIZE):
        acc = _tile_step(acc, g0, a_ptrs, w_ptrs, s_ptrs, offs_k, offs_g, K, end, stride_ak, stride_sg,
                         False, BLOCK_N, BLOCK_K, DOT_DTYPE, DOT_IN_FP32, TABLE_DECODE)
    if full_end < end:
        acc = _tile_step(acc, full_end, a_ptrs, w_ptrs, s_ptrs, offs_k, offs_g, K, end, stride_ak, stride_sg,
                         True, BLOCK_N, BLOCK_K, DOT_DTYPE, DOT_IN_FP32, TABLE_DECODE)
    finish_tile(acc, out_ptr, bias_ptr, partials_ptr, counters_ptr, pid, split, num_splits, offs_m, offs_n,
                 M, N, stride_om, stride_on, HAS_BIAS, BLOCK_M, BLOCK_N)


# --- configs ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GemvConfig:
    """One GEMV launch shape: weight rows per program, MX blocks per K step, warps."""

    block_n: int
    block_g: int
    num_warps: int
    num_stages: int = 1
    why: str = ""


@dataclass(frozen=True)
class TileConfig:
    """One tiled launch shape (``block_k`` a multiple of 32)."""

    block_m: int
    block_n: int
    block_k: int
    num_warps: int
    num_stages: int
    group_m: int = 8
    why: str = ""


# A hand-written table by shape class rather than triton.autotune: decode latency is a few microseconds, so the
# launcher must not time configs on a first call, re-key per M, or synchronize; the table is looked up once per
# (path, M, N, K, dtype) and cached. Each entry says why it exists. Measured on an H100 (Triton 3.6, CUDA-graph
# replay, weights rotated through > L2): the numbers quoted are M=1 / M=16 times for 2880^2, 5760x2880, 8192^2,
# 28672x8192 and TFLOP/s at M=4096.
GEMV_CONFIG = GemvConfig(
    block_n=64, block_g=4, num_warps=4,
    why="per step 64 rows x 4 blocks = 4 KB per program, each thread two 16-byte blocks (128-bit loads) and 32 "
        "activations reused over both rows; ~60 registers leave room for 8+ programs per SM, which the decode "
        "needs to hide its dependent integer/FMA chains. M=1: 8.2 / 11.2 / 28.7 / 79.7 us. Also tried: 32x8, "
        "64x8, 128x4 (8 warps), 64x16, 32x16, num_stages=2, register double-buffering: 2-35% slower",
)

# sm_90, weights of at least TMA_GEMV_MIN_ELEMENTS: the weight words read by TMA, 3 stages (_mxfp4_gemv_tma_kernel).
# Session 10 probe, M=1, CUDA graphs (bench/RESULTS.md): 8192^2 27.6 -> 24.7 us, 28672x8192 79.9 -> 65.3; at
# 5760x2880 every TMA shape was slower (10.7 -> 11.4..13.7), so smaller weights keep the register GEMV.
TMA_GEMV_CONFIG = GemvConfig(
    block_n=64, block_g=8, num_warps=4, num_stages=3,
    why="8 KB of words per step, 2 steps in flight per program. Also tried: 64x4 (3, 4, 6 stages), 64x8x4 stages, "
        "128x4, 128x4 8 warps, 32x8, 8 programs per SM: 64x8x3 was best on both large shapes",
)
TMA_GEMV_MIN_ELEMENTS = 32 << 20

TILE_CONFIGS = {
    # 2 <= M <= 16 with 16-bit activations: one 16-row MMA tile (mma.sync) and split-K; the weight is still read
    # once per call, and the per-row multiply-adds move from the CUDA cores to the tensor cores (the GEMV with
    # one program per row costs M times the decode: 2.3x slower at M=2). M=16 with the table decode
    # (session 5): 13.8 / 30.2 / 80.6 us for 5760x2880 / 8192^2 / 28672x8192 (float32 decode: 15.0 / 35.2 / 96.6).
    # Also tried: 16x128x128, 16x64x256, 16x32x128, 16x64x64, 8 warps, and the decoded weight as the wgmma
    # register operand (swap AB): within 5%.
    "small_m": TileConfig(block_m=16, block_n=64, block_k=128, num_warps=4, num_stages=3, group_m=1,
                          why="decode M 2..16: mma over 16 rows, weight streamed once"),
    # 16 < M <= 128: 64-row tiles (one wgmma warpgroup), split-K when there are few of them.
    "mid_m": TileConfig(block_m=64, block_n=128, block_k=64, num_warps=4, num_stages=4,
                        why="prefill-sized M: 64-row tiles"),
    # Large M on sm_90: two warpgroups on 128x128 wgmma tiles, cp.async pipelined 4 deep. 383 TFLOP/s at
    # 4096x8192x8192 (torch bf16: 740); 128x256, 256x128, 128x128x128, 4 warps, 64x128 and swap-AB all within 2%:
    # the decode and the wgmma of one warpgroup do not overlap, which tile shapes cannot fix.
    "large_m_hopper": TileConfig(block_m=128, block_n=128, block_k=64, num_warps=8, num_stages=4,
                                 why="M>128 on sm_90: wgmma, 128x128"),
    # Large M on sm_80..89: mma.sync tiles sized for 100-164 KB of shared memory.
    "large_m_bf16": TileConfig(block_m=128, block_n=128, block_k=64, num_warps=8, num_stages=3,
                               why="M>128 on sm_80-89"),
    # fp32 dots (the fp32 path, fp32 activations) run on FMAs: small tiles keep the operands in registers
    # (sm_75 has 64 KB of shared memory); ~7 TFLOP/s on H100, a correctness path.
    "fp32": TileConfig(block_m=32, block_n=64, block_k=32, num_warps=4, num_stages=2, why="fp32 ieee dot"),
}

# Under TRITON_INTERPRET=1 every program runs in NumPy: small tiles keep CI fast while still exercising split-K,
# several K steps and the masked tail.
INTERPRETER_GEMV = GemvConfig(block_n=16, block_g=2, num_warps=4, why="interpreter")
INTERPRETER_TMA_GEMV = GemvConfig(block_n=16, block_g=2, num_warps=4, num_stages=2, why="interpreter")
INTERPRETER_TILE = TileConfig(block_m=16, block_n=32, block_k=64, num_warps=4, num_stages=1, group_m=2,
                              why="interpreter")

# Rows of a up to which the GEMV (CUDA cores) streams the weight, for 16-bit activations on tensor-core paths ...
GEMV_MAX_M = 1
# ... and when the dot would be an fp32 FMA dot anyway (fp32 path, fp32 activations): one program per row, the
# weight re-read from L2 by the other rows' programs.
GEMV_MAX_M_FP32 = 16
# Up to this many rows a 16-row tensor-core tile streams the weight once.
SMALL_M_MAX = 16
# From this many rows of 16-bit activations (hopper / bf16 paths) the weight is dequantized once and multiplied by
# cuBLAS. H100, M = 256 / 512 (us, fused tiles vs dequantize + cuBLAS): 8192^2 148 / 223 vs 125 / 154,
# 28672x8192 386 / 692 vs 407 / 513, 5760x2880 65 / 90 vs 72 / 65 (bench/RESULTS.md, session 4).
DEQUANT_GEMM_MIN_M = 512
# The decoded weight is made in row chunks of at most this many bytes (one chunk up to 16384 x 8192 bf16).
DEQUANT_CHUNK_BYTES = 256 << 20
_DEQUANT_DTYPES = (torch.bfloat16, torch.float16)


# GEMV: many short programs (16 per SM, slices of >= 1 step) hide DRAM latency best at N = 2880..28672 (M=1,
# vs 4 per SM / 2 steps: -7% at 8192^2, -10% at 28672x8192). Tiles: 4 per SM and >= 2 steps (8 per SM / 1 step:
# +5..15%, the partial tiles are 16x64 floats).
GEMV_SPLIT = SplitPolicy(programs_per_sm=16, min_steps=1)
TILE_SPLIT = SplitPolicy(programs_per_sm=4, min_steps=2)


@dataclass(frozen=True)
class Plan:
    """Everything a launch needs besides the tensors: computed once per (path, M, N, K, dtype, device)."""

    kernel: object
    grid: tuple
    groups_per_split: int
    constexprs: tuple
    num_warps: int
    num_stages: int
    partial_elems: int
    tiles: int
    tma_block: tuple | None = None  # (rows, MX blocks) of one TMA load of the weight, for the TMA GEMV


def _dot_dtype(backend: Backend, dtype: torch.dtype):
    if backend is Backend.FP32 or dtype == torch.float32:
        return tl.float32
    return tl.bfloat16 if dtype == torch.bfloat16 else tl.float16


def choose_plan(backend: Backend, M: int, N: int, K: int, dtype: torch.dtype, num_sms: int,
                schedule: str | None = None, interpreted: bool = False, tma: bool = False) -> Plan:
    """The launch for one shape (cached by the caller). ``schedule``: None (auto), "gemv", "gemv_tma" (sm_90: the
    hopper path, and ``tma``: the weight is ``launch.tma_readable``) or "tiled"."""
    num_groups = num_blocks(K)
    dot_dtype = _dot_dtype(backend, dtype)
    if schedule is None:
        gemv_rows = GEMV_MAX_M_FP32 if dot_dtype == tl.float32 else GEMV_MAX_M
        schedule = "gemv" if M <= gemv_rows else "tiled"
        if schedule == "gemv" and backend is Backend.HOPPER and tma and N * K >= TMA_GEMV_MIN_ELEMENTS:
            schedule = "gemv_tma"
    if schedule == "gemv_tma" and (backend is not Backend.HOPPER or not tma):
        raise ValueError("the gemv_tma schedule needs the hopper path (TMA is sm_90's) and a weight TMA can read "
                         "(16-byte aligned base and row stride, a Triton with tensor descriptors)")
    if schedule in ("gemv", "gemv_tma"):
        if schedule == "gemv":
            cfg = INTERPRETER_GEMV if interpreted else GEMV_CONFIG
        else:
            cfg = INTERPRETER_TMA_GEMV if interpreted else TMA_GEMV_CONFIG
        tiles = triton.cdiv(N, cfg.block_n) * M
        splits, per_split = split_k(tiles, num_groups, cfg.block_g, num_sms, GEMV_SPLIT)
        return Plan(
            kernel=_mxfp4_gemv_kernel if schedule == "gemv" else _mxfp4_gemv_tma_kernel,
            grid=(triton.cdiv(N, cfg.block_n), splits, M), groups_per_split=per_split,
            constexprs=(("BLOCK_N", cfg.block_n), ("BLOCK_G", cfg.block_g))
            + ((("NUM_STAGES", cfg.num_stages),) if schedule == "gemv_tma" else ()),
            num_warps=cfg.num_warps, num_stages=cfg.num_stages,
            partial_elems=splits * tiles * cfg.block_n if splits > 1 else 0, tiles=tiles if splits > 1 else 0,
            tma_block=(cfg.block_n, cfg.block_g) if schedule == "gemv_tma" else None,
        )
    if schedule != "tiled":
        raise ValueError(f"unknown schedule {schedule!r}; expected 'gemv', 'gemv_tma' or 'tiled'")
    if interpreted:
        cfg = INTERPRETER_TILE
    elif dot_dtype == tl.float32:
        cfg = TILE_CONFIGS["fp32"]
    elif M <= SMALL_M_MAX:
        cfg = TILE_CONFIGS["small_m"]
    elif M <= 128:
        cfg = TILE_CONFIGS["mid_m"]
    else:
        cfg = TILE_CONFIGS["large_m_hopper" if backend is Backend.HOPPER else "large_m_bf16"]
    tiles = triton.cdiv(M, cfg.block_m) * triton.cdiv(N, cfg.block_n)
    splits, per_split = split_k(tiles, num_groups, cfg.block_k // BLOCK_SIZE, num_sms, TILE_SPLIT)
    return Plan(
        kernel=_mxfp4_matmul_kernel, grid=(tiles, splits, 1), groups_per_split=per_split,
        constexprs=(("BLOCK_M", cfg.block_m), ("BLOCK_N", cfg.block_n), ("BLOCK_K", cfg.block_k),
                    ("GROUP_M", cfg.group_m), ("DOT_DTYPE", dot_dtype))
        # Triton 3.9's interpreter multiplies bf16 dot operands as their raw uint16 bits ...
        + ((("DOT_IN_FP32", True),) if interpreted and dot_dtype == tl.bfloat16 else ())
        # ... and cannot run inline PTX: compiled bf16 dots decode by table lookup (mx.decode_tile_bf16).
        + ((("TABLE_DECODE", True),) if not interpreted and dot_dtype == tl.bfloat16 else ()),
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        partial_elems=splits * tiles * cfg.block_m * cfg.block_n if splits > 1 else 0,
        tiles=tiles if splits > 1 else 0,
    )


@functools.lru_cache(maxsize=4096)
def _cached_plan(backend, M, N, K, dtype, device_index, schedule, interpreted, tma):
    # Under the interpreter there is no SM count: pretend 2 SMs so that small test shapes still split K.
    num_sms = 2 if interpreted else sm_count(device_index)
    return choose_plan(backend, M, N, K, dtype, num_sms, schedule, interpreted, tma)


def _weight_operand(plan: Plan, blocks: torch.Tensor):
    """What the kernel reads the weight through: the packed bytes, or (TMA GEMV) a descriptor over them."""
    return blocks if plan.tma_block is None else block_words_descriptor(blocks, *plan.tma_block)


_WORKSPACES: dict = {}
_INT32_LIMIT = 2**31


def _workspace(device: torch.device, stream: int, partial_elems: int, tiles: int):
    """fp32 partials and self-resetting int32 counters for split-K (``launch.reduction_workspace``)."""
    return reduction_workspace(_WORKSPACES, device, stream, partial_elems, tiles)


@dataclass
class _Launch:
    """A cached launch for one (shape, dtypes, strides, alignment) key: after the first call goes through
    ``JITFunction.run`` (which compiles and specializes), later calls hand the same arguments straight to the
    compiled kernel, skipping ~15-30 us of argument binding and specialization per call on the host."""

    plan: Plan
    tail: tuple  # constexpr values in signature order, as the compiled launcher expects them
    compiled: object = None


_LAUNCHES: dict = {}
_FAST_LAUNCH = True  # turned off for good if this Triton's CompiledKernel does not take the call below


def _launch(plan: Plan, args: tuple, constexprs: dict, record: _Launch | None, device_index: int, stream: int):
    global _FAST_LAUNCH
    if record is not None and record.compiled is not None and _FAST_LAUNCH:
        kernel = record.compiled
        try:
            kernel.run(*plan.grid, stream, kernel.function, kernel.packed_metadata, None, None, None,
                       *args, *record.tail)
            return
        except (TypeError, AttributeError, ValueError):  # a Triton whose launcher differs: use the JIT path
            _FAST_LAUNCH = False
    compiled = plan.kernel[plan.grid](*args, num_warps=plan.num_warps, num_stages=plan.num_stages, **constexprs)
    if record is not None and hasattr(compiled, "packed_metadata") and hasattr(compiled, "function"):
        record.compiled = compiled


def uses_dequant_gemm(backend: Backend, M: int, dtype: torch.dtype, bias: torch.Tensor | None) -> bool:
    """Whether the automatic choice multiplies a decoded copy of the weight with cuBLAS (see the module docstring):
    large M, 16-bit activations on a tensor-core path, and no bias or one of a's dtype (added in the GEMM)."""
    return (Backend(backend) in (Backend.HOPPER, Backend.BF16) and dtype in _DEQUANT_DTYPES
            and M >= DEQUANT_GEMM_MIN_M and (bias is None or bias.dtype == dtype))


def _dequant_gemm(a, blocks, scales, bias, K, backend, out):
    """out = a @ dequantize(W).T (+ bias), W decoded to a's dtype in chunks of rows and multiplied by torch.mm."""
    N = blocks.shape[0]
    rows = min(N, max(1, DEQUANT_CHUNK_BYTES // (K * a.element_size())))
    decoded = torch.empty((rows, K), dtype=a.dtype, device=a.device)
    for n0 in range(0, N, rows):
        n1 = min(N, n0 + rows)
        w = dequantize(blocks[n0:n1], scales[n0:n1], a.dtype, K, backend, out=decoded[: n1 - n0])
        if bias is None:
            torch.mm(a, w.T, out=out[:, n0:n1])
        else:
            torch.addmm(bias[n0:n1], a, w.T, out=out[:, n0:n1])
    return out


def matmul(a: torch.Tensor, blocks: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None,
           backend: Backend, *, _schedule: str | None = None, _out: torch.Tensor | None = None) -> torch.Tensor:
    """``a @ W.T (+ bias)`` for an MXFP4 weight W ``[N, K]`` quantized along K; float32 accumulation.

    Args:
        a: ``[M, K]`` bfloat16 / float16 / float32, any strides (``mxfp4.ops.matmul`` reshapes to 2-D).
        blocks: ``uint8 [N, G, 16]`` (``G = ceil(K / 32)``), element 2i of each byte in the low nibble; a view
            with byte stride 1 and block stride 16 is used in place (e.g. one expert of a checkpoint tensor).
        scales: ``uint8 [N, G]`` E8M0 bytes, any strides.
        bias: ``[N]`` float tensor or None; added in float32.
        backend: ``Backend.HOPPER`` / ``BF16`` / ``FP32`` (see the module docstring for what each computes in).
        _schedule: private, for tests: force ``"gemv"``, ``"tiled"`` or ``"dequant"`` (the last needs no bias or
            one of a's dtype).
        _out: private, for tests: a contiguous ``[M, N]`` tensor of a's dtype to write into (e.g. NaN-filled).

    Returns:
        ``[M, N]`` in ``a.dtype`` on ``a.device``.

    >>> w = mxfp4.quantize(torch.randn(5760, 2880, device="cuda"))
    >>> matmul(torch.randn(1, 2880, device="cuda", dtype=torch.bfloat16), w.blocks, w.scales, None, Backend.HOPPER).shape
    torch.Size([1, 5760])
    """
    M, K = a.shape
    N, G = scales.shape
    if blocks.shape != (N, G, BYTES_PER_BLOCK) or G != num_blocks(K):
        raise ValueError(f"matmul: blocks {tuple(blocks.shape)} / scales {tuple(scales.shape)} do not hold a weight "
                         f"[N, {K}] (expected [N, {num_blocks(K)}, {BYTES_PER_BLOCK}] and [N, {num_blocks(K)}])")
    if blocks.stride(2) != 1 or blocks.stride(1) != BYTES_PER_BLOCK:
        blocks = blocks.contiguous()  # the kernels read each block as 16 contiguous bytes
    # Offsets along K are 32-bit in the kernels (rows are 64-bit): copy views whose K strides would overflow them.
    if (K - 1) * abs(a.stride(1)) >= _INT32_LIMIT:
        a = a.contiguous()
    if (G - 1) * abs(scales.stride(1)) >= _INT32_LIMIT:
        scales = scales.contiguous()
    if bias is not None and bias.dtype != a.dtype and bias.dtype != torch.float32:
        bias = bias.float()  # the kernels take bias in a's dtype or fp32 (the variants compiled for those)
    if _out is None:
        out = torch.empty((M, N), dtype=a.dtype, device=a.device)
    else:
        if _out.shape != (M, N) or _out.dtype != a.dtype or not _out.is_contiguous() or _out.device != a.device:
            raise ValueError(f"_out must be a contiguous [{M}, {N}] {a.dtype} tensor on {a.device}")
        out = _out
    if M == 0 or N == 0:
        return out
    if not a.is_cuda and not triton_interpreter_enabled():
        raise BackendUnavailableError(
            f"the {Backend(backend).value!r} matmul runs Triton kernels and a is on {a.device}: set "
            "TRITON_INTERPRET=1 before importing mxfp4, or use backend='torch'")
    if _schedule == "dequant" or (_schedule is None and uses_dequant_gemm(backend, M, a.dtype, bias)):
        if bias is not None and bias.dtype != a.dtype:
            raise ValueError(f"the dequant schedule adds the bias inside the GEMM: it takes a bias of a's dtype "
                             f"({a.dtype}) or none, got {bias.dtype}")
        return _dequant_gemm(a, blocks, scales, bias, K, Backend(backend), out)
    blocks = word_aligned(blocks)  # the GEMV reads them as four int32 words (the dequantize kernel reads bytes)
    a_strides, block_strides, scale_strides = a.stride(), blocks.stride(), scales.stride()
    args = (a, blocks, scales, out if bias is None else bias, out, None, None, M, N, K, G, 0,
            a_strides[0], a_strides[1], block_strides[0], scale_strides[0], scale_strides[1], N, 1)

    if not a.is_cuda:
        plan = _cached_plan(Backend(backend), M, N, K, a.dtype, -1, _schedule, True, tma_readable(blocks))
        partials, counters = _workspace(a.device, 0, plan.partial_elems, plan.tiles)
        args = ((a, _weight_operand(plan, blocks)) + args[2:5] + (partials, counters) + args[7:11]
                + (plan.groups_per_split,) + args[12:])
        _launch(plan, args, dict(plan.constexprs, HAS_BIAS=bias is not None), None, -1, 0)
        return out

    device_index = a.get_device()
    # The JIT specializes pointers on 16-byte alignment and ints on ==1 / %16: the key holds what decides that, and
    # with it whether TMA can read the weight (its alignment and strides), so a cached launch needs no recheck.
    aligned = ((a.data_ptr() | blocks.data_ptr() | scales.data_ptr() | (0 if bias is None else bias.data_ptr()))
               & 15) == 0
    key = (backend, _schedule, a.dtype, None if bias is None else bias.dtype, M, N, K, a_strides, block_strides,
           scale_strides, device_index, aligned)
    record = _LAUNCHES.get(key)
    if record is None:
        plan = _cached_plan(Backend(backend), M, N, K, a.dtype, device_index, _schedule, False, tma_readable(blocks))
        constexprs = dict(plan.constexprs, HAS_BIAS=bias is not None)
        tail = tuple(constexprs.get(name, param.default) for name, param in _constexpr_params(plan.kernel))
        record = _Launch(plan, tail)
        if aligned:  # misaligned views are rare: they always take the JIT path, which specializes per call
            _LAUNCHES[key] = record
    plan = record.plan
    stream = current_stream(device_index)
    partials, counters = _workspace(a.device, stream, plan.partial_elems, plan.tiles)
    args = ((a, _weight_operand(plan, blocks)) + args[2:5] + (partials, counters) + args[7:11]
            + (plan.groups_per_split,) + args[12:])
    _launch(plan, args, dict(plan.constexprs, HAS_BIAS=bias is not None), record if aligned else None,
            device_index, stream)
    return out


@functools.lru_cache(maxsize=None)
def _constexpr_params(kernel):
    """(name, inspect.Parameter) of the kernel's constexpr arguments, in signature order."""
    import inspect

    params = inspect.signature(kernel.fn).parameters
    return tuple((name, p) for name, p in params.items() if name in _CONSTEXPR_NAMES)


_CONSTEXPR_NAMES = ("BLOCK_M", "BLOCK_N", "BLOCK_G", "BLOCK_K", "GROUP_M", "HAS_BIAS", "DOT_DTYPE", "DOT_IN_FP32",
                    "TABLE_DECODE", "NUM_STAGES")


# --- ahead-of-time compile list -------------------------------------------------------------------------------------
_INT_ARGS = ("M", "N", "K", "num_groups", "groups_per_split", "stride_am", "stride_ak", "stride_bn", "stride_sn",
             "stride_sg", "stride_om", "stride_on")
# The strides that are 1 for contiguous a, scales and out: the JIT specializes an int argument equal to 1 into a
# constant, which is what lets it vectorize and pipeline those loads; the AOT list compiles the same variant.
_UNIT_STRIDES = ("stride_ak", "stride_sg", "stride_on")
_DIVISIBLE_ALWAYS = ("stride_bn",)
_DIVISIBLE_CONTIGUOUS = ("N", "K", "stride_am", "stride_om")


def _signature(plan: Plan, a_sig: str, bias_sig: str, unit_strides: bool) -> dict:
    kernel = plan.kernel
    if plan.tma_block is None:
        weight = {"blocks_ptr": "*u8"}
    else:
        weight = {"blocks_desc": block_words_descriptor_type(*plan.tma_block)}
    sig = {
        "a_ptr": f"*{a_sig}", **weight, "scales_ptr": "*u8", "bias_ptr": f"*{bias_sig}",
        "out_ptr": f"*{a_sig}", "partials_ptr": "*fp32", "counters_ptr": "*i32",
    }
    for name in _INT_ARGS:
        sig[name] = "constexpr" if unit_strides and name in _UNIT_STRIDES else "i32"
    for name in kernel.arg_names[len(sig):]:
        sig[name] = "constexpr"
    return sig


def compile_specs(backend: Backend, exhaustive: bool = False) -> list[dict]:
    """The kernel variants ``backend`` can launch, for ahead-of-time compilation checks (``triton.compile``).

    Each: ``{"name", "fn", "signature", "constexprs", "num_warps", "num_stages"}``. Covers every schedule (the TMA
    GEMV on hopper) and every table config the path dispatches to (or a forced schedule reaches), for each activation
    dtype the path accepts,
    with bias in a's dtype (the GPT-OSS case; the bias branch is a superset of the no-bias code); plus, per kernel,
    one variant with no bias and one with an fp32 bias and non-unit strides (non-contiguous a). ``exhaustive``:
    every (config, dtype) with each bias kind, and a strided variant of each (~3x as many, for a full GPU run).
    """
    backend = Backend(backend)
    specs = []
    extras_done = set()
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        a_sig = TRITON_TYPES[dtype]
        plans = {}
        # One representative shape per table entry the dispatcher (or a forced schedule) can reach.
        schedules = ("gemv", "gemv_tma", "tiled") if backend is Backend.HOPPER else ("gemv", "tiled")
        for M in (1, 3, 16, 64, 1024):
            for schedule in schedules:
                plan = choose_plan(backend, M, 4096, 4096, dtype, 132, schedule, tma=True)
                plans.setdefault(plan.constexprs + (plan.num_warps, plan.num_stages, plan.kernel.__name__), plan)
        for plan in plans.values():
            if exhaustive:
                variants = [(bias, True) for bias in sorted({None, a_sig, "fp32"}, key=str)] + [(None, False)]
            else:
                variants = [(a_sig, True)]
                if plan.kernel not in extras_done:
                    extras_done.add(plan.kernel)
                    variants += [(None, True), ("fp32", False)]
            for bias_sig, unit in variants:
                specs.append(_spec(plan, a_sig, bias_sig, unit))
    return specs


def _spec(plan: Plan, a_sig: str, bias_sig: str | None, unit_strides: bool) -> dict:
    constexprs = dict(plan.constexprs, HAS_BIAS=bias_sig is not None)
    if unit_strides:
        constexprs.update({name: 1 for name in _UNIT_STRIDES})
    name = "_".join(
        [plan.kernel.__name__.strip("_"), a_sig, f"bias_{bias_sig or 'none'}"]
        + [f"{k.lower()}{_constexpr_label(v)}" for k, v in plan.constexprs]
        + [f"w{plan.num_warps}", f"s{plan.num_stages}"] + ([] if unit_strides else ["strided"])
    )
    return {
        "name": name, "fn": plan.kernel, "signature": _signature(plan, a_sig, bias_sig or a_sig, unit_strides),
        "constexprs": constexprs, "num_warps": plan.num_warps, "num_stages": plan.num_stages,
        # A block row is always 16-byte aligned; contiguous GPT-OSS / 8192 shapes make these multiples of 16 too.
        "divisible_by_16": list(_DIVISIBLE_ALWAYS + (_DIVISIBLE_CONTIGUOUS if unit_strides else ())),
    }


def _constexpr_label(value) -> str:
    return str(value).replace("triton.language.", "").replace("tl.", "")
