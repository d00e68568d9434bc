"""Launch-parameter sweeps on a GPU: where the schedule tables in the kernel modules come from.

    python3 bench/tune.py                       # every sweep (a few minutes on an H100), a table per sweep
    python3 bench/tune.py moe-decode elementwise --json bench/out/tune.json

Sweeps (each prints the current table entry first, then the candidates, fastest first):
  moe-decode   the decode launches of the MoE at T = 1 and 8 tokens, E = 32, top-4, H = I = 2880, timed one by one
               (router, gate_up GEMV, down GEMV), and the GEMVs' launch shapes.
  moe-router   the router at T = 1, 8, 16 (decode kernel: its K step and warps) and 64 (prefill kernel), E = 32, 128.
  moe-crossover  the whole MoE layer at T = 1..16, E = 32 and 128, with the GEMVs and with the tensor-core tiles.
  dense-gemv   the q/k/v (one launch, three weights), o and 8192^2 bf16 projections at M = 1 against torch's F.linear
               (per weight, and on concatenated weights): BLOCK_N x BLOCK_K x warps x programs per SM.
  decode-attention  the fused decode attention (RoPE, cache write, attention with sinks) at batch 1, GPT-OSS heads,
               on a 128-slot ring, a 144-slot and a 4096-slot full cache, against the torch ops it replaced:
               SLOTS_PER_SPLIT x BLOCK_S x warps x MAX_SPLITS.
  prefill-attention  the flash-style prefill attention with sinks, 2k tokens, GPT-OSS heads, full (4096 slots) and
               sliding (window 128) layers, against the torch ops it replaced: BLOCK_M x BLOCK_N x warps x stages.
  elementwise  quantize (floor, bf16 [16384, 8192] = 256 MiB) and dequantize (GPT-OSS experts [16, 5760, 90, 16]
               -> bf16, 530 MB): ELEMENTS_PER_PROGRAM x MAX_GROUP_TILE x num_warps, as % of the copy bandwidth.

Timing: kernels are captured in a CUDA graph, ``CALLS`` launches per graph, each on its own copy of the weights
(rotated through more than the 50 MB L2), and the median replay of several is divided by ``CALLS``. Inputs are
random bytes, never zeros. Nothing here is a test: the chosen values go into the modules by hand, with the
numbers, and into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys

import torch

CALLS = 8


def graph_us(launches, repeats: int = 7) -> float:
    """Median microseconds per launch of ``launches`` (a list of closures) replayed from one CUDA graph."""
    for fn in launches:  # compile and warm up outside the capture
        fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for fn in launches:
            fn()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / len(launches))
    return sorted(times)[len(times) // 2]


def copy_bandwidth_gbs(nbytes: int = 1 << 30) -> float:
    """Device-to-device copy, bytes read + written per second, timed eagerly (inside a CUDA graph the copy
    becomes a memcpy node that runs slower than the copy kernel the ops are compared with)."""
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    times = []
    for _ in range(12):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3)
    return 2 * nbytes / sorted(times[2:])[len(times[2:]) // 2] / 1e3


def table(title: str, rows: list[dict], key: str) -> None:
    print(f"\n== {title}")
    if not rows:
        return
    cols = list(rows[0])
    print("  " + " | ".join(cols))
    for row in sorted(rows, key=lambda r: (r.get("current") != "*", r[key])):
        print("  " + " | ".join(f"{row[c]:.2f}" if isinstance(row[c], float) else str(row[c]) for c in cols))


def candidates_table(title: str, rows: list[dict], candidate: str, top: int) -> None:
    """A sweep's table: its baselines, the current choice (``current == "*"``) and the ``top`` fastest candidates
    (rows whose ``impl`` starts with ``candidate``), each row once."""
    fastest = sorted((r for r in rows if r["impl"].startswith(candidate)), key=lambda r: r["us"])[:top]
    others = [r for r in rows if not r["impl"].startswith(candidate) or (r["current"] and r not in fastest)]
    table(title, others + fastest, "us")


# --- MoE decode -----------------------------------------------------------------------------------------------
def sweep_moe_decode(results: dict, kernels=("gate_up", "down")) -> None:
    sys.path.insert(0, "bench")
    from bench_moe import HIDDEN, TOP_K, gpt_oss_layer

    from mxfp4.triton_kernels import moe, moe_down_gemv, moe_gate_up_gemv, moe_routing

    experts = 32
    layers = [gpt_oss_layer.__wrapped__(experts) for _ in range(3)]  # 3 x 400 MB: past L2 when rotated
    rows = []
    for tokens in (1, 8):
        x = torch.randn(tokens, HIDDEN, device="cuda").to(torch.bfloat16)
        routed = [moe_routing.route(x, rw, rb, TOP_K) for rw, rb, *_ in layers]
        acts = []
        for (ids, _), (_, _, w1, b1, _, _) in zip(routed, layers):
            acts.append(moe_gate_up_gemv.gate_up_swiglu_gemv(
                x, ids, w1.blocks, w1.scales, b1, 1.702, 7.0, moe.gemv_schedule(tokens * TOP_K)[0], torch.bfloat16))

        def per_layer(make):
            return [make(i) for i in range(len(layers))] * (CALLS // len(layers) + 1)

        route_us = graph_us(per_layer(lambda i: lambda: moe_routing.route(x, layers[i][0], layers[i][1], TOP_K)))
        whole_us = graph_us(per_layer(lambda i: lambda: moe.moe(
            x, layers[i][0], layers[i][1], layers[i][2].blocks, layers[i][2].scales, layers[i][3],
            layers[i][4].blocks, layers[i][4].scales, layers[i][5], TOP_K, 1.702, 7.0, "hopper")))

        def gate_up(config):
            return per_layer(lambda i: lambda: moe_gate_up_gemv.gate_up_swiglu_gemv(
                x, routed[i][0], layers[i][2].blocks, layers[i][2].scales, layers[i][3], 1.702, 7.0, config,
                torch.bfloat16))

        def down(config):
            return per_layer(lambda i: lambda: moe_down_gemv.down_combine_gemv(
                acts[i], routed[i][0], routed[i][1], layers[i][4].blocks, layers[i][4].scales, layers[i][5],
                config, torch.bfloat16))

        sweep_rows = []
        for name, launches, current, space in (
            ("gate_up", gate_up, moe.gemv_schedule(tokens * TOP_K)[0], itertools.product((4, 8, 16, 32), (4, 8, 16), (4, 8), (1,))),
            ("down", down, moe.gemv_schedule(tokens * TOP_K)[1], itertools.product((8, 16, 32), (8, 16), (4, 8), (1,))),
        ):
            if name not in kernels:
                continue
            for block_n, block_g, warps, stages in space:
                config = moe.GemvConfig(block_n, block_g, warps, stages)
                try:
                    us = graph_us(launches(config))
                    if name == "down":  # every launch shape computes the same sums (up to summation order)
                        got = launches(config)[0]().float()
                        want = launches(moe.gemv_schedule(tokens * TOP_K)[1])[0]().float()
                        if not torch.allclose(got, want, rtol=1e-2, atol=1e-2 * want.abs().max().item()):
                            print(f"  {name} {config}: output differs from the current table's")
                except Exception as e:  # a shape that does not compile is a result too
                    print(f"  {name} {config}: {type(e).__name__} {str(e)[:120]}")
                    continue
                sweep_rows.append({"kernel": name, "tokens": tokens, "block_n": block_n, "block_g": block_g,
                                   "warps": warps, "us": us, "current": "*" if config == current else ""})
        for kernel in kernels:
            table(f"MoE decode {kernel} GEMV, T={tokens}, E={experts} (us per launch)",
                  [r for r in sweep_rows if r["kernel"] == kernel], "us")

        best = {k: min(r["us"] for r in sweep_rows if r["kernel"] == k) for k in kernels}
        print(f"\n  T={tokens}: whole MoE (current tables) {whole_us:.1f} us; router {route_us:.1f} us; best "
              + ", ".join(f"{k} {us:.1f} us" for k, us in best.items()))
        rows += sweep_rows
        results.setdefault("moe_decode_whole_us", {})[tokens] = whole_us
    results["moe_decode"] = rows



def sweep_moe_router(results: dict) -> None:
    sys.path.insert(0, "bench")
    from bench_moe import HIDDEN, TOP_K, gpt_oss_layer

    from mxfp4.triton_kernels import moe_routing

    rows = []
    for experts in (32, 128):
        routers = [gpt_oss_layer(experts)[:2]] * CALLS
        for tokens in (1, 8, 16, 64):
            x = torch.randn(tokens, HIDDEN, device="cuda").to(torch.bfloat16)
            saved = (moe_routing.DECODE_TILE_ELEMENTS, moe_routing.ROUTE_NUM_WARPS)
            for tile, warps in itertools.product((1024, 2048, 4096, 8192), (4, 8)):
                if tokens > moe_routing.ROUTE_BLOCK_T and (tile, warps) != saved:
                    continue  # the prefill kernel does not read these
                moe_routing.DECODE_TILE_ELEMENTS, moe_routing.ROUTE_NUM_WARPS = tile, warps
                us = graph_us([lambda r=r: moe_routing.route(x, r[0], r[1], TOP_K) for r in routers])
                rows.append({"experts": experts, "tokens": tokens, "tile_elements": tile, "warps": warps, "us": us,
                             "current": "*" if (tile, warps) == saved else ""})
            moe_routing.DECODE_TILE_ELEMENTS, moe_routing.ROUTE_NUM_WARPS = saved
    table("MoE router (us)", rows, "us")
    results["moe_router"] = rows


def sweep_moe_crossover(results: dict) -> None:
    sys.path.insert(0, "bench")
    from bench_moe import HIDDEN, TOP_K, gpt_oss_layer

    from mxfp4.triton_kernels import moe

    # Where the decode GEMVs should hand over to the tensor-core tiles: the whole MoE both ways, per token count.
    crossover = []
    saved = moe.GEMV_MAX_PAIRS, moe.GEMV_ALWAYS_PAIRS
    for experts in (32, 128):
        copies = [gpt_oss_layer.__wrapped__(experts) for _ in range(3 if experts == 32 else 1)]
        for tokens in (1, 2, 4, 8, 16):
            x = torch.randn(tokens, HIDDEN, device="cuda").to(torch.bfloat16)
            picked = moe.uses_gemv(tokens * TOP_K, experts)
            for name, limits in (("gemv", (10**9, 10**9)), ("tensor-core", (0, 0))):
                moe.GEMV_MAX_PAIRS, moe.GEMV_ALWAYS_PAIRS = limits
                us = graph_us([lambda c=c: moe.moe(
                    x, c[0], c[1], c[2].blocks, c[2].scales, c[3], c[4].blocks, c[4].scales, c[5], TOP_K, 1.702, 7.0,
                    "hopper") for c in copies] * (CALLS // len(copies) + 1))
                crossover.append({"experts": experts, "tokens": tokens, "schedule": name, "us": us,
                                  "current": "*" if picked == (name == "gemv") else ""})
            moe.GEMV_MAX_PAIRS, moe.GEMV_ALWAYS_PAIRS = saved
        del copies
    table("MoE decode, whole layer: GEMVs vs tensor-core tiles (us; * = what moe.uses_gemv picks)", crossover, "us")
    results["moe_decode_crossover"] = crossover


# --- quantize / dequantize ---------------------------------------------------------------------------------------
def sweep_elementwise(results: dict) -> None:
    import mxfp4
    from mxfp4.triton_kernels import dequantize as dq
    from mxfp4.triton_kernels import quantize as q

    bandwidth = copy_bandwidth_gbs()
    print(f"\n  copy bandwidth {bandwidth:.0f} GB/s (read + write)")
    x = [torch.randn(16384, 8192, device="cuda").to(torch.bfloat16) for _ in range(2)]
    quant_bytes = x[0].numel() * (2 + 17 / 32)
    packed = [mxfp4.quantize(t) for t in x]
    experts = [(torch.randint(0, 256, (16, 5760, 90, 16), dtype=torch.uint8, device="cuda"),
                torch.randint(118, 124, (16, 5760, 90), dtype=torch.uint8, device="cuda")) for _ in range(2)]
    out = torch.empty((16, 5760, 2880), dtype=torch.bfloat16, device="cuda")
    dequant_bytes = out.numel() * (2 + 17 / 32)
    del packed
    rows = []
    for name, module, launches, nbytes in (
        ("quantize floor bf16 [16384, 8192]", q,
         lambda: [lambda t=t: mxfp4.quantize(t, backend="hopper") for t in x] * (CALLS // 2), quant_bytes),
        ("dequantize experts [16, 5760, 90, 16] -> bf16", dq,
         lambda: [lambda e=e: dq.dequantize(e[0], e[1], torch.bfloat16, 2880, "hopper", out=out)
                  for e in experts] * (CALLS // 2), dequant_bytes),
    ):
        saved = (module.ELEMENTS_PER_PROGRAM, module.MAX_GROUP_TILE, dict(module.NUM_WARPS))
        current = (*saved[:2], module.NUM_WARPS[mxfp4.Backend.HOPPER])
        for per_program, group_tile, warps in itertools.product((2048, 4096, 8192, 16384), (4, 8, 16, 32), (4, 8)):
            if per_program < group_tile * 32:
                continue
            module.ELEMENTS_PER_PROGRAM, module.MAX_GROUP_TILE = per_program, group_tile
            module.NUM_WARPS.update({k: warps for k in module.NUM_WARPS})
            us = graph_us(launches())
            rows.append({"op": name.split()[0], "elements_per_program": per_program, "max_group_tile": group_tile,
                         "warps": warps, "us": us, "pct_of_copy": 100 * nbytes / us / 1e3 / bandwidth,
                         "current": "*" if (per_program, group_tile, warps) == current else ""})
        module.ELEMENTS_PER_PROGRAM, module.MAX_GROUP_TILE = saved[:2]
        module.NUM_WARPS.update(saved[2])
        table(name, [r for r in rows if r["op"] == name.split()[0]], "us")
    results["elementwise"] = rows
    results["copy_bandwidth_gbs"] = bandwidth


# --- dense projection GEMV ---------------------------------------------------------------------------------------
def sweep_dense_gemv(results: dict) -> None:
    import torch.nn.functional as F

    from mxfp4.triton_kernels import dense_gemv as dg

    bandwidth = copy_bandwidth_gbs()
    print(f"\n  copy bandwidth {bandwidth:.0f} GB/s (read + write)")
    rows = []
    saved = (dg.CONFIG, dg.SPLIT)
    for name, k, widths in (("gpt-oss q/k/v", 2880, (4096, 512, 512)), ("gpt-oss o", 4096, (2880,)),
                            ("8192^2", 8192, (8192,))):
        copies = 3  # > 50 MB of weights, rotated
        x = torch.randn(1, k, device="cuda").to(torch.bfloat16)
        ws = [[torch.randn(n, k, device="cuda").to(torch.bfloat16) for n in widths] for _ in range(copies)]
        bs = [[torch.randn(n, device="cuda").to(torch.bfloat16) for n in widths] for _ in range(copies)]
        fused = [torch.cat(w) for w in ws]
        fused_b = [torch.cat(b) for b in bs]
        nbytes = sum(widths) * k * 2
        reps = CALLS // copies + 1
        torch_us = graph_us([lambda i=i: [F.linear(x, w, b) for w, b in zip(ws[i], bs[i])] for i in range(copies)] * reps)
        torch_fused_us = graph_us([lambda i=i: F.linear(x, fused[i], fused_b[i]) for i in range(copies)] * reps)
        base = {"shape": name, "bytes_mb": nbytes / 1e6}
        rows.append(dict(base, impl="torch F.linear per weight", us=torch_us, pct_of_copy=100 * nbytes / torch_us / 1e3 / bandwidth, current=""))
        rows.append(dict(base, impl="torch F.linear, weights concatenated", us=torch_fused_us,
                         pct_of_copy=100 * nbytes / torch_fused_us / 1e3 / bandwidth, current=""))
        for block_n, block_k, warps, per_sm in itertools.product((8, 16, 32), (128, 256, 512), (4, 8), (4, 8, 16)):
            dg.CONFIG = dg.DenseGemvConfig(block_n, block_k, warps)
            dg.SPLIT = dg.SplitPolicy(per_sm, 2)
            dg._plan.cache_clear()
            try:
                us = graph_us([lambda i=i: dg.projections(x, ws[i], bs[i]) for i in range(copies)] * reps)
            except Exception as e:  # a shape that does not compile is a result too
                print(f"  {name} {block_n}x{block_k} w{warps}: {type(e).__name__} {str(e)[:120]}")
                continue
            current = (block_n, block_k, warps, per_sm) == (saved[0].block_n, saved[0].block_k, saved[0].num_warps,
                                                             saved[1].programs_per_sm)
            rows.append(dict(base, impl=f"projections {block_n}x{block_k} w{warps} {per_sm}/SM", us=us,
                             pct_of_copy=100 * nbytes / us / 1e3 / bandwidth, current="*" if current else ""))
        dg.CONFIG, dg.SPLIT = saved
        dg._plan.cache_clear()
        candidates_table(f"dense GEMV {name}, M=1, bf16 ({nbytes / 1e6:.1f} MB of weights; us per call)",
                         [r for r in rows if r["shape"] == name], "projections", 12)
    results["dense_gemv"] = rows
    results["copy_bandwidth_gbs"] = bandwidth


def sweep_decode_attention(results: dict) -> None:
    from mxfp4.models import gpt_oss
    from mxfp4.triton_kernels import decode_attention as da

    heads, kv_heads, dim = 64, 8, 64
    rows = []
    saved = (da.SLOTS_PER_SPLIT, da.BLOCK_S, da.NUM_WARPS, da.MAX_SPLITS)
    for name, slots, column, ring in (("ring 128", 128, 700, True), ("full 144 (context 129)", 144, 129, False),
                                      ("full 4096 (context 4000)", 4096, 4000, False)):
        window = 128 if ring else None
        dt = torch.bfloat16
        q, k, v = (torch.randn(1, n * dim, device="cuda", dtype=dt) for n in (heads, kv_heads, kv_heads))
        cos, sin = torch.randn(1, dim // 2, device="cuda", dtype=dt), torch.randn(1, dim // 2, device="cuda", dtype=dt)
        cache = gpt_oss.KVCache(1, kv_heads, dim, slots, ring=ring, dtype=dt, device="cuda")
        cache.keys.normal_(), cache.values.normal_()
        cache.columns.copy_(torch.arange(slots, device="cuda") + (column - slots if ring else 0))
        if not ring:
            cache.columns[column:] = -1
        col, pad = torch.tensor([column], device="cuda"), torch.zeros(1, dtype=torch.int64, device="cuda")
        sinks = torch.randn(heads, device="cuda", dtype=dt)

        def torch_path():  # what gpt_oss.Attention.forward ran per decode step before the fused kernel
            qh, kh = gpt_oss.rope_qk(q.view(1, heads, 1, dim), k.view(1, kv_heads, 1, dim),
                                     cos.view(1, 1, 1, -1), sin.view(1, 1, 1, -1))
            keys, values, key_columns = cache.update(kh, v.view(1, kv_heads, 1, dim), col)
            allowed = gpt_oss.visible_keys(col, key_columns, pad, window)
            return gpt_oss.attention_with_sinks(qh, keys, values, allowed, sinks, dim**-0.5)

        base = {"case": name}
        rows.append(dict(base, impl="torch ops (compiled RoPE/mask/softmax, index_copy, cuBLAS)",
                         us=graph_us([torch_path] * 20), current=""))
        for per_split, block_s, warps, most in itertools.product((32, 64, 128), (16, 32, 64), (4, 8), (16, 64)):
            if most > 16 and slots < 1024:
                continue  # the cap only matters for long caches
            da.SLOTS_PER_SPLIT, da.BLOCK_S, da.NUM_WARPS, da.MAX_SPLITS = per_split, block_s, warps, most
            try:
                us = graph_us([lambda: da.decode_attention(q, k, v, cos, sin, cache.keys, cache.values, cache.columns,
                                                           col, pad, sinks, scale=dim**-0.5, ring=ring,
                                                           window=window)] * 20)
            except Exception as e:  # a shape that does not compile is a result too
                print(f"  {name} {per_split}/{block_s}/w{warps}: {type(e).__name__} {str(e)[:120]}")
                continue
            current = (per_split, block_s, warps, most) == saved
            rows.append(dict(base, impl=f"decode_attention {per_split} slots/split (<= {most}), BLOCK_S {block_s}, "
                                        f"w{warps}",
                             us=us, current="*" if current else ""))
        da.SLOTS_PER_SPLIT, da.BLOCK_S, da.NUM_WARPS, da.MAX_SPLITS = saved
        candidates_table(f"decode attention, batch 1, GPT-OSS heads, {name} (us per layer)",
                         [r for r in rows if r["case"] == name], "decode_attention", 10)
    results["decode_attention"] = rows


def sweep_prefill_attention(results: dict) -> None:
    from mxfp4.models import gpt_oss
    from mxfp4.triton_kernels import prefill_attention as pa

    heads, kv_heads, dim, length = 64, 8, 64, 2048
    rows = []
    saved = (pa.BLOCK_M, pa.BLOCK_N, pa.NUM_WARPS, pa.NUM_STAGES)
    for name, slots, window in (("full, 2k tokens over 4096 slots", 4096, None), ("sliding 128, 2k tokens", length, 128)):
        dt = torch.bfloat16
        q = torch.randn(1, length, heads, dim, device="cuda", dtype=dt).transpose(1, 2)
        k = torch.randn(1, kv_heads, slots, dim, device="cuda", dtype=dt)
        v = torch.randn(1, kv_heads, slots, dim, device="cuda", dtype=dt)
        columns = torch.arange(length, device="cuda")
        key_columns = torch.full((slots,), -1, dtype=torch.int64, device="cuda")
        key_columns[:length] = columns
        pad = torch.zeros(1, dtype=torch.int64, device="cuda")
        sinks = torch.randn(heads, device="cuda", dtype=dt)
        visible_pairs = sum(min(c + 1, window or c + 1) for c in range(length)) * heads
        flops = 4 * visible_pairs * dim

        def torch_path():  # gpt_oss.Attention.forward's torch ops
            allowed = gpt_oss.visible_keys(columns, key_columns, pad, window)
            return gpt_oss.attention_with_sinks(q, k, v, allowed, sinks, dim**-0.5)

        base = {"case": name}
        us = graph_us([torch_path] * 2)
        rows.append(dict(base, impl="torch ops (compiled mask / sink softmax, cuBLAS)", us=us,
                         tflops=flops / us / 1e6, current=""))
        for block_m, block_n, warps, stages in itertools.product((64, 128), (64, 128), (4, 8), (2,)):
            pa.BLOCK_M, pa.BLOCK_N, pa.NUM_WARPS, pa.NUM_STAGES = block_m, block_n, warps, stages
            try:
                us = graph_us([lambda: pa.prefill_attention(q, k, v, columns, key_columns, pad, sinks,
                                                            scale=dim**-0.5, window=window)] * 4)
            except Exception as e:  # a shape that does not compile (shared memory, registers) is a result too
                print(f"  {name} {block_m}x{block_n} w{warps} s{stages}: {type(e).__name__} {str(e)[:100]}")
                continue
            current = (block_m, block_n, warps, stages) == saved
            rows.append(dict(base, impl=f"prefill_attention {block_m}x{block_n} w{warps} s{stages}", us=us,
                             tflops=flops / us / 1e6, current="*" if current else ""))
        pa.BLOCK_M, pa.BLOCK_N, pa.NUM_WARPS, pa.NUM_STAGES = saved
        candidates_table(f"prefill attention, GPT-OSS heads, {name} (us per layer; TFLOP/s over the visible pairs)",
                         [r for r in rows if r["case"] == name], "prefill_attention", 8)
    results["prefill_attention"] = rows


SWEEPS = {"moe-decode": sweep_moe_decode, "moe-down": lambda results: sweep_moe_decode(results, ("down",)),
          "moe-router": sweep_moe_router, "moe-crossover": sweep_moe_crossover,
          "elementwise": sweep_elementwise, "dense-gemv": sweep_dense_gemv, "decode-attention": sweep_decode_attention,
          "prefill-attention": sweep_prefill_attention}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", nargs="*", help=f"any of {', '.join(SWEEPS)} (default: all)")
    parser.add_argument("--json", help="write every timing here")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench/tune.py times kernels on a CUDA GPU; none here", file=sys.stderr)
        return 2
    unknown = set(args.sweeps) - set(SWEEPS)
    if unknown:
        parser.error(f"unknown sweep(s) {sorted(unknown)}; choose from {list(SWEEPS)}")
    results: dict = {"device": torch.cuda.get_device_name(0)}
    for name in args.sweeps or SWEEPS:
        SWEEPS[name](results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
