"""``a @ W.T (+ bias)`` with an MXFP4 weight. Twin of ``mxfp4.triton_kernels.matmul``."""

from __future__ import annotations

import numpy as np

from .dequantize import dequantize


def matmul(a: np.ndarray, blocks: np.ndarray, scales: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """float64 ``a @ dequantize(W).T + bias`` for an ``nn.Linear``-style weight W ``[N, K]`` quantized along K.

    Args:
        a: ``[..., K]`` activations (any float dtype; used as float64).
        blocks: ``uint8 [N, ceil(K/32), 16]``; scales: ``uint8 [N, ceil(K/32)]``.
        bias: optional ``[N]``.

    Returns:
        float64 ``[..., N]``.
    """
    a = np.asarray(a, dtype=np.float64)
    k = a.shape[-1]
    w = dequantize(blocks, scales, dtype=np.float64)
    if w.ndim != 2:
        raise ValueError(f"matmul expects a 2-D weight [N, G, 16], got blocks of shape {np.shape(blocks)}")
    if not 0 <= w.shape[-1] - k < 32:
        raise ValueError(f"activations have K = {k} but the weight holds {w.shape[-1] // 32} blocks of 32")
    out = a @ w[:, :k].T
    if bias is not None:
        out = out + np.asarray(bias, dtype=np.float64)
    return out
