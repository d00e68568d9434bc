"""MoE routing: top-k experts per token and their softmax weights. Twin of ``mxfp4.triton_kernels.moe_routing``."""

from __future__ import annotations

import numpy as np


def route(x: np.ndarray, router_w: np.ndarray, router_b: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k routing: ``(expert_ids int64 [T, k], weights float64 [T, k])``, slots in decreasing logit order.

    logits = x @ router_w.T + router_b (float64). Equal logits go to the lowest expert index first (a stable sort
    of the negated logits); NaN logits rank as -inf, so they are picked last and never give an out-of-range index,
    but the softmax over the k picked logits still sees them. Like transformers' ``GptOssTopKRouter``, the softmax
    runs over the k selected logits only, not over all E.

    >>> ids, w = route(np.ones((1, 4)), np.eye(3, 4), np.zeros(3), 2)
    >>> ids.tolist(), w.tolist()
    ([[0, 1]], [[0.5, 0.5]])
    """
    x = np.asarray(x, dtype=np.float64)
    logits = x @ np.asarray(router_w, dtype=np.float64).T + np.asarray(router_b, dtype=np.float64)
    key = np.where(np.isnan(logits), -np.inf, logits)
    ids = np.argsort(-key, axis=-1, kind="stable")[:, :top_k]
    chosen = np.take_along_axis(logits, ids, axis=-1)
    with np.errstate(invalid="ignore", over="ignore"):
        shifted = np.exp(chosen - chosen[:, :1])
        weights = shifted / shifted.sum(-1, keepdims=True)
    return ids, weights
