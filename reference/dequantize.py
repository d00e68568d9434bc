"""Dequantize MXFP4 blocks. Twin of ``mxfp4.triton_kernels.dequantize``."""

from __future__ import annotations

import numpy as np

from mxfp4.spec import BLOCK_SIZE, BYTES_PER_BLOCK, E2M1_VALUES, E8M0_BIAS, E8M0_NAN

from .pack import unpack


def decode_scales(scales: np.ndarray) -> np.ndarray:
    """float64 value of E8M0 bytes: 2**(b - 127); byte 0 is 2**-127 (not zero), byte 255 is NaN (not Inf)."""
    scales = np.asarray(scales)
    value = np.ldexp(1.0, scales.astype(np.int64) - E8M0_BIAS)
    return np.where(scales == E8M0_NAN, np.nan, value)


def dequantize(blocks: np.ndarray, scales: np.ndarray, dtype=np.float32, length: int | None = None) -> np.ndarray:
    """Decode ``blocks uint8 [..., G, 16]`` with ``scales uint8 [..., G]`` into ``dtype [..., G*32]``.

    Each value is ``E2M1_VALUES[code] * 2**(scale - 127)``, computed exactly in float64 and rounded once to ``dtype``
    (values past the dtype's range become +-Inf, as any cast would). A block with scale 255 decodes to NaN.
    ``length`` trims the last axis to the logical length (dropping a partial block's padding).

    >>> dequantize(np.full((1, 16), 0x92, np.uint8), np.array([125], np.uint8))[:2]
    array([ 0.25 , -0.125], dtype=float32)
    """
    blocks, scales = np.asarray(blocks), np.asarray(scales)
    if blocks.dtype != np.uint8 or scales.dtype != np.uint8:
        raise TypeError(f"dequantize expects uint8 blocks and scales, got {blocks.dtype} and {scales.dtype}")
    if blocks.ndim < 2 or blocks.shape[-1] != BYTES_PER_BLOCK or blocks.shape[:-1] != scales.shape:
        raise ValueError(
            f"blocks {blocks.shape} and scales {scales.shape} do not match: expected [..., G, {BYTES_PER_BLOCK}] and [..., G]"
        )
    codes = unpack(blocks).reshape(*scales.shape, BLOCK_SIZE)
    values = np.asarray(E2M1_VALUES, dtype=np.float64)[codes] * decode_scales(scales)[..., None]
    values = values.reshape(*scales.shape[:-1], scales.shape[-1] * BLOCK_SIZE)
    if length is not None:
        if not 0 < length <= values.shape[-1] or values.shape[-1] - length >= BLOCK_SIZE:
            raise ValueError(f"length {length} does not fit {scales.shape[-1]} blocks of {BLOCK_SIZE}")
        values = values[..., :length]
    with np.errstate(over="ignore"):
        return values.astype(dtype)
