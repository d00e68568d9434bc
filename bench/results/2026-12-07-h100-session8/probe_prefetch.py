"""Session 8 probe, from the repository root: L2 prefetch of the GEMVs' weight stream (mx.gemv_prefetch), in one
process. MoE decode GEMVs (E=32, gpt-oss sizes, T = 1 / 8) and the whole MoE layer at the schedule tables with
prefetch 0 / 4 / 8 steps, then a few launch shapes at 8; the M=1 matmul GEMV at 3 shapes, the same distances,
torch bf16 F.linear alongside. CUDA graphs, weights rotated past L2; µs per launch. ``--quick``: T=1 and two
matmul shapes only."""
import dataclasses
import sys

import torch

sys.path.insert(0, "bench")
from bench_moe import TOP_K, activations, gpt_oss_layer  # noqa: E402
from tune import CALLS, copy_bandwidth_gbs, graph_us  # noqa: E402

import mxfp4  # noqa: E402
from mxfp4.dispatch import Backend  # noqa: E402
from mxfp4.triton_kernels import matmul as mm  # noqa: E402
from mxfp4.triton_kernels import moe, moe_down_gemv, moe_gate_up_gemv, moe_routing  # noqa: E402

DISTANCES = (0, 4, 8)
QUICK = "--quick" in sys.argv  # T=1 and the two large matmul shapes only
print(f"copy bandwidth {copy_bandwidth_gbs():.0f} GB/s", flush=True)
TABLES = moe.GEMV_SCHEDULES


def with_prefetch(distance):
    return tuple((p, dataclasses.replace(g, prefetch=distance), dataclasses.replace(d, prefetch=distance))
                 for p, g, d in TABLES)


layers = [gpt_oss_layer.__wrapped__(32) for _ in range(3)]
reps = 9 // len(layers) + 1
for tokens in (1,) if QUICK else (1, 8):
    xt = activations(tokens)
    g_cfg, d_cfg = moe.gemv_schedule(tokens * TOP_K)
    routed = [moe_routing.route(xt, l[0], l[1], TOP_K) for l in layers]
    acts = [moe_gate_up_gemv.gate_up_swiglu_gemv(xt, ids, l[2].blocks, l[2].scales, l[3], 1.702, 7.0, g_cfg,
                                                 torch.bfloat16) for (ids, _), l in zip(routed, layers)]
    want = moe_down_gemv.down_combine_gemv(acts[0], routed[0][0], routed[0][1], layers[0][4].blocks,
                                           layers[0][4].scales, layers[0][5], d_cfg, torch.bfloat16)

    def gate_us(config):
        return graph_us([lambda l=l, r=r: moe_gate_up_gemv.gate_up_swiglu_gemv(
            xt, r[0], l[2].blocks, l[2].scales, l[3], 1.702, 7.0, config, torch.bfloat16)
            for l, r in zip(layers, routed)] * reps)

    def down_us(config):
        return graph_us([lambda l=l, r=r, a=a: moe_down_gemv.down_combine_gemv(
            a, r[0], r[1], l[4].blocks, l[4].scales, l[5], config, torch.bfloat16)
            for l, r, a in zip(layers, routed, acts)] * reps)

    cells = []
    for distance in DISTANCES:
        gc, dc = dataclasses.replace(g_cfg, prefetch=distance), dataclasses.replace(d_cfg, prefetch=distance)
        got_act = moe_gate_up_gemv.gate_up_swiglu_gemv(xt, routed[0][0], layers[0][2].blocks, layers[0][2].scales,
                                                       layers[0][3], 1.702, 7.0, gc, torch.bfloat16)
        got = moe_down_gemv.down_combine_gemv(got_act, routed[0][0], routed[0][1], layers[0][4].blocks,
                                              layers[0][4].scales, layers[0][5], dc, torch.bfloat16)
        same = torch.equal(got_act, acts[0]) and torch.equal(got, want)
        gate, down = gate_us(gc), down_us(dc)
        moe.GEMV_SCHEDULES = with_prefetch(distance)
        whole = graph_us([lambda l=l: moe.moe(xt, l[0], l[1], l[2].blocks, l[2].scales, l[3], l[4].blocks,
                                               l[4].scales, l[5], TOP_K, 1.702, 7.0, "hopper") for l in layers] * reps)
        moe.GEMV_SCHEDULES = TABLES
        cells.append(f"pf{distance}: gate_up {gate:.1f} down {down:.1f} layer {whole:.1f}{'' if same else ' DIFFERS'}")
    print(f"MoE T={tokens}: " + " | ".join(cells), flush=True)
    if not QUICK:  # with the latency hidden, other launch shapes may win: a few at prefetch 8
        shapes = ((8, 16, 8), (16, 16, 8), (8, 16, 4), (16, 8, 4), (8, 8, 4), (4, 16, 4), (32, 4, 4))
        print(f"MoE T={tokens} pf8 gate_up: " + "  ".join(
            f"{n}x{g}x{w} {gate_us(moe.GemvConfig(n, g, w, prefetch=8)):.1f}" for n, g, w in shapes), flush=True)
        print(f"MoE T={tokens} pf8 down: " + "  ".join(
            f"{n}x{g}x{w} {down_us(moe.GemvConfig(n, g, w, prefetch=8)):.1f}" for n, g, w in shapes), flush=True)
del layers, routed, acts

base = mm.GEMV_CONFIG
for n, k in ((8192, 8192), (28672, 8192)) if QUICK else ((5760, 2880), (8192, 8192), (28672, 8192)):
    copies = max(2, int(120e6 // (n * k * 0.53)) + 1)
    ws = [mxfp4.quantize(torch.randn(n, k, device="cuda")) for _ in range(copies)]
    a = torch.randn(1, k, device="cuda").to(torch.bfloat16)
    dense = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
             for _ in range(max(2, int(120e6 // (n * k * 2)) + 1))]
    torch_us = graph_us([lambda w=w: torch.nn.functional.linear(a, w) for w in dense] * (CALLS // len(dense) + 1))
    del dense
    cells, want = [], None
    for distance in DISTANCES:
        mm.GEMV_CONFIG = dataclasses.replace(base, prefetch=distance)
        mm._cached_plan.cache_clear()
        mm._LAUNCHES.clear()
        run = lambda w: mm.matmul(a, w.blocks, w.scales, None, Backend.HOPPER, _schedule="gemv")  # noqa: E731
        got = run(ws[0])
        want = got if want is None else want
        us = graph_us([lambda w=w: run(w) for w in ws] * (CALLS // copies + 1))
        cells.append(f"pf{distance} {us:.1f} ({torch_us / us:.2f}x){'' if torch.equal(got, want) else ' DIFFERS'}")
    mm.GEMV_CONFIG = base
    mm._cached_plan.cache_clear()
    mm._LAUNCHES.clear()
    print(f"matmul M=1 {n}x{k}: torch bf16 {torch_us:.1f} | " + " | ".join(cells), flush=True)
    del ws
