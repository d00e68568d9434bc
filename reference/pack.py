"""Pack E2M1 codes two per byte, and back. Twin of ``mxfp4.triton_kernels.pack``."""

from __future__ import annotations

import numpy as np

from mxfp4.spec import BLOCK_SIZE, BYTES_PER_BLOCK, NIBBLE_BITS, NIBBLE_MASK


def pack(codes: np.ndarray) -> np.ndarray:
    """Pack 4-bit codes ``uint8 [..., K]`` (K a multiple of 32, each value 0..15) into blocks ``uint8 [..., K/32, 16]``.

    Element 2i goes to the low nibble of byte i, element 2i+1 to the high nibble (the GPT-OSS checkpoint order).

    >>> pack(np.arange(32, dtype=np.uint8) % 16)[0, :2]
    array([16, 50], dtype=uint8)
    """
    codes = np.asarray(codes)
    if codes.dtype != np.uint8:
        raise TypeError(f"pack expects uint8 codes, got {codes.dtype}")
    if codes.ndim == 0 or codes.shape[-1] % BLOCK_SIZE:
        raise ValueError(f"pack expects a last axis that is a multiple of {BLOCK_SIZE}, got shape {codes.shape}")
    if codes.size and codes.max() > NIBBLE_MASK:
        raise ValueError(f"pack expects 4-bit codes (0..15), got a value {int(codes.max())}")
    low, high = codes[..., 0::2], codes[..., 1::2]
    packed = (low | (high << NIBBLE_BITS)).astype(np.uint8)
    return packed.reshape(*codes.shape[:-1], codes.shape[-1] // BLOCK_SIZE, BYTES_PER_BLOCK)


def unpack(blocks: np.ndarray) -> np.ndarray:
    """Unpack blocks ``uint8 [..., G, 16]`` into codes ``uint8 [..., G*32]`` (inverse of :func:`pack`)."""
    blocks = np.asarray(blocks)
    if blocks.dtype != np.uint8:
        raise TypeError(f"unpack expects uint8 blocks, got {blocks.dtype}")
    if blocks.ndim < 2 or blocks.shape[-1] != BYTES_PER_BLOCK:
        raise ValueError(f"unpack expects blocks of shape [..., G, {BYTES_PER_BLOCK}], got {blocks.shape}")
    flat = blocks.reshape(*blocks.shape[:-2], blocks.shape[-2] * BYTES_PER_BLOCK)
    codes = np.empty((*flat.shape[:-1], flat.shape[-1] * 2), dtype=np.uint8)
    codes[..., 0::2] = flat & NIBBLE_MASK
    codes[..., 1::2] = flat >> NIBBLE_BITS
    return codes
