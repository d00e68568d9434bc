"""Sort (token, slot) pairs by expert. Twin of ``mxfp4.triton_kernels.moe_sort``."""

from __future__ import annotations

import numpy as np


def sort_by_expert(expert_ids: np.ndarray, num_experts: int) -> tuple[np.ndarray, np.ndarray]:
    """``(counts int64 [E], sorted_pairs int64 [P])`` for ``expert_ids [T, k]``, P = T * k.

    Pair ``p = t * k + slot`` is token t's slot-th expert. ``sorted_pairs`` lists the pairs grouped by expert in
    expert order, stable (token-major order kept within an expert); expert e owns sorted rows
    ``[sum(counts[:e]), sum(counts[:e + 1]))``.

    >>> sort_by_expert(np.array([[2, 0], [0, 1]]), 3)
    (array([2, 1, 1]), array([1, 2, 3, 0]))
    """
    flat = np.asarray(expert_ids).reshape(-1)
    counts = np.bincount(flat, minlength=num_experts)[:num_experts]
    return counts, np.argsort(flat, kind="stable")


def expert_rows(counts):
    """``(expert, rows)`` for every expert that received pairs: ``rows`` is its slice of the sorted rows.

    >>> list(expert_rows([2, 0, 1]))
    [(0, slice(0, 2, None)), (2, slice(2, 3, None))]
    """
    begin = 0
    for expert, count in enumerate(counts):
        if count:
            yield expert, slice(begin, begin + int(count))
        begin += int(count)
