"""Split-K across programs, shared by the GEMV-shaped kernels (``matmul``, ``dense_gemv``). Not a kernel.

A decode-sized GEMM has too few output tiles to fill a GPU, so K is cut into slices, one program per (tile, slice).
The slices are reduced inside the same launch, deterministically: each program writes its float32 partial tile,
bumps a per-tile counter, and the last to arrive sums every partial in slice order, adds the bias once and writes
the output. The counters reset themselves, so the cached workspace (``launch.reduction_workspace``) needs no
memset launch and a CUDA graph can replay the launch.
"""

from __future__ import annotations

from dataclasses import dataclass

import triton
import triton.language as tl

from .moe_common import cast


@dataclass(frozen=True)
class SplitPolicy:
    """How many K slices: enough programs per SM to keep loads in flight, each slice at least a few K steps."""

    programs_per_sm: int
    min_steps: int


def split_k(tiles: int, units: int, step_units: int, num_sms: int, policy: SplitPolicy) -> tuple[int, int]:
    """``(num_splits, units_per_split)`` giving ~``policy.programs_per_sm`` programs per SM and no empty slice.

    ``units`` counts K in whatever a kernel steps over (MX blocks, elements); each slice is a whole number of
    ``step_units`` steps, except the last.
    """
    want = max(1, -(-policy.programs_per_sm * num_sms // tiles))
    most = max(1, units // (step_units * policy.min_steps))
    splits = min(want, most)
    per_split = -(-units // splits)
    per_split = -(-per_split // step_units) * step_units
    return -(-units // per_split), per_split


@triton.jit
def split_range(split, units_per_split, num_units, whole_units, STEP: tl.constexpr):
    """This slice's units ``[begin, end)`` and where its unmasked steps of ``STEP`` units stop: every unit before
    ``full_end`` is below ``whole_units`` (the units with no element past K), so those steps need no mask."""
    begin = split * units_per_split
    end = tl.minimum(begin + units_per_split, num_units)
    whole = tl.minimum(end, whole_units)
    full_end = begin + tl.maximum(whole - begin, 0) // STEP * STEP
    return begin, end, full_end


@triton.jit
def store_tile(acc, out_ptr, bias_ptr, offs_m, offs_n, M, N, stride_om, stride_on, HAS_BIAS: tl.constexpr,
               INTERPRETED: tl.constexpr = False):
    """acc (fp32 [BLOCK_M, BLOCK_N]) + bias (in fp32) -> out in out's dtype, rows < M and columns < N only;
    ``INTERPRETED``: round to bf16 explicitly (the interpreter's cast truncates)."""
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)
        acc = acc + bias[None, :]
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    ptrs = out_ptr + offs_m.to(tl.int64)[:, None] * stride_om + offs_n[None, :] * stride_on
    tl.store(ptrs, cast(acc, out_ptr.dtype.element_ty, INTERPRETED), mask=mask)


@triton.jit
def finish_tile(acc, out_ptr, bias_ptr, partials_ptr, counters_ptr, tile, split, num_splits, offs_m, offs_n,
                M, N, stride_om, stride_on, HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                INTERPRETED: tl.constexpr = False):
    """Store a finished tile, or (split-K) publish this slice's partial and let the last slice reduce them all."""
    if num_splits == 1:
        store_tile(acc, out_ptr, bias_ptr, offs_m, offs_n, M, N, stride_om, stride_on, HAS_BIAS, INTERPRETED)
    else:
        local = tl.arange(0, BLOCK_M)[:, None] * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]
        live = (offs_m[:, None] < M) & (offs_n[None, :] < N)
        tile_partials = partials_ptr + tile * num_splits * (BLOCK_M * BLOCK_N)
        tl.store(tile_partials + split * (BLOCK_M * BLOCK_N) + local, acc, mask=live)
        # Every thread's partial must be written before the counter says so; acq_rel at gpu scope publishes them
        # to the program that arrives last and makes that program see all the others.
        tl.debug_barrier()
        arrived = tl.atomic_add(counters_ptr + tile, 1, sem="acq_rel", scope="gpu")
        if arrived == num_splits - 1:
            total = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
            for s in range(0, num_splits):  # fixed order: the result does not depend on who finished first
                total += tl.load(tile_partials + s * (BLOCK_M * BLOCK_N) + local, mask=live, other=0.0,
                                 cache_modifier=".cg")
            tl.atomic_xchg(counters_ptr + tile, 0)  # ready for the next launch: no memset between calls
            store_tile(total, out_ptr, bias_ptr, offs_m, offs_n, M, N, stride_om, stride_on, HAS_BIAS, INTERPRETED)
