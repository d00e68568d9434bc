"""Sum of each token's k weighted expert outputs. Twin of ``mxfp4.triton_kernels.moe_combine``."""

from __future__ import annotations

import numpy as np


def combine(contributions: np.ndarray, top_k: int) -> np.ndarray:
    """``[T, H]`` float64 from ``contributions [T * k, H]`` (token-major pairs), summed in slot order.

    >>> combine(np.arange(8.0).reshape(4, 2), 2).tolist()
    [[2.0, 4.0], [10.0, 12.0]]
    """
    contributions = np.asarray(contributions, dtype=np.float64)
    return contributions.reshape(-1, top_k, contributions.shape[-1]).sum(axis=1)
