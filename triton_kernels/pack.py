"""Pack E2M1 codes two per byte, and back. Twins of ``mxfp4.reference.pack`` / ``mxfp4.reference.unpack``.

Element 2i goes to the low nibble of byte i and element 2i+1 to the high nibble (the GPT-OSS checkpoint order).
Both kernels stream a flat contiguous array: each program packs ``BYTES_PER_PROGRAM`` bytes from twice as many
codes (or unpacks them), reading and writing whole contiguous runs.

>>> codes = torch.arange(32, dtype=torch.uint8) % 16
>>> pack(codes)[0, :2].tolist()                  # 0 | 1 << 4, 2 | 3 << 4
[16, 50]
>>> torch.equal(unpack(pack(codes)), codes)
True
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mxfp4.dispatch import Backend
from mxfp4.spec import BLOCK_SIZE, BYTES_PER_BLOCK, CODES_PER_BYTE, NIBBLE_BITS, NIBBLE_MASK

from .launch import check_launchable, on_device

__all__ = ["pack", "unpack", "compile_specs"]

HIGH_SHIFT = tl.constexpr(NIBBLE_BITS)
LOW_NIBBLE = tl.constexpr(NIBBLE_MASK)
PAIR = tl.constexpr(CODES_PER_BYTE)

# Bytes per program: 8 KiB out of pack (16 KiB in), a plain memory-bound stream; a starting point for tuning.
BYTES_PER_PROGRAM = 8192
NUM_WARPS = {Backend.HOPPER: 4, Backend.BF16: 4, Backend.FP32: 4}
NUM_STAGES = 1


def _launch_config(num_bytes: int, backend: Backend) -> tuple[tuple[int], dict]:
    tile = min(BYTES_PER_PROGRAM, 1 << max(4, (num_bytes - 1).bit_length()))
    config = {"BYTES_TILE": tile, "num_warps": NUM_WARPS[backend], "num_stages": NUM_STAGES}
    return (triton.cdiv(num_bytes, tile),), config


def pack(codes: torch.Tensor, backend: Backend = Backend.HOPPER, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """Pack 4-bit codes two per byte.

    Args:
        codes: ``uint8 [..., K]`` with K a multiple of 32 and every value in 0..15, on a CUDA device (or the CPU with
            ``TRITON_INTERPRET=1``). Non-contiguous input is copied once.
        backend: the Triton path; it picks the launch configuration only.
        out: optional contiguous ``uint8 [..., K/32, 16]`` to write into.

    Returns:
        ``uint8 [..., K/32, 16]``, equal to ``mxfp4.reference.pack(codes)``.

    Raises:
        TypeError: codes are not uint8. ValueError: K is not a multiple of 32, a code exceeds 15 (checked with one
        reduction over the input before the kernel runs), or ``out`` does not fit.
    """
    if not isinstance(codes, torch.Tensor) or codes.dtype != torch.uint8:
        got = codes.dtype if isinstance(codes, torch.Tensor) else type(codes).__name__
        raise TypeError(f"pack expects uint8 codes, got {got}")
    if codes.dim() == 0 or codes.shape[-1] % BLOCK_SIZE:
        raise ValueError(f"pack expects a last axis that is a multiple of {BLOCK_SIZE}, got shape {tuple(codes.shape)}")
    if codes.numel() and int(codes.max()) > NIBBLE_MASK:
        raise ValueError(f"pack expects 4-bit codes (0..15), got a value {int(codes.max())}")
    check_launchable(codes, "pack")
    backend = Backend(backend)
    shape = (*codes.shape[:-1], codes.shape[-1] // BLOCK_SIZE, BYTES_PER_BLOCK)
    out = _output(out, shape, codes.device, "pack")
    if out.numel():
        grid, config = _launch_config(out.numel(), backend)
        with on_device(out):
            pack_codes_kernel[grid](codes.contiguous(), out, out.numel(), codes.numel(), **config)
    return out


def unpack(blocks: torch.Tensor, backend: Backend = Backend.HOPPER, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """Unpack blocks ``uint8 [..., G, 16]`` into codes ``uint8 [..., G*32]`` (inverse of :func:`pack`).

    Non-contiguous input is copied once. Returns ``out`` (optional, contiguous ``uint8 [..., G*32]``) or a new
    contiguous tensor, equal to ``mxfp4.reference.unpack(blocks)``.
    """
    if not isinstance(blocks, torch.Tensor) or blocks.dtype != torch.uint8:
        got = blocks.dtype if isinstance(blocks, torch.Tensor) else type(blocks).__name__
        raise TypeError(f"unpack expects uint8 blocks, got {got}")
    if blocks.dim() < 2 or blocks.shape[-1] != BYTES_PER_BLOCK:
        raise ValueError(f"unpack expects blocks of shape [..., G, {BYTES_PER_BLOCK}], got {tuple(blocks.shape)}")
    check_launchable(blocks, "unpack")
    backend = Backend(backend)
    out = _output(out, (*blocks.shape[:-2], blocks.shape[-2] * BLOCK_SIZE), blocks.device, "unpack")
    if out.numel():
        grid, config = _launch_config(blocks.numel(), backend)
        with on_device(out):
            unpack_codes_kernel[grid](out, blocks.contiguous(), blocks.numel(), out.numel(), **config)
    return out


def _output(out, shape: tuple, device, what: str) -> torch.Tensor:
    if out is None:
        return torch.empty(shape, dtype=torch.uint8, device=device)
    if not isinstance(out, torch.Tensor) or out.dtype != torch.uint8 or tuple(out.shape) != tuple(shape):
        got = (out.dtype, tuple(out.shape)) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"{what}: out must be a uint8 tensor of shape {tuple(shape)}, got {got}")
    if out.device != device or not out.is_contiguous():
        raise ValueError(f"{what}: out must be contiguous and on {device}")
    return out


def compile_specs(backend: Backend) -> list[dict]:
    """Both kernels with the full-size tile, for ``aot.py``."""
    backend = Backend(backend)
    _, config = _launch_config(1 << 30, backend)
    common = {"constexprs": {"BYTES_TILE": config["BYTES_TILE"]}, "divisible_by_16": ["num_bytes", "num_codes"],
              "num_warps": config["num_warps"], "num_stages": config["num_stages"]}  # fmt: skip
    signature = {
        "codes_ptr": "*u8", "blocks_ptr": "*u8", "num_bytes": "i32", "num_codes": "i32", "BYTES_TILE": "constexpr",
    }  # fmt: skip
    return [
        {"name": "pack", "fn": pack_codes_kernel, "signature": signature, **common},
        {"name": "unpack", "fn": unpack_codes_kernel, "signature": signature, **common},
    ]


# --- device code ---------------------------------------------------------------------------------------------
@triton.jit
def pack_codes_kernel(codes_ptr, blocks_ptr, num_bytes, num_codes, BYTES_TILE: tl.constexpr):
    """``blocks[i] = codes[2i] | codes[2i+1] << 4`` for ``i < num_bytes`` (flat, contiguous; 2 * num_bytes codes)."""
    start = tl.program_id(0).to(tl.int64) * BYTES_TILE
    code_index = start * PAIR + tl.arange(0, BYTES_TILE * PAIR)
    codes = tl.load(codes_ptr + code_index, mask=code_index < num_codes, other=0)
    even, odd = tl.split(tl.reshape(codes, [BYTES_TILE, PAIR]))
    byte_index = start + tl.arange(0, BYTES_TILE)
    tl.store(blocks_ptr + byte_index, even | (odd << HIGH_SHIFT), mask=byte_index < num_bytes)


@triton.jit
def unpack_codes_kernel(codes_ptr, blocks_ptr, num_bytes, num_codes, BYTES_TILE: tl.constexpr):
    """``codes[2i] = blocks[i] & 15``, ``codes[2i+1] = blocks[i] >> 4`` for ``i < num_bytes`` (flat, contiguous)."""
    start = tl.program_id(0).to(tl.int64) * BYTES_TILE
    byte_index = start + tl.arange(0, BYTES_TILE)
    packed = tl.load(blocks_ptr + byte_index, mask=byte_index < num_bytes, other=0)
    codes = tl.reshape(tl.join(packed & LOW_NIBBLE, packed >> HIGH_SHIFT), [BYTES_TILE * PAIR])
    code_index = start * PAIR + tl.arange(0, BYTES_TILE * PAIR)
    tl.store(codes_ptr + code_index, codes, mask=code_index < num_codes)
