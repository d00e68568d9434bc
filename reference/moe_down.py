"""Grouped down GEMM times the routing weight. Twin of ``mxfp4.triton_kernels.moe_down``."""

from __future__ import annotations

import numpy as np

from .dequantize import dequantize
from .moe_sort import expert_rows


def down(act, sorted_pairs, counts, routing_weights, w2_blocks, w2_scales, b2):
    """float64 ``contributions [P, H]`` in token-major pair order: row ``p = t * k + slot`` is
    ``routing_weights[t, slot] * (act[r] @ W2[e].T + b2[e])`` where sorted row r holds pair p.

    Args:
        act: ``[P, I]`` in sorted order (``gate_up_swiglu``). routing_weights: ``[T, k]``.
        w2_blocks: ``uint8 [E, H, ceil(I/32), 16]``, w2_scales: ``uint8 [E, H, ceil(I/32)]``, b2: ``[E, H]``.
    """
    act = np.asarray(act, dtype=np.float64)
    intermediate = act.shape[1]
    b2 = np.asarray(b2, dtype=np.float64)
    weights = np.asarray(routing_weights, dtype=np.float64).reshape(-1)
    out = np.zeros((len(sorted_pairs), b2.shape[1]))
    for expert, rows in expert_rows(counts):
        pairs = np.asarray(sorted_pairs[rows])
        w2 = dequantize(w2_blocks[expert], w2_scales[expert], np.float64, intermediate)
        out[pairs] = weights[pairs][:, None] * (act[rows] @ w2.T + b2[expert])
    return out
