"""The GPT-OSS mixture-of-experts layer on MXFP4 experts, in float64. Twin of ``mxfp4.triton_kernels.moe``.

The math follows transformers' ``GptOssTopKRouter`` + ``GptOssExperts`` (modeling_gpt_oss.py, checked against
transformers 5.23), which is the GPT-OSS release's own definition:

    logits   = x @ Wr.T + br                                   [T, E]
    top-k    : the k largest logits per token; equal logits go to the lowest expert index first
    weights  = softmax over the k selected logits (not over all E)
    gate_up  = x @ W1[e].T + b1[e]                             [rows, 2I]; gate = even columns, up = odd columns
    gate     = min(gate, limit);  up = clamp(up, -limit, limit)
    act      = (up + 1) * gate * sigmoid(alpha * gate)          [rows, I]
    y_e      = act @ W2[e].T + b2[e]                            [rows, H]
    y        = sum over the k slots of weight_k * y_e           [T, H]

Expert weights are stored as in the GPT-OSS checkpoint: ``W1`` blocks ``uint8 [E, 2I, ceil(H/32), 16]`` (rows are
output features, quantized along H) and ``W2`` blocks ``uint8 [E, H, ceil(I/32), 16]`` (quantized along I).

NaN logits are treated as -inf when choosing experts (so a NaN never picks an expert index out of range); the
softmax still sees the NaN, so the token's output is NaN.

This function is the plain per-expert loop. The kernels' decomposition (route -> sort by expert -> grouped gate_up
+ SwiGLU -> grouped down x weight -> combine) has one twin per kernel: ``moe_routing``, ``moe_sort``,
``moe_gate_up``, ``moe_down``, ``moe_combine``.
"""

from __future__ import annotations

import numpy as np

from .dequantize import dequantize
from .moe_gate_up import SWIGLU_ALPHA, SWIGLU_LIMIT, swiglu
from .moe_routing import route

__all__ = ["moe", "route", "swiglu", "SWIGLU_ALPHA", "SWIGLU_LIMIT"]


def moe(
    x: np.ndarray,
    router_w: np.ndarray,
    router_b: np.ndarray,
    w1_blocks: np.ndarray,
    w1_scales: np.ndarray,
    b1: np.ndarray,
    w2_blocks: np.ndarray,
    w2_scales: np.ndarray,
    b2: np.ndarray,
    top_k: int,
    *,
    swiglu_alpha: float = SWIGLU_ALPHA,
    swiglu_limit: float = SWIGLU_LIMIT,
) -> np.ndarray:
    """float64 GPT-OSS MoE of ``x [T, H]`` (see the module docstring for the math).

    Args:
        x: ``[T, H]`` activations (any float dtype; used as float64).
        router_w: ``[E, H]``; router_b: ``[E]``.
        w1_blocks: ``uint8 [E, 2I, ceil(H/32), 16]``; w1_scales: ``uint8 [E, 2I, ceil(H/32)]``; b1: ``[E, 2I]``.
        w2_blocks: ``uint8 [E, H, ceil(I/32), 16]``; w2_scales: ``uint8 [E, H, ceil(I/32)]``; b2: ``[E, H]``.
        top_k: experts per token, ``1 <= top_k <= E``.

    Returns:
        float64 ``[T, H]``. Each expert is dequantized on its own (one at a time), only if a token chose it.

    >>> from mxfp4.reference import quantize
    >>> rng = np.random.default_rng(0)
    >>> E, H, I = 3, 64, 32
    >>> w1b, w1s = quantize(rng.standard_normal((E, 2 * I, H)))
    >>> w2b, w2s = quantize(rng.standard_normal((E, H, I)))
    >>> moe(rng.standard_normal((5, H)), rng.standard_normal((E, H)), np.zeros(E), w1b, w1s, np.zeros((E, 2 * I)),
    ...     w2b, w2s, np.zeros((E, H)), 2).shape
    (5, 64)
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"x must be [T, H], got shape {x.shape}")
    tokens, hidden = x.shape
    num_experts = np.shape(router_w)[0]
    if not 1 <= top_k <= num_experts:
        raise ValueError(f"top_k = {top_k} must be in [1, {num_experts}] (the number of experts)")
    b1 = np.asarray(b1, dtype=np.float64)
    b2 = np.asarray(b2, dtype=np.float64)
    intermediate = b1.shape[-1] // 2
    out = np.zeros((tokens, hidden), dtype=np.float64)
    if tokens == 0:
        return out
    ids, weights = route(x, router_w, router_b, top_k)
    for expert in range(num_experts):
        token_idx, slot = np.nonzero(ids == expert)
        if token_idx.size == 0:
            continue
        w1 = dequantize(w1_blocks[expert], w1_scales[expert], np.float64, hidden)  # [2I, H]
        gate_up = x[token_idx] @ w1.T + b1[expert]
        act = swiglu(gate_up, swiglu_alpha, swiglu_limit)
        w2 = dequantize(w2_blocks[expert], w2_scales[expert], np.float64, intermediate)  # [H, I]
        y = act @ w2.T + b2[expert]
        np.add.at(out, token_idx, weights[token_idx, slot][:, None] * y)
    return out
