"""One decode step of GPT-OSS attention. Twin of ``mxfp4.triton_kernels.decode_attention``.

The definition the kernel is tested against, written the plain way: rotate the new query and key (RoPE, pairs
``(i, i + D/2)``), write the key and value into the cache slot of the new column (``column % slots`` on a sliding
layer's ring, ``column`` on a full cache), then let every query head attend over all cache slots it may see, with
its learned sink logit in the softmax (it takes probability mass and adds no value). A key at column ``kc`` is
visible to the query at column ``c`` of row ``b`` when ``kc <= c``, ``kc >= pad[b]`` (left padding; empty slots
hold column -1) and, on sliding layers, ``kc > c - window`` -- the rules of ``mxfp4.models.gpt_oss.visible_keys``.
"""

from __future__ import annotations

import numpy as np


def decode_attention(qkv, cos, sin, keys, values, columns, column: int, pad, sinks, heads: int, scale: float,
                     ring: bool, window: int | None, round_stored=None):
    """``(out float64 [B, H*D], keys, values, columns)``: the attention output and the updated cache (new arrays).

    Args:
        qkv: ``[B, (H + 2 KV) * D]``: each row's query heads, then its key heads, then its value heads.
        cos, sin: ``[B, D/2]`` RoPE tables of each row's position (the model's attention scaling included).
        keys, values: ``[B, KV, S, D]`` cache; columns: int ``[S]``, the column held in each slot (-1: empty).
        column: the new entry's column; pad: int ``[B]`` left padding; sinks: ``[H]``; scale: the logit scale.
        ring: the cache is a ring of ``S`` slots (sliding layers); window: the sliding window, or None.
        round_stored: maps float64 arrays to the values the cache's dtype holds (e.g. a bf16 round trip); the new
            key and value are stored through it. None: stored as float64.

    >>> B, H, KV, D, S = 1, 2, 1, 4, 3
    >>> qkv = np.ones((B, (H + 2 * KV) * D)); cos, sin = np.ones((B, D // 2)), np.zeros((B, D // 2))
    >>> empty = np.zeros((B, KV, S, D))
    >>> out, k, v, cols = decode_attention(qkv, cos, sin, empty, empty, np.full(S, -1), 0, np.zeros(B, int),
    ...                                    np.full(H, -np.inf), 0.5, False, None)
    >>> out.tolist(), cols.tolist()                 # one visible key, no sink mass: the output is its value
    ([[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]], [0, -1, -1])
    """
    qkv = np.asarray(qkv, dtype=np.float64)
    keys, values = np.array(keys, dtype=np.float64), np.array(values, dtype=np.float64)
    columns = np.array(columns, dtype=np.int64)
    cos, sin = np.asarray(cos, dtype=np.float64), np.asarray(sin, dtype=np.float64)
    batch, kv_heads, slots, dim = keys.shape
    group = heads // kv_heads
    store = (lambda a: a) if round_stored is None else round_stored

    q = rotate(qkv[:, : heads * dim].reshape(batch, heads, dim), cos[:, None], sin[:, None])
    k_new = rotate(qkv[:, heads * dim:(heads + kv_heads) * dim].reshape(batch, kv_heads, dim),
                   cos[:, None], sin[:, None])
    v_new = qkv[:, (heads + kv_heads) * dim:].reshape(batch, kv_heads, dim)
    slot = column % slots if ring else column
    keys[:, :, slot] = store(k_new)
    values[:, :, slot] = store(v_new)
    columns[slot] = column

    out = np.zeros((batch, heads, dim))
    for b in range(batch):
        visible = (columns <= column) & (columns >= pad[b])
        if window is not None:
            visible &= columns > column - window
        for h in range(heads):
            g = h // group
            logits = np.concatenate([scale * (keys[b, g, visible] @ q[b, h]), [float(sinks[h])]])
            probs = np.exp(logits - logits.max())
            probs /= probs.sum()
            out[b, h] = probs[:-1] @ values[b, g, visible]
    return out.reshape(batch, heads * dim), keys, values, columns


def rotate(x, cos, sin):
    """RoPE on the last axis of ``x [..., D]``: pairs ``(i, i + D/2)`` turned by ``cos/sin [..., D/2]``."""
    first, second = np.split(x, 2, axis=-1)
    return np.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)
