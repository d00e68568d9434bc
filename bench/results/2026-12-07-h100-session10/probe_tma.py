"""Session 10 probe, from the repository root: the M=1 GEMV with its weight stream loaded by TMA (a host-side
TensorDescriptor over the packed words) in a loop Triton software-pipelines ``NUM_STAGES`` deep, so each program
keeps several K steps of weight bytes in flight (session 6's ncu: the register-load GEMV waits on memory with too
few bytes in flight, and Triton does not pipeline plain loads that feed no dot). Same decode (mx.word_block_sums)
and split-K reduction as matmul.py's GEMV. Checks the result equals the library GEMV's, then times both and torch
bf16 F.linear (CUDA graphs, weights rotated past L2). ``--check``: correctness only (CPU interpreter works)."""
import os
import sys

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

import mxfp4
from mxfp4.dispatch import Backend
from mxfp4.triton_kernels import matmul as mm
from mxfp4.triton_kernels.launch import reduction_workspace, sm_count
from mxfp4.triton_kernels.mx import WORDS_PER_BLOCK, word_block_sums
from mxfp4.triton_kernels.splitk import SplitPolicy, finish_tile, split_k, split_range

_BLOCK_SIZE = tl.constexpr(32)


@triton.jit
def gemv_tma_kernel(a_ptr, w_desc, scales_ptr, out_ptr, partials_ptr, counters_ptr, N, K, num_groups,
                    groups_per_split, stride_sn, BLOCK_N: tl.constexpr, BLOCK_G: tl.constexpr,
                    NUM_STAGES: tl.constexpr):
    pid_n = tl.program_id(0)
    split = tl.program_id(1)
    num_splits = tl.num_programs(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    w_rows = tl.minimum(offs_n, N - 1).to(tl.int64)
    offs_g = tl.arange(0, BLOCK_G)
    s_ptrs = scales_ptr + w_rows[:, None] * stride_sn + offs_g[None, :]
    a_ptrs = a_ptr + offs_g[:, None] * _BLOCK_SIZE + tl.arange(0, _BLOCK_SIZE)[None, :]
    begin, end, full_end = split_range(split, groups_per_split, num_groups, K // _BLOCK_SIZE, BLOCK_G)
    acc = tl.zeros([BLOCK_N, BLOCK_G], dtype=tl.float32)
    for g0 in tl.range(begin, end, BLOCK_G, num_stages=NUM_STAGES):
        # TMA zero-fills rows past N and words past the row; blocks past this slice are masked below.
        words = w_desc.load([pid_n * BLOCK_N, g0 * WORDS_PER_BLOCK])
        words = tl.reshape(words, [BLOCK_N, BLOCK_G, WORDS_PER_BLOCK])
        live = g0 + offs_g < end
        scale = tl.load(s_ptrs + g0, mask=live[None, :], other=127)
        element = (g0 + offs_g)[:, None] * _BLOCK_SIZE + tl.arange(0, _BLOCK_SIZE)[None, :]
        x = tl.load(a_ptrs + g0 * _BLOCK_SIZE, mask=live[:, None] & (element < K), other=0.0)
        words = tl.where(live[None, :, None], words, 0)
        x = tl.reshape(x.to(tl.float32), [1, BLOCK_G, WORDS_PER_BLOCK, 2, 2, 2])
        acc += word_block_sums(words, scale, x, 2)
    finish_tile(tl.sum(acc, axis=1)[None, :], out_ptr, out_ptr, partials_ptr, counters_ptr, pid_n, split,
                num_splits, tl.arange(0, 1), offs_n, 1, N, N, 1, False, 1, BLOCK_N)


_WS = {}


def gemv_tma(a, w, block_n=64, block_g=4, num_warps=4, num_stages=3, programs_per_sm=16, _cache={}):
    """a [1, K] bf16, w an MXFP4Tensor [N, K]: a @ W.T in bf16."""
    N, G = w.scales.shape
    K = a.shape[1]
    key = (id(w), block_n, block_g)
    desc = _cache.get(key)
    if desc is None:
        words = w.blocks.view(torch.int32).reshape(N, G * int(WORDS_PER_BLOCK))
        desc = _cache[key] = (TensorDescriptor.from_tensor(words, [block_n, block_g * int(WORDS_PER_BLOCK)]), words)
    num_sms = sm_count(a.get_device()) if a.is_cuda else 2
    tiles = triton.cdiv(N, block_n)
    splits, per_split = split_k(tiles, G, block_g, num_sms, SplitPolicy(programs_per_sm, 1))
    partials, counters = reduction_workspace(_WS, a.device, 0, splits * tiles * block_n if splits > 1 else 0,
                                             tiles if splits > 1 else 0)
    out = torch.empty((1, N), dtype=a.dtype, device=a.device)
    gemv_tma_kernel[(tiles, splits)](a, desc[0], w.scales, out, partials, counters, N, K, G, per_split,
                                     w.scales.stride(0), BLOCK_N=block_n, BLOCK_G=block_g, NUM_STAGES=num_stages,
                                     num_warps=num_warps)
    return out


def library(a, w):
    return mm.matmul(a, w.blocks, w.scales, None, Backend.HOPPER, _schedule="gemv")


def check(device):
    torch.manual_seed(0)
    for n, k in ((70, 2880), (63, 96), (130, 8192)):
        w = mxfp4.quantize(torch.randn(n, k, device=device))
        a = torch.randn(1, k, device=device).to(torch.bfloat16)
        ref = library(a, w).float()
        for cfg in ((64, 4, 4, 3), (32, 8, 4, 2)):
            got = gemv_tma(a, w, *cfg).float()
            err = (got - ref).abs().max().item()
            print(f"check {n}x{k} cfg {cfg}: max |tma - library| {err:.3g} ({'same' if torch.equal(got, ref) else 'differs'})",
                  flush=True)


if __name__ == "__main__":
    device = "cuda" if torch.cuda.is_available() else "cpu"
    check(device)
    if "--check" in sys.argv or device == "cpu":
        sys.exit(0)
    sys.path.insert(0, "bench")
    from tune import CALLS, copy_bandwidth_gbs, graph_us

    bw = copy_bandwidth_gbs()
    print(f"copy bandwidth {bw:.0f} GB/s", flush=True)
    configs = [(64, 4, 4, 3), (64, 4, 4, 4), (64, 4, 4, 6), (64, 8, 4, 3), (64, 8, 4, 4), (128, 4, 4, 3),
               (128, 4, 8, 4), (32, 8, 4, 4), (64, 4, 4, 3, 8), (64, 8, 4, 4, 8), (128, 8, 8, 4, 8)]
    for n, k in ((5760, 2880), (8192, 8192), (28672, 8192)):
        copies = max(2, int(120e6 // (n * k * 0.53)) + 1)
        ws = [mxfp4.quantize(torch.randn(n, k, device="cuda")) for _ in range(copies)]
        a = torch.randn(1, k, device="cuda").to(torch.bfloat16)
        dense = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
                 for _ in range(max(2, int(120e6 // (n * k * 2)) + 1))]
        torch_us = graph_us([lambda w=w: torch.nn.functional.linear(a, w) for w in dense] * (CALLS // len(dense) + 1))
        del dense
        floor_us = n * k * 17 / 32 / bw / 1e3 * 1e6 / 1e3
        lib_us = graph_us([lambda w=w: library(a, w) for w in ws] * (CALLS // copies + 1))
        ref = library(a, ws[0])
        cells = []
        for cfg in configs:
            try:
                got = gemv_tma(a, ws[0], *cfg)
                us = graph_us([lambda w=w: gemv_tma(a, w, *cfg) for w in ws] * (CALLS // copies + 1))
                cells.append(f"{'x'.join(map(str, cfg))} {us:.1f}{'' if torch.equal(got, ref) else ' DIFFERS'}")
            except Exception as e:  # noqa: BLE001
                cells.append(f"{'x'.join(map(str, cfg))} ERR {type(e).__name__}: {str(e)[:80]}")
        print(f"M=1 {n}x{k}: floor {floor_us:.1f} torch {torch_us:.1f} library {lib_us:.1f} ({torch_us / lib_us:.2f}x) | tma "
              + " | ".join(cells), flush=True)
        del ws
