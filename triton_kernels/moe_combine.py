"""The MoE's weighted combine: ``out[t] = sum over slots of contributions[t * k + slot]``, cast to the output dtype.

Twin of ``mxfp4.reference.moe_combine.combine``. The routing weights were already applied in ``moe_down``'s
epilogue; here the k float32 rows of a token are added in slot order (0, 1, ..., k-1) and rounded once to the
output dtype. A fixed order instead of atomics: the result is bitwise reproducible run to run.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mxfp4.dispatch import triton_interpreter_enabled

from .moe_common import cast

COMBINE_BLOCK_T = 16
COMBINE_BLOCK_H = 128
COMBINE_NUM_WARPS = 4


def combine(contributions: torch.Tensor, top_k: int, out_dtype: torch.dtype) -> torch.Tensor:
    """``[T, H]`` in ``out_dtype`` from ``contributions float32 [T * k, H]`` (contiguous, token-major pairs).

    >>> combine(torch.ones(6, 4), 3, torch.float32)      # 2 tokens, each the sum of 3 rows of ones
    tensor([[3., 3., 3., 3.],
            [3., 3., 3., 3.]])
    """
    pairs, hidden = contributions.shape
    tokens = pairs // top_k
    out = torch.empty((tokens, hidden), dtype=out_dtype, device=contributions.device)
    grid = (triton.cdiv(tokens, COMBINE_BLOCK_T), triton.cdiv(hidden, COMBINE_BLOCK_H))
    combine_kernel[grid](
        contributions, out, tokens, hidden, top_k,
        BLOCK_T=COMBINE_BLOCK_T, BLOCK_H=COMBINE_BLOCK_H, INTERPRETED=triton_interpreter_enabled(),
        num_warps=COMBINE_NUM_WARPS,
    )
    return out


def compile_specs(activation: str) -> list[dict]:
    return [
        {
            "name": f"moe_combine_{activation}",
            "fn": combine_kernel,
            "signature": {
                "contributions_ptr": "*fp32", "out_ptr": f"*{activation}", "tokens": "i32", "hidden": "i32",
                "top_k": "i32", "BLOCK_T": "constexpr", "BLOCK_H": "constexpr", "INTERPRETED": "constexpr",
            },
            "constexprs": {"BLOCK_T": COMBINE_BLOCK_T, "BLOCK_H": COMBINE_BLOCK_H, "INTERPRETED": False},
            "divisible_by_16": ["hidden"],
            "num_warps": COMBINE_NUM_WARPS,
            "num_stages": 1,
        }
    ]


@triton.jit
def combine_kernel(
    contributions_ptr, out_ptr, tokens, hidden, top_k,
    BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr, INTERPRETED: tl.constexpr,
):
    token = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    feature = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    ok = (token < tokens)[:, None] & (feature < hidden)[None, :]
    total = tl.zeros((BLOCK_T, BLOCK_H), dtype=tl.float32)
    for slot in range(0, top_k):
        row = token.to(tl.int64) * top_k + slot
        total += tl.load(contributions_ptr + row[:, None] * hidden + feature[None, :], mask=ok, other=0.0)
    out = out_ptr + token.to(tl.int64)[:, None] * hidden + feature[None, :]
    tl.store(out, cast(total, out_ptr.dtype.element_ty, INTERPRETED), mask=ok)
