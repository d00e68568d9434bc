"""MoE routing: router logits, top-k and the softmax over the k selected logits, in one kernel.

Twin of ``mxfp4.reference.moe_routing.route``. One program handles ``BLOCK_T`` tokens: the router GEMM
``x @ Wr.T + br`` accumulates in float32 with an IEEE float32 dot on every path (routing decisions flip on tiny
logit differences, so the router never sees bf16-rounded activations), then k rounds of "largest remaining
logit, lowest expert index among equals" pick the experts, and the softmax runs over the k picked logits.
Fixed grid, no host synchronization: the launch is CUDA-graph capturable. For a decode step (all tokens in one
program) the same kernel also sorts the (token, slot) pairs by expert, replacing the ``moe_sort`` launch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .moe_common import next_power_of_2_at_least

#: Tokens per program and the router GEMM's K step. Tensor-core dots need every dim >= 16.
ROUTE_BLOCK_T = 16
ROUTE_BLOCK_H = 64
ROUTE_NUM_WARPS = 4


def route(x: torch.Tensor, router_w: torch.Tensor, router_b: torch.Tensor, top_k: int, *, sort: bool = False):
    """``(expert_ids int32 [T, k], weights float32 [T, k])`` of ``x [T, H]`` for router ``[E, H]`` + ``[E]``.

    Slots come in decreasing logit order; equal logits go to the lowest expert index first; NaN logits rank as
    -inf (never an out-of-range expert) while the softmax still sees them.

    With ``sort=True`` and ``T <= ROUTE_BLOCK_T`` (a decode step) the single program also sorts the pairs by
    expert, saving the ``moe_sort`` launch, and returns ``(ids, weights, counts int32 [E], sorted_pairs int32 [P])``
    exactly as ``moe_sort.sort_by_expert`` would.

    >>> ids, w = route(torch.randn(3, 64), torch.randn(8, 64), torch.zeros(8), 2)    # [3, 2] int32, [3, 2] fp32
    """
    tokens, hidden = x.shape
    num_experts = router_w.shape[0]
    fused_sort = sort and tokens <= ROUTE_BLOCK_T
    if sort and not fused_sort:
        raise ValueError(f"route(sort=True) sorts in one program: at most {ROUTE_BLOCK_T} tokens, got {tokens}")
    ids = torch.empty((tokens, top_k), dtype=torch.int32, device=x.device)
    weights = torch.empty((tokens, top_k), dtype=torch.float32, device=x.device)
    if fused_sort:
        counts = torch.empty((num_experts,), dtype=torch.int32, device=x.device)
        sorted_pairs = torch.empty((tokens * top_k,), dtype=torch.int32, device=x.device)
    else:  # never touched (FUSED_SORT is a constexpr); any valid int32 pointer will do
        counts = sorted_pairs = ids
    router_w = router_w.contiguous()
    router_b = router_b.contiguous()
    grid = (triton.cdiv(tokens, ROUTE_BLOCK_T),)
    route_topk_softmax_kernel[grid](
        x, router_w, router_b, ids, weights, counts, sorted_pairs,
        tokens, hidden, num_experts, top_k,
        x.stride(0), x.stride(1),
        BLOCK_T=ROUTE_BLOCK_T, BLOCK_H=ROUTE_BLOCK_H, BLOCK_E=route_block_e(num_experts), FUSED_SORT=fused_sort,
        num_warps=ROUTE_NUM_WARPS,
    )
    if fused_sort:
        return ids, weights, counts, sorted_pairs
    return ids, weights


def route_block_e(num_experts: int) -> int:
    """Experts held in one register tile: a power of two, at least 16 (the dot's minimum N)."""
    return next_power_of_2_at_least(num_experts, 16)


#: As Triton's launcher specializes them for contiguous GPT-OSS activations (H = 2880, E = 32 / 128).
GPT_OSS_DIVISIBLE_BY_16 = ["hidden", "num_experts", "stride_xt"]


def compile_specs(activation: str, num_experts: int) -> list[dict]:
    """Cubin specs (see ``mxfp4.triton_kernels.moe.compile_specs``) for activations of Triton type ``activation``:
    the plain router and the decode variant that also sorts the pairs by expert. Contiguous activations: the
    launcher sees ``stride_xh == 1`` and specializes it, so the spec does too."""
    signature = {
        "x_ptr": f"*{activation}", "router_w_ptr": f"*{activation}", "router_b_ptr": f"*{activation}",
        "ids_ptr": "*i32", "weights_ptr": "*fp32", "counts_ptr": "*i32", "sorted_pairs_ptr": "*i32",
        "tokens": "i32", "hidden": "i32", "num_experts": "i32", "top_k": "i32",
        "stride_xt": "i32", "stride_xh": "constexpr",
        "BLOCK_T": "constexpr", "BLOCK_H": "constexpr", "BLOCK_E": "constexpr", "FUSED_SORT": "constexpr",
    }
    return [
        {
            "name": f"moe_route_topk_softmax{'_sort' if fused else ''}_{activation}_e{num_experts}",
            "fn": route_topk_softmax_kernel,
            "signature": signature,
            "constexprs": {"stride_xh": 1, "BLOCK_T": ROUTE_BLOCK_T, "BLOCK_H": ROUTE_BLOCK_H,
                           "BLOCK_E": route_block_e(num_experts), "FUSED_SORT": fused},
            "divisible_by_16": GPT_OSS_DIVISIBLE_BY_16,
            "num_warps": ROUTE_NUM_WARPS,
            "num_stages": 1,
        }
        for fused in (False, True)
    ]


@triton.jit
def route_topk_softmax_kernel(
    x_ptr, router_w_ptr, router_b_ptr, ids_ptr, weights_ptr, counts_ptr, sorted_pairs_ptr,
    tokens, hidden, num_experts, top_k,
    stride_xt, stride_xh,
    BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_E: tl.constexpr, FUSED_SORT: tl.constexpr,
):
    pid = tl.program_id(0)
    token = pid * BLOCK_T + tl.arange(0, BLOCK_T)
    token_ok = token < tokens
    expert = tl.arange(0, BLOCK_E)
    expert_ok = expert < num_experts

    logits = tl.zeros((BLOCK_T, BLOCK_E), dtype=tl.float32)
    for h0 in range(0, hidden, BLOCK_H):
        h = h0 + tl.arange(0, BLOCK_H)
        h_ok = h < hidden
        x = tl.load(x_ptr + token[:, None] * stride_xt + h[None, :] * stride_xh,
                    mask=token_ok[:, None] & h_ok[None, :], other=0.0).to(tl.float32)
        w_t = tl.load(router_w_ptr + expert[None, :] * hidden + h[:, None],
                      mask=expert_ok[None, :] & h_ok[:, None], other=0.0).to(tl.float32)
        logits = tl.dot(x, w_t, logits, input_precision="ieee")
    logits += tl.load(router_b_ptr + expert, mask=expert_ok, other=0.0).to(tl.float32)[None, :]

    # Selection key: NaN ranks as -inf. Padded experts are excluded by `available`, not by a value, so a row of
    # -inf logits still picks real experts (lowest index first).
    key = tl.where(logits != logits, float("-inf"), logits)
    available = tl.broadcast_to(expert_ok[None, :], (BLOCK_T, BLOCK_E))
    rank = tl.full((BLOCK_T, BLOCK_E), -1, dtype=tl.int32)
    for slot in range(0, top_k):
        best = tl.max(tl.where(available, key, float("-inf")), axis=1)
        is_best = available & (key == best[:, None])
        chosen = tl.min(tl.where(is_best, expert[None, :], BLOCK_E), axis=1)
        picked = expert[None, :] == chosen[:, None]
        rank = tl.where(picked, slot, rank)
        available = available & ~picked

    # Softmax over the picked logits only; the slot-0 logit is their maximum.
    top = tl.sum(tl.where(rank == 0, logits, 0.0), axis=1)
    numerators = tl.where(rank >= 0, tl.exp(logits - top[:, None]), 0.0)
    probs = numerators / tl.sum(numerators, axis=1)[:, None]
    for slot in range(0, top_k):
        in_slot = rank == slot
        slot_expert = tl.sum(tl.where(in_slot, expert[None, :], 0), axis=1)
        slot_weight = tl.sum(tl.where(in_slot, probs, 0.0), axis=1)
        tl.store(ids_ptr + token * top_k + slot, slot_expert, mask=token_ok)
        tl.store(weights_ptr + token * top_k + slot, slot_weight, mask=token_ok)

    if FUSED_SORT:
        # All tokens are in this one program, so the sort by expert needs no second pass over memory. A token
        # picks an expert at most once, so within expert e the stable (token-major) order is the token order:
        # pair (t, slot) lands at offset[e] + (tokens before t that picked e).
        chose = ((rank >= 0) & token_ok[:, None]).to(tl.int32)
        counts = tl.sum(chose, axis=0)
        tl.store(counts_ptr + expert, counts, mask=expert_ok)
        sorted_row = (tl.cumsum(counts, axis=0) - counts)[None, :] + tl.cumsum(chose, axis=0) - chose
        pair = token[:, None] * top_k + rank
        tl.store(sorted_pairs_ptr + sorted_row, pair, mask=chose != 0)
