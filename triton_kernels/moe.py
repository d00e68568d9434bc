"""The GPT-OSS MoE on MXFP4 experts as Triton launches. Twin of ``mxfp4.reference.moe``.

Decode (``uses_gemv``: up to 8 pairs ``T * k``, up to 32 with many experts): three launches, each bound by reading
the hit experts' weights once.
    1. moe_routing.route                  router GEMM + top-k + softmax over the k picked logits  [T, k] ids, weights
    2. moe_gate_up_gemv.gate_up_swiglu_gemv  per (pair, feature block): W1 rows streamed on the CUDA cores (sm_90,
                                          up to 8 pairs: read by TMA, pipelined),
                                          bias + SwiGLU fused                                     act [P, I] pair order
    3. moe_down_gemv.down_combine_gemv    per (pair, feature block): W2 rows streamed on the CUDA cores (sm_90,
                                          up to 8 pairs, once TMA_DOWN_ON: by TMA), bias
                                          and routing weight; the last of a token's k programs
                                          adds the k contributions in slot order                 [T, H] x.dtype
Otherwise (prefill): five (T <= 16: four) launches with tensor-core grouped GEMMs over rows sorted by expert.
    1. moe_routing.route            router GEMM + top-k + softmax over the k picked logits   [T, k] ids, weights
    2. moe_sort.sort_by_expert      histogram + prefix sum + stable scatter of the T*k pairs  counts [E], map [P]
                                    (for T <= 16 tokens, fused into launch 1)
    3. moe_gate_up.gate_up_swiglu   grouped MXFP4 GEMM over all experts, bias + SwiGLU fused  act [P, I]
    4. moe_down.down                grouped MXFP4 GEMM, bias, times the routing weight        [P, H] float32
    5. moe_combine.combine          sum of each token's k rows in slot order, cast            [T, H] x.dtype

Every grid is fixed by (T, k, E, H, I) alone -- no ``.item()``, no host sync -- so a decode step can be captured in
a CUDA graph. Only the experts that received tokens have weight tiles read (empty experts own no row tiles).

Numerics per path: the decode GEMVs multiply and accumulate in float32 on every path (activations as given);
the prefill GEMMs on ``hopper`` and ``bf16`` feed bf16 operands to the tensor cores (activations rounded to bf16,
MXFP4 values exact in bf16) with float32 accumulation. ``hopper`` / ``bf16`` keep the SwiGLU activations in
bf16; ``fp32`` does everything in float32 with IEEE dots (no tf32, no fp16/bf16 intermediates) and compiles for
sm_75. Routing is float32 IEEE on all paths. The result is bitwise deterministic for a given input and path.
"""

from __future__ import annotations

import dataclasses

import torch

from mxfp4.dispatch import Backend

from . import moe_combine, moe_down, moe_down_gemv, moe_gate_up, moe_gate_up_gemv, moe_routing, moe_sort
from .launch import TRITON_TYPES, tma_readable
from .moe_common import next_power_of_2_at_least
from .rms_norm import AddNorm

#: Pairs (tokens * k) up to which the weight-streaming GEMVs may run (decode) ...
GEMV_MAX_PAIRS = 32
#: ... and when they do. A GEMV decodes each hit expert once per pair, a tensor-core tile once per 16 rows of an
#: expert (with the table decode, mx.decode_tile_bf16, at about the GEMV's instructions per element). Whole layer
#: on an H100, GEMVs / tiles in us (bench/tune.py moe-crossover, session 5): E = 32: T = 2 87 / 120, T = 4 156 /
#: 148, T = 8 265 / 209; E = 128: T = 4 159 / 157, T = 8 270 / 277. So the GEMVs run up to GEMV_ALWAYS_PAIRS
#: pairs, and beyond that while the experts outnumber the pairs EXPERTS_PER_PAIR to 1 (most pairs then hit an
#: expert of their own, and the tiles would decode about as often).
GEMV_ALWAYS_PAIRS = 8
EXPERTS_PER_PAIR = 4
#: Pairs up to which the tensor-core GEMMs use the small-M ("decode") tiles.
DECODE_MAX_PAIRS = 64


@dataclasses.dataclass(frozen=True)
class GemmConfig:
    """Tile schedule of a grouped GEMM (``block_k`` counts MXFP4 elements along K: a multiple of 32)."""

    block_m: int
    block_n: int
    block_k: int
    num_warps: int
    num_stages: int
    fp32_dot: bool
    block_e: int = 16

    def constexprs(self) -> dict:
        return {"BLOCK_M": self.block_m, "BLOCK_N": self.block_n, "BLOCK_K": self.block_k, "BLOCK_E": self.block_e,
                "FP32_DOT": self.fp32_dot, "INTERPRETED": False}


@dataclasses.dataclass(frozen=True)
class GemvConfig:
    """Launch shape of a decode GEMV: ``block_n`` output features per program (gate_up: 2 * block_n W1 rows;
    down: block_n W2 rows of one pair's expert), ``block_g`` MX blocks (32 elements, 16 bytes) per row per step."""

    block_n: int
    block_g: int
    num_warps: int
    num_stages: int = 1

    def constexprs(self) -> dict:
        return {"BLOCK_N": self.block_n, "BLOCK_G": self.block_g, "INTERPRETED": False}


# Decode GEMVs, the same on every path (float32 FMAs): (gate_up, down) launch shapes by the number of pairs,
# from bench/tune.py on an H100 (T = 1 / 8 tokens, E = 32, top-4, H = I = 2880; us per launch, weights past L2).
# A few pairs want many short programs (gate_up 4 pairs x 360 feature blocks); 32 pairs already fill the GPU, so
# wider row tiles that read each activation step once for more rows win there. (An L2 prefetch of the steps
# ahead lost: T=1 layer 48.7 -> 57.1 us, bench/RESULTS.md session 9.)
GEMV_SCHEDULES = (
    # (most pairs, gate_up, down): T=1 gate_up 29.7 us (was 30.9 with 8x16x4); down 18.2 us (session 5: 8 rows of
    # one pair per program, 12 shapes; the former k-experts-per-program byte decode 19.4)
    (8, GemvConfig(8, 16, 8), GemvConfig(8, 8, 4)),
    # T=8: gate_up 169 us (was 195), down 89.6 (was 101)
    (GEMV_MAX_PAIRS, GemvConfig(32, 4, 4), GemvConfig(16, 8, 4)),
)


#: sm_90 (the hopper path), up to GEMV_ALWAYS_PAIRS pairs: gate_up reads W1 by TMA, 3 stages deep
#: (moe_gate_up_gemv.gate_up_swiglu_gemv_tma_kernel). Session 10 probe, T=1, E=32: 27.1 us with the register GEMV
#: above, 24.1 with this shape (8x16: 24.7, 16x16: 26.2, 4 stages: 26.7-27.6, 8 warps 27.0-30.0).
TMA_GATE_UP = GemvConfig(32, 8, 4, num_stages=3)
#: ... and down can read W2 by TMA the same way (moe_down_gemv.down_combine_gemv_tma_kernel), at this shape once
#: TMA_DOWN_ON: off until an H100 has timed it against the register GEMV (session 11 wrote the kernel and its tests
#: with no device lent; bench/results/2026-12-08-h100-session11/probe_moe_tma.py sweeps the shapes and the layer).
TMA_DOWN = GemvConfig(16, 8, 4, num_stages=3)
TMA_DOWN_ON = False


def gemv_schedule(pairs: int) -> tuple[GemvConfig, GemvConfig]:
    """The (gate_up, down) GEMV launch shapes for ``pairs = T * k`` rows."""
    for most_pairs, gate_up, down in GEMV_SCHEDULES:
        if pairs <= most_pairs:
            return gate_up, down
    return GEMV_SCHEDULES[-1][1:]

# (gate_up, down) tensor-core schedules per path and regime. Every K step decodes the [rows, BLOCK_K] weight tile
# once (gate_up: rows = 2 * BLOCK_N, gate and up interleaved) and issues one dot over BLOCK_K = 128 (64 bytes per
# weight row: one 16-byte load per thread per 8 rows). Prefill on sm_90: 128-row tiles on two warpgroups (wgmma;
# an expert's ~512 rows at 4096 tokens, E = 32, top-4 decode each weight 4 times), gate_up 128 x 128 accumulator
# columns = 64 features (the gate/up pairs), down 128 x 128; 3 stages of bf16 activations + packed bytes. bf16
# (sm_80-89, mma.sync): the same tiles with smaller shared-memory budgets. Small-M ("decode", 33-64 pairs):
# 16-row mma tiles, narrow N so the few experts hit still spread over the SMs. fp32: FMA dots on small tiles
# (sm_75 has 64 KB of shared memory), a correctness path. All chosen with ptxas reporting no spills (aot.py);
# starting points for the H100 session to tune.
_SCHEDULES = {
    (Backend.HOPPER, "decode"): (GemmConfig(16, 32, 128, 4, 3, False), GemmConfig(16, 64, 128, 4, 3, False)),
    (Backend.HOPPER, "prefill"): (GemmConfig(128, 64, 128, 8, 3, False), GemmConfig(128, 128, 128, 8, 3, False)),
    (Backend.BF16, "decode"): (GemmConfig(16, 32, 128, 4, 3, False), GemmConfig(16, 64, 128, 4, 3, False)),
    (Backend.BF16, "prefill"): (GemmConfig(128, 64, 64, 8, 3, False), GemmConfig(128, 128, 64, 8, 3, False)),
    (Backend.FP32, "decode"): (GemmConfig(16, 32, 64, 4, 2, True), GemmConfig(16, 32, 64, 4, 2, True)),
    (Backend.FP32, "prefill"): (GemmConfig(32, 32, 32, 4, 2, True), GemmConfig(32, 64, 32, 4, 2, True)),
}


def gemm_configs(backend: Backend, pairs: int, num_experts: int) -> tuple[GemmConfig, GemmConfig]:
    """The (gate_up, down) schedules for ``pairs = T * k`` rows over ``num_experts`` experts on ``backend``."""
    regime = "decode" if pairs <= DECODE_MAX_PAIRS else "prefill"
    block_e = next_power_of_2_at_least(num_experts, 16)
    return tuple(dataclasses.replace(c, block_e=block_e) for c in _SCHEDULES[(Backend(backend), regime)])


def moe(x, router_w, router_b, w1_blocks, w1_scales, b1, w2_blocks, w2_scales, b2, top_k, alpha, limit, backend,
        add_norm: AddNorm | None = None):
    """``[T, H]`` in ``x.dtype``: the GPT-OSS MoE of ``x [T, H]`` (T >= 1), arguments as validated by ``mxfp4.moe``.

    Args:
        x: ``[T, H]`` bf16 / fp16 / fp32. router_w ``[E, H]``, router_b ``[E]``, b1 ``[E, 2I]``, b2 ``[E, H]``: float.
        w1_blocks: ``uint8 [E, 2I, ceil(H/32), 16]``, w1_scales ``uint8 [E, 2I, ceil(H/32)]`` (gate/up interleaved).
        w2_blocks: ``uint8 [E, H, ceil(I/32), 16]``, w2_scales ``uint8 [E, H, ceil(I/32)]``.
        top_k: 1..E. alpha, limit: SwiGLU constants (float). backend: Backend.HOPPER / BF16 / FP32.
        add_norm: a :class:`rms_norm.AddNorm`: x is then the delta added to its residual, the experts see
            ``rms_norm(residual + x) * weight`` (computed inside the router's launch), and the result is the pair
            ``(residual + x, MoE output)``.

    >>> y = moe(x, rw, rb, w1.blocks, w1.scales, b1, w2.blocks, w2.scales, b2, 4, 1.702, 7.0, Backend.HOPPER)
    """
    backend = Backend(backend)
    num_experts = router_w.shape[0]
    tokens = x.shape[0]
    pairs = tokens * top_k
    act_dtype = torch.float32 if backend is Backend.FP32 else torch.bfloat16
    w1_blocks, w1_scales = _rows_contiguous(w1_blocks, w1_scales)
    w2_blocks, w2_scales = _rows_contiguous(w2_blocks, w2_scales)

    if uses_gemv(pairs, num_experts):
        expert_ids, routing_weights, *normed = moe_routing.route(x, router_w, router_b, top_k, add_norm=add_norm)
        if add_norm is not None:  # the router's launch stored the new residual and the rows the experts see
            new_residual, x = normed
        gate_up_config, down_config = gemv_schedule(pairs)
        tma = backend is Backend.HOPPER and pairs <= GEMV_ALWAYS_PAIRS
        tma_up = tma and tma_readable(w1_blocks)
        act = moe_gate_up_gemv.gate_up_swiglu_gemv(x, expert_ids, w1_blocks, w1_scales, b1.contiguous(), alpha,
                                                   limit, TMA_GATE_UP if tma_up else gate_up_config, act_dtype, tma_up)
        tma_down = tma and TMA_DOWN_ON and tma_readable(w2_blocks)
        out = moe_down_gemv.down_combine_gemv(act, expert_ids, routing_weights, w2_blocks, w2_scales,
                                              b2.contiguous(), TMA_DOWN if tma_down else down_config, x.dtype,
                                              tma_down)
        return out if add_norm is None else (new_residual, out)

    gate_up_config, down_config = gemm_configs(backend, pairs, num_experts)
    if tokens <= moe_routing.ROUTE_BLOCK_T:  # the decode router also sorts the pairs
        _, routing_weights, counts, sorted_pairs, *normed = moe_routing.route(x, router_w, router_b, top_k,
                                                                               sort=True, add_norm=add_norm)
    else:
        expert_ids, routing_weights, *normed = moe_routing.route(x, router_w, router_b, top_k, add_norm=add_norm)
        counts, sorted_pairs = moe_sort.sort_by_expert(expert_ids, num_experts)
    if add_norm is not None:
        new_residual, x = normed
    act = moe_gate_up.gate_up_swiglu(
        x, sorted_pairs, counts, top_k, w1_blocks, w1_scales, b1.contiguous(), alpha, limit, gate_up_config, act_dtype
    )
    contributions = moe_down.down(act, sorted_pairs, counts, routing_weights, w2_blocks, w2_scales, b2.contiguous(),
                                  down_config)
    out = moe_combine.combine(contributions, top_k, x.dtype)
    return out if add_norm is None else (new_residual, out)


def uses_gemv(pairs: int, num_experts: int) -> bool:
    """Whether ``pairs = T * k`` rows over ``num_experts`` experts run the decode GEMVs (else the tensor-core
    grouped GEMMs)."""
    return pairs <= GEMV_MAX_PAIRS and (pairs <= GEMV_ALWAYS_PAIRS or num_experts >= EXPERTS_PER_PAIR * pairs)


def _rows_contiguous(blocks: torch.Tensor, scales: torch.Tensor):
    """The kernels index ``[E, N]`` by strides but need each row's ``[G, 16]`` bytes and ``[G]`` scales contiguous."""
    if blocks.stride(-1) != 1 or blocks.stride(-2) != blocks.shape[-1]:
        blocks = blocks.contiguous()
    if scales.stride(-1) != 1:
        scales = scales.contiguous()
    return blocks, scales


# --- ahead-of-time compilation ----------------------------------------------------------------------------------

#: Expert counts of the released GPT-OSS models (gpt-oss-20b, gpt-oss-120b): BLOCK_E is specialized on them.
GPT_OSS_NUM_EXPERTS = (32, 128)


def compile_specs(backend: Backend, activation: torch.dtype | None = None,
                  num_experts: tuple[int, ...] = GPT_OSS_NUM_EXPERTS) -> list[dict]:
    """Everything the MoE launches on ``backend``, as cubin specs for ``triton_kernels/aot.py``.

    Each spec: ``{"name", "fn", "signature", "constexprs", "num_warps", "num_stages", "divisible_by_16"}``, with
    integer arguments specialized as Triton's launcher specializes them for contiguous GPT-OSS tensors (unit
    strides as constexpr 1, multiples of 16 listed). Activations (and router weight / biases) default to bf16 on
    the hopper / bf16 paths and float32 on the fp32 path (sm_75 has no bf16 arithmetic; loads of bf16 would still
    compile).
    """
    backend = Backend(backend)
    if not backend.uses_triton:
        return []
    if activation is None:
        activation = torch.float32 if backend is Backend.FP32 else torch.bfloat16
    act_type = TRITON_TYPES[activation]
    hidden_act_type = "fp32" if backend is Backend.FP32 else "bf16"
    specs = moe_combine.compile_specs(act_type)
    for _, gate_up_config, down_config in GEMV_SCHEDULES:  # the decode GEMVs do not depend on E
        for kernel, module, config in (
            (moe_gate_up_gemv.gate_up_swiglu_gemv_kernel, moe_gate_up_gemv, gate_up_config),
            (moe_down_gemv.down_combine_gemv_kernel, moe_down_gemv, down_config),
        ):
            name = (f"moe_{kernel.__name__.removesuffix('_kernel')}_{backend.value}_{act_type}"
                    f"_n{config.block_n}_g{config.block_g}_w{config.num_warps}")
            specs.append(_spec(name, kernel, module, config, act_type, hidden_act_type))
    if backend is Backend.HOPPER:
        for kernel, module, config in (
            (moe_gate_up_gemv.gate_up_swiglu_gemv_tma_kernel, moe_gate_up_gemv, TMA_GATE_UP),
            (moe_down_gemv.down_combine_gemv_tma_kernel, moe_down_gemv, TMA_DOWN),
        ):
            specs.append({
                "name": f"moe_{kernel.__name__.removesuffix('_kernel')}_{act_type}_n{config.block_n}"
                        f"_g{config.block_g}_w{config.num_warps}",
                "fn": kernel,
                "signature": module.tma_signature(act_type, hidden_act_type, config.block_n, config.block_g),
                "constexprs": {**config.constexprs(), "NUM_STAGES": config.num_stages},
                "num_warps": config.num_warps, "num_stages": config.num_stages,
                "divisible_by_16": [name for name in module.GPT_OSS_DIVISIBLE_BY_16 if "blocks_stride" not in name],
            })
    for experts in num_experts:
        specs += moe_routing.compile_specs(act_type, experts)
        specs += moe_sort.compile_specs(experts)
        for regime, pairs in (("decode", GEMV_MAX_PAIRS + 1), ("prefill", DECODE_MAX_PAIRS + 1)):
            gate_up_config, down_config = gemm_configs(backend, pairs, experts)
            for kernel, module, config in (
                (moe_gate_up.gate_up_swiglu_kernel, moe_gate_up, gate_up_config),
                (moe_down.down_kernel, moe_down, down_config),
            ):
                name = f"moe_{kernel.__name__.removesuffix('_kernel')}_{backend.value}_{regime}_{act_type}_e{experts}"
                specs.append(_spec(name, kernel, module, config, act_type, hidden_act_type))
    return specs


def _spec(name, kernel, module, config, act_type: str, hidden_act_type: str) -> dict:
    """One cubin spec of an MoE GEMM kernel (module: its file, with ``signature`` and the GPT-OSS specializations)."""
    return {
        "name": name,
        "fn": kernel,
        "signature": module.signature(act_type, hidden_act_type),
        "constexprs": {**module.GPT_OSS_CONSTEXPRS, **config.constexprs()},
        "num_warps": config.num_warps,
        "num_stages": config.num_stages,
        "divisible_by_16": module.GPT_OSS_DIVISIBLE_BY_16,
    }
