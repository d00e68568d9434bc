"""The ``torch`` path: quantize / dequantize with torch ops on any device, bit-identical to ``mxfp4.reference``.

It runs where Triton cannot (CPU without the interpreter, unsupported GPUs) and is the correctness fallback of the
dispatch. Works one tensor at a time and never holds more than one dequantized copy.
"""

from __future__ import annotations

import torch

from .spec import (
    BLOCK_SIZE,
    BYTES_PER_BLOCK,
    E2M1_EMAX,
    E2M1_MAX,
    E2M1_ROUNDING_THRESHOLDS,
    E2M1_SIGN_BIT,
    E2M1_VALUES,
    E8M0_BIAS,
    E8M0_MAX_EXPONENT,
    E8M0_MIN_EXPONENT,
    E8M0_NAN,
    NIBBLE_BITS,
    NIBBLE_MASK,
    ScaleMode,
    num_blocks,
)


def round_to_e2m1(scaled: torch.Tensor) -> torch.Tensor:
    """E2M1 codes (uint8) of scaled values: nearest, ties to even, saturating; sign kept for values rounding to 0."""
    magnitude = scaled.abs()
    code = torch.zeros(scaled.shape, dtype=torch.uint8, device=scaled.device)
    for midpoint, tie_rounds_up in E2M1_ROUNDING_THRESHOLDS:
        code += ((magnitude >= midpoint) if tie_rounds_up else (magnitude > midpoint)).to(torch.uint8)
    return code | (torch.signbit(scaled).to(torch.uint8) * E2M1_SIGN_BIT)


def _e2m1_value(codes: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    table = torch.tensor(E2M1_VALUES, dtype=dtype, device=codes.device)
    return table[codes.long()]


def _squared_error(blocks: torch.Tensor, exponent: torch.Tensor) -> torch.Tensor:
    codes = round_to_e2m1(torch.ldexp(blocks, -exponent[..., None].to(blocks.dtype)))
    values = torch.ldexp(_e2m1_value(codes, blocks.dtype), exponent[..., None].to(blocks.dtype))
    return ((blocks - values) ** 2).sum(-1)


def _shared_exponent(blocks: torch.Tensor, mode: ScaleMode) -> torch.Tensor:
    amax = blocks.abs().amax(-1)
    nonzero = amax > 0
    safe_amax = torch.where(nonzero, amax, torch.ones_like(amax))
    floor_rule = torch.frexp(safe_amax).exponent.to(torch.int64) - 1 - E2M1_EMAX
    if mode is ScaleMode.FLOOR:
        exponent = floor_rule
    elif mode is ScaleMode.CEIL:
        fits = safe_amax <= torch.ldexp(torch.full_like(safe_amax, E2M1_MAX), floor_rule.to(safe_amax.dtype))
        exponent = torch.where(fits, floor_rule, floor_rule + 1)
    else:
        low = floor_rule.clamp(E8M0_MIN_EXPONENT, E8M0_MAX_EXPONENT)
        high = (floor_rule + 1).clamp(E8M0_MIN_EXPONENT, E8M0_MAX_EXPONENT)
        exponent = torch.where(_squared_error(blocks, high) < _squared_error(blocks, low), high, low)
    exponent = exponent.clamp(E8M0_MIN_EXPONENT, E8M0_MAX_EXPONENT)
    return torch.where(nonzero, exponent, torch.full_like(exponent, E8M0_MIN_EXPONENT))


def quantize(x: torch.Tensor, scale_mode: ScaleMode) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize along the last axis: ``x [..., K]`` float -> ``(blocks uint8 [..., G, 16], scales uint8 [..., G])``.

    Computed in float64 (exact for float16/bfloat16/float32 input), as the reference does.
    """
    length = x.shape[-1]
    groups = num_blocks(length)
    padded = torch.zeros((*x.shape[:-1], groups * BLOCK_SIZE), dtype=torch.float64, device=x.device)
    padded[..., :length] = x
    blocks = padded.view(*x.shape[:-1], groups, BLOCK_SIZE)
    finite = torch.isfinite(blocks).all(-1)
    clean = torch.where(finite[..., None], blocks, torch.zeros((), dtype=blocks.dtype, device=x.device))
    exponent = _shared_exponent(clean, scale_mode)
    codes = round_to_e2m1(torch.ldexp(clean, -exponent[..., None].to(torch.float64)))
    codes = torch.where(finite[..., None], codes, torch.zeros((), dtype=torch.uint8, device=x.device))
    scales = torch.where(finite, exponent + E8M0_BIAS, torch.full_like(exponent, E8M0_NAN)).to(torch.uint8)
    packed = codes[..., 0::2] | (codes[..., 1::2] << NIBBLE_BITS)
    return packed.reshape(*x.shape[:-1], groups, BYTES_PER_BLOCK), scales


def dequantize(blocks: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype, length: int) -> torch.Tensor:
    """Decode ``blocks [..., G, 16]`` + ``scales [..., G]`` to ``dtype [..., length]`` (exact, rounded once)."""
    codes = torch.stack((blocks & NIBBLE_MASK, blocks >> NIBBLE_BITS), dim=-1).reshape(*scales.shape, BLOCK_SIZE)
    exponent = scales.to(torch.float64) - E8M0_BIAS
    scale = torch.where(scales == E8M0_NAN, torch.full_like(exponent, float("nan")), torch.exp2(exponent))
    values = _e2m1_value(codes, torch.float64) * scale[..., None]
    values = values.reshape(*scales.shape[:-1], scales.shape[-1] * BLOCK_SIZE)[..., :length]
    return values.to(dtype)
