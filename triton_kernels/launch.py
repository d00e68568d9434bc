"""Host-side launch helpers and tile indexing shared by the elementwise MXFP4 kernels (quantize, dequantize, pack).

Not a kernel. ``rows_view`` lets a kernel walk strided tensors without a copy, ``tile_coordinates`` maps a program
id onto the ``[outer, row tile, block tile]`` grid those kernels use.
"""

from __future__ import annotations

import contextlib
import functools

import torch
import triton
import triton.language as tl

from mxfp4.dispatch import BackendUnavailableError, triton_interpreter_enabled
from mxfp4.spec import BYTES_PER_BLOCK


def next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def rows_view(shape, *strides_of) -> tuple[int, int, list[tuple[int, int]]] | None:
    """Collapse the leading dims of tensors that share ``shape`` into ``[outer, rows]``, without copying.

    Args:
        shape: the leading dims (everything before the dims the kernel indexes itself).
        strides_of: for each tensor, its strides over those dims.

    Returns:
        ``(outer, rows, [(stride_outer, stride_row) per tensor])``, or None when the dims do not collapse into two
        (the caller makes the tensors contiguous then). Dims of size 1 are dropped; adjacent dims merge when every
        tensor steps through them as through one dim.

    >>> rows_view((3, 4, 5), (20, 5, 1))
    (1, 60, [(0, 1)])
    """
    dims = [(size, [strides[i] for strides in strides_of]) for i, size in enumerate(shape) if size != 1]
    merged: list[tuple[int, list[int]]] = []
    for size, strides in dims:
        if merged:
            prev_size, prev_strides = merged[-1]
            if all(p == s * size for p, s in zip(prev_strides, strides)):
                merged[-1] = (prev_size * size, strides)
                continue
        merged.append((size, strides))
    if len(merged) > 2:
        return None
    while len(merged) < 2:
        merged.insert(0, (1, [0] * len(strides_of)))
    (outer, outer_strides), (rows, row_strides) = merged
    return outer, rows, list(zip(outer_strides, row_strides))


def on_device(t: torch.Tensor):
    """Launch context for kernels on ``t``'s GPU (Triton launches on the current device), or nothing on the CPU."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def check_launchable(t: torch.Tensor, what: str) -> None:
    if t.device.type == "cuda":
        return
    if t.device.type == "cpu" and triton_interpreter_enabled():
        return
    raise BackendUnavailableError(
        f"{what} runs a Triton kernel and got a tensor on {t.device}: use a CUDA tensor, set TRITON_INTERPRET=1 "
        "before importing mxfp4 to run on the CPU, or use backend='torch'"
    )


#: Triton signature type of each activation dtype, for the modules' compile_specs (aot.py).
TRITON_TYPES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


@functools.lru_cache(maxsize=None)
def sm_count(device_index: int) -> int:
    """Streaming multiprocessors of CUDA device ``device_index``, queried once."""
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def word_aligned(blocks: torch.Tensor) -> torch.Tensor:
    """Packed MXFP4 bytes (uint8 ``[..., G, 16]``, contiguous ``[G, 16]`` rows) that the GEMVs can read as int32
    words: the base address and every outer stride a multiple of 4 bytes; a copy only where they are not."""
    if blocks.data_ptr() % 4 or any(stride % 4 for stride in blocks.stride()[:-2]):
        return blocks.clone() if blocks.is_contiguous() else blocks.contiguous()
    return blocks


# TMA (sm_90) reads a global tensor through a descriptor whose base address and outer strides are multiples of 16
# bytes; Triton builds one on the host from this class (triton >= 3.4; None where this Triton lacks it).
try:
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # pragma: no cover - older Triton: the register-load GEMVs run instead
    TensorDescriptor = None
TMA_ALIGNMENT = 16


def tma_readable(blocks: torch.Tensor) -> bool:
    """Whether TMA can read packed MXFP4 rows (uint8 ``[..., R, G, 16]``) as int32 words: this Triton has host
    descriptors, each block's 16 bytes are contiguous, and the base address and outer strides are 16-byte aligned."""
    return (TensorDescriptor is not None and blocks.stride(-1) == 1 and blocks.stride(-2) == BYTES_PER_BLOCK
            and blocks.data_ptr() % TMA_ALIGNMENT == 0
            and all(stride % TMA_ALIGNMENT == 0 for stride in blocks.stride()[:-2]))


def block_words_descriptor(blocks: torch.Tensor, block_rows: int, block_groups: int):
    """A TMA descriptor over packed MXFP4 rows (uint8 ``[..., R, G, 16]``, ``tma_readable``) as int32 words
    ``[..., R, 4 G]``; one load is ``block_rows`` rows x ``block_groups`` MX blocks (leading dims 1). Rows and words
    past the tensor's end read as 0."""
    words = blocks.view(torch.int32)
    *outer, groups, words_per_block = words.shape
    shape = [*outer, groups * words_per_block]
    strides = [stride // words.element_size() for stride in blocks.stride()[:-2]] + [1]
    block_shape = [1] * (len(outer) - 1) + [block_rows, block_groups * words_per_block]
    return TensorDescriptor(words, shape, strides, block_shape)


def block_words_descriptor_type(block_rows: int, block_groups: int, leading_dims: int = 0) -> str:
    """The ahead-of-time signature type of ``block_words_descriptor(blocks, block_rows, block_groups)`` for
    ``blocks`` with ``leading_dims`` dims before ``[R, G, 16]``."""
    shape = [1] * leading_dims + [block_rows, block_groups * (BYTES_PER_BLOCK // torch.int32.itemsize)]
    return f"tensordesc<i32[{', '.join(map(str, shape))}]>"


def reduction_workspace(cache: dict, device: torch.device, stream: int, floats: int, counters: int):
    """``(float32 [>= floats], int32 [>= counters])`` for a launch whose programs publish partial results and let
    the last one to arrive finish the work, cached in ``cache`` per (device, stream) and grown on demand.

    The kernels reset each counter they used before they exit, so only a new buffer is ever zeroed: no memset
    launch per call, and a CUDA graph can replay the launch. Counters are per stream because two launches in
    flight on different streams must not share them; on one stream launches run in order, so one workspace
    serves every shape.
    """
    key = (device, stream)
    ws = cache.get(key)
    if ws is None or ws[0].numel() < floats or ws[1].numel() < counters:
        # A larger buffer replaces the old one; the caching allocator keeps the old memory alive until the work
        # already queued on this stream is done.
        old = (1, 1) if ws is None else (ws[0].numel(), ws[1].numel())
        ws = cache[key] = (
            torch.empty(max(floats, old[0]), dtype=torch.float32, device=device),
            torch.zeros(max(counters, old[1]), dtype=torch.int32, device=device),
        )
    return ws


def current_stream(device_index: int) -> int:
    """The raw handle of the current stream on CUDA device ``device_index`` (``tensor.get_device()``); 0 for the CPU
    (-1), where the interpreter runs launches in order."""
    if device_index < 0:
        return 0
    return triton.runtime.driver.active.get_current_stream(device_index)


@triton.jit
def tile_coordinates(pid, rows, groups, ROW_TILE: tl.constexpr, GROUP_TILE: tl.constexpr):
    """``(outer index, row tile, group tile)`` of program ``pid`` on a grid of ``outer * row tiles * group tiles``
    programs, group tiles fastest (neighbouring programs touch neighbouring bytes)."""
    row_tiles = tl.cdiv(rows, ROW_TILE)
    group_tiles = tl.cdiv(groups, GROUP_TILE)
    group_tile = pid % group_tiles
    rest = pid // group_tiles
    return rest // row_tiles, rest % row_tiles, group_tile
