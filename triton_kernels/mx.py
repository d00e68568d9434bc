"""Device functions shared by the MXFP4 kernels: E2M1 / E8M0 decode, written once from ``mxfp4.spec``.

Not a kernel: ``@triton.jit`` helpers that the kernels inline. Every value decoded here is exact in float32, so a
kernel that stores it to bf16/fp16 rounds once, as the reference's float64 -> dtype cast does.
"""

import struct

import triton
import triton.language as tl

from mxfp4.spec import (
    BLOCK_SIZE,
    BYTES_PER_BLOCK,
    E2M1_EXPONENT_BIAS,
    E2M1_MAGNITUDE_MASK,
    E2M1_MAGNITUDES,
    E2M1_MANTISSA_BITS,
    E2M1_SIGN_BIT,
    E8M0_BIAS,
    E8M0_NAN,
    F32_EXPONENT_BIAS,
    F32_MANTISSA_BITS,
    F32_SIGN_BIT,
    NIBBLE_BITS,
    NIBBLE_MASK,
)


# As tl.constexpr so the jit functions below can read them.
SIGN_BIT = tl.constexpr(E2M1_SIGN_BIT)
MAGNITUDE_MASK = tl.constexpr(E2M1_MAGNITUDE_MASK)
SCALE_BIAS = tl.constexpr(E8M0_BIAS)
SCALE_ONE = tl.constexpr(E8M0_BIAS)  # the scale byte of 1.0: what masked scale loads read
SCALE_NAN = tl.constexpr(E8M0_NAN)
LOW_NIBBLE = tl.constexpr(NIBBLE_MASK)
HIGH_SHIFT = tl.constexpr(NIBBLE_BITS)
# E8M0 spans 2**-127 .. 2**127 and float32's normal range stops at 2**-126, so a scale is applied as two normal
# powers of two whose product is exact; FLOAT32_EXPONENT_BIAS builds each one from its exponent bits.
FLOAT32_EXPONENT_BIAS = tl.constexpr(F32_EXPONENT_BIAS)
FLOAT32_MANTISSA_BITS = tl.constexpr(F32_MANTISSA_BITS)
TOP_MANTISSA_BIT = tl.constexpr(1 << (F32_MANTISSA_BITS - 1))
assert E8M0_BIAS == F32_EXPONENT_BIAS, "scale_factor uses the E8M0 byte as float32's exponent field"


@triton.jit
def e2m1_twice(code):
    """2 * |value| of E2M1 codes (int32, 0..15) as int32: 0, 1, 2, 3, 4, 6, 8, 12.

    Exponent field e = mag >> 1 and mantissa bit m = mag & 1: e = 0 is subnormal (2*value = m), otherwise
    2*value = (2 + m) << (e - 1). Integer arithmetic, no table: the same code runs in every kernel and path.
    """
    magnitude = code & MAGNITUDE_MASK
    exponent = magnitude >> 1
    mantissa = magnitude & 1
    normal = (2 + mantissa) << tl.maximum(exponent - 1, 0)
    return tl.where(exponent == 0, mantissa, normal)


@triton.jit
def e2m1_sign(code):
    """+1.0 / -1.0 (float32) from the sign bit of E2M1 codes (int32)."""
    return tl.where((code & SIGN_BIT) != 0, -1.0, 1.0)


@triton.jit
def pow2(exponent):
    """2.0 ** exponent (float32) for int32 exponents in float32's normal range [-126, 127], from the bits."""
    bits = (exponent + FLOAT32_EXPONENT_BIAS) << FLOAT32_MANTISSA_BITS
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def decode_mxfp4(code, scale):
    """float32 value of E2M1 codes (int32, 0..15) under E8M0 scale bytes (int32, 0..255, broadcastable).

    value = sign * (2*|v|) * 2**(scale - 127 - 1); the power of two is split into two normal factors
    (2**hi * 2**lo, each in [-64, 64]) so that scale byte 0 gives 2**-127, not 0; scale 255 gives NaN.
    """
    exponent = scale - SCALE_BIAS - 1
    hi = exponent >> 1
    lo = exponent - hi
    value = e2m1_sign(code) * e2m1_twice(code).to(tl.float32)
    value = (value * pow2(hi)) * pow2(lo)
    return tl.where(scale == SCALE_NAN, float("nan"), value)


@triton.jit
def unpack_low(byte):
    """Element 2i of each packed byte (int32): the low nibble."""
    return byte & LOW_NIBBLE


@triton.jit
def unpack_high(byte):
    """Element 2i+1 of each packed byte (int32): the high nibble."""
    return (byte >> HIGH_SHIFT) & LOW_NIBBLE


# --- the hot-loop decode: E2M1 bits placed straight into a float32 ------------------------------------------------
# GEMM inner loops decode every weight element, so their integer work bounds them: decode_mxfp4 costs ~16-27
# operations per element, these ~4. The code's sign bit goes to float32's sign bit and its 2 exponent + 1 mantissa
# bits to the bottom of float32's exponent field and the top of its mantissa: that float is E2M1 * 2**-126 (codes 0
# and 1, the E2M1 subnormals, become float32 subnormals), and the multiplication by 2**126 is exact. Reading the byte
# sign-extended to int32 (``u8 -> i8 -> i32``, one instruction) gives the high nibble its sign bit for free.
# The scale is applied separately (once per 32-element block sum, or to a decoded tile). Tests check both nibbles
# against decode_mxfp4 for every byte (tests/test_triton_matmul.py, tests/test_moe.py).
LOW_NIBBLE_TO_TOP = tl.constexpr(32 - NIBBLE_BITS)  # the low nibble's sign bit -> float32's sign bit
TOP_TO_MAGNITUDE = tl.constexpr(32 - NIBBLE_BITS - (F32_MANTISSA_BITS - E2M1_MANTISSA_BITS))  # bit 28 -> 22: 6
HIGH_NIBBLE_TO_MAGNITUDE = tl.constexpr(F32_MANTISSA_BITS - E2M1_MANTISSA_BITS - NIBBLE_BITS)  # 18
# float32's sign bit + the 3 E2M1 magnitude bits at float32 bits 24..22, as an int32 (0x81C00000).
E2M1_FLOAT32_BITS = tl.constexpr(
    ((1 << F32_SIGN_BIT) | (E2M1_MAGNITUDE_MASK << (F32_MANTISSA_BITS - E2M1_MANTISSA_BITS))) - (1 << 32)
)
E2M1_TO_FLOAT32_SCALE = tl.constexpr(float(2 ** (F32_EXPONENT_BIAS - E2M1_EXPONENT_BIAS)))  # 2**126


@triton.jit
def sign_extend(packed):
    """uint8 packed bytes -> int32 with bit 7 copied upward (the high nibble's sign lands on bit 31)."""
    return packed.to(tl.int8, bitcast=True).to(tl.int32)


@triton.jit
def e2m1_low(byte):
    """Exact float32 E2M1 value of the low nibble (element 2i) of sign-extended bytes (int32), unscaled."""
    top = byte << LOW_NIBBLE_TO_TOP
    bits = (top | (top >> TOP_TO_MAGNITUDE)) & E2M1_FLOAT32_BITS
    return bits.to(tl.float32, bitcast=True) * E2M1_TO_FLOAT32_SCALE


@triton.jit
def e2m1_high(byte):
    """Exact float32 E2M1 value of the high nibble (element 2i + 1) of sign-extended bytes (int32), unscaled."""
    bits = (byte << HIGH_NIBBLE_TO_MAGNITUDE) & E2M1_FLOAT32_BITS
    return bits.to(tl.float32, bitcast=True) * E2M1_TO_FLOAT32_SCALE


@triton.jit
def scale_factor(scale):
    """float32 ``2 ** (scale - 127)`` of E8M0 bytes (int32 0..255); byte 255 gives NaN, byte 0 gives 2**-127.

    E8M0 and float32 share the exponent bias (127), so byte b is the exponent field of 2**(b - 127) as it is; the
    two ends need a mantissa bit: 2**-127 is the subnormal 0x00400000 and 0x7FC00000 is a quiet NaN.
    """
    special = (scale == 0) | (scale == SCALE_NAN)
    bits = (scale << FLOAT32_MANTISSA_BITS) | tl.where(special, TOP_MANTISSA_BIT, 0)
    return bits.to(tl.float32, bitcast=True)


# --- the GEMV decode: eight codes per 32-bit word ------------------------------------------------------------------
# A GEMV on the CUDA cores spends its instructions on the decode. Reading the packed bytes as little-endian int32
# words puts code k of the word (element k) at bits 4k..4k+3: shifted up to bits 28..31 (one shift; none for k = 7)
# and arithmetic-shifted down by 6, its sign stays at bit 31 and its magnitude lands on bits 22..24, where the mask
# of e2m1_low / e2m1_high keeps exactly those (~3 integer operations per element instead of ~3.5 plus a byte
# extraction: 5.6 instead of 6.7 SASS instructions per element in the dense GEMV's loop, for sm_90).
WORDS_PER_BLOCK = tl.constexpr(BYTES_PER_BLOCK // 4)
CODES_PER_WORD = tl.constexpr(32 // NIBBLE_BITS)
BLOCK_ELEMENTS = tl.constexpr(BLOCK_SIZE)


@triton.jit
def e2m1_of_word(word, K: tl.constexpr):
    """Exact float32 E2M1 value (unscaled) of code ``K`` (bits 4K..4K+3, element K) of int32 words of packed bytes."""
    if K == CODES_PER_WORD - 1:
        top = word
    else:
        top = word << (LOW_NIBBLE_TO_TOP - HIGH_SHIFT * K)
    bits = (top >> TOP_TO_MAGNITUDE) & E2M1_FLOAT32_BITS  # int32: an arithmetic shift, bit 31 stays the sign
    return bits.to(tl.float32, bitcast=True) * E2M1_TO_FLOAT32_SCALE


@triton.jit
def word_block_sums(words, scale, x, WORD_AXIS: tl.constexpr):
    """``[..., G]`` float32: each MX block's dot with its 32 activations, times the block's scale.

    ``words`` int32 ``[..., G, 4]`` (a block's 16 bytes; one thread holds a whole block, a 128-bit load, so the
    block's sum stays in the thread), ``scale`` uint8 ``[..., G]``, ``x`` float32 broadcastable to
    ``[..., G, 4, 2, 2, 2]``: the block's 32 activations, element ``8 * word + 4 * b2 + 2 * b1 + b0`` at
    ``[word, b2, b1, b0]`` (a contiguous run of 32, reshaped); ``WORD_AXIS`` the last axis of ``words``. The scale
    is a power of two, so applying it once to the block sum equals applying it to each product (up to overflow,
    which then is Inf / NaN either way).
    """
    b0_even, b0_odd = tl.split(x)  # tl.split takes the last axis: b0, then b1, then b2
    x_0_4, x_2_6 = tl.split(b0_even)
    x_1_5, x_3_7 = tl.split(b0_odd)
    x0, x4 = tl.split(x_0_4)
    x2, x6 = tl.split(x_2_6)
    x1, x5 = tl.split(x_1_5)
    x3, x7 = tl.split(x_3_7)
    products = e2m1_of_word(words, 0) * x0
    products += e2m1_of_word(words, 1) * x1
    products += e2m1_of_word(words, 2) * x2
    products += e2m1_of_word(words, 3) * x3
    products += e2m1_of_word(words, 4) * x4
    products += e2m1_of_word(words, 5) * x5
    products += e2m1_of_word(words, 6) * x6
    products += e2m1_of_word(words, 7) * x7
    return tl.sum(products, axis=WORD_AXIS) * scale_factor(scale.to(tl.int32))


@triton.jit
def gemv_step(acc, g0, w_ptrs, s_ptrs, x_ptrs, length, g_end, stride_sg, stride_x, MASKED: tl.constexpr):
    """``acc + `` the ``[R, G]`` scaled block sums (``word_block_sums``) of one GEMV K step, at block ``g0``.

    ``w_ptrs`` int32 ``[R, G, 4]``: the words of blocks ``0..G-1`` of each weight row; ``s_ptrs`` ``[R, G]``: their
    scale bytes (``stride_sg`` apart); ``x_ptrs`` ``[G, 32]``: the activations of those blocks (``stride_x`` apart).
    Whole steps run unmasked; ``MASKED`` (the last step) reads blocks at or past ``g_end`` as code 0 under scale 1 and
    activations at or past ``length`` as 0 -- the unscaled codes are finite (|v| <= 6), so those products are 0.
    """
    G: tl.constexpr = w_ptrs.shape[1]
    if MASKED:
        live = g0 + tl.arange(0, G) < g_end
        words = tl.load(w_ptrs + g0 * WORDS_PER_BLOCK, mask=live[None, :, None], other=0)
        scale = tl.load(s_ptrs + g0 * stride_sg, mask=live[None, :], other=SCALE_ONE)
        element = (g0 * BLOCK_ELEMENTS + tl.arange(0, G)[:, None] * BLOCK_ELEMENTS
                   + tl.arange(0, BLOCK_ELEMENTS)[None, :])
        x = tl.load(x_ptrs + g0 * BLOCK_ELEMENTS * stride_x, mask=element < length, other=0.0)
    else:
        words = tl.load(w_ptrs + g0 * WORDS_PER_BLOCK)
        scale = tl.load(s_ptrs + g0 * stride_sg)
        x = tl.load(x_ptrs + g0 * BLOCK_ELEMENTS * stride_x)
    x = tl.reshape(x.to(tl.float32), [1, G, WORDS_PER_BLOCK, 2, 2, 2])
    return acc + word_block_sums(words, scale, x, 2)


@triton.jit
def gemv_tma_step(acc, words, g0, s_ptrs, x_ptrs, length, g_end, stride_sg, stride_x, SLICED: tl.constexpr):
    """``gemv_step`` for words a TMA load brought (``launch.block_words_descriptor``): ``words`` int32
    ``[R, 4 G]`` of blocks ``g0 .. g0 + G - 1``, which the load zero-filled past the row's end. Every step is
    masked (the TMA GEMVs run one pipelined loop, no separate tail step): scales at or past ``g_end`` read as 1,
    activations at or past ``length`` as 0. ``SLICED`` (split-K, where ``g_end`` may fall inside the row): the words
    and activations of blocks at or past ``g_end`` are zeroed too."""
    R: tl.constexpr = words.shape[0]
    G: tl.constexpr = acc.shape[1]
    words = tl.reshape(words, [R, G, WORDS_PER_BLOCK])
    live = g0 + tl.arange(0, G) < g_end
    element = (g0 * BLOCK_ELEMENTS + tl.arange(0, G)[:, None] * BLOCK_ELEMENTS
               + tl.arange(0, BLOCK_ELEMENTS)[None, :])
    if SLICED:
        words = tl.where(live[None, :, None], words, 0)
        x_mask = live[:, None] & (element < length)
    else:
        x_mask = element < length
    scale = tl.load(s_ptrs + g0 * stride_sg, mask=live[None, :], other=SCALE_ONE)
    x = tl.load(x_ptrs + g0 * BLOCK_ELEMENTS * stride_x, mask=x_mask, other=0.0)
    x = tl.reshape(x.to(tl.float32), [1, G, WORDS_PER_BLOCK, 2, 2, 2])
    return acc + word_block_sums(words, scale, x, 2)


# --- the tensor-core decode: codes to bf16 by table lookup (PTX prmt), the scale applied in bf16 -------------------
# A tensor-core tile decodes every weight to a bf16 dot operand; decoding to float32 first (e2m1_low, a float32
# multiply by the scale, a conversion) costs ~9 SASS instructions per element, more than the CUDA-core GEMV's whole
# loop. Here the 8 magnitudes' bf16 bytes are two 8-entry byte tables that one PRMT indexes for four codes at once:
# 20 PTX instructions decode and scale 8 elements; the small-M matmul tile loop drops from 604 to 372 SASS
# instructions per 64 elements (bench/RESULTS.md, session 5). PRMT reads bit 3 of each selector nibble as a mode
# bit, so the codes' sign bits are masked off the selector and put back from a second PRMT in its sign-replicate
# mode. The scale multiplies the bf16 pairs exactly (a power of two) with fma.rn.bf16x2 and -0.0 as the addend (so
# that -0 * s stays -0), on sm_80 and later.
def _bf16_bits(value: float) -> int:
    """bf16 bits of a value exact in bf16 (the top half of its float32 bits)."""
    return struct.unpack("<I", struct.pack("<f", value))[0] >> 16


def _byte_table(byte: int) -> tuple[int, int]:
    """Byte ``byte`` (0 low, 1 high) of the bf16 of magnitudes 0..7, as PRMT's two source words (entries 0-3, 4-7)."""
    entries = [(_bf16_bits(m) >> (8 * byte)) & 0xFF for m in E2M1_MAGNITUDES]
    return tuple(sum(e << (8 * i) for i, e in enumerate(entries[first:first + 4])) for first in (0, 4))


BF16_HIGH_BYTES = _byte_table(1)  # (0x3F3F3F00, 0x40404040)
BF16_LOW_BYTES = _byte_table(0)  # (0xC0800000, 0xC0804000)
BF16X2_NEGATIVE_ZERO = 0x80008000

# One instance decodes 4 packed bytes (inline_asm_elementwise's pack=4; any 4 bytes, each on its own): in "$4"
# the bytes, in "$5".."$8" each byte's scale as a bf16 pair; out "$0".."$3" each byte's two elements as a bf16 pair
# (low nibble in the low half). Operations on b32 words as (opcode, destination, sources...);
# tests/test_triton_matmul.py runs this program on every byte.
E2M1_BF16_PROGRAM = (
    ("and", "sel0", "$4", 0x7777),  # PRMT reads 4 selector nibbles: codes of bytes 0, 1 without their sign bits
    ("shr", "sel1", "$4", 16),
    ("and", "sel1", "sel1", 0x7777),  # bytes 2, 3
    ("prmt", "hi0", BF16_HIGH_BYTES[0], BF16_HIGH_BYTES[1], "sel0"),  # byte 1 of each element's bf16
    ("prmt", "lo0", BF16_LOW_BYTES[0], BF16_LOW_BYTES[1], "sel0"),  # byte 0
    ("prmt", "hi1", BF16_HIGH_BYTES[0], BF16_HIGH_BYTES[1], "sel1"),
    ("prmt", "lo1", BF16_LOW_BYTES[0], BF16_LOW_BYTES[1], "sel1"),
    ("shl", "up", "$4", 4),  # each low nibble's sign bit to the top of its byte
    ("prmt", "sign0", "up", "$4", 0xD9C8),  # 0xFF / 0x00 per element: its sign bit, replicated by PRMT's mode bit
    ("prmt", "sign1", "up", "$4", 0xFBEA),
    ("or_and", "hi0", "hi0", "sign0", 0x80808080),  # the bf16 sign bits
    ("or_and", "hi1", "hi1", "sign1", 0x80808080),
    ("prmt", "pair0", "lo0", "hi0", 0x5140),  # (lo, hi, lo, hi): the bf16 pair of byte 0
    ("prmt", "pair1", "lo0", "hi0", 0x7362),
    ("prmt", "pair2", "lo1", "hi1", 0x5140),
    ("prmt", "pair3", "lo1", "hi1", 0x7362),
    ("fma_bf16x2", "$0", "pair0", "$5", "negzero"),  # times the scale (exact); + -0.0 keeps -0 * s at -0
    ("fma_bf16x2", "$1", "pair1", "$6", "negzero"),
    ("fma_bf16x2", "$2", "pair2", "$7", "negzero"),
    ("fma_bf16x2", "$3", "pair3", "$8", "negzero"),
)
_PTX_FORMS = {
    "prmt": "prmt.b32 {0}, {1}, {2}, {3};",
    "and": "and.b32 {0}, {1}, {2};",
    "shl": "shl.b32 {0}, {1}, {2};",
    "shr": "shr.u32 {0}, {1}, {2};",
    "or_and": "lop3.b32 {0}, {1}, {2}, {3}, 0xF8;",  # 0xF8 = a | (b & c)
    "fma_bf16x2": "fma.rn.bf16x2 {0}, {1}, {2}, {3};",
}


def _ptx(program) -> str:
    temporaries = sorted({dst for _, dst, *_ in program if not dst.startswith("$")} | {"negzero"})
    lines = [f".reg .b32 {', '.join(temporaries)};", f"mov.b32 negzero, {BF16X2_NEGATIVE_ZERO:#010x};"]
    for op, dst, *srcs in program:
        operands = [dst] + [f"{s:#010x}" if isinstance(s, int) else s for s in srcs]
        lines.append(_PTX_FORMS[op].format(*operands))
    return "{\n" + "\n".join(lines) + "\n}"


E2M1_BF16_PTX = tl.constexpr(_ptx(E2M1_BF16_PROGRAM))
BF16_SHIFT = tl.constexpr(16)
"""bfloat16 is the upper 16 bits of a float32."""


@triton.jit
def scale_pair_bf16(scale):
    """int32 bits of the bf16 pair ``(2 ** (s - 127), 2 ** (s - 127))`` of E8M0 bytes (int32 0..255): byte 0 the
    subnormal 2**-127, byte 255 NaN. bf16 is float32's top half, and ``scale_factor``'s low half is zero."""
    bits = scale_factor(scale).to(tl.int32, bitcast=True) >> BF16_SHIFT
    return bits | (bits << BF16_SHIFT)


@triton.jit
def decode_tile_bf16(packed, scale, ROWS: tl.constexpr, COLS: tl.constexpr):
    """``[ROWS, COLS]`` bf16 weights of ``packed`` uint8 ``[ROWS, COLS / 2]`` under ``scale`` uint8
    ``[ROWS, COLS / 32]``, compiled GPUs only (inline PTX, sm_80+). Exact where ``v * 2**(s - 127)`` is a normal
    bf16; beyond that as bf16 arithmetic rounds (Inf past bf16's range, subnormal or 0 below 2**-126)."""
    factor = scale_pair_bf16(scale.to(tl.int32))
    factor = tl.broadcast_to(factor[:, :, None], [ROWS, COLS // BLOCK_ELEMENTS, BLOCK_ELEMENTS // 2])
    factor = tl.reshape(factor, [ROWS, COLS // 2])
    pairs = tl.inline_asm_elementwise(E2M1_BF16_PTX, "=r,=r,=r,=r,r,r,r,r,r", [packed, factor], dtype=tl.int32,
                                      is_pure=True, pack=4)
    even = (pairs & 0xFFFF).to(tl.int16).to(tl.bfloat16, bitcast=True)
    odd = (pairs >> 16).to(tl.int16).to(tl.bfloat16, bitcast=True)
    return tl.reshape(tl.join(even, odd), [ROWS, COLS])


@triton.jit
def decode_tile(packed, scale, ROWS: tl.constexpr, COLS: tl.constexpr, TABLE_DECODE: tl.constexpr):
    """``[ROWS, COLS]`` weights of a tensor-core K step: ``packed`` uint8 ``[ROWS, COLS / 2]`` (element 2i in the
    low nibble of byte i) under ``scale`` uint8 ``[ROWS, COLS / 32]``, in natural K order. ``TABLE_DECODE``
    (compiled bf16 dots): bf16 by table lookup (``decode_tile_bf16``); otherwise exact float32 (``e2m1_low`` /
    ``e2m1_high`` on the sign-extended bytes, times ``scale_factor``)."""
    if TABLE_DECODE:
        w = decode_tile_bf16(packed, scale, ROWS, COLS)
    else:
        byte = sign_extend(packed)
        pairs = tl.join(e2m1_low(byte), e2m1_high(byte))  # [ROWS, COLS / 2, 2]: elements 2i, 2i + 1
        w = tl.reshape(pairs, [ROWS, COLS // BLOCK_ELEMENTS, BLOCK_ELEMENTS])
        w = w * scale_factor(scale.to(tl.int32))[:, :, None]
        w = tl.reshape(w, [ROWS, COLS])
    return w
