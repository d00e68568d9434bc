"""Dequantize MXFP4 blocks to bf16 / fp16 / fp32. Twin of ``mxfp4.reference.dequantize``; bit-identical to it.

Each element is decoded exactly in float32 by ``mx.e2m1_low`` / ``e2m1_high`` times ``mx.scale_factor`` (the E2M1
value times a power of two; scale byte 0 is 2**-127 and byte 255 is NaN: ``mx.decode_mxfp4``'s values bit for bit)
and rounded once to the output dtype, as the reference's float64 -> dtype cast does: values past the dtype's range
become +-Inf, tiny fp16 values round to nearest-even subnormals or zero.

The launcher views ``blocks [..., G, 16]`` / ``scales [..., G]`` as ``[outer, rows, G, ...]`` with their own strides
(views into larger buffers need no copy) and writes a ``[..., length]`` output (new and contiguous, or the
caller's). Each program decodes ``ROW_TILE`` rows x ``GROUP_TILE`` blocks: 16 bytes and one scale byte in, 32
elements out per block.

>>> out = dequantize(torch.full((1, 1, 16), 0x92, dtype=torch.uint8), torch.tensor([[125]], dtype=torch.uint8),
...                  torch.float32, 32, Backend.BF16)
>>> out[0, :2].tolist()                                     # codes 2 (1.0) and 9 (-0.5) under scale 2**-2
[0.25, -0.125]
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mxfp4.dispatch import Backend
from mxfp4.spec import BLOCK_SIZE, BYTES_PER_BLOCK

from .mx import BF16_SHIFT, e2m1_high, e2m1_low, scale_factor, sign_extend
from .launch import check_launchable, next_pow2, on_device, rows_view, tile_coordinates

__all__ = ["dequantize", "compile_specs", "OUTPUT_DTYPES"]

OUTPUT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)

BLOCK = tl.constexpr(BLOCK_SIZE)
HALF_BLOCK = tl.constexpr(BYTES_PER_BLOCK)

# --- schedule ------------------------------------------------------------------------------------------------
# Memory-bound: ~ELEMENTS_PER_PROGRAM outputs per program (8 KiB of bf16, 16 KiB of fp32) from 17 bytes per 32.
# Starting points for the H100 tuning issue; the same schedule serves every path.
ELEMENTS_PER_PROGRAM = 4096
MAX_GROUP_TILE = 8
NUM_WARPS = {Backend.HOPPER: 4, Backend.BF16: 4, Backend.FP32: 4}
NUM_STAGES = 1


def tile_shape(groups: int, rows: int) -> tuple[int, int]:
    """(ROW_TILE, GROUP_TILE): up to MAX_GROUP_TILE blocks along a row, the rest of the tile in rows."""
    group_tile = min(next_pow2(groups), MAX_GROUP_TILE)
    row_tile = max(1, ELEMENTS_PER_PROGRAM // (group_tile * BLOCK_SIZE))
    return min(row_tile, next_pow2(rows)), group_tile


def dequantize(
    blocks: torch.Tensor,
    scales: torch.Tensor,
    dtype: torch.dtype,
    length: int,
    backend: Backend,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Decode MXFP4 blocks along their last block axis.

    Args:
        blocks: ``uint8 [..., G, 16]`` (two E2M1 codes per byte, element 2i in the low nibble), any strides.
        scales: ``uint8 [..., G]`` E8M0 bytes, same leading shape and device, any strides.
        dtype: ``torch.bfloat16``, ``torch.float16`` or ``torch.float32``.
        length: the logical length K of the last axis, ``G*32 - 31 <= K <= G*32`` (the padding of a partial last
            block is not written).
        backend: the Triton path (``hopper``, ``bf16``, ``fp32``); it picks the launch configuration only.
        out: optional ``dtype [..., length]`` tensor to write into (unit stride on the last axis, any other
            strides); nothing outside it is written.

    Returns:
        ``dtype [..., length]`` (a new contiguous tensor unless ``out`` is given), bit-identical to
        ``mxfp4.reference.dequantize(blocks, scales, dtype, length)`` (NaN wherever a block's scale byte is 255).

    >>> out = dequantize(torch.full((1, 1, 16), 0x92, dtype=torch.uint8), torch.tensor([[125]], dtype=torch.uint8),
    ...                  torch.float32, 32, Backend.BF16)
    >>> out[0, :2].tolist()                                 # codes 2 (1.0) and 9 (-0.5) under scale 2**-2
    [0.25, -0.125]
    """
    for name, t in (("blocks", blocks), ("scales", scales)):
        if not isinstance(t, torch.Tensor) or t.dtype != torch.uint8:
            got = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
            raise TypeError(f"dequantize: {name} must be a uint8 tensor, got {got}")
    if blocks.dim() < 2 or blocks.shape[-1] != BYTES_PER_BLOCK or tuple(blocks.shape[:-1]) != tuple(scales.shape):
        raise ValueError(
            f"dequantize: blocks {tuple(blocks.shape)} and scales {tuple(scales.shape)} do not match: expected "
            f"[..., G, {BYTES_PER_BLOCK}] and [..., G]"
        )
    if blocks.device != scales.device:
        raise ValueError(f"dequantize: blocks are on {blocks.device} but scales on {scales.device}")
    if dtype not in OUTPUT_DTYPES:
        raise TypeError(f"the Triton dequantize kernel writes bfloat16, float16 or float32, not {dtype}")
    groups = blocks.shape[-2]
    length = int(length)
    if not (groups - 1) * BLOCK_SIZE < length <= groups * BLOCK_SIZE:
        raise ValueError(f"dequantize: length {length} does not fit {groups} blocks of {BLOCK_SIZE}")
    backend = Backend(backend)
    if not backend.uses_triton:
        raise ValueError("the Triton dequantize kernel serves the hopper, bf16 and fp32 paths, not 'torch'")
    check_launchable(blocks, "dequantize")

    lead = tuple(blocks.shape[:-2])
    if out is None:
        out = torch.empty((*lead, length), dtype=dtype, device=blocks.device)
    else:
        if not isinstance(out, torch.Tensor) or out.dtype != dtype or tuple(out.shape) != (*lead, length):
            got = (out.dtype, tuple(out.shape)) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"dequantize: out must be a {dtype} tensor of shape {(*lead, length)}, got {got}")
        if out.device != blocks.device or out.stride(-1) != 1:
            raise ValueError(f"dequantize: out must be on {blocks.device} with unit stride on its last axis")
    if out.numel() == 0:
        return out
    view = rows_view(lead, blocks.stride()[:-2], scales.stride()[:-1], out.stride()[:-1])
    if view is None:  # leading dims no two strides describe: one copy of the (4.25-bit) inputs
        blocks, scales = blocks.contiguous(), scales.contiguous()
        view = rows_view(lead, blocks.stride()[:-2], scales.stride()[:-1], out.stride()[:-1])
    if view is None:  # the caller's out is laid out like that: decode into a fresh tensor and copy
        return out.copy_(dequantize(blocks, scales, dtype, length, backend))
    outer, rows, [(b_outer, b_row), (s_outer, s_row), (o_outer, o_row)] = view
    row_tile, group_tile = tile_shape(groups, rows)
    grid = (outer * triton.cdiv(rows, row_tile) * triton.cdiv(groups, group_tile),)
    with on_device(out):
        dequantize_mxfp4_kernel[grid](
            blocks, scales, out,
            outer, rows, groups, length,
            b_outer, b_row, blocks.stride(-2), blocks.stride(-1),
            s_outer, s_row, scales.stride(-1),
            o_outer, o_row,
            ROW_TILE=row_tile, GROUP_TILE=group_tile,
            num_warps=NUM_WARPS[backend], num_stages=NUM_STAGES,
        )  # fmt: skip
    return out


def compile_specs(backend: Backend) -> list[dict]:
    """The variants the launcher builds for ``backend`` (one per output dtype), for ``aot.py``: contiguous
    GPT-OSS-like blocks (K = 2880: 90 blocks per row; unit strides specialized as Triton's launcher does)."""
    backend = Backend(backend)
    row_tile, group_tile = tile_shape(90, 1 << 20)
    specs = []
    for dtype_name in ("bf16", "fp16", "fp32"):
        signature = {
            "blocks_ptr": "*u8", "scales_ptr": "*u8", "out_ptr": f"*{dtype_name}",
            "outer": "i32", "rows": "i32", "groups": "i32", "length": "i32",
            "b_stride_outer": "i32", "b_stride_row": "i32", "b_stride_group": "i32", "b_stride_byte": "constexpr",
            "s_stride_outer": "i32", "s_stride_row": "i32", "s_stride_group": "constexpr",
            "o_stride_outer": "i32", "o_stride_row": "i32",
            "ROW_TILE": "constexpr", "GROUP_TILE": "constexpr",
        }  # fmt: skip
        specs.append(
            {
                "name": f"dequantize_{dtype_name}",
                "fn": dequantize_mxfp4_kernel,
                "signature": signature,
                "constexprs": {"b_stride_byte": 1, "s_stride_group": 1, "ROW_TILE": row_tile, "GROUP_TILE": group_tile},
                "divisible_by_16": [
                    "b_stride_outer",
                    "b_stride_row",
                    "b_stride_group",
                    "length",
                    "o_stride_outer",
                    "o_stride_row",
                ],  # fmt: skip
                "num_warps": NUM_WARPS[backend],
                "num_stages": NUM_STAGES,
            }
        )
    return specs


# --- device code ---------------------------------------------------------------------------------------------
@triton.jit
def to_output(value, dtype: tl.constexpr):
    """A decoded float32 value in the output dtype, rounded once (nearest-even; overflow to +-Inf).

    bfloat16 takes the top half of the float32 bits: every decoded value (two significant bits, 2**-128 ..
    1.5 * 2**127, or +-Inf/NaN) is exactly a bfloat16, so no rounding happens, subnormals included, and no bf16
    conversion instruction is needed (sm_75 has none).
    """
    if dtype == tl.bfloat16:
        return (value.to(tl.int32, bitcast=True) >> BF16_SHIFT).to(tl.int16).to(tl.bfloat16, bitcast=True)
    else:
        return value.to(dtype)


@triton.jit
def dequantize_mxfp4_kernel(
    blocks_ptr, scales_ptr, out_ptr,
    outer, rows, groups, length,
    b_stride_outer, b_stride_row, b_stride_group, b_stride_byte,
    s_stride_outer, s_stride_row, s_stride_group,
    o_stride_outer, o_stride_row,
    ROW_TILE: tl.constexpr, GROUP_TILE: tl.constexpr,
):  # fmt: skip
    """Decode the tile ``[o, rows r.., blocks g..]`` of ``[outer, rows, groups]`` blocks into ``out`` viewed as
    ``[outer, rows, length]`` (unit stride on the last axis), masked past ``length`` and past the last row."""
    COLS: tl.constexpr = GROUP_TILE * BLOCK
    o, row_tile, group_tile = tile_coordinates(tl.program_id(0), rows, groups, ROW_TILE, GROUP_TILE)

    row = row_tile * ROW_TILE + tl.arange(0, ROW_TILE)
    group = group_tile * GROUP_TILE + tl.arange(0, GROUP_TILE)
    byte = tl.arange(0, HALF_BLOCK)
    row_ok = row < rows
    # Never read past the last block or row: bytes there (another tensor, or a NaN scale) must not reach the output.
    block_ok = row_ok[:, None] & (group < groups)[None, :]

    o64 = o.to(tl.int64)
    row64 = row.to(tl.int64)
    scale_rows = o64 * s_stride_outer + row64 * s_stride_row
    scale_ptrs = scales_ptr + scale_rows[:, None] + (group.to(tl.int64) * s_stride_group)[None, :]
    scale = tl.load(scale_ptrs, mask=block_ok, other=0).to(tl.int32)
    block_base = (o64 * b_stride_outer + row64 * b_stride_row)[:, None] + (group.to(tl.int64) * b_stride_group)[None, :]
    byte_ptrs = blocks_ptr + block_base[:, :, None] + (byte * b_stride_byte)[None, None, :]
    packed = sign_extend(tl.load(byte_ptrs, mask=block_ok[:, :, None], other=0))

    # Exact in float32 (E2M1 value times a power of two: mx.decode_mxfp4's values bit for bit, at a quarter of its
    # integer work, which matters in a stream this light), then rounded once to the output dtype.
    factor = scale_factor(scale)[:, :, None]
    even = to_output(e2m1_low(packed) * factor, out_ptr.dtype.element_ty)
    odd = to_output(e2m1_high(packed) * factor, out_ptr.dtype.element_ty)
    values = tl.reshape(tl.join(even, odd), [ROW_TILE, COLS])

    col = group_tile * COLS + tl.arange(0, COLS)
    out_ptrs = out_ptr + (o64 * o_stride_outer + row64 * o_stride_row)[:, None] + col[None, :]
    tl.store(out_ptrs, values, mask=row_ok[:, None] & (col < length)[None, :])
