"""Quantize to MXFP4 (OCP MX v1.0). Twin of ``mxfp4.triton_kernels.quantize``.

Computed in float64, where every step below is exact for float16/bfloat16/float32 input: the block's amax, its
exponent (``np.frexp``), the division by a power of two, and the comparisons against the rounding thresholds.
"""

from __future__ import annotations

import numpy as np

from mxfp4.spec import (
    BLOCK_SIZE,
    E2M1_EMAX,
    E2M1_MAGNITUDE_MASK,
    E2M1_MAGNITUDES,
    E2M1_MAX,
    E2M1_ROUNDING_THRESHOLDS,
    E2M1_SIGN_BIT,
    E8M0_BIAS,
    E8M0_MAX_EXPONENT,
    E8M0_MIN_EXPONENT,
    E8M0_NAN,
    ScaleMode,
    num_blocks,
)

from .pack import pack

_FLOAT_KINDS = "f"


def round_to_e2m1(scaled: np.ndarray) -> np.ndarray:
    """E2M1 codes (uint8, 0..15) of already-scaled float values: nearest value, ties to even, saturating at +-6.

    The sign bit is kept for values that round to zero (``-0.1 -> code 8``, -0), as ``ml_dtypes.float4_e2m1fn``
    does. NaN input gives an unspecified code: callers give NaN blocks the NaN scale.
    """
    scaled = np.asarray(scaled, dtype=np.float64)
    magnitude = np.abs(scaled)
    code = np.zeros(scaled.shape, dtype=np.uint8)
    for midpoint, tie_rounds_up in E2M1_ROUNDING_THRESHOLDS:
        passed = (magnitude >= midpoint) if tie_rounds_up else (magnitude > midpoint)
        code += passed.astype(np.uint8)
    return code | (np.signbit(scaled).astype(np.uint8) * np.uint8(E2M1_SIGN_BIT))


def _floor_log2(amax: np.ndarray) -> np.ndarray:
    """floor(log2(amax)) exactly, for amax > 0 (frexp: amax = m * 2**e with m in [0.5, 1))."""
    _, exponent = np.frexp(amax)
    return exponent.astype(np.int64) - 1


def _grid_values(blocks: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """The E2M1 grid values (float64, exact) that ``blocks`` round to under the shared exponent ``exponent``."""
    codes = round_to_e2m1(np.ldexp(blocks, -exponent[..., None]))
    values = np.asarray(E2M1_MAGNITUDES)[codes & E2M1_MAGNITUDE_MASK] * np.where(codes & E2M1_SIGN_BIT, -1.0, 1.0)
    return np.ldexp(values, exponent[..., None])


def _high_has_smaller_error(blocks: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Whether exponent ``high`` gives a strictly smaller squared error than ``low``, decided exactly.

    ``sum((x - L)^2) - sum((x - H)^2) = sum((H - L) * (2x - L - H))``. For float16/bfloat16/float32 input every term
    is exact in float64 and so is their sum (terms are zero unless |x| reaches a quarter of the low grid step, which
    bounds their span to ~40 bits), so an exact tie stays a tie -- summing the two squared errors separately would
    absorb a tiny element differently in each sum and break it.
    """
    lo, hi = _grid_values(blocks, low), _grid_values(blocks, high)
    with np.errstate(over="ignore", invalid="ignore"):  # float64 input near 2**1023; both candidates clamp anyway
        gain = np.sum((hi - lo) * (2 * blocks - lo - hi), axis=-1)
    return gain > 0


def shared_exponent(blocks: np.ndarray, scale_mode: ScaleMode | str = ScaleMode.FLOOR) -> np.ndarray:
    """The unbiased shared exponent (int64 [...]) of each finite block ``float64 [..., 32]``.

    Blocks whose amax is 0 get E8M0's smallest exponent (-127). Callers handle non-finite blocks.
    """
    mode = ScaleMode.parse(scale_mode)
    blocks = np.asarray(blocks, dtype=np.float64)
    amax = np.max(np.abs(blocks), axis=-1)
    nonzero = amax > 0
    safe_amax = np.where(nonzero, amax, 1.0)
    floor_exp = _floor_log2(safe_amax)
    floor_rule = floor_exp - E2M1_EMAX
    if mode is ScaleMode.FLOOR:
        exponent = floor_rule
    elif mode is ScaleMode.CEIL:
        # 6 * 2**(floor_rule) = 1.5 * 2**floor_exp, so amax fits under it unless its mantissa exceeds 1.5.
        fits = safe_amax <= np.ldexp(E2M1_MAX, floor_rule)
        exponent = np.where(fits, floor_rule, floor_rule + 1)
    else:  # MSE
        low = np.clip(floor_rule, E8M0_MIN_EXPONENT, E8M0_MAX_EXPONENT)
        high = np.clip(floor_rule + 1, E8M0_MIN_EXPONENT, E8M0_MAX_EXPONENT)
        exponent = np.where(_high_has_smaller_error(blocks, low, high), high, low)
    exponent = np.clip(exponent, E8M0_MIN_EXPONENT, E8M0_MAX_EXPONENT)
    return np.where(nonzero, exponent, E8M0_MIN_EXPONENT)


def quantize(x: np.ndarray, axis: int = -1, scale_mode: ScaleMode | str = ScaleMode.FLOOR) -> tuple[np.ndarray, np.ndarray]:
    """Quantize ``x`` along ``axis`` to MXFP4.

    Args:
        x: float16 / float32 / float64 array of any shape (bfloat16 data as float32, or ml_dtypes.bfloat16).
        axis: the axis that blocks of 32 run along (the reduction axis K of a weight ``[N, K]``).
        scale_mode: ``"floor"`` (OCP, default), ``"ceil"`` (never clips) or ``"mse"``; see :class:`mxfp4.spec.ScaleMode`.

    Returns:
        ``(blocks, scales)``: ``uint8 [..., G, 16]`` and ``uint8 [..., G]``, with ``axis`` moved last and
        ``G = ceil(K / 32)``. A partial last block is zero-padded; the caller keeps the logical length K.

    >>> blocks, scales = quantize(np.array([[1.0, -0.5] + [0.0] * 30]))
    >>> blocks[0, 0, :1], scales  # scale 2**(0-2) (byte 125): codes 6 (4 * 2**-2) and 12 (-2 * 2**-2)
    (array([198], dtype=uint8), array([[125]], dtype=uint8))
    """
    mode = ScaleMode.parse(scale_mode)
    x = np.asarray(x)
    if x.dtype.kind != _FLOAT_KINDS and x.dtype.name != "bfloat16":
        raise TypeError(f"quantize expects a floating-point array, got dtype {x.dtype}")
    if x.ndim == 0:
        raise ValueError("quantize expects an array with at least one axis, got a scalar")
    x = np.moveaxis(x.astype(np.float64), axis, -1)
    length = x.shape[-1]
    if length == 0:
        raise ValueError(f"quantize got an empty axis {axis} (shape {x.shape}): nothing to quantize")
    groups = num_blocks(length)
    padded = np.zeros((*x.shape[:-1], groups * BLOCK_SIZE), dtype=np.float64)
    padded[..., :length] = x
    blocks = padded.reshape(*x.shape[:-1], groups, BLOCK_SIZE)

    finite = np.all(np.isfinite(blocks), axis=-1)
    clean = np.where(finite[..., None], blocks, 0.0)
    exponent = shared_exponent(clean, mode)
    codes = round_to_e2m1(np.ldexp(clean, -exponent[..., None]))
    scales = np.where(finite, exponent + E8M0_BIAS, E8M0_NAN).astype(np.uint8)
    # Elements of a NaN-scaled block are unspecified by the format; we write zeros so every implementation agrees.
    codes = np.where(finite[..., None], codes, 0).astype(np.uint8)
    return pack(codes.reshape(*x.shape[:-1], groups * BLOCK_SIZE)), scales
