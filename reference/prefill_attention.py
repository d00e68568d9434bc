"""Grouped-query attention with sinks over keys that carry their columns. Twin of
``mxfp4.triton_kernels.prefill_attention``.

The attention of GPT-OSS for any number of new tokens, written the plain way: each query head scores every key of its
KV head, a key at column ``kc`` is visible to the query at column ``qc`` of row ``b`` when ``kc <= qc``,
``kc >= pad[b]`` and, on sliding layers, ``kc > qc - window`` (``mxfp4.models.gpt_oss.visible_keys``), and the
softmax also sees the head's learned sink logit, which takes probability mass and adds no value.
"""

from __future__ import annotations

import numpy as np


def prefill_attention(q, k, v, query_columns, key_columns, pad, sinks, scale: float, window: int | None):
    """float64 ``[B, T, H, D]``: attention of ``q [B, H, T, D]`` over ``k, v [B, KV, S, D]`` (head h reads KV
    head ``h // (H / KV)``), keys at ``key_columns [S]`` (-1: empty slot), queries at ``query_columns [T]``.

    >>> q = np.zeros((1, 1, 2, 2)); k = v = np.arange(4.0).reshape(1, 1, 2, 2)
    >>> prefill_attention(q, k, v, np.array([0, 1]), np.array([0, 1]), np.zeros(1, int), np.array([-np.inf]),
    ...                   1.0, None)[0, :, 0].tolist()             # query 0 sees key 0; query 1 both, equally
    [[0.0, 1.0], [1.0, 2.0]]
    """
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    query_columns, key_columns = np.asarray(query_columns), np.asarray(key_columns)
    batch, heads, length, dim = q.shape
    group = heads // k.shape[1]
    out = np.zeros((batch, length, heads, dim))
    for b in range(batch):
        visible = (key_columns[None, :] <= query_columns[:, None]) & (key_columns[None, :] >= pad[b])
        if window is not None:
            visible &= key_columns[None, :] > query_columns[:, None] - window
        for h in range(heads):
            scores = np.where(visible, scale * (q[b, h] @ k[b, h // group].T), -np.inf)
            logits = np.concatenate([scores, np.full((length, 1), float(sinks[h]))], axis=1)
            probs = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs /= probs.sum(axis=1, keepdims=True)
            out[b, :, h] = probs[:, :-1] @ v[b, h // group]
    return out
