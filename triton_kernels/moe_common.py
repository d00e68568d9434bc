"""Pieces shared by the MoE kernels: the tile -> expert map of the grouped GEMMs, the MXFP4 operand load and
decode, the bf16 dot, grid sizes.

Not a kernel: host helpers and ``@triton.jit`` device functions that the grouped GEMM kernels inline.

MXFP4 decode. The GEMMs' inner loop decodes every weight element (at prefill, once per row tile), so its integer
work bounds them. ``decode_e2m1_byte`` + ``scale_factor`` give exactly the values of ``mx.decode_mxfp4``
(tests/test_moe.py checks all 256 bytes x 256 scale bytes bitwise) with ~10 operations per element instead of ~27:
the E2M1 bits are placed straight into a float32 and the scale byte is used as float32's exponent field.

Grouped GEMM schedule. Rows are the (token, slot) pairs sorted by expert (``moe_sort``): expert e owns sorted rows
``[offset[e], offset[e] + count[e])``. Its rows are cut into ``ceil(count[e] / BLOCK_M)`` tiles, and the tiles of all
experts are numbered one after the other. The launch grid is fixed by sizes known on the host without reading the
counts -- at most ``ceil(pairs / BLOCK_M) + min(E, pairs)`` tiles exist -- and programs past the last real tile
exit at once. So no ``.item()``, no host sync: the whole MoE can be captured in a CUDA graph.
"""

from __future__ import annotations

import triton
import triton.language as tl

from mxfp4.spec import (
    BYTES_PER_BLOCK,
    E2M1_EXPONENT_BIAS,
    E2M1_MAGNITUDE_MASK,
    E2M1_MANTISSA_BITS,
    E2M1_SIGN_BIT,
    E8M0_BIAS,
    E8M0_NAN,
    NIBBLE_BITS,
)

BYTES_PER_SCALE = tl.constexpr(BYTES_PER_BLOCK)

# The E2M1 -> float32 bit placement of decode_e2m1_byte, from the format's constants.
_FLOAT32_SIGN_BIT, _FLOAT32_MANTISSA_BITS, _FLOAT32_EXPONENT_BIAS = 31, 23, 127
assert E8M0_BIAS == _FLOAT32_EXPONENT_BIAS, "scale_factor uses the E8M0 byte as float32's exponent field"
FLOAT32_MANTISSA_BITS = tl.constexpr(_FLOAT32_MANTISSA_BITS)
FLOAT32_TOP_MANTISSA_BIT = tl.constexpr(1 << (_FLOAT32_MANTISSA_BITS - 1))
SCALE_NAN = tl.constexpr(E8M0_NAN)
CODE_BITS = tl.constexpr(NIBBLE_BITS)
E2M1_SIGN = tl.constexpr(E2M1_SIGN_BIT)
E2M1_MAGNITUDE = tl.constexpr(E2M1_MAGNITUDE_MASK)
SIGN_TO_FLOAT32 = tl.constexpr(_FLOAT32_SIGN_BIT - (E2M1_SIGN_BIT.bit_length() - 1))  # 28
MAGNITUDE_TO_FLOAT32 = tl.constexpr(_FLOAT32_MANTISSA_BITS - E2M1_MANTISSA_BITS)  # 22
E2M1_TO_FLOAT32_SCALE = tl.constexpr(float(2 ** (_FLOAT32_EXPONENT_BIAS - E2M1_EXPONENT_BIAS)))  # 2**126


def next_power_of_2_at_least(n: int, minimum: int) -> int:
    return max(minimum, triton.next_power_of_2(max(int(n), 1)))


def max_tiles(pairs: int, num_experts: int, block_m: int) -> int:
    """Upper bound on the grouped GEMM's row tiles: each non-empty expert wastes at most one partial tile."""
    return triton.cdiv(pairs, block_m) + min(num_experts, pairs)


@triton.jit
def expert_tile(counts_ptr, num_experts, tile, BLOCK_M: tl.constexpr, BLOCK_E: tl.constexpr):
    """Which expert row tile ``tile`` belongs to: ``(expert, first sorted row, valid rows)``.

    ``valid rows <= 0`` means the tile is past the last real one (the program has nothing to do). Empty experts
    own no tiles. Each program recomputes the prefix sums over the E counts: E <= a few hundred, cheaper than a
    launch.
    """
    expert_ids = tl.arange(0, BLOCK_E)
    counts = tl.load(counts_ptr + expert_ids, mask=expert_ids < num_experts, other=0)
    tiles = (counts + BLOCK_M - 1) // BLOCK_M
    tiles_end = tl.cumsum(tiles, axis=0)
    rows_end = tl.cumsum(counts, axis=0)
    # Experts whose tiles all end at or before this tile come before it.
    expert = tl.sum((tiles_end <= tile).to(tl.int32), axis=0)
    mine = expert_ids == expert
    first_tile = tl.sum(tl.where(mine, tiles_end - tiles, 0), axis=0)
    first_row_of_expert = tl.sum(tl.where(mine, rows_end - counts, 0), axis=0)
    count = tl.sum(tl.where(mine, counts, 0), axis=0)
    local = (tile - first_tile) * BLOCK_M
    return expert, first_row_of_expert + local, count - local


@triton.jit
def scale_factor(scale):
    """float32 ``2 ** (scale - 127)`` of E8M0 bytes (int32 0..255); byte 255 gives NaN, byte 0 gives 2**-127.

    E8M0 and float32 share the exponent bias (127), so byte b is the exponent field of 2**(b - 127) as it is; the
    two ends need a mantissa bit: 2**-127 is the subnormal 0x00400000 and 0x7FC00000 is a quiet NaN.
    """
    special = (scale == 0) | (scale == SCALE_NAN)
    bits = (scale << FLOAT32_MANTISSA_BITS) | tl.where(special, FLOAT32_TOP_MANTISSA_BIT, 0)
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def decode_e2m1_byte(packed, factor):
    """``(low, high)`` float32 values of the two E2M1 codes in each byte (int32), times ``factor`` (float32).

    Bit-identical to ``mx.decode_mxfp4(unpack_low/high(packed), scale)`` for ``factor = scale_factor(scale)``
    (tested exhaustively) at about a third of the integer work: the hot loop of every MoE GEMM runs this on each
    weight element (for prefill, once per row tile), so its instruction count bounds the GEMMs, not the memory.
    The code's sign bit goes to float32's sign, its 2 exponent + 1 mantissa bits to the bottom of float32's
    exponent and the top of its mantissa: that float is E2M1 * 2**-126 (codes 0 and 1, the E2M1 subnormals,
    become float32 subnormals), and multiplying by 2**126 is exact.
    """
    low = ((packed & E2M1_SIGN) << SIGN_TO_FLOAT32) | ((packed & E2M1_MAGNITUDE) << MAGNITUDE_TO_FLOAT32)
    high_code = packed >> CODE_BITS
    high = ((high_code & E2M1_SIGN) << SIGN_TO_FLOAT32) | ((high_code & E2M1_MAGNITUDE) << MAGNITUDE_TO_FLOAT32)
    low = (low.to(tl.float32, bitcast=True) * E2M1_TO_FLOAT32_SCALE) * factor
    high = (high.to(tl.float32, bitcast=True) * E2M1_TO_FLOAT32_SCALE) * factor
    return low, high


@triton.jit
def load_mxfp4_columns(blocks_ptr, scales_ptr, row, row_ok, byte, length, blocks_stride_n, scales_stride_n):
    """Decode a ``[BYTES, ROWS]`` tile of one MXFP4 matrix (rows quantized along K) as two float32 tiles.

    ``row [ROWS]`` picks weight rows (output features), ``byte [BYTES]`` the packed bytes along K of each row;
    byte b holds elements 2b (low nibble) and 2b+1 (high nibble), and shares the scale of block b // 16.
    Returns ``(even, odd)``: ``even[i, j]`` = W[row[j], 2*byte[i]], ``odd[i, j]`` = W[row[j], 2*byte[i] + 1],
    exactly (float32); bytes past the logical length and rows with ``row_ok`` false are not read and give 0.
    The tile comes out transposed (K major) so it feeds ``tl.dot(x, w)`` directly.

    The odd element of the last byte may lie past an odd ``length``: it is a finite value (or NaN together with
    its in-range neighbour, whose NaN scale it shares), and the activation side is zero there, so the product
    is 0 -- no per-element mask is needed in the hot loop.
    """
    load_ok = row_ok[None, :] & (2 * byte < length)[:, None]
    packed = tl.load(blocks_ptr + row[None, :] * blocks_stride_n + byte[:, None], mask=load_ok, other=0).to(tl.int32)
    scale = tl.load(scales_ptr + row[None, :] * scales_stride_n + (byte // BYTES_PER_SCALE)[:, None], mask=load_ok,
                    other=0).to(tl.int32)
    return decode_e2m1_byte(packed, scale_factor(scale))


@triton.jit
def load_columns_even_odd(ptr, row, row_ok, byte, length, stride_row, stride_col):
    """``(even, odd)`` ``[ROWS, BYTES]`` tiles of a dense matrix: columns 2*byte and 2*byte + 1, zero past length.

    The activation side of the split-K trick: x @ W.T = x[:, 0::2] @ W[:, 0::2].T + x[:, 1::2] @ W[:, 1::2].T, so
    the MXFP4 nibbles never need to be re-interleaved in registers.
    """
    element = 2 * byte
    base = ptr + row[:, None] * stride_row
    even = tl.load(base + element[None, :] * stride_col, mask=row_ok[:, None] & (element < length)[None, :], other=0.0)
    odd = tl.load(base + (element + 1)[None, :] * stride_col, mask=row_ok[:, None] & (element + 1 < length)[None, :],
                  other=0.0)
    return even, odd


@triton.jit
def round_to_bf16(x):
    """float32 -> the nearest bfloat16 value (ties to even), still as float32; NaN stays NaN, overflow gives Inf.

    Only for the interpreter, whose float32 -> bf16 cast truncates (triton 3.9): the compiled cast already
    rounds to nearest even. Integer arithmetic on the bits: add half an ulp of bf16 (plus the tie-to-even bit),
    drop the low 16 bits.
    """
    bits = x.to(tl.int32, bitcast=True)
    rounded = bits + 0x7FFF + ((bits >> 16) & 1)
    rounded = (rounded >> 16) << 16
    return tl.where(x != x, x, rounded.to(tl.float32, bitcast=True))


@triton.jit
def cast(x, dtype: tl.constexpr, INTERPRETED: tl.constexpr):
    """``x.to(dtype)`` rounding to nearest even, also under the interpreter (see ``round_to_bf16``)."""
    if INTERPRETED and dtype == tl.bfloat16:
        out = round_to_bf16(x.to(tl.float32)).to(dtype)
    else:
        out = x.to(dtype)
    return out


@triton.jit
def dot_accumulate(a, b, acc, FP32_DOT: tl.constexpr, INTERPRETED: tl.constexpr):
    """``acc + a @ b`` in float32: IEEE float32 operands on the fp32 path, bf16 tensor-core operands otherwise.

    Under TRITON_INTERPRET the interpreter stores bf16 as raw uint16 and ``tl.dot`` multiplies those integers
    (triton 3.9), so there the operands are rounded to bf16 but kept in float32 -- exact, since a product of two
    bf16 values fits float32 -- which is what the tensor cores compute, up to summation order.
    """
    if FP32_DOT:
        out = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    elif INTERPRETED:
        out = tl.dot(round_to_bf16(a.to(tl.float32)), round_to_bf16(b.to(tl.float32)), acc, input_precision="ieee")
    else:
        out = tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16), acc)
    return out
