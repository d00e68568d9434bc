"""The residual add + RMSNorm in front of each GPT-OSS sublayer. Twin of ``mxfp4.triton_kernels.rms_norm`` (fused
into ``moe_routing.route(add_norm=...)`` and ``dense_gemv.projections(add_norm=...)``)."""

from __future__ import annotations

import numpy as np


def add_rms_norm(residual: np.ndarray, delta: np.ndarray, weight: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """``(s, weight * s / sqrt(mean(s**2) + eps))`` with ``s = residual + delta``, per row over the last axis, in
    float64 (the kernels round ``s`` to the activations' dtype first, as torch adds, and the normed rows once at
    the end).

    >>> s, h = add_rms_norm(np.array([[1.0, 2.0]]), np.array([[2.0, -4.0]]), np.array([1.0, 0.5]), 0.0)
    >>> s.tolist(), h.tolist()
    ([[3.0, -2.0]], [[1.1766968108291043, -0.3922322702763681]])
    """
    s = np.asarray(residual, dtype=np.float64) + np.asarray(delta, dtype=np.float64)
    inverse_rms = 1.0 / np.sqrt(np.mean(s * s, axis=-1, keepdims=True) + eps)
    return s, np.asarray(weight, dtype=np.float64) * (s * inverse_rms)
