"""Session 3 quick timings on the H100 (CUDA-graph replays, weights rotated past L2): the MXFP4 GEMVs after the
word-level decode (all forced paths, against torch bf16) and the MoE decode layer with its two GEMVs.

    python3 bench/session3_quick.py [--moe-only]

Numbers go to bench/RESULTS.md (session 3)."""
import sys

import torch

sys.path.insert(0, "bench")
from tune import CALLS, copy_bandwidth_gbs, graph_us  # noqa: E402

import mxfp4  # noqa: E402


def main() -> None:
    bw = copy_bandwidth_gbs()
    print(f"copy bandwidth {bw:.0f} GB/s")
    moe_only = "--moe-only" in sys.argv
    print("\n== dense MXFP4 GEMV, M=1 and 16, bf16 activations (us; torch bf16 F.linear same run)")
    for n, k in () if moe_only else ((2880, 2880), (5760, 2880), (8192, 8192), (28672, 8192)):
        copies = max(2, int(60e6 // (n * k * 0.53)) + 1)
        ws = [mxfp4.quantize(torch.randn(n, k, device="cuda")) for _ in range(copies)]
        dense = [torch.randn(n, k, device="cuda").to(torch.bfloat16) for _ in range(max(2, int(60e6 // (n * k * 2)) + 1))]
        for m in (1, 16):
            a = torch.randn(m, k, device="cuda").to(torch.bfloat16)
            reps = CALLS // copies + 1
            ours = {b: graph_us([lambda w=w, b=b: mxfp4.matmul(a, w, backend=b) for w in ws] * reps) for b in ("hopper", "bf16", "fp32")}
            torch_us = graph_us([lambda w=w: torch.nn.functional.linear(a, w) for w in dense] * (CALLS // len(dense) + 1))
            nbytes = n * k * 17 / 32
            print(f"  {n}x{k} M={m}: hopper {ours['hopper']:.1f} bf16 {ours['bf16']:.1f} fp32 {ours['fp32']:.1f} torch {torch_us:.1f}"
                  f" -> {torch_us / ours['hopper']:.2f}x torch, {nbytes / ours['hopper'] / 1e3 / bw * 100:.0f}% of copy bw")

    print("\n== MoE decode layer (moe.moe, hopper), top-4, H = I = 2880 (us)")
    from bench_moe import TOP_K, gpt_oss_layer  # noqa: E402
    from mxfp4.triton_kernels import moe, moe_down_gemv, moe_gate_up_gemv, moe_routing  # noqa: E402

    for experts in (32, 128):
        layers = [gpt_oss_layer.__wrapped__(experts) for _ in range(3 if experts == 32 else 2)]
        for tokens in (1, 4, 8):
            x = torch.randn(tokens, 2880, device="cuda").to(torch.bfloat16)
            per = CALLS // len(layers) + 1
            whole = graph_us([lambda L=L: moe.moe(x, L[0], L[1], L[2].blocks, L[2].scales, L[3], L[4].blocks, L[4].scales,
                                                   L[5], TOP_K, 1.702, 7.0, "hopper") for L in layers] * per)
            routed = [moe_routing.route(x, L[0], L[1], TOP_K) for L in layers]
            gu, dn = moe.gemv_schedule(tokens * TOP_K)
            acts = [moe_gate_up_gemv.gate_up_swiglu_gemv(x, r[0], L[2].blocks, L[2].scales, L[3], 1.702, 7.0, gu, torch.bfloat16)
                    for r, L in zip(routed, layers)]
            g_us = graph_us([lambda r=r, L=L: moe_gate_up_gemv.gate_up_swiglu_gemv(x, r[0], L[2].blocks, L[2].scales, L[3], 1.702,
                                                                                    7.0, gu, torch.bfloat16) for r, L in zip(routed, layers)] * per)
            d_us = graph_us([lambda r=r, L=L, a=a: moe_down_gemv.down_combine_gemv(a, r[0], r[1], L[4].blocks, L[4].scales, L[5],
                                                                                    dn, torch.bfloat16) for r, L, a in zip(routed, layers, acts)] * per)
            hit = torch.unique(torch.cat([r[0].flatten() for r in routed[:1]])).numel()
            floor_us = hit * (2 * 2880 * 2880 + 2880 * 2880) * 17 / 32 / bw / 1e3
            print(f"  E={experts} T={tokens}: layer {whole:.1f} us (floor {floor_us:.1f}, {whole / floor_us:.2f}x); "
                  f"gate_up GEMV {g_us:.1f}, down GEMV {d_us:.1f}")
        del layers


if __name__ == "__main__":
    main()
