"""The ``torch`` path: quantize / dequantize with torch ops on any device, bit-identical to ``mxfp4.reference``.

It runs where Triton cannot (CPU without the interpreter, unsupported GPUs), is the correctness fallback of the
dispatch, and is what ``mxfp4 quantize`` / ``dequantize`` use to convert checkpoints on a CPU, so it is built to be
fast there:

* **quantize** works on the raw bits of the input, two elements per machine word (a bfloat16 pair is one int32,
  so packing the two codes of a byte needs no strided access): magnitudes are float32 bit patterns, the block's floor
  exponent is the exponent field of its amax, the CEIL test a mantissa comparison, and elements are rounded by
  comparing ``|x| * 2**-k`` (exact: a power of two built from bits) with the rounding thresholds of
  :mod:`mxfp4.spec`. Every step is exact; the MSE decision is an exact sum too (:func:`_mse_error_difference`).
* **dequantize** looks up each packed byte together with its block's scale byte in a 65536-entry table of pairs of
  output values (int32 for 16-bit outputs, int64 for float32), so one load produces two decoded elements. The table
  is built once per (dtype, device) from the exact float64 values, rounded once, as the reference does.

On a CPU both run as fused loops compiled by ``torch.compile`` (Inductor's C++ backend) for tensors of at least
:data:`COMPILE_MIN_ELEMENTS` elements, compiled once per dtype and scale mode and cached for the process (and on
disk by Inductor). Without a working compiler, on other devices, or for small tensors, the same functions run
eagerly over row chunks, so no intermediate is ever larger than a chunk. ``$MXFP4_TORCH_COMPILE`` selects the
policy: ``auto`` (default), ``always`` (any size; tests use it) or ``never``.

Memory: outputs are allocated once; the compiled loops keep no full-size intermediates, and the eager loops work on
chunks of :data:`CHUNK_ELEMENTS` elements. float64 input/output (a torch-path-only feature) takes a plain float64
route, also chunked.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import warnings

import torch

from .spec import (
    BLOCK_SIZE,
    BYTES_PER_BLOCK,
    E2M1_EMAX,
    E2M1_MAGNITUDES,
    E2M1_MAX,
    E2M1_ROUNDING_THRESHOLDS,
    E2M1_SIGN_BIT,
    E2M1_VALUES,
    E8M0_BIAS,
    E8M0_MAX_EXPONENT,
    E8M0_MIN_EXPONENT,
    E8M0_NAN,
    F32_EXPONENT_BIAS,
    F32_MANTISSA_BITS,
    F32_SIGN_BIT,
    NIBBLE_BITS,
    NIBBLE_MASK,
    ScaleMode,
    num_blocks,
)

COMPILE_ENV = "MXFP4_TORCH_COMPILE"
"""Environment variable: ``auto`` (compile on CPU for large tensors), ``always`` or ``never``."""
COMPILE_POLICIES = ("auto", "always", "never")
COMPILE_MIN_ELEMENTS = 1 << 20
"""Under the ``auto`` policy, tensors smaller than this run eagerly: a first compile costs seconds."""
CHUNK_ELEMENTS = 1 << 20
"""Elements per eager chunk on a CPU: bounds the eager path's intermediates to a few tens of MB."""
CHUNK_ELEMENTS_ACCELERATOR = 1 << 24
"""Elements per eager chunk elsewhere (the torch path on a GPU): fewer, larger launches; a few hundred MB at most."""

# --- float32 bit layout (the quantizer works on float32 bit patterns; the fields are in mxfp4.spec) -----------------
_F32_ABS_MASK = (1 << F32_SIGN_BIT) - 1
_F32_INF_BITS = 0xFF << F32_MANTISSA_BITS
_F32_MANTISSA_MASK = (1 << F32_MANTISSA_BITS) - 1
# A block's amax fits under E2M1_MAX * 2**floor_rule exactly when its mantissa is <= that of E2M1_MAX (1.5 = 1.1b).
_E2M1_MAX_MANTISSA_BITS = int((E2M1_MAX / 2**E2M1_EMAX - 1) * (1 << F32_MANTISSA_BITS))
# floor(log2(amax)) = exponent field - bias; the OCP rule subtracts E2M1_EMAX more.
_FLOOR_RULE_OFFSET = F32_EXPONENT_BIAS + E2M1_EMAX
# float16 bit layout, for decoding float16 pairs into float32 magnitude bits.
_F16_ABS_MASK = 0x7FFF
_F16_MANTISSA_BITS = 10
_F16_EXPONENT_BIAS = 15
_F16_INF_BITS = 0x7C00
_F16_MIN_NORMAL_BITS = 1 << _F16_MANTISSA_BITS
_F16_SUBNORMAL_UNIT = 2.0**-24
_F16_TO_F32_EXPONENT_SHIFT = (F32_EXPONENT_BIAS - _F16_EXPONENT_BIAS) << F32_MANTISSA_BITS
_HALF_BITS = 16
# Where the sign of element 2i / 2i+1 sits in a packed word, shifted down onto E2M1's sign bit (bit 3).
_SIGN_TO_CODE_SHIFT = 15 - 3


def compile_policy() -> str:
    """The policy from ``$MXFP4_TORCH_COMPILE`` (``auto`` when unset); ValueError naming the valid ones otherwise."""
    policy = os.environ.get(COMPILE_ENV, "auto").strip().lower() or "auto"
    if policy in ("1", "true", "yes"):
        return "always"
    if policy in ("0", "false", "no"):
        return "never"
    if policy not in COMPILE_POLICIES:
        raise ValueError(f"${COMPILE_ENV}={policy!r}: expected one of {', '.join(COMPILE_POLICIES)}")
    return policy


# =================================================================================================================
# quantize
# =================================================================================================================
def quantize(x: torch.Tensor, scale_mode: ScaleMode | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize along the last axis: ``x [..., K]`` float -> ``(blocks uint8 [..., G, 16], scales uint8 [..., G])``.

    ``G = ceil(K / 32)``; a partial last block is zero-padded. ``x`` may have any strides. float16 / bfloat16 /
    float32 input take the bit-level path (compiled on a CPU for large tensors); float64 a plain float64 one.
    Bit-identical to ``mxfp4.reference.quantize(x, axis=-1, scale_mode=...)`` for every mode.

    >>> blocks, scales = quantize(torch.tensor([[1.0, -0.5] + [0.0] * 30]), ScaleMode.FLOOR)
    >>> blocks[0, 0, 0].item(), scales.tolist()  # codes 2 (1.0) and 9 (-0.5); 2**(0-2) => byte 125
    (146, [[125]])
    """
    mode = ScaleMode.parse(scale_mode)
    length = x.shape[-1]
    groups = num_blocks(length)
    lead = tuple(x.shape[:-1])
    rows = math.prod(lead)
    if x.dtype == torch.float64:
        kernel, use_compiled = _quantize_rows_float64, False
    else:
        use_compiled = _use_compiled(x.device, x.numel())
        kernel = _compiled_quantize(mode) if use_compiled else _QUANTIZE_BY_MODE[mode]
    rows_per_chunk = rows if use_compiled else max(1, _chunk_elements(x.device) // max(1, groups * BLOCK_SIZE))

    blocks = scales = None
    for start, chunk in _row_chunks(x, rows_per_chunk):
        padded = _pad_to_blocks(chunk, groups)
        if x.dtype == torch.float64:
            chunk_blocks, chunk_scales = kernel(padded, mode)
        else:
            words = _as_words(padded, groups)
            chunk_blocks, chunk_scales = _run(kernel, _QUANTIZE_BY_MODE[mode], words, x.dtype)
        if start == 0 and chunk.shape[0] == rows:  # one chunk: its outputs are the result
            blocks, scales = chunk_blocks, chunk_scales
            break
        if blocks is None:
            blocks = torch.empty((rows, groups, BYTES_PER_BLOCK), dtype=torch.uint8, device=x.device)
            scales = torch.empty((rows, groups), dtype=torch.uint8, device=x.device)
        blocks[start : start + chunk.shape[0]] = chunk_blocks
        scales[start : start + chunk.shape[0]] = chunk_scales
    if blocks is None:  # a tensor with no rows
        blocks = torch.empty((rows, groups, BYTES_PER_BLOCK), dtype=torch.uint8, device=x.device)
        scales = torch.empty((rows, groups), dtype=torch.uint8, device=x.device)
    return blocks.reshape(*lead, groups, BYTES_PER_BLOCK), scales.reshape(*lead, groups)


def _as_words(padded: torch.Tensor, groups: int) -> torch.Tensor:
    """``[r, G*32]`` contiguous -> ``[r, G, 16]`` machine words, each holding elements 2i (low half) and 2i+1."""
    word = torch.int64 if padded.dtype == torch.float32 else torch.int32
    return padded.view(word).view(padded.shape[0], groups, BLOCK_SIZE // 2)


def _magnitude_bits(words: torch.Tensor, dtype: torch.dtype):
    """float32 magnitude bits (int32) and E2M1 sign bits (int32, 0 or 8) of the even and odd element of each word."""
    if dtype == torch.float32:
        low_abs = (words & _F32_ABS_MASK).to(torch.int32)
        high_abs = ((words >> 32) & _F32_ABS_MASK).to(torch.int32)
        low_sign = ((words >> (F32_SIGN_BIT - 3)) & E2M1_SIGN_BIT).to(torch.int32)
        high_sign = ((words >> (32 + F32_SIGN_BIT - 3)) & E2M1_SIGN_BIT).to(torch.int32)
        return low_abs, high_abs, low_sign, high_sign
    low_half = words & _F16_ABS_MASK
    high_half = (words >> _HALF_BITS) & _F16_ABS_MASK
    low_sign = (words >> _SIGN_TO_CODE_SHIFT) & E2M1_SIGN_BIT
    high_sign = (words >> (_HALF_BITS + _SIGN_TO_CODE_SHIFT)) & E2M1_SIGN_BIT
    if dtype == torch.bfloat16:  # bfloat16 is the top half of a float32
        return low_half << _HALF_BITS, high_half << _HALF_BITS, low_sign, high_sign
    return _float16_to_float32_bits(low_half), _float16_to_float32_bits(high_half), low_sign, high_sign


def _float16_to_float32_bits(half: torch.Tensor) -> torch.Tensor:
    """float32 bits of non-negative float16 bit patterns (int32): normals rebias, subnormals scale, Inf/NaN keep."""
    normal = (half << (F32_MANTISSA_BITS - _F16_MANTISSA_BITS)) + _F16_TO_F32_EXPONENT_SHIFT
    special = (half << (F32_MANTISSA_BITS - _F16_MANTISSA_BITS)) | _F32_INF_BITS
    subnormal = (half.to(torch.float32) * _F16_SUBNORMAL_UNIT).view(torch.int32)
    return torch.where(half < _F16_MIN_NORMAL_BITS, subnormal, torch.where(half >= _F16_INF_BITS, special, normal))


def _power_of_two(exponent: torch.Tensor) -> torch.Tensor:
    """Exact float32 2**exponent for int32 exponents in [-126, 127], built from bits."""
    return ((exponent + F32_EXPONENT_BIAS) << F32_MANTISSA_BITS).view(torch.float32)


def _e2m1_magnitude_code(scaled: torch.Tensor) -> torch.Tensor:
    """E2M1 magnitude codes (int32, 0..7) of non-negative scaled values: nearest, ties to even, saturating."""
    code = None
    for midpoint, tie_rounds_up in E2M1_ROUNDING_THRESHOLDS:
        passed = ((scaled >= midpoint) if tie_rounds_up else (scaled > midpoint)).to(torch.int32)
        code = passed if code is None else code + passed
    return code


# How much twice the E2M1 magnitude grows at each rounding threshold: (1, 1, 1, 1, 2, 2, 4).
_TWICE_MAGNITUDE_STEPS = tuple(int(2 * (high - low)) for low, high in zip(E2M1_MAGNITUDES, E2M1_MAGNITUDES[1:]))


def _twice_e2m1(scaled: torch.Tensor, accumulate: torch.dtype) -> torch.Tensor:
    """Twice the E2M1 magnitude (``accumulate``, exact integers 0..12) that scaled values round to.

    The same threshold tests as :func:`_e2m1_magnitude_code`, each adding its step of the value.
    """
    twice = None
    for (midpoint, tie_rounds_up), step in zip(E2M1_ROUNDING_THRESHOLDS, _TWICE_MAGNITUDE_STEPS):
        passed = (scaled >= midpoint) if tie_rounds_up else (scaled > midpoint)
        twice = passed.to(accumulate) * step if twice is None else twice + passed.to(accumulate) * step
    return twice


def _mse_error_difference(low_scaled, twice_low, twice_high, accumulate: torch.dtype) -> torch.Tensor:
    """Per element: its share of ``err_high - err_low`` for the MSE mode, in units of ``4**k_low / 4``.

    ``low_scaled`` is ``a = |x| / 2**k_low`` (float32); ``twice_low`` / ``twice_high`` are twice the low and high
    reconstructions in units of ``2**k_low`` (``L``, ``H``: integers). Then ``(2a - H)**2 - (2a - L)**2 =
    (L - H) * (4a - L - H)``. Every term is a small integer times a value on a grid fine enough for the input, so
    the block's sum is exact in any order: in float32 for bfloat16 input (8-bit mantissas), in float64 for
    float16/float32. (The reference sums squares in float64; it agrees except on exact ties that also hold elements
    far below the block's scale, where its rounding can break the tie: see tests/test_torch_ops.py.)
    """
    return (twice_low - twice_high) * (4 * low_scaled.to(accumulate) - twice_low - twice_high)


def _quantize_words(words: torch.Tensor, dtype: torch.dtype, mode: ScaleMode):
    """The whole quantizer on ``[r, G, 16]`` words of ``dtype`` pairs -> ``(blocks uint8 [r, G, 16], scales [r, G])``.

    Plain torch ops: run eagerly, or compiled by torch.compile into loops over blocks with no full-size
    intermediate. Block reductions are float reductions over the last axis (Inductor's int32 ones are ~20x slower on
    a CPU), and the codes are rounded afresh from the input once the exponent is known, so that nothing computed for
    the reductions has to be kept for the elementwise pass.
    """
    low_abs, high_abs, low_sign, high_sign = _magnitude_bits(words, dtype)
    low_value, high_value = low_abs.view(torch.float32), high_abs.view(torch.float32)
    amax = torch.maximum(low_value, high_value).amax(-1)  # NaN propagates; +Inf is the largest
    non_finite = ~torch.isfinite(amax)
    amax_bits = amax.view(torch.int32)
    # Exponent field 0 (zero or subnormal amax) gives floor_rule <= -129: the clamp below yields -127, which is
    # the reference's exponent for those blocks in every mode (for amax = 0 by definition, for subnormals because
    # even FLOOR + 1 stays below E8M0's range).
    floor_rule = ((amax_bits & _F32_ABS_MASK) >> F32_MANTISSA_BITS) - _FLOOR_RULE_OFFSET
    if mode is ScaleMode.MSE:
        exp_low = floor_rule.clamp(E8M0_MIN_EXPONENT, E8M0_MAX_EXPONENT)
        exp_high = (floor_rule + 1).clamp(E8M0_MIN_EXPONENT, E8M0_MAX_EXPONENT)
        inv_low, inv_high = _power_of_two(-exp_low)[..., None], _power_of_two(-exp_high)[..., None]
        accumulate = torch.float32 if dtype == torch.bfloat16 else torch.float64
        # High reconstructions in units of 2**k_low: twice as coarse, unless both exponents clamped to -127.
        high_unit = (1 + exp_high - exp_low).to(accumulate)[..., None]
        difference = None
        for value in (low_value, high_value):
            low_scaled = value * inv_low
            term = _mse_error_difference(low_scaled, _twice_e2m1(low_scaled, accumulate),
                                         _twice_e2m1(value * inv_high, accumulate) * high_unit, accumulate)
            difference = term if difference is None else difference + term
        prefer_high = difference.sum(-1) < 0  # strictly smaller error; FLOOR on a tie
        exponent = torch.where(prefer_high, exp_high, exp_low)
    else:
        if mode is ScaleMode.CEIL:
            floor_rule = floor_rule + ((amax_bits & _F32_MANTISSA_MASK) > _E2M1_MAX_MANTISSA_BITS).to(torch.int32)
        exponent = floor_rule.clamp(E8M0_MIN_EXPONENT, E8M0_MAX_EXPONENT)
    inverse = _power_of_two(-exponent)[..., None]
    code_even = _e2m1_magnitude_code(low_value * inverse)
    code_odd = _e2m1_magnitude_code(high_value * inverse)
    packed = (code_even | low_sign) | ((code_odd | high_sign) << NIBBLE_BITS)
    # Elements of a NaN-scaled block are unspecified by the format; zeros, as the reference writes.
    packed = torch.where(non_finite[..., None], 0, packed).to(torch.uint8)
    scales = torch.where(non_finite, E8M0_NAN, exponent + E8M0_BIAS).to(torch.uint8)
    return packed, scales


# One function per mode so that each gets its own compile cache (dtypes recompile within it).
def _quantize_floor(words, dtype):
    return _quantize_words(words, dtype, ScaleMode.FLOOR)


def _quantize_ceil(words, dtype):
    return _quantize_words(words, dtype, ScaleMode.CEIL)


def _quantize_mse(words, dtype):
    return _quantize_words(words, dtype, ScaleMode.MSE)


_QUANTIZE_BY_MODE = {ScaleMode.FLOOR: _quantize_floor, ScaleMode.CEIL: _quantize_ceil, ScaleMode.MSE: _quantize_mse}


@functools.lru_cache(maxsize=None)
def _compiled_quantize(mode: ScaleMode):
    return torch.compile(_QUANTIZE_BY_MODE[mode], dynamic=True)


# --- float64 input: the reference's arithmetic in torch ------------------------------------------------------------
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


def _shared_exponent_float64(blocks: torch.Tensor, mode: ScaleMode) -> torch.Tensor:
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


def _quantize_rows_float64(padded: torch.Tensor, mode: ScaleMode):
    """float64 ``[r, G*32]`` -> blocks, scales, as the reference computes them."""
    blocks = padded.view(padded.shape[0], -1, BLOCK_SIZE)
    finite = torch.isfinite(blocks).all(-1)
    clean = torch.where(finite[..., None], blocks, torch.zeros((), dtype=blocks.dtype, device=blocks.device))
    exponent = _shared_exponent_float64(clean, mode)
    codes = round_to_e2m1(torch.ldexp(clean, -exponent[..., None].to(torch.float64)))
    codes = torch.where(finite[..., None], codes, torch.zeros((), dtype=torch.uint8, device=blocks.device))
    scales = torch.where(finite, exponent + E8M0_BIAS, torch.full_like(exponent, E8M0_NAN)).to(torch.uint8)
    packed = codes[..., 0::2] | (codes[..., 1::2] << NIBBLE_BITS)
    return packed, scales


# =================================================================================================================
# dequantize
# =================================================================================================================
def dequantize(blocks: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype, length: int) -> torch.Tensor:
    """Decode ``blocks uint8 [..., G, 16]`` + ``scales uint8 [..., G]`` to ``dtype [..., length]``.

    Each value is ``E2M1_VALUES[code] * 2**(scale - 127)`` rounded once to ``dtype`` (past the dtype's range:
    +-Inf; scale byte 0 is 2**-127, a bfloat16/float32 subnormal; scale byte 255 decodes the block to NaN).
    Bit-identical to ``mxfp4.reference.dequantize``. One output tensor is allocated; nothing else of its size.

    >>> dequantize(torch.full((1, 16), 0x92, dtype=torch.uint8), torch.tensor([125], dtype=torch.uint8),
    ...            torch.float32, 32)[:2].tolist()
    [0.25, -0.125]
    """
    groups = scales.shape[-1]
    lead = tuple(scales.shape[:-1])
    rows = math.prod(lead)
    full = groups * BLOCK_SIZE
    blocks2 = blocks.reshape(rows, groups, BYTES_PER_BLOCK)
    scales2 = scales.reshape(rows, groups)
    if dtype == torch.float64:
        table, decode, use_compiled = _value_table(dtype, blocks.device), _decode_nibbles, False
    else:
        table, decode = _pair_table(dtype, blocks.device), _decode_pairs
        use_compiled = _use_compiled(blocks.device, rows * full)
    kernel = _compiled_decode_pairs() if use_compiled else decode
    rows_per_chunk = rows if use_compiled else max(1, _chunk_elements(blocks.device) // max(1, full))

    out = None
    for start in range(0, rows, rows_per_chunk):
        stop = min(rows, start + rows_per_chunk)
        words = _run(kernel, decode, blocks2[start:stop].contiguous(), scales2[start:stop].contiguous(), table)
        values = words.view(dtype).reshape(stop - start, full)
        if start == 0 and stop == rows and length == full:  # one chunk, nothing to trim: it is the result
            out = values
            break
        if out is None:
            out = torch.empty((rows, length), dtype=dtype, device=blocks.device)
        out[start:stop] = values[:, :length]
    if out is None:
        out = torch.empty((rows, length), dtype=dtype, device=blocks.device)
    return out.reshape(*lead, length)


def _decode_pairs(blocks: torch.Tensor, scales: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``[r, G, 16]`` bytes + ``[r, G]`` scales -> ``[r, G, 16]`` words: the bits of elements 2i and 2i+1."""
    index = (scales.to(torch.int32)[..., None] << 8) | blocks.to(torch.int32)
    return table[index]


def _decode_nibbles(blocks: torch.Tensor, scales: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """float64 output: ``[r, G, 16]`` -> ``[r, G, 32]`` values looked up per code (pairs do not fit a word)."""
    codes = torch.stack((blocks & NIBBLE_MASK, blocks >> NIBBLE_BITS), dim=-1).reshape(*scales.shape, BLOCK_SIZE)
    index = (scales.to(torch.int64)[..., None] << NIBBLE_BITS) | codes.to(torch.int64)
    return table[index]


@functools.lru_cache(maxsize=None)
def _compiled_decode_pairs():
    return torch.compile(_decode_pairs, dynamic=True)


_PAIR_WORD = {torch.bfloat16: torch.int32, torch.float16: torch.int32, torch.float32: torch.int64}
_NUM_SCALE_BYTES = 256
_NUM_CODES = 1 << NIBBLE_BITS


def _exact_values() -> torch.Tensor:
    """float64 ``[256 scale bytes, 16 codes]``: the exact decoded value of every (scale, code) pair."""
    exponent = torch.arange(_NUM_SCALE_BYTES, dtype=torch.float64) - E8M0_BIAS
    scale = torch.exp2(exponent)
    scale[E8M0_NAN] = float("nan")
    return scale[:, None] * torch.tensor(E2M1_VALUES, dtype=torch.float64)[None, :]


@functools.lru_cache(maxsize=None)
def _value_table(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``dtype [256 * 16]``: index ``scale << 4 | code``."""
    return _exact_values().to(dtype).reshape(-1).to(device)


@functools.lru_cache(maxsize=None)
def _pair_table(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``int32/int64 [256 * 256]``: index ``scale << 8 | byte``; the word holds the low nibble's value first."""
    if sys.byteorder != "little":  # pragma: no cover - every platform torch ships for is little-endian
        raise RuntimeError("the pair table assumes a little-endian machine")
    values = _exact_values().to(dtype)  # rounded once, as the reference's astype
    byte = torch.arange(_NUM_SCALE_BYTES)
    pairs = torch.stack((values[:, byte & NIBBLE_MASK], values[:, byte >> NIBBLE_BITS]), dim=-1)  # [256, 256, 2]
    return pairs.contiguous().view(_PAIR_WORD[dtype]).reshape(-1).to(device)


# =================================================================================================================
# shared plumbing
# =================================================================================================================
_compiler_broken: str | None = None


def _use_compiled(device: torch.device, numel: int) -> bool:
    policy = compile_policy()
    if policy == "never" or _compiler_broken is not None or device.type != "cpu":
        return False
    if torch.compiler.is_compiling():  # already inside someone's torch.compile: let it trace the plain ops
        return False
    return policy == "always" or numel >= COMPILE_MIN_ELEMENTS


def _chunk_elements(device: torch.device) -> int:
    return CHUNK_ELEMENTS if device.type == "cpu" else CHUNK_ELEMENTS_ACCELERATOR


def _run(kernel, eager, *args):
    """Call the compiled ``kernel``; if compiling fails, warn once and use the eager function from then on."""
    global _compiler_broken
    if kernel is eager:
        return eager(*args)
    try:
        return kernel(*args)
    except Exception as error:  # noqa: BLE001 - any compiler failure means: use the eager path
        _compiler_broken = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        warnings.warn(
            f"mxfp4: torch.compile failed on the CPU ({_compiler_broken}); using the eager torch path "
            f"(correct, slower). Set {COMPILE_ENV}=never to silence this.",
            RuntimeWarning,
            stacklevel=3,
        )
        return eager(*args)


def _row_chunks(x: torch.Tensor, rows_per_chunk: int):
    """Yield ``(first_row, [r, K] tensor)`` over the rows of ``x [..., K]`` without copying ``x`` as a whole."""
    length = x.shape[-1]
    if x.dim() == 1:
        yield 0, x[None]
        return
    try:
        flat = x.view(-1, length)
    except RuntimeError:  # strides that do not flatten: walk the leading dim
        step = math.prod(x.shape[1:-1])
        for index in range(x.shape[0]):
            for start, chunk in _row_chunks(x[index], rows_per_chunk):
                yield index * step + start, chunk
        return
    for start in range(0, flat.shape[0], rows_per_chunk):
        yield start, flat[start : start + rows_per_chunk]


def _pad_to_blocks(chunk: torch.Tensor, groups: int) -> torch.Tensor:
    """Contiguous ``[r, G*32]``: zero-padded past K (the format's partial-block rule)."""
    padding = groups * BLOCK_SIZE - chunk.shape[-1]
    if padding:
        return torch.nn.functional.pad(chunk, (0, padding))
    return chunk.contiguous()


__all__ = ["quantize", "dequantize", "round_to_e2m1", "compile_policy", "COMPILE_ENV", "COMPILE_MIN_ELEMENTS"]
