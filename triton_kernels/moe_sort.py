"""Sort the (token, slot) pairs by expert: per-expert counts and a stable gather map. Twin of
``mxfp4.reference.moe_sort.sort_by_expert``.

One program (the pair count of one MoE call is at most tokens * k, a few ten thousand): a histogram of the expert
ids, its exclusive prefix sum (each expert's first sorted row), then every pair's sorted position = its expert's
offset + how many earlier pairs chose the same expert. Stable (pairs keep their token-major order inside an expert),
so the whole MoE is deterministic. No atomics, no host sync, fixed grid.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .moe_common import next_power_of_2_at_least

#: Pairs per loop step. One-hot tiles are [SORT_BLOCK_P, BLOCK_E].
SORT_BLOCK_P = 64
SORT_NUM_WARPS = 4


def sort_by_expert(expert_ids: torch.Tensor, num_experts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(counts int32 [E], sorted_pairs int32 [P])`` for ``expert_ids int32 [T, k]`` (P = T * k).

    ``sorted_pairs[r]`` is the flat pair index ``t * k + slot`` of sorted row r; expert e owns sorted rows
    ``[sum(counts[:e]), sum(counts[:e + 1]))``.

    >>> sort_by_expert(torch.tensor([[2, 0], [0, 1]], dtype=torch.int32), 3)
    (tensor([2, 1, 1], dtype=torch.int32), tensor([1, 2, 3, 0], dtype=torch.int32))
    """
    pairs = expert_ids.numel()
    counts = torch.empty((num_experts,), dtype=torch.int32, device=expert_ids.device)
    sorted_pairs = torch.empty((pairs,), dtype=torch.int32, device=expert_ids.device)
    sort_by_expert_kernel[(1,)](
        expert_ids, counts, sorted_pairs, pairs, num_experts,
        BLOCK_P=SORT_BLOCK_P, BLOCK_E=sort_block_e(num_experts), num_warps=SORT_NUM_WARPS,
    )
    return counts, sorted_pairs


def sort_block_e(num_experts: int) -> int:
    return next_power_of_2_at_least(num_experts, 16)


def compile_specs(num_experts: int) -> list[dict]:
    return [
        {
            "name": f"moe_sort_by_expert_e{num_experts}",
            "fn": sort_by_expert_kernel,
            "signature": {
                "expert_ids_ptr": "*i32", "counts_ptr": "*i32", "sorted_pairs_ptr": "*i32",
                "pairs": "i32", "num_experts": "i32", "BLOCK_P": "constexpr", "BLOCK_E": "constexpr",
            },
            "constexprs": {"BLOCK_P": SORT_BLOCK_P, "BLOCK_E": sort_block_e(num_experts)},
            "divisible_by_16": ["num_experts"],
            "num_warps": SORT_NUM_WARPS,
            "num_stages": 1,
        }
    ]


@triton.jit
def sort_by_expert_kernel(
    expert_ids_ptr, counts_ptr, sorted_pairs_ptr, pairs, num_experts,
    BLOCK_P: tl.constexpr, BLOCK_E: tl.constexpr,
):
    expert = tl.arange(0, BLOCK_E)
    counts = tl.zeros((BLOCK_E,), dtype=tl.int32)
    for p0 in range(0, pairs, BLOCK_P):
        pair = p0 + tl.arange(0, BLOCK_P)
        ids = tl.load(expert_ids_ptr + pair, mask=pair < pairs, other=-1)
        counts += tl.sum((ids[:, None] == expert[None, :]).to(tl.int32), axis=0)
    tl.store(counts_ptr + expert, counts, mask=expert < num_experts)

    next_row = tl.cumsum(counts, axis=0) - counts  # each expert's next free sorted row
    for p0 in range(0, pairs, BLOCK_P):
        pair = p0 + tl.arange(0, BLOCK_P)
        pair_ok = pair < pairs
        ids = tl.load(expert_ids_ptr + pair, mask=pair_ok, other=-1)
        one_hot = (ids[:, None] == expert[None, :]).to(tl.int32)
        # Inclusive running count per expert down the chunk: pair i is the rank-th of its expert in this chunk.
        rank = tl.cumsum(one_hot, axis=0)
        row = tl.sum(one_hot * (next_row[None, :] + rank - 1), axis=1)
        tl.store(sorted_pairs_ptr + row, pair, mask=pair_ok)
        next_row += tl.sum(one_hot, axis=0)
