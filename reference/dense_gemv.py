"""Projections of one input through several dense weights. Twin of ``mxfp4.triton_kernels.dense_gemv``."""

from __future__ import annotations

import numpy as np


def projections(x: np.ndarray, weights, biases=None) -> np.ndarray:
    """float64 ``[M, sum N_i]``: ``x @ W_i.T + b_i`` for each weight ``W_i [N_i, K]``, side by side.

    Args:
        x: ``[M, K]`` (any float dtype; used as float64). weights: a sequence of ``[N_i, K]`` arrays.
        biases: None, or one ``[N_i]`` array per weight.

    >>> projections(np.ones((1, 2)), [np.eye(2), np.ones((1, 2))], [np.zeros(2), np.ones(1)])
    array([[1., 1., 3.]])
    """
    x = np.asarray(x, dtype=np.float64)
    outs = []
    for i, w in enumerate(weights):
        w = np.asarray(w, dtype=np.float64)
        if w.ndim != 2 or w.shape[1] != x.shape[-1]:
            raise ValueError(f"weight {i} has shape {w.shape}; expected [N, {x.shape[-1]}]")
        out = x @ w.T
        if biases is not None:
            out = out + np.asarray(biases[i], dtype=np.float64)
        outs.append(out)
    return np.concatenate(outs, axis=-1)
