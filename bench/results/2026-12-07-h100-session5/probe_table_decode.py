"""Session 5 probe: the tiled small-M schedule with the table decode (mx.decode_tile_bf16) against the same tiles
with the float32 decode and against the CUDA-core GEMV, M = 1 and 16, bf16, weights rotated past L2 (CUDA graph).

    python3 bench/results/2026-12-07-h100-session5/probe_table_decode.py
"""
import sys

import torch

sys.path.insert(0, "bench")
from tune import CALLS, copy_bandwidth_gbs, graph_us  # noqa: E402

import mxfp4  # noqa: E402
from mxfp4.dispatch import Backend  # noqa: E402
from mxfp4.triton_kernels import matmul as mm  # noqa: E402

_choose = mm.choose_plan


def set_table_decode(on: bool) -> None:
    def choose(*args, **kwargs):
        plan = _choose(*args, **kwargs)
        if not on:
            plan = mm.Plan(**{**plan.__dict__, "constexprs": tuple(c for c in plan.constexprs if c[0] != "TABLE_DECODE")})
        return plan
    mm.choose_plan = choose
    mm._cached_plan.cache_clear()
    mm._LAUNCHES.clear()  # the launcher's per-shape record holds the plan too


def run(a, w, schedule):
    return mm.matmul(a, w.blocks, w.scales, None, Backend.HOPPER, _schedule=schedule)


def main() -> None:
    bw = copy_bandwidth_gbs()
    print(f"copy bandwidth {bw:.0f} GB/s")
    for n, k in ((2880, 2880), (5760, 2880), (8192, 8192), (28672, 8192)):
        if "--quick" in sys.argv and n == 2880:
            continue
        copies = max(2, int(60e6 // (n * k * 0.53)) + 1)
        ws = [mxfp4.quantize(torch.randn(n, k, device="cuda")) for _ in range(copies)]
        dense = [torch.randn(n, k, device="cuda").to(torch.bfloat16) for _ in range(max(2, int(60e6 // (n * k * 2)) + 1))]
        ref_w = mxfp4.dequantize(ws[0], dtype=torch.float32)
        for m in (1, 16):
            a = torch.randn(m, k, device="cuda").to(torch.bfloat16)
            ref = a.float() @ ref_w.T
            reps = CALLS // copies + 1
            row = {}
            for name, schedule, table in (("gemv", "gemv", True), ("tiled_f32dec", "tiled", False),
                                          ("tiled_table", "tiled", True)):
                if m > 1 and schedule == "gemv":
                    continue  # one program per row: M times the decode (session 5, call 1: 4-14x slower at M=16)
                set_table_decode(table)
                out = run(a, ws[0], schedule).float()
                err = ((out - ref).abs().max() / ref.abs().max()).item()
                row[name] = (graph_us([lambda w=w, s=schedule: run(a, w, s) for w in ws] * reps), err)
            torch_us = graph_us([lambda w=w: torch.nn.functional.linear(a, w) for w in dense] * (CALLS // len(dense) + 1))
            nbytes = n * k * 17 / 32
            cells = "  ".join(f"{k_} {t:.1f}us ({nbytes / t / 1e3 / bw * 100:.0f}% bw, err {e:.1e})" for k_, (t, e) in row.items())
            print(f"{n}x{k} M={m}: {cells}  torch {torch_us:.1f}us")
    set_table_decode(True)


if __name__ == "__main__" and "--moe" not in sys.argv:
    main()


def moe_probe() -> None:
    """The MoE decode layer (T = 1, 4, 8; E = 32, top-4, H = I = 2880) through its CUDA-core GEMVs and through the
    grouped tensor-core kernels (16-row tiles, table decode), with the floor of the hit experts' bytes."""
    sys.path.insert(0, "bench")
    from bench_moe import TOP_K, gpt_oss_layer  # noqa: E402
    from mxfp4.triton_kernels import moe  # noqa: E402

    bw = copy_bandwidth_gbs()
    layers = [gpt_oss_layer.__wrapped__(32) for _ in range(3)]
    gemv_max = moe.GEMV_MAX_PAIRS
    for tokens in (1, 2, 3, 4, 8):
        x = torch.randn(tokens, 2880, device="cuda").to(torch.bfloat16)
        per = CALLS // len(layers) + 1
        row = {}
        outs = {}
        for name, limit in (("gemv", gemv_max), ("tensor-core", 0)):
            moe.GEMV_MAX_PAIRS = limit
            call = lambda L: moe.moe(x, L[0], L[1], L[2].blocks, L[2].scales, L[3], L[4].blocks, L[4].scales, L[5],
                                     TOP_K, 1.702, 7.0, "hopper")
            outs[name] = call(layers[0]).float()
            row[name] = graph_us([lambda L=L: call(L) for L in layers] * per)
        moe.GEMV_MAX_PAIRS = gemv_max
        ids = torch.topk(x.float() @ layers[0][0].float().T + layers[0][1].float(), TOP_K).indices
        hit = torch.unique(ids).numel()
        floor_us = hit * 3 * 2880 * 2880 * 17 / 32 / bw / 1e3
        diff = ((outs["gemv"] - outs["tensor-core"]).norm() / outs["gemv"].norm()).item()
        print(f"MoE E=32 T={tokens}: gemv {row['gemv']:.1f}us ({row['gemv'] / floor_us:.2f}x floor), tensor-core "
              f"{row['tensor-core']:.1f}us ({row['tensor-core'] / floor_us:.2f}x), floor {floor_us:.1f}us, rel diff {diff:.1e}")


if __name__ == "__main__" and "--moe" in sys.argv:
    moe_probe()
