"""GPT-OSS-shaped models on a GPU: memory after load, prefill and decode tokens/s (issue: "On the H100: GPT-OSS").

No download is possible on the GPU machine, so models are built from the published presets with random MXFP4 experts.

    python3 bench/gpt_oss_gpu.py [--preset gpt-oss-20b] [--json PATH] [--skip-baseline] [--load-from-disk DIR]

Prints one table: peak GPU memory after load (4k-token cache at batch 1 included), prefill tokens/s at 2k tokens,
decode tokens/s at batch 1 and 32 (CUDA-graph-captured ``decode_step``), the same with experts dequantized to bf16
(baseline), and batch-1 decode as a fraction of the bandwidth floor (bytes read per token / measured copy bandwidth).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import triton.testing

import mxfp4
from mxfp4.models.gpt_oss import GptOss, GptOssConfig


def copy_bandwidth() -> float:
    """Device-to-device copy bandwidth in bytes/s, counting bytes read plus written (1 GiB buffers, > L2)."""
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), return_mode="median")
    del src, dst
    return 2 * (1 << 30) / (ms * 1e-3)


def decode_bytes_per_token(model: GptOss, batch: int = 1) -> int:
    """Bytes a batch-1 decode step must read: top-k experts per layer (MXFP4), everything else that is not an expert
    or the embedding table (one row of it), the KV cache is small at short context and left out."""
    cfg = model.config
    total = 0
    for name, t in model.state_dict().items():
        size = t.numel() * t.element_size()
        if name.endswith(("_blocks", "_scales")) or "experts" in name:
            size = size * min(cfg.num_experts_per_tok * batch, cfg.num_local_experts) // cfg.num_local_experts
        elif name.endswith("embed_tokens.weight"):
            size = t.shape[1] * t.element_size() * batch
        total += size
    return total


def make_graph_decoder(model: GptOss, batch: int, start: int):
    """``decode_step`` captured in a CUDA graph (``GptOss.capture_decode``); returns (graph, static inputs, logits)."""
    ids = torch.randint(0, model.config.vocab_size, (batch, 1), device="cuda")
    column = torch.tensor([start], device="cuda")
    pad = torch.zeros(batch, dtype=torch.int64, device="cuda")
    _, graph, logits = model.capture_decode(ids, column, pad)
    return graph, ids, column, logits


def time_decode(model: GptOss, batch: int, context: int, steps: int, graph: bool) -> float:
    """Seconds per decode step at ``context`` tokens already in the cache (random cache contents)."""
    model.setup_cache(batch, context + steps + 8)
    prompt = torch.randint(0, model.config.vocab_size, (batch, context), device="cuda")
    model.forward_with_cache(prompt, 0, last_only=True)
    if graph:
        g, ids, column, _ = make_graph_decoder(model, batch, context)
        g.replay()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            g.replay()  # rewrites the same column: the cache length does not matter at this context
        torch.cuda.synchronize()
        return (time.perf_counter() - start) / steps
    ids = torch.randint(0, model.config.vocab_size, (batch, 1), device="cuda")
    column = torch.tensor([context], device="cuda")
    pad = torch.zeros(batch, dtype=torch.int64, device="cuda")
    model.decode_step(ids, column, pad)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        model.decode_step(ids, column, pad)
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def time_prefill(model: GptOss, tokens: int, repeats: int = 5) -> float:
    """Median seconds of one ``tokens``-token prefill (after a warm-up that compiles), over ``repeats`` runs."""
    model.setup_cache(1, tokens)
    prompt = torch.randint(0, model.config.vocab_size, (1, tokens), device="cuda")
    model.forward_with_cache(prompt, 0, last_only=True)
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        model.forward_with_cache(prompt, 0, last_only=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


class DenseExperts(torch.nn.Module):
    """Baseline: the same MoE with bf16 experts (dequantized once), a loop over the experts actually hit."""

    def __init__(self, moe_module):
        super().__init__()
        experts = moe_module.experts
        self.router, self.top_k = moe_module.router, moe_module.top_k
        self.alpha, self.limit = moe_module.swiglu_alpha, moe_module.swiglu_limit
        self.w1 = torch.stack([mxfp4.dequantize(experts.gate_up_proj[e], torch.bfloat16) for e in range(len(experts.gate_up_proj_blocks))])
        self.w2 = torch.stack([mxfp4.dequantize(experts.down_proj[e], torch.bfloat16) for e in range(len(experts.down_proj_blocks))])
        self.b1, self.b2 = experts.gate_up_proj_bias, experts.down_proj_bias

    def forward(self, x):
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        logits = self.router(x).float()
        top, idx = logits.topk(self.top_k, dim=-1)
        weights = top.softmax(-1)
        out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        for e in idx.unique().tolist():  # host sync: as eager transformers does
            rows, slot = (idx == e).nonzero(as_tuple=True)
            h = x[rows] @ self.w1[e].T + self.b1[e]
            gate, up = h[:, 0::2].clamp(max=self.limit), h[:, 1::2].clamp(-self.limit, self.limit)
            h = (up + 1) * gate * torch.sigmoid(self.alpha * gate)
            y = h @ self.w2[e].T + self.b2[e]
            out.index_add_(0, rows, y.float() * weights[rows, slot, None])
        return out.to(x.dtype).view(shape)

    def add_norm_forward(self, x, delta, norm):
        x, h = norm.add_and_norm(x, delta)
        return x, self(h)


def profile_decode(model: GptOss, context: int = 128) -> None:
    """Print where one batch-1 decode step spends GPU time: kernels grouped by name, and the kernel count."""
    from torch.profiler import ProfilerActivity, profile

    model.setup_cache(1, context + 16)
    model.forward_with_cache(torch.randint(0, model.config.vocab_size, (1, context), device="cuda"), 0, last_only=True)
    ids = torch.randint(0, model.config.vocab_size, (1, 1), device="cuda")
    column = torch.tensor([context], device="cuda")
    pad = torch.zeros(1, dtype=torch.int64, device="cuda")
    for _ in range(2):
        model.decode_step(ids, column, pad)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        model.decode_step(ids, column, pad)
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type.name == "CUDA"]
    total_us = sum(e.device_time for e in kernels)
    print(f"\ndecode step, batch 1: {len(kernels)} GPU kernels, {total_us:.0f} us of kernel time")
    by_name: dict = {}
    for e in kernels:
        count, us = by_name.get(e.name, (0, 0.0))
        by_name[e.name] = (count + 1, us + e.device_time)
    for name, (count, us) in sorted(by_name.items(), key=lambda kv: -kv[1][1])[:45]:
        print(f"  {us:9.1f} us {count:5d}x  {name[:110]}")


def run(preset: str, skip_baseline: bool, load_dir: str | None, profile: bool = False) -> dict:
    torch.manual_seed(0)
    torch.cuda.reset_peak_memory_stats()
    config = GptOssConfig.from_name(preset)
    load_seconds = None
    if load_dir:
        start = time.perf_counter()
        model = GptOss.from_pretrained(load_dir, device="cuda", progress=False)
        load_seconds = time.perf_counter() - start
    else:
        model = GptOss.from_config(config, device="cuda").init_random_(0)
    if profile:
        profile_decode(model)
    model.setup_cache(1, 4096)
    torch.cuda.synchronize()
    result = {
        "preset": preset,
        "peak_gb_after_load_with_4k_cache": torch.cuda.max_memory_allocated() / 1e9,
        "memory_report_gb": {k: v / 1e9 for k, v in model.memory_report(4096, 1).items()},
        "load_seconds": load_seconds,
    }
    bandwidth = copy_bandwidth()
    floor_s = decode_bytes_per_token(model) / bandwidth
    result["copy_bandwidth_tb_s"] = bandwidth / 1e12
    result["decode_floor_ms"] = floor_s * 1e3
    result["prefill_2k_tok_s"] = 2048 / time_prefill(model, 2048)
    for batch in (1, 32):
        result[f"decode_b{batch}_eager_tok_s"] = batch / time_decode(model, batch, 128, 20, graph=False)
        result[f"decode_b{batch}_graph_tok_s"] = batch / time_decode(model, batch, 128, 50, graph=True)
    result["decode_b1_pct_of_floor"] = 100 * result["decode_b1_graph_tok_s"] * floor_s
    if not skip_baseline:
        for layer in model.model.layers:
            layer.mlp = DenseExperts(layer.mlp)  # the MXFP4 experts are freed as each layer is replaced
        torch.cuda.synchronize()
        result["baseline_peak_gb"] = torch.cuda.max_memory_allocated() / 1e9
        result["baseline_prefill_2k_tok_s"] = 2048 / time_prefill(model, 2048)
        for batch in (1, 32):
            result[f"baseline_decode_b{batch}_tok_s"] = batch / time_decode(model, batch, 128, 10, graph=False)
    del model
    torch.cuda.empty_cache()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", action="append", choices=["gpt-oss-20b", "gpt-oss-120b"])
    parser.add_argument("--json")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--load-from-disk", help="save the random model here first, then time from_pretrained")
    parser.add_argument("--profile", action="store_true", help="print the decode step's GPU kernels by time first")
    parser.add_argument("--profile-only", action="store_true", help="only the profile, no timings")
    args = parser.parse_args()
    if args.profile_only:
        for preset in args.preset or ["gpt-oss-20b"]:
            profile_decode(GptOss.from_config(GptOssConfig.from_name(preset), device="cuda").init_random_(0))
        return
    results = []
    for preset in args.preset or ["gpt-oss-20b"]:
        load_dir = None
        if args.load_from_disk and preset == "gpt-oss-20b":
            GptOss.from_config(GptOssConfig.from_name(preset), device="cuda").init_random_(0).save_pretrained(args.load_from_disk, shards=3)
            torch.cuda.empty_cache()
            load_dir = args.load_from_disk
        results.append(run(preset, args.skip_baseline or preset == "gpt-oss-120b", load_dir, args.profile))
        print(json.dumps(results[-1], indent=1), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    print("\npreset        peakGB  prefill2k tok/s  dec b1 tok/s (graph/eager)  dec b32 tok/s  %floor  baseline b1/b32/prefill")
    for r in results:
        base = (f"{r.get('baseline_decode_b1_tok_s', float('nan')):.1f}/{r.get('baseline_decode_b32_tok_s', float('nan')):.1f}/"
                f"{r.get('baseline_prefill_2k_tok_s', float('nan')):.0f}")
        print(f"{r['preset']:13s} {r['peak_gb_after_load_with_4k_cache']:6.2f} {r['prefill_2k_tok_s']:16.0f} "
              f"{r['decode_b1_graph_tok_s']:12.1f}/{r['decode_b1_eager_tok_s']:<12.1f} {r['decode_b32_graph_tok_s']:13.1f} "
              f"{r['decode_b1_pct_of_floor']:6.1f}  {base}")


if __name__ == "__main__":
    main()
