"""Session 6 probe, from the repository root. No argument: run the MoE decode GEMVs (T=1, E=32, gpt-oss sizes) and
the 8192^2 M=1 matmul GEMV three times each, for ncu. ``--time``: the MoE decode layer and its two GEMVs at the
schedule tables (T = 1, 8; CUDA graphs, weights rotated past L2); ``--sweep`` then adds a few launch shapes."""
import sys

import torch

sys.path.insert(0, "bench")
from bench_moe import TOP_K, activations, gpt_oss_layer  # noqa: E402

from mxfp4.triton_kernels import moe, moe_down_gemv, moe_gate_up_gemv, moe_routing  # noqa: E402

layer = gpt_oss_layer.__wrapped__(32)
router_w, router_b, w1, b1, w2, b2 = layer
x = activations(1)


def run(gate_cfg=None, down_cfg=None):
    ids, weights = moe_routing.route(x, router_w, router_b, TOP_K)
    g, d = moe.gemv_schedule(TOP_K)
    act = moe_gate_up_gemv.gate_up_swiglu_gemv(x, ids, w1.blocks, w1.scales, b1, 1.702, 7.0, gate_cfg or g,
                                               torch.bfloat16)
    return moe_down_gemv.down_combine_gemv(act, ids, weights, w2.blocks, w2.scales, b2, down_cfg or d,
                                           torch.bfloat16)


if "--time" not in sys.argv:
    import mxfp4
    w = mxfp4.quantize(torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16))
    a = torch.randn(1, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        run()
        mxfp4.matmul(a, w)
    torch.cuda.synchronize()
    print("ran")
    sys.exit(0)

# --time: the whole MoE decode layer and its two GEMVs at the schedule tables, CUDA graphs, weights rotated;
# --sweep: then a few launch shapes of each GEMV.
from tune import graph_us  # noqa: E402

layers = [layer] + [gpt_oss_layer.__wrapped__(32) for _ in range(2)]
reps = 8 // len(layers) + 1
SHAPES = [(8, 16, 8), (8, 8, 4), (16, 8, 4), (8, 16, 4), (4, 16, 4), (16, 16, 4), (32, 4, 4), (32, 8, 4)]
for tokens in (1, 8):
    xt = activations(tokens)
    g_cfg, d_cfg = moe.gemv_schedule(tokens * TOP_K)
    routed = [moe_routing.route(xt, rw, rb, TOP_K) for rw, rb, *_ in layers]
    acts = [moe_gate_up_gemv.gate_up_swiglu_gemv(xt, ids, l[2].blocks, l[2].scales, l[3], 1.702, 7.0, g_cfg,
                                                 torch.bfloat16) for (ids, _), l in zip(routed, layers)]

    def gemv_us(gate_cfg, down_cfg):
        gate = graph_us([lambda l=l, r=r: moe_gate_up_gemv.gate_up_swiglu_gemv(
            xt, r[0], l[2].blocks, l[2].scales, l[3], 1.702, 7.0, gate_cfg, torch.bfloat16)
            for l, r in zip(layers, routed)] * reps)
        down = graph_us([lambda l=l, r=r, a=a: moe_down_gemv.down_combine_gemv(
            a, r[0], r[1], l[4].blocks, l[4].scales, l[5], down_cfg, torch.bfloat16)
            for l, r, a in zip(layers, routed, acts)] * reps)
        return gate, down

    whole = graph_us([lambda l=l: moe.moe(xt, l[0], l[1], l[2].blocks, l[2].scales, l[3], l[4].blocks, l[4].scales,
                                           l[5], TOP_K, 1.702, 7.0, "hopper") for l in layers] * reps)
    gate, down = gemv_us(g_cfg, d_cfg)
    print(f"T={tokens}: whole MoE {whole:.1f} us  gate_up {gate:.1f} ({g_cfg})  down {down:.1f} ({d_cfg})")
    if "--sweep" in sys.argv:
        cells = {"gate_up": [], "down": []}
        for n, g, w in SHAPES:
            gate, down = gemv_us(moe.GemvConfig(n, g, w), moe.GemvConfig(n, g, w))
            cells["gate_up"].append(f"{n}x{g}x{w} {gate:.1f}")
            cells["down"].append(f"{n}x{g}x{w} {down:.1f}")
        for kernel, row in cells.items():
            print(f"T={tokens} {kernel}: " + "  ".join(row))
