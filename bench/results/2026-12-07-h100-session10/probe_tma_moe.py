"""Session 10 probe, from the repository root: the MoE decode gate_up GEMV (moe_gate_up_gemv) with its W1 rows
loaded by TMA in a loop Triton pipelines ``NUM_STAGES`` deep (see probe_tma.py). Same decode, bias and SwiGLU.
Checks equality with the library kernel, then times both at T = 1 (E = 32, top-4, gpt-oss sizes; CUDA graphs over
3 layers so the weights are past L2). ``--check``: correctness only (runs under the CPU interpreter)."""
import sys

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from mxfp4.dispatch import triton_interpreter_enabled
from mxfp4.triton_kernels import moe, moe_gate_up_gemv, moe_routing
from mxfp4.triton_kernels.moe_common import cast, swiglu
from mxfp4.triton_kernels.mx import WORDS_PER_BLOCK, word_block_sums

_BLOCK_SIZE = tl.constexpr(32)


@triton.jit
def gate_up_tma_kernel(x_ptr, expert_ids_ptr, w_desc, scales_ptr, bias_ptr, act_ptr, hidden, intermediate, top_k,
                       stride_xt, scales_stride_e, alpha, limit, BLOCK_N: tl.constexpr, BLOCK_G: tl.constexpr,
                       NUM_STAGES: tl.constexpr, INTERPRETED: tl.constexpr):
    pair = tl.program_id(0)
    token = pair // top_k
    expert = tl.load(expert_ids_ptr + pair).to(tl.int64)
    ROWS: tl.constexpr = 2 * BLOCK_N
    row0 = tl.program_id(1) * ROWS
    w_row = tl.minimum(row0 + tl.arange(0, ROWS), 2 * intermediate - 1)
    offs_g = tl.arange(0, BLOCK_G)
    num_groups = (hidden + _BLOCK_SIZE - 1) // _BLOCK_SIZE
    s_ptrs = scales_ptr + expert * scales_stride_e + w_row[:, None] * num_groups + offs_g[None, :]
    x_ptrs = x_ptr + token.to(tl.int64) * stride_xt + offs_g[:, None] * _BLOCK_SIZE + tl.arange(0, _BLOCK_SIZE)[None, :]
    first_row = (expert * (2 * intermediate) + row0).to(tl.int32)
    acc = tl.zeros((ROWS, BLOCK_G), dtype=tl.float32)
    for g0 in tl.range(0, num_groups, BLOCK_G, num_stages=NUM_STAGES):
        words = tl.reshape(w_desc.load([first_row, g0 * WORDS_PER_BLOCK]), [ROWS, BLOCK_G, WORDS_PER_BLOCK])
        live = g0 + offs_g < num_groups
        scale = tl.load(s_ptrs + g0, mask=live[None, :], other=127)
        element = (g0 + offs_g)[:, None] * _BLOCK_SIZE + tl.arange(0, _BLOCK_SIZE)[None, :]
        x = tl.load(x_ptrs + g0 * _BLOCK_SIZE, mask=element < hidden, other=0.0)
        x = tl.reshape(x.to(tl.float32), [1, BLOCK_G, WORDS_PER_BLOCK, 2, 2, 2])
        acc += word_block_sums(words, scale, x, 2)
    dot = tl.sum(acc, axis=1)
    pre = dot + tl.load(bias_ptr + expert * (2 * intermediate) + w_row).to(tl.float32)
    gate, up = tl.split(tl.reshape(pre, [BLOCK_N, 2]))
    act = swiglu(gate, up, alpha, limit)
    feature = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    tl.store(act_ptr + pair.to(tl.int64) * intermediate + feature, cast(act, act_ptr.dtype.element_ty, INTERPRETED),
             mask=feature < intermediate)


def gate_up_tma(x, expert_ids, w1, b1, block_n=8, block_g=16, num_warps=4, num_stages=3, _cache={}):
    E, rows, G = w1.scales.shape
    key = (id(w1), block_n, block_g)
    if key not in _cache:
        words = w1.blocks.view(torch.int32).reshape(E * rows, G * int(WORDS_PER_BLOCK))
        _cache[key] = (TensorDescriptor.from_tensor(words, [2 * block_n, block_g * int(WORDS_PER_BLOCK)]), words)
    pairs = expert_ids.numel()
    act = torch.empty((pairs, rows // 2), dtype=torch.bfloat16, device=x.device)
    grid = (pairs, triton.cdiv(rows // 2, block_n))
    gate_up_tma_kernel[grid](x, expert_ids, _cache[key][0], w1.scales, b1, act, x.shape[1], rows // 2,
                             expert_ids.shape[1], x.stride(0), w1.scales.stride(0), 1.702, 7.0, BLOCK_N=block_n,
                             BLOCK_G=block_g, NUM_STAGES=num_stages, INTERPRETED=triton_interpreter_enabled(),
                             num_warps=num_warps)
    return act


def library(x, ids, w1, b1, config):
    return moe_gate_up_gemv.gate_up_swiglu_gemv(x, ids, w1.blocks, w1.scales, b1, 1.702, 7.0, config, torch.bfloat16)


if __name__ == "__main__":
    import mxfp4

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    E, H, I = 4, 200, 72  # odd sizes: a partial last block, a partial last step
    w1 = mxfp4.quantize(torch.randn(E, 2 * I, H, device=device))
    b1 = torch.randn(E, 2 * I, device=device).to(torch.bfloat16)
    x = torch.randn(2, H, device=device).to(torch.bfloat16)
    ids = torch.tensor([[0, 3], [3, 1]], dtype=torch.int32, device=device)
    want = library(x, ids, w1, b1, moe.GemvConfig(8, 4, 4))
    for cfg in ((8, 4, 4, 2), (16, 2, 4, 3)):
        got = gate_up_tma(x, ids, w1, b1, *cfg)
        print(f"check gate_up cfg {cfg}: {'same' if torch.equal(got, want) else 'DIFFERS ' + str((got.float() - want.float()).abs().max().item())}",
              flush=True)
    if "--check" in sys.argv or device == "cpu":
        sys.exit(0)
    sys.path.insert(0, "bench")
    from bench_moe import TOP_K, activations, gpt_oss_layer
    from tune import graph_us

    layers = [gpt_oss_layer.__wrapped__(32) for _ in range(3)]
    xt = activations(1)
    routed = [moe_routing.route(xt, l[0], l[1], TOP_K) for l in layers]
    g_cfg, _ = moe.gemv_schedule(TOP_K)
    lib_us = graph_us([lambda l=l, r=r: library(xt, r[0], l[2], l[3], g_cfg) for l, r in zip(layers, routed)] * 4)
    ref = library(xt, routed[0][0], layers[0][2], layers[0][3], g_cfg)
    cells = []
    for cfg in ((8, 16, 8, 3), (8, 16, 4, 3), (8, 16, 4, 4), (16, 16, 4, 3), (16, 8, 4, 4), (8, 32, 4, 3),
                (4, 16, 4, 4), (16, 16, 8, 3), (32, 8, 4, 3)):
        try:
            got = gate_up_tma(xt, routed[0][0], layers[0][2], layers[0][3], *cfg)
            us = graph_us([lambda l=l, r=r: gate_up_tma(xt, r[0], l[2], l[3], *cfg) for l, r in zip(layers, routed)] * 4)
            cells.append(f"{'x'.join(map(str, cfg))} {us:.1f}{'' if torch.equal(got, ref) else ' DIFFERS'}")
        except Exception as e:  # noqa: BLE001
            cells.append(f"{'x'.join(map(str, cfg))} ERR {type(e).__name__}: {str(e)[:80]}")
    print(f"MoE T=1 gate_up: library {lib_us:.1f} | tma " + " | ".join(cells), flush=True)
