"""MoE benchmarks (pytest-benchmark): GPT-OSS decode latency vs its memory floor, prefill TFLOP/s vs baselines.

    python -m pytest bench/bench_moe.py --benchmark-json=bench/out/bench_moe.json      # GPU: GPT-OSS sizes
    python -m pytest bench/bench_moe.py -k cpu                                         # CPU: small smoke cases

GPU cases (skipped with a reason on a CPU):
  decode   T = 1, 2, 4, 8 tokens, E = 32 and 128, top-4, H = I = 2880, each forced Triton path. The step is captured
           in a CUDA graph (as the model's decode step will be) and timed with CUDA events. Reported in extra_info:
           latency_us, the experts actually hit and their bytes (MXFP4 blocks + scales + biases), achieved GB/s, the
           floor = hit bytes / copy bandwidth (a device-to-device copy, counting bytes read + written), and
           latency / floor (target <= 1.3).
  prefill  T = 4096 tokens, E = 32 and 128, top-4: TFLOP/s (2 * T * k * (H * 2I + I * H) flops) of each path, vs
           torch's bf16 matmul on one expert's gate_up GEMM shape ([T*k/E, H] @ [H, 2I], target >= 60%) and vs the
           loop-over-experts baseline with dequantized bf16 weights (target: faster; ratio reported).
Expert weights are random MXFP4 bytes with scales near 2**-6 (realistic magnitudes, no quantize pass needed).
"""

from __future__ import annotations

import functools
import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:  # the small CPU cases run the Triton kernels interpreted; must be set before mxfp4 imports them
    os.environ.setdefault("TRITON_INTERPRET", "1")

import mxfp4  # noqa: E402
from mxfp4.dispatch import BackendUnavailableError, check_backend  # noqa: E402
from mxfp4.moe_layer import route_torch, swiglu_torch  # noqa: E402
from mxfp4.tensor import MXFP4Tensor  # noqa: E402

HIDDEN = INTERMEDIATE = 2880
TOP_K = 4
PREFILL_TOKENS = 4096
DECODE_TOKENS = (1, 2, 4, 8)
EXPERT_COUNTS = (32, 128)
TRITON_PATHS = ("hopper", "bf16", "fp32")
CALLS_PER_GRAPH = 20  # decode steps per captured graph: amortizes the replay launch itself
SCALE_BYTES = (118, 123)  # E8M0 bytes 2**-9 .. 2**-5: weights of GPT-OSS-like magnitude

requires_gpu = pytest.mark.skipif(not HAS_CUDA, reason="GPT-OSS-size MoE benchmarks need a CUDA GPU")


def require_path(backend: str) -> None:
    if backend == "torch":
        return
    try:
        check_backend(mxfp4.Backend(backend), "cuda")
    except BackendUnavailableError as e:
        pytest.skip(str(e))


# --- data -------------------------------------------------------------------------------------------------------
def random_mxfp4(shape, generator, device) -> MXFP4Tensor:
    """Random MXFP4 bytes for a logical [E, N, K] weight quantized along K."""
    experts, rows, length = shape
    groups = -(-length // 32)
    blocks = torch.randint(0, 256, (experts, rows, groups, 16), dtype=torch.uint8, generator=generator, device=device)
    scales = torch.randint(*SCALE_BYTES, (experts, rows, groups), dtype=torch.uint8, generator=generator, device=device)
    return MXFP4Tensor.from_blocks(blocks, scales, shape, axis=2)


@functools.lru_cache(maxsize=2)
def gpt_oss_layer(experts: int, device: str = "cuda", hidden: int = HIDDEN, intermediate: int = INTERMEDIATE):
    """(router_w, router_b, w1, b1, w2, b2) of one GPT-OSS MoE layer, bf16 where the checkpoint is bf16."""
    gen = torch.Generator(device=device).manual_seed(experts)
    bf16 = dict(dtype=torch.bfloat16, device=device)
    router_w = (torch.randn(experts, hidden, generator=gen, device=device) * hidden**-0.5).to(**bf16)
    router_b = (torch.randn(experts, generator=gen, device=device) * 0.1).to(**bf16)
    w1 = random_mxfp4((experts, 2 * intermediate, hidden), gen, device)
    b1 = (torch.randn(experts, 2 * intermediate, generator=gen, device=device) * 0.1).to(**bf16)
    w2 = random_mxfp4((experts, hidden, intermediate), gen, device)
    b2 = (torch.randn(experts, hidden, generator=gen, device=device) * 0.1).to(**bf16)
    return router_w, router_b, w1, b1, w2, b2


def activations(tokens: int, hidden: int = HIDDEN, device: str = "cuda", seed: int = 0) -> torch.Tensor:
    gen = torch.Generator(device=device).manual_seed(seed + tokens)
    return torch.randn(tokens, hidden, generator=gen, device=device).to(torch.bfloat16)


def bytes_of_experts(expert_ids, w1: MXFP4Tensor, b1, w2: MXFP4Tensor, b2) -> int:
    """Bytes a perfect kernel must read for these experts: MXFP4 blocks + scales and biases of W1 and W2."""
    per_expert = (w1.nbytes + w2.nbytes) // w1.shape[0] + (b1[0].numel() * b1.element_size()) + (
        b2[0].numel() * b2.element_size()
    )
    return per_expert * len(expert_ids)


# --- timing -----------------------------------------------------------------------------------------------------
def cuda_time_us(fn, repeats: int = 20, warmup: int = 3) -> float:
    """Median microseconds of ``fn()`` timed with CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3)
    return sorted(times)[len(times) // 2]


@functools.lru_cache(maxsize=1)
def copy_bandwidth_gbs(nbytes: int = 1 << 30) -> float:
    """Device-to-device copy bandwidth, GB/s, counting bytes read + written."""
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    us = cuda_time_us(lambda: dst.copy_(src), repeats=10)
    return 2 * nbytes / us / 1e3


def synced(fn):
    def run():
        fn()
        torch.cuda.synchronize()

    return run


# --- decode -----------------------------------------------------------------------------------------------------
@requires_gpu
@pytest.mark.parametrize("backend", TRITON_PATHS)
@pytest.mark.parametrize("experts", EXPERT_COUNTS, ids=lambda e: f"E{e}")
@pytest.mark.parametrize("tokens", DECODE_TOKENS, ids=lambda t: f"T{t}")
def test_decode_latency(benchmark, backend, experts, tokens):
    require_path(backend)
    router_w, router_b, w1, b1, w2, b2 = gpt_oss_layer(experts)
    x = activations(tokens)

    def step():
        return mxfp4.moe(x, router_w, router_b, w1, b1, w2, b2, TOP_K, backend=backend)

    step()
    eager_us = cuda_time_us(step)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(CALLS_PER_GRAPH):
            step()
    graph_us = cuda_time_us(graph.replay) / CALLS_PER_GRAPH

    hit = torch.unique(route_torch(x, router_w, router_b, TOP_K)[0]).tolist()
    hit_bytes = bytes_of_experts(hit, w1, b1, w2, b2)
    bandwidth = copy_bandwidth_gbs()
    floor_us = hit_bytes / bandwidth / 1e3
    benchmark.extra_info.update(
        backend=backend, tokens=tokens, experts=experts, experts_hit=len(hit), hit_bytes=hit_bytes,
        latency_us=round(graph_us, 2), eager_latency_us=round(eager_us, 2),
        achieved_gbs=round(hit_bytes / graph_us / 1e3, 1), copy_bandwidth_gbs=round(bandwidth, 1),
        floor_us=round(floor_us, 2), latency_over_floor=round(graph_us / floor_us, 3), target_latency_over_floor=1.3,
    )
    benchmark.pedantic(synced(graph.replay), rounds=20, iterations=1, warmup_rounds=2)


# --- prefill ----------------------------------------------------------------------------------------------------
def moe_flops(tokens: int, top_k: int = TOP_K, hidden: int = HIDDEN, intermediate: int = INTERMEDIATE) -> int:
    return 2 * tokens * top_k * (hidden * 2 * intermediate + intermediate * hidden)


@functools.lru_cache(maxsize=None)
def one_expert_bf16_tflops(experts: int) -> float:
    """torch's bf16 matmul on one expert's gate_up GEMM: [T*k/E, H] @ [H, 2I]."""
    rows = PREFILL_TOKENS * TOP_K // experts
    a = torch.randn(rows, HIDDEN, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(HIDDEN, 2 * INTERMEDIATE, device="cuda", dtype=torch.bfloat16)
    us = cuda_time_us(lambda: a @ b)
    return 2 * rows * HIDDEN * 2 * INTERMEDIATE / us / 1e6


def loop_over_experts_bf16(x, router_w, router_b, w1_bf16, b1, w2_bf16, b2, top_k):
    """The baseline: route, then for each hit expert gather its tokens and run two bf16 matmuls (weights already
    dequantized to bf16 [E, 2I, H] / [E, H, I]), SwiGLU, weighted index_add."""
    ids, weights = route_torch(x, router_w, router_b, top_k)
    out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    for expert in range(w1_bf16.shape[0]):
        token_idx, slot = torch.nonzero(ids == expert, as_tuple=True)
        act = swiglu_torch((x[token_idx] @ w1_bf16[expert].T + b1[expert]).float(), 1.702, 7.0)
        y = act.to(torch.bfloat16) @ w2_bf16[expert].T + b2[expert]
        out.index_add_(0, token_idx, y.float() * weights[token_idx, slot, None])
    return out.to(x.dtype)


def dequantize_experts_bf16(w: MXFP4Tensor) -> torch.Tensor:
    """The baseline's bf16 copy of all experts, filled one expert at a time (no float64 copy of the whole)."""
    out = torch.empty(tuple(w.shape), dtype=torch.bfloat16, device=w.device)
    for expert in range(w.shape[0]):
        out[expert] = mxfp4.dequantize(w[expert], torch.bfloat16, backend="torch")
    return out


@functools.lru_cache(maxsize=None)
def loop_baseline_us(experts: int) -> float:
    router_w, router_b, w1, b1, w2, b2 = gpt_oss_layer(experts)
    w1_bf16 = dequantize_experts_bf16(w1)  # the baseline's memory cost, paid up front
    w2_bf16 = dequantize_experts_bf16(w2)
    x = activations(PREFILL_TOKENS)
    return cuda_time_us(lambda: loop_over_experts_bf16(x, router_w, router_b, w1_bf16, b1, w2_bf16, b2, TOP_K),
                        repeats=5)  # the bf16 copies are freed on return


@requires_gpu
@pytest.mark.parametrize("backend", TRITON_PATHS)
@pytest.mark.parametrize("experts", EXPERT_COUNTS, ids=lambda e: f"E{e}")
def test_prefill_throughput(benchmark, backend, experts):
    require_path(backend)
    router_w, router_b, w1, b1, w2, b2 = gpt_oss_layer(experts)
    x = activations(PREFILL_TOKENS)

    def step():
        return mxfp4.moe(x, router_w, router_b, w1, b1, w2, b2, TOP_K, backend=backend)

    us = cuda_time_us(step, repeats=10)
    tflops = moe_flops(PREFILL_TOKENS) / us / 1e6
    reference_tflops = one_expert_bf16_tflops(experts)
    baseline_us = loop_baseline_us(experts)
    benchmark.extra_info.update(
        backend=backend, tokens=PREFILL_TOKENS, experts=experts, latency_us=round(us, 1), tflops=round(tflops, 1),
        one_expert_bf16_matmul_tflops=round(reference_tflops, 1),
        fraction_of_bf16_matmul=round(tflops / reference_tflops, 3), target_fraction=0.6,
        loop_baseline_us=round(baseline_us, 1), speedup_over_loop_baseline=round(baseline_us / us, 2),
    )
    benchmark.pedantic(synced(step), rounds=5, iterations=1, warmup_rounds=1)


@requires_gpu
@pytest.mark.parametrize("experts", EXPERT_COUNTS, ids=lambda e: f"E{e}")
def test_prefill_loop_over_experts_bf16_baseline(benchmark, experts):
    router_w, router_b, w1, b1, w2, b2 = gpt_oss_layer(experts)
    w1_bf16 = dequantize_experts_bf16(w1)
    w2_bf16 = dequantize_experts_bf16(w2)
    x = activations(PREFILL_TOKENS)

    def step():
        return loop_over_experts_bf16(x, router_w, router_b, w1_bf16, b1, w2_bf16, b2, TOP_K)

    us = cuda_time_us(step, repeats=5)
    benchmark.extra_info.update(experts=experts, latency_us=round(us, 1),
                                tflops=round(moe_flops(PREFILL_TOKENS) / us / 1e6, 1))
    benchmark.pedantic(synced(step), rounds=3, iterations=1, warmup_rounds=1)


@requires_gpu
@pytest.mark.parametrize("experts", EXPERT_COUNTS, ids=lambda e: f"E{e}")
def test_one_expert_bf16_matmul(benchmark, experts):
    rows = PREFILL_TOKENS * TOP_K // experts
    a = torch.randn(rows, HIDDEN, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(HIDDEN, 2 * INTERMEDIATE, device="cuda", dtype=torch.bfloat16)
    benchmark.extra_info.update(shape=[rows, HIDDEN, 2 * INTERMEDIATE], tflops=round(one_expert_bf16_tflops(experts), 1))
    benchmark.pedantic(synced(lambda: a @ b), rounds=20, iterations=1, warmup_rounds=2)


# --- small CPU cases (smoke: the benchmark plumbing runs anywhere) -------------------------------------------------
SMALL = dict(experts=4, hidden=64, intermediate=32, tokens=6, top_k=2)


@pytest.mark.parametrize("backend", ["torch", "fp32"])
def test_cpu_small_moe(benchmark, backend):
    if HAS_CUDA:
        pytest.skip("CPU smoke case; the GPU cases above cover this machine")
    router_w, router_b, w1, b1, w2, b2 = gpt_oss_layer.__wrapped__(SMALL["experts"], "cpu", SMALL["hidden"],
                                                                   SMALL["intermediate"])
    x = activations(SMALL["tokens"], SMALL["hidden"], "cpu")
    out = benchmark.pedantic(
        lambda: mxfp4.moe(x, router_w, router_b, w1, b1, w2, b2, SMALL["top_k"], backend=backend),
        rounds=3, iterations=1,
    )
    assert out.shape == (SMALL["tokens"], SMALL["hidden"]) and torch.isfinite(out).all()
    benchmark.extra_info.update(backend=backend, **SMALL, interpreted=backend != "torch")
