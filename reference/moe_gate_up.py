"""Grouped gate_up GEMM + GPT-OSS SwiGLU over rows sorted by expert. Twin of ``mxfp4.triton_kernels.moe_gate_up``."""

from __future__ import annotations

import numpy as np

from .dequantize import dequantize
from .moe_sort import expert_rows

SWIGLU_ALPHA = 1.702
SWIGLU_LIMIT = 7.0


def swiglu(gate_up: np.ndarray, alpha: float = SWIGLU_ALPHA, limit: float = SWIGLU_LIMIT) -> np.ndarray:
    """GPT-OSS clamped SwiGLU of interleaved ``gate_up [..., 2I]`` (gate even, up odd) -> ``[..., I]`` float64.

    As transformers' ``GptOssExperts._apply_gate``: the gate is clamped from above only, the up projection on
    both sides, then ``(up + 1) * gate * sigmoid(alpha * gate)``.

    >>> swiglu(np.array([[10.0, -9.0]])).round(3).tolist()   # gate -> 7, up -> -7: (1 - 7) * 7 * sigmoid(11.9)
    [[-42.0]]
    """
    gate_up = np.asarray(gate_up, dtype=np.float64)
    gate = np.minimum(gate_up[..., 0::2], limit)
    up = np.clip(gate_up[..., 1::2], -limit, limit)
    with np.errstate(over="ignore"):
        glu = gate / (1.0 + np.exp(-alpha * gate))
    return (up + 1.0) * glu


def gate_up_swiglu(x, sorted_pairs, counts, top_k, w1_blocks, w1_scales, b1, alpha=SWIGLU_ALPHA, limit=SWIGLU_LIMIT):
    """float64 ``act [P, I]``: row r = swiglu(x[t] @ W1[e].T + b1[e]) for pair ``sorted_pairs[r] = t * k + slot``.

    Args:
        x: ``[T, H]``. sorted_pairs / counts: from ``sort_by_expert``. w1_blocks: ``uint8 [E, 2I, ceil(H/32), 16]``,
        w1_scales: ``uint8 [E, 2I, ceil(H/32)]``, b1: ``[E, 2I]``.
    """
    x = np.asarray(x, dtype=np.float64)
    hidden = x.shape[1]
    b1 = np.asarray(b1, dtype=np.float64)
    act = np.zeros((len(sorted_pairs), b1.shape[1] // 2))
    for expert, rows in expert_rows(counts):
        w1 = dequantize(w1_blocks[expert], w1_scales[expert], np.float64, hidden)
        act[rows] = swiglu(x[np.asarray(sorted_pairs[rows]) // top_k] @ w1.T + b1[expert], alpha, limit)
    return act
